"""Helpers of the GCP provider's tests (the fixtures are in ``conftest.py``).

A module of its own rather than ``conftest``: pytest keeps one module named
``conftest`` for every test folder of a run, so ``from conftest import ...``
could reach another provider's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]
PYTHON = sys.executable
EXAMPLES = REPO / "examples"

#: what a test may never use: the developer's Google identity and settings
_GCP_CLEARED = (
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GOOGLE_CLOUD_PROJECT",
    "CLOUDSDK_CORE_PROJECT",
    "GCLOUD_PROJECT",
    "GOOGLE_CLOUD_REGION",
    "CLOUDSDK_AI_REGION",
    "STORAGE_EMULATOR_HOST",
    "CLOUDNN_GCP_REGION",
    "CLOUDNN_GCP_BUCKET",
    "CLOUDNN_GCP_PREFIX",
    "CLOUDNN_GCP_API_ENDPOINT",
    "CLOUDNN_GCP_LOGGING_ENDPOINT",
    "CLOUDNN_GCP_STORAGE_ENDPOINT",
    "CLOUDNN_GCP_TRANSPORT",
    "CLOUDNN_GCP_CREDENTIALS",
    "CLOUDNN_GCP_POLL_INTERVAL",
    "CLOUDNN_GCP_MAX_POLL_INTERVAL",
    "CLOUDNN_GCP_TIMEOUT",
)


def offline_gcp_env(base: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    """``base`` without Google identity; gcloud config and metadata server unreachable."""
    env = {k: v for k, v in base.items() if k not in _GCP_CLEARED}
    env.update(
        {
            "CLOUDSDK_CONFIG": os.devnull,  # no ~/.config/gcloud ADC file
            "NO_GCE_CHECK": "true",  # google-auth: never probe 169.254.169.254
            "GRPC_VERBOSITY": "ERROR",
            "OMP_NUM_THREADS": "1",
        }
    )
    return env


@dataclass
class RunningEmulator:
    """``cloudnn emulator --provider gcp`` running in a subprocess."""

    env: dict[str, str]
    url: str
    workdir: Path
    process: subprocess.Popen[str]

    def control(self) -> Any:
        from cloudnn_gcp.testing import EmulatorControl

        return EmulatorControl(self.env)

    def cli_env(self, home: Path) -> dict[str, str]:
        """A CLI subprocess's environment: the emulator's, a home, this checkout."""
        env = offline_gcp_env(os.environ)
        env.update(self.env)
        env["CLOUDNN_HOME"] = str(home)
        env["PYTHONPATH"] = str(REPO)
        return env

    def options(self) -> dict[str, Any]:
        """The emulator's settings as provider options (for in-process providers)."""
        return {
            "api_endpoint": self.env["CLOUDNN_GCP_API_ENDPOINT"],
            "storage_endpoint": self.env["STORAGE_EMULATOR_HOST"],
            "project": self.env["GOOGLE_CLOUD_PROJECT"],
            "bucket": self.env["CLOUDNN_GCP_BUCKET"],
            "poll_interval": 0.25,
            "max_poll_interval": 1.0,
        }

    def use(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Point this process (in-process providers) at the emulator, as its env says."""
        for key, value in self.env.items():
            monkeypatch.setenv(key, value)

    def client(self, kind: str) -> Any:
        """A raw ``aiplatform_v1`` client on the emulator (for assertions)."""
        from cloudnn_gcp._sdk import Clients
        from cloudnn_gcp.config import load_config

        clients = Clients(load_config({}, environ=self.env))
        return getattr(clients, kind)("us-central1")


def cli(
    *args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """``cloudnn ARGS`` in a subprocess."""
    return subprocess.run(
        [PYTHON, "-m", "cloudnn.cli.main", *args],
        env=env,
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@dataclass(frozen=True)
class DigitsRun:
    """One ``cloudnn train examples/digits-mlp/spec.yaml`` run."""

    run_id: str
    home: Path
    metrics: dict[str, Any]
    stderr: str
    model_uri: str
    seconds: float


def train_cli(
    spec: Path, *, provider: str, env: dict[str, str], home: Path
) -> DigitsRun:
    started = time.monotonic()
    out = cli("train", str(spec), "--provider", provider, "--json", env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads(out.stdout)
    show = cli("runs", "show", metrics["run_id"], "--json", env=env)
    assert show.returncode == 0, show.stderr
    record = json.loads(show.stdout)
    return DigitsRun(
        metrics["run_id"],
        home,
        metrics,
        out.stderr,
        str(record["model_uri"]),
        time.monotonic() - started,
    )
