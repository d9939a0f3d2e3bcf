"""Built-in models export to TorchScript; metrics agree with scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from cloudnn.runtime.data import Preprocessor
from cloudnn.runtime.evaluate import (
    classification_metrics,
    fit_diagnosis,
    group_metrics,
    regression_metrics,
)
from cloudnn.runtime.models import build_model, to_torchscript
from cloudnn.spec import CNNModel, MLPModel, RNNModel, TransformerModel


def _pre(kind: str, shape: tuple[int, ...], **kw: object) -> Preprocessor:
    return Preprocessor(
        kind=kind, task="classification", input_shape=shape, classes=[0, 1, 2], **kw
    )


CASES = [
    (MLPModel(), _pre("tabular", (5,)), torch.randn(4, 5)),
    (CNNModel(), _pre("image", (1, 8, 8)), torch.randn(4, 1, 8, 8)),
    (RNNModel(), _pre("sequence", (6, 2)), torch.randn(4, 6, 2)),
    (
        RNNModel(pooling="mean"),
        _pre("text", (6,), vocab={"a": 2, "b": 3}, max_length=6),
        torch.tensor([[2, 3, 0, 0, 0, 0]] * 4),
    ),
    (
        TransformerModel(),
        _pre("text", (6,), vocab={"a": 2, "b": 3}, max_length=6),
        torch.tensor([[2, 3, 2, 0, 0, 0], [0] * 6, [3] * 6, [2, 0, 0, 0, 0, 0]]),
    ),
]


@pytest.mark.parametrize(
    ("spec", "pre", "x"), CASES, ids=lambda c: getattr(c, "type", "")
)
def test_forward_shape_and_torchscript_match(spec, pre, x) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = build_model(spec, pre).eval()
    with torch.no_grad():
        out = model(x)
    assert out.shape == (len(x), 3)
    assert torch.isfinite(out).all()  # all-padding rows included
    scripted = to_torchscript(model, x[:2])
    with torch.no_grad():
        assert torch.allclose(scripted(x), out, atol=1e-6)  # other batch size too


def test_classification_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 300)
    p = np.where(rng.random(300) < 0.7, y, rng.integers(0, 4, 300))
    p[p == 3] = 2  # class 3 never predicted
    m = classification_metrics(y, p, labels=["a", "b", "c", "d"])
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, p))
    for avg in ("macro", "weighted"):
        assert m[f"f1_{avg}"] == pytest.approx(
            skm.f1_score(y, p, average=avg, zero_division=0)
        )
        assert m[f"precision_{avg}"] == pytest.approx(
            skm.precision_score(y, p, average=avg, zero_division=0)
        )
        assert m[f"recall_{avg}"] == pytest.approx(
            skm.recall_score(y, p, average=avg, zero_division=0)
        )
    assert m["confusion_matrix"] == skm.confusion_matrix(y, p, labels=range(4)).tolist()
    assert m["per_class"]["d"]["precision"] == 0.0


def test_binary_auc_with_ties_and_log_loss() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    score = np.round(rng.random(200) * 0.6 + 0.3 * y, 1)  # many ties
    proba = np.stack([1 - score, score], axis=1)
    m = classification_metrics(y, (score > 0.5).astype(int), proba)
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, score))
    assert m["log_loss"] == pytest.approx(
        skm.log_loss(y, np.clip(proba, 1e-15, 1)), rel=1e-6
    )


def test_regression_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(2)
    y = rng.normal(size=(100, 2))
    p = y + rng.normal(scale=0.3, size=(100, 2))
    m = regression_metrics(y, p)
    assert m["mse"] == pytest.approx(skm.mean_squared_error(y, p))
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(y, p))
    assert m["r2"] == pytest.approx(skm.r2_score(y, p))
    assert len(m["per_output"]) == 2


def _history(
    train: list[float], val: list[float], tm: list[float], vm: list[float]
) -> list[dict]:
    return [
        {
            "epoch": i + 1,
            "train_loss": a,
            "val_loss": b,
            "train_metric": c,
            "val_metric": d,
        }
        for i, (a, b, c, d) in enumerate(zip(train, val, tm, vm, strict=True))
    ]


def test_fit_diagnosis_three_outcomes() -> None:
    n = 10
    down = [1.0 / (i + 1) for i in range(n)]
    good = _history(down, [d * 1.1 for d in down], [0.97] * n, [0.96] * n)
    assert fit_diagnosis(good, task="classification")["status"] == "good_fit"
    val_up = [0.5, 0.3, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55]
    over = _history(down, val_up, [0.99] * n, [0.93] * n)
    diag = fit_diagnosis(over, task="classification")
    assert diag["status"] == "overfitting" and diag["best_epoch"] == 3
    under = _history([1.0] * n, [1.0] * n, [0.4] * n, [0.4] * n)
    assert fit_diagnosis(under, task="classification")["status"] == "underfitting"
    # early stopping that kept the best epoch delivers a model that is not overfit
    kept = fit_diagnosis(
        _history(down, val_up, [0.96] * n, [0.95] * n),
        task="classification",
        restored_epoch=3,
    )
    assert kept["status"] == "good_fit" and "kept epoch 3" in kept["reason"]


def test_group_gap_is_flagged() -> None:
    y = np.array([0, 1] * 20)
    pred = y.copy()
    groups = np.array(["a"] * 20 + ["b"] * 20)
    pred[20:30] = 1 - pred[20:30]  # group b: half wrong
    g = group_metrics(y, pred, groups, task="classification")
    assert g["flag"] and g["worst_group"] == "b"
    assert g["groups"]["a"]["accuracy"] == 1.0 and g["groups"]["b"]["accuracy"] == 0.5
