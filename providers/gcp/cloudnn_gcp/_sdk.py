"""The only module that touches the Google SDKs: lazy imports, clients, errors.

Everything ``google.*`` is imported inside functions, so ``import cloudnn_gcp``
and ``cloudnn plan --provider gcp`` load none of it. :class:`Clients` builds
the ``aiplatform_v1`` GAPIC clients (JobService, ModelService,
EndpointService, PredictionService), the Cloud Logging client and the Cloud
Storage client once, on first use:

* ``api_endpoint`` ``http://host:port`` -> an insecure gRPC channel (the local
  emulator) and anonymous credentials; anything else -> TLS with application
  default credentials (``GOOGLE_APPLICATION_CREDENTIALS``, ``gcloud auth
  application-default login``, or the metadata server);
* ``transport="rest"`` -> the same clients over HTTP/JSON.

Every call goes through :meth:`Clients.call`: Google's errors are mapped onto
:mod:`cloudnn.errors` (:func:`map_error`) and the retryable ones retried by
:func:`cloudnn.retry.call`, on top of ``google.api_core``'s own retry of
idempotent reads (:meth:`Clients.read`).
"""

from __future__ import annotations

import contextlib
import functools
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from cloudnn.errors import (
    AuthenticationError,
    CapacityError,
    CloudnnError,
    NotFoundError,
    QuotaExceededError,
    SpecError,
    ThrottledError,
    TransientError,
)
from cloudnn.retry import RetryPolicy
from cloudnn.retry import call as retry_call
from cloudnn_gcp.config import ProviderConfig

__all__ = ["Clients", "map_error"]

T = TypeVar("T")

_SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
_ADC_HINT = (
    "run `gcloud auth application-default login` (or set "
    "GOOGLE_APPLICATION_CREDENTIALS to a service account key file)"
)
#: Vertex AI field paths in errors -> the spec field a user changes
_FIELDS = (
    ("machine_type", "providers.gcp.machine_type"),
    ("accelerator", "resources.accelerator"),
    ("service_account", "providers.gcp.service_account"),
    ("network", "providers.gcp.network"),
    ("kms_key_name", "providers.gcp.kms_key_name"),
    ("encryption_spec", "providers.gcp.kms_key_name"),
    ("image_uri", "providers.gcp.image_uri"),
    ("replica_count", "resources.nodes"),
    ("boot_disk", "providers.gcp.boot_disk_size_gb"),
    ("labels", "providers.gcp.labels"),
    ("timeout", "resources.max_runtime"),
)
_CAPACITY = re.compile(
    r"stockout|resource_pool_exhausted|insufficient|not have enough resources"
    r"|no capacity|capacity",
    re.I,
)
_RATE = re.compile(r"per minute|per second|rate|too many requests", re.I)


# ---------------------------------------------------------------- errors


def _field_of(exc: Any) -> str | None:
    """The request field a Google error names (BadRequest details, or its text)."""
    for detail in getattr(exc, "details", None) or ():
        for violation in getattr(detail, "field_violations", ()) or ():
            field = str(getattr(violation, "field", ""))
            if field:
                return field
    match = re.search(r"\b([a-z_]+(?:\.[a-z_]+(?:\[\d+\])?)+)\b", str(exc))
    return match.group(1) if match else None


def _spec_field(vendor_field: str | None) -> str:
    if not vendor_field:
        return "providers.gcp"
    for needle, spec_field in _FIELDS:
        if needle in vendor_field:
            return spec_field
    return f"vertex:{vendor_field}"


def _message(exc: Any) -> str:
    text = getattr(exc, "message", None) or str(exc)
    return " ".join(str(text).split())[:500]


def map_error(exc: BaseException) -> CloudnnError | None:
    """A Google SDK exception as a :mod:`cloudnn.errors` error (None: not ours)."""
    from google.api_core import exceptions as gexc

    try:
        from google.auth import exceptions as auth_exc
    except ImportError:  # pragma: no cover - google-auth comes with api-core
        auth_exc = None  # type: ignore[assignment]

    if auth_exc is not None and isinstance(
        exc, auth_exc.DefaultCredentialsError | auth_exc.RefreshError
    ):
        return AuthenticationError(
            f"no usable Google Cloud credentials: {_message(exc)}", hint=_ADC_HINT
        )
    if isinstance(exc, gexc.Unauthenticated):
        return AuthenticationError(
            f"Google Cloud rejected the credentials: {_message(exc)}", hint=_ADC_HINT
        )
    if isinstance(exc, gexc.PermissionDenied):
        return AuthenticationError(
            f"permission denied: {_message(exc)}",
            hint="grant the caller roles/aiplatform.user and the bucket's "
            "roles/storage.objectAdmin (`cloudnn setup --provider gcp` prints a "
            "template), enable the Vertex AI API, or " + _ADC_HINT,
        )
    if isinstance(exc, gexc.ResourceExhausted):
        text = _message(exc)
        if _CAPACITY.search(text):
            return CapacityError(
                f"Vertex AI has no capacity for this request now: {text}",
                hint="try another region (providers.gcp.region), another "
                "accelerator, resources.spot, or later",
            )
        if "quota" in text.lower() and not _RATE.search(text):
            return QuotaExceededError(
                f"Vertex AI quota exceeded: {text}",
                hint="request more quota (console: IAM & Admin > Quotas, "
                "service aiplatform.googleapis.com) or use a smaller machine",
            )
        return ThrottledError(f"Vertex AI throttled the call: {text}")
    if isinstance(
        exc,
        gexc.ServiceUnavailable
        | gexc.DeadlineExceeded
        | gexc.InternalServerError
        | gexc.GatewayTimeout
        | gexc.Aborted
        | gexc.BadGateway
        | gexc.TooManyRequests,
    ):
        if isinstance(exc, gexc.TooManyRequests):
            return ThrottledError(f"Vertex AI throttled the call: {_message(exc)}")
        return TransientError(f"Google Cloud is unavailable: {_message(exc)}")
    if isinstance(exc, gexc.InvalidArgument | gexc.BadRequest):
        vendor_field = _field_of(exc)
        return SpecError(
            _spec_field(vendor_field),
            f"Vertex AI rejected the request: {_message(exc)}",
            hint="fix the spec field named, then plan again "
            "(`cloudnn plan SPEC --provider gcp` shows the request)",
        )
    if isinstance(exc, gexc.NotFound):
        return NotFoundError(f"not found: {_message(exc)}")
    if isinstance(exc, gexc.FailedPrecondition):
        return CloudnnError(f"Vertex AI refused: {_message(exc)}")
    if isinstance(exc, gexc.GoogleAPICallError):
        return CloudnnError(f"Vertex AI call failed: {_message(exc)}")
    if isinstance(exc, ConnectionError | TimeoutError):
        return TransientError(f"cannot reach Google Cloud: {exc}")
    try:
        import requests

        if isinstance(exc, requests.ConnectionError | requests.Timeout):
            return TransientError(f"cannot reach Google Cloud Storage: {exc}")
    except ImportError:  # pragma: no cover
        pass
    return None


# ---------------------------------------------------------------- clients


class Clients:
    """Google clients for one provider instance, built lazily and once each."""

    def __init__(self, config: ProviderConfig, *, policy: RetryPolicy | None = None):
        self.config = config
        self.policy = policy or RetryPolicy()
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str], Any] = {}
        self._credentials: Any = None
        self._channels: dict[str, Any] = {}

    # -- plumbing --------------------------------------------------------

    def call(self, fn: Callable[[], T], what: str) -> T:
        """Run ``fn`` with errors mapped and transient ones retried."""
        return retry_call(fn, mapper=map_error, policy=self.policy, what=what)

    def read_retry(self) -> Any:
        """``google.api_core`` retry for idempotent reads (transient codes only)."""
        from google.api_core import exceptions as gexc
        from google.api_core import retry as gretry

        return gretry.Retry(
            predicate=gretry.if_exception_type(
                gexc.ServiceUnavailable,
                gexc.DeadlineExceeded,
                gexc.InternalServerError,
                gexc.ResourceExhausted,
            ),
            initial=0.05 if self.config.plaintext else 0.5,
            maximum=2.0 if self.config.plaintext else 10.0,
            multiplier=2.0,
            timeout=self.config.timeout,
        )

    def credentials(self) -> Any:
        """Anonymous for a plaintext endpoint; application default otherwise."""
        with self._lock:
            if self._credentials is None:
                if self.config.anonymous:
                    self._credentials = anonymous_credentials()
                else:
                    import google.auth

                    with _mapped():
                        creds, _ = google.auth.default(scopes=list(_SCOPES))
                    self._credentials = creds
            return self._credentials

    def _channel(self, host: str) -> Any:
        import grpc

        with self._lock:
            if host not in self._channels:
                options = [
                    ("grpc.max_receive_message_length", 64 << 20),
                    ("grpc.max_send_message_length", 64 << 20),
                ]
                self._channels[host] = grpc.insecure_channel(host, options=options)
            return self._channels[host]

    def _gapic(self, kind: str, region: str) -> Any:
        key = (kind, region)
        with self._lock:
            found = self._cache.get(key)
        if found is not None:
            return found
        client = self._build(kind, region)
        with self._lock:
            return self._cache.setdefault(key, client)

    def _build(self, kind: str, region: str) -> Any:
        from google.api_core.client_options import ClientOptions
        from google.cloud import aiplatform_v1

        cls = {
            "job": aiplatform_v1.JobServiceClient,
            "model": aiplatform_v1.ModelServiceClient,
            "endpoint": aiplatform_v1.EndpointServiceClient,
            "prediction": aiplatform_v1.PredictionServiceClient,
        }[kind]
        host = self.config.api_host(region)
        return self._client(cls, host, self.config.plaintext, ClientOptions)

    def _client(self, cls: Any, host: str, plaintext: bool, options_cls: Any) -> Any:
        if self.config.transport == "rest":
            scheme = "http://" if plaintext else "https://"
            return cls(
                transport="rest",
                credentials=self.credentials(),
                client_options=options_cls(api_endpoint=scheme + host),
            )
        if plaintext:
            transport_cls = cls.get_transport_class("grpc")
            return cls(
                transport=transport_cls(
                    channel=self._channel(host), credentials=self.credentials()
                )
            )
        return cls(
            credentials=self.credentials(),
            client_options=options_cls(api_endpoint=host),
        )

    def jobs(self, region: str) -> Any:
        return self._gapic("job", region)

    def models(self, region: str) -> Any:
        return self._gapic("model", region)

    def endpoints(self, region: str) -> Any:
        return self._gapic("endpoint", region)

    def prediction(self, region: str) -> Any:
        return self._gapic("prediction", region)

    def logging(self) -> Any:
        key = ("logging", "")
        with self._lock:
            found = self._cache.get(key)
        if found is not None:
            return found
        from google.api_core.client_options import ClientOptions
        from google.cloud.logging_v2.services.logging_service_v2 import (
            LoggingServiceV2Client,
        )

        client = self._client(
            LoggingServiceV2Client,
            self.config.logging_host(),
            self.config.logging_plaintext,
            ClientOptions,
        )
        with self._lock:
            return self._cache.setdefault(key, client)

    def storage(self, project: str | None) -> Any:
        key = ("storage", project or "")
        with self._lock:
            found = self._cache.get(key)
        if found is not None:
            return found
        import importlib

        storage: Any = importlib.import_module("google.cloud.storage")
        endpoint = self.config.storage_endpoint
        if endpoint:
            # an emulator (STORAGE_EMULATOR_HOST): plain http, no credentials
            if "://" not in endpoint:
                endpoint = "http://" + endpoint
            client = storage.Client(
                project=project or "cloudnn",
                credentials=anonymous_credentials(),
                client_options={"api_endpoint": endpoint},
            )
        else:
            client = storage.Client(project=project, credentials=self.credentials())
        with self._lock:
            return self._cache.setdefault(key, client)

    # -- long-running operations -------------------------------------------

    def operation(self, client: Any, name: str) -> Any:
        """``GetOperation`` through ``client``'s operations mixin (retried)."""
        return self.call(
            lambda: client.get_operation(
                {"name": name}, retry=self.read_retry(), timeout=self.config.timeout
            ),
            what="GetOperation",
        )

    def wait_operation(
        self, client: Any, name: str, *, timeout: float, sleep: Callable[[float], None]
    ) -> Any:
        """Poll an operation until done; raise its error mapped, else return it."""
        import time

        deadline = time.monotonic() + timeout
        delay = 0.05 if self.config.plaintext else 1.0
        while True:
            op = self.operation(client, name)
            if op.done:
                raise_operation_error(op)
                return op
            if time.monotonic() > deadline:
                from cloudnn.errors import CloudnnTimeoutError

                raise CloudnnTimeoutError(
                    f"operation {name} not done after {timeout:.0f} s",
                    hint="check it in the Google Cloud console, then retry",
                )
            sleep(delay)
            delay = min(delay * 1.5, 10.0)

    # -- Cloud Storage -------------------------------------------------------

    def upload_file(self, project: str | None, source: Path, uri: str) -> bool:
        """Upload ``source`` to ``uri`` unless an object is there; True if uploaded."""
        bucket, name = split_gs(uri)
        blob = self.storage(project).bucket(bucket).blob(name)
        if self.call(lambda: blob.exists(), what=f"stat {uri}"):
            return False
        self.call(lambda: blob.upload_from_filename(str(source)), what=f"upload {uri}")
        return True

    def upload_tree(self, project: str | None, source: Path, uri: str) -> int:
        """Upload the files under ``source`` below ``uri`` (a folder); count uploaded."""
        count = 0
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            rel = path.relative_to(source).as_posix()
            if self.upload_file(project, path, uri.rstrip("/") + "/" + rel):
                count += 1
        return count

    def list_objects(self, project: str | None, uri: str) -> list[Any]:
        bucket, prefix = split_gs(uri)
        client = self.storage(project)
        return self.call(
            lambda: list(client.list_blobs(bucket, prefix=prefix)),
            what=f"list {uri}",
        )

    def download_tree(self, project: str | None, uri: str, dest: Path) -> int:
        """Download every object under ``uri`` into ``dest``; count downloaded."""
        _, prefix = split_gs(uri)
        count = 0
        for blob in self.list_objects(project, uri):
            rel = blob.name[len(prefix) :].lstrip("/")
            if not rel or blob.name.endswith("/"):
                continue
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            self.call(
                functools.partial(blob.download_to_filename, str(target)),
                what=f"download gs://{blob.bucket.name}/{blob.name}",
            )
            count += 1
        return count

    def read_text(self, project: str | None, uri: str) -> str | None:
        """An object's text, or None when it does not exist."""
        from google.api_core import exceptions as gexc

        bucket, name = split_gs(uri)
        blob = self.storage(project).bucket(bucket).blob(name)

        def read() -> str | None:
            try:
                return str(blob.download_as_text())
            except gexc.NotFound:
                return None

        return self.call(read, what=f"read {uri}")

    # -- Cloud Logging ---------------------------------------------------------

    def log_entries(
        self, project: str, log_filter: str, *, page_size: int = 1000
    ) -> Iterator[Any]:
        """Entries matching ``log_filter``, oldest first, page by page (retried)."""
        client = self.logging()
        token = ""
        while True:
            request = {
                "resource_names": [f"projects/{project}"],
                "filter": log_filter,
                "order_by": "timestamp asc",
                "page_size": page_size,
                "page_token": token,
            }
            pager = self.call(
                functools.partial(
                    client.list_log_entries,
                    request=request,
                    retry=self.read_retry(),
                    timeout=self.config.timeout,
                ),
                what="ListLogEntries",
            )
            # one page per call: the pager would fetch the next page unretried
            response = next(iter(pager.pages))
            yield from response.entries
            token = response.next_page_token
            if not token:
                return


def raise_operation_error(op: Any) -> None:
    """Raise a finished operation's ``error`` as the mapped cloudnn error."""
    if not op.HasField("error") or not op.error.code:
        return
    from google.api_core import exceptions as gexc

    exc = gexc.from_grpc_status(  # type: ignore[no-untyped-call]
        _grpc_code(op.error.code), op.error.message
    )
    mapped = map_error(exc)
    raise (mapped or CloudnnError(op.error.message)) from exc


def _grpc_code(code: int) -> Any:
    import grpc

    for status in grpc.StatusCode:
        if status.value[0] == code:
            return status
    return grpc.StatusCode.UNKNOWN


@contextlib.contextmanager
def _mapped() -> Iterator[None]:
    """Google exceptions raised inside come out as :mod:`cloudnn.errors` errors."""
    try:
        yield
    except CloudnnError:
        raise
    except Exception as exc:
        mapped = map_error(exc)
        if mapped is None:
            raise
        raise mapped from exc


def anonymous_credentials() -> Any:
    """google-auth's anonymous credentials (for plaintext/emulator endpoints)."""
    from google.auth.credentials import AnonymousCredentials

    return AnonymousCredentials()  # type: ignore[no-untyped-call]


def split_gs(uri: str) -> tuple[str, str]:
    """``gs://bucket/path`` -> ("bucket", "path")."""
    if not uri.startswith("gs://"):
        raise ValueError(f"not a gs:// URI: {uri}")
    bucket, _, name = uri[len("gs://") :].partition("/")
    return bucket, name


def to_message(cls_name: str, payload: Any) -> Any:
    """A proto JSON dict as an ``aiplatform_v1`` message (strict: unknown fields raise)."""
    import json

    from google.cloud import aiplatform_v1

    cls = getattr(aiplatform_v1, cls_name)
    return cls.from_json(json.dumps(payload), ignore_unknown_fields=False)


def message_dict(message: Any) -> dict[str, Any]:
    """A proto-plus (or protobuf) message as plain JSON data (enum names)."""
    from google.protobuf import json_format

    pb = message._pb if hasattr(message, "_pb") else message
    out: dict[str, Any] = json_format.MessageToDict(
        pb, preserving_proto_field_name=True
    )
    return out


def enum_name(value: Any) -> str:
    """An enum field's name whether proto-plus gave an enum or an int."""
    name = getattr(value, "name", None)
    return str(name) if name is not None else str(value)
