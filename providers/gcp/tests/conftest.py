"""Fixtures for the GCP provider's tests: one emulator per session, isolated homes.

The emulator is started the way users start it -- ``cloudnn emulator
--provider gcp`` in a subprocess -- and the tests reach it only through the
environment it prints (plus its gRPC control service for faults). Every test
gets its own ``CLOUDNN_HOME``; no test reads the developer's Google
credentials or gcloud configuration, and nothing leaves 127.0.0.1.
Helpers the test modules import live in ``gcp_testlib``.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gcp_testlib import (
    _GCP_CLEARED,
    EXAMPLES,
    PYTHON,
    REPO,
    DigitsRun,
    RunningEmulator,
    offline_gcp_env,
    train_cli,
)

from cloudnn.emulator import emulator_process


@pytest.fixture(scope="session", autouse=True)
def _offline_gcp_session() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        for key in _GCP_CLEARED:
            mp.delenv(key, raising=False)
        for key, value in offline_gcp_env({}).items():
            mp.setenv(key, value)
        yield


@pytest.fixture(autouse=True)
def cloudnn_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """Own registry per test, no Google identity, one thread per job process."""
    home = tmp_path_factory.mktemp("cloudnn-home")
    for key in _GCP_CLEARED:
        monkeypatch.delenv(key, raising=False)
    for key, value in offline_gcp_env({}).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CLOUDNN_HOME", str(home))
    yield home


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmulator]:
    from cloudnn_gcp.testing import ENV_KEYS

    workdir = tmp_path_factory.mktemp("gcp-emulator")
    env = offline_gcp_env(os.environ)
    env["PYTHONPATH"] = str(REPO)
    with emulator_process(
        "gcp", env=env, workdir=workdir, stderr=workdir / "emulator.err"
    ) as (proc, printed):
        if set(printed) != set(ENV_KEYS):
            raise RuntimeError(
                f"the emulator printed {printed!r}; stderr:\n"
                + (workdir / "emulator.err").read_text()
            )
        yield RunningEmulator(
            printed, printed["CLOUDNN_GCP_API_ENDPOINT"], workdir, proc
        )


@pytest.fixture
def faults(emulator: RunningEmulator) -> Iterator[Any]:
    """The emulator's fault controls, all off again after the test."""
    control = emulator.control()
    control.reset()
    try:
        yield control
    finally:
        control.reset()
        control.close()


@pytest.fixture(scope="session")
def digits_spec_path() -> Path:
    """examples/digits-mlp/spec.yaml with its data generated."""
    folder = EXAMPLES / "digits-mlp"
    if not (folder / "data" / "digits.csv").is_file():
        subprocess.run(
            [PYTHON, "prepare.py"], cwd=folder, check=True, capture_output=True
        )
    return folder / "spec.yaml"


@pytest.fixture(scope="session")
def digits_gcp_run(
    emulator: RunningEmulator,
    digits_spec_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> DigitsRun:
    """The real digits-mlp spec trained on the emulator from the CLI (shared: its
    accuracy, weights and model are what several tests compare with)."""
    home = tmp_path_factory.mktemp("digits-gcp-home")
    return train_cli(
        digits_spec_path, provider="gcp", env=emulator.cli_env(home), home=home
    )


@pytest.fixture(scope="session")
def digits_local_run(
    digits_spec_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> DigitsRun:
    """The same spec on the local backend: the reference the cloud run must equal."""
    home = tmp_path_factory.mktemp("digits-local-home")
    env = offline_gcp_env(os.environ)
    env["CLOUDNN_HOME"] = str(home)
    env["PYTHONPATH"] = str(REPO)
    return train_cli(digits_spec_path, provider="local", env=env, home=home)
