"""A local SageMaker that really trains and serves: moto in server mode, extended.

``cloudnn emulator --provider aws`` (or :func:`start`) serves every AWS API
on one loopback port. moto answers S3, CloudWatch Logs, IAM, STS,
Application Auto Scaling and the SageMaker bookkeeping; this package adds
what moto lacks, so that the real provider code (boto3) sees a real
lifecycle:

* ``CreateTrainingJob`` runs the uploaded bundle (:mod:`._training`): real
  states and ``SecondaryStatus`` transitions, ``SM_*`` variables, channels
  downloaded from the emulated S3, one process per host (torch.distributed
  over 127.0.0.1), output in CloudWatch Logs, ``model.tar.gz`` and
  ``output.tar.gz`` uploaded, ``FailureReason`` on failure; managed spot
  interruptions with checkpoint sync and restore; ``StopTrainingJob``
  (SIGTERM, moto has none); ``ResourceInUse`` for a duplicate name.
* ``CreateEndpoint`` serves the model's own ``code/inference.py``
  (:mod:`._endpoints`) and ``sagemaker-runtime InvokeEndpoint`` calls it;
  a 4xx/5xx from the model answers ``ModelError`` like SageMaker.
* Duplicate models, endpoint configs and endpoints are refused as on AWS,
  and requests are validated server-side against the service model
  (patterns, enums, lengths), as SageMaker does.
* Fault injection, per test: throttle a fraction of SageMaker calls, fail the
  Nth create with ``ResourceLimitExceeded`` (no capacity), interrupt a spot
  job. From Python (``emulator.faults``, :meth:`SageMakerEmulator.interrupt`)
  or over HTTP (:class:`EmulatorControl`)::

      POST   /_cloudnn/faults        {"throttle_fraction": 0.3, "seed": 1,
                                      "fail_create": {"CreateTrainingJob": 1}}
      DELETE /_cloudnn/faults        everything off
      POST   /_cloudnn/spot-interruption  {"job": NAME, "after_epoch": 2}
      GET    /_cloudnn/health

Not emulated (accepted, not enforced): instance types and GPUs (every host
is a local CPU process, ``SM_NUM_GPUS=0``), IAM permissions, VPC, KMS and
network isolation, Pipe/FastFile input (treated as File), installing the
bundle's ``requirements.txt`` (this environment must have them), warm pools,
heterogeneous clusters, ``UpdateEndpoint``; an endpoint's instances are one
local server.

It binds 127.0.0.1 only, sends nothing anywhere else, and moto has no
telemetry. ``env`` holds what the provider (and boto3, and the SageMaker
SDK) need to talk to it, including a bucket and an execution role it
creates (``CLOUDNN_AWS_BUCKET``, ``CLOUDNN_AWS_ROLE_ARN``).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import shutil
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from cloudnn.testing.emulation import FaultInjector, LogEvent, LogStore

__all__ = [
    "ENV_KEYS",
    "EmulatorControl",
    "SageMakerEmulator",
    "start",
]

#: the account moto answers for, and what the emulator creates in it
ACCOUNT_ID = "123456789012"
BUCKET = "cloudnn-emulator"
ROLE_NAME = "cloudnn-emulator-sagemaker"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT_ID}:role/{ROLE_NAME}"
#: fake credentials: moto accepts any, and they are useless anywhere else
ACCESS_KEY = "cloudnn-emulator"
SECRET_KEY = "cloudnn-emulator-secret"

#: the variables :attr:`SageMakerEmulator.env` sets (``cloudnn emulator`` prints them)
ENV_KEYS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_DEFAULT_REGION",
    "AWS_EC2_METADATA_DISABLED",
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_SECRET_ACCESS_KEY",
    "CLOUDNN_AWS_BUCKET",
    "CLOUDNN_AWS_MAX_POLL_INTERVAL",
    "CLOUDNN_AWS_POLL_INTERVAL",
    "CLOUDNN_AWS_ROLE_ARN",
    "SAGEMAKER_USER_CONFIG_OVERRIDE",
    "SAGEMAKER_VALIDATE_ROLE",
)

_INVOKE = re.compile(r"^/endpoints/([^/]+)/invocations$")
_JSON = "application/x-amz-json-1.1"
_CREATES = (
    "CreateTrainingJob",
    "CreateModel",
    "CreateEndpointConfig",
    "CreateEndpoint",
)
_TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "sagemaker.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}


def _region_of(environ: Mapping[str, Any], default: str) -> str:
    auth = str(environ.get("HTTP_AUTHORIZATION", ""))
    match = re.search(r"Credential=[^/]+/\d{8}/([a-z0-9-]+)/", auth)
    return match.group(1) if match else default


def _camel_path(path: str) -> str:
    return ".".join(p[:1].lower() + p[1:] for p in path.split("."))


class _Response:
    """What a WSGI app answered, captured so the gateway can act on it."""

    def __init__(self) -> None:
        self.status = ""
        self.headers: list[tuple[str, str]] = []

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], Any]:
        self.status = status
        self.headers = headers
        return lambda data: None

    @property
    def code(self) -> int:
        return int(self.status.split(" ", 1)[0] or 0)


class _Gateway:
    """WSGI front: SageMaker extensions and control routes; the rest goes to moto."""

    def __init__(self, emulator: SageMakerEmulator, moto_app: Any) -> None:
        self.emu = emulator
        self.moto = moto_app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = str(environ.get("PATH_INFO", ""))
        if path.startswith("/_cloudnn/"):
            return self._control(path, environ, start_response)
        target = str(environ.get("HTTP_X_AMZ_TARGET", ""))
        if target == "ServiceQuotasV20190624.ListServiceQuotas":
            return self._quotas(environ, start_response)
        if target.startswith("SageMaker."):
            return self._sagemaker(target.split(".", 1)[1], environ, start_response)
        match = _INVOKE.match(path)
        if match and environ.get("REQUEST_METHOD") == "POST":
            name = urllib.parse.unquote(match.group(1))
            return self._invoke(name, environ, start_response)
        result: Iterable[bytes] = self.moto(environ, start_response)
        return result

    # -- plumbing ------------------------------------------------------------------

    @staticmethod
    def _body(environ: dict[str, Any]) -> bytes:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)  # moto reads it again
        return bytes(body)

    @staticmethod
    def _send(
        start_response: Any,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: Iterable[tuple[str, str]] = (),
    ) -> list[bytes]:
        reason = {
            200: "OK",
            400: "Bad Request",
            404: "Not Found",
            424: "Failed Dependency",
        }
        start_response(
            f"{status} {reason.get(status, 'Error')}",
            [
                ("Content-Type", content_type),
                ("Content-Length", str(len(body))),
                ("x-amzn-RequestId", "cloudnn-emulator"),
                *headers,
            ],
        )
        return [body]

    def _error(
        self, start_response: Any, code: str, message: str, status: int = 400
    ) -> list[bytes]:
        body = json.dumps({"__type": code, "message": message}).encode()
        return self._send(
            start_response, status, body, _JSON, [("x-amzn-ErrorType", f"{code}:")]
        )

    def _forward(self, environ: dict[str, Any]) -> tuple[_Response, bytes]:
        captured = _Response()
        chunks = self.moto(environ, captured.start_response)
        try:
            data = b"".join(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if callable(close):
                close()
        return captured, data

    def _relay(
        self, start_response: Any, captured: _Response, data: bytes
    ) -> list[bytes]:
        start_response(captured.status, captured.headers)
        return [data]

    # -- SageMaker ----------------------------------------------------------------

    def _sagemaker(
        self, operation: str, environ: dict[str, Any], start_response: Any
    ) -> Iterable[bytes]:
        body = self._body(environ)
        try:
            params = json.loads(body or b"{}")
        except ValueError:
            return self._error(start_response, "SerializationException", "bad JSON")
        region = _region_of(environ, self.emu.region)
        faults = self.emu.faults
        if faults.throttle(operation):
            return self._error(start_response, "ThrottlingException", "Rate exceeded")
        if operation in _CREATES:
            problem = self._validate(operation, params)
            if problem:
                return self._error(start_response, "ValidationException", problem)
            if faults.fail_create(operation):
                return self._error(
                    start_response,
                    "ResourceLimitExceeded",
                    "Unable to provision requested ML compute capacity. Please "
                    "retry using a different ML instance type.",
                )
            existing = self._existing(operation, params, region)
            if existing:
                return self._error(start_response, *existing)
        if operation == "StopTrainingJob":
            return self._stop_training_job(params, region, start_response)
        if operation == "DeleteEndpoint":
            self.emu.stop_endpoint(region, str(params.get("EndpointName", "")))
        captured, data = self._forward(environ)
        if captured.code == 200:
            if operation == "CreateTrainingJob":
                self.emu.start_training(region, params)
            elif operation == "CreateEndpoint":
                self.emu.start_endpoint(region, str(params["EndpointName"]))
        return self._relay(start_response, captured, data)

    def _validate(self, operation: str, params: Mapping[str, Any]) -> str:
        """SageMaker's server-side check (patterns and enums botocore skips)."""
        from cloudnn_aws._schema import validate

        problems = validate("sagemaker", operation, params)
        if not problems:
            return ""
        parts = [
            f"Value at '{_camel_path(p.path)}' failed to satisfy constraint: {p.message}"
            for p in problems
        ]
        return f"{len(parts)} validation error(s) detected: " + "; ".join(parts)

    def _existing(
        self, operation: str, params: Mapping[str, Any], region: str
    ) -> tuple[str, str] | None:
        backend = self.emu.sagemaker_backend(region)
        arn = f"arn:aws:sagemaker:{region}:{ACCOUNT_ID}"
        if operation == "CreateTrainingJob":
            name = str(params.get("TrainingJobName", ""))
            if name in backend.training_jobs:
                return (
                    "ResourceInUse",
                    f"Training job names must be unique within an AWS account and "
                    f"region, and a training job with this name already exists "
                    f"({arn}:training-job/{name.lower()})",
                )
        elif operation == "CreateModel":
            name = str(params.get("ModelName", ""))
            if name in backend._models:
                return (
                    "ValidationException",
                    f'Cannot create already existing model "{arn}:model/{name.lower()}".',
                )
        elif operation == "CreateEndpointConfig":
            name = str(params.get("EndpointConfigName", ""))
            if name in backend.endpoint_configs:
                return (
                    "ValidationException",
                    "Cannot create already existing endpoint configuration "
                    f'"{arn}:endpoint-config/{name.lower()}".',
                )
        elif operation == "CreateEndpoint":
            name = str(params.get("EndpointName", ""))
            if name in backend.endpoints:
                return (
                    "ValidationException",
                    f'Cannot create already existing endpoint "{arn}:endpoint/'
                    f'{name.lower()}".',
                )
        return None

    def _stop_training_job(
        self, params: Mapping[str, Any], region: str, start_response: Any
    ) -> list[bytes]:
        name = str(params.get("TrainingJobName", ""))
        backend = self.emu.sagemaker_backend(region)
        job = backend.training_jobs.get(name)
        if job is None:
            return self._error(
                start_response, "ValidationException", "Requested resource not found."
            )
        if job.training_job_status != "InProgress":
            return self._error(
                start_response,
                "ValidationException",
                "The request was rejected because the training job is in status "
                f"{job.training_job_status}.",
            )
        run = self.emu.training_runs.get((region, name))
        if run is not None:
            run.request_stop()
        else:
            job.training_job_status = job.secondary_status = "Stopped"
        return self._send(start_response, 200, b"{}", _JSON)

    def _quotas(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        """ListServiceQuotas (moto has none): every training instance type, 8 each."""
        from cloudnn_aws._schema import enum_values

        params = json.loads(self._body(environ) or b"{}")
        quotas = []
        if params.get("ServiceCode") == "sagemaker":
            for i, instance in enumerate(
                enum_values("sagemaker", "TrainingInstanceType")
            ):
                quotas.append(
                    {
                        "ServiceCode": "sagemaker",
                        "ServiceName": "Amazon SageMaker",
                        "QuotaCode": f"L-EMU{i:05d}",
                        "QuotaName": f"{instance} for training job usage",
                        "Value": self.emu.quota,
                        "Unit": "None",
                        "Adjustable": True,
                        "GlobalQuota": False,
                    }
                )
        return self._send(
            start_response, 200, json.dumps({"Quotas": quotas}).encode(), _JSON
        )

    # -- sagemaker-runtime -----------------------------------------------------------

    def _invoke(
        self, name: str, environ: dict[str, Any], start_response: Any
    ) -> list[bytes]:
        body = self._body(environ)
        region = _region_of(environ, self.emu.region)
        if self.emu.faults.throttle("InvokeEndpoint"):
            return self._runtime_error(
                start_response, "ThrottlingException", "Rate exceeded"
            )
        backend = self.emu.sagemaker_backend(region)
        endpoint = backend.endpoints.get(name)
        run = self.emu.endpoint_runs.get((region, name))
        if endpoint is None or run is None:
            return self._runtime_error(
                start_response,
                "ValidationError",
                f"Endpoint {name} of account {ACCOUNT_ID} not found.",
            )
        if endpoint.endpoint_status != "InService":
            return self._runtime_error(
                start_response,
                "ValidationError",
                f"Endpoint {name} of account {ACCOUNT_ID} is not in service "
                f"({endpoint.endpoint_status}).",
            )
        content_type = str(environ.get("CONTENT_TYPE") or "application/json")
        accept = str(environ.get("HTTP_ACCEPT") or "application/json")
        status, data, media = run.invoke(body, content_type, accept)
        if status == 200:
            return self._send(
                start_response,
                200,
                data,
                media,
                [("x-Amzn-Invoked-Production-Variant", run.variant)],
            )
        text = data.decode("utf-8", "replace")
        log = f"arn:aws:logs:{region}:{ACCOUNT_ID}:log-group:/aws/sagemaker/Endpoints/{name}"
        payload = {
            "__type": "ModelError",
            "message": f"Received client error ({status}) from primary with message "
            f'"{text}". See {log} in account {ACCOUNT_ID} for more information.',
            "OriginalStatusCode": status,
            "OriginalMessage": text,
            "LogStreamArn": log,
        }
        return self._send(
            start_response,
            424,
            json.dumps(payload).encode(),
            "application/json",
            [("x-amzn-ErrorType", "ModelError:")],
        )

    def _runtime_error(
        self, start_response: Any, code: str, message: str
    ) -> list[bytes]:
        body = json.dumps({"__type": code, "message": message}).encode()
        return self._send(
            start_response,
            400,
            body,
            "application/json",
            [("x-amzn-ErrorType", f"{code}:")],
        )

    # -- control -----------------------------------------------------------------------

    def _control(
        self, path: str, environ: dict[str, Any], start_response: Any
    ) -> list[bytes]:
        method = str(environ.get("REQUEST_METHOD", "GET"))
        body = self._body(environ)
        try:
            data = json.loads(body) if body else {}
        except ValueError:
            return self._send(start_response, 400, b'{"error": "bad JSON"}')
        faults = self.emu.faults
        try:
            if path == "/_cloudnn/health":
                out: Any = {"ok": True, "url": self.emu.url}
            elif path == "/_cloudnn/faults" and method == "POST":
                faults.configure(**data)
                out = faults.settings()
            elif path == "/_cloudnn/faults" and method == "DELETE":
                faults.reset()
                out = faults.settings()
            elif path == "/_cloudnn/faults":
                out = faults.settings()
            elif path == "/_cloudnn/spot-interruption" and method == "POST":
                self.emu.interrupt(
                    data.get("job") or "*", after_epoch=data.get("after_epoch")
                )
                out = faults.settings()
            elif path == "/_cloudnn/jobs":
                out = {
                    name: {"attempts": run.interruptions, "folder": str(run.folder)}
                    for (_, name), run in self.emu.training_runs.items()
                }
            else:
                return self._send(start_response, 404, b'{"error": "no such route"}')
        except (TypeError, ValueError) as exc:
            return self._send(
                start_response, 400, json.dumps({"error": str(exc)}).encode()
            )
        return self._send(start_response, 200, json.dumps(out).encode())


class _LogForwarder(threading.Thread):
    """Ships LogStore lines to CloudWatch Logs in batches, as the agent would."""

    def __init__(
        self,
        emulator: SageMakerEmulator,
        store: LogStore,
        group_of: Callable[[str], tuple[str, str]],
    ) -> None:
        super().__init__(name="log-forwarder", daemon=True)
        self.emu = emulator
        self.group_of = group_of
        self._pending: list[tuple[str, LogEvent]] = []
        self._cond = threading.Condition()
        self._created: set[tuple[str, str]] = set()
        self._closed = False
        self._flushing = threading.Lock()
        store.add_listener(self._add)

    def _add(self, stream: str, event: LogEvent) -> None:
        if not event.text.strip():
            return  # CloudWatch refuses empty messages
        with self._cond:
            self._pending.append((stream, event))
            self._cond.notify()

    def run(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                self._cond.wait(0.2)
            self.flush()

    def flush(self) -> None:
        with self._flushing:
            with self._cond:
                batch, self._pending = self._pending, []
            by_stream: dict[tuple[str, str], list[dict[str, Any]]] = {}
            for stream, event in batch:
                key = self.group_of(stream)
                by_stream.setdefault(key, []).append(
                    {"timestamp": int(event.timestamp * 1000), "message": event.text}
                )
            for (group, stream), events in by_stream.items():
                try:
                    self._put(group, stream, events)
                except Exception as exc:  # keep forwarding the other streams
                    print(
                        f"cloudnn emulator: lost {len(events)} log lines of "
                        f"{group}/{stream}: {exc}",
                        file=sys.stderr,
                    )

    def _put(self, group: str, stream: str, events: list[dict[str, Any]]) -> None:
        logs = self.emu.logs
        if (group, stream) not in self._created:
            with contextlib.suppress(Exception):
                logs.create_log_group(logGroupName=group)
            with contextlib.suppress(Exception):
                logs.create_log_stream(logGroupName=group, logStreamName=stream)
            self._created.add((group, stream))
        for i in range(0, len(events), 5000):
            logs.put_log_events(
                logGroupName=group, logStreamName=stream, logEvents=events[i : i + 5000]
            )

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self.flush()


class SageMakerEmulator:
    """A running local SageMaker (see the module docstring). Use :func:`start`.

    ``state_dwell``: seconds each transitional state lasts at least (so
    pollers see them); ``restart_delay``: how long a spot restart waits for
    its "new instance"; ``kill_grace``: SIGTERM-to-SIGKILL time for jobs.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        workdir: str | Path | None = None,
        region: str = "us-east-1",
        state_dwell: float = 0.2,
        restart_delay: float = 1.0,
        kill_grace: float = 60.0,
        poll_interval: float = 0.5,
    ) -> None:
        self.host = host
        self.port = port or 0
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="cloudnn-aws-emulator-"))
        self.region = region
        self.state_dwell = state_dwell
        self.restart_delay = restart_delay
        self.kill_grace = kill_grace
        self.poll_interval = poll_interval
        #: what ListServiceQuotas reports for each training instance type
        self.quota = 8.0
        self.faults = FaultInjector(seed=0)
        self.training_logs = LogStore()
        self.endpoint_logs = LogStore()
        self.training_runs: dict[tuple[str, str], Any] = {}
        self.endpoint_runs: dict[tuple[str, str], Any] = {}
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._clients: dict[str, Any] = {}
        self._forwarders: list[_LogForwarder] = []
        self._lock = threading.Lock()
        self.url = ""

    # -- life ----------------------------------------------------------------------

    def start(self) -> SageMakerEmulator:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        if self.host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(
                f"the emulator binds loopback only (asked for {self.host!r}): it "
                "has no authentication"
            )
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.workdir.mkdir(parents=True, exist_ok=True)
        app = _Gateway(self, DomainDispatcherApplication(create_backend_app))
        self._server = make_server(
            self.host, self.port, app, threaded=True, request_handler=MotoRequestHandler
        )
        self.port = int(self._server.server_port)
        self.url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="sagemaker-emulator", daemon=True
        )
        self._thread.start()
        self._forwarders = [
            _LogForwarder(
                self, self.training_logs, lambda s: ("/aws/sagemaker/TrainingJobs", s)
            ),
            _LogForwarder(
                self,
                self.endpoint_logs,
                lambda s: (
                    f"/aws/sagemaker/Endpoints/{s.split('/', 1)[0]}",
                    s.split("/", 1)[1],
                ),
            ),
        ]
        for forwarder in self._forwarders:
            forwarder.start()
        self._bootstrap()
        return self

    def _bootstrap(self) -> None:
        """The bucket, execution role and log group a newcomer's spec needs."""
        s3 = self.client("s3")
        if self.region == "us-east-1":
            s3.create_bucket(Bucket=BUCKET)
        else:
            s3.create_bucket(
                Bucket=BUCKET,
                CreateBucketConfiguration={"LocationConstraint": self.region},
            )
        iam = self.client("iam")
        iam.create_role(
            RoleName=ROLE_NAME,
            AssumeRolePolicyDocument=json.dumps(_TRUST_POLICY),
            Description="SageMaker execution role of the cloudnn emulator",
        )
        logs = self.client("logs")
        for group in ("/aws/sagemaker/TrainingJobs",):
            with contextlib.suppress(Exception):
                logs.create_log_group(logGroupName=group)
        config = self.workdir / "sagemaker-sdk-config.yaml"
        config.write_text(
            "SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n"
            "      TelemetryOptOut: true\n"
        )

    def stop(self) -> None:
        """Stop every job and endpoint process, then the server."""
        for run in list(self.training_runs.values()):
            run.request_stop()
            if run.replicas is not None:
                run.replicas.terminate(grace=5)
        for run in list(self.endpoint_runs.values()):
            run.stop()
        for forwarder in self._forwarders:
            with contextlib.suppress(Exception):
                forwarder.close()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> SageMakerEmulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def env(self) -> dict[str, str]:
        """Point boto3, the cloudnn provider and the SageMaker SDK here."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_EC2_METADATA_DISABLED": "true",
            "CLOUDNN_AWS_BUCKET": BUCKET,
            "CLOUDNN_AWS_ROLE_ARN": ROLE_ARN,
            "CLOUDNN_AWS_POLL_INTERVAL": str(self.poll_interval),
            "CLOUDNN_AWS_MAX_POLL_INTERVAL": str(max(self.poll_interval, 2.0)),
            "SAGEMAKER_USER_CONFIG_OVERRIDE": str(
                self.workdir / "sagemaker-sdk-config.yaml"
            ),
            "SAGEMAKER_VALIDATE_ROLE": "false",
        }

    # -- AWS access from inside the emulator ------------------------------------------

    def client(self, service: str) -> Any:
        """A boto3 client of ``service`` talking to this emulator."""
        with self._lock:
            found = self._clients.get(service)
            if found is None:
                import boto3.session
                from botocore.config import Config

                session = boto3.session.Session(
                    aws_access_key_id=ACCESS_KEY,
                    aws_secret_access_key=SECRET_KEY,
                    region_name=self.region,
                )
                found = session.client(
                    service,
                    endpoint_url=self.url,
                    config=Config(
                        retries={"mode": "standard", "total_max_attempts": 3}
                    ),
                )
                self._clients[service] = found
            return found

    @property
    def s3(self) -> Any:
        return self.client("s3")

    @property
    def logs(self) -> Any:
        return self.client("logs")

    def sagemaker_backend(self, region: str) -> Any:
        from moto.sagemaker.models import sagemaker_backends

        return sagemaker_backends[ACCOUNT_ID][region]

    def flush_logs(self) -> None:
        """Push every captured line to CloudWatch Logs now."""
        for forwarder in self._forwarders:
            forwarder.flush()

    def dwell(self) -> None:
        if self.state_dwell > 0:
            time.sleep(self.state_dwell)

    # -- jobs and endpoints -------------------------------------------------------------

    def start_training(self, region: str, request: Mapping[str, Any]) -> None:
        from cloudnn_aws.testing._training import TrainingRun

        run = TrainingRun(self, region, request)
        self.training_runs[(region, run.job_name)] = run
        run.begin()

    def start_endpoint(self, region: str, name: str) -> None:
        from cloudnn_aws.testing._endpoints import EndpointRun

        old = self.endpoint_runs.pop((region, name), None)
        if old is not None:
            old.stop()
        run = EndpointRun(self, region, name)
        self.endpoint_runs[(region, name)] = run
        run.begin()

    def stop_endpoint(self, region: str, name: str) -> None:
        run = self.endpoint_runs.pop((region, name), None)
        if run is not None:
            run.stop()

    def interrupt(self, job: str = "*", *, after_epoch: int | None = None) -> None:
        """Reclaim the spot instance of managed-spot job ``job`` ("*": the next one).

        With ``after_epoch``, once the job has logged that many epochs.
        """
        self.faults.arm("spot_interruption", {"job": job, "after_epoch": after_epoch})


def start(
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    workdir: str | Path | None = None,
    **options: Any,
) -> SageMakerEmulator:
    """Start the emulator (the ``cloudnn.emulators`` entry point ``aws``)."""
    return SageMakerEmulator(host=host, port=port, workdir=workdir, **options).start()


class EmulatorControl:
    """The control routes of a running emulator, over HTTP (another process's too)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def _call(self, method: str, path: str, data: Any = None) -> Any:
        body = None if data is None else json.dumps(data).encode()
        req = urllib.request.Request(
            self.url + path,
            data=body,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback
            return json.loads(resp.read() or b"null")

    def faults(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/_cloudnn/faults")
        return result

    def configure(self, **settings: Any) -> dict[str, Any]:
        """Fault settings, as :meth:`FaultInjector.configure` takes them."""
        result: dict[str, Any] = self._call("POST", "/_cloudnn/faults", settings)
        return result

    def reset(self) -> None:
        self._call("DELETE", "/_cloudnn/faults")

    def interrupt(self, job: str = "*", *, after_epoch: int | None = None) -> None:
        self._call(
            "POST",
            "/_cloudnn/spot-interruption",
            {"job": job, "after_epoch": after_epoch},
        )
