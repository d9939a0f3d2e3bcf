"""The one inference handler: local server, SageMaker, Azure ML and Vertex AI.

Every serving path (``cloudnn serve``, SageMaker ``inference.py``, Azure ML
``score.py``, the Vertex AI container) wraps :class:`Handler`, so a request
gets the same parsing, validation and JSON answer everywhere::

    request   {"instances": [...]} | [...] | {"inputs": [...]}    application/json
              one instance per line                               text/csv
    response  {"predictions": [{"label": 3, "probabilities": {"0": 0.01, ...}}]}
              {"predictions": [{"value": 2.5}]}     regression ([...] if multi-output)

Bad input never escapes as anything but :class:`InputError`, whose ``status``
is the HTTP code to answer with: 400 malformed request, 413 too many
instances, 415 unsupported content type, 422 well-formed but wrong
shape/type/value (an instance nested differently from the model's input is
refused even when it holds as many numbers).

Inputs are treated as in training: a blank tabular value (JSON ``null``, an
empty CSV cell) is imputed with the training mean, as a blank cell of the
training file was; NaN and infinity are refused. A CSV body with a header row
is lined up with the training columns by name.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from cloudnn.errors import CloudnnError, NotFoundError
from cloudnn.runtime.artifacts import load_model_dir

__all__ = ["BATCH_SIZE", "Handler", "InputError", "Runtime"]

Runtime = Literal["torch", "torchscript", "onnx"]

#: rows per forward pass; equal to the trainer's evaluation batch so served
#: outputs are bit-identical to the run's metrics
BATCH_SIZE = 1024
_FLOAT32_MAX = float(np.finfo(np.float32).max)
#: deepest nesting an instance may have: (C, H, W) images are 3 levels
_MAX_DEPTH = 4
_JSON_TYPES = ("application/json", "text/json", "")
_JSONLINES_TYPES = (
    "application/jsonlines",
    "application/x-jsonlines",
    "application/jsonl",
)
_CSV_TYPES = ("text/csv", "application/csv", "text/plain")


class InputError(ValueError):
    """A request the model cannot answer; ``status`` is the HTTP code to send."""

    def __init__(self, message: str, *, status: int = 422) -> None:
        # one line: it goes straight into a JSON error body and a log line
        message = " ".join(str(message).split()) or "invalid input"
        super().__init__(message)
        self.message = message
        self.status = status

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.message, "status": self.status}


def _plain(value: Any) -> Any:
    """JSON-safe copy of a label or number (numpy scalars to Python)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


class Handler:
    """Load a model directory once; turn requests into predictions.

    Thread-safe for concurrent ``predict`` calls (torch modules in eval mode
    and onnxruntime sessions both allow concurrent forward passes).
    """

    def __init__(
        self,
        *,
        pre: Any,
        meta: dict[str, Any],
        model_dir: Path,
        runtime: Runtime,
        device: str,
        model: torch.nn.Module | None = None,
        session: Any = None,
        max_instances: int | None = None,
    ) -> None:
        if (model is None) == (session is None):
            raise ValueError("give exactly one of model= or session=")
        self.pre = pre
        self.meta = meta
        self.model_dir = model_dir
        self.runtime = runtime
        self.device = device
        self.model = model
        self.session = session
        self.max_instances = max_instances
        self.task: str = str(meta["task"])
        self.input_shape: tuple[int, ...] = tuple(
            int(d) for d in meta.get("input_shape") or pre.input_shape
        )
        self.input_dtype = np.dtype(meta.get("input_dtype") or "float32")
        self.is_text = getattr(pre, "kind", None) == "text"
        # blank values are imputed with the training means (tabular only)
        self.imputes = getattr(pre, "kind", None) == "tabular" and bool(
            getattr(pre, "fill", None)
        )
        classes = getattr(pre, "classes", None)
        if classes is None:
            classes = meta.get("classes")
        self.classes: list[Any] | None = (
            [_plain(c) for c in classes] if classes is not None else None
        )
        self._input_name = session.get_inputs()[0].name if session is not None else ""

    # ------------------------------------------------------------ loading

    @classmethod
    def from_model_dir(
        cls,
        path: str | os.PathLike[str],
        *,
        runtime: Runtime = "torch",
        device: str = "cpu",
        max_instances: int | None = None,
    ) -> Handler:
        """Load ``path`` (a model directory) for serving with ``runtime``.

        ``device``: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"`` (a GPU when
        one is visible). ``runtime="onnx"`` exports ``model.onnx`` on first use
        (into a cache folder when the model directory is read-only).
        """
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device.startswith("cuda") and not torch.cuda.is_available():
            raise CloudnnError(
                f"device {device!r} asked for, but no CUDA GPU is visible",
                hint="serve with device 'auto' or 'cpu'",
            )
        root = Path(path)
        if runtime == "onnx":
            return cls._from_onnx(root, device=device, max_instances=max_instances)
        if runtime not in ("torch", "torchscript"):
            raise ValueError(f"unknown runtime {runtime!r}: torch|torchscript|onnx")
        loaded = load_model_dir(root, prefer=runtime, device=device)
        if runtime == "torchscript" and not isinstance(
            loaded.model, torch.jit.ScriptModule
        ):
            reason = loaded.meta.get("torchscript_error") or "model.ts is missing"
            raise NotFoundError(
                f"{root} has no TorchScript model ({reason})",
                hint="serve with runtime 'torch', or export it first: "
                "`cloudnn export <run> --format torchscript`",
            )
        return cls(
            pre=loaded.pre,
            meta=loaded.meta,
            model_dir=root,
            runtime=runtime,
            device=device,
            model=loaded.model,
            max_instances=max_instances,
        )

    @classmethod
    def _from_onnx(
        cls, root: Path, *, device: str, max_instances: int | None
    ) -> Handler:
        from cloudnn.runtime.data import Preprocessor
        from cloudnn.runtime.export import import_onnxruntime

        ort = import_onnxruntime()
        meta_file = root / "cloudnn_model.json"
        if not meta_file.is_file():
            raise NotFoundError(
                f"{root} is not a cloudnn model directory (no cloudnn_model.json)",
                hint="point at a run's model/ folder",
            )
        meta = json.loads(meta_file.read_text())
        onnx_path = _onnx_file(root)
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            providers.insert(0, "CUDAExecutionProvider")
        available = set(ort.get_available_providers())
        session = ort.InferenceSession(
            str(onnx_path), providers=[p for p in providers if p in available]
        )
        used = "cuda" if "CUDAExecutionProvider" in session.get_providers() else "cpu"
        return cls(
            pre=Preprocessor.load(root),
            meta=meta,
            model_dir=root,
            runtime="onnx",
            device=used,
            session=session,
            max_instances=max_instances,
        )

    # ------------------------------------------------------------- public

    def info(self) -> dict[str, Any]:
        """What a client needs to know to call the model (JSON-safe)."""
        model_cfg = self.meta.get("model") or {}
        features = getattr(self.pre, "feature_names", None)
        return {
            "name": self.meta.get("name"),
            "run_id": self.meta.get("run_id"),
            "task": self.task,
            "model_type": model_cfg.get("type", "module"),
            "classes": self.classes,
            "input_shape": list(self.input_shape),
            "input_dtype": self.input_dtype.name,
            "input_kind": "text" if self.is_text else "numeric",
            "features": list(features) if isinstance(features, list | tuple) else None,
            "num_outputs": self.meta.get("num_outputs"),
            "runtime": self.runtime,
            "device": self.device,
        }

    def parse_request(
        self, body: bytes | str | dict[str, Any] | list[Any], content_type: str = ""
    ) -> list[Any]:
        """The instances of a request body; InputError(400/415/422) when unusable."""
        media = _media_type(content_type)
        if isinstance(body, dict | list):
            return _instances_from_json(body)
        if isinstance(body, bytes | bytearray | memoryview):
            try:
                text = bytes(body).decode("utf-8-sig")
            except UnicodeDecodeError:
                raise InputError("request body is not UTF-8 text", status=400) from None
        elif isinstance(body, str):
            text = body
        else:
            raise InputError(
                f"unsupported request body of type {type(body).__name__}", status=400
            )
        if media in _JSONLINES_TYPES:
            return self._parse_jsonlines(text)
        if media in _JSON_TYPES or media.endswith("+json"):
            try:
                data = json.loads(text)
            except RecursionError:
                raise InputError("JSON nested too deeply", status=400) from None
            except ValueError as exc:
                raise InputError(f"malformed JSON: {exc}", status=400) from None
            return _instances_from_json(data)
        if media in _CSV_TYPES:
            return self._parse_csv(text)
        raise InputError(
            f"unsupported content type {content_type!r}; "
            "send application/json or text/csv",
            status=415,
        )

    def preprocess(self, instances: Any) -> np.ndarray:
        """Validated instances -> the model's input array ``(N, *input_shape)``."""
        if not isinstance(instances, list | tuple):
            raise InputError(
                f"instances must be a list, got {type(instances).__name__}", status=400
            )
        if not instances:
            raise InputError("instances is empty", status=400)
        if self.max_instances is not None and len(instances) > self.max_instances:
            raise InputError(
                f"{len(instances)} instances exceed the limit of {self.max_instances}",
                status=413,
            )
        for i, instance in enumerate(instances):
            problem = _check_instance(instance, text=self.is_text, blanks=self.imputes)
            if problem:
                raise InputError(f"instance {i}: {problem}")
        try:
            # overflow to inf is reported below as a 422, not as a warning
            with np.errstate(over="ignore", invalid="ignore"):
                x = self.pre.transform(list(instances))
        except (ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
            raise InputError(str(exc) or type(exc).__name__) from None
        x = np.asarray(x)
        # one flat feature row is one instance (the preprocessor allows it)
        flat = not self.is_text and all(
            _is_scalar(v) or (v is None and self.imputes) for v in instances
        )
        rows = 1 if flat else len(instances)
        if tuple(x.shape) != (rows, *self.input_shape):
            raise InputError(
                f"instances have shape {tuple(x.shape)[1:]}, the model expects "
                f"{self.input_shape}"
            )
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise InputError(
                "instances hold NaN, infinite or out-of-range numbers (float32)"
            )
        return np.ascontiguousarray(x, dtype=self.input_dtype)

    def predict_arrays(self, x: np.ndarray) -> np.ndarray:
        """Raw model outputs (logits or regression values) for preprocessed ``x``."""
        x = np.ascontiguousarray(x, dtype=self.input_dtype)
        outs: list[np.ndarray] = []
        if self.session is not None:
            for i in range(0, len(x), BATCH_SIZE):
                (out,) = self.session.run(
                    None, {self._input_name: x[i : i + BATCH_SIZE]}
                )
                outs.append(np.asarray(out, dtype=np.float32))
        else:
            assert self.model is not None
            with torch.inference_mode():
                for i in range(0, len(x), BATCH_SIZE):
                    xb = torch.from_numpy(x[i : i + BATCH_SIZE]).to(self.device)
                    outs.append(self.model(xb).float().cpu().numpy())
        if not outs:
            return np.zeros((0, int(self.meta.get("num_outputs") or 1)), np.float32)
        out = np.concatenate(outs)
        return out[:, None] if out.ndim == 1 else out

    def decode_outputs(self, outputs: np.ndarray) -> list[dict[str, Any]]:
        """Raw outputs -> one JSON-safe prediction per row.

        A row with non-finite outputs decodes with ``null`` numbers; ``predict``
        rejects such requests (422) before this point, batchers should check
        ``np.isfinite(outputs).all(axis=1)`` per request.
        """
        out = np.asarray(outputs, dtype=np.float64)
        if out.ndim == 1:
            out = out[:, None]
        if self.task == "classification":
            with np.errstate(invalid="ignore", over="ignore"):  # inf rows -> null
                proba = np.exp(out - out.max(axis=1, keepdims=True))
                proba /= proba.sum(axis=1, keepdims=True)
            labels = [_plain(v) for v in self.pre.decode(out.argmax(axis=1).tolist())]
            names = [str(c) for c in self.classes] if self.classes is not None else None
            if names is None or len(names) != out.shape[1]:
                names = [str(i) for i in range(out.shape[1])]
            return [
                {
                    "label": label,
                    "probabilities": {
                        n: _finite(p) for n, p in zip(names, row.tolist(), strict=True)
                    },
                }
                for label, row in zip(labels, proba, strict=True)
            ]
        # regression targets are trained unscaled: outputs are the values
        if out.shape[1] == 1:
            return [{"value": _finite(v)} for v in out[:, 0].tolist()]
        return [{"value": [_finite(v) for v in row]} for row in out.tolist()]

    def predict(self, instances: Any) -> list[dict[str, Any]]:
        """Instances (as parsed from a request) -> predictions."""
        out = self.predict_arrays(self.preprocess(instances))
        bad = np.flatnonzero(~np.isfinite(out).all(axis=1))
        if len(bad):
            # finite inputs far outside the training range can overflow float32
            raise InputError(
                f"instance {int(bad[0])}: the model's output is not finite "
                "(inputs far outside the training data's range?)"
            )
        return self.decode_outputs(out)

    def handle(
        self, body: bytes | str | dict[str, Any] | list[Any], content_type: str = ""
    ) -> dict[str, Any]:
        """A whole request: body -> ``{"predictions": [...]}`` (raises InputError)."""
        return {"predictions": self.predict(self.parse_request(body, content_type))}

    # ------------------------------------------------------------ helpers

    def _parse_csv(self, text: str) -> list[Any]:
        if "\x00" in text:
            raise InputError("malformed CSV: NUL byte", status=400)
        lines = [ln for ln in text.splitlines() if ln.strip()]
        if not lines:
            raise InputError("CSV body has no rows", status=400)
        if self.is_text:
            # one document per line, verbatim: commas belong to the text
            return [_unquote(ln) for ln in lines]
        try:
            rows = [r for r in csv.reader(io.StringIO("\n".join(lines))) if r]
        except csv.Error as exc:
            raise InputError(f"malformed CSV: {exc}", status=400) from None
        header: list[str] | None = None
        first = rows[0] if rows else []
        if any(c.strip() for c in first) and not any(_is_number(c) for c in first):
            header, rows = first, rows[1:]  # a header row
            if not rows:
                raise InputError("CSV body has a header but no rows", status=400)
        parsed: list[Any] = []
        for i, row in enumerate(rows):
            values: list[Any] = []
            for c in row:
                if not c.strip() and self.imputes:
                    values.append(None)  # a blank cell: imputed as in training
                    continue
                try:
                    values.append(float(c))
                except ValueError:
                    raise InputError(
                        f"CSV row {i}: {c[:40]!r} is not a number"
                    ) from None
            parsed.append(values)
        if header is not None:
            align = getattr(self.pre, "align_columns", None)
            if align is not None:
                try:
                    parsed = align(header, parsed)
                except ValueError as exc:
                    raise InputError(f"CSV body: {exc}") from None
        return parsed

    def _parse_jsonlines(self, text: str) -> list[Any]:
        out: list[Any] = []
        for n, line in enumerate(text.splitlines()):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except (ValueError, RecursionError):
                raise InputError(
                    f"malformed JSON on line {n + 1}", status=400
                ) from None
        if not out:
            raise InputError("request body has no instances", status=400)
        return out


def _instances_from_json(data: Any) -> list[Any]:
    if isinstance(data, dict):
        for key in ("instances", "inputs", "data"):
            if key in data:
                data = data[key]
                break
        else:
            raise InputError(
                'JSON object has no "instances" list '
                '(send {"instances": [...]} or a bare list)',
                status=400,
            )
    if not isinstance(data, list):
        raise InputError(
            f"instances must be a list, got {type(data).__name__}", status=400
        )
    if not data:
        raise InputError("instances is empty", status=400)
    return data


def _check_instance(instance: Any, *, text: bool, blanks: bool = False) -> str:
    """Why ``instance`` cannot be an input ('' when it can); no recursion limit hit.

    ``blanks``: a ``null`` value is a missing one, imputed by the preprocessor.
    """
    if text:
        if isinstance(instance, str):
            return ""
        if isinstance(instance, dict) and all(isinstance(k, str) for k in instance):
            return ""  # {"<text column>": "..."}: the preprocessor picks the column
        return f"expected a text string, got {_type_name(instance)}"
    if isinstance(instance, dict):
        stack: list[tuple[Any, int]] = [(v, 1) for v in instance.values()]
        if not all(isinstance(k, str) for k in instance):
            return "feature names must be strings"
    elif isinstance(instance, list | tuple) or _scalar_problem(instance) == "":
        stack = [(instance, 0)]
    else:
        return f"expected a list of numbers, got {_type_name(instance)}"
    while stack:
        value, depth = stack.pop()
        if isinstance(value, list | tuple):
            if depth >= _MAX_DEPTH:
                return "nested too deeply"
            stack.extend((v, depth + 1) for v in value)
            continue
        if value is None and blanks and depth <= 1:
            continue  # a missing feature value: imputed with the training mean
        problem = _scalar_problem(value)
        if problem:
            return problem
    return ""


def _scalar_problem(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return f"expected a number, got {_type_name(value)}"
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            return f"{value} is not a finite number"
        if abs(value) > _FLOAT32_MAX:
            return "a number is out of range"
        return ""
    if isinstance(value, str):
        # categorical values, or numbers sent as text: the preprocessor decides
        return ""
    return f"expected a number, got {_type_name(value)}"


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _is_scalar(value: Any) -> bool:
    return isinstance(value, int | float | str) and not isinstance(value, bool)


def _type_name(value: Any) -> str:
    return {type(None): "null", bool: "a boolean", dict: "an object"}.get(
        type(value), type(value).__name__
    )


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _unquote(line: str) -> str:
    line = line.rstrip("\r")
    if len(line) >= 2 and line[0] == line[-1] == '"':
        return line[1:-1].replace('""', '"')
    return line


_EXPORT_LOCK = threading.Lock()


def _onnx_file(root: Path) -> Path:
    """``model.onnx`` of ``root``, exported on first use (cached if read-only)."""
    target = root / "model.onnx"
    if target.is_file():
        return target
    from cloudnn.runtime.export import export_model

    with _EXPORT_LOCK:
        if target.is_file():
            return target
        try:
            return Path(export_model(root, "onnx")["path"])
        except PermissionError:
            pass
        except OSError as exc:  # read-only mounts (Azure ML model mounts)
            if exc.errno not in (13, 30):
                raise
        key = hashlib.sha256(f"{root.resolve()}|{_mtime(root)}".encode()).hexdigest()
        cached = Path(tempfile.gettempdir()) / "cloudnn-onnx" / key[:16] / "model.onnx"
        if not cached.is_file():
            cached.parent.mkdir(parents=True, exist_ok=True)
            export_model(root, "onnx", output=cached)
        return cached


def _mtime(root: Path) -> float:
    files: Sequence[Path] = [root / "model.pt", root / "model.ts"]
    return max((p.stat().st_mtime for p in files if p.is_file()), default=0.0)
