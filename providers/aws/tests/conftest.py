"""Fixtures for the AWS provider's tests: one emulator per session, isolated homes.

The emulator is started the way users start it -- ``cloudnn emulator
--provider aws`` in a subprocess -- and the tests talk to it only through
the environment it prints (plus its HTTP control routes for faults). Every
test gets its own ``CLOUDNN_HOME``; nothing reads the developer's
``~/.aws`` (fake credentials, no profile), and nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aws_testlib import (
    _AWS_CLEARED,
    EXAMPLES,
    PYTHON,
    REPO,
    DigitsRun,
    RunningEmulator,
    cli,
    offline_aws_env,
)

from cloudnn.emulator import emulator_process


@pytest.fixture(scope="session", autouse=True)
def _offline_aws_session() -> Iterator[None]:
    """Fake AWS identity for the whole session, before any class-scoped provider
    (boto3 reads credentials when its first client is made)."""
    with pytest.MonkeyPatch.context() as mp:
        for key in _AWS_CLEARED:
            mp.delenv(key, raising=False)
        for key, value in offline_aws_env({}).items():
            mp.setenv(key, value)
        yield


@pytest.fixture(autouse=True)
def cloudnn_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """Own registry per test, fake AWS identity, one thread per job process."""
    home = tmp_path_factory.mktemp("cloudnn-home")
    for key, value in offline_aws_env({}).items():
        monkeypatch.setenv(key, value)
    for key in _AWS_CLEARED:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("CLOUDNN_HOME", str(home))
    yield home


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmulator]:
    from cloudnn_aws.testing import ENV_KEYS

    workdir = tmp_path_factory.mktemp("aws-emulator")
    env = offline_aws_env(os.environ)
    env["PYTHONPATH"] = str(REPO)
    with emulator_process(
        "aws", env=env, workdir=workdir, stderr=workdir / "emulator.err"
    ) as (proc, printed):
        if set(printed) != set(ENV_KEYS):
            err = (workdir / "emulator.err").read_text()
            raise RuntimeError(f"the emulator printed {printed!r}; stderr:\n{err}")
        url = printed["AWS_ENDPOINT_URL"]
        with urllib.request.urlopen(f"{url}/_cloudnn/health", timeout=10) as resp:
            assert json.loads(resp.read())["ok"]
        yield RunningEmulator(printed, url, workdir, proc)


@pytest.fixture
def faults(emulator: RunningEmulator) -> Iterator[Any]:
    """The emulator's fault controls, all off again after the test."""
    control = emulator.control()
    control.reset()
    try:
        yield control
    finally:
        control.reset()


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
def digits_aws_run(
    emulator: RunningEmulator,
    digits_spec_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> DigitsRun:
    """The real digits-mlp spec trained on the emulator, from the CLI (shared:
    its accuracy, weights and endpoint are what several tests compare with)."""
    home = tmp_path_factory.mktemp("digits-aws-home")
    started = time.monotonic()
    out = cli(
        "train",
        str(digits_spec_path),
        "--provider",
        "aws",
        "--json",
        env=emulator.cli_env(home),
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads(out.stdout)
    show = cli("runs", "show", metrics["run_id"], "--json", env=emulator.cli_env(home))
    assert show.returncode == 0, show.stderr
    record = json.loads(show.stdout)
    print(f"digits-mlp on the emulator: {time.monotonic() - started:.1f} s")
    return DigitsRun(
        metrics["run_id"], home, metrics, out.stderr, str(record["model_uri"])
    )
