"""Provider options: how this machine reaches SageMaker (not what a job runs on).

``SageMakerProvider(**options)`` validates its keyword options here; every
option also has an environment variable, read when the provider is built,
so the CLI (which passes no options) and CI are configured the same way::

    option          environment                      meaning
    region          AWS_REGION, AWS_DEFAULT_REGION   region when the spec names none
    profile         AWS_PROFILE                      named profile (~/.aws/config)
    endpoint_url    AWS_ENDPOINT_URL                 one endpoint for every AWS API
                                                     (the local emulator, VPC endpoints)
    role_arn        CLOUDNN_AWS_ROLE_ARN             execution role when the spec names none
    bucket          CLOUDNN_AWS_BUCKET               bucket when the spec names none
    poll_interval   CLOUDNN_AWS_POLL_INTERVAL        seconds between status calls (5)
    max_poll_interval CLOUDNN_AWS_MAX_POLL_INTERVAL  back-off ceiling (60)
    max_attempts    AWS_MAX_ATTEMPTS                 botocore attempts per call (5)

The spec's ``providers.aws`` section wins over these for what it sets: a
spec is about the job, these are about the machine (a CI runner points
``AWS_ENDPOINT_URL`` and a bucket at the emulator without editing specs).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cloudnn.options import load_options

__all__ = ["ENV", "ProviderConfig", "load_config"]

#: option -> environment variables consulted (first set wins)
ENV: dict[str, tuple[str, ...]] = {
    "region": ("AWS_REGION", "AWS_DEFAULT_REGION"),
    "profile": ("AWS_PROFILE",),
    "endpoint_url": ("AWS_ENDPOINT_URL",),
    "role_arn": ("CLOUDNN_AWS_ROLE_ARN",),
    "bucket": ("CLOUDNN_AWS_BUCKET",),
    "poll_interval": ("CLOUDNN_AWS_POLL_INTERVAL",),
    "max_poll_interval": ("CLOUDNN_AWS_MAX_POLL_INTERVAL",),
    "max_attempts": ("AWS_MAX_ATTEMPTS",),
}


class ProviderConfig(BaseModel):
    """Validated provider options (see the module docstring for each one)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    region: str | None = Field(
        default=None, pattern=r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d$"
    )
    profile: str | None = None
    endpoint_url: str | None = Field(default=None, pattern=r"^https?://\S+$")
    role_arn: str | None = Field(
        default=None,
        pattern=r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9_+=,.@/-]+$",
    )
    bucket: str | None = Field(
        default=None, pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
    )
    poll_interval: float = Field(default=5.0, gt=0)
    max_poll_interval: float = Field(default=60.0, gt=0)
    max_attempts: int = Field(default=5, ge=1, le=20)
    connect_timeout: float = Field(default=10.0, gt=0)
    read_timeout: float = Field(default=60.0, gt=0)

    @property
    def is_local_endpoint(self) -> bool:
        """True when every call goes to this machine (the emulator)."""
        url = self.endpoint_url or ""
        return url.startswith(("http://127.0.0.1", "http://localhost", "http://[::1]"))


def load_config(
    options: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> ProviderConfig:
    """Options over environment variables; :class:`SpecError` naming a bad one."""
    return load_options(ProviderConfig, options, ENV, provider="aws", environ=environ)
