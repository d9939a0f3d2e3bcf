"""Provider options: how this machine reaches Vertex AI (not what a job runs on).

``VertexAIProvider(**options)`` validates its keyword options here; every
option also has an environment variable, read when the provider is built,
so the CLI (which passes no options) and CI are configured the same way::

    option            environment                          meaning
    project           GOOGLE_CLOUD_PROJECT,                project when the spec names none
                      CLOUDSDK_CORE_PROJECT, GCLOUD_PROJECT
    region            CLOUDNN_GCP_REGION, CLOUDSDK_AI_REGION, region when the spec names none
                      GOOGLE_CLOUD_REGION                  (default us-central1)
    bucket            CLOUDNN_GCP_BUCKET                   staging/output bucket when the spec names none
    prefix            CLOUDNN_GCP_PREFIX                   object prefix in the bucket (cloudnn)
    api_endpoint      CLOUDNN_GCP_API_ENDPOINT             Vertex AI endpoint; ``http://host:port``
                                                           means plaintext (the local emulator)
    logging_endpoint  CLOUDNN_GCP_LOGGING_ENDPOINT         Cloud Logging endpoint (default: the
                                                           API endpoint when that is plaintext)
    storage_endpoint  CLOUDNN_GCP_STORAGE_ENDPOINT,        Cloud Storage endpoint (an emulator's
                      STORAGE_EMULATOR_HOST                ``http://host:port``)
    transport         CLOUDNN_GCP_TRANSPORT                grpc (default) or rest
    credentials       CLOUDNN_GCP_CREDENTIALS              auto (default), adc or anonymous
    poll_interval     CLOUDNN_GCP_POLL_INTERVAL            seconds between status calls (5)
    max_poll_interval CLOUDNN_GCP_MAX_POLL_INTERVAL        back-off ceiling (60)
    timeout           CLOUDNN_GCP_TIMEOUT                  deadline of one API call, seconds (60)

``GOOGLE_APPLICATION_CREDENTIALS`` is read by google-auth itself. ``credentials: auto`` uses application
default credentials, except for a plaintext ``http://`` endpoint, which gets
anonymous credentials: a token must never travel unencrypted.

The spec's ``providers.gcp`` section wins over these for what it sets: a
spec is about the job, these are about the machine (a CI runner points
``CLOUDNN_GCP_API_ENDPOINT`` and a bucket at the emulator without editing
specs).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cloudnn.options import load_options

__all__ = [
    "DEFAULT_REGION",
    "ENV",
    "PLACEHOLDER_BUCKET",
    "PLACEHOLDER_PROJECT",
    "ProviderConfig",
    "Target",
    "load_config",
    "resolve_target",
]

DEFAULT_REGION = "us-central1"
#: what a plan shows where the project or bucket is not configured yet
PLACEHOLDER_PROJECT = "YOUR_PROJECT"
PLACEHOLDER_BUCKET = "YOUR_BUCKET"

#: option -> environment variables consulted (first set wins)
ENV: dict[str, tuple[str, ...]] = {
    "project": (
        "GOOGLE_CLOUD_PROJECT",
        "CLOUDSDK_CORE_PROJECT",
        "GCLOUD_PROJECT",
    ),
    "region": ("CLOUDNN_GCP_REGION", "CLOUDSDK_AI_REGION", "GOOGLE_CLOUD_REGION"),
    "bucket": ("CLOUDNN_GCP_BUCKET",),
    "prefix": ("CLOUDNN_GCP_PREFIX",),
    "api_endpoint": ("CLOUDNN_GCP_API_ENDPOINT",),
    "logging_endpoint": ("CLOUDNN_GCP_LOGGING_ENDPOINT",),
    "storage_endpoint": ("CLOUDNN_GCP_STORAGE_ENDPOINT", "STORAGE_EMULATOR_HOST"),
    "transport": ("CLOUDNN_GCP_TRANSPORT",),
    "credentials": ("CLOUDNN_GCP_CREDENTIALS",),
    "poll_interval": ("CLOUDNN_GCP_POLL_INTERVAL",),
    "max_poll_interval": ("CLOUDNN_GCP_MAX_POLL_INTERVAL",),
    "timeout": ("CLOUDNN_GCP_TIMEOUT",),
}

_PROJECT = r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$"
_REGION = r"^[a-z]+-[a-z]+\d+$"
_BUCKET = r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$"
_ENDPOINT = r"^(https?://)?[A-Za-z0-9.\[\]:_-]+(:\d+)?/?$"


class ProviderConfig(BaseModel):
    """Validated provider options (see the module docstring for each one)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    project: str | None = Field(default=None, pattern=_PROJECT)
    region: str | None = Field(default=None, pattern=_REGION)
    bucket: str | None = Field(default=None, pattern=_BUCKET)
    prefix: str = Field(
        default="cloudnn", pattern=r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$"
    )
    api_endpoint: str | None = Field(default=None, pattern=_ENDPOINT)
    logging_endpoint: str | None = Field(default=None, pattern=_ENDPOINT)
    storage_endpoint: str | None = Field(default=None, pattern=_ENDPOINT)
    transport: Literal["grpc", "rest"] = "grpc"
    credentials: Literal["auto", "adc", "anonymous"] = "auto"
    poll_interval: float = Field(default=5.0, gt=0)
    max_poll_interval: float = Field(default=60.0, gt=0)
    timeout: float = Field(default=60.0, gt=0)

    @property
    def plaintext(self) -> bool:
        """True when the API endpoint is plain ``http://`` (a local emulator)."""
        return (self.api_endpoint or "").startswith("http://")

    @property
    def anonymous(self) -> bool:
        """Whether calls carry no credentials (never a token over plaintext)."""
        if self.credentials == "auto":
            return self.plaintext
        return self.credentials == "anonymous"

    def api_host(self, region: str) -> str:
        """``host:port`` of the Vertex AI API for ``region`` (no scheme)."""
        if self.api_endpoint:
            return _strip_scheme(self.api_endpoint)
        return f"{region}-aiplatform.googleapis.com"

    def logging_host(self) -> str:
        """``host:port`` of the Cloud Logging API (no scheme)."""
        if self.logging_endpoint:
            return _strip_scheme(self.logging_endpoint)
        if self.plaintext and self.api_endpoint:
            return _strip_scheme(self.api_endpoint)  # the emulator serves both
        return "logging.googleapis.com"

    @property
    def logging_plaintext(self) -> bool:
        endpoint = self.logging_endpoint or (
            self.api_endpoint if self.plaintext else ""
        )
        return (endpoint or "").startswith("http://")


def _strip_scheme(endpoint: str) -> str:
    for scheme in ("http://", "https://"):
        if endpoint.startswith(scheme):
            endpoint = endpoint[len(scheme) :]
    return endpoint.rstrip("/")


def load_config(
    options: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> ProviderConfig:
    """Options over environment variables; :class:`SpecError` naming a bad one."""
    return load_options(ProviderConfig, options, ENV, provider="gcp", environ=environ)


@dataclass(frozen=True)
class Target:
    """Where one job or endpoint goes: the spec's ``providers.gcp`` over the config.

    ``project``/``bucket`` are None when neither names one: a plan then
    shows a placeholder (and a warning), and a submission refuses.
    """

    project: str | None
    region: str
    bucket: str | None
    prefix: str

    @property
    def parent(self) -> str:
        """``projects/P/locations/R``, with a placeholder project if unset."""
        return f"projects/{self.project or PLACEHOLDER_PROJECT}/locations/{self.region}"

    @property
    def root(self) -> str:
        """``gs://bucket/prefix`` (no trailing slash), placeholder bucket if unset."""
        return f"gs://{self.bucket or PLACEHOLDER_BUCKET}/{self.prefix}"

    def missing(self) -> list[tuple[str, str]]:
        """(field, environment variable) of each setting a submission needs."""
        out = []
        if not self.project:
            out.append(("providers.gcp.project", "GOOGLE_CLOUD_PROJECT"))
        if not self.bucket:
            out.append(("providers.gcp.bucket", "CLOUDNN_GCP_BUCKET"))
        return out


def resolve_target(spec_options: Any, config: ProviderConfig) -> Target:
    """The spec's explicitly set ``providers.gcp`` fields, else the config's.

    ``spec_options`` is the spec's :class:`cloudnn.spec.GCPOptions` or None.
    A spec's default region (set by the schema, not the user) does not beat
    a region configured for this machine.
    """
    explicit: set[str] = (
        set(spec_options.model_fields_set) if spec_options is not None else set()
    )

    def pick(name: str) -> Any:
        if name in explicit:
            return getattr(spec_options, name)
        return getattr(config, name)

    region = pick("region") or DEFAULT_REGION
    return Target(
        project=pick("project"),
        region=str(region),
        bucket=pick("bucket"),
        prefix=str(pick("prefix")),
    )
