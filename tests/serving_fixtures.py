"""Tiny trained model directories for serving, export and endpoint tests.

Import the fixtures you use explicitly (non-root conftests may not use
``pytest_plugins``)::

    from serving_fixtures import cnn_model_dir, digits_test_split, mlp_model_dir

Each model trains once per session, in-process, on scikit-learn's 8x8
digits: ``train.csv`` (4/5 of the rows) with a held-out ``test.csv`` given as
``data.test``, so the run's test split is exactly :func:`digits_test_split`.
A run lives in ``<base>/{model,output,checkpoints}``; :func:`run_metrics`
reads its ``metrics.json``.
"""

from __future__ import annotations

import csv
import json
import random
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest

#: every TEST_EVERY-th digit (by position) is in the test split
TEST_EVERY = 5
FEATURES = [f"p{i}" for i in range(64)]


@lru_cache(maxsize=1)
def _digits() -> tuple[list[list[int]], list[int]]:
    from sklearn.datasets import load_digits

    d = load_digits()
    rows = [[int(v) for v in row] for row in d.data]
    return rows, [int(v) for v in d.target]


def digits_test_split() -> tuple[list[list[int]], list[int]]:
    """Raw pixel rows (original 0-16 values) and labels of the runs' test split."""
    rows, labels = _digits()
    keep = range(0, len(rows), TEST_EVERY)
    return [list(rows[i]) for i in keep], [labels[i] for i in keep]


def digits_train_split() -> tuple[list[list[int]], list[int]]:
    rows, labels = _digits()
    keep = [i for i in range(len(rows)) if i % TEST_EVERY]
    return [list(rows[i]) for i in keep], [labels[i] for i in keep]


def _write_csv(path: Path, rows: list[list[int]], labels: list[int]) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([*FEATURES, "label"])
        for row, label in zip(rows, labels, strict=True):
            w.writerow([*row, label])
    return path


@pytest.fixture(scope="session")
def digits_csv_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All 1797 digits as one CSV: 64 pixel columns p0..p63 and ``label``."""
    rows, labels = _digits()
    return _write_csv(tmp_path_factory.mktemp("digits") / "digits.csv", rows, labels)


@pytest.fixture(scope="session")
def digits_split_csvs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(train.csv, test.csv) of the fixed split used by the trained fixtures."""
    folder = tmp_path_factory.mktemp("digits-split")
    train = _write_csv(folder / "train.csv", *digits_train_split())
    test = _write_csv(folder / "test.csv", *digits_test_split())
    return train, test


def train_model_dir(base: Path, spec_dict: dict[str, Any]) -> Path:
    """Train ``spec_dict`` in-process into ``base``; returns ``base/model``."""
    from cloudnn.runtime.context import context, local_job_env
    from cloudnn.runtime.trainer import train
    from cloudnn.spec import spec_from_dict

    spec = spec_from_dict(spec_dict)
    env = local_job_env(
        model_dir=base / "model",
        checkpoint_dir=base / "checkpoints",
        output_dir=base / "output",
        channels={},
        hyperparameters={},
        run_id=base.name,
    )
    train(spec, context(env), resume=False)
    return base / "model"


def run_metrics(model_dir: Path) -> dict[str, Any]:
    """``metrics.json`` of the run that wrote ``model_dir``."""
    metrics: dict[str, Any] = json.loads(
        (model_dir.parent / "output" / "metrics.json").read_text()
    )
    return metrics


def digits_spec_dict(
    train: Path, test: Path, model: dict[str, Any], **train_opts: Any
) -> dict[str, Any]:
    return {
        "name": f"digits-{model['type']}",
        "task": "classification",
        "model": model,
        "data": {"train": str(train), "test": str(test), "target": "label"},
        "train": {"epochs": 4, "batch_size": 64, "seed": 0, **train_opts},
    }


@pytest.fixture(scope="session")
def mlp_model_dir(
    tmp_path_factory: pytest.TempPathFactory, digits_split_csvs: tuple[Path, Path]
) -> Path:
    """A digits MLP (64 -> 32 -> 10), trained 4 epochs."""
    spec = digits_spec_dict(
        *digits_split_csvs, {"type": "mlp", "hidden_sizes": [32], "dropout": 0.0}
    )
    return train_model_dir(tmp_path_factory.mktemp("mlp-run"), spec)


@pytest.fixture(scope="session")
def cnn_model_dir(
    tmp_path_factory: pytest.TempPathFactory, digits_split_csvs: tuple[Path, Path]
) -> Path:
    """A digits CNN over (1, 8, 8) images, trained 3 epochs."""
    model = {
        "type": "cnn",
        "channels": [8, 16],
        "hidden_size": 32,
        "input_shape": [1, 8, 8],
    }
    spec = digits_spec_dict(*digits_split_csvs, model, epochs=3)
    return train_model_dir(tmp_path_factory.mktemp("cnn-run"), spec)


@pytest.fixture(scope="session")
def regression_model_dir(
    tmp_path_factory: pytest.TempPathFactory, digits_split_csvs: tuple[Path, Path]
) -> Path:
    """The digit's value regressed from its pixels (MLP, 2 epochs)."""
    spec = digits_spec_dict(
        *digits_split_csvs, {"type": "mlp", "hidden_sizes": [16]}, epochs=2
    )
    spec.update(name="digits-regression", task="regression")
    return train_model_dir(tmp_path_factory.mktemp("regression-run"), spec)


_WORDS = {
    "pos": ["good", "great", "fine", "happy", "love", "nice"],
    "neg": ["bad", "awful", "sad", "hate", "poor", "ugly"],
}
_FILLER = ["the", "a", "movie", "was", "really", "very", "plot", "and"]


def sentences(n: int, seed: int) -> list[tuple[str, str]]:
    """Generated reviews: (text, "pos" | "neg")."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        label = rng.choice(["neg", "pos"])
        words = rng.choices(_FILLER, k=rng.randrange(2, 9))
        words += rng.choices(_WORDS[label], k=rng.randrange(1, 3))
        rng.shuffle(words)
        out.append((" ".join(words), label))
    return out


@pytest.fixture(scope="session")
def text_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny transformer over generated reviews (text column, labels pos/neg)."""
    base = tmp_path_factory.mktemp("text-run")
    path = base / "reviews.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        w.writerows(sentences(240, seed=0))
    spec = {
        "name": "reviews",
        "task": "classification",
        "model": {
            "type": "transformer",
            "d_model": 16,
            "nhead": 2,
            "num_layers": 1,
            "dim_feedforward": 32,
        },
        "data": {
            "train": str(path),
            "target": "label",
            "text": {"column": "text", "max_length": 12},
        },
        "train": {"epochs": 1, "batch_size": 32, "seed": 0},
    }
    return train_model_dir(base, spec)
