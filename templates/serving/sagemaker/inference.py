"""cloudnn model served by the SageMaker PyTorch inference toolkit.

Copied into the model archive as ``code/inference.py``. The toolkit calls
``model_fn`` once per worker, then ``input_fn -> predict_fn -> output_fn`` per
request; all the work is done by ``cloudnn.runtime.serve.Handler``, the same
handler every cloudnn serving path uses.

Request: ``application/json`` (``{"instances": [...]}``, ``{"inputs": [...]}``
or a bare list) or ``text/csv`` (one instance per line). Response (``Accept``
``application/json``, the default): ``{"predictions": [...]}``; ``text/csv``
gives one label/value per line. Bad input answers 400/415/422 with a JSON
error, through the toolkit's ``GenericInferenceToolkitError``.

Environment: ``CLOUDNN_RUNTIME`` (torch | torchscript | onnx, default torch),
``CLOUDNN_DEVICE`` (auto | cpu | cuda, default auto).
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

MODEL_META = "cloudnn_model.json"
JSON = "application/json"
CSV = "text/csv"


def _ensure_cloudnn() -> None:
    # the bundle may ship cloudnn's source beside this file (code/cloudnn)
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


def _error(exc: Any) -> Exception:
    """An InputError as the toolkit's error type, so the client gets its status."""
    body = json.dumps({"error": exc.message, "status": exc.status})
    try:
        from sagemaker_inference.errors import GenericInferenceToolkitError
    except ImportError:  # outside the serving container (tests, local runs)
        return exc  # type: ignore[no-any-return]
    return GenericInferenceToolkitError(exc.status, body, exc.message)


def model_fn(model_dir: str, context: Any = None) -> Any:
    """Load the cloudnn model directory unpacked from ``model.tar.gz``."""
    _ensure_cloudnn()
    from cloudnn.runtime.serve import Handler

    return Handler.from_model_dir(
        find_model_root(model_dir),
        runtime=os.environ.get("CLOUDNN_RUNTIME", "torch"),  # type: ignore[arg-type]
        device=os.environ.get("CLOUDNN_DEVICE", "auto"),
    )


def input_fn(
    request_body: bytes | str, request_content_type: str, context: Any = None
) -> dict[str, Any]:
    """Keep the body with its content type: parsing needs the model.

    ``input_fn`` does not see the model, yet CSV means one text per line for
    a text model and numbers for the others, so ``predict_fn`` parses.
    """
    return {"body": request_body, "content_type": request_content_type or JSON}


def predict_fn(
    input_data: dict[str, Any], model: Any, context: Any = None
) -> list[Any]:
    """Parse, validate and predict: a list of prediction objects."""
    from cloudnn.runtime.serve import InputError

    try:
        instances = model.parse_request(input_data["body"], input_data["content_type"])
        return model.predict(instances)  # type: ignore[no-any-return]
    except InputError as exc:
        raise _error(exc) from None


def output_fn(prediction: list[Any], accept: str, context: Any = None) -> str:
    """Serialise for ``accept``: JSON ``{"predictions": [...]}`` or CSV lines."""
    from cloudnn.runtime.serve import InputError

    media = (accept or JSON).split(";", 1)[0].strip().lower()
    if media in (JSON, "*/*", "application/*", ""):
        return json.dumps({"predictions": prediction})
    if media == CSV:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        for p in prediction:
            value = p["label"] if "label" in p else p["value"]
            writer.writerow(value if isinstance(value, list) else [value])
        return out.getvalue()
    raise _error(
        InputError(f"cannot answer with {accept!r}; accept {JSON} or {CSV}", status=406)
    )
