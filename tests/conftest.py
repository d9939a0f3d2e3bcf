"""Shared fixtures: an isolated CLOUDNN_HOME, generated data, spec files."""

from __future__ import annotations

import csv
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def cloudnn_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """Every test gets its own registry and run directories."""
    home = tmp_path_factory.mktemp("cloudnn-home")
    monkeypatch.setenv("CLOUDNN_HOME", str(home))
    # jobs run in subprocesses: keep their thread count equal to ours so runs
    # are comparable and two jobs do not fight over 2 cores
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    # no cloud credential chain may probe an instance metadata service from a
    # test (169.254.169.254, metadata.google.internal): loopback only
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("NO_GCE_CHECK", "true")
    yield home


@pytest.fixture(scope="session")
def digits_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scikit-learn's bundled 8x8 digits as a CSV (64 pixel columns + label)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    path = tmp_path_factory.mktemp("data") / "digits.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([f"p{i}" for i in range(64)] + ["label"])
        for row, label in zip(digits.data, digits.target, strict=True):
            w.writerow([int(v) for v in row] + [int(label)])
    return path


@pytest.fixture
def write_spec(tmp_path: Path) -> Callable[..., Path]:
    """Write a spec mapping as YAML into tmp_path and return its path."""

    def _write(spec: dict[str, Any], name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        return path

    return _write


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    """A CSV with a header row: the format most specs in the tests read."""
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def digits_spec(data_path: Path, /, **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": "digits",
        "task": "classification",
        "model": {"type": "mlp", "hidden_sizes": [64], "dropout": 0.1},
        "data": {"train": str(data_path), "target": "label"},
        "train": {"epochs": 5, "batch_size": 32, "seed": 0},
    }
    for key, value in overrides.items():
        if (
            key != "model"
            and isinstance(value, dict)
            and isinstance(spec.get(key), dict)
        ):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return spec


def cli_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["CLOUDNN_HOME"] = str(home)
    env["PYTHONPATH"] = str(REPO)
    return env


PYTHON = sys.executable
