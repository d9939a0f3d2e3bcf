"""Model directory and run report: what a finished training leaves behind.

Model directory (``ctx.model_dir``, what serving loads)::

    model.pt            state_dict
    model.ts            TorchScript (when the model scripts/traces)
    preprocess.json     normalisation statistics, vocabulary, class labels
    cloudnn_model.json  model config, task, shapes, versions, artifact list

Output directory (``ctx.output_dir``)::

    metrics.json  report.txt  history.json  training_curves.png  confusion_matrix.png
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from cloudnn.runtime.context import RuntimeContext
from cloudnn.runtime.events import first_line

if TYPE_CHECKING:
    from cloudnn.runtime.data import Dataset, Preprocessor
    from cloudnn.spec import Spec

__all__ = [
    "MODEL_META",
    "evaluate_dataset",
    "finish_run",
    "headline",
    "predictions",
    "save_model_dir",
]

MODEL_META = "cloudnn_model.json"
MODEL_FORMAT = 1


def _plain(value: Any) -> Any:
    """JSON-safe copy: numpy scalars/arrays to Python, NaN to None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


def save_model_dir(
    model_dir: Path, *, spec: Spec, model: nn.Module, pre: Preprocessor, run_id: str
) -> dict[str, Any]:
    """Write the model artifacts; returns the metadata written to ``cloudnn_model.json``."""
    from cloudnn.runtime.models import to_torchscript

    model_dir.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    torch.save(model.state_dict(), model_dir / "model.pt")
    pre.save(model_dir)
    artifacts = ["model.pt", "preprocess.json"]
    torchscript_error = None
    example = torch.from_numpy(np.zeros((2, *pre.input_shape), dtype=_input_dtype(pre)))
    try:
        scripted = to_torchscript(model, example)
        scripted.save(str(model_dir / "model.ts"))
        artifacts.append("model.ts")
    except Exception as exc:  # user modules need not be scriptable
        torchscript_error = first_line(exc)
    meta = {
        "format": MODEL_FORMAT,
        "name": spec.name,
        "run_id": run_id,
        "task": spec.task,
        "model": spec.model.model_dump(mode="json"),
        "num_outputs": pre.num_outputs,
        "input_shape": list(pre.input_shape),
        "input_dtype": _input_dtype(pre),
        "classes": _plain(list(pre.classes)) if pre.classes is not None else None,
        "artifacts": artifacts,
        "torchscript_error": torchscript_error,
        "torch_version": torch.__version__,
        "spec_hash": spec.spec_hash(),
    }
    (model_dir / MODEL_META).write_text(json.dumps(meta, indent=2))
    (model_dir / "spec.json").write_text(spec.model_dump_json(indent=2))
    return meta


def _input_dtype(pre: Preprocessor) -> str:
    return "int64" if pre.kind == "text" else "float32"


def evaluate_dataset(
    model: nn.Module, pre: Preprocessor, ds: Dataset, task: str
) -> dict[str, Any]:
    """Metrics of ``model`` on ``ds`` (already preprocessed), in eval mode."""
    from cloudnn.runtime.evaluate import classification_metrics, regression_metrics
    from cloudnn.runtime.models import predict_batches

    if len(ds) == 0:
        return {}
    x = torch.from_numpy(np.ascontiguousarray(ds.x))
    out = predict_batches(model, x)
    if task == "classification":
        proba = torch.softmax(out, dim=1).numpy()
        pred = proba.argmax(1)
        labels = [str(c) for c in pre.classes] if pre.classes is not None else None
        return _plain(
            classification_metrics(np.asarray(ds.y), pred, proba, labels=labels)
        )
    pred_r = out.numpy()
    if np.asarray(ds.y).ndim == 1 and pred_r.ndim == 2 and pred_r.shape[1] == 1:
        pred_r = pred_r[:, 0]
    return _plain(regression_metrics(np.asarray(ds.y), pred_r))


def predictions(model: nn.Module, ds: Dataset, task: str) -> np.ndarray:
    from cloudnn.runtime.models import predict_batches

    out = predict_batches(model, torch.from_numpy(np.ascontiguousarray(ds.x)))
    if task == "classification":
        return out.argmax(1).numpy()
    pred = out.numpy()
    return pred[:, 0] if pred.ndim == 2 and pred.shape[1] == 1 else pred


def finish_run(
    *,
    spec: Spec,
    ctx: RuntimeContext,
    model: nn.Module,
    pre: Preprocessor,
    history: list[dict[str, Any]],
    datasets: dict[str, Dataset],
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Save the model, evaluate every split, diagnose the fit, write the report."""
    from cloudnn.runtime.evaluate import fit_diagnosis, format_report, group_metrics
    from cloudnn.runtime.events import emit

    model = model.cpu().eval()
    save_model_dir(ctx.model_dir, spec=spec, model=model, pre=pre, run_id=ctx.run_id)
    out_dir = ctx.output_dir
    out_dir.mkdir(parents=True, exist_ok=True)

    metrics: dict[str, Any] = {
        split: evaluate_dataset(model, pre, ds, spec.task)
        for split, ds in datasets.items()
    }
    restored = extra.get("best_epoch") if extra.get("restored_best") else None
    metrics["fit"] = _plain(
        fit_diagnosis(history, task=spec.task, restored_epoch=restored)
    )
    test = datasets["test"]
    if test.groups is not None and len(test):
        labels = [str(c) for c in pre.classes] if pre.classes is not None else None
        metrics["groups"] = _plain(
            group_metrics(
                np.asarray(test.y),
                predictions(model, test, spec.task),
                np.asarray(test.groups),
                task=spec.task,
                labels=labels,
            )
        )
    metrics.update(_plain(extra))
    metrics["headline"] = headline(metrics, spec.task)
    (out_dir / "metrics.json").write_text(json.dumps(_plain(metrics), indent=2))
    (out_dir / "history.json").write_text(json.dumps(_plain(history), indent=2))
    (out_dir / "report.txt").write_text(format_report(_plain(metrics)) + "\n")
    _plots(out_dir, history, metrics, pre, spec.task)
    emit("finished", headline=metrics["headline"], fit=metrics["fit"].get("status"))
    return metrics


def headline(metrics: dict[str, Any], task: str) -> dict[str, Any]:
    """The one number per split a user looks at first."""
    key = "accuracy" if task == "classification" else "r2"
    out: dict[str, Any] = {"metric": key}
    for split in ("train", "validation", "test"):
        value = (metrics.get(split) or {}).get(key)
        if value is not None:
            out[split] = round(float(value), 6)
    return out


def _plots(
    out_dir: Path,
    history: list[dict[str, Any]],
    metrics: dict[str, Any],
    pre: Preprocessor,
    task: str,
) -> None:
    from cloudnn.runtime.plots import plot_confusion_matrix, plot_training_curves

    if history:
        plot_training_curves(
            history,
            out_dir / "training_curves.png",
            metric_name="accuracy" if task == "classification" else "R²",
        )
    cm = (metrics.get("test") or metrics.get("validation") or {}).get(
        "confusion_matrix"
    )
    if task == "classification" and cm:
        labels = [str(c) for c in pre.classes] if pre.classes is not None else []
        plot_confusion_matrix(cm, labels, out_dir / "confusion_matrix.png")
