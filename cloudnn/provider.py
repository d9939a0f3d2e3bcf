"""The provider SPI: what a backend implements so :class:`cloudnn.Client` can drive it.

Users never call a provider directly; they call :class:`cloudnn.Client`, which
owns waiting (with back-off), progress, log following and the run registry.
A provider is a small, strict adapter from cloud-neutral data to one backend.
The rules below are what the contract suite (:mod:`cloudnn.testing`) checks.

Construction
    ``Provider(home=..., **options)``, keyword-only. ``options`` are the
    provider's own settings (region, profile, project, ``endpoint_url`` of a
    local emulator, ...); a provider also honours its vendor's standard
    environment variables (``AWS_PROFILE``, ``AWS_ENDPOINT_URL``,
    ``GOOGLE_CLOUD_PROJECT``, ...). The registry refuses options the
    constructor does not take with a :class:`SpecError` naming them.
    ``home`` is the folder where the provider may keep state of its own
    (the local backend's runs and endpoints; a cloud's upload cache); the
    Client passes its registry's home. Constructing a provider creates no
    client, session or file: vendor SDKs are imported on first use.

Planning (pure)
    ``plan_training`` / ``plan_endpoint`` open no socket, need no
    credentials, write nothing, and return the same plan for the same inputs
    (golden-testable; no machine facts such as CPU counts). They resolve
    resources, build the exact request payloads, list the uploads
    (:class:`Upload`), say where the model will land (``model_uri``) and
    refuse what the provider cannot do, before any API call
    (:meth:`Provider.refuse_unsupported`, one table row per unsupported need).

Side effects (idempotent)
    ``submit_training`` / ``create_endpoint`` are the only calls that create
    things. Names come from the plan (spec hash + run id, derived once), so a
    retried or repeated call adopts what exists instead of creating it twice;
    uploads are content-addressed and skipped when already there.
    ``create_endpoint`` returns as soon as the request is accepted; the
    Client then polls ``get_endpoint`` until it is ``InService``.

Reading state
    ``get_job`` maps the vendor's state onto :class:`JobState`;
    ``get_endpoint`` onto :class:`EndpointState`. An unknown job or endpoint
    raises :class:`NotFoundError`. ``stream_logs(ref, since)`` yields the log
    lines available *now* after the opaque, JSON-serialisable cursor
    ``since`` (``None``: from the start) and never blocks or describes the
    job. Refs survive a JSON round trip (the registry stores them).

Stopping
    ``cancel_job`` on a finished job is a no-op; on a running one it asks the
    job to stop (SIGTERM: the job checkpoints first) and returns; the job then
    ends ``CANCELLED``. ``delete_endpoint`` removes everything created for the
    endpoint; deleting a deleted (or unknown) endpoint is quiet.

Errors
    Vendor exceptions are mapped onto :mod:`cloudnn.errors` at the boundary
    (:func:`cloudnn.retry.map_errors`), and throttling/transient failures are
    retried there (:func:`cloudnn.retry.call`), never user errors.

Providers register through the ``cloudnn.providers`` entry-point group (see
:mod:`cloudnn.registry`); the core never imports a concrete provider.
"""

from __future__ import annotations

import enum
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from cloudnn.errors import UnsupportedFeatureError
from cloudnn.runtime.events import EVENT_PREFIX

if TYPE_CHECKING:
    from cloudnn.spec import Spec

__all__ = [
    "EVENT_PREFIX",
    "Capability",
    "CheckReport",
    "EndpointPlan",
    "EndpointRef",
    "EndpointState",
    "EndpointStatus",
    "JobRef",
    "JobState",
    "JobStatus",
    "LogLine",
    "Phase",
    "Provider",
    "TrainingPlan",
    "Upload",
]


class Phase(str, enum.Enum):
    """When a capability matters: refusals of one phase never block the other."""

    TRAINING = "training"
    ENDPOINT = "endpoint"


class Capability(str, enum.Enum):
    """Features a spec can ask for; a provider may declare some unsupported."""

    GPU = "gpu"
    MULTI_NODE = "multi_node"
    MULTI_PROCESS = "multi_process"
    SPOT = "spot"
    CUSTOM_SCRIPT = "custom_script"
    CUSTOM_MODULE = "custom_module"
    REMOTE_DATA = "remote_data"
    MAX_COST = "max_cost"
    AUTOSCALING = "autoscaling"
    ENDPOINT_ACCELERATOR = "endpoint_accelerator"

    @property
    def phase(self) -> Phase:
        """The plan call that refuses this capability."""
        if self in (Capability.AUTOSCALING, Capability.ENDPOINT_ACCELERATOR):
            return Phase.ENDPOINT
        return Phase.TRAINING


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


class EndpointState(str, enum.Enum):
    """Unified endpoint state (SageMaker's words, which read well everywhere)."""

    CREATING = "Creating"
    UPDATING = "Updating"
    IN_SERVICE = "InService"
    FAILED = "Failed"
    STOPPED = "Stopped"
    DELETING = "Deleting"

    @property
    def settled(self) -> bool:
        """No longer changing by itself: serving, failed or stopped."""
        return self in (
            EndpointState.IN_SERVICE,
            EndpointState.FAILED,
            EndpointState.STOPPED,
        )


@dataclass(frozen=True)
class CheckReport:
    """Result of :meth:`Provider.check`: can this provider be used right now?"""

    provider: str
    ok: bool
    checks: tuple[tuple[str, bool, str], ...] = ()  # (what, passed, detail)


@dataclass(frozen=True)
class Upload:
    """One local file (or built bundle) a submission copies to the provider's storage.

    Destinations are content-addressed (they contain ``sha256``), so a
    re-submit finds them in place and uploads nothing that has not changed.
    """

    source: str  # local path; a bundle's path under the provider's home
    destination: str  # URI, e.g. s3://bucket/cloudnn/data/<sha256>/train.csv
    sha256: str
    size: int
    kind: str = "data"  # data | bundle | model

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "source": self.source,
            "destination": self.destination,
            "sha256": self.sha256,
            "size": self.size,
        }


@dataclass(frozen=True)
class TrainingPlan:
    """Everything a training submission will do, as data.

    ``requests`` are the exact payloads the backend receives, in order (for the
    local backend: the process command and environment). ``model_uri`` is
    where the trained model will be (a local folder, or e.g. the S3 key of
    SageMaker's ``model.tar.gz``), ``output_uri`` where reports and metrics go.
    ``uploads`` are done by ``submit_training`` before the first request.
    ``details`` is free-form, JSON-ready, for humans; the Client reads nothing
    from it.
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
    model_uri: str = ""
    output_uri: str = ""
    uploads: tuple[Upload, ...] = ()
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
            "model_uri": self.model_uri,
            "output_uri": self.output_uri,
            "uploads": [u.to_dict() for u in self.uploads],
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
    uploads: tuple[Upload, ...] = ()
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
            "uploads": [u.to_dict() for u in self.uploads],
            "warnings": list(self.warnings),
            "requests": [dict(r) for r in self.requests],
            "details": dict(self.details),
        }


@dataclass(frozen=True)
class JobRef:
    """Handle of a submitted job: enough to find it again from a new process.

    ``extra`` is provider-owned and must survive a JSON round trip.
    """

    provider: str
    run_id: str
    job_id: str
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class JobStatus:
    """A job's unified state; ``metrics`` once it SUCCEEDED (its metrics.json).

    ``model_uri`` overrides the plan's when the provider learns the real
    location only at the end (empty: the plan's is right).
    """

    state: JobState
    message: str = ""
    vendor_state: str = ""
    metrics: Mapping[str, Any] = field(default_factory=dict)
    model_uri: str = ""


@dataclass(frozen=True)
class LogLine:
    """One log line of a job; pass ``cursor`` back to read only what follows."""

    text: str
    cursor: Any = None  # opaque, JSON-ready: pass back as ``since`` to continue
    timestamp: float | None = None


@dataclass(frozen=True)
class EndpointRef:
    """Handle of an endpoint; ``extra`` is provider-owned and JSON round-trips."""

    provider: str
    name: str
    url: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EndpointStatus:
    """An endpoint's unified state; ``message`` says why when it is Failed."""

    state: EndpointState
    message: str = ""
    vendor_state: str = ""
    url: str = ""


class Provider(ABC):
    """A backend. Subclasses set ``name`` and ``unsupported`` and implement the SPI.

    Attributes the Client reads (class defaults; an instance may override):

    ``unsupported``
        each :class:`Capability` the backend lacks, with a human reason;
        refused at plan time by :meth:`refuse_unsupported`.
    ``poll_interval`` / ``max_poll_interval``
        seconds between status calls: the Client starts at the first and
        backs off (x1.5, with jitter) to the second. Clouds: ~5 s -> 60 s.
    ``cancel_timeout``
        how long the Client waits for a cancelled job to end (Ctrl-C).
    ``endpoint_timeout``
        how long the Client waits for a new endpoint to be ``InService``.
    """

    name: ClassVar[str]
    unsupported: ClassVar[Mapping[Capability, str]] = {}
    # plain attributes: an instance may override them (an emulator answers
    # in milliseconds, so its binding polls faster)
    poll_interval: float = 5.0
    max_poll_interval: float = 60.0
    cancel_timeout: float = 300.0
    endpoint_timeout: float = 3600.0

    def __init__(self, *, home: str | os.PathLike[str] | None = None) -> None:
        from cloudnn.runs import cloudnn_home

        self.home = Path(home) if home is not None else cloudnn_home()

    # -- the SPI ------------------------------------------------------------

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
        """Upload what the plan lists, then start the job; adopts an existing one."""

    @abstractmethod
    def get_job(self, ref: JobRef) -> JobStatus:
        """Current unified state of a job; :class:`NotFoundError` if unknown."""

    @abstractmethod
    def stream_logs(self, ref: JobRef, since: Any = None) -> Iterator[LogLine]:
        """Log lines after cursor ``since`` available now (never blocks)."""

    @abstractmethod
    def cancel_job(self, ref: JobRef) -> None:
        """Ask a job to stop; a no-op on a finished one."""

    @abstractmethod
    def create_endpoint(self, plan: EndpointPlan) -> EndpointRef:
        """Create (or adopt) the endpoint; returns once the request is accepted."""

    @abstractmethod
    def get_endpoint(self, ref: EndpointRef) -> EndpointStatus:
        """Current unified state of an endpoint; :class:`NotFoundError` if unknown."""

    @abstractmethod
    def invoke(self, ref: EndpointRef, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Send ``{"instances": [...]}`` and return ``{"predictions": [...]}``."""

    @abstractmethod
    def delete_endpoint(self, ref: EndpointRef) -> None:
        """Delete the endpoint and everything created for it; quiet if gone."""

    @abstractmethod
    def download(self, uri: str, dest: Path) -> Path:
        """Make the model at ``uri`` a local model folder; return its path.

        ``dest`` is an empty (or absent) folder the provider may fill; a
        provider whose ``uri`` already is a local folder returns it as is.
        """

    # -- optional hooks, with defaults ---------------------------------------

    def endpoint_token(self, ref: EndpointRef) -> str | None:
        """The bearer token a caller outside cloudnn needs (None: cloud IAM/none)."""
        return None

    def endpoint_info(self, ref: EndpointRef) -> dict[str, Any]:
        """What the endpoint serves (inputs, classes, settings), if it can say."""
        return {}

    def setup_templates(self) -> dict[str, str]:
        """One-time account set-up, as files: name -> text (``cloudnn setup``).

        For example a least-privilege role and a bucket as CloudFormation.
        Nothing is created: the user reviews and applies them.
        """
        return {}

    # -- shared helpers -------------------------------------------------------

    @staticmethod
    def required_capabilities(
        spec: Spec, phase: Phase | None = None
    ) -> dict[Capability, str]:
        """Capabilities ``spec`` needs (in ``phase``), with the field asking for each."""
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
        if phase is not None:
            need = {c: w for c, w in need.items() if c.phase is phase}
        return need

    def refuse_unsupported(self, spec: Spec, phase: Phase) -> None:
        """Raise :class:`UnsupportedFeatureError` listing every unsupported need."""
        rows = [
            (f"{cap.value} ({where})", self.unsupported[cap])
            for cap, where in self.required_capabilities(spec, phase).items()
            if cap in self.unsupported
        ]
        if rows:
            raise UnsupportedFeatureError(self.name, rows)
