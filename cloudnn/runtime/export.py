"""Export a model directory to TorchScript or ONNX, verified against PyTorch.

``export_model(run.model_dir, "onnx")`` writes ``model.onnx`` next to the
model (dynamic batch axis), runs it with onnxruntime on a batch of inputs of
the model's real shape and dtype, and reports the largest absolute
difference from the PyTorch outputs. It raises :class:`ExportError` when the
export fails or the outputs disagree by more than ``atol``.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from cloudnn.errors import ExportError, MissingDependencyError
from cloudnn.runtime.artifacts import LoadedModel, load_model_dir
from cloudnn.runtime.events import first_line

__all__ = [
    "ExportError",
    "MissingDependencyError",
    "export_model",
    "import_onnxruntime",
]

Format = Literal["torchscript", "onnx"]
#: opset 17 is the newest every onnxruntime >= 1.14 runs and the legacy
#: exporter in torch 2.x supports fully (LayerNormalization is native there)
DEFAULT_OPSET = 17
_ONNX_HINT = 'pip install "cloudnn[onnx]"  (onnx, onnxruntime, onnxscript)'


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingDependencyError(
            "onnxruntime is not installed", hint=_ONNX_HINT
        ) from exc
    return onnxruntime


def export_model(
    model_dir: str | os.PathLike[str],
    fmt: Format,
    output: str | os.PathLike[str] | None = None,
    *,
    sample: np.ndarray | None = None,
    opset: int = DEFAULT_OPSET,
    atol: float = 1e-4,
    exporter: Literal["auto", "legacy", "dynamo"] = "auto",
) -> dict[str, Any]:
    """Export ``model_dir`` to ``fmt`` and check it against the PyTorch model.

    ``output`` defaults to ``model_dir/model.onnx`` or ``model_dir/model.ts``.
    ``sample`` (preprocessed inputs, ``(N, *input_shape)``) is what the check
    runs on; without it, a seeded batch of the right shape and dtype is used.
    Returns ``{"format", "path", "bytes", "max_abs_diff", "rows_checked", ...}``.
    """
    root = Path(model_dir)
    if fmt not in ("torchscript", "onnx"):
        raise ExportError(
            f"unknown export format {fmt!r}", hint="use 'torchscript' or 'onnx'"
        )
    loaded = load_model_dir(root, prefer="torch")
    model = loaded.model.cpu().eval()
    x = _check_sample(loaded, sample) if sample is not None else _sample(loaded)
    default = "model.onnx" if fmt == "onnx" else "model.ts"
    target = Path(output) if output is not None else root / default
    target.parent.mkdir(parents=True, exist_ok=True)
    # write beside the target, then rename: concurrent server workers may
    # export on first use at the same time and must never read half a file
    writer = f"{os.getpid()}.{threading.get_ident()}"
    tmp = target.with_name(f".{target.name}.{writer}.tmp")
    with torch.inference_mode():
        reference = model(torch.from_numpy(x)).float().numpy()
    # fail here, as an OSError, on a read-only folder: the server then
    # exports into a cache instead (exporters would wrap it as ExportError)
    tmp.touch()
    try:
        if fmt == "torchscript":
            info = _export_torchscript(model, x, tmp)
            diff = _verify(fmt, tmp, x, reference, atol)
        else:
            info = _export_onnx(model, x, reference, tmp, opset, exporter, atol)
            diff = info.pop("max_abs_diff")
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return {
        "format": fmt,
        "path": str(target),
        "bytes": target.stat().st_size,
        "max_abs_diff": diff,
        "rows_checked": len(x),
        "input_shape": list(x.shape[1:]),
        "input_dtype": x.dtype.name,
        **info,
    }


# --------------------------------------------------------------------- inputs


def _input_dtype(loaded: LoadedModel) -> np.dtype[Any]:
    return np.dtype(loaded.meta.get("input_dtype") or "float32")


def _input_shape(loaded: LoadedModel) -> tuple[int, ...]:
    shape = loaded.meta.get("input_shape") or loaded.pre.input_shape
    return tuple(int(d) for d in shape)


def _check_sample(loaded: LoadedModel, sample: np.ndarray) -> np.ndarray:
    x = np.asarray(sample)
    if x.shape[1:] != _input_shape(loaded) or len(x) == 0:
        raise ExportError(
            f"sample has shape {x.shape}, expected (N, {_input_shape(loaded)})",
            hint="pass preprocessed inputs, e.g. Handler.preprocess(instances)",
        )
    return np.ascontiguousarray(x, dtype=_input_dtype(loaded))


def _vocab_size(pre: Any) -> int:
    for name in ("vocab_size", "num_tokens"):
        value = getattr(pre, name, None)
        if isinstance(value, int) and value > 1:
            return value
    vocab = getattr(pre, "vocab", None)
    if vocab is not None and len(vocab) > 1:
        return len(vocab)
    return 2


def _sample(loaded: LoadedModel, rows: int = 7) -> np.ndarray:
    """A seeded batch of model inputs (7 rows: not the trace's batch size)."""
    rng = np.random.default_rng(0)
    shape = (rows, *_input_shape(loaded))
    dtype = _input_dtype(loaded)
    if dtype.kind in "iu":
        # token ids with a varying amount of right padding (id 0)
        x = rng.integers(1, max(2, _vocab_size(loaded.pre)), size=shape)
        if len(shape) == 2:
            for i, keep in enumerate(rng.integers(1, shape[1] + 1, size=rows)):
                x[i, keep:] = 0
        return x.astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


# ------------------------------------------------------------------- exporters


def _export_torchscript(
    model: torch.nn.Module, x: np.ndarray, path: Path
) -> dict[str, Any]:
    from cloudnn.runtime.models import to_torchscript

    example = torch.from_numpy(x[:2])
    try:
        scripted = to_torchscript(model, example)
        scripted.save(str(path))
    except Exception as exc:
        raise ExportError(
            f"TorchScript export failed: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}",
            hint="custom modules must be scriptable or traceable; try --format onnx",
        ) from exc
    return {}


def _export_onnx(
    model: torch.nn.Module,
    x: np.ndarray,
    reference: np.ndarray,
    path: Path,
    opset: int,
    exporter: str,
    atol: float,
) -> dict[str, Any]:
    try:
        import onnx
    except ImportError as exc:
        raise MissingDependencyError("onnx is not installed", hint=_ONNX_HINT) from exc
    import_onnxruntime()
    # trace with a batch of 2: a batch of 1 lets the tracer specialise on it
    example = torch.from_numpy(np.ascontiguousarray(x[:2]))
    if len(example) == 1:
        example = torch.cat([example, example])
    order = {"auto": ["legacy", "dynamo"], "legacy": ["legacy"], "dynamo": ["dynamo"]}
    errors: list[str] = []
    for name in order[exporter]:
        # the dynamo exporter emits opset >= 18 (its minimum)
        used = opset if name == "legacy" else max(opset, 18)
        try:
            if name == "legacy":
                _onnx_legacy(model, example, path, used)
            else:
                _onnx_dynamo(model, example, path, used)
            onnx.checker.check_model(str(path))
            diff = _verify("onnx", path, x, reference, atol)
            return {"exporter": name, "opset": used, "max_abs_diff": diff}
        except Exception as exc:
            # a trace can export yet compute something else (data-dependent
            # branches): verification failures also fall through to dynamo
            first = str(exc).splitlines()[0] if str(exc) else ""
            errors.append(f"{name}: {type(exc).__name__}: {first}")
    raise ExportError(
        "ONNX export failed (" + "; ".join(errors) + ")",
        hint="serve with runtime 'torch' or 'torchscript' meanwhile",
    )


def _onnx_legacy(
    model: torch.nn.Module, example: torch.Tensor, path: Path, opset: int
) -> None:
    # the TorchScript-based exporter: fast (~0.3 s), handles ScriptModules
    # (module models loaded from model.ts) and dynamic_axes; torch >= 2.9
    # warns that it is deprecated, which is noise for our users
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )


def _onnx_dynamo(
    model: torch.nn.Module, example: torch.Tensor, path: Path, opset: int
) -> None:
    # torch.export-based; prints progress lines, which we keep out of the logs
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (example,),
            input_names=["input"],
            output_names=["output"],
            dynamic_shapes=({0: batch},),
            opset_version=opset,
            dynamo=True,
            external_data=False,
        )
        assert program is not None
        program.save(str(path), external_data=False)


def _verify(
    fmt: str, path: Path, x: np.ndarray, reference: np.ndarray, atol: float
) -> float:
    """Max abs difference between the export and PyTorch on ``x``; raises past atol."""
    got = _run_export(fmt, path, x)
    if got.shape != reference.shape:
        raise ExportError(
            f"the {fmt} export returns shape {got.shape}, PyTorch {reference.shape}"
        )
    diff = float(np.max(np.abs(got - reference))) if reference.size else 0.0
    if not np.isfinite(diff) or diff > atol:
        raise ExportError(
            f"the {fmt} export differs from PyTorch by {diff:.3g} (> atol {atol:g})",
            hint="serve with runtime 'torch' meanwhile",
        )
    return diff


def _run_export(fmt: str, path: Path, x: np.ndarray) -> np.ndarray:
    if fmt == "torchscript":
        ts = torch.jit.load(str(path), map_location="cpu").eval()
        with torch.inference_mode():
            return ts(torch.from_numpy(x)).float().numpy()
    ort = import_onnxruntime()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    try:
        (out,) = session.run(None, {name: x})
    except Exception as exc:
        raise ExportError(
            f"onnxruntime could not run the export: {first_line(exc)}",
            hint="serve with runtime 'torch' or 'torchscript'",
        ) from exc
    return np.asarray(out, dtype=np.float32)
