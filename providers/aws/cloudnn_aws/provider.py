"""``SageMakerProvider``: the cloudnn provider SPI on Amazon SageMaker.

Planning is pure (:mod:`cloudnn_aws.compile`); everything below that talks to
AWS goes through :class:`cloudnn_aws._sdk.Aws` (boto3, lazily imported).

Submitting (idempotent)
    The settings a job cannot do without (execution role, bucket) are checked
    first, before any call. Then: ``DescribeTrainingJob`` -- a job of that
    name that is running or done is adopted; one that failed or was stopped
    is continued by a new attempt ``<job>-r2``, ``-r3``... that shares the
    first attempt's checkpoint prefix (``cloudnn train --resume RUN``).
    Uploads are content-addressed: each is skipped when its key already
    holds the same number of bytes. ``CreateTrainingJob`` answering
    ``ResourceInUse`` (a concurrent or interrupted submit) adopts too.

Logs
    CloudWatch Logs ``/aws/sagemaker/TrainingJobs``, every stream
    ``<job>/algo-N-<time>`` (one per host), merged by time. The cursor is
    ``{stream: [timestamp_ms, lines at that timestamp already read]}``: JSON,
    exact per line, and it needs no DescribeTrainingJob call.

Endpoints
    The served archive is the trained ``model.tar.gz`` plus
    ``code/inference.py`` and the cloudnn runtime (what the PyTorch inference
    container loads), repacked once into ``<root>/serving/<sha256>/``; then
    CreateModel, CreateEndpointConfig, CreateEndpoint, each adopting what
    exists. Application Auto Scaling is attached when the endpoint is first
    seen ``InService`` (AWS refuses it earlier). Deleting removes the scaling
    target, endpoint, endpoint config and model, quietly when gone.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tarfile
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from cloudnn.errors import (
    AuthenticationError,
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
    EndpointState,
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
from cloudnn_aws import compile as sm
from cloudnn_aws._status import to_endpoint_state, to_job_state
from cloudnn_aws.config import ProviderConfig, load_config

if TYPE_CHECKING:
    from cloudnn.bundle import Bundle
    from cloudnn.spec import Spec
    from cloudnn_aws._sdk import Aws

__all__ = ["SageMakerProvider"]

#: statuses a re-submit adopts; a Failed/Stopped job is continued by a new attempt
_ADOPT = frozenset({"InProgress", "Stopping", "Completed"})
_MAX_ATTEMPTS = 20
_MODEL_META = "cloudnn_model.json"


def _split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key)."""
    if not uri.startswith("s3://"):
        raise SpecError("model_uri", f"{uri} is not an s3:// URI")
    bucket, _, key = uri[len("s3://") :].partition("/")
    return bucket, key


def _safe_extract(data: bytes, dest: Path) -> None:
    """Unpack a model archive into ``dest``, refusing members that escape it."""
    root = dest.resolve()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
        members = tar.getmembers()
        for m in members:
            target = (dest / m.name).resolve()
            if not (m.isfile() or m.isdir()) or not target.is_relative_to(root):
                raise EndpointError(f"model archive member {m.name!r} is not allowed")
        tar.extractall(dest, members=members, filter="data")


def _model_root(folder: Path) -> Path:
    if (folder / _MODEL_META).is_file():
        return folder
    found = sorted(folder.rglob(_MODEL_META), key=lambda p: (len(p.parts), str(p)))
    return found[0].parent if found else folder


def _walk_files(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and d != "__pycache__"
        )
        for name in sorted(filenames):
            if not name.endswith((".pyc", ".pyo")) and name != ".DS_Store":
                yield Path(dirpath) / name


class SageMakerProvider(Provider):
    """Trains on SageMaker training jobs and serves on SageMaker endpoints.

    Options (keyword; each also read from the environment, see
    :mod:`cloudnn_aws.config`): ``region``, ``profile``, ``endpoint_url``,
    ``role_arn``, ``bucket``, ``poll_interval``, ``max_poll_interval``,
    ``max_attempts``, ``connect_timeout``, ``read_timeout``.
    """

    name: ClassVar[str] = "aws"
    # everything cloudnn can ask for exists on SageMaker (gs:// and https://
    # data are refused at plan time with a SpecError: channels read S3 only)
    unsupported: ClassVar[Mapping[Capability, str]] = {}
    cancel_timeout = 600.0
    endpoint_timeout = 3600.0

    def __init__(
        self, *, home: str | os.PathLike[str] | None = None, **options: Any
    ) -> None:
        super().__init__(home=home)
        self.config: ProviderConfig = load_config(options)
        self.poll_interval = self.config.poll_interval
        self.max_poll_interval = self.config.max_poll_interval
        self._aws: Aws | None = None
        self._bundles: dict[str, Bundle] = {}
        self._metrics: dict[str, dict[str, Any]] = {}
        self._scaled: set[str] = set()
        self._lock = threading.Lock()

    # -- plumbing ------------------------------------------------------------

    @property
    def aws(self) -> Aws:
        """The boto3 client factory (created on first use)."""
        if self._aws is None:
            from cloudnn_aws._sdk import Aws

            self._aws = Aws(self.config)
        return self._aws

    def _region(self, extra: Mapping[str, Any] | None = None) -> str:
        region = (extra or {}).get("region") or self.config.region or "us-east-1"
        return str(region)

    def _call(
        self,
        service: str,
        operation: str,
        region: str,
        *,
        quick: bool = False,
        **params: Any,
    ) -> Any:
        """One SDK call; ``quick``: one retry at most (``check`` reports, not waits)."""
        if quick:
            from cloudnn_aws._sdk import CHECK_POLICY

            return self.aws.call(
                service, operation, region=region, policy=CHECK_POLICY, **params
            )
        return self.aws.call(service, operation, region=region, **params)

    def setup_templates(self) -> dict[str, str]:
        """One-time setup files (CloudFormation): relative name -> text."""
        from importlib import resources

        root = resources.files("cloudnn_aws").joinpath("templates")
        return {
            entry.name: entry.read_text(encoding="utf-8")
            for entry in sorted(root.iterdir(), key=lambda e: e.name)
            if entry.is_file() and not entry.name.startswith((".", "_"))
        }

    # -- check -----------------------------------------------------------------

    def check(self) -> CheckReport:
        """Credentials, region, role, bucket and quota, read-only."""
        checks: list[tuple[str, bool, str]] = []
        region = self._region()
        checks.append(("region", True, region))
        identity = self._check("credentials", checks, self._identity, region)
        if identity is None:
            return CheckReport(provider=self.name, ok=False, checks=tuple(checks))
        role, bucket = self.config.role_arn, self.config.bucket
        if role:
            self._check("execution role", checks, self._check_role, region, role)
        else:
            checks.append(
                (
                    "execution role",
                    True,
                    "not configured here (providers.aws.role_arn or "
                    "CLOUDNN_AWS_ROLE_ARN); each spec must name one",
                )
            )
        if bucket:
            self._check("bucket", checks, self._check_bucket, region, bucket)
        else:
            checks.append(
                (
                    "bucket",
                    True,
                    "not configured here (providers.aws.bucket or "
                    "CLOUDNN_AWS_BUCKET); each spec must name one",
                )
            )
        checks.append(self._check_quota(region))
        ok = all(passed for _, passed, _ in checks)
        return CheckReport(provider=self.name, ok=ok, checks=tuple(checks))

    @staticmethod
    def _check(
        what: str, checks: list[tuple[str, bool, str]], fn: Any, *args: Any
    ) -> Any:
        try:
            result, detail = fn(*args)
        except CloudnnError as exc:
            hint = f" (To fix: {exc.hint})" if exc.hint else ""
            checks.append((what, False, f"{exc}{hint}"))
            return None
        checks.append((what, True, detail))
        return result

    def _identity(self, region: str) -> tuple[dict[str, Any], str]:
        creds = self.aws.run(
            lambda: self.aws.session(region).get_credentials(), what="credentials"
        )
        if creds is None:
            from cloudnn_aws._sdk import CREDENTIAL_CHAIN

            raise AuthenticationError("no AWS credentials found", hint=CREDENTIAL_CHAIN)
        ident = self._call("sts", "GetCallerIdentity", region, quick=True)
        return ident, f"{ident.get('Arn')} (account {ident.get('Account')})"

    def _check_role(self, region: str, role_arn: str) -> tuple[bool, str]:
        name = role_arn.rsplit("/", 1)[-1]
        role = self._call("iam", "GetRole", region, quick=True, RoleName=name)["Role"]
        policy = role.get("AssumeRolePolicyDocument") or {}
        if isinstance(policy, str):
            import urllib.parse

            policy = json.loads(urllib.parse.unquote(policy))
        if "sagemaker.amazonaws.com" not in json.dumps(policy):
            raise SpecError(
                "providers.aws.role_arn",
                f"{role_arn} does not trust sagemaker.amazonaws.com",
                hint="add sagemaker.amazonaws.com to its trust policy "
                "(`cloudnn setup --provider aws` shows one)",
            )
        return True, role_arn

    def _check_bucket(self, region: str, bucket: str) -> tuple[bool, str]:
        self._call("s3", "HeadBucket", region, quick=True, Bucket=bucket)
        where = self._call("s3", "GetBucketLocation", region, quick=True, Bucket=bucket)
        located = where.get("LocationConstraint") or "us-east-1"
        if located != region:
            raise SpecError(
                "providers.aws.bucket",
                f"s3://{bucket} is in {located}, jobs run in {region}",
                hint="use a bucket in the job's region (SageMaker reads data "
                "from the same region only)",
            )
        return True, f"s3://{bucket} ({located})"

    def _check_quota(self, region: str) -> tuple[str, bool, str]:
        """The account's quota for the instance type a spec without GPUs gets."""
        cpu = [o for o in sm.offers() if o.accelerator is None]
        instance = min(cpu, key=lambda o: o.price or 0.0).instance_type
        quota_name = f"{instance} for training job usage"
        client = self.aws.client("service-quotas", region)

        def find() -> dict[str, Any] | None:
            pages = client.get_paginator("list_service_quotas")
            for page in pages.paginate(ServiceCode="sagemaker"):
                for quota in page.get("Quotas", []):
                    if quota.get("QuotaName") == quota_name:
                        return dict(quota)
            return None

        from cloudnn_aws._sdk import CHECK_POLICY

        try:
            quota = self.aws.run(find, what="ListServiceQuotas", policy=CHECK_POLICY)
        except CloudnnError as exc:
            return ("quota", True, f"not checked ({exc})")
        if quota is None:
            return ("quota", True, f"{quota_name}: not reported by Service Quotas")
        value = float(quota.get("Value") or 0)
        detail = f"{quota_name}: {value:g}"
        if not value:
            detail += " (request an increase in Service Quotas, or use another type)"
        return ("quota", value > 0, detail)

    # -- planning ----------------------------------------------------------------

    def plan_training(self, spec: Spec, *, run_id: str) -> TrainingPlan:
        from cloudnn.bundle import training_bundle

        self.refuse_unsupported(spec, Phase.TRAINING)
        bundle = training_bundle(spec)
        with self._lock:
            self._bundles[bundle.sha256] = bundle
        bundle_path = str(self.home / "aws" / "bundles" / f"{bundle.sha256}.tar.gz")
        c = sm.compile_training(
            spec,
            run_id=run_id,
            config=self.config,
            bundle=bundle,
            bundle_path=bundle_path,
        )
        return TrainingPlan(
            provider=self.name,
            spec=spec,
            run_id=run_id,
            job_name=c.job_name,
            requests=c.requests,
            instance_type=c.instance_type,
            instance_count=c.instance_count,
            processes_per_node=c.processes_per_node,
            accelerator=spec.resources.accelerator,
            hourly_cost_usd=c.hourly_cost_usd,
            estimated_cost_usd=c.estimated_cost_usd,
            model_uri=c.model_uri,
            output_uri=c.output_uri,
            uploads=c.uploads,
            warnings=c.warnings,
            details=c.details,
        )

    def plan_endpoint(self, spec: Spec, model_uri: str) -> EndpointPlan:
        self.refuse_unsupported(spec, Phase.ENDPOINT)
        import hashlib

        if model_uri.startswith("s3://"):
            digest = hashlib.sha256(
                f"{model_uri}\n{sm.serving_code_sha256()}".encode()
            ).hexdigest()
            size = 0
        else:
            folder = Path(model_uri)
            if not (folder / _MODEL_META).is_file():
                raise NotFoundError(
                    f"no cloudnn model in {model_uri}",
                    hint="deploy a successful run (cloudnn runs list)",
                )
            from cloudnn.bundle import serving_bundle

            archive = serving_bundle(folder, "sagemaker")
            digest, size = archive.sha256, archive.size
        c = sm.compile_endpoint(
            spec,
            model_uri,
            config=self.config,
            model_sha256=digest,
            model_size=size,
            model_source=model_uri,
        )
        return EndpointPlan(
            provider=self.name,
            spec=spec,
            endpoint_name=c.endpoint_name,
            model_uri=model_uri,
            requests=c.requests,
            instance_type=c.instance_type,
            replicas=c.replicas,
            hourly_cost_usd=c.hourly_cost_usd,
            uploads=(c.upload,),
            warnings=c.warnings,
            details={
                **c.details,
                "model_name": c.model_name,
                "config_name": c.config_name,
            },
        )

    # -- training ------------------------------------------------------------------

    def _refuse_missing(self, details: Mapping[str, Any]) -> None:
        missing = list(details.get("missing") or [])
        if missing:
            raise sm.missing_setting_error(missing[0])

    def _describe_job(self, name: str, region: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self._call(
                "sagemaker", "DescribeTrainingJob", region, TrainingJobName=name
            )
        except NotFoundError:
            return None
        return found

    def submit_training(self, plan: TrainingPlan) -> JobRef:
        self._refuse_missing(plan.details)
        region = str(plan.details["region"])
        params = dict(plan.requests[0]["params"])
        base = plan.job_name
        name = base
        for attempt in range(1, _MAX_ATTEMPTS + 1):
            name = base if attempt == 1 else f"{base[: 63 - 4]}-r{attempt}"
            found = self._describe_job(name, region)
            if found is None:
                break
            if found.get("TrainingJobStatus") in _ADOPT:
                return self._job_ref(plan, name, region)
        else:
            raise CloudnnError(
                f"run {plan.run_id} has {_MAX_ATTEMPTS} failed attempts",
                hint="start a new run (cloudnn train SPEC) after fixing the cause",
            )
        self._upload_all(plan.uploads, region, plan.spec)
        if name != base:
            params["TrainingJobName"] = name
            params["HyperParameters"] = {
                **params["HyperParameters"],
                "sagemaker_job_name": name,
            }
        from cloudnn_aws._sdk import AlreadyExistsError

        with contextlib.suppress(AlreadyExistsError):
            self._call("sagemaker", "CreateTrainingJob", region, **params)
        return self._job_ref(plan, name, region)

    def _job_ref(self, plan: TrainingPlan, name: str, region: str) -> JobRef:
        return JobRef(
            provider=self.name,
            run_id=plan.run_id,
            job_id=name,
            extra={"region": region, "log_group": sm.LOG_GROUP},
        )

    def _bundle_for(self, upload: Upload, spec: Spec) -> Bundle:
        from cloudnn.bundle import training_bundle

        with self._lock:
            bundle = self._bundles.get(upload.sha256)
        if bundle is None:
            bundle = training_bundle(spec)
        if bundle.sha256 != upload.sha256:
            raise SpecError(
                "model",
                "the job's code changed between planning and submitting "
                f"(bundle {upload.sha256[:12]} -> {bundle.sha256[:12]})",
                hint="submit again: the new plan uploads the new code",
            )
        return bundle

    def _upload_all(self, uploads: tuple[Upload, ...], region: str, spec: Spec) -> None:
        for upload in uploads:
            bucket, key = _split_s3(upload.destination)
            if upload.kind == "bundle":
                bundle = self._bundle_for(upload, spec)
                source = Path(upload.source)
                if not source.is_file():
                    bundle.write(source)  # kept: the run's exact code, on disk
                if not self._has_object(region, bucket, key, bundle.size):
                    self._call(
                        "s3",
                        "PutObject",
                        region,
                        Bucket=bucket,
                        Key=key,
                        Body=bundle.data,
                    )
            elif upload.destination.endswith("/"):
                self._upload_folder(region, Path(upload.source), bucket, key)
            elif not self._has_object(region, bucket, key, upload.size):
                self._upload_file(region, Path(upload.source), bucket, key)

    def _has_object(self, region: str, bucket: str, key: str, size: int) -> bool:
        try:
            head = self._call("s3", "HeadObject", region, Bucket=bucket, Key=key)
        except NotFoundError:
            return False
        return int(head.get("ContentLength", -1)) == size

    def _upload_file(self, region: str, path: Path, bucket: str, key: str) -> None:
        client = self.aws.client("s3", region)
        # managed transfer: multipart and parallel parts for large files
        self.aws.run(
            lambda: client.upload_file(str(path), bucket, key), what=f"upload {path}"
        )

    def _upload_folder(self, region: str, root: Path, bucket: str, prefix: str) -> None:
        client = self.aws.client("s3", region)
        existing: dict[str, int] = {}
        paginator = client.get_paginator("list_objects_v2")

        def listing() -> None:
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    existing[obj["Key"]] = int(obj["Size"])

        self.aws.run(listing, what=f"list s3://{bucket}/{prefix}")
        for path in _walk_files(root):
            key = prefix + path.relative_to(root).as_posix()
            if existing.get(key) != path.stat().st_size:
                self._upload_file(region, path, bucket, key)

    def get_job(self, ref: JobRef) -> JobStatus:
        region = self._region(ref.extra)
        found = self._describe_job(ref.job_id, region)
        if found is None:
            raise NotFoundError(
                f"no SageMaker training job {ref.job_id!r} in {region}",
                hint="list runs with `cloudnn runs list`; was it submitted in "
                "another region or account?",
            )
        state, message = to_job_state(found)
        vendor = (
            f"{found.get('TrainingJobStatus', '')}/{found.get('SecondaryStatus', '')}"
        )
        model_uri = str((found.get("ModelArtifacts") or {}).get("S3ModelArtifacts", ""))
        metrics: dict[str, Any] = {}
        if state is JobState.SUCCEEDED:
            metrics = self._job_metrics(found, region)
        return JobStatus(
            state=state,
            message=message,
            vendor_state=vendor,
            metrics=metrics,
            model_uri=model_uri if state is JobState.SUCCEEDED else "",
        )

    def _job_metrics(self, describe: Mapping[str, Any], region: str) -> dict[str, Any]:
        """metrics.json from the job's output.tar.gz (read once, then cached)."""
        name = str(describe["TrainingJobName"])
        if name in self._metrics:
            return self._metrics[name]
        path = str(describe["OutputDataConfig"]["S3OutputPath"]).rstrip("/")
        bucket, key = _split_s3(f"{path}/{name}/output/output.tar.gz")
        metrics: dict[str, Any] = {}
        try:
            obj = self._call("s3", "GetObject", region, Bucket=bucket, Key=key)
        except NotFoundError:
            obj = None
        if obj is not None:
            data = self.aws.run(obj["Body"].read, what="read output.tar.gz")
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
                for member in tar.getmembers():
                    if Path(member.name).name == "metrics.json" and member.isfile():
                        fh = tar.extractfile(member)
                        if fh is not None:
                            with contextlib.suppress(ValueError):
                                metrics = json.loads(fh.read())
                        break
        self._metrics[name] = metrics
        return metrics

    def stream_logs(self, ref: JobRef, since: Any = None) -> Iterator[LogLine]:
        region = self._region(ref.extra)
        group = str(ref.extra.get("log_group") or sm.LOG_GROUP)
        cursor: dict[str, list[int]] = {
            str(k): [int(v[0]), int(v[1])] for k, v in dict(since or {}).items()
        }
        streams: list[str] = []
        token: str | None = None
        while True:  # one stream per host, 50 per page
            page_token: dict[str, Any] = {"nextToken": token} if token else {}
            try:
                found = self._call(
                    "logs",
                    "DescribeLogStreams",
                    region,
                    logGroupName=group,
                    logStreamNamePrefix=f"{ref.job_id}/",
                    **page_token,
                )
            except NotFoundError:
                return
            streams += [s["logStreamName"] for s in found.get("logStreams", [])]
            token = found.get("nextToken")
            if not token:
                break
        streams.sort()
        events: list[tuple[int, str, int, str]] = []
        for stream in streams:
            for i, (ts, text) in enumerate(
                self._stream_events(region, group, stream, cursor)
            ):
                events.append((ts, stream, i, text))
        events.sort()
        for ts, stream, _, text in events:
            last = cursor.get(stream)
            cursor[stream] = [ts, last[1] + 1] if last and last[0] == ts else [ts, 1]
            yield LogLine(
                text=text,
                cursor={k: list(v) for k, v in cursor.items()},
                timestamp=ts / 1000.0,
            )

    def _stream_events(
        self, region: str, group: str, stream: str, cursor: Mapping[str, list[int]]
    ) -> list[tuple[int, str]]:
        """Events of ``stream`` after its cursor position, oldest first."""
        position = cursor.get(stream)
        params: dict[str, Any] = {
            "logGroupName": group,
            "logStreamName": stream,
            "startFromHead": True,
        }
        if position:
            params["startTime"] = position[0]
        out: list[tuple[int, str]] = []
        token = None
        while True:
            page_params = dict(params, nextToken=token) if token else params
            try:
                page = self._call("logs", "GetLogEvents", region, **page_params)
            except NotFoundError:
                return []
            out += [(int(e["timestamp"]), str(e["message"])) for e in page["events"]]
            new = page.get("nextForwardToken")
            if not page["events"] or not new or new == token:
                break
            token = new
        if position:
            ts, seen = position
            skip = 0
            while skip < len(out) and skip < seen and out[skip][0] == ts:
                skip += 1
            out = out[skip:]
        return [(ts, text.rstrip("\n")) for ts, text in out]

    def cancel_job(self, ref: JobRef) -> None:
        region = self._region(ref.extra)
        found = self._describe_job(ref.job_id, region)
        if found is None or found.get("TrainingJobStatus") != "InProgress":
            return
        with contextlib.suppress(SpecError, NotFoundError):
            # a job that ended meanwhile answers ValidationException: fine
            self._call(
                "sagemaker", "StopTrainingJob", region, TrainingJobName=ref.job_id
            )

    def download(self, uri: str, dest: Path) -> Path:
        """A model.tar.gz in S3 unpacked into ``dest``; a local folder as it is."""
        if not uri.startswith("s3://"):
            path = Path(uri)
            if not path.is_dir():
                raise NotFoundError(f"no model folder at {uri}")
            return path
        dest = Path(dest)
        if dest.is_dir() and (_model_root(dest) / _MODEL_META).is_file():
            return _model_root(dest)  # downloaded before
        data = self._read_s3(uri, self._region())
        dest.mkdir(parents=True, exist_ok=True)
        _safe_extract(data, dest)
        return _model_root(dest)

    def _read_s3(self, uri: str, region: str) -> bytes:
        bucket, key = _split_s3(uri)
        obj = self._call("s3", "GetObject", region, Bucket=bucket, Key=key)
        data: bytes = self.aws.run(obj["Body"].read, what=f"read {uri}")
        return data

    # -- endpoints -----------------------------------------------------------------

    def create_endpoint(self, plan: EndpointPlan) -> EndpointRef:
        self._refuse_missing(plan.details)
        region = str(plan.details["region"])
        name = plan.endpoint_name
        ref = self._endpoint_ref(plan, region)
        try:
            self._call("sagemaker", "DescribeEndpoint", region, EndpointName=name)
            return ref  # exists: adopt it
        except NotFoundError:
            pass
        self._prepare_model_archive(plan, region)
        from cloudnn_aws._sdk import AlreadyExistsError

        for req in plan.requests:
            if req["service"] != "sagemaker":
                continue  # autoscaling waits until the endpoint is InService
            with contextlib.suppress(AlreadyExistsError):
                self._call("sagemaker", req["operation"], region, **req["params"])
        return ref

    def _endpoint_ref(self, plan: EndpointPlan, region: str) -> EndpointRef:
        scaling = [dict(r) for r in plan.requests if r["service"] != "sagemaker"]
        base = (
            self.config.endpoint_url
            or f"https://runtime.sagemaker.{region}.amazonaws.com"
        )
        return EndpointRef(
            provider=self.name,
            name=plan.endpoint_name,
            url=f"{base.rstrip('/')}/endpoints/{plan.endpoint_name}/invocations",
            extra={
                "region": region,
                "model_name": plan.details["model_name"],
                "config_name": plan.details["config_name"],
                "autoscaling": scaling,
            },
        )

    def _prepare_model_archive(self, plan: EndpointPlan, region: str) -> None:
        """Put the servable model.tar.gz (model + code/) at its planned key, once."""
        from cloudnn.bundle import serving_bundle

        upload = plan.uploads[0]
        bucket, key = _split_s3(upload.destination)
        try:
            self._call("s3", "HeadObject", region, Bucket=bucket, Key=key)
            return
        except NotFoundError:
            pass
        with tempfile.TemporaryDirectory(prefix="cloudnn-aws-") as tmp:
            if upload.source.startswith("s3://"):
                folder = Path(tmp) / "model"
                folder.mkdir()
                _safe_extract(self._read_s3(upload.source, region), folder)
                root = _model_root(folder)
            else:
                root = Path(upload.source)
            archive = serving_bundle(root, "sagemaker")
        if not upload.source.startswith("s3://") and archive.sha256 != upload.sha256:
            raise SpecError(
                "model",
                f"the model in {upload.source} changed since it was planned",
                hint="deploy again",
            )
        self._call("s3", "PutObject", region, Bucket=bucket, Key=key, Body=archive.data)

    def get_endpoint(self, ref: EndpointRef) -> EndpointStatus:
        region = self._region(ref.extra)
        try:
            found = self._call(
                "sagemaker", "DescribeEndpoint", region, EndpointName=ref.name
            )
        except NotFoundError:
            raise NotFoundError(
                f"no SageMaker endpoint {ref.name!r} in {region}",
                hint="list endpoints with `cloudnn endpoints list`",
            ) from None
        state, message = to_endpoint_state(found)
        if state is EndpointState.IN_SERVICE:
            self._attach_autoscaling(ref, region)
        return EndpointStatus(
            state=state,
            message=message,
            vendor_state=str(found.get("EndpointStatus", "")),
            url=ref.url,
        )

    def _attach_autoscaling(self, ref: EndpointRef, region: str) -> None:
        requests = list(ref.extra.get("autoscaling") or [])
        if not requests or ref.name in self._scaled:
            return
        for req in requests:  # both calls are upserts: repeating them is harmless
            self._call(req["service"], req["operation"], region, **req["params"])
        self._scaled.add(ref.name)

    def invoke(self, ref: EndpointRef, payload: Mapping[str, Any]) -> dict[str, Any]:
        region = self._region(ref.extra)
        try:
            body = json.dumps(dict(payload), allow_nan=True, default=_json_default)
        except (TypeError, ValueError) as exc:
            raise EndpointError(
                f"the payload is not JSON: {exc}",
                hint='send {"instances": [...]} made of numbers, strings and lists',
            ) from exc
        out = self._call(
            "sagemaker-runtime",
            "InvokeEndpoint",
            region,
            EndpointName=ref.name,
            ContentType="application/json",
            Accept="application/json",
            Body=body.encode(),
        )
        raw = self.aws.run(out["Body"].read, what="read the endpoint's answer")
        try:
            answer = json.loads(raw)
        except ValueError as exc:
            raise EndpointError(
                f"endpoint {ref.name} answered something that is not JSON: "
                f"{raw[:200]!r}"
            ) from exc
        if not isinstance(answer, dict):
            raise EndpointError(f"endpoint {ref.name} answered {type(answer).__name__}")
        return answer

    def delete_endpoint(self, ref: EndpointRef) -> None:
        region = self._region(ref.extra)
        configs = {str(ref.extra.get("config_name") or "")} - {""}
        models = {str(ref.extra.get("model_name") or "")} - {""}
        try:
            found = self._call(
                "sagemaker", "DescribeEndpoint", region, EndpointName=ref.name
            )
            configs.add(str(found["EndpointConfigName"]))
        except NotFoundError:
            found = None
        for config in sorted(configs):
            try:
                desc = self._call(
                    "sagemaker",
                    "DescribeEndpointConfig",
                    region,
                    EndpointConfigName=config,
                )
            except NotFoundError:
                continue
            models.update(
                str(v["ModelName"]) for v in desc.get("ProductionVariants", [])
            )
        if ref.extra.get("autoscaling"):
            with contextlib.suppress(CloudnnError):
                self._call(
                    "application-autoscaling",
                    "DeregisterScalableTarget",
                    region,
                    ServiceNamespace="sagemaker",
                    ResourceId=f"endpoint/{ref.name}/variant/{sm.VARIANT}",
                    ScalableDimension="sagemaker:variant:DesiredInstanceCount",
                )
        if found is not None:
            with contextlib.suppress(NotFoundError):
                self._call("sagemaker", "DeleteEndpoint", region, EndpointName=ref.name)
        for config in sorted(configs):
            with contextlib.suppress(NotFoundError):
                self._call(
                    "sagemaker",
                    "DeleteEndpointConfig",
                    region,
                    EndpointConfigName=config,
                )
        for model in sorted(models):
            with contextlib.suppress(NotFoundError):
                self._call("sagemaker", "DeleteModel", region, ModelName=model)
        self._scaled.discard(ref.name)


def _json_default(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
