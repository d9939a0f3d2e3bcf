"""cloudnn.runtime.models: built-in networks, TorchScript export, user factories."""

from __future__ import annotations

import csv
import textwrap
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from cloudnn.errors import SpecError
from cloudnn.runtime.data import Preprocessor, load_datasets
from cloudnn.runtime.models import build_model, to_torchscript
from cloudnn.spec import (
    CNNModel,
    DataSpec,
    MLPModel,
    ModuleModel,
    RNNModel,
    TransformerModel,
)

VOCAB = {w: i + 2 for i, w in enumerate("abcdefgh")}


def _pre(kind: str, shape: tuple[int, ...], **kw: Any) -> Preprocessor:
    kw.setdefault("classes", [0, 1, 2])
    return Preprocessor(kind=kind, task="classification", input_shape=shape, **kw)


def _text(length: int = 8) -> Preprocessor:
    return _pre("text", (length,), vocab=VOCAB, max_length=length)


def _ids(rows: list[list[int]], length: int = 8) -> torch.Tensor:
    return torch.tensor([r + [0] * (length - len(r)) for r in rows])


TEXT_BATCH = _ids([[2, 3, 4], [5] * 8, [], [9, 8, 7, 6, 5]])  # [] = all padding

CASES: list[tuple[str, Any, Preprocessor, torch.Tensor]] = [
    ("mlp", MLPModel(), _pre("tabular", (5,)), torch.randn(5, 5)),
    (
        "mlp-bn-gelu",
        MLPModel(hidden_sizes=[16, 8], activation="gelu", batch_norm=True),
        _pre("tabular", (5,)),
        torch.randn(5, 5),
    ),
    ("mlp-image", MLPModel(), _pre("image", (1, 4, 4)), torch.randn(5, 1, 4, 4)),
    ("cnn", CNNModel(), _pre("image", (1, 8, 8)), torch.randn(5, 1, 8, 8)),
    (
        "cnn-rgb-rect",
        CNNModel(channels=[4, 8, 8], kernel_size=5, batch_norm=False),
        _pre("image", (3, 12, 6)),
        torch.randn(5, 3, 12, 6),
    ),
    ("rnn-seq", RNNModel(), _pre("sequence", (6, 2)), torch.randn(5, 6, 2)),
    (
        "gru-bi-seq",
        RNNModel(cell="gru", bidirectional=True, num_layers=2, dropout=0.2),
        _pre("sequence", (6, 2)),
        torch.randn(5, 6, 2),
    ),
    ("rnn-text", RNNModel(), _text(), TEXT_BATCH),
    (
        "lstm-bi-mean-text",
        RNNModel(bidirectional=True, num_layers=2, pooling="mean"),
        _text(),
        TEXT_BATCH,
    ),
    ("transformer", TransformerModel(), _text(), TEXT_BATCH),
    ("transformer-cls", TransformerModel(pooling="cls"), _text(), TEXT_BATCH),
]


@pytest.mark.parametrize(("name", "spec", "pre", "x"), CASES, ids=[c[0] for c in CASES])
def test_forward_shape_and_torchscript_export(
    name: str, spec: Any, pre: Preprocessor, x: torch.Tensor
) -> None:
    torch.manual_seed(0)
    model = build_model(spec, pre)
    model.train()
    assert model(x).shape == (len(x), 3)  # train mode runs too (dropout, bn)
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert out.shape == (len(x), 3) and torch.isfinite(out).all()
    scripted = to_torchscript(model, x[:2])
    assert isinstance(scripted, torch.jit.ScriptModule)
    with torch.no_grad():
        for n in (1, 3, len(x)):  # other batch sizes than the example's
            assert torch.allclose(scripted(x[:n]), out[:n], atol=1e-5)


def test_torchscript_survives_save_and_load(tmp_path: Path) -> None:
    model = build_model(TransformerModel(num_layers=1), _text())
    scripted = to_torchscript(model, TEXT_BATCH[:2])
    scripted.save(str(tmp_path / "m.ts"))
    loaded = torch.jit.load(str(tmp_path / "m.ts"))
    with torch.no_grad():
        assert torch.allclose(loaded(TEXT_BATCH), model(TEXT_BATCH), atol=1e-5)


def test_regression_outputs_k_values() -> None:
    pre = Preprocessor(kind="tabular", task="regression", input_shape=(4,))
    pre.target_width = 2
    assert build_model(MLPModel(), pre)(torch.randn(3, 4)).shape == (3, 2)
    model = build_model(CNNModel(), _pre("image", (1, 4, 4)), num_outputs=1)
    assert model(torch.randn(3, 1, 4, 4)).shape == (3, 1)


@pytest.mark.parametrize(
    "spec",
    [
        RNNModel(),
        RNNModel(cell="gru", pooling="mean"),
        RNNModel(bidirectional=True),
        RNNModel(bidirectional=True, num_layers=2, pooling="mean"),
        TransformerModel(),
        TransformerModel(pooling="cls"),
    ],
    ids=["lstm-last", "gru-mean", "bi-last", "bi2-mean", "tf-mean", "tf-cls"],
)
def test_padding_does_not_change_the_output(spec: Any) -> None:
    torch.manual_seed(0)
    model = build_model(spec, _text(16)).eval()
    tokens = [[2, 3, 4, 5], [6, 7]]
    with torch.no_grad():
        short = torch.cat([model(torch.tensor([t])) for t in tokens])
        padded = model(_ids(tokens, 16))
    assert torch.allclose(short, padded, atol=1e-5)


def test_builtin_models_refuse_data_they_cannot_read() -> None:
    cases = [
        (MLPModel(), _text(), "model.type"),
        (CNNModel(), _pre("tabular", (64,)), "model.input_shape"),
        (TransformerModel(), _pre("tabular", (4,)), "model.type"),
    ]
    for spec, pre, field in cases:
        with pytest.raises(SpecError) as info:
            build_model(spec, pre)
        assert info.value.field == field


# ------------------------------------------------------------------ factories

FACTORIES = """
import torch
from torch import nn


def outputs_only(num_outputs):
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_outputs))


def with_dim(input_dim, num_outputs, hidden=4):
    net = nn.Sequential(nn.Flatten(), nn.Linear(input_dim, hidden), nn.ReLU(),
                        nn.Linear(hidden, num_outputs))
    net.hidden = hidden
    return net


def anything(**kwargs):
    net = nn.Identity()
    net.got = kwargs
    return net


def no_arguments():
    return nn.Linear(6, 3)


def not_a_module(num_outputs):
    return "nope"
"""


@pytest.fixture
def factories(tmp_path: Path) -> str:
    # one module name per test: sys.modules would otherwise keep the first one
    name = f"nets_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(FACTORIES))
    return name


def _module(factories: str, attr: str, tmp_path: Path, **params: Any) -> nn.Module:
    spec = ModuleModel(module=f"{factories}:{attr}", path=str(tmp_path), params=params)
    return build_model(spec, _pre("tabular", (6,)))


def test_module_factory_gets_only_the_keywords_it_takes(
    factories: str, tmp_path: Path
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LazyLinear's "experimental" notice
        model = _module(factories, "outputs_only", tmp_path)
    assert model(torch.randn(2, 6)).shape == (2, 3)
    model = _module(factories, "with_dim", tmp_path, hidden=7)
    assert model.hidden == 7 and model(torch.randn(2, 6)).shape == (2, 3)
    model = _module(factories, "anything", tmp_path, extra="x", num_outputs=9)
    assert model.got == {  # **kwargs gets everything; params win over ours
        "input_dim": 6,
        "input_shape": (6,),
        "num_outputs": 9,
        "extra": "x",
    }
    assert isinstance(_module(factories, "no_arguments", tmp_path), nn.Linear)


def test_module_factory_errors(factories: str, tmp_path: Path) -> None:
    def field_of(attr: str, module: str | None = None, **params: Any) -> SpecError:
        spec = ModuleModel(
            module=f"{module or factories}:{attr}", path=str(tmp_path), params=params
        )
        with pytest.raises(SpecError) as info:
            build_model(spec, _pre("tabular", (6,)))
        assert "\n" not in str(info.value)
        return info.value

    assert field_of("not_a_module").field == "model.module"
    assert "returned str" in str(field_of("not_a_module"))
    assert field_of("missing").field == "model.module"
    err = field_of("build", module="no_such_module_xyz")
    assert err.field == "model.module" and "ModuleNotFoundError" in str(err)
    (tmp_path / "broken_mod_xyz.py").write_text("import nonexistent_dep_xyz\n")
    assert "nonexistent_dep_xyz" in str(field_of("f", module="broken_mod_xyz"))
    assert field_of("with_dim", depth=3).field == "model.params"


# --------------------------------------------------- digits: a real training


def _accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def test_mlp_beats_sklearn_on_digits(tmp_path: Path) -> None:
    """[256, 128] MLP, Adam 1e-3, batch 32, 60 epochs, standard normalisation.

    Dropout 0.3 + batch norm + label smoothing 0.1 is what beats sklearn's
    MLPClassifier: over 3 splits x 5 seeds 0.987 mean test accuracy vs 0.979
    (on this split: 0.978-0.989 vs 0.964-0.975).
    """
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    digits = load_digits()
    path = tmp_path / "digits.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([f"p{i}" for i in range(64)] + ["label"])
        w.writerows(
            [*map(int, r), int(t)]
            for r, t in zip(digits.data, digits.target, strict=True)
        )
    spec = DataSpec(
        train=str(path), target="label", split={"validation": 0.0, "test": 0.2}
    )
    tr, _, te, pre = load_datasets(spec, "classification")
    assert pre.normalize == "standard" and len(te) == 359

    torch.manual_seed(0)
    model = build_model(
        MLPModel(hidden_sizes=[256, 128], dropout=0.3, batch_norm=True), pre
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    x, y = torch.from_numpy(tr.x), torch.from_numpy(tr.y)
    gen = torch.Generator().manual_seed(0)
    for _ in range(60):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 32):
            idx = order[i : i + 32]
            opt.zero_grad()
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
    ours = _accuracy(model, te.x, te.y)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning
        sk = MLPClassifier(max_iter=500, random_state=0).fit(tr.x, tr.y)
    theirs = float(sk.score(te.x, te.y))
    print(f"digits test accuracy: cloudnn MLP {ours:.4f}, sklearn {theirs:.4f}")
    assert ours >= 0.95
    assert ours >= theirs
