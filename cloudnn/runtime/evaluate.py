"""Evaluation metrics, fit diagnosis and group (bias) checks — numpy only.

Definitions follow scikit-learn's: ``zero_division=0``; macro averages over the
classes present in ``y_true`` or ``y_pred``; ROC-AUC from average ranks (ties
share a rank); log loss clipped to ``[eps, 1 - eps]`` of the probabilities'
dtype; multi-output regression averaged uniformly. ``tests/test_runtime_evaluate.py``
cross-checks every number against scikit-learn.

This module must stay importable without torch or scikit-learn: the CLI and
``cloudnn evaluate`` load it in processes that never train.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "GROUP_GAP_FLAG",
    "GROUP_MIN_COUNT",
    "OVERFIT_GAP",
    "OVERFIT_VAL_RISE",
    "UNDERFIT_ACCURACY",
    "UNDERFIT_LOSS_DROP",
    "UNDERFIT_R2",
    "classification_metrics",
    "evaluation_report",
    "fit_diagnosis",
    "format_report",
    "group_metrics",
    "regression_metrics",
    "roc_auc_binary",
    "run_fit",
]

#: train-minus-validation metric gap (accuracy or R²) above which we call overfitting
OVERFIT_GAP = 0.05
#: relative rise of validation loss above its best (mean of the last 3 epochs)
#: that, while train loss kept falling, counts as overfitting
OVERFIT_VAL_RISE = 0.10
#: train accuracy below which a classifier has not learned the training data
UNDERFIT_ACCURACY = 0.80
#: train R² below which a regression model underfits
UNDERFIT_R2 = 0.50
#: without a train metric: train loss that fell by less than this fraction of
#: its first value over 3+ epochs means the model is not learning
UNDERFIT_LOSS_DROP = 0.10
#: largest between-group gap in the main metric (accuracy or R²) that is flagged
GROUP_GAP_FLAG = 0.10
#: groups with fewer rows are reported but do not take part in the gap: a
#: handful of rows gives accuracy 0 or 1 by chance and would always flag
GROUP_MIN_COUNT = 10

_TAIL = 3  # epochs averaged when judging a validation-loss rise


# --------------------------------------------------------------------------- helpers


def _num(value: Any) -> float | None:
    """A finite float, or None for missing, non-numeric, NaN or infinite values."""
    if value is None or isinstance(value, bool):
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _json_safe(value: Any) -> Any:
    """Plain-Python copy: numpy scalars/arrays unwrapped, NaN and ±inf to None."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # json.dumps would write NaN/Infinity, which is not JSON
    return value


def _is_integral(a: np.ndarray) -> bool:
    if a.dtype.kind in "biu":
        return True
    if a.dtype.kind == "f":
        return bool(np.all(np.isfinite(a)) and np.all(a == np.round(a)))
    return False


def _encode_classes(
    y_true: Any, y_pred: Any, labels: Sequence[Any] | None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Class indices for both arrays and the class names.

    Integer-like targets are indices into ``labels`` (or ``0..max``); any other
    values are class names, looked up in ``labels`` or, without labels, in the
    sorted union of both arrays (as scikit-learn orders them).
    """
    yt, yp = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    if yt.shape != yp.shape:
        raise ValueError(f"y_true has {yt.size} rows but y_pred has {yp.size}")
    names = [str(c) for c in labels] if labels is not None else None
    if names is not None and len(set(names)) != len(names):
        raise ValueError(f"labels contain duplicates: {names}")
    if _is_integral(yt) and _is_integral(yp):
        it, ip = yt.astype(np.int64), yp.astype(np.int64)
        top = int(max(it.max(initial=-1), ip.max(initial=-1)))
        if min(it.min(initial=0), ip.min(initial=0)) < 0:
            raise ValueError("class indices must be >= 0 (or pass class names)")
        if names is None:
            names = [str(i) for i in range(top + 1)]
        elif top >= len(names):
            raise ValueError(f"class index {top} but only {len(names)} labels given")
        return it, ip, names
    if names is None:
        names = sorted({str(v) for v in yt.tolist()} | {str(v) for v in yp.tolist()})
    index = {n: i for i, n in enumerate(names)}
    try:
        it = np.array([index[str(v)] for v in yt.tolist()], dtype=np.int64)
        ip = np.array([index[str(v)] for v in yp.tolist()], dtype=np.int64)
    except KeyError as exc:
        raise ValueError(f"class {exc.args[0]!r} is not in labels {names}") from None
    return it, ip, names


def _average_ranks(score: np.ndarray) -> np.ndarray:
    """1-based ranks where tied values share their average rank."""
    order = np.argsort(score, kind="mergesort")
    ordered = score[order]
    new_run = np.r_[True, ordered[1:] != ordered[:-1]]
    starts = np.flatnonzero(new_run)
    ends = np.r_[starts[1:], len(score)]  # exclusive
    run_rank = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(len(score), dtype=np.float64)
    ranks[order] = run_rank[np.cumsum(new_run) - 1]
    return ranks


# --------------------------------------------------------------------------- metrics


def roc_auc_binary(y_true: Any, score: Any) -> float | None:
    """ROC-AUC from average ranks (Mann-Whitney U).

    None when only one class is present or a score is not finite (where
    scikit-learn raises), so a report can still be written.
    """
    y = np.asarray(y_true).astype(bool).ravel()
    s = np.asarray(score, dtype=np.float64).ravel()
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0 or not np.all(np.isfinite(s)):
        return None
    u = _average_ranks(s)[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def classification_metrics(
    y_true: Any,
    y_pred: Any,
    proba: Any = None,
    *,
    labels: list[str] | None = None,
) -> dict[str, Any]:
    """Accuracy, precision/recall/F1 (macro, weighted, per class), confusion matrix.

    ``y_true``/``y_pred`` hold class indices (or class names, see ``labels``).
    ``proba`` (N, K) — or (N,) positive-class scores for two classes — adds
    ``log_loss``, and ``roc_auc`` for binary tasks. Keys: accuracy,
    precision/recall/f1 _macro and _weighted, per_class {label: precision,
    recall, f1, support}, confusion_matrix (rows = true), labels, count.
    """
    yt, yp, names = _encode_classes(y_true, y_pred, labels)
    p: np.ndarray | None = None
    if proba is not None:
        p = np.asarray(proba)
        if p.dtype.kind != "f":
            p = p.astype(np.float64)
        if p.ndim == 1:  # positive-class scores, as scikit-learn accepts
            p = np.stack([1.0 - p, p], axis=1)
        if p.ndim != 2 or p.shape[0] != len(yt):
            raise ValueError(f"proba must be (N, K) with N={len(yt)}, got {p.shape}")
        if p.shape[1] > len(names):
            if labels is not None:
                raise ValueError(f"proba has {p.shape[1]} columns, labels {names}")
            # classes the model knows but neither array contains
            names += [str(i) for i in range(len(names), p.shape[1])]
        elif p.shape[1] < len(names):
            raise ValueError(f"proba has {p.shape[1]} columns for {len(names)} classes")
    k = len(names)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (yt, yp), 1)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(1).astype(np.float64)
    predicted = cm.sum(0).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        denom = precision + recall
        f1 = np.where(denom > 0, 2 * precision * recall / denom, 0.0)
    # scikit-learn averages over labels present in y_true or y_pred: a class
    # with no rows and no predictions says nothing about the model
    present = (support > 0) | (predicted > 0)
    total = float(support.sum())

    def macro(values: np.ndarray) -> float:
        return float(values[present].mean()) if present.any() else 0.0

    def weighted(values: np.ndarray) -> float:
        return float((values * support).sum() / total) if total else 0.0

    out: dict[str, Any] = {
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "precision_macro": macro(precision),
        "recall_macro": macro(recall),
        "f1_macro": macro(f1),
        "precision_weighted": weighted(precision),
        "recall_weighted": weighted(recall),
        "f1_weighted": weighted(f1),
        "per_class": {
            names[i]: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i in range(k)
        },
        "confusion_matrix": cm.tolist(),
        "labels": names,
        "count": int(total),
    }
    if p is not None:
        out["log_loss"] = _log_loss(yt, p)
        if k == 2:
            out["roc_auc"] = roc_auc_binary(yt == 1, p[:, 1])
    return out


def _log_loss(yt: np.ndarray, p: np.ndarray) -> float | None:
    if len(yt) == 0 or not np.all(np.isfinite(p)):
        return None  # a diverged model: report "no value" rather than NaN
    if p.min() < 0 or p.max() > 1:
        raise ValueError("proba must hold probabilities in [0, 1], not logits")
    # scikit-learn >= 1.5: clip to the dtype's eps, no renormalisation
    eps = float(np.finfo(p.dtype).eps)
    picked = np.clip(p[np.arange(len(yt)), yt].astype(np.float64), eps, 1 - eps)
    return float(-np.log(picked).mean())


def regression_metrics(y_true: Any, y_pred: Any) -> dict[str, Any]:
    """MSE, RMSE, MAE, R² — uniform average over outputs, plus ``per_output``.

    Keys: mse, rmse, mae, r2, count, and per_output (list of the same four per
    output) for multi-output targets. RMSE over outputs is the mean of the
    per-output RMSEs, as scikit-learn's. R² of a constant target is 1.0 when
    predicted exactly, else 0.0; with fewer than 2 rows it is None.
    """
    yt = np.asarray(y_true, dtype=np.float64)
    yp = np.asarray(y_pred, dtype=np.float64)
    if yp.shape != yt.shape:
        if yp.size != yt.size:
            raise ValueError(f"y_true shape {yt.shape} but y_pred shape {yp.shape}")
        yp = yp.reshape(yt.shape)  # (N,) against (N, 1) and the like
    n = yt.shape[0] if yt.ndim else 1
    if n == 0:
        return {"mse": None, "rmse": None, "mae": None, "r2": None, "count": 0}
    yt, yp = yt.reshape(n, -1), yp.reshape(n, -1)
    err = yt - yp
    mse = (err**2).mean(0)
    mae = np.abs(err).mean(0)
    rmse = np.sqrt(mse)
    ss_res = (err**2).sum(0)
    ss_tot = ((yt - yt.mean(0)) ** 2).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(ss_tot > 0, 1 - ss_res / ss_tot, np.where(ss_res == 0, 1.0, 0.0))
    out: dict[str, Any] = {
        "mse": float(mse.mean()),
        "rmse": float(rmse.mean()),
        "mae": float(mae.mean()),
        "r2": float(r2.mean()) if n > 1 else None,
        "count": int(n),
    }
    if yt.shape[1] > 1:
        out["per_output"] = [
            {
                "mse": float(mse[i]),
                "rmse": float(rmse[i]),
                "mae": float(mae[i]),
                "r2": float(r2[i]) if n > 1 else None,
            }
            for i in range(yt.shape[1])
        ]
    return out


# --------------------------------------------------------------------------- fit


def fit_diagnosis(
    history: list[dict[str, Any]], *, task: str, restored_epoch: int | None = None
) -> dict[str, Any]:
    """Over/underfitting from per-epoch train and validation curves.

    Rows hold ``epoch``, ``train_loss``, ``val_loss``, ``train_metric``,
    ``val_metric`` (accuracy or R²); any may be missing or None. Returns
    ``status`` (overfitting, underfitting, good_fit; "unknown" when no epoch
    carries a loss or metric, or when there is no validation data to judge
    a good fit or overfitting by), ``generalization_gap`` (train minus
    validation metric, or validation minus train loss without metrics — see
    ``gap_basis``; positive means worse on validation; None without validation
    data), ``reason`` and ``best_epoch`` (lowest validation loss, else lowest
    train loss). ``restored_epoch``: the epoch early stopping kept; the gap is
    then judged there, since that is the model delivered.
    """
    rows = [
        {**r, "epoch": int(r["epoch"]) if _num(r.get("epoch")) is not None else i + 1}
        for i, r in enumerate(history)
    ]
    keys = ("train_loss", "val_loss", "train_metric", "val_metric")
    if not any(_num(r.get(k)) is not None for r in rows for k in keys):
        if rows and _diverged(rows):
            return {
                "status": "underfitting",
                "generalization_gap": None,
                "gap_basis": None,
                "reason": "train loss is not finite: training diverged "
                "(lower the learning rate)",
                "best_epoch": rows[0]["epoch"],
            }
        return {
            "status": "unknown",
            "generalization_gap": None,
            "gap_basis": None,
            "reason": "no losses or metrics were recorded",
            "best_epoch": None,
        }
    metric = "accuracy" if task == "classification" else "R²"
    floor = UNDERFIT_ACCURACY if task == "classification" else UNDERFIT_R2
    last = rows[-1]
    judged = last
    if restored_epoch is not None:
        judged = next((r for r in rows if r["epoch"] == restored_epoch), last)
    best_row = _best_row(rows)
    gap, basis = _gap(judged, metric)
    result: dict[str, Any] = {
        "generalization_gap": gap,
        "gap_basis": basis,
        "best_epoch": best_row["epoch"],
    }

    def verdict(status: str, reason: str) -> dict[str, Any]:
        return {**result, "status": status, "reason": reason}

    if _diverged(rows):
        return verdict(
            "underfitting",
            "train loss became non-finite: training diverged (lower the learning rate)",
        )
    train_metric = _num(judged.get("train_metric"))
    gap_note = (
        f"; validation trails by {gap:.3f} too"
        if basis == metric and gap is not None and gap > OVERFIT_GAP
        else ""
    )
    if train_metric is not None and train_metric < floor:
        return verdict(
            "underfitting",
            f"train {metric} {train_metric:.3f} is below {floor:.2f}: the model has not "
            f"learned the training data (more epochs, capacity or a higher lr){gap_note}",
        )
    losses = [v for r in rows if (v := _num(r.get("train_loss"))) is not None]
    # only without a train metric: a loss that is flat from epoch 1 on but with
    # a high train accuracy means the model converged at once, not underfitting
    if (
        train_metric is None
        and len(losses) >= 3
        and losses[0] > 0
        and losses[-1] > (1 - UNDERFIT_LOSS_DROP) * losses[0]
    ):
        return verdict(
            "underfitting",
            f"train loss barely fell ({losses[0]:.4f} -> {losses[-1]:.4f}, "
            f"less than {UNDERFIT_LOSS_DROP:.0%}): the model is not learning",
        )
    has_validation = any(
        _num(r.get(k)) is not None for r in rows for k in ("val_loss", "val_metric")
    )
    if not has_validation:
        # underfitting shows on the training data alone; a good fit or
        # overfitting needs held-out data to compare with
        return verdict(
            "unknown",
            "no validation data: train and validation cannot be compared "
            "(set data.split.validation above 0, or give data.validation)",
        )
    if basis == metric and gap is not None and gap > OVERFIT_GAP:
        return verdict(
            "overfitting",
            f"train {metric} exceeds validation by {gap:.3f} (> {OVERFIT_GAP:.2f}): "
            "more data, regularisation or early stopping",
        )
    rising = _validation_rising(rows, best_row)
    if rising and restored_epoch is None:
        return verdict("overfitting", rising)
    reason = "train and validation agree"
    if gap is not None:
        reason += f" (gap {gap:+.3f} in {basis})"
    if rising:
        reason += f"; early stopping kept epoch {restored_epoch} ({rising})"
    return verdict("good_fit", reason)


def run_fit(output_dir: str | os.PathLike[str], *, task: str) -> dict[str, Any] | None:
    """The fit diagnosis of a finished run, from the files it left behind.

    Re-diagnosed from ``history.json`` (with the epoch early stopping kept,
    from ``metrics.json``); else the ``fit`` saved in ``metrics.json``; None
    when the run left neither (a script run, reports elsewhere).
    """
    import json
    from pathlib import Path

    folder = Path(output_dir)
    try:
        history = json.loads((folder / "history.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        history = None
    try:
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        metrics = None
    if not isinstance(metrics, dict):
        metrics = {}
    if (
        isinstance(history, list)
        and history
        and all(isinstance(r, dict) for r in history)
    ):
        kept = metrics.get("best_epoch") if metrics.get("restored_best") else None
        return _json_safe(
            fit_diagnosis(
                history,
                task=task,
                restored_epoch=kept if isinstance(kept, int) else None,
            )
        )
    fit = metrics.get("fit")
    return fit if isinstance(fit, dict) else None


def _diverged(rows: list[dict[str, Any]]) -> bool:
    """The last recorded train loss is NaN or infinite."""
    for r in reversed(rows):
        v = r.get("train_loss")
        if v is None:
            continue
        try:
            return not math.isfinite(float(v))
        except (TypeError, ValueError):
            return False
    return False


def _best_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    for key in ("val_loss", "train_loss"):
        scored = [(v, r) for r in rows if (v := _num(r.get(key))) is not None]
        if scored:
            return min(scored, key=lambda t: t[0])[1]  # first of equal minima
    return rows[-1]


def _gap(row: dict[str, Any], metric: str) -> tuple[float | None, str | None]:
    tm, vm = _num(row.get("train_metric")), _num(row.get("val_metric"))
    if tm is not None and vm is not None:
        return tm - vm, metric
    tl, vl = _num(row.get("train_loss")), _num(row.get("val_loss"))
    if tl is not None and vl is not None:
        return vl - tl, "loss"
    return None, None


def _validation_rising(rows: list[dict[str, Any]], best_row: dict[str, Any]) -> str:
    """Why validation loss shows overfitting, or "" if it does not.

    A sustained rise only: the best epoch lies in the first 80% of training,
    the mean of the last three validation losses is well above the best, and
    the train loss kept falling meanwhile. One noisy epoch does not count.
    """
    vals = [v for r in rows if (v := _num(r.get("val_loss"))) is not None]
    best_val = _num(best_row.get("val_loss"))
    if len(vals) < _TAIL + 1 or best_val is None or best_val <= 0:
        return ""
    tail = sum(vals[-_TAIL:]) / _TAIL
    best_epoch, last_epoch = best_row["epoch"], rows[-1]["epoch"]
    best_train = _num(best_row.get("train_loss"))
    last_train = _num(rows[-1].get("train_loss"))
    if (
        best_epoch <= 0.8 * last_epoch
        and tail > best_val * (1 + OVERFIT_VAL_RISE)
        and best_train is not None
        and last_train is not None
        and last_train < best_train
    ):
        return (
            f"validation loss rose from {best_val:.4f} at epoch {best_epoch} to "
            f"{tail:.4f} (last {_TAIL} epochs) while train loss kept falling"
        )
    return ""


# --------------------------------------------------------------------------- groups


def group_metrics(
    y_true: Any,
    y_pred: Any,
    groups: Any,
    *,
    task: str,
    labels: list[str] | None = None,
) -> dict[str, Any]:
    """Metrics per group value and the largest between-group gap (bias check).

    Keys: metric (accuracy or r2, the one compared), groups {value: accuracy,
    f1_macro, count | mse, mae, r2, count}, max_gap, best_group, worst_group,
    flag (max_gap > GROUP_GAP_FLAG), small_groups (fewer than GROUP_MIN_COUNT
    rows: reported, not compared) and a one-sentence reason.
    """
    g = np.asarray(groups).ravel()
    yt, yp = np.asarray(y_true), np.asarray(y_pred)
    if len(g) != len(yt) or len(yp) != len(yt):
        raise ValueError(
            f"groups ({len(g)}), y_true ({len(yt)}) and y_pred ({len(yp)}) differ"
        )
    if task == "classification":
        # encode once so every group shares the same class list
        yt, yp, names = _encode_classes(yt, yp, labels)
        labels = names
    key = "accuracy" if task == "classification" else "r2"
    values, inverse = np.unique(g.astype(str), return_inverse=True)
    per: dict[str, Any] = {}
    for i, value in enumerate(values.tolist()):
        mask = inverse.ravel() == i
        if task == "classification":
            m = classification_metrics(yt[mask], yp[mask], labels=labels)
            per[value] = {"accuracy": m["accuracy"], "f1_macro": m["f1_macro"]}
        else:
            m = regression_metrics(yt[mask], yp[mask])
            per[value] = {k: m[k] for k in ("mse", "mae", "r2")}
        per[value]["count"] = int(mask.sum())
    small = [v for v, m in per.items() if m["count"] < GROUP_MIN_COUNT]
    scores = {
        v: m[key]
        for v, m in per.items()
        if m["count"] >= GROUP_MIN_COUNT and m[key] is not None
    }
    best = worst = None
    gap = 0.0
    if scores:
        best = max(scores, key=lambda v: scores[v])
        worst = min(scores, key=lambda v: scores[v])
        gap = float(scores[best] - scores[worst])
    flag = len(scores) > 1 and gap > GROUP_GAP_FLAG
    if len(scores) < 2:
        reason = f"fewer than 2 groups with >= {GROUP_MIN_COUNT} rows: nothing compared"
    elif flag:
        reason = (
            f"{key} differs by {gap:.3f} between groups {best!r} and {worst!r} "
            f"(> {GROUP_GAP_FLAG:.2f})"
        )
    else:
        reason = f"{key} gap between groups {gap:.3f} (<= {GROUP_GAP_FLAG:.2f})"
    if small and len(scores) >= 2:
        reason += f"; not compared (< {GROUP_MIN_COUNT} rows): {', '.join(small)}"
    return {
        "metric": key,
        "groups": per,
        "max_gap": gap,
        "worst_group": worst,
        "best_group": best,
        "flag": bool(flag),
        "small_groups": small,
        "reason": reason,
    }


# --------------------------------------------------------------------------- report


def evaluation_report(
    y_true: Any,
    y_pred: Any,
    proba: Any = None,
    *,
    task: str,
    labels: list[str] | None = None,
    history: list[dict[str, Any]] | None = None,
    groups: Any = None,
    split: str = "test",
    restored_epoch: int | None = None,
) -> dict[str, Any]:
    """One JSON-serialisable report: ``{"task", split: metrics, "fit"?, "groups"?}``.

    The layout is that of a run's ``metrics.json``, so :func:`format_report`
    reads both. ``fit`` needs ``history``; ``groups`` needs ``groups``. All
    numbers are plain Python values; NaN and infinities become None.
    """
    if task not in ("classification", "regression"):
        raise ValueError(f"task must be 'classification' or 'regression', not {task!r}")
    report: dict[str, Any] = {"task": task}
    if task == "classification":
        report[split] = classification_metrics(y_true, y_pred, proba, labels=labels)
    else:
        report[split] = regression_metrics(y_true, y_pred)
    if history is not None:
        report["fit"] = fit_diagnosis(history, task=task, restored_epoch=restored_epoch)
    if groups is not None:
        report["groups"] = group_metrics(
            y_true, y_pred, groups, task=task, labels=labels
        )
    return _json_safe(report)


def _fmt(value: Any) -> str:
    v = _num(value)
    return "n/a" if v is None else f"{v:.4f}"


_NOT_SPLITS = {"fit", "groups", "headline", "imputed"}
#: classes up to which format_report draws a confusion matrix
CONFUSION_MAX_CLASSES = 20


def format_report(report: dict[str, Any], *, confusion: bool = False) -> str:
    """A few readable lines: metrics per split, fit diagnosis, group gap flag.

    ``confusion`` adds each classification split's confusion matrix (rows:
    true class, columns: predicted), as ``cloudnn evaluate`` prints it.
    """
    lines: list[str] = []
    for split, m in report.items():
        if split in _NOT_SPLITS or not isinstance(m, Mapping):
            continue
        if "accuracy" in m:
            text = f"accuracy {_fmt(m['accuracy'])}  f1_macro {_fmt(m.get('f1_macro'))}"
            if m.get("roc_auc") is not None:
                text += f"  roc_auc {_fmt(m['roc_auc'])}"
        elif "r2" in m:
            text = (
                f"r2 {_fmt(m['r2'])}  rmse {_fmt(m.get('rmse'))}  "
                f"mae {_fmt(m.get('mae'))}"
            )
        else:
            continue
        lines.append(f"{split:<11}{text}  (n={m.get('count', '?')})")
        if confusion and m.get("confusion_matrix"):
            lines += _confusion_lines(m["confusion_matrix"], m.get("labels"))
    imputed = report.get("imputed") or {}
    if imputed.get("cells"):
        lines.append(
            f"{'data':<11}{imputed['cells']} blank cell(s) imputed with the "
            "training mean"
        )
    fit = report.get("fit") or {}
    if fit.get("status"):
        lines.append(f"{'fit':<11}{fit['status']}: {fit.get('reason', '')}")
    groups = report.get("groups") or {}
    if groups:
        mark = "FLAG " if groups.get("flag") else ""
        lines.append(f"{'groups':<11}{mark}{groups.get('reason', '')}")
    return "\n".join(lines) if lines else "(no metrics)"


def _confusion_lines(matrix: list[list[int]], labels: Any) -> list[str]:
    """The confusion matrix as aligned text rows (rows: true, columns: predicted)."""
    k = len(matrix)
    names = [str(v) for v in labels] if isinstance(labels, list) else []
    if len(names) != k:
        names = [str(i) for i in range(k)]
    if k > CONFUSION_MAX_CLASSES:
        return [f"{'':<11}confusion matrix: {k} classes (see --json)"]
    names = [n if len(n) <= 12 else n[:11] + "~" for n in names]
    width = max([len(n) for n in names] + [len(str(v)) for r in matrix for v in r])
    first = max(len(n) for n in names)
    out = [
        f"{'':<11}confusion matrix (rows: true, columns: predicted)",
        f"{'':<11}{'':>{first}}  " + " ".join(f"{n:>{width}}" for n in names),
    ]
    for name, row in zip(names, matrix, strict=True):
        cells = " ".join(f"{v:>{width}}" for v in row)
        out.append(f"{'':<11}{name:>{first}}  {cells}")
    return out
