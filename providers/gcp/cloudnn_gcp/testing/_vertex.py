"""The emulated Vertex AI: state and RPC handlers behind the discovered method table.

One :class:`VertexBackend` holds custom jobs, models, endpoints, long-running
operations and log entries, and answers the RPCs the provider uses, named as
in the API (``CreateCustomJob``, ``GetOperation``, ``ListLogEntries``, ...).
Requests are validated as the service does (INVALID_ARGUMENT naming the
field, with ``google.rpc.BadRequest`` details): the ``Required.`` fields and
types of the API schema, resource-name formats, pool 0 with one replica,
machine types that fit their accelerators, ids' formats, duplicates
(ALREADY_EXISTS), deleting what is still in use (FAILED_PRECONDITION).

Resource names carry the project *number*, as Vertex AI's do; requests may
name the project by id or number.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cloudnn.testing.emulation import (
    FaultInjector,
    LogEvent,
    LogStore,
    ProcessSpec,
    ServerProcess,
    free_port,
)
from cloudnn_gcp import schema
from cloudnn_gcp._machines import GPUS, _cpu_machines, valid_machines
from cloudnn_gcp.testing._gcs import StorageEmulator
from cloudnn_gcp.testing._grpc import EmulatorRpcError
from cloudnn_gcp.testing._jobs import JobRunner, Outcome, job_env_base

__all__ = ["MUTATING", "VertexBackend"]

#: the RPCs that change state: an injected fault may come after the change
#: (the answer is lost), which is what makes idempotency worth testing
MUTATING = frozenset(
    {
        "CreateCustomJob",
        "CancelCustomJob",
        "UploadModel",
        "DeleteModel",
        "CreateEndpoint",
        "DeleteEndpoint",
        "DeployModel",
        "UndeployModel",
    }
)
_PARENT = re.compile(r"^projects/([^/]+)/locations/([^/]+)$")
_NAME = re.compile(r"^projects/([^/]+)/locations/([^/]+)/(\w+)/([^/@]+)(@[^/]+)?$")
_ENDPOINT_ID = re.compile(r"^(?:[a-z][a-z0-9-]{0,61}[a-z0-9]|[a-z]|[1-9][0-9]{0,8})$")
_MODEL_ID = re.compile(r"^[a-z_][a-z0-9_-]{0,62}$")
_DEPLOYED_ID = re.compile(r"^[0-9]{1,10}$")
_FILTER_CLAUSE = re.compile(
    r'^\s*(?P<key>[A-Za-z_][\w.]*(?:\."[^"]+")?)\s*(?P<op>>=|<=|!=|=|>|<|:)\s*'
    r'(?P<value>"(?:[^"\\]|\\.)*"|[\w.:-]+)\s*$'
)
#: ServerProcess start: torch import + model load (cold caches are slow)
SERVER_START_S = 180.0


def _grpc_code(name: str) -> Any:
    import grpc

    return getattr(grpc.StatusCode, name)


def _err(code: str, message: str, field: str | None = None) -> EmulatorRpcError:
    return EmulatorRpcError(_grpc_code(code), message, field=field)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _to_dict(message: Any) -> dict[str, Any]:
    from google.protobuf import json_format

    pb = message._pb if hasattr(message, "_pb") else message
    out: dict[str, Any] = json_format.MessageToDict(
        pb, preserving_proto_field_name=True
    )
    return out


def _copy(message: Any) -> Any:
    """A deep copy of a proto-plus message (answers must not share state)."""
    cls = type(message)
    pb = cls.pb(message)
    fresh = type(pb)()
    fresh.CopyFrom(pb)
    return cls.wrap(fresh)


def _field_path(prefix: str, violation: str) -> tuple[str, str]:
    path, _, reason = violation.partition(": ")
    return (f"{prefix}.{path}" if prefix and path else path or prefix), reason


@dataclass
class _Job:
    job: Any  # aiplatform_v1.CustomJob (proto-plus)
    runner: JobRunner | None = None


@dataclass
class _Deployment:
    server: ServerProcess | None
    deployed: Any  # aiplatform_v1.DeployedModel


@dataclass
class _LogRow:
    seconds: int
    nanos: int
    insert_id: str
    job_id: str
    task: str
    text: str
    project: str


@dataclass
class VertexBackend:
    """Every emulated resource, and the handlers (see the module docstring)."""

    workdir: Path
    storage: StorageEmulator
    faults: FaultInjector
    logs: LogStore
    shim_dir: Path
    grace: float = 30.0
    lro_delay: float = 0.05
    lock: threading.RLock = field(default_factory=threading.RLock)
    jobs: dict[str, _Job] = field(default_factory=dict)
    models: dict[str, Any] = field(default_factory=dict)
    endpoints: dict[str, Any] = field(default_factory=dict)
    deployments: dict[tuple[str, str], _Deployment] = field(default_factory=dict)
    operations: dict[str, Any] = field(default_factory=dict)
    log_rows: list[_LogRow] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _insert: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _project_of_job: dict[str, str] = field(default_factory=dict)
    _rng: random.Random = field(default_factory=lambda: random.Random(7))

    def __post_init__(self) -> None:
        self.logs.add_listener(self._on_log)

    # -- names ---------------------------------------------------------------

    @staticmethod
    def project_number(project: str) -> str:
        if project.isdigit():
            return project
        digest = hashlib.sha256(project.encode()).hexdigest()
        return str(100_000_000_000 + int(digest[:12], 16) % 900_000_000_000)

    def _parent(self, parent: str, field_name: str = "parent") -> tuple[str, str, str]:
        """(canonical parent, project id or number as given, region)."""
        match = _PARENT.match(parent or "")
        if not match:
            raise _err(
                "INVALID_ARGUMENT",
                f"{field_name} must be projects/{{project}}/locations/{{location}}, "
                f"got {parent!r}",
                field_name,
            )
        project, region = match.groups()
        number = self.project_number(project)
        return f"projects/{number}/locations/{region}", project, region

    def _canon(self, name: str, kind: str, field_name: str = "name") -> str:
        match = _NAME.match(name or "")
        if not match or match.group(3) != kind:
            raise _err(
                "INVALID_ARGUMENT",
                f"{field_name} must be projects/*/locations/*/{kind}/*, got {name!r}",
                field_name,
            )
        project, region, _, rid, _ = match.groups()
        return (
            f"projects/{self.project_number(project)}/locations/{region}/{kind}/{rid}"
        )

    def _next_id(self) -> str:
        return str(1_000_000_000_000_000_000 + next(self._ids))

    # -- validation ---------------------------------------------------------------

    def _validate(self, message: str, request: Any) -> None:
        problems = schema.violations(
            f"google.cloud.aiplatform.v1.{message}", _to_dict(request)
        )
        if problems:
            path, reason = _field_path("", problems[0])
            raise _err("INVALID_ARGUMENT", f"{path}: {reason}", path)

    @staticmethod
    def _machine_errors(spec: Any, where: str, purpose: str) -> None:
        machine = spec.machine_type
        accelerator = spec.accelerator_type.name if spec.accelerator_type else ""
        if accelerator and accelerator != "ACCELERATOR_TYPE_UNSPECIFIED":
            gpu = next(
                (
                    g
                    for g in GPUS.values()
                    if g.enum == accelerator
                    or any(e == accelerator for _, e in g.shapes.values())
                ),
                None,
            )
            if gpu is None:
                raise _err(
                    "INVALID_ARGUMENT",
                    f"{accelerator} is not available for {purpose}",
                    f"{where}.accelerator_type",
                )
            options = valid_machines(gpu, int(spec.accelerator_count), purpose)
            if machine not in options:
                raise _err(
                    "INVALID_ARGUMENT",
                    f"Machine type {machine!r} does not support "
                    f"{spec.accelerator_count} x {accelerator}; valid: "
                    + (", ".join(options) or "none"),
                    f"{where}.machine_type",
                )
        elif machine not in _cpu_machines(purpose):
            raise _err(
                "INVALID_ARGUMENT",
                f"Machine type {machine!r} is not supported for {purpose} "
                "without an accelerator",
                f"{where}.machine_type",
            )

    # -- faults -------------------------------------------------------------

    def before(self, method: str) -> bool:
        """Fault decision for one call: raises now, or True to fail after the change."""
        self.requests.append(method)
        if method in ("CreateCustomJob", "DeployModel") and self.faults.fail_create(
            method
        ):
            raise _err(
                "RESOURCE_EXHAUSTED",
                "The zone 'us-central1-a' does not have enough resources available "
                "to fulfill the request (stockout). Try a different zone, or try "
                "again later.",
            )
        if not self.faults.throttle(method):
            return False
        after = method in MUTATING and self._rng.random() < 0.5
        if after:
            return True
        raise self.injected_error()

    def injected_error(self) -> EmulatorRpcError:
        if self._rng.random() < 0.5:
            return _err("UNAVAILABLE", "The service is currently unavailable.")
        return _err(
            "RESOURCE_EXHAUSTED",
            "Quota exceeded for quota metric 'Resource management (CRUD) requests' "
            "and limit 'Resource management (CRUD) requests per minute per region' "
            "of service 'aiplatform.googleapis.com'.",
        )

    # -- operations ---------------------------------------------------------------

    def _operation(self, resource: str, metadata: Any) -> Any:
        from google.longrunning import operations_pb2

        op = operations_pb2.Operation(
            name=f"{resource}/operations/{next(self._ids)}", done=False
        )
        op.metadata.Pack(type(metadata).pb(metadata))
        with self.lock:
            self.operations[op.name] = op
        return op

    def _finish(
        self, name: str, response: Any = None, error: tuple[int, str] | None = None
    ) -> None:
        from google.protobuf import empty_pb2

        with self.lock:
            op = self.operations[name]
            if error is not None:
                op.error.code, op.error.message = error
            else:
                pb = type(response).pb(response) if response is not None else None
                op.response.Pack(pb if pb is not None else empty_pb2.Empty())
            op.done = True

    def _later(self, fn: Callable[[], None]) -> None:
        """Finish an operation shortly, so clients really poll it."""
        timer = threading.Timer(self.lro_delay, fn)
        timer.daemon = True
        timer.start()

    @staticmethod
    def _generic(cls_name: str) -> Any:
        from google.cloud import aiplatform_v1 as aip

        generic = aip.GenericOperationMetadata(create_time=_now(), update_time=_now())
        cls = getattr(aip, cls_name)
        return cls(generic_metadata=generic)

    def GetOperation(self, request: Any, context: Any) -> Any:  # noqa: N802
        with self.lock:
            op = self.operations.get(self._canon_op(request.name))
            if op is None:
                raise _err("NOT_FOUND", f"Operation {request.name} not found.")
            copy = type(op)()
            copy.CopyFrom(op)
            return copy

    def _canon_op(self, name: str) -> str:
        match = re.match(r"^projects/([^/]+)/(.*)$", name or "")
        if not match:
            return name
        return f"projects/{self.project_number(match.group(1))}/{match.group(2)}"

    def ListOperations(self, request: Any, context: Any) -> Any:  # noqa: N802
        from google.longrunning import operations_pb2

        prefix = self._canon_op(request.name).rstrip("/") + "/operations/"
        with self.lock:
            found = [op for n, op in self.operations.items() if n.startswith(prefix)]
        return operations_pb2.ListOperationsResponse(operations=found)

    def CancelOperation(self, request: Any, context: Any) -> None:  # noqa: N802
        return None  # the emulator's operations cannot be cancelled midway

    def DeleteOperation(self, request: Any, context: Any) -> None:  # noqa: N802
        with self.lock:
            self.operations.pop(self._canon_op(request.name), None)
        return None

    def WaitOperation(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self.GetOperation(request, context)

    # -- custom jobs -----------------------------------------------------------------

    def CreateCustomJob(self, request: Any, context: Any) -> Any:  # noqa: N802
        from google.cloud import aiplatform_v1 as aip

        parent, project, _ = self._parent(request.parent)
        self._validate("CreateCustomJobRequest", request)
        spec = request.custom_job.job_spec
        pools = list(spec.worker_pool_specs)
        if pools[0].replica_count != 1:
            raise _err(
                "INVALID_ARGUMENT",
                "The first worker pool (the primary replica) must have replica_count 1",
                "custom_job.job_spec.worker_pool_specs[0].replica_count",
            )
        for i, pool in enumerate(pools):
            where = f"custom_job.job_spec.worker_pool_specs[{i}]"
            if pool.replica_count < 1 and i < 2:
                raise _err(
                    "INVALID_ARGUMENT",
                    "replica_count must be >= 1",
                    f"{where}.replica_count",
                )
            self._machine_errors(pool.machine_spec, f"{where}.machine_spec", "training")
            if "python_package_spec" in pool:
                raise _err(
                    "UNIMPLEMENTED",
                    "the Vertex AI emulator runs container_spec jobs only "
                    "(python_package_spec needs Vertex AI's images)",
                )
        base = spec.base_output_directory.output_uri_prefix
        if base and not base.startswith("gs://"):
            raise _err(
                "INVALID_ARGUMENT",
                "base_output_directory.output_uri_prefix must be a gs:// URI",
                "custom_job.job_spec.base_output_directory.output_uri_prefix",
            )
        job: Any = aip.CustomJob(request.custom_job)
        job_id = self._next_id()
        job.name = f"{parent}/customJobs/{job_id}"
        job.state = aip.JobState.JOB_STATE_PENDING
        job.create_time = job.update_time = _now()
        record = _Job(job)
        with self.lock:
            self.jobs[job.name] = record
            self._project_of_job[job_id] = project
        runner = JobRunner(
            job_id=job_id,
            job=_to_dict(job),
            project=project,
            workdir=self.workdir / "jobs" / job_id,
            storage=self.storage,
            logs=self.logs,
            faults=self.faults,
            shim_dir=self.shim_dir,
            on_state=lambda state, outcome: self._job_state(job.name, state, outcome),
            grace=self.grace,
        )
        record.runner = runner
        with self.lock:
            answer = _copy(job)  # as created: PENDING
        runner.start()
        return answer

    def _job_state(self, name: str, state: str, outcome: Outcome | None) -> None:
        from google.cloud import aiplatform_v1 as aip

        with self.lock:
            job = self.jobs[name].job
            if (
                job.state.name == "JOB_STATE_CANCELLING"
                and state == "JOB_STATE_RUNNING"
            ):
                return
            job.state = getattr(aip.JobState, state)
            job.update_time = _now()
            if state == "JOB_STATE_RUNNING" and "start_time" not in job:
                job.start_time = _now()
            if outcome is not None:
                job.end_time = _now()
                if outcome.code:
                    job.error = {"code": outcome.code, "message": outcome.message}

    def _job(self, name: str) -> _Job:
        canonical = self._canon(name, "customJobs")
        with self.lock:
            record = self.jobs.get(canonical)
        if record is None:
            raise _err("NOT_FOUND", f"CustomJob {name} not found.")
        return record

    def GetCustomJob(self, request: Any, context: Any) -> Any:  # noqa: N802

        record = self._job(request.name)
        with self.lock:
            return _copy(record.job)

    def ListCustomJobs(self, request: Any, context: Any) -> Any:  # noqa: N802
        from google.cloud import aiplatform_v1 as aip

        parent, _, _ = self._parent(request.parent)
        match = _list_filter(request.filter)
        with self.lock:
            found = [
                _copy(r.job)
                for n, r in self.jobs.items()
                if n.startswith(parent + "/") and match(_to_dict(r.job))
            ]
        return _page(aip.ListCustomJobsResponse, "custom_jobs", found, request)

    def CancelCustomJob(self, request: Any, context: Any) -> None:  # noqa: N802
        from google.cloud import aiplatform_v1 as aip

        record = self._job(request.name)
        with self.lock:
            state = record.job.state.name
            if state in (
                "JOB_STATE_SUCCEEDED",
                "JOB_STATE_FAILED",
                "JOB_STATE_CANCELLED",
            ):
                raise _err(
                    "FAILED_PRECONDITION",
                    f"Cannot cancel CustomJob {request.name}: it is in state {state}.",
                )
            record.job.state = aip.JobState.JOB_STATE_CANCELLING
            record.job.update_time = _now()
        if record.runner is not None:
            record.runner.cancel()
        return None

    def preempt(self, job: str = "*", after_epoch: int = 0) -> None:
        """Arm a SPOT preemption of ``job`` (id, name or ``*``) once it logged ``after_epoch``."""
        from cloudnn_gcp.testing._jobs import SPOT_TRIGGER

        self.faults.arm(SPOT_TRIGGER, {"job": job, "after_epoch": after_epoch})

    # -- logging -------------------------------------------------------------------

    def _on_log(self, stream: str, event: LogEvent) -> None:
        job_id, _, task = stream.partition("/")
        seconds = int(event.timestamp)
        nanos = int(round((event.timestamp - seconds) * 1e6)) * 1000
        if nanos >= 1_000_000_000:
            seconds, nanos = seconds + 1, nanos - 1_000_000_000
        with self.lock:
            project = self._project_of_job.get(job_id, "")
            self.log_rows.append(
                _LogRow(
                    seconds,
                    nanos,
                    f"{next(self._insert):012d}",
                    job_id,
                    task,
                    event.text,
                    project,
                )
            )

    def ListLogEntries(self, request: Any, context: Any) -> Any:  # noqa: N802
        from google.api import monitored_resource_pb2
        from google.cloud.logging_v2 import types as ltypes
        from google.protobuf import timestamp_pb2

        projects = set()
        for name in request.resource_names:
            match = re.match(r"^projects/([^/]+)$", name)
            if not match:
                raise _err(
                    "INVALID_ARGUMENT",
                    f"resource_names: {name!r} is not projects/<project>",
                    "resource_names",
                )
            projects.add(self.project_number(match.group(1)))
        if not projects:
            raise _err(
                "INVALID_ARGUMENT", "resource_names is required", "resource_names"
            )
        check = _log_filter(request.filter)
        descending = request.order_by.strip().lower() == "timestamp desc"
        with self.lock:
            rows = [
                r
                for r in self.log_rows
                if self.project_number(r.project or "x") in projects and check(r)
            ]
        rows.sort(key=lambda r: (r.seconds, r.nanos, r.insert_id), reverse=descending)
        start = int(request.page_token or 0)
        size = min(int(request.page_size or 50), 1000)
        entries = []
        for row in rows[start : start + size]:
            ts = timestamp_pb2.Timestamp(seconds=row.seconds, nanos=row.nanos)
            entries.append(
                ltypes.LogEntry(
                    log_name=f"projects/{row.project}/logs/{row.task}",
                    resource=monitored_resource_pb2.MonitoredResource(
                        type="ml_job",
                        labels={
                            "job_id": row.job_id,
                            "project_id": row.project,
                            "task_name": row.task,
                        },
                    ),
                    text_payload=row.text,
                    timestamp=ts,
                    receive_timestamp=ts,
                    insert_id=row.insert_id,
                    severity=ltypes.LogSeverity.INFO
                    if hasattr(ltypes, "LogSeverity")
                    else 200,
                    labels={"ml.googleapis.com/task_name": row.task},
                )
            )
        token = str(start + size) if start + size < len(rows) else ""
        return ltypes.ListLogEntriesResponse(entries=entries, next_page_token=token)

    # -- models --------------------------------------------------------------------

    def UploadModel(self, request: Any, context: Any) -> Any:  # noqa: N802
        from google.cloud import aiplatform_v1 as aip

        parent, _, _ = self._parent(request.parent)
        self._validate("UploadModelRequest", request)
        model_id = request.model_id or self._next_id()
        if not _MODEL_ID.match(model_id) and not model_id.isdigit():
            raise _err(
                "INVALID_ARGUMENT",
                "model_id must be 1-63 characters of [a-z0-9_-], not starting with "
                "a digit or '-'",
                "model_id",
            )
        if not request.model.artifact_uri.startswith("gs://"):
            raise _err(
                "INVALID_ARGUMENT",
                "artifact_uri must be a gs:// folder",
                "model.artifact_uri",
            )
        if not request.model.container_spec.image_uri:
            raise _err(
                "INVALID_ARGUMENT",
                "container_spec.image_uri is required",
                "model.container_spec.image_uri",
            )
        name = f"{parent}/models/{model_id}"
        with self.lock:
            if name in self.models:
                raise _err("ALREADY_EXISTS", f"Model {name} already exists.")
            model = aip.Model(request.model)
            model.name = name
            model.version_id = "1"
            model.create_time = model.update_time = _now()
            self.models[name] = model
        op = self._operation(name, self._generic("UploadModelOperationMetadata"))
        response = aip.UploadModelResponse(model=name, model_version_id="1")
        self._later(lambda: self._finish(op.name, response))
        return op

    def _model(self, name: str) -> Any:
        canonical = self._canon(name.split("@", 1)[0], "models")
        with self.lock:
            model = self.models.get(canonical)
        if model is None:
            raise _err("NOT_FOUND", f"Model {name} not found.")
        return model

    def GetModel(self, request: Any, context: Any) -> Any:  # noqa: N802

        with self.lock:
            return _copy(self._model(request.name))

    def ListModels(self, request: Any, context: Any) -> Any:  # noqa: N802
        from google.cloud import aiplatform_v1 as aip

        parent, _, _ = self._parent(request.parent)
        match = _list_filter(request.filter)
        with self.lock:
            found = [
                _copy(m)
                for n, m in self.models.items()
                if n.startswith(parent + "/") and match(_to_dict(m))
            ]
        return _page(aip.ListModelsResponse, "models", found, request)

    def DeleteModel(self, request: Any, context: Any) -> Any:  # noqa: N802
        from google.cloud import aiplatform_v1 as aip

        model = self._model(request.name)
        with self.lock:
            users = [
                ep
                for (ep, _), d in self.deployments.items()
                if d.deployed.model == model.name
            ]
            if users:
                raise _err(
                    "FAILED_PRECONDITION",
                    f"The Model {model.name} is deployed to Endpoint {users[0]}; "
                    "undeploy it first.",
                )
            self.models.pop(model.name, None)
        op = self._operation(
            model.name,
            aip.DeleteOperationMetadata(
                generic_metadata=aip.GenericOperationMetadata(create_time=_now())
            ),
        )
        self._later(lambda: self._finish(op.name))
        return op

    # -- endpoints --------------------------------------------------------------------

    def CreateEndpoint(self, request: Any, context: Any) -> Any:  # noqa: N802
        from google.cloud import aiplatform_v1 as aip

        parent, _, _ = self._parent(request.parent)
        self._validate("CreateEndpointRequest", request)
        endpoint_id = request.endpoint_id or self._next_id()[-9:]
        if not _ENDPOINT_ID.match(endpoint_id):
            raise _err(
                "INVALID_ARGUMENT",
                "endpoint_id: a letter then up to 62 of [a-z0-9-] (not ending in '-'), "
                "or up to 9 digits",
                "endpoint_id",
            )
        name = f"{parent}/endpoints/{endpoint_id}"
        with self.lock:
            if name in self.endpoints:
                raise _err("ALREADY_EXISTS", f"Endpoint {name} already exists.")
            endpoint = aip.Endpoint(request.endpoint)
            endpoint.name = name
            endpoint.create_time = endpoint.update_time = _now()
            self.endpoints[name] = endpoint
            created = _copy(endpoint)
        op = self._operation(name, self._generic("CreateEndpointOperationMetadata"))
        self._later(lambda: self._finish(op.name, created))
        return op

    def _endpoint(self, name: str) -> Any:
        canonical = self._canon(name, "endpoints", "endpoint")
        with self.lock:
            endpoint = self.endpoints.get(canonical)
        if endpoint is None:
            raise _err("NOT_FOUND", f"Endpoint {name} not found.")
        return endpoint

    def GetEndpoint(self, request: Any, context: Any) -> Any:  # noqa: N802

        with self.lock:
            return _copy(self._endpoint(request.name))

    def ListEndpoints(self, request: Any, context: Any) -> Any:  # noqa: N802
        from google.cloud import aiplatform_v1 as aip

        parent, _, _ = self._parent(request.parent)
        match = _list_filter(request.filter)
        with self.lock:
            found = [
                _copy(e)
                for n, e in self.endpoints.items()
                if n.startswith(parent + "/") and match(_to_dict(e))
            ]
        return _page(aip.ListEndpointsResponse, "endpoints", found, request)

    def DeleteEndpoint(self, request: Any, context: Any) -> Any:  # noqa: N802
        from google.cloud import aiplatform_v1 as aip

        endpoint = self._endpoint(request.name)
        with self.lock:
            busy = [k for k in self.deployments if k[0] == endpoint.name]
            if endpoint.deployed_models or busy:
                raise _err(
                    "FAILED_PRECONDITION",
                    f"Endpoint {endpoint.name} has deployed or deploying models; "
                    "undeploy them first.",
                )
            self.endpoints.pop(endpoint.name, None)
        op = self._operation(
            endpoint.name,
            aip.DeleteOperationMetadata(
                generic_metadata=aip.GenericOperationMetadata(create_time=_now())
            ),
        )
        self._later(lambda: self._finish(op.name))
        return op

    def DeployModel(self, request: Any, context: Any) -> Any:  # noqa: N802
        from google.cloud import aiplatform_v1 as aip

        self._validate("DeployModelRequest", request)
        endpoint = self._endpoint(request.endpoint)
        deployed = aip.DeployedModel(request.deployed_model)
        try:
            model = self._model(deployed.model)
        except EmulatorRpcError:
            raise _err(
                "INVALID_ARGUMENT",
                f"Model {deployed.model} does not exist.",
                "deployed_model.model",
            ) from None
        resources = deployed.dedicated_resources
        if "dedicated_resources" not in deployed:
            raise _err(
                "INVALID_ARGUMENT",
                "custom-container models need dedicated_resources",
                "deployed_model.dedicated_resources",
            )
        self._machine_errors(
            resources.machine_spec,
            "deployed_model.dedicated_resources.machine_spec",
            "serving",
        )
        if (
            resources.max_replica_count
            and resources.max_replica_count < resources.min_replica_count
        ):
            raise _err(
                "INVALID_ARGUMENT",
                "max_replica_count must be >= min_replica_count",
                "deployed_model.dedicated_resources.max_replica_count",
            )
        split = dict(request.traffic_split)
        if split and sum(split.values()) != 100:
            raise _err(
                "INVALID_ARGUMENT", "traffic_split must sum to 100", "traffic_split"
            )
        dm_id = deployed.id or str(next(self._ids) % 10_000_000_000)
        if not _DEPLOYED_ID.match(dm_id):
            raise _err(
                "INVALID_ARGUMENT",
                "deployed_model.id must be 1-10 digits",
                "deployed_model.id",
            )
        key = (endpoint.name, dm_id)
        with self.lock:
            if key in self.deployments or any(
                d.id == dm_id for d in endpoint.deployed_models
            ):
                raise _err(
                    "ALREADY_EXISTS",
                    f"DeployedModel {dm_id} already exists on {endpoint.name}.",
                )
            deployed.id = dm_id
            deployed.model = model.name
            deployed.create_time = _now()
            self.deployments[key] = _Deployment(None, deployed)
        meta = aip.DeployModelOperationMetadata(
            generic_metadata=aip.GenericOperationMetadata(create_time=_now())
        )
        op = self._operation(endpoint.name, meta)
        thread = threading.Thread(
            target=self._deploy,
            args=(op.name, endpoint.name, key, model, split),
            name=f"vertex-deploy-{dm_id}",
            daemon=True,
        )
        thread.start()
        return op

    def _deploy(
        self,
        op_name: str,
        endpoint_name: str,
        key: tuple[str, str],
        model: Any,
        split: Mapping[str, int],
    ) -> None:
        from google.cloud import aiplatform_v1 as aip

        dm_id = key[1]
        container = model.container_spec
        port = free_port()
        stream = f"endpoint-{endpoint_name.rsplit('/', 1)[-1]}/{dm_id}"
        env = job_env_base()
        env.update({e.name: e.value for e in container.env})
        project = endpoint_name.split("/")[1]
        env.update(
            {
                "AIP_HTTP_PORT": str(port),
                "AIP_HEALTH_ROUTE": container.health_route or "/health",
                "AIP_PREDICT_ROUTE": container.predict_route or "/predict",
                "AIP_STORAGE_URI": model.artifact_uri,
                "AIP_DEPLOYED_MODEL_ID": dm_id,
                "AIP_ENDPOINT_ID": endpoint_name.rsplit("/", 1)[-1],
                "AIP_PROJECT_NUMBER": project,
                "AIP_MODE": "PREDICTION",
                # the container listens on 0.0.0.0 on Vertex AI; here, loopback only
                "CLOUDNN_HOST": "127.0.0.1",
                "STORAGE_EMULATOR_HOST": self.storage.url,
                "GOOGLE_CLOUD_PROJECT": project,
                "PATH": f"{self.shim_dir}:{env.get('PATH', '')}",
                "PYTHONUNBUFFERED": "1",
            }
        )
        argv = [*container.command, *container.args]
        folder = self.workdir / "endpoints" / f"{key[0].rsplit('/', 1)[-1]}-{dm_id}"
        (folder / "tmp").mkdir(parents=True, exist_ok=True)
        env["TMPDIR"] = str(folder / "tmp")
        server = ServerProcess(
            ProcessSpec(
                argv=argv, cwd=folder, env=env, stream=stream, inherit_env=False
            ),
            self.logs,
            port=port,
            health_path=container.health_route or "/health",
        )
        with self.lock:
            deployment = self.deployments.get(key)
            if deployment is None:
                return
            deployment.server = server
        try:
            if not argv:
                raise RuntimeError("container_spec.command is empty")
            server.start()
            server.wait_ready(timeout=SERVER_START_S)
        except Exception as exc:  # noqa: BLE001 - reported on the operation
            server.terminate(grace=2.0)
            with self.lock:
                self.deployments.pop(key, None)
            self._finish(
                op_name,
                error=(
                    9,
                    "Model server never became ready. Please validate that your "
                    f"model file or container configuration are valid. {exc}",
                ),
            )
            return
        with self.lock:
            endpoint = self.endpoints.get(endpoint_name)
            if endpoint is None:  # deleted meanwhile
                server.terminate(grace=2.0)
                self.deployments.pop(key, None)
                self._finish(op_name, error=(5, f"Endpoint {endpoint_name} not found."))
                return
            endpoint.deployed_models.append(deployment.deployed)
            traffic = dict(endpoint.traffic_split)
            new_split = {dm_id if k == "0" else k: v for k, v in split.items()}
            if not new_split:
                new_split = {dm_id: 100} if not traffic else {**traffic, dm_id: 0}
            endpoint.traffic_split = new_split
            endpoint.update_time = _now()
            deployed = _copy(deployment.deployed)
        self._finish(op_name, aip.DeployModelResponse(deployed_model=deployed))

    def UndeployModel(self, request: Any, context: Any) -> Any:  # noqa: N802
        from google.cloud import aiplatform_v1 as aip

        endpoint = self._endpoint(request.endpoint)
        dm_id = request.deployed_model_id
        key = (endpoint.name, dm_id)
        with self.lock:
            deployment = self.deployments.get(key)
            present = [d for d in endpoint.deployed_models if d.id == dm_id]
            if not present:
                if deployment is not None:
                    raise _err(
                        "FAILED_PRECONDITION",
                        f"DeployedModel {dm_id} is still being deployed.",
                    )
                raise _err("NOT_FOUND", f"DeployedModel {dm_id} not found.")
            endpoint.deployed_models = [
                d for d in endpoint.deployed_models if d.id != dm_id
            ]
            endpoint.traffic_split = {
                k: v for k, v in endpoint.traffic_split.items() if k != dm_id
            }
            self.deployments.pop(key, None)
        if deployment is not None and deployment.server is not None:
            deployment.server.terminate(grace=5.0)
        op = self._operation(
            endpoint.name,
            aip.UndeployModelOperationMetadata(
                generic_metadata=aip.GenericOperationMetadata(create_time=_now())
            ),
        )
        self._later(lambda: self._finish(op.name, aip.UndeployModelResponse()))
        return op

    def Predict(self, request: Any, context: Any) -> Any:  # noqa: N802
        from google.cloud import aiplatform_v1 as aip

        endpoint = self._endpoint(request.endpoint)
        with self.lock:
            split = {k: v for k, v in endpoint.traffic_split.items() if v > 0}
            live = {
                d.id: self.deployments.get((endpoint.name, d.id))
                for d in endpoint.deployed_models
            }
        choices = [k for k in split if live.get(k) is not None] or [
            k for k, v in live.items() if v is not None
        ]
        if not choices:
            raise _err(
                "FAILED_PRECONDITION",
                f"Endpoint {endpoint.name} does not have any deployed model.",
            )
        weights = [split.get(k, 1) for k in choices]
        dm_id = self._rng.choices(choices, weights=weights)[0]
        deployment = live[dm_id]
        assert deployment is not None and deployment.server is not None
        body = _to_dict(request)
        payload: dict[str, Any] = {"instances": body.get("instances", [])}
        if "parameters" in body:
            payload["parameters"] = body["parameters"]
        route = self.models.get(deployment.deployed.model)
        predict_route = (
            route.container_spec.predict_route if route is not None else ""
        ) or "/predict"
        http = urllib.request.Request(
            deployment.server.url + predict_route,
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(http, timeout=60) as resp:  # noqa: S310 - loopback
                answer = json.loads(resp.read().decode())
        except urllib.error.HTTPError as exc:
            text = exc.read().decode("utf-8", "replace")
            try:
                message = str(json.loads(text).get("error") or text)
            except ValueError:
                message = text
            code = "INVALID_ARGUMENT" if 400 <= exc.code < 500 else "INTERNAL"
            raise _err(code, f"The model returned {exc.code}: {message}") from None
        except OSError as exc:
            raise _err(
                "UNAVAILABLE", f"The model server is not reachable: {exc}"
            ) from None
        response = aip.PredictResponse(
            deployed_model_id=dm_id,
            model=deployment.deployed.model,
            model_display_name=deployment.deployed.display_name,
            model_version_id="1",
        )
        response.predictions.extend(answer.get("predictions", []))
        return response

    # -- lifetime ----------------------------------------------------------------

    def stop(self) -> None:
        with self.lock:
            runners = [r.runner for r in self.jobs.values() if r.runner is not None]
            servers = [
                d.server for d in self.deployments.values() if d.server is not None
            ]
        for runner in runners:
            runner.stop()
        for server in servers:
            server.terminate(grace=2.0)

    def counts(self) -> dict[str, Any]:
        with self.lock:
            return {
                "custom_jobs": len(self.jobs),
                "models": len(self.models),
                "endpoints": len(self.endpoints),
                "deployed_models": sum(
                    len(e.deployed_models) for e in self.endpoints.values()
                ),
                "operations": len(self.operations),
                "log_entries": len(self.log_rows),
                "requests": len(self.requests),
            }


# ------------------------------------------------------------------ helpers


def _page(cls: Any, field_name: str, items: list[Any], request: Any) -> Any:
    start = int(request.page_token or 0)
    size = int(request.page_size or 100)
    chunk = items[start : start + size]
    token = str(start + size) if start + size < len(items) else ""
    return cls(**{field_name: chunk, "next_page_token": token})


def _unquote(value: str) -> str:
    if value.startswith('"') and value.endswith('"'):
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def _clauses(text: str) -> list[tuple[str, str, str]]:
    out = []
    for part in re.split(r"\s+AND\s+", text.strip()) if text.strip() else []:
        match = _FILTER_CLAUSE.match(part)
        if not match:
            raise _err("INVALID_ARGUMENT", f"Unsupported filter: {part!r}", "filter")
        out.append((match["key"], match["op"], _unquote(match["value"])))
    return out


def _list_filter(text: str) -> Callable[[Mapping[str, Any]], bool]:
    """Vertex AI list filters: ``labels.k="v"``, ``display_name="x"``, ``state=...``."""
    clauses = _clauses(text)

    def match(resource: Mapping[str, Any]) -> bool:
        for key, op, value in clauses:
            if key.startswith("labels."):
                have = (resource.get("labels") or {}).get(
                    key[len("labels.") :].strip('"')
                )
            elif key in ("display_name", "state", "name"):
                have = resource.get(key)
            else:
                raise _err(
                    "INVALID_ARGUMENT", f"Unsupported filter field {key!r}", "filter"
                )
            if op in ("=", ":") and have != value:
                return False
            if op == "!=" and have == value:
                return False
        return True

    return match


def _log_filter(text: str) -> Callable[[_LogRow], bool]:
    """Cloud Logging filters on what the emulator's entries have."""
    from google.protobuf import timestamp_pb2

    checks: list[Callable[[_LogRow], bool]] = []
    for key, op, value in _clauses(text):
        if key == "timestamp":
            ts = timestamp_pb2.Timestamp()
            try:
                ts.FromJsonString(value)
            except ValueError:
                raise _err(
                    "INVALID_ARGUMENT", f"Bad timestamp in filter: {value!r}", "filter"
                ) from None
            checks.append(_time_check(op, (ts.seconds, ts.nanos)))
            continue
        getters: dict[str, Callable[[_LogRow], str]] = {
            "resource.type": lambda r: "ml_job",
            "resource.labels.job_id": lambda r: r.job_id,
            "resource.labels.task_name": lambda r: r.task,
            'labels."ml.googleapis.com/task_name"': lambda r: r.task,
            "logName": lambda r: f"projects/{r.project}/logs/{r.task}",
        }
        if key not in getters:
            raise _err(
                "INVALID_ARGUMENT", f"Unsupported filter field {key!r}", "filter"
            )
        if op not in ("=", ":", "!="):
            raise _err("INVALID_ARGUMENT", f"Unsupported operator {op} on {key}")
        checks.append(_text_check(getters[key], value, equal=op != "!="))
    return lambda row: all(check(row) for check in checks)


def _time_check(op: str, bound: tuple[int, int]) -> Callable[[_LogRow], bool]:
    compare: dict[str, Callable[[tuple[int, int], tuple[int, int]], bool]] = {
        ">=": lambda v, b: v >= b,
        ">": lambda v, b: v > b,
        "<=": lambda v, b: v <= b,
        "<": lambda v, b: v < b,
        "=": lambda v, b: v == b,
    }
    if op not in compare:
        raise _err("INVALID_ARGUMENT", f"Unsupported operator {op} on timestamp")
    fn = compare[op]
    return lambda row: fn((row.seconds, row.nanos), bound)


def _text_check(
    get: Callable[[_LogRow], str], value: str, *, equal: bool
) -> Callable[[_LogRow], bool]:
    return lambda row: (get(row) == value) is equal
