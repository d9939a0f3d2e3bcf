"""cloudnn model served by a Vertex AI custom prediction container.

The container's command: ``python server.py``. It follows Vertex AI's
custom-container contract:

- listens on ``0.0.0.0:$AIP_HTTP_PORT`` (default 8080);
- ``GET $AIP_HEALTH_ROUTE`` answers 200 once the model is loaded (it is
  loaded before the port opens);
- ``POST $AIP_PREDICT_ROUTE`` takes ``{"instances": [...], "parameters": ...}``
  and answers ``{"predictions": [...]}`` (``text/csv`` bodies work too);
- the model comes from ``$AIP_STORAGE_URI``: a local path, or ``gs://...``,
  read through the Cloud Storage FUSE path ``/gcs/<bucket>/...`` when mounted
  and downloaded with google-cloud-storage otherwise.

Bad input answers 400/413/415/422 with ``{"error": "...", "status": N}``.
``cloudnn.runtime.serve.Handler`` does the work, as in every cloudnn serving
path. Other settings: ``CLOUDNN_MODEL_DIR`` (used when AIP_STORAGE_URI is
unset), ``CLOUDNN_RUNTIME``, ``CLOUDNN_DEVICE``, ``CLOUDNN_HOST``,
``CLOUDNN_MAX_INSTANCES``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

MODEL_META = "cloudnn_model.json"


def _ensure_cloudnn() -> None:
    # the image may ship cloudnn's source beside this file
    here = Path(__file__).resolve().parent
    for folder in (here, here.parent):
        if (folder / "cloudnn" / "__init__.py").is_file() and str(
            folder
        ) not in sys.path:
            sys.path.insert(0, str(folder))


def find_model_root(base: str | os.PathLike[str]) -> Path:
    """The folder under ``base`` that holds ``cloudnn_model.json`` (shallowest)."""
    root = Path(base)
    if (root / MODEL_META).is_file():
        return root
    found = sorted(root.rglob(MODEL_META), key=lambda p: (len(p.parts), str(p)))
    if not found:
        raise FileNotFoundError(f"no {MODEL_META} under {root}")
    return found[0].parent


def _download_gcs(uri: str) -> Path:
    # Vertex copies the artifacts to a bucket of its own and hands over its
    # gs:// URI; prediction containers do not always have the FUSE mount
    try:
        from google.cloud import storage
    except ImportError as exc:
        raise RuntimeError(
            f"{uri} is not mounted under /gcs and google-cloud-storage is not "
            "installed; pip install google-cloud-storage"
        ) from exc
    bucket_name, _, prefix = uri[len("gs://") :].partition("/")
    target = Path(tempfile.mkdtemp(prefix="cloudnn-model-"))
    bucket = storage.Client().bucket(bucket_name)
    for blob in bucket.list_blobs(prefix=prefix.rstrip("/") + "/" if prefix else ""):
        if blob.name.endswith("/"):
            continue
        dest = (
            target / Path(blob.name).relative_to(prefix)
            if prefix
            else target / blob.name
        )
        dest.parent.mkdir(parents=True, exist_ok=True)
        blob.download_to_filename(str(dest))
    return target


def model_location(environ: dict[str, str] | None = None) -> Path:
    """Where the model directory is, from AIP_STORAGE_URI or CLOUDNN_MODEL_DIR."""
    env = os.environ if environ is None else environ
    uri = env.get("AIP_STORAGE_URI") or env.get("CLOUDNN_MODEL_DIR") or "model"
    if uri.startswith("gs://"):
        # Cloud Storage FUSE mounts buckets at /gcs (CLOUDNN_GCSFUSE_ROOT moves
        # it, for a local stand-in of the mount)
        root = os.environ.get("CLOUDNN_GCSFUSE_ROOT") or "/gcs"
        fuse = Path(root.rstrip("/") + "/" + uri[len("gs://") :])
        return find_model_root(fuse if fuse.is_dir() else _download_gcs(uri))
    return find_model_root(uri)


def create_app(model_dir: str | os.PathLike[str] | None = None) -> FastAPI:
    """The FastAPI app; loads the model now so health means ready."""
    _ensure_cloudnn()
    from cloudnn.runtime.serve import Handler, InputError

    max_instances = os.environ.get("CLOUDNN_MAX_INSTANCES")
    handler = Handler.from_model_dir(
        Path(model_dir) if model_dir is not None else model_location(),
        runtime=os.environ.get("CLOUDNN_RUNTIME", "torch"),  # type: ignore[arg-type]
        device=os.environ.get("CLOUDNN_DEVICE", "auto"),
        max_instances=int(max_instances) if max_instances else None,
    )
    health_route = os.environ.get("AIP_HEALTH_ROUTE", "/health")
    predict_route = os.environ.get("AIP_PREDICT_ROUTE", "/predict")
    app = FastAPI(title=f"cloudnn: {handler.info().get('name')}", docs_url=None)
    app.state.handler = handler

    @app.get(health_route)
    def health() -> dict[str, Any]:
        return {"status": "ok"}

    @app.get("/info")
    def info() -> dict[str, Any]:
        return handler.info()  # type: ignore[no-any-return]

    @app.post(predict_route)
    async def predict(request: Request) -> JSONResponse:
        body = await request.body()
        content_type = request.headers.get("content-type", "application/json")
        try:
            # the forward pass runs off the event loop, so health checks and
            # other requests are answered meanwhile
            result = await run_in_threadpool(handler.handle, body, content_type)
        except InputError as exc:
            return JSONResponse(exc.to_dict(), status_code=exc.status)
        return JSONResponse(result)

    return app


def main() -> None:
    import uvicorn

    port = int(os.environ.get("AIP_HTTP_PORT", "8080"))
    # Vertex AI sends traffic to 0.0.0.0:<port>; CLOUDNN_HOST narrows it locally
    host = os.environ.get("CLOUDNN_HOST", "0.0.0.0")
    uvicorn.run(create_app(), host=host, port=port, log_level="warning")


if __name__ == "__main__":
    main()
