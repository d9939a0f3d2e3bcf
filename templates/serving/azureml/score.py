"""cloudnn model served by an Azure ML managed online endpoint.

The deployment's ``code_configuration.scoring_script``. The Azure ML
inference server calls ``init()`` once per worker and ``run(raw_data)`` per
request with the request body; ``cloudnn.runtime.serve.Handler`` does the
work, as in every cloudnn serving path.

Request: ``{"instances": [...]}`` (also ``{"inputs": ...}``, ``{"data": ...}``
or a bare list). Response: ``{"predictions": [...]}``.

Errors: bad input is answered with its real HTTP status (400/413/422) and the
body ``{"error": "...", "status": N}`` through ``AMLResponse``. Azure's
samples return an error dict with status 200, which makes failed requests
look successful to clients, retries and endpoint metrics; a non-200 status is
reported by the endpoint as 424 with ``ms-azureml-model-error-statuscode``
naming ours. Where the inference server package is absent (local tests) the
same dict is returned instead. Anything else raises, which the server turns
into a 500.

Environment: ``AZUREML_MODEL_DIR`` (set by Azure; the model may sit in a
sub-folder of it), ``CLOUDNN_RUNTIME`` (torch | torchscript | onnx),
``CLOUDNN_DEVICE`` (auto | cpu | cuda).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

MODEL_META = "cloudnn_model.json"

handler: Any = None


def _ensure_cloudnn() -> None:
    # the bundle may ship cloudnn's source beside this file
    here = Path(__file__).resolve().parent
    for folder in (here, here.parent):
        if (folder / "cloudnn" / "__init__.py").is_file() and str(
            folder
        ) not in sys.path:
            sys.path.insert(0, str(folder))


def find_model_root(base: str | os.PathLike[str]) -> Path:
    """The folder under ``base`` that holds ``cloudnn_model.json`` (shallowest).

    ``AZUREML_MODEL_DIR`` points at ``.../<model>/<version>``, and a model
    registered from a folder keeps that folder's name below it.
    """
    root = Path(base)
    if (root / MODEL_META).is_file():
        return root
    found = sorted(root.rglob(MODEL_META), key=lambda p: (len(p.parts), str(p)))
    if not found:
        raise FileNotFoundError(f"no {MODEL_META} under {root}")
    return found[0].parent


def init() -> None:
    """Load the model once per worker."""
    global handler
    _ensure_cloudnn()
    from cloudnn.runtime.serve import Handler

    base = os.environ.get("AZUREML_MODEL_DIR")
    if not base:
        raise RuntimeError("AZUREML_MODEL_DIR is not set")
    handler = Handler.from_model_dir(
        find_model_root(base),
        runtime=os.environ.get("CLOUDNN_RUNTIME", "torch"),  # type: ignore[arg-type]
        device=os.environ.get("CLOUDNN_DEVICE", "auto"),
    )


def _error_response(message: str, status: int) -> Any:
    body = {"error": message, "status": status}
    try:
        from azureml_inference_server_http.api.aml_response import AMLResponse
    except ImportError:
        try:
            from azureml.contrib.services.aml_response import AMLResponse
        except ImportError:  # outside Azure's inference server
            return body
    return AMLResponse(json.dumps(body), status, json_str=True)


def run(raw_data: str | bytes | dict[str, Any] | list[Any]) -> Any:
    """Score one request body: ``{"predictions": [...]}`` or an error."""
    from cloudnn.runtime.serve import InputError

    if handler is None:
        raise RuntimeError("init() was not called")
    try:
        return handler.handle(raw_data, "application/json")
    except InputError as exc:
        return _error_response(exc.message, exc.status)
