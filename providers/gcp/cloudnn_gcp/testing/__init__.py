"""A local Vertex AI that really trains and serves: the real clients talk to it over gRPC.

``cloudnn emulator --provider gcp`` (or :func:`start`) serves, on 127.0.0.1:

* the ``aiplatform_v1`` JobService, ModelService, EndpointService and
  PredictionService, the ``google.longrunning.Operations`` they poll, and
  Cloud Logging's ``LoggingServiceV2`` -- one gRPC server, whose method table
  is discovered from the installed client libraries (:mod:`._grpc`), so the
  wire format is the SDK's own; requests are validated server-side
  (INVALID_ARGUMENT naming the field);
* Cloud Storage through ``gcp-storage-emulator`` (in this process, in memory).

What it does with them is real (:mod:`._vertex`, :mod:`._jobs`): a
CustomJob moves PENDING -> RUNNING -> SUCCEEDED/FAILED/CANCELLED while its
container command runs as one local process per replica under Vertex AI's
environment (``AIP_MODEL_DIR``, ``AIP_CHECKPOINT_DIR``, ``CLUSTER_SPEC``),
its output lands in Cloud Logging, its model in the output folder; a
deployed model runs its serving container command (the cloudnn Vertex
adapter ``code/server.py``) as a local HTTP server behind ``Predict``.

Fault injection, per test, from Python (``emulator.faults``,
:meth:`VertexEmulator.preempt`) or over gRPC from another process
(:class:`EmulatorControl`, the ``cloudnn.emulator.v1.Control`` service on the
same port): a fraction of calls answered UNAVAILABLE or RESOURCE_EXHAUSTED
(for a create, half of them *after* the resource was made: the answer is
lost), a stock-out on the Nth ``CreateCustomJob``/``DeployModel``, and a
SPOT preemption of a running job (every replica SIGTERMed, restarted with
its checkpoints).

:attr:`VertexEmulator.env` is what the provider needs, and nothing else::

    CLOUDNN_GCP_API_ENDPOINT=http://127.0.0.1:PORT   (plaintext: anonymous credentials)
    STORAGE_EMULATOR_HOST=http://127.0.0.1:PORT2     (google-cloud-storage honours it)
    GOOGLE_CLOUD_PROJECT=cloudnn-emulator
    CLOUDNN_GCP_BUCKET=cloudnn-emulator
    CLOUDNN_GCP_POLL_INTERVAL=0.25, CLOUDNN_GCP_MAX_POLL_INTERVAL=1

It binds 127.0.0.1 only and sends nothing anywhere else.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "BUCKET",
    "ENV_KEYS",
    "PROJECT",
    "EmulatorControl",
    "VertexEmulator",
    "start",
]

PROJECT = "cloudnn-emulator"
BUCKET = "cloudnn-emulator"
#: the variables :attr:`VertexEmulator.env` sets (``cloudnn emulator`` prints them)
ENV_KEYS = (
    "CLOUDNN_GCP_API_ENDPOINT",
    "CLOUDNN_GCP_BUCKET",
    "CLOUDNN_GCP_MAX_POLL_INTERVAL",
    "CLOUDNN_GCP_POLL_INTERVAL",
    "GOOGLE_CLOUD_PROJECT",
    "STORAGE_EMULATOR_HOST",
)


class VertexEmulator:
    """A running emulator: ``env``, ``url``, ``faults``, ``preempt()``, ``stop()``."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        workdir: str | os.PathLike[str] | None = None,
        grace: float = 30.0,
        seed: int | None = 0,
    ) -> None:
        # before grpc loads: no GOAWAY chatter when the server closes
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
        from concurrent import futures

        import grpc

        from cloudnn.testing.emulation import FaultInjector, LogStore
        from cloudnn_gcp.testing._gcs import StorageEmulator
        from cloudnn_gcp.testing._grpc import CONTROL_SERVICE, discover
        from cloudnn_gcp.testing._vertex import VertexBackend

        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"the emulator binds loopback only, not {host!r}")
        self._own_workdir = workdir is None
        self.workdir = Path(
            tempfile.mkdtemp(prefix="cloudnn-gcp-emulator-")
            if workdir is None
            else workdir
        )
        self.workdir.mkdir(parents=True, exist_ok=True)
        shim = self.workdir / "bin"
        shim.mkdir(exist_ok=True)
        # a container's `python` is this interpreter (and its packages)
        for name in ("python", "python3"):
            path = shim / name
            path.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
            path.chmod(0o755)
        self.faults = FaultInjector(seed=seed)
        self.logs = LogStore()
        self.storage = StorageEmulator(
            host="127.0.0.1", buckets=(BUCKET,), mirror=self.workdir / "gcs"
        )
        self.backend = VertexBackend(
            workdir=self.workdir,
            storage=self.storage,
            faults=self.faults,
            logs=self.logs,
            shim_dir=shim,
            grace=grace,
        )
        self.methods = discover()
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="vertex-rpc"),
            options=[
                ("grpc.max_receive_message_length", 64 << 20),
                ("grpc.max_send_message_length", 64 << 20),
            ],
        )
        by_service: dict[str, dict[str, Any]] = {}
        for method in self.methods.values():
            if method.kind != "unary_unary":
                continue  # streaming RPCs: UNIMPLEMENTED, as for any unknown method
            by_service.setdefault(method.service, {})[method.name] = self._handler(
                method
            )
        handlers = [
            grpc.method_handlers_generic_handler(service, table)
            for service, table in by_service.items()
        ]
        handlers.append(
            grpc.method_handlers_generic_handler(CONTROL_SERVICE, self._control())
        )
        self._server.add_generic_rpc_handlers(tuple(handlers))
        bound = self._server.add_insecure_port(f"127.0.0.1:{port or 0}")
        if not bound:
            raise OSError(f"cannot listen on 127.0.0.1:{port}")
        self._server.start()
        self.port = bound
        self.url = f"http://127.0.0.1:{bound}"
        self.env: dict[str, str] = {
            "CLOUDNN_GCP_API_ENDPOINT": self.url,
            "CLOUDNN_GCP_BUCKET": BUCKET,
            "CLOUDNN_GCP_MAX_POLL_INTERVAL": "1",
            "CLOUDNN_GCP_POLL_INTERVAL": "0.25",
            "GOOGLE_CLOUD_PROJECT": PROJECT,
            "STORAGE_EMULATOR_HOST": self.storage.url,
        }
        self._stopped = False

    # -- serving -------------------------------------------------------------

    def _handler(self, method: Any) -> Any:
        import grpc

        from cloudnn_gcp.testing._grpc import EmulatorRpcError, status_error

        backend = self.backend
        impl = getattr(backend, method.name, None)

        def run(request: Any, context: Any) -> Any:
            if impl is None:
                context.abort(
                    grpc.StatusCode.UNIMPLEMENTED,
                    f"the cloudnn Vertex AI emulator does not implement {method.path}",
                )
                return None
            try:
                lost = backend.before(method.name)
                response = impl(request, context)
                if lost:  # done, but the answer never arrives
                    raise backend.injected_error()
                return response
            except EmulatorRpcError as exc:
                context.abort_with_status(status_error(exc))

        return grpc.unary_unary_rpc_method_handler(
            run,
            request_deserializer=method.request_deserializer,
            response_serializer=method.response_serializer,
        )

    def _control(self) -> dict[str, Any]:
        import grpc

        from cloudnn_gcp.testing._grpc import json_method

        def configure(body: Mapping[str, Any]) -> Any:
            self.faults.configure(**dict(body))
            return self.faults.settings()

        def reset(body: Mapping[str, Any]) -> Any:
            self.faults.reset()
            return self.faults.settings()

        def preempt(body: Mapping[str, Any]) -> Any:
            self.preempt(str(body.get("job") or "*"), int(body.get("after_epoch") or 0))
            return self.faults.settings()

        def state(body: Mapping[str, Any]) -> Any:
            return {**self.backend.counts(), "faults": self.faults.settings()}

        return {
            name: grpc.unary_unary_rpc_method_handler(json_method(fn))
            for name, fn in (
                ("Configure", configure),
                ("Reset", reset),
                ("Preempt", preempt),
                ("State", state),
            )
        }

    # -- public ----------------------------------------------------------------

    def preempt(self, job: str = "*", after_epoch: int = 0) -> None:
        """Preempt SPOT ``job`` (id, name, or ``*``: the next) once it logged ``after_epoch``."""
        self.backend.preempt(job, after_epoch)

    def counts(self) -> dict[str, Any]:
        return self.backend.counts()

    def stop(self) -> None:
        """Stop serving, every job and every model server it started."""
        if self._stopped:
            return
        self._stopped = True
        self._server.stop(grace=0)
        self.backend.stop()
        self.storage.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> VertexEmulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start(
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    workdir: str | os.PathLike[str] | None = None,
    **options: Any,
) -> VertexEmulator:
    """Start the emulator (entry point ``cloudnn.emulators: gcp``)."""
    return VertexEmulator(host=host, port=port, workdir=workdir, **options)


class EmulatorControl:
    """Drive a running emulator's faults from another process (gRPC, JSON).

    ``EmulatorControl(env)`` takes the emulator's printed environment (or its
    ``http://127.0.0.1:PORT`` URL)::

        control.configure(throttle_fraction=0.3, seed=1)
        control.configure(fail_create={"CreateCustomJob": 1})
        control.preempt(job="*", after_epoch=2)
        control.reset(); control.state()
    """

    def __init__(self, target: Mapping[str, str] | str) -> None:
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
        import grpc

        url = target if isinstance(target, str) else target["CLOUDNN_GCP_API_ENDPOINT"]
        self._channel = grpc.insecure_channel(url.removeprefix("http://"))

    def _call(self, method: str, body: Mapping[str, Any]) -> Any:
        from cloudnn_gcp.testing._grpc import CONTROL_SERVICE

        stub = self._channel.unary_unary(f"/{CONTROL_SERVICE}/{method}")
        return json.loads(stub(json.dumps(dict(body)).encode(), timeout=30))

    def configure(self, **settings: Any) -> Any:
        return self._call("Configure", settings)

    def reset(self) -> Any:
        return self._call("Reset", {})

    def preempt(self, job: str = "*", after_epoch: int = 0) -> Any:
        return self._call("Preempt", {"job": job, "after_epoch": after_epoch})

    def state(self) -> Any:
        return self._call("State", {})

    def close(self) -> None:
        self._channel.close()
