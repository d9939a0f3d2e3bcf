"""Training-curve and confusion-matrix PNGs (matplotlib, Agg backend, no window).

matplotlib is imported inside the functions: importing this module costs
nothing, and jobs that never plot do not need it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

__all__ = ["plot_confusion_matrix", "plot_training_curves"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # never open a window; works headless in containers
    import matplotlib.pyplot as plt

    return plt


def _series(history: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """(epochs, values) of the rows where ``key`` holds a finite number."""
    xs: list[int] = []
    ys: list[float] = []
    for i, row in enumerate(history):
        value = row.get(key)
        if value is None or isinstance(value, bool):
            continue
        try:
            v = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(v):
            epoch = row.get("epoch")
            xs.append(int(epoch) if epoch is not None else i + 1)
            ys.append(v)
    return xs, ys


def _save(plt: Any, fig: Any, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.tight_layout()
        fig.savefig(out, dpi=100, format="png")
    finally:
        plt.close(fig)  # pyplot keeps every figure alive until closed
    return out


def plot_training_curves(
    history: list[dict[str, Any]], path: str | Path, *, metric_name: str = "metric"
) -> Path:
    """Loss (train/validation) per epoch and, if recorded, the metric beside it.

    Missing, None or non-finite values are skipped. Returns the PNG's path.
    """
    plt = _pyplot()
    curves = {
        key: _series(history, key)
        for key in ("train_loss", "val_loss", "train_metric", "val_metric")
    }
    has_metric = bool(curves["train_metric"][0] or curves["val_metric"][0])
    fig, axes = plt.subplots(
        1, 2 if has_metric else 1, figsize=(10 if has_metric else 5, 3.6), squeeze=False
    )
    panels = [("loss", "train_loss", "val_loss")]
    if has_metric:
        panels.append((metric_name, "train_metric", "val_metric"))
    for ax, (title, train_key, val_key) in zip(axes[0], panels, strict=True):
        for key, label in ((train_key, "train"), (val_key, "validation")):
            xs, ys = curves[key]
            if xs:
                ax.plot(xs, ys, marker="." if len(xs) < 30 else None, label=label)
        ax.set(title=title, xlabel="epoch")
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    return _save(plt, fig, path)


def plot_confusion_matrix(
    matrix: list[list[int]],
    labels: list[str],
    path: str | Path,
    *,
    normalize: bool = False,
) -> Path:
    """Heat map of a confusion matrix (rows = true class, columns = predicted).

    ``normalize`` divides each row by its count (recall on the diagonal).
    Cell values are written for up to 20 classes. Returns the PNG's path.
    """
    import numpy as np

    plt = _pyplot()
    cm = np.asarray(matrix, dtype=np.float64).reshape(len(matrix), -1)
    if normalize:
        cm = cm / np.maximum(cm.sum(1, keepdims=True), 1)  # empty rows stay 0
    k = cm.shape[0]
    # wrong-length labels would make matplotlib raise: fall back to indices
    names = [str(x) for x in labels] if labels and len(labels) == k else None
    names = names or [str(i) for i in range(k)]
    size = max(4.0, 0.45 * k + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(cm, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set(
        xticks=range(k),
        yticks=range(k),
        xticklabels=names,
        yticklabels=names,
        xlabel="predicted",
        ylabel="true",
        title="confusion matrix" + (" (row-normalised)" if normalize else ""),
    )
    if k > 8:
        plt.setp(ax.get_xticklabels(), rotation=45, ha="right")
    if k <= 20:
        top = cm.max() or 1.0
        for i in range(k):
            for j in range(k):
                text = f"{cm[i, j]:.2f}" if normalize else f"{int(cm[i, j])}"
                ax.text(
                    j,
                    i,
                    text,
                    ha="center",
                    va="center",
                    color="white" if cm[i, j] > top / 2 else "black",
                    fontsize=8,
                )
    return _save(plt, fig, path)
