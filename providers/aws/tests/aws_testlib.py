"""Helpers the AWS provider's tests import (fixtures live in conftest.py).

A module of its own, not ``conftest``: several test folders have a
conftest.py, and ``from conftest import ...`` would find whichever came first.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
PYTHON = sys.executable
EXAMPLES = REPO / "examples"

#: what a test process may never use: the developer's real AWS identity
_AWS_CLEARED = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "CLOUDNN_AWS_ROLE_ARN",
    "CLOUDNN_AWS_BUCKET",
    "CLOUDNN_AWS_POLL_INTERVAL",
    "CLOUDNN_AWS_MAX_POLL_INTERVAL",
)


def offline_aws_env(base: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    """``base`` with fake AWS credentials and no way to the developer's config."""
    env = {k: v for k, v in base.items() if k not in _AWS_CLEARED}
    env.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "OMP_NUM_THREADS": "1",
        }
    )
    return env


@dataclass
class RunningEmulator:
    """``cloudnn emulator --provider aws`` running in a subprocess."""

    env: dict[str, str]
    url: str
    workdir: Path
    process: subprocess.Popen[str]

    def control(self) -> Any:
        from cloudnn_aws.testing import EmulatorControl

        return EmulatorControl(self.url)

    def cli_env(self, home: Path) -> dict[str, str]:
        """A CLI subprocess's environment: the emulator's, a home, this checkout."""
        env = offline_aws_env(os.environ)
        env.update(self.env)
        env["CLOUDNN_HOME"] = str(home)
        env["PYTHONPATH"] = str(REPO)
        return env

    def options(self) -> dict[str, Any]:
        """The same settings as provider options (for in-process providers)."""
        return {
            "endpoint_url": self.env["AWS_ENDPOINT_URL"],
            "region": self.env["AWS_DEFAULT_REGION"],
            "role_arn": self.env["CLOUDNN_AWS_ROLE_ARN"],
            "bucket": self.env["CLOUDNN_AWS_BUCKET"],
            "poll_interval": 0.3,
            "max_poll_interval": 1.0,
        }

    def boto3(self, service: str) -> Any:
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=self.env["AWS_DEFAULT_REGION"],
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
        )


def cli(
    *args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 300
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
    """One `cloudnn train examples/digits-mlp/spec.yaml --provider aws` run."""

    run_id: str
    home: Path
    metrics: dict[str, Any]
    stderr: str
    model_uri: str
