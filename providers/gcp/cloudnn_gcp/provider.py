"""Google Vertex AI as a cloudnn provider: custom jobs, Cloud Logging, endpoints.

The SPI contract is :mod:`cloudnn.provider`'s; what is Vertex-specific:

Training
    ``plan_training`` builds the training bundle (content-addressed), lists it
    and each local data file as uploads to ``gs://<bucket>/<prefix>/bundles/``
    and ``.../data/<sha256>/``, and compiles one ``CreateCustomJob``
    (:mod:`cloudnn_gcp.compile`) validated offline against the bundled
    ``aiplatform_v1`` schema. Without a project or bucket configured the plan
    still renders, with ``YOUR_PROJECT``/``YOUR_BUCKET`` and a warning;
    ``submit_training`` then refuses with the setting to make.
    ``submit_training`` uploads what is missing, then finds the run's job by
    its ``cloudnn_run_id`` label (``ListCustomJobs``) and adopts it unless it
    failed or was cancelled -- before every create attempt, so a retried or
    repeated submit never makes a second job. ``JobRef.job_id`` is the
    CustomJob's resource name.
Logs
    Cloud Logging entries of the job (``resource.type="ml_job"``, its job
    id), oldest first; the cursor is ``{"t": <RFC 3339 timestamp>, "ids":
    [insert ids at that timestamp]}``. Lines of replicas other than the chief
    are prefixed with their task (``[workerpool1-0]``), so only the chief's
    progress events drive the progress bar.
Endpoints
    ``create_endpoint`` uploads the serving code, then ``UploadModel`` and
    ``CreateEndpoint`` (deterministic ids; awaited, they take seconds) and
    starts ``DeployModel`` (minutes) without waiting: its operation name goes
    into the ref, and ``get_endpoint`` reports ``Creating`` until the model
    serves, ``Failed`` with the operation's error. ``delete_endpoint``
    undeploys, deletes the endpoint and the model; quiet when gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

from cloudnn.errors import (
    CloudnnError,
    EndpointError,
    NotFoundError,
    SpecError,
)
from cloudnn.provider import (
    Capability,
    CheckReport,
    EndpointPlan,
    EndpointRef,
    EndpointStatus,
    JobRef,
    JobState,
    JobStatus,
    LogLine,
    Phase,
    Provider,
    TrainingPlan,
    Upload,
)
from cloudnn.spec import Spec
from cloudnn_gcp import compile as vx
from cloudnn_gcp._status import endpoint_state, job_state
from cloudnn_gcp.config import ProviderConfig, Target, load_config, resolve_target

__all__ = ["VertexAIProvider"]

_BUNDLE_FILE = "cloudnn-bundle.tar.gz"
_SERVING_FILE = "cloudnn-serving.tar.gz"
#: states after which a new job is made for the run (a resume), not adopted
_RETRYABLE_STATES = frozenset(
    {"JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"}
)
_CHIEF = "workerpool0-0"
#: seconds the short LROs (UploadModel, CreateEndpoint, deletes) may take
_SHORT_LRO_TIMEOUT = 600.0


class VertexAIProvider(Provider):
    """Trains as Vertex AI custom jobs and serves on Vertex AI endpoints.

    Options (keywords, or environment variables; see :mod:`cloudnn_gcp.config`):
    ``project``, ``region``, ``bucket``, ``prefix``, ``api_endpoint``,
    ``logging_endpoint``, ``transport``, ``credentials``, ``poll_interval``,
    ``max_poll_interval``, ``timeout``.
    """

    name: ClassVar[str] = "gcp"
    #: every capability maps onto Vertex AI (GPUs, multi-node pools, SPOT,
    #: custom code in the bundle, gs:// data, autoscaling, serving GPUs)
    unsupported: ClassVar[dict[Capability, str]] = {}
    cancel_timeout = 600.0
    endpoint_timeout = 3600.0

    def __init__(
        self, *, home: str | os.PathLike[str] | None = None, **options: Any
    ) -> None:
        super().__init__(home=home)
        self.config: ProviderConfig = load_config(options)
        self.poll_interval = self.config.poll_interval
        self.max_poll_interval = self.config.max_poll_interval
        self._lock = threading.Lock()
        self._bundles: dict[str, Any] = {}
        self._sdk_clients: Any = None
        self._metrics: dict[str, dict[str, Any]] = {}
        self._failures: dict[str, str] = {}

    # -- plumbing --------------------------------------------------------

    @property
    def _sdk(self) -> Any:
        """The Google clients (:class:`cloudnn_gcp._sdk.Clients`), built on first use."""
        with self._lock:
            if self._sdk_clients is None:
                from cloudnn_gcp._sdk import Clients

                self._sdk_clients = Clients(self.config)
            return self._sdk_clients

    def _target(self, spec: Spec | None) -> Target:
        return resolve_target(spec.providers.gcp if spec else None, self.config)

    @staticmethod
    def _require(target: Target) -> None:
        missing = target.missing()
        if missing:
            field, var = missing[0]
            names = " and ".join(f for f, _ in missing)
            raise SpecError(
                field,
                f"{names} must be set to use Vertex AI",
                hint=f"set {field} in the spec or {var} in the environment"
                + (
                    " (and CLOUDNN_GCP_BUCKET)"
                    if len(missing) > 1 and var != "CLOUDNN_GCP_BUCKET"
                    else ""
                )
                + "; `cloudnn setup --provider gcp` prints the one-time setup",
            )

    def _bundle_path(self, kind: str, sha256: str) -> Path:
        return self.home / "gcp" / kind / f"{sha256}.tar.gz"

    # -- check -----------------------------------------------------------

    def check(self) -> CheckReport:
        """Credentials, project, region, bucket, Vertex AI reachable (no side effects)."""
        checks: list[tuple[str, bool, str]] = []
        target = self._target(None)
        import importlib.util

        has_sdk = all(
            importlib.util.find_spec(m) is not None
            for m in ("google.cloud.aiplatform_v1", "google.cloud.storage")
        )
        checks.append(
            (
                "google-cloud-aiplatform installed",
                has_sdk,
                "" if has_sdk else 'pip install "cloudnn[gcp]"',
            )
        )
        if not has_sdk:
            return CheckReport(self.name, False, tuple(checks))
        creds_ok = True
        try:
            self._sdk.credentials()
            detail = (
                "anonymous (plaintext emulator endpoint)"
                if self.config.anonymous
                else "application default credentials"
            )
        except CloudnnError as exc:
            creds_ok, detail = False, f"{exc} -- {exc.hint or ''}".rstrip(" -")
        checks.append(("credentials", creds_ok, detail))
        checks.append(
            (
                "project",
                bool(target.project),
                target.project or "set GOOGLE_CLOUD_PROJECT or providers.gcp.project",
            )
        )
        checks.append(("region", True, target.region))
        bucket_ok = bool(target.bucket)
        bucket_detail = "set CLOUDNN_GCP_BUCKET or providers.gcp.bucket"
        if target.bucket and creds_ok:
            try:
                client = self._sdk.storage(target.project)
                exists = self._sdk.call(
                    lambda: client.bucket(target.bucket).exists(), what="bucket"
                )
                bucket_ok = bool(exists)
                bucket_detail = (
                    f"gs://{target.bucket}"
                    if exists
                    else f"gs://{target.bucket} does not exist (cloudnn setup --provider gcp)"
                )
            except CloudnnError as exc:
                bucket_ok, bucket_detail = False, str(exc)
        checks.append(("bucket", bucket_ok, bucket_detail))
        api_ok = False
        api_detail = "needs credentials and a project"
        if creds_ok and target.project:
            host = self.config.api_host(target.region)
            try:
                jobs = self._sdk.jobs(target.region)
                self._sdk.call(
                    lambda: next(
                        iter(
                            jobs.list_custom_jobs(
                                request={"parent": target.parent, "page_size": 1},
                                timeout=min(self.config.timeout, 20.0),
                            ).pages
                        )
                    ),
                    what="ListCustomJobs",
                )
                api_ok, api_detail = True, host
            except CloudnnError as exc:
                api_detail = f"{host}: {exc}"
        checks.append(("Vertex AI API reachable", api_ok, api_detail))
        return CheckReport(self.name, all(c[1] for c in checks), tuple(checks))

    def setup_templates(self) -> dict[str, str]:
        """One-time setup files (service account, bucket), filled in where known."""
        from cloudnn_gcp.templates import render

        target = self._target(None)
        return render(target)

    # -- planning (pure) -------------------------------------------------

    def _training_bundle(self, spec: Spec) -> Any:
        from cloudnn.bundle import training_bundle

        bundle = training_bundle(spec)
        with self._lock:
            self._bundles[bundle.sha256] = bundle
        return bundle

    def plan_training(self, spec: Spec, *, run_id: str) -> TrainingPlan:
        from cloudnn.bundle import channels, content_sha256

        self.refuse_unsupported(spec, Phase.TRAINING)
        target = self._target(spec)
        bundle = self._training_bundle(spec)
        bundle_uri = f"{target.root}/bundles/{bundle.sha256}/{_BUNDLE_FILE}"
        uploads = [
            Upload(
                str(self._bundle_path("bundles", bundle.sha256)),
                bundle_uri,
                bundle.sha256,
                bundle.size,
                "bundle",
            )
        ]
        channel_uris: dict[str, str] = {}
        for ch in channels(spec):
            if ch.is_remote:
                if not ch.source.startswith("gs://"):
                    raise SpecError(
                        f"data.{ch.name}",
                        f"Vertex AI jobs read Cloud Storage, not {ch.source}",
                        hint="copy the data to a gs:// bucket, or give a local path "
                        "(cloudnn uploads it)",
                    )
                folder = ch.source if ch.is_dir else ch.source.rpartition("/")[0]
                channel_uris[ch.name] = folder.rstrip("/") + "/"
                continue
            sha, size = content_sha256(ch.source)
            folder = f"{target.root}/data/{sha}/"
            channel_uris[ch.name] = folder
            destination = folder if ch.is_dir else folder + ch.filename
            uploads.append(Upload(ch.source, destination, sha, size, "data"))
        compiled = vx.compile_training(
            spec,
            run_id=run_id,
            target=target,
            bundle_uri=bundle_uri,
            channel_uris=channel_uris,
        )
        warnings = list(compiled.warnings)
        for field, var in target.missing():
            warnings.append(
                f"{field} is not set (nor {var}): the plan shows a placeholder; "
                "set it before `cloudnn train`"
            )
        return TrainingPlan(
            provider=self.name,
            spec=spec,
            run_id=run_id,
            job_name=vx.job_display_name(run_id),
            requests=(compiled.request,),
            instance_type=compiled.machine.machine_type,
            instance_count=compiled.instance_count,
            processes_per_node=compiled.processes_per_node,
            accelerator=spec.resources.accelerator,
            hourly_cost_usd=compiled.hourly_cost_usd,
            estimated_cost_usd=compiled.estimated_cost_usd,
            model_uri=compiled.model_uri,
            output_uri=compiled.output_uri,
            uploads=tuple(uploads),
            warnings=tuple(warnings),
            details=compiled.details,
        )

    def _serving_code(self) -> Any:
        """The serving code archive: ``code/server.py`` + runtime, no model files.

        The model stays where the job wrote it (``artifact_uri``); only the
        code travels.
        """
        from cloudnn.bundle import serving_bundle

        bundle = serving_bundle(None, "vertex")
        with self._lock:
            self._bundles[bundle.sha256] = bundle
        return bundle

    def plan_endpoint(self, spec: Spec, model_uri: str) -> EndpointPlan:
        self.refuse_unsupported(spec, Phase.ENDPOINT)
        target = self._target(spec)
        code = self._serving_code()
        code_uri = f"{target.root}/serving/{code.sha256}/{_SERVING_FILE}"
        compiled = vx.compile_endpoint(
            spec, model_uri, target=target, code_uri=code_uri
        )
        warnings = list(compiled.warnings)
        for field, var in target.missing():
            warnings.append(
                f"{field} is not set (nor {var}): the plan shows a placeholder"
            )
        return EndpointPlan(
            provider=self.name,
            spec=spec,
            endpoint_name=compiled.endpoint_name,
            model_uri=model_uri,
            requests=compiled.requests,
            instance_type=compiled.machine.machine_type,
            replicas=compiled.replicas,
            hourly_cost_usd=compiled.hourly_cost_usd,
            uploads=(
                Upload(
                    str(self._bundle_path("serving", code.sha256)),
                    code_uri,
                    code.sha256,
                    code.size,
                    "bundle",
                ),
            ),
            warnings=tuple(warnings),
            details={
                **compiled.details,
                "endpoint": compiled.endpoint,
                "model": compiled.model,
                "deployed_model_id": compiled.deployed_model_id,
            },
        )

    # -- uploads -----------------------------------------------------------

    def _upload(self, target: Target, upload: Upload, spec: Spec) -> None:
        source = Path(upload.source)
        if upload.kind == "bundle":
            if not source.is_file():
                bundle = self._bundles.get(upload.sha256)
                if bundle is None:
                    rebuilt = (
                        self._serving_code()
                        if "/serving/" in upload.destination
                        else self._training_bundle(spec)
                    )
                    if rebuilt.sha256 != upload.sha256:
                        raise SpecError(
                            "plan",
                            "the cloudnn sources changed since this plan was made",
                            hint="plan (or train) again",
                        )
                    bundle = rebuilt
                bundle.write(source)
            self._sdk.upload_file(target.project, source, upload.destination)
        elif upload.destination.endswith("/"):
            self._sdk.upload_tree(target.project, source, upload.destination)
        else:
            self._sdk.upload_file(target.project, source, upload.destination)

    # -- jobs ----------------------------------------------------------------

    def _jobs_of_run(self, target: Target, run_id: str) -> list[Any]:
        """The run's CustomJobs (by label), newest first."""
        jobs = self._sdk.jobs(target.region)
        label = vx.label_value(run_id)
        request = {
            "parent": target.parent,
            "filter": f'labels.{vx.RUN_LABEL}="{label}"',
            "page_size": 100,
        }
        found = self._sdk.call(
            lambda: list(
                jobs.list_custom_jobs(
                    request=request,
                    retry=self._sdk.read_retry(),
                    timeout=self.config.timeout,
                )
            ),
            what="ListCustomJobs",
        )
        mine = [j for j in found if j.labels.get(vx.RUN_LABEL) == label]
        return sorted(
            mine,
            key=lambda j: j.create_time.timestamp() if j.create_time else 0.0,
            reverse=True,
        )

    def _ref(self, run_id: str, target: Target, job: Any, plan: TrainingPlan) -> JobRef:
        return JobRef(
            provider=self.name,
            run_id=run_id,
            job_id=str(job.name),
            extra={
                "project": target.project,
                "region": target.region,
                "output_uri": plan.output_uri,
                "model_uri": plan.model_uri,
            },
        )

    def submit_training(self, plan: TrainingPlan) -> JobRef:
        from cloudnn_gcp._sdk import enum_name, to_message

        target = self._target(plan.spec)
        self._require(target)
        request = plan.requests[0]["request"]
        for job in self._jobs_of_run(target, plan.run_id):
            if enum_name(job.state) not in _RETRYABLE_STATES:
                return self._ref(plan.run_id, target, job, plan)  # adopt
        for upload in plan.uploads:
            self._upload(target, upload, plan.spec)
        custom_job = to_message("CustomJob", request["custom_job"])
        jobs = self._sdk.jobs(target.region)
        started = time.time()

        def create() -> Any:
            # a retry may follow a create whose answer was lost: look first
            for job in self._jobs_of_run(target, plan.run_id):
                state = enum_name(job.state)
                newer = job.create_time and job.create_time.timestamp() >= started - 5
                if state not in _RETRYABLE_STATES or newer:
                    return job
            return jobs.create_custom_job(
                parent=request["parent"],
                custom_job=custom_job,
                timeout=self.config.timeout,
            )

        job = self._sdk.call(create, what="CreateCustomJob")
        return self._ref(plan.run_id, target, job, plan)

    def _job_target(self, ref: JobRef) -> Target:
        base = self._target(None)
        return Target(
            project=ref.extra.get("project") or base.project,
            region=ref.extra.get("region") or base.region,
            bucket=base.bucket,
            prefix=base.prefix,
        )

    def _get_job(self, ref: JobRef) -> Any:
        target = self._job_target(ref)
        if not ref.job_id.startswith("projects/"):
            if not target.project:
                raise NotFoundError(f"no Vertex AI job for run {ref.run_id!r}")
            found = self._jobs_of_run(target, ref.run_id)
            if not found:
                raise NotFoundError(
                    f"no Vertex AI job for run {ref.run_id!r}",
                    hint="list runs with `cloudnn runs list`",
                )
            return found[0]
        jobs = self._sdk.jobs(target.region)
        return self._sdk.call(
            lambda: jobs.get_custom_job(
                name=ref.job_id,
                retry=self._sdk.read_retry(),
                timeout=self.config.timeout,
            ),
            what="GetCustomJob",
        )

    def get_job(self, ref: JobRef) -> JobStatus:
        from cloudnn_gcp._sdk import enum_name

        job = self._get_job(ref)
        vendor = enum_name(job.state)
        state = job_state(vendor)
        message = ""
        if vendor == "JOB_STATE_CANCELLING":
            message = "cancelling: the job is saving a checkpoint"
        metrics: dict[str, Any] = {}
        if state is JobState.SUCCEEDED:
            metrics = self._job_metrics(ref, job)
        elif state in (JobState.FAILED, JobState.CANCELLED):
            message = job.error.message if job.error else ""
            if state is JobState.FAILED:
                message = self._failure_message(ref, job) or message
        return JobStatus(
            state=state, message=message, vendor_state=vendor, metrics=metrics
        )

    def _job_metrics(self, ref: JobRef, job: Any) -> dict[str, Any]:
        key = str(job.name)
        if key in self._metrics:
            return self._metrics[key]
        output = ref.extra.get("output_uri")
        if not output:
            base = job.job_spec.base_output_directory.output_uri_prefix
            output = base.rstrip("/") + "/output/" if base else ""
        metrics: dict[str, Any] = {}
        if output:
            text = self._sdk.read_text(
                self._job_target(ref).project, output.rstrip("/") + "/metrics.json"
            )
            with contextlib.suppress(ValueError, TypeError):
                metrics = dict(json.loads(text)) if text else {}
        self._metrics[key] = metrics
        return metrics

    def _failure_message(self, ref: JobRef, job: Any) -> str:
        """The job's own ``failed`` event message, if its log has one."""
        from cloudnn.runtime.events import parse_event

        key = str(job.name)
        if key not in self._failures:
            found = ""
            with contextlib.suppress(CloudnnError):
                for line in self.stream_logs(ref):
                    event = parse_event(line.text)
                    if event and event.get("event") == "failed":
                        found = str(event.get("message") or "")
            self._failures[key] = found
        return self._failures[key]

    def stream_logs(self, ref: JobRef, since: Any = None) -> Iterator[LogLine]:
        target = self._job_target(ref)
        if not ref.job_id.startswith("projects/") or not target.project:
            return
        job_id = ref.job_id.rsplit("/", 1)[-1]
        cursor_ts = ""
        seen: list[str] = []
        if isinstance(since, Mapping):
            cursor_ts = str(since.get("t") or "")
            seen = [str(i) for i in since.get("ids") or ()]
        log_filter = f'resource.type="ml_job" AND resource.labels.job_id="{job_id}"'
        if cursor_ts:
            log_filter += f' AND timestamp>="{cursor_ts}"'
        skip = set(seen)
        for entry in self._sdk.log_entries(target.project, log_filter):
            stamp = _rfc3339(entry.timestamp)
            if stamp == cursor_ts and entry.insert_id in skip:
                continue
            if stamp != cursor_ts:
                cursor_ts, seen = stamp, []
            seen = [*seen, entry.insert_id]
            text = _entry_text(entry)
            task = entry.resource.labels.get("task_name", _CHIEF)
            if task != _CHIEF:
                text = f"[{task}] {text}"
            yield LogLine(
                text=text,
                cursor={"t": cursor_ts, "ids": seen},
                timestamp=entry.timestamp.timestamp() if entry.timestamp else None,
            )

    def cancel_job(self, ref: JobRef) -> None:
        from cloudnn_gcp._sdk import enum_name

        try:
            job = self._get_job(ref)
        except NotFoundError:
            return
        if job_state(enum_name(job.state)).terminal:
            return
        if enum_name(job.state) == "JOB_STATE_CANCELLING":
            return
        jobs = self._sdk.jobs(self._job_target(ref).region)
        from google.api_core import exceptions as gexc

        def cancel() -> None:
            # FailedPrecondition: it ended meanwhile, nothing to cancel
            with contextlib.suppress(gexc.FailedPrecondition):
                jobs.cancel_custom_job(name=job.name, timeout=self.config.timeout)

        self._sdk.call(cancel, what="CancelCustomJob")

    # -- endpoints -----------------------------------------------------------

    def _endpoint_names(self, ref: EndpointRef) -> tuple[Target, str, str, str]:
        """(target, endpoint resource, model resource, deployed model id) of ``ref``."""
        base = self._target(None)
        target = Target(
            project=ref.extra.get("project") or base.project,
            region=ref.extra.get("region") or base.region,
            bucket=base.bucket,
            prefix=base.prefix,
        )
        endpoint = str(
            ref.extra.get("endpoint") or f"{target.parent}/endpoints/{ref.name}"
        )
        model = str(ref.extra.get("model") or f"{target.parent}/models/{ref.name}")
        dm_id = str(
            ref.extra.get("deployed_model_id") or vx.deployed_model_id(ref.name)
        )
        return target, endpoint, model, dm_id

    def _predict_url(self, target: Target, endpoint: str) -> str:
        scheme = "http" if self.config.plaintext else "https"
        return f"{scheme}://{self.config.api_host(target.region)}/v1/{endpoint}:predict"

    def create_endpoint(self, plan: EndpointPlan) -> EndpointRef:
        from google.api_core import exceptions as gexc

        from cloudnn_gcp._sdk import to_message

        target = self._target(plan.spec)
        self._require(target)
        upload_req, create_req, deploy_req = (r["request"] for r in plan.requests)
        endpoint = str(plan.details["endpoint"])
        model = str(plan.details["model"])
        dm_id = str(plan.details["deployed_model_id"])
        for upload in plan.uploads:
            self._upload(target, upload, plan.spec)
        models = self._sdk.models(target.region)
        endpoints = self._sdk.endpoints(target.region)
        sleep = time.sleep

        def ensure(client: Any, get: Any, create: Any) -> None:
            """Adopt the resource if it exists, else create it and await the LRO."""
            try:
                get()
                return
            except gexc.NotFound:
                pass
            try:
                op = create()
            except gexc.AlreadyExists:
                return
            self._sdk.wait_operation(
                client, op.operation.name, timeout=_SHORT_LRO_TIMEOUT, sleep=sleep
            )

        def ensure_model() -> None:
            ensure(
                models,
                lambda: models.get_model(name=model, timeout=self.config.timeout),
                lambda: models.upload_model(
                    request=to_message("UploadModelRequest", upload_req),
                    timeout=self.config.timeout,
                ),
            )

        def ensure_endpoint() -> None:
            ensure(
                endpoints,
                lambda: endpoints.get_endpoint(
                    name=endpoint, timeout=self.config.timeout
                ),
                lambda: endpoints.create_endpoint(
                    request=to_message("CreateEndpointRequest", create_req),
                    timeout=self.config.timeout,
                ),
            )

        def ensure_deployment() -> str:
            current = endpoints.get_endpoint(name=endpoint, timeout=self.config.timeout)
            if any(dm.id == dm_id for dm in current.deployed_models):
                return ""
            running = self._running_deploy(endpoints, endpoint)
            if running:
                return running
            try:
                op = endpoints.deploy_model(
                    request=to_message("DeployModelRequest", deploy_req),
                    timeout=self.config.timeout,
                )
            except gexc.AlreadyExists:
                return self._running_deploy(endpoints, endpoint)
            return str(op.operation.name)

        self._sdk.call(ensure_model, what="UploadModel")
        self._sdk.call(ensure_endpoint, what="CreateEndpoint")
        operation = self._sdk.call(ensure_deployment, what="DeployModel")
        return EndpointRef(
            provider=self.name,
            name=plan.endpoint_name,
            url=self._predict_url(target, endpoint),
            extra={
                "project": target.project,
                "region": target.region,
                "endpoint": endpoint,
                "model": model,
                "deployed_model_id": dm_id,
                "operation": operation,
                "model_uri": plan.model_uri,
            },
        )

    def _running_deploy(self, endpoints: Any, endpoint: str) -> str:
        """Name of a DeployModel operation on ``endpoint`` still running ("" if none)."""
        try:
            response = endpoints.list_operations(
                {"name": endpoint}, timeout=self.config.timeout
            )
        except Exception:  # noqa: BLE001 - listing is an optimisation only
            return ""
        for op in response.operations:
            if not op.done and "DeployModel" in op.metadata.type_url:
                return str(op.name)
        return ""

    def get_endpoint(self, ref: EndpointRef) -> EndpointStatus:
        from google.api_core import exceptions as gexc

        target, endpoint, _, dm_id = self._endpoint_names(ref)
        if not target.project:
            raise NotFoundError(f"no Vertex AI endpoint {ref.name!r} (no project set)")
        endpoints = self._sdk.endpoints(target.region)
        try:
            current = self._sdk.call(
                lambda: endpoints.get_endpoint(
                    name=endpoint,
                    retry=self._sdk.read_retry(),
                    timeout=self.config.timeout,
                ),
                what="GetEndpoint",
            )
        except NotFoundError:
            raise NotFoundError(
                f"no Vertex AI endpoint {ref.name!r}",
                hint="list endpoints with `cloudnn endpoints list`",
            ) from None
        deployed = any(dm.id == dm_id for dm in current.deployed_models)
        operation = str(ref.extra.get("operation") or "")
        if not deployed and not operation:
            operation = self._running_deploy(endpoints, endpoint)
        done: bool | None = None
        message = ""
        failed = False
        if operation and not deployed:
            try:
                op = self._sdk.operation(endpoints, operation)
                done = bool(op.done)
                if done and op.HasField("error") and op.error.code:
                    failed, message = True, op.error.message
            except (NotFoundError, gexc.NotFound):
                done = None
        state = endpoint_state(
            exists=True, deployed=deployed, operation_done=done, failed=failed
        )
        if state.value == "Failed" and not message:
            message = "no model is deployed on this endpoint"
        return EndpointStatus(
            state=state,
            message=message,
            vendor_state="DEPLOYED"
            if deployed
            else "DEPLOYING"
            if done is False
            else "",
            url=self._predict_url(target, endpoint),
        )

    def invoke(self, ref: EndpointRef, payload: Mapping[str, Any]) -> dict[str, Any]:
        from google.api_core import exceptions as gexc

        from cloudnn_gcp._sdk import message_dict

        instances = payload.get("instances") if isinstance(payload, Mapping) else None
        if not isinstance(instances, list) or not instances:
            raise EndpointError(
                "expected {'instances': [...]}: a non-empty list of instances",
                hint="send one list (or mapping) per row, e.g. {'instances': [[0.1, 2.0]]}",
            )
        target, endpoint, _, _ = self._endpoint_names(ref)
        prediction = self._sdk.prediction(target.region)
        parameters = payload.get("parameters")

        def predict() -> Any:
            try:
                return prediction.predict(
                    endpoint=endpoint,
                    instances=instances,
                    parameters=parameters,
                    timeout=self.config.timeout,
                )
            except (gexc.InvalidArgument, gexc.FailedPrecondition) as exc:
                # the model (or Vertex AI) refused these instances: not a spec problem
                raise EndpointError(
                    f"the endpoint refused the request: {exc.message}",
                    hint="check the instances' shape against `cloudnn endpoints show`",
                ) from exc

        response = self._sdk.call(predict, what="Predict")
        data = message_dict(response)
        return {"predictions": _plain(data.get("predictions", []))}

    def delete_endpoint(self, ref: EndpointRef) -> None:
        from google.api_core import exceptions as gexc

        target, endpoint, model, _ = self._endpoint_names(ref)
        if not target.project:
            return
        endpoints = self._sdk.endpoints(target.region)
        models = self._sdk.models(target.region)
        sleep = time.sleep

        def wait(client: Any, op: Any) -> None:
            self._sdk.wait_operation(
                client, op.operation.name, timeout=_SHORT_LRO_TIMEOUT, sleep=sleep
            )

        def remove_endpoint() -> None:
            try:
                current = endpoints.get_endpoint(
                    name=endpoint, timeout=self.config.timeout
                )
            except gexc.NotFound:
                return
            running = self._running_deploy(endpoints, endpoint)
            if running:  # an undeploy must wait for the deployment to settle
                with contextlib.suppress(CloudnnError):
                    self._sdk.wait_operation(
                        endpoints, running, timeout=_SHORT_LRO_TIMEOUT, sleep=sleep
                    )
                current = endpoints.get_endpoint(
                    name=endpoint, timeout=self.config.timeout
                )
            for dm in current.deployed_models:
                with contextlib.suppress(gexc.NotFound):
                    wait(
                        endpoints,
                        endpoints.undeploy_model(
                            endpoint=endpoint,
                            deployed_model_id=dm.id,
                            timeout=self.config.timeout,
                        ),
                    )
            with contextlib.suppress(gexc.NotFound):
                wait(
                    endpoints,
                    endpoints.delete_endpoint(
                        name=endpoint, timeout=self.config.timeout
                    ),
                )

        def remove_model() -> None:
            with contextlib.suppress(gexc.NotFound):
                wait(
                    models, models.delete_model(name=model, timeout=self.config.timeout)
                )

        self._sdk.call(remove_endpoint, what="DeleteEndpoint")
        self._sdk.call(remove_model, what="DeleteModel")

    def endpoint_info(self, ref: EndpointRef) -> dict[str, Any]:
        """What the endpoint serves, from the model's ``cloudnn_model.json`` in GCS."""
        target, endpoint, model, dm_id = self._endpoint_names(ref)
        info: dict[str, Any] = {
            "endpoint": endpoint,
            "model": model,
            "deployed_model_id": dm_id,
        }
        model_uri = str(ref.extra.get("model_uri") or "")
        if not model_uri.startswith("gs://"):
            return info
        root = model_uri.rstrip("/") + "/"
        meta_text = self._sdk.read_text(target.project, root + "cloudnn_model.json")
        pre_text = self._sdk.read_text(target.project, root + "preprocess.json")
        with contextlib.suppress(ValueError, TypeError):
            meta = json.loads(meta_text) if meta_text else {}
            pre = json.loads(pre_text) if pre_text else {}
            features = pre.get("feature_names") if isinstance(pre, dict) else None
            info.update(
                {
                    "name": meta.get("name"),
                    "run_id": meta.get("run_id"),
                    "task": meta.get("task"),
                    "model_type": (meta.get("model") or {}).get("type", "module"),
                    "classes": meta.get("classes"),
                    "input_shape": meta.get("input_shape"),
                    "input_dtype": meta.get("input_dtype"),
                    "input_kind": "text" if pre.get("kind") == "text" else "numeric",
                    "features": features if isinstance(features, list) else None,
                    "num_outputs": meta.get("num_outputs"),
                }
            )
        return info

    # -- models --------------------------------------------------------------

    def download(self, uri: str, dest: Path) -> Path:
        """Copy the model folder at ``gs://...`` into ``dest`` (a local path: as is)."""
        if not uri.startswith("gs://"):
            path = Path(uri)
            if path.is_dir():
                return path
            raise NotFoundError(f"no model folder at {uri}")
        project = self._target(None).project
        dest = Path(dest)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        count = self._sdk.download_tree(project, uri.rstrip("/") + "/", tmp)
        if count == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise NotFoundError(
                f"no model files at {uri}",
                hint="did the run succeed? (`cloudnn runs show RUN`)",
            )
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
        return dest


# ---------------------------------------------------------------- helpers


def _rfc3339(stamp: Any) -> str:
    if stamp is None:
        return ""
    text = getattr(stamp, "rfc3339", None)
    if callable(text):
        return str(text())
    return str(stamp.isoformat())


def _entry_text(entry: Any) -> str:
    if entry.text_payload:
        return str(entry.text_payload).rstrip("\n")
    payload = entry.json_payload
    if payload:
        message = payload.get("message")
        if message is not None:
            return str(message).rstrip("\n")
        return json.dumps(dict(payload), default=str)
    return ""


def _plain(value: Any) -> Any:
    """Numbers that came through ``google.protobuf.Value`` (doubles) as JSON had them."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        # a Struct is a map: restore a stable order (class ids numerically)
        return {k: _plain(value[k]) for k in sorted(value, key=_natural)}
    return value


def _natural(key: str) -> tuple[int, int | str]:
    return (0, int(key)) if key.lstrip("-").isdigit() else (1, key)
