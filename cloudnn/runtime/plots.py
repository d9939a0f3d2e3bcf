"""Training-curve and confusion-matrix PNGs (matplotlib, Agg backend, no window)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["plot_confusion_matrix", "plot_training_curves"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # never open a window, works headless
    import matplotlib.pyplot as plt

    return plt


def plot_training_curves(
    history: list[dict[str, Any]], path: str | Path, *, metric_name: str = "metric"
) -> Path:
    """Loss (train/validation) and, if recorded, the metric per epoch."""
    plt = _pyplot()
    epochs = [r["epoch"] for r in history]
    has_metric = any(r.get("train_metric") is not None for r in history)
    fig, axes = plt.subplots(
        1, 2 if has_metric else 1, figsize=(10 if has_metric else 5, 3.6)
    )
    axes = list(axes) if has_metric else [axes]
    axes[0].plot(epochs, [r["train_loss"] for r in history], label="train")
    val = [
        (r["epoch"], r["val_loss"]) for r in history if r.get("val_loss") is not None
    ]
    if val:
        axes[0].plot(*zip(*val, strict=True), label="validation")
    axes[0].set(title="loss", xlabel="epoch")
    axes[0].legend()
    if has_metric:
        axes[1].plot(epochs, [r.get("train_metric") for r in history], label="train")
        vm = [
            (r["epoch"], r["val_metric"])
            for r in history
            if r.get("val_metric") is not None
        ]
        if vm:
            axes[1].plot(*zip(*vm, strict=True), label="validation")
        axes[1].set(title=metric_name, xlabel="epoch")
        axes[1].legend()
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def plot_confusion_matrix(
    matrix: list[list[int]],
    labels: list[str],
    path: str | Path,
    *,
    normalize: bool = False,
) -> Path:
    """Heat map of a confusion matrix (rows = true class, columns = predicted)."""
    import numpy as np

    plt = _pyplot()
    cm = np.asarray(matrix, dtype=np.float64)
    if normalize:
        cm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    k = cm.shape[0]
    labels = labels or [str(i) for i in range(k)]
    size = max(4.0, 0.45 * k + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues")
    ax.set(
        xticks=range(k),
        yticks=range(k),
        xticklabels=labels,
        yticklabels=labels,
        xlabel="predicted",
        ylabel="true",
        title="confusion matrix",
    )
    if k <= 20:
        top = cm.max() or 1
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
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
