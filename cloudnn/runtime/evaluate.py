"""Evaluation metrics, fit diagnosis and group (bias) checks — numpy only.

Every function returns plain JSON-ready Python values. Definitions follow
scikit-learn's (``zero_division=0``; ROC-AUC by average ranks, ties shared),
and the tests cross-check them against it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "GROUP_GAP_FLAG",
    "OVERFIT_GAP",
    "OVERFIT_VAL_RISE",
    "UNDERFIT_ACCURACY",
    "UNDERFIT_R2",
    "classification_metrics",
    "fit_diagnosis",
    "format_report",
    "group_metrics",
    "regression_metrics",
    "roc_auc_binary",
]

#: train-minus-validation metric gap (accuracy / R²) above which we call overfitting
OVERFIT_GAP = 0.05
#: relative rise of validation loss above its best while train loss kept falling
OVERFIT_VAL_RISE = 0.10
#: train accuracy below which the model has not learned the training data
UNDERFIT_ACCURACY = 0.80
#: train R² below which a regression model underfits
UNDERFIT_R2 = 0.50
#: largest between-group gap in the main metric that gets flagged
GROUP_GAP_FLAG = 0.10


def _f(value: Any) -> float | None:
    if value is None:
        return None
    v = float(value)
    return None if math.isnan(v) else v


def roc_auc_binary(y_true: np.ndarray, score: np.ndarray) -> float | None:
    """ROC-AUC from average ranks (Mann-Whitney U); None with one class only."""
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(score, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):  # ties share their average rank
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def classification_metrics(
    y_true: Any,
    y_pred: Any,
    proba: Any = None,
    *,
    labels: list[str] | None = None,
) -> dict[str, Any]:
    """Accuracy, precision/recall/F1 (macro, weighted, per class), confusion matrix.

    ``proba`` (N, K) adds log loss, and ROC-AUC for two classes.
    """
    yt = np.asarray(y_true).astype(np.int64).ravel()
    yp = np.asarray(y_pred).astype(np.int64).ravel()
    k = len(labels) if labels else int(max(yt.max(initial=-1), yp.max(initial=-1)) + 1)
    if proba is not None:
        k = max(k, np.asarray(proba).shape[1])
    names = list(labels) if labels else [str(i) for i in range(k)]
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
    # sklearn averages over labels present in y_true or y_pred
    present = (support > 0) | (predicted > 0)
    total = support.sum()
    out: dict[str, Any] = {
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "precision_macro": float(precision[present].mean()) if present.any() else 0.0,
        "recall_macro": float(recall[present].mean()) if present.any() else 0.0,
        "f1_macro": float(f1[present].mean()) if present.any() else 0.0,
        "precision_weighted": float((precision * support).sum() / total)
        if total
        else 0.0,
        "recall_weighted": float((recall * support).sum() / total) if total else 0.0,
        "f1_weighted": float((f1 * support).sum() / total) if total else 0.0,
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
    if proba is not None:
        p = np.clip(np.asarray(proba, dtype=np.float64), 1e-15, 1.0)
        p = p / p.sum(1, keepdims=True)
        out["log_loss"] = (
            float(-np.log(p[np.arange(len(yt)), yt]).mean()) if len(yt) else None
        )
        if k == 2:
            out["roc_auc"] = roc_auc_binary(yt == 1, p[:, 1])
    return out


def regression_metrics(y_true: Any, y_pred: Any) -> dict[str, Any]:
    """MSE, RMSE, MAE, R² (uniform average over outputs, and per output)."""
    yt = np.asarray(y_true, dtype=np.float64)
    yp = np.asarray(y_pred, dtype=np.float64).reshape(yt.shape)
    if yt.ndim == 1:
        yt, yp = yt[:, None], yp[:, None]
    err = yt - yp
    mse = (err**2).mean(0)
    mae = np.abs(err).mean(0)
    ss_tot = ((yt - yt.mean(0)) ** 2).sum(0)
    ss_res = (err**2).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        # sklearn: a constant target scores 1.0 if predicted exactly, else 0.0
        r2 = np.where(ss_tot > 0, 1 - ss_res / ss_tot, np.where(ss_res == 0, 1.0, 0.0))
    out: dict[str, Any] = {
        "mse": float(mse.mean()),
        "rmse": float(np.sqrt(mse).mean())
        if yt.shape[1] > 1
        else float(np.sqrt(mse[0])),
        "mae": float(mae.mean()),
        "r2": float(r2.mean()),
        "count": int(yt.shape[0]),
    }
    if yt.shape[1] > 1:
        out["per_output"] = [
            {"mse": float(mse[i]), "mae": float(mae[i]), "r2": float(r2[i])}
            for i in range(yt.shape[1])
        ]
    return out


def fit_diagnosis(
    history: list[dict[str, Any]], *, task: str, restored_epoch: int | None = None
) -> dict[str, Any]:
    """Over/underfitting signal from the per-epoch train and validation curves.

    ``restored_epoch`` is the epoch whose weights early stopping kept; the
    gap is then judged there, since that is the model that was delivered.
    """
    if not history:
        return {
            "status": "unknown",
            "generalization_gap": None,
            "reason": "no epochs were recorded",
            "best_epoch": None,
        }
    have_val = [(v, r) for r in history if (v := _f(r.get("val_loss"))) is not None]
    last = history[-1]
    best_row = min(have_val, key=lambda t: t[0])[1] if have_val else last
    best_epoch = int(best_row.get("epoch", len(history)))
    judged = last
    if restored_epoch is not None:
        judged = next((r for r in history if r.get("epoch") == restored_epoch), last)
    train_metric = _f(judged.get("train_metric"))
    val_metric = _f(judged.get("val_metric"))
    gap = (
        train_metric - val_metric
        if train_metric is not None and val_metric is not None
        else None
    )
    floor = UNDERFIT_ACCURACY if task == "classification" else UNDERFIT_R2
    name = "accuracy" if task == "classification" else "R²"
    first_loss, last_loss = _f(history[0].get("train_loss")), _f(last.get("train_loss"))
    result = {"generalization_gap": gap, "best_epoch": best_epoch}
    if train_metric is not None and train_metric < floor:
        return {
            **result,
            "status": "underfitting",
            "reason": f"train {name} {train_metric:.3f} is below {floor:.2f}: the model "
            "has not learned the training data (more epochs, capacity or a higher lr)",
        }
    if (
        len(history) > 2
        and first_loss is not None
        and last_loss is not None
        and first_loss > 0
        and last_loss > 0.9 * first_loss
    ):
        return {
            **result,
            "status": "underfitting",
            "reason": f"train loss barely fell ({first_loss:.4f} -> {last_loss:.4f})",
        }
    if gap is not None and gap > OVERFIT_GAP:
        return {
            **result,
            "status": "overfitting",
            "reason": f"train {name} exceeds validation by {gap:.3f} "
            f"(> {OVERFIT_GAP:.2f}): more data, regularisation or early stopping",
        }
    rising = _validation_rising(history, have_val, best_row)
    if rising and restored_epoch is None:
        return {**result, "status": "overfitting", "reason": rising}
    reason = "train and validation agree"
    if gap is not None:
        reason += f" (gap {gap:+.3f} in {name})"
    if rising:
        reason += f"; early stopping kept epoch {restored_epoch} ({rising})"
    return {**result, "status": "good_fit", "reason": reason}


def _validation_rising(
    history: list[dict[str, Any]],
    have_val: list[tuple[float, dict[str, Any]]],
    best_row: dict[str, Any],
) -> str:
    """Why validation loss shows overfitting, or "" if it does not.

    A sustained rise only: the best epoch lies in the first 80% of training and
    the mean of the last three validation losses is well above the best,
    while the train loss kept falling.
    """
    if len(have_val) < 4:
        return ""
    best_val = min(v for v, _ in have_val)
    best_epoch = int(best_row.get("epoch", 0))
    last_epoch = int(history[-1].get("epoch", len(history)))
    tail = [v for v, _ in have_val[-3:]]
    tail_mean = sum(tail) / len(tail)
    best_train = _f(best_row.get("train_loss"))
    last_train = _f(history[-1].get("train_loss"))
    if (
        best_val > 0
        and best_epoch <= 0.8 * last_epoch
        and tail_mean > best_val * (1 + OVERFIT_VAL_RISE)
        and best_train is not None
        and last_train is not None
        and last_train < best_train
    ):
        return (
            f"validation loss rose from {best_val:.4f} at epoch {best_epoch} to "
            f"{tail_mean:.4f} (last 3 epochs) while train loss kept falling"
        )
    return ""


def group_metrics(
    y_true: Any,
    y_pred: Any,
    groups: Any,
    *,
    task: str,
    labels: list[str] | None = None,
) -> dict[str, Any]:
    """Metrics per group value and the largest between-group gap (bias check)."""
    yt, yp, g = np.asarray(y_true), np.asarray(y_pred), np.asarray(groups)
    per: dict[str, Any] = {}
    key = "accuracy" if task == "classification" else "r2"
    for value in sorted({str(v) for v in g.tolist()}):
        mask = np.array([str(v) == value for v in g.tolist()])
        if task == "classification":
            m = classification_metrics(yt[mask], yp[mask], labels=labels)
            per[value] = {
                "accuracy": m["accuracy"],
                "f1_macro": m["f1_macro"],
                "count": int(mask.sum()),
            }
        else:
            m = regression_metrics(yt[mask], yp[mask])
            per[value] = {k: m[k] for k in ("mse", "mae", "r2")} | {
                "count": int(mask.sum())
            }
    scores = {k: v[key] for k, v in per.items()}
    gap = max(scores.values()) - min(scores.values()) if scores else 0.0
    worst = min(scores, key=lambda k: scores[k]) if scores else None
    best = max(scores, key=lambda k: scores[k]) if scores else None
    flag = len(scores) > 1 and gap > GROUP_GAP_FLAG
    return {
        "metric": key,
        "groups": per,
        "max_gap": float(gap),
        "worst_group": worst,
        "best_group": best,
        "flag": bool(flag),
        "reason": (
            f"{key} differs by {gap:.3f} between groups {best!r} and {worst!r} "
            f"(> {GROUP_GAP_FLAG:.2f})"
            if flag
            else f"{key} gap between groups {gap:.3f} (<= {GROUP_GAP_FLAG:.2f})"
        ),
    }


def format_report(report: dict[str, Any]) -> str:
    """A few readable lines from a metrics report (as written to metrics.json)."""
    lines: list[str] = []
    for split in ("train", "validation", "test", "data"):
        m = report.get(split)
        if not m:
            continue
        if "accuracy" in m:
            text = f"accuracy {m['accuracy']:.4f}  f1_macro {m['f1_macro']:.4f}"
            if m.get("roc_auc") is not None:
                text += f"  roc_auc {m['roc_auc']:.4f}"
        elif "r2" in m:
            text = f"r2 {m['r2']:.4f}  mse {m['mse']:.4f}  mae {m['mae']:.4f}"
        else:
            continue
        lines.append(f"{split:<11}{text}  (n={m.get('count', '?')})")
    fit = report.get("fit") or {}
    if fit.get("status"):
        lines.append(f"fit        {fit['status']}: {fit.get('reason', '')}")
    groups = report.get("groups") or {}
    if groups:
        mark = "FLAG " if groups.get("flag") else ""
        lines.append(f"groups     {mark}{groups.get('reason', '')}")
    return "\n".join(lines) if lines else "(no metrics)"
