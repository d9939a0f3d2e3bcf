"""cloudnn.runtime.evaluate and .plots: every metric cross-checked with scikit-learn."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn import metrics as skm

from cloudnn.runtime import evaluate as ev
from cloudnn.runtime.evaluate import (
    classification_metrics,
    evaluation_report,
    fit_diagnosis,
    format_report,
    group_metrics,
    regression_metrics,
)
from cloudnn.runtime.plots import plot_confusion_matrix, plot_training_curves

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _check_against_sklearn(y: np.ndarray, p: np.ndarray, k: int) -> dict[str, Any]:
    m = classification_metrics(y, p)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, p))
    for avg in ("macro", "weighted"):
        for name, fn in (
            ("precision", skm.precision_score),
            ("recall", skm.recall_score),
            ("f1", skm.f1_score),
        ):
            assert m[f"{name}_{avg}"] == pytest.approx(
                fn(y, p, average=avg, zero_division=0)
            ), (name, avg)
    assert m["confusion_matrix"] == skm.confusion_matrix(y, p, labels=range(k)).tolist()
    prf = skm.precision_recall_fscore_support(
        y, p, labels=range(k), average=None, zero_division=0
    )
    for i in range(k):
        per = m["per_class"][str(i)]
        got = (per["precision"], per["recall"], per["f1"], per["support"])
        assert got == pytest.approx(tuple(float(a[i]) for a in prf)), i
    return m


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [2, 3, 7])
def test_classification_random_matches_sklearn(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed * 10 + k)
    n = int(rng.integers(5, 400))
    y = rng.integers(0, k, n)
    p = np.where(rng.random(n) < 0.6, y, rng.integers(0, k, n))
    _check_against_sklearn(y, p, int(max(y.max(), p.max()) + 1))


def test_classification_missing_classes_and_zero_division() -> None:
    y = np.array([0, 0, 1, 1, 2, 2, 2, 0])
    p = np.array([0, 1, 1, 1, 1, 1, 0, 0])  # class 2 never predicted
    m = _check_against_sklearn(y, p, 3)
    assert m["per_class"]["2"]["precision"] == 0.0
    # a class predicted but absent from y_true: recall 0 and still averaged
    y2 = np.array([0, 0, 1, 1])
    p2 = np.array([0, 3, 1, 1])
    m2 = _check_against_sklearn(y2, p2, 4)
    assert m2["per_class"]["3"] == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "support": 0,
    }
    # everything wrong: no NaN, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        allwrong = classification_metrics([0, 0, 0], [1, 1, 1])
    assert allwrong["f1_macro"] == 0.0 and allwrong["accuracy"] == 0.0
    empty = classification_metrics([], [], labels=["a", "b"])
    assert empty["accuracy"] == 0.0 and empty["count"] == 0


def test_labels_name_per_class_and_string_targets() -> None:
    y = np.array([0, 1, 2, 2, 1])
    p = np.array([0, 2, 2, 2, 1])
    by_index = classification_metrics(y, p, labels=["cat", "dog", "emu"])
    assert list(by_index["per_class"]) == ["cat", "dog", "emu"]
    assert by_index["labels"] == ["cat", "dog", "emu"]
    names = np.array(["cat", "dog", "emu"])
    by_name = classification_metrics(names[y], names[p], labels=["cat", "dog", "emu"])
    assert by_name == by_index
    # no labels: the sorted union, like scikit-learn
    sy, sp = names[y].tolist(), names[p].tolist()
    auto = classification_metrics(sy, sp)
    assert auto["labels"] == ["cat", "dog", "emu"]
    assert auto["f1_macro"] == pytest.approx(skm.f1_score(sy, sp, average="macro"))
    with pytest.raises(ValueError, match="not in labels"):
        classification_metrics(["cat"], ["owl"], labels=["cat", "dog"])
    with pytest.raises(ValueError, match="only 2 labels"):
        classification_metrics([0, 2], [0, 1], labels=["a", "b"])


@pytest.mark.parametrize("seed", range(4))
def test_binary_auc_with_ties_and_log_loss(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 300
    y = rng.integers(0, 2, n)
    score = np.round(rng.random(n) * 0.6 + 0.3 * y, 1)  # heavy ties
    proba = np.stack([1 - score, score], axis=1)
    m = classification_metrics(y, (score > 0.5).astype(int), proba)
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, score))
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, proba), rel=1e-9)
    # 1-D positive-class scores give the same numbers
    m1 = classification_metrics(y, (score > 0.5).astype(int), score)
    assert m1["roc_auc"] == m["roc_auc"] and m1["log_loss"] == pytest.approx(
        m["log_loss"]
    )


def test_auc_edge_cases() -> None:
    assert ev.roc_auc_binary([0, 0, 1, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5  # all tied
    assert ev.roc_auc_binary([0, 1], [0.9, 0.1]) == 0.0
    assert ev.roc_auc_binary([1, 1, 1], [0.1, 0.2, 0.3]) is None  # one class only
    assert ev.roc_auc_binary([0, 1], [0.1, np.nan]) is None
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 1000)
    s = rng.integers(0, 5, 1000).astype(float) + y  # integer scores: many ties
    assert ev.roc_auc_binary(y, s) == pytest.approx(skm.roc_auc_score(y, s))


def test_multiclass_log_loss_extremes_and_float32() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 200)
    logits = rng.normal(size=(200, 4)) * 3
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    m = classification_metrics(y, proba.argmax(1), proba)
    assert "roc_auc" not in m  # binary only
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, proba), rel=1e-9)
    p32 = proba.astype(np.float32)
    assert classification_metrics(y, proba.argmax(1), p32)["log_loss"] == (
        pytest.approx(skm.log_loss(y, p32), rel=1e-5)
    )
    # certain and wrong: clipped at the dtype's eps exactly as scikit-learn
    hard = np.eye(4)[(y + 1) % 4]
    assert classification_metrics(y, hard.argmax(1), hard)["log_loss"] == (
        pytest.approx(skm.log_loss(y, hard, labels=range(4)), rel=1e-9)
    )
    # a class missing from y_true but present in proba columns
    y3 = np.where(y == 3, 0, y)
    assert classification_metrics(y3, proba.argmax(1), proba)["log_loss"] == (
        pytest.approx(skm.log_loss(y3, proba, labels=range(4)), rel=1e-9)
    )
    with pytest.raises(ValueError, match="logits"):
        classification_metrics(y, proba.argmax(1), logits)


@pytest.mark.parametrize("outputs", [1, 3])
def test_regression_matches_sklearn(outputs: int) -> None:
    rng = np.random.default_rng(outputs)
    shape = (150,) if outputs == 1 else (150, outputs)
    y = rng.normal(size=shape) * np.arange(1, outputs + 1)
    p = y + rng.normal(scale=0.5, size=shape)
    m = regression_metrics(y, p)
    assert m["mse"] == pytest.approx(skm.mean_squared_error(y, p))
    assert m["rmse"] == pytest.approx(skm.root_mean_squared_error(y, p))
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(y, p))
    assert m["r2"] == pytest.approx(skm.r2_score(y, p))
    assert m["count"] == 150
    if outputs == 1:
        assert "per_output" not in m
        return
    per = m["per_output"]
    assert len(per) == outputs
    for name, fn in (
        ("mse", skm.mean_squared_error),
        ("rmse", skm.root_mean_squared_error),
        ("mae", skm.mean_absolute_error),
        ("r2", skm.r2_score),
    ):
        want = fn(y, p, multioutput="raw_values")
        assert [o[name] for o in per] == pytest.approx(want.tolist()), name


def test_regression_edge_cases() -> None:
    # (N,) against (N, 1) is accepted
    y = np.array([1.0, 2.0, 3.0, 4.0])
    assert regression_metrics(y, y[:, None] + 1)["mae"] == pytest.approx(1.0)
    # a constant target: 1.0 when predicted exactly, else 0.0 (force_finite)
    const = np.full(5, 2.0)
    assert regression_metrics(const, const)["r2"] == skm.r2_score(const, const) == 1.0
    off = const + np.arange(5)
    assert regression_metrics(const, off)["r2"] == skm.r2_score(const, off) == 0.0
    two = np.stack([y, np.full(4, 7.0)], axis=1)
    pred = two + np.array([[0.1, 0.0], [-0.2, 0.0], [0.0, 0.0], [0.3, 0.0]])
    assert regression_metrics(two, pred)["r2"] == pytest.approx(skm.r2_score(two, pred))
    assert regression_metrics([1.0], [2.0])["r2"] is None  # undefined with one row
    assert regression_metrics([], [])["count"] == 0
    with pytest.raises(ValueError, match="shape"):
        regression_metrics([1.0, 2.0], [1.0, 2.0, 3.0])


# ----------------------------------------------------------------------------- fit


def _history(
    train: list[float],
    val: list[float] | None,
    tm: list[float] | None,
    vm: list[float] | None,
) -> list[dict[str, Any]]:
    n = len(train)
    return [
        {
            "epoch": i + 1,
            "train_loss": train[i],
            "val_loss": val[i] if val else None,
            "train_metric": tm[i] if tm else None,
            "val_metric": vm[i] if vm else None,
        }
        for i in range(n)
    ]


N = 10
DOWN = [1.0 / (i + 1) for i in range(N)]
VAL_UP = [0.5, 0.3, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55]


def test_fit_good() -> None:
    d = fit_diagnosis(
        _history(DOWN, [x * 1.1 for x in DOWN], [0.97] * N, [0.96] * N),
        task="classification",
    )
    assert d["status"] == "good_fit"
    assert d["generalization_gap"] == pytest.approx(0.01)
    assert d["best_epoch"] == N and d["gap_basis"] == "accuracy"
    assert set(d) >= {"status", "generalization_gap", "reason", "best_epoch"}


def test_fit_overfitting_by_validation_loss_and_by_gap() -> None:
    # val loss rises from epoch 3 while train keeps falling; metrics close
    d = fit_diagnosis(
        _history(DOWN, VAL_UP, [0.97] * N, [0.95] * N), task="classification"
    )
    assert d["status"] == "overfitting" and d["best_epoch"] == 3
    assert "validation loss rose" in d["reason"]
    # large accuracy gap with flat, healthy losses
    gap = fit_diagnosis(
        _history(DOWN, DOWN, [0.99] * N, [0.85] * N), task="classification"
    )
    assert gap["status"] == "overfitting"
    assert gap["generalization_gap"] == pytest.approx(0.14)
    # regression: R² gap
    r = fit_diagnosis(_history(DOWN, DOWN, [0.95] * N, [0.7] * N), task="regression")
    assert r["status"] == "overfitting" and "R²" in r["reason"]
    # one noisy epoch at the end is not a sustained rise
    noisy = DOWN[:-1] + [DOWN[-2] * 1.5]
    d2 = fit_diagnosis(_history(DOWN, noisy, None, None), task="regression")
    assert d2["status"] == "good_fit"
    # early stopping kept the best epoch: the delivered model is not overfit
    kept = fit_diagnosis(
        _history(DOWN, VAL_UP, [0.96] * N, [0.95] * N),
        task="classification",
        restored_epoch=3,
    )
    assert kept["status"] == "good_fit" and "kept epoch 3" in kept["reason"]


def test_fit_underfitting() -> None:
    low = fit_diagnosis(
        _history(DOWN, DOWN, [0.4] * N, [0.38] * N), task="classification"
    )
    assert low["status"] == "underfitting" and "0.400" in low["reason"]
    r2 = fit_diagnosis(_history(DOWN, DOWN, [0.3] * N, [0.3] * N), task="regression")
    assert r2["status"] == "underfitting"
    # no metric recorded: a flat train loss
    flat = fit_diagnosis(
        _history([1.0, 0.98, 0.97, 0.96], [1.0] * 4, None, None), task="regression"
    )
    assert flat["status"] == "underfitting" and "barely fell" in flat["reason"]
    assert flat["gap_basis"] == "loss"
    # diverged training
    nan = fit_diagnosis(
        _history([1.0, 2.0, float("nan")], None, None, None), task="regression"
    )
    assert nan["status"] == "underfitting" and "diverged" in nan["reason"]


def test_fit_flat_loss_with_high_accuracy_is_not_underfitting() -> None:
    # converged in the first epoch: flat loss, but train accuracy is high
    d = fit_diagnosis(
        _history([0.05] * N, [0.06] * N, [0.99] * N, [0.98] * N),
        task="classification",
    )
    assert d["status"] == "good_fit"


def test_fit_missing_values() -> None:
    rows = [{"epoch": 1, "train_loss": 1.0}, {"train_loss": 0.5, "val_loss": None}]
    d = fit_diagnosis(rows, task="classification")
    # no validation loss or metric at all: nothing to call a good fit by
    assert d["status"] == "unknown" and d["generalization_gap"] is None
    assert "no validation data" in d["reason"]
    assert d["best_epoch"] == 2
    assert fit_diagnosis([], task="regression")["status"] == "unknown"
    json.dumps(d)


# -------------------------------------------------------------------------- groups


def test_group_metrics_classification_flag() -> None:
    y = np.array([0, 1] * 20)
    pred = y.copy()
    groups = np.array(["a"] * 20 + ["b"] * 20)
    pred[20:30] = 1 - pred[20:30]  # group b: half wrong
    g = group_metrics(y, pred, groups, task="classification", labels=["no", "yes"])
    assert g["flag"] and g["worst_group"] == "b" and g["best_group"] == "a"
    assert g["metric"] == "accuracy" and g["max_gap"] == pytest.approx(0.5)
    for name, mask in (("a", groups == "a"), ("b", groups == "b")):
        got = g["groups"][name]
        assert got["count"] == 20
        assert got["accuracy"] == pytest.approx(skm.accuracy_score(y[mask], pred[mask]))
        assert got["f1_macro"] == pytest.approx(
            skm.f1_score(y[mask], pred[mask], average="macro", zero_division=0)
        )
    fair = group_metrics(y, y, groups, task="classification")
    assert not fair["flag"] and fair["max_gap"] == 0.0


def test_group_metrics_regression_and_small_groups() -> None:
    rng = np.random.default_rng(5)
    y = rng.normal(size=120)
    groups = np.array([1] * 60 + [2] * 55 + [3] * 5)  # group 3: too small to compare
    pred = y + rng.normal(scale=0.1, size=120)
    pred[60:115] = y[60:115] + rng.normal(scale=1.0, size=55)
    g = group_metrics(y, pred, groups, task="regression")
    assert g["metric"] == "r2" and g["flag"] and g["worst_group"] == "2"
    assert g["small_groups"] == ["3"] and "3" in g["groups"]
    for name, sl in (("1", slice(0, 60)), ("2", slice(60, 115))):
        got = g["groups"][name]
        assert got["r2"] == pytest.approx(skm.r2_score(y[sl], pred[sl]))
        assert got["mse"] == pytest.approx(skm.mean_squared_error(y[sl], pred[sl]))
        assert got["mae"] == pytest.approx(skm.mean_absolute_error(y[sl], pred[sl]))
    with pytest.raises(ValueError):
        group_metrics(y, pred, groups[:10], task="regression")


# -------------------------------------------------------------------------- report


def test_evaluation_report_is_plain_json_and_formats() -> None:
    rng = np.random.default_rng(11)
    y = rng.integers(0, 2, 80)
    score = np.clip(rng.random(80) * 0.5 + 0.4 * y, 0, 1).astype(np.float32)
    proba = np.stack([1 - score, score], axis=1)
    report = evaluation_report(
        y,
        (score > 0.5).astype(np.int64),
        proba,
        task="classification",
        labels=["neg", "pos"],
        history=_history(DOWN, VAL_UP, [0.97] * N, [0.95] * N),
        groups=np.where(np.arange(80) < 40, "x", "y"),
    )
    assert set(report) == {"task", "test", "fit", "groups"}

    def walk(v: Any) -> None:
        if isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
        else:
            assert v is None or type(v) in (str, int, float, bool), type(v)

    walk(report)
    assert json.loads(json.dumps(report, allow_nan=False)) == report
    text = format_report(report)
    lines = text.splitlines()
    assert lines[0].startswith("test") and "accuracy" in lines[0] and "roc_auc" in text
    assert any(line.startswith("fit") and "overfitting" in line for line in lines)
    assert any(line.startswith("groups") for line in lines)
    assert len(lines) <= 6

    reg = evaluation_report(
        np.array([1.0, 2.0, 3.0]), np.array([1.0, np.nan, 3.0]), task="regression"
    )
    assert reg["test"]["mse"] is None  # NaN never reaches the JSON
    assert "r2 n/a" in format_report(reg)
    assert format_report({}) == "(no metrics)"


# --------------------------------------------------------------------------- plots


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert len(data) > 1000 and data[:8] == PNG_MAGIC
    import matplotlib.image

    assert matplotlib.image.imread(path).ndim == 3  # decodes


def test_plots_write_png(tmp_path: Path) -> None:
    history = _history(DOWN, VAL_UP, [0.9] * N, [0.85] * N)
    history[4]["val_loss"] = None  # gaps are skipped
    out = plot_training_curves(history, tmp_path / "sub" / "curves.png")
    assert out == tmp_path / "sub" / "curves.png"
    _assert_png(out)
    loss_only = plot_training_curves(
        [{"epoch": 1, "train_loss": 1.0}, {"epoch": 2, "train_loss": 0.5}],
        tmp_path / "loss.png",
    )
    _assert_png(loss_only)
    cm = [[5, 1, 0], [2, 7, 1], [0, 0, 0]]  # an empty row normalises to 0
    _assert_png(plot_confusion_matrix(cm, ["a", "b", "c"], tmp_path / "cm.png"))
    _assert_png(
        plot_confusion_matrix(cm, ["a", "b", "c"], tmp_path / "n.png", normalize=True)
    )
    import matplotlib

    assert matplotlib.get_backend().lower() == "agg"


# --------------------------------------------------------------------------- imports


def test_evaluate_imports_neither_torch_nor_sklearn() -> None:
    code = (
        "import sys, cloudnn.runtime.evaluate, cloudnn.runtime.plots; "
        "print(sorted(m for m in ('torch', 'sklearn', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
