"""gRPC plumbing of the emulator: a method table discovered from the real clients.

No servicer base classes ship for ``aiplatform_v1`` (GAPIC transports are
client-only), and the service descriptors are not in the default protobuf
pool. So the table is read from the clients themselves: each ``*GrpcTransport``
is built on a *recording* channel, every stub is touched, and the recorded
``(path, request serializer, response deserializer)`` triples are mirrored
into server handlers (``deserialize``/``serialize`` of the proto-plus
classes, ``FromString``/``SerializeToString`` for raw protobuf such as
``google.longrunning``). The server thus speaks exactly the wire format the
installed SDK speaks; a method without an implementation answers
``UNIMPLEMENTED``, as an unknown RPC would.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc

__all__ = [
    "CONTROL_SERVICE",
    "TRANSPORTS",
    "EmulatorRpcError",
    "Method",
    "discover",
    "status_error",
]

#: (module, transport class) of every client the provider uses
TRANSPORTS = (
    (
        "google.cloud.aiplatform_v1.services.job_service.transports",
        "JobServiceGrpcTransport",
    ),
    (
        "google.cloud.aiplatform_v1.services.model_service.transports",
        "ModelServiceGrpcTransport",
    ),
    (
        "google.cloud.aiplatform_v1.services.endpoint_service.transports",
        "EndpointServiceGrpcTransport",
    ),
    (
        "google.cloud.aiplatform_v1.services.prediction_service.transports",
        "PredictionServiceGrpcTransport",
    ),
    (
        "google.cloud.logging_v2.services.logging_service_v2.transports",
        "LoggingServiceV2GrpcTransport",
    ),
)
#: the emulator's own service: fault injection and inspection, JSON in and out
CONTROL_SERVICE = "cloudnn.emulator.v1.Control"


@dataclass(frozen=True)
class Method:
    """One RPC as the server sees it."""

    path: str  # "/google.cloud.aiplatform.v1.JobService/CreateCustomJob"
    kind: str  # unary_unary | unary_stream | stream_unary | stream_stream
    request_deserializer: Callable[[bytes], Any]
    response_serializer: Callable[[Any], bytes]

    @property
    def service(self) -> str:
        return self.path.strip("/").split("/")[0]

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[1]


class _RecordingChannel(grpc.Channel):  # type: ignore[misc]
    """A ``grpc.Channel`` stand-in that records every stub the transport makes."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any, Any]] = []

    def _record(self, kind: str) -> Callable[..., Any]:
        def make(
            path: str,
            request_serializer: Any = None,
            response_deserializer: Any = None,
            *args: Any,
            **kwargs: Any,
        ) -> Any:
            self.calls.append((kind, path, request_serializer, response_deserializer))
            return lambda *a, **k: None

        return make

    def unary_unary(self, *args: Any, **kwargs: Any) -> Any:
        return self._record("unary_unary")(*args, **kwargs)

    def unary_stream(self, *args: Any, **kwargs: Any) -> Any:
        return self._record("unary_stream")(*args, **kwargs)

    def stream_unary(self, *args: Any, **kwargs: Any) -> Any:
        return self._record("stream_unary")(*args, **kwargs)

    def stream_stream(self, *args: Any, **kwargs: Any) -> Any:
        return self._record("stream_stream")(*args, **kwargs)

    def subscribe(self, *args: Any, **kwargs: Any) -> None:
        return None

    def unsubscribe(self, *args: Any, **kwargs: Any) -> None:
        return None

    def close(self) -> None:
        return None


def _request_decoder(path: str, serializer: Any) -> Callable[[bytes], Any]:
    owner = getattr(serializer, "__self__", None)  # proto-plus: bound classmethod
    if owner is not None and hasattr(owner, "deserialize"):
        return owner.deserialize  # type: ignore[no-any-return]
    # raw protobuf (google.longrunning.Operations): <Method>Request by convention
    service, method = path.strip("/").split("/")
    if service == "google.longrunning.Operations":
        from google.longrunning import operations_pb2

        cls = getattr(operations_pb2, f"{method}Request")
        return cls.FromString  # type: ignore[no-any-return]
    raise LookupError(f"cannot find the request type of {path}")


def _response_encoder(deserializer: Any) -> Callable[[Any], bytes]:
    owner = getattr(deserializer, "__self__", None)
    if owner is not None and hasattr(owner, "serialize") and hasattr(owner, "meta"):
        return owner.serialize  # type: ignore[no-any-return]

    def encode(message: Any) -> bytes:
        if message is None:
            return b""  # google.protobuf.Empty
        return bytes(message.SerializeToString())

    return encode


def discover() -> dict[str, Method]:
    """Every RPC of :data:`TRANSPORTS` (plus their Operations mixin), by path."""
    from cloudnn_gcp._sdk import anonymous_credentials

    methods: dict[str, Method] = {}
    for module_name, class_name in TRANSPORTS:
        transport_cls = getattr(importlib.import_module(module_name), class_name)
        channel = _RecordingChannel()
        transport = transport_cls(channel=channel, credentials=anonymous_credentials())
        for name, value in inspect.getmembers(type(transport)):
            if isinstance(value, property) and name not in (
                "operations_client",
                "kind",
                "host",
            ):
                try:
                    getattr(transport, name)
                except Exception:  # noqa: BLE001,S112 - a property that is not a stub
                    continue
        # the transports wrap the channel in an interceptor whose stubs are
        # made lazily: run each thunk so the recording channel sees it
        for stub in list(getattr(transport, "_stubs", {}).values()):
            thunk = getattr(stub, "_thunk", None)
            if thunk is not None:
                thunk(stub._method)
        for kind, path, serializer, deserializer in channel.calls:
            if path in methods:
                continue
            try:
                decoder = _request_decoder(path, serializer)
            except LookupError:
                continue
            methods[path] = Method(path, kind, decoder, _response_encoder(deserializer))
    return methods


class EmulatorRpcError(Exception):
    """Raised by a handler: answered as a gRPC status (with BadRequest details)."""

    def __init__(self, code: Any, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


def status_error(exc: EmulatorRpcError) -> Any:
    """``exc`` as a ``grpc.Status`` carrying ``google.rpc.BadRequest`` when a field is named."""
    from google.protobuf import any_pb2
    from google.rpc import error_details_pb2, status_pb2
    from grpc_status import rpc_status

    details = []
    if exc.field:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=exc.field, description=exc.message
                )
            ]
        )
        packed = any_pb2.Any()
        packed.Pack(bad)
        details.append(packed)
    status = status_pb2.Status(
        code=exc.code.value[0], message=exc.message, details=details
    )
    return rpc_status.to_status(status)


def json_method(
    handler: Callable[[Mapping[str, Any]], Any],
) -> Callable[[bytes, Any], bytes]:
    """A control RPC: JSON object in, JSON value out (bytes on the wire)."""
    import json

    def run(request: bytes, context: Any) -> bytes:
        body = json.loads(request.decode() or "{}") if request else {}
        return json.dumps(handler(body)).encode()

    return run
