"""The provider SPI: what a backend implements so :class:`cloudnn.Client` can drive it.

Users never call a provider directly; they call :class:`cloudnn.Client`, which
owns waiting, progress, log streaming, retries and the run registry. A
provider is a small, strict adapter from cloud-neutral data to one backend:

* ``plan_training`` / ``plan_endpoint`` are **pure**: no network, no
  credentials, deterministic for a given spec (golden-testable). They resolve
  resources, build the exact request payloads, estimate cost, and refuse
  unsupported features (``unsupported`` + :meth:`Provider.refuse_unsupported`)
  before any API call.
* ``submit_training`` / ``create_endpoint`` are the only side effects. They are
  **idempotent**: resource names come from the plan (spec hash + run id), and
  an "already exists" answer adopts the existing resource.
* ``get_job`` maps the vendor state onto :class:`JobState`.
* ``stream_logs`` yields :class:`LogLine` from a cursor, without re-describing
  the job for every line.

Providers register through the ``cloudnn.providers`` entry-point group (see
:mod:`cloudnn.registry`); the core never imports a concrete provider.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from cloudnn.errors import UnsupportedFeatureError

if TYPE_CHECKING:
    from cloudnn.spec import Spec

__all__ = [
    "EVENT_PREFIX",
    "Capability",
    "CheckReport",
    "EndpointPlan",
    "EndpointRef",
    "JobRef",
    "JobState",
    "JobStatus",
    "LogLine",
    "Provider",
    "TrainingPlan",
]


#: prefix of the structured progress events a job prints to its log
#: (``::cloudnn:: {"event": "epoch", ...}``); clients parse them from any
#: provider's log stream
EVENT_PREFIX = "::cloudnn:: "


class Capability(str, enum.Enum):
    """Features a spec can ask for; a provider may declare some unsupported."""

    GPU = "gpu"
    MULTI_NODE = "multi_node"
    MULTI_PROCESS = "multi_process"
    SPOT = "spot"
    CUSTOM_SCRIPT = "custom_script"
    CUSTOM_MODULE = "custom_module"
    REMOTE_DATA = "remote_data"
    AUTOSCALING = "autoscaling"
    ENDPOINT_ACCELERATOR = "endpoint_accelerator"
    MAX_COST = "max_cost"


class JobState(str, enum.Enum):
    """Unified job state across every backend."""

    QUEUED = "QUEUED"
    PROVISIONING = "PROVISIONING"
    RUNNING = "RUNNING"
    RECOVERING = "RECOVERING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True)
class CheckReport:
    """Result of :meth:`Provider.check`: can this provider be used right now?"""

    provider: str
    ok: bool
    checks: tuple[tuple[str, bool, str], ...] = ()  # (what, passed, detail)


@dataclass(frozen=True)
class TrainingPlan:
    """Everything a training submission will do, as data.

    ``requests`` are the exact payloads the backend receives, in order (for the
    local backend: the process command and environment).
    """

    provider: str
    spec: Spec
    run_id: str
    job_name: str
    requests: tuple[Mapping[str, Any], ...]
    instance_type: str
    instance_count: int
    processes_per_node: int
    accelerator: str | None
    hourly_cost_usd: float | None
    estimated_cost_usd: float | None
    warnings: tuple[str, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view (what ``cloudnn plan`` prints)."""
        return {
            "provider": self.provider,
            "kind": "training",
            "run_id": self.run_id,
            "job_name": self.job_name,
            "spec_hash": self.spec.spec_hash(),
            "instance_type": self.instance_type,
            "instance_count": self.instance_count,
            "processes_per_node": self.processes_per_node,
            "accelerator": self.accelerator,
            "hourly_cost_usd": self.hourly_cost_usd,
            "estimated_cost_usd": self.estimated_cost_usd,
            "warnings": list(self.warnings),
            "requests": [dict(r) for r in self.requests],
            "details": dict(self.details),
        }


@dataclass(frozen=True)
class EndpointPlan:
    """Everything an endpoint creation will do, as data."""

    provider: str
    spec: Spec
    endpoint_name: str
    model_uri: str
    requests: tuple[Mapping[str, Any], ...]
    instance_type: str
    replicas: int
    hourly_cost_usd: float | None
    warnings: tuple[str, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "kind": "endpoint",
            "endpoint_name": self.endpoint_name,
            "model_uri": self.model_uri,
            "instance_type": self.instance_type,
            "replicas": self.replicas,
            "hourly_cost_usd": self.hourly_cost_usd,
            "warnings": list(self.warnings),
            "requests": [dict(r) for r in self.requests],
            "details": dict(self.details),
        }


@dataclass(frozen=True)
class JobRef:
    """Handle of a submitted job: enough to find it again from a new process."""

    provider: str
    run_id: str
    job_id: str
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class JobStatus:
    state: JobState
    message: str = ""
    vendor_state: str = ""
    metrics: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LogLine:
    text: str
    cursor: Any = None  # opaque: pass back as ``since`` to continue after this line
    timestamp: float | None = None


@dataclass(frozen=True)
class EndpointRef:
    provider: str
    name: str
    url: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)


class Provider(ABC):
    """A backend. Subclasses set ``name`` and ``unsupported`` and implement the SPI.

    ``unsupported`` maps each :class:`Capability` the backend lacks to a human
    reason; :meth:`required_capabilities` + :meth:`refuse_unsupported` turn it
    into a plan-time refusal, before any API call.
    """

    name: ClassVar[str]
    unsupported: ClassVar[dict[Capability, str]] = {}

    @abstractmethod
    def check(self) -> CheckReport:
        """Verify credentials/permissions/tools without side effects."""

    @abstractmethod
    def plan_training(self, spec: Spec, *, run_id: str) -> TrainingPlan:
        """Pure: resolve resources and build the exact training requests."""

    @abstractmethod
    def plan_endpoint(self, spec: Spec, model_uri: str) -> EndpointPlan:
        """Pure: resolve serving resources and build the endpoint requests."""

    @abstractmethod
    def submit_training(self, plan: TrainingPlan) -> JobRef:
        """Start the job; idempotent for the same plan (adopts an existing job)."""

    @abstractmethod
    def get_job(self, ref: JobRef) -> JobStatus:
        """Current unified state of a job."""

    @abstractmethod
    def stream_logs(self, ref: JobRef, since: Any = None) -> Iterator[LogLine]:
        """Log lines after cursor ``since`` available now (does not block)."""

    @abstractmethod
    def cancel_job(self, ref: JobRef) -> None:
        """Stop a job; a no-op on a finished one."""

    @abstractmethod
    def create_endpoint(self, plan: EndpointPlan) -> EndpointRef:
        """Create (or adopt) the endpoint described by ``plan``."""

    @abstractmethod
    def invoke(self, ref: EndpointRef, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Send ``{"instances": [...]}`` and return ``{"predictions": [...]}``."""

    @abstractmethod
    def delete_endpoint(self, ref: EndpointRef) -> None:
        """Delete the endpoint and everything created for it."""

    # -- shared helpers -------------------------------------------------

    @staticmethod
    def required_capabilities(spec: Spec) -> dict[Capability, str]:
        """Capabilities ``spec`` needs, with the spec field asking for each."""
        need: dict[Capability, str] = {}
        res = spec.resources
        if res.accelerator:
            need[Capability.GPU] = f"resources.accelerator={res.accelerator}"
        if res.nodes > 1:
            need[Capability.MULTI_NODE] = f"resources.nodes={res.nodes}"
        if res.processes_per_node == "auto" or res.processes_per_node > 1:
            need[Capability.MULTI_PROCESS] = (
                f"resources.processes_per_node={res.processes_per_node}"
            )
        if res.spot:
            need[Capability.SPOT] = "resources.spot=true"
        if res.max_cost_usd is not None:
            need[Capability.MAX_COST] = f"resources.max_cost_usd={res.max_cost_usd}"
        if spec.model.type == "script":
            need[Capability.CUSTOM_SCRIPT] = "model.script"
        if spec.model.type == "module":
            need[Capability.CUSTOM_MODULE] = "model.module"
        from cloudnn.spec import is_uri

        for key in ("train", "validation", "test"):
            value = getattr(spec.data, key)
            if value and is_uri(value):
                need[Capability.REMOTE_DATA] = f"data.{key}={value}"
        if spec.deploy.autoscaling is not None:
            need[Capability.AUTOSCALING] = "deploy.autoscaling"
        if spec.deploy.accelerator:
            need[Capability.ENDPOINT_ACCELERATOR] = (
                f"deploy.accelerator={spec.deploy.accelerator}"
            )
        return need

    def refuse_unsupported(
        self, spec: Spec, *, only: tuple[Capability, ...] | None = None
    ) -> None:
        """Raise :class:`UnsupportedFeatureError` listing every unsupported need."""
        rows = [
            (f"{cap.value} ({where})", self.unsupported[cap])
            for cap, where in self.required_capabilities(spec).items()
            if cap in self.unsupported and (only is None or cap in only)
        ]
        if rows:
            raise UnsupportedFeatureError(self.name, rows)
