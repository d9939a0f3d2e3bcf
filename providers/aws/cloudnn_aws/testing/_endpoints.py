"""Endpoints that really serve: the model's own ``inference.py`` behind InvokeEndpoint.

``CreateEndpoint`` leaves the endpoint ``Creating`` while an
:class:`EndpointRun` downloads the model's ``ModelDataUrl`` from the emulated
S3, unpacks it as the container would (``/opt/ml/model``), and starts
:mod:`cloudnn_aws.testing._serving` -- the inference toolkit's contract, run
as a local process -- with the model's ``PrimaryContainer.Environment``.
Once ``/ping`` answers the endpoint is ``InService``; if the server dies
first it is ``Failed`` with the reason SageMaker gives plus the server's
last lines. Server output goes to CloudWatch Logs
``/aws/sagemaker/Endpoints/<name>``, stream ``AllTraffic/<instance>``.
One server stands for all of a variant's instances.
"""

from __future__ import annotations

import http.client
import shutil
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudnn.testing.emulation import (
    ProcessSpec,
    ServerProcess,
    free_port,
    unpack_archive,
)

if TYPE_CHECKING:
    from cloudnn_aws.testing import SageMakerEmulator

__all__ = ["EndpointRun"]

#: seconds a model server may take to load the model and answer /ping
READY_TIMEOUT = 180.0


class EndpointRun(threading.Thread):
    """Brings one endpoint from Creating to InService (or Failed)."""

    def __init__(self, emulator: SageMakerEmulator, region: str, name: str) -> None:
        super().__init__(name=f"endpoint-{name}", daemon=True)
        self.emu = emulator
        self.region = region
        self.endpoint_name = name
        self.folder = emulator.workdir / "endpoints" / name
        self.server: ServerProcess | None = None
        self.variant = "AllTraffic"
        self.stopped = threading.Event()

    @property
    def endpoint(self) -> Any:
        return self.emu.sagemaker_backend(self.region).endpoints[self.endpoint_name]

    def _set(self, status: str, reason: str | None = None) -> None:
        from moto.core.utils import utcnow

        endpoint = self.emu.sagemaker_backend(self.region).endpoints.get(
            self.endpoint_name
        )
        if endpoint is None or self.stopped.is_set():
            return
        endpoint.endpoint_status = status
        endpoint.failure_reason = reason
        endpoint.last_modified_time = utcnow()

    def begin(self) -> None:
        self._set("Creating")
        self.start()

    def run(self) -> None:
        try:
            self._run()
        except Exception as exc:  # the endpoint fails; the emulator keeps serving
            self._set("Failed", f"The emulator could not start the endpoint: {exc!r}")

    def _run(self) -> None:
        backend = self.emu.sagemaker_backend(self.region)
        config = backend.endpoint_configs[self.endpoint.endpoint_config_name]
        variant = config.production_variants[0]
        self.variant = str(variant.get("VariantName", "AllTraffic"))
        model = backend._models[variant["ModelName"]]
        container = model.primary_container or (model.containers or [{}])[0]
        url = str(container.get("ModelDataUrl", ""))
        if self.folder.exists():
            shutil.rmtree(self.folder)
        model_dir = self.folder / "model"
        model_dir.mkdir(parents=True)
        archive = self.folder / "model.tar.gz"
        try:
            bucket, _, key = url[len("s3://") :].partition("/")
            self.emu.s3.download_file(bucket, key, str(archive))
            unpack_archive(archive, model_dir)
        except Exception as exc:
            self._set(
                "Failed",
                f"Failed to extract model data archive from URL {url!r}: {exc}",
            )
            return
        from cloudnn_aws.testing._training import container_env

        env = container_env()
        env.update(
            {str(k): str(v) for k, v in (container.get("Environment") or {}).items()}
        )
        env["CLOUDNN_DEVICE"] = "cpu"  # accelerators are emulated on the CPU
        env["CUDA_VISIBLE_DEVICES"] = ""
        port = free_port()
        stream = f"{self.endpoint_name}/{self.variant}/i-emulated0001"
        self.server = ServerProcess(
            ProcessSpec(
                # by path, not -m: importing cloudnn_aws would import the
                # installed cloudnn before the adapter imports the model's own
                argv=[
                    sys.executable,
                    str(Path(__file__).with_name("_serving.py")),
                    "--model-dir",
                    str(model_dir),
                    "--port",
                    str(port),
                ],
                cwd=self.folder,
                env=env,
                stream=stream,
                inherit_env=False,
            ),
            self.emu.endpoint_logs,
            port=port,
            health_path="/ping",
        )
        if self.stopped.is_set():
            return
        self.server.start()
        try:
            self.server.wait_ready(timeout=READY_TIMEOUT)
        except RuntimeError as exc:
            self._set(
                "Failed",
                f"The primary container for production variant {self.variant} did "
                f"not pass the ping health check. Please check CloudWatch logs for "
                f"this endpoint. ({str(exc)[-600:]})",
            )
            self.server.terminate(grace=5)
            return
        self._set("InService")

    def invoke(
        self, body: bytes, content_type: str, accept: str
    ) -> tuple[int, bytes, str]:
        """POST to the model server: (status, body, content type)."""
        server = self.server
        if server is None or not server.running:
            return (
                503,
                b'{"error": "the model server is not running"}',
                "application/json",
            )
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        try:
            conn.request(
                "POST",
                "/invocations",
                body=body,
                headers={"Content-Type": content_type, "Accept": accept},
            )
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, data, resp.getheader("Content-Type") or accept
        finally:
            conn.close()

    def stop(self) -> None:
        """DeleteEndpoint: stop the server and forget the files."""
        self.stopped.set()
        if self.server is not None:
            self.server.terminate(grace=10)
        shutil.rmtree(self.folder, ignore_errors=True)

    @property
    def model_dir(self) -> Path:
        return self.folder / "model"
