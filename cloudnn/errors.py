"""The cloudnn exception tree.

Every error cloudnn raises derives from :class:`CloudnnError`. Vendor SDK
exceptions are mapped at the provider boundary with ``raise ... from exc``,
so callers only ever catch these::

    CloudnnError                    .hint: "To fix: ..." text; .exit_code
    ├── SpecError                   bad input (spec field, option, path); .field names it (exit 2)
    ├── UnsupportedFeatureError     a provider cannot do what the spec asks (exit 2)
    ├── ProviderNotInstalledError   names the pip extra to install (exit 2)
    ├── NotFoundError               unknown run, endpoint or template (exit 2)
    ├── FileConflictError           would overwrite existing files (exit 2)
    ├── MissingDependencyError      an optional package is missing; names the extra (exit 2)
    ├── ExportError                 a model export failed or does not match torch (exit 1)
    ├── AuthenticationError         missing or rejected credentials (exit 2)
    ├── QuotaExceededError          account quota for the instance type (exit 1)
    ├── CapacityError               no capacity for the instance type now (exit 1)
    ├── TransientError              a temporary provider failure (5xx, reset); retried (exit 1)
    │   └── ThrottledError          the API throttled us past the retry budget (exit 1)
    ├── JobFailedError              the training job ended FAILED (exit 1)
    ├── EndpointError               an endpoint failed, refused or is unreachable (exit 1)
    └── CloudnnTimeoutError         waited longer than asked (exit 1)

Exit code 2 means "your input needs to change"; 1 means "the provider or the
job failed". ``retryable`` errors (transient, throttled) are retried by
:mod:`cloudnn.retry`, honouring ``retry_after`` (seconds) when the service
said how long to wait; nothing else is ever retried.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "CapacityError",
    "CloudnnError",
    "CloudnnTimeoutError",
    "EndpointError",
    "ExportError",
    "FileConflictError",
    "JobFailedError",
    "MissingDependencyError",
    "NotFoundError",
    "ProviderNotInstalledError",
    "QuotaExceededError",
    "SpecError",
    "ThrottledError",
    "TransientError",
    "UnsupportedFeatureError",
]


class CloudnnError(Exception):
    """Root of every cloudnn error: a one-line message plus a fix hint."""

    exit_code: int = 1
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.retry_after = retry_after

    def __str__(self) -> str:
        return self.message


class SpecError(CloudnnError):
    """The spec is malformed; ``field`` is its dotted path (``train.epochs``)."""

    exit_code = 2

    def __init__(
        self, field: str, reason: str, *, hint: str | None = None, source: str = ""
    ) -> None:
        self.field = field or "<spec>"
        self.reason = reason
        self.source = source
        super().__init__(f"{self.field}: {reason}", hint=hint)


class UnsupportedFeatureError(CloudnnError):
    """The chosen provider cannot do something the spec asks for.

    ``rows`` holds ``(feature, reason)`` pairs for a readable table.
    """

    exit_code = 2

    def __init__(
        self,
        provider: str,
        rows: list[tuple[str, str]],
        *,
        hint: str | None = None,
    ) -> None:
        self.provider = provider
        self.rows = rows
        if len(rows) == 1:
            feature, reason = rows[0]
            message = f"provider {provider!r} does not support {feature}: {reason}"
        else:
            features = ", ".join(f for f, _ in rows)
            message = (
                f"provider {provider!r} does not support {len(rows)} things this "
                f"spec asks for: {features}"
            )
        super().__init__(
            message, hint=hint or "change the spec or pick another --provider"
        )

    def table(self) -> list[str]:
        """The ``Feature | Reason`` rows as aligned text lines."""
        width = max([len("Feature"), *(len(f) for f, _ in self.rows)])
        lines = [f"  {'Feature':<{width}}  Reason"]
        lines += [f"  {f:<{width}}  {r}" for f, r in self.rows]
        return lines


class ProviderNotInstalledError(CloudnnError):
    exit_code = 2


class NotFoundError(CloudnnError):
    exit_code = 2


class FileConflictError(CloudnnError):
    """Writing would overwrite files that already exist (e.g. ``cloudnn init``)."""

    exit_code = 2


class MissingDependencyError(CloudnnError):
    """An optional package is not installed; the hint names the pip extra."""

    exit_code = 2


class ExportError(CloudnnError):
    """The model could not be exported, or the export does not match PyTorch."""


class AuthenticationError(CloudnnError):
    exit_code = 2


class QuotaExceededError(CloudnnError):
    pass


class CapacityError(CloudnnError):
    pass


class TransientError(CloudnnError):
    """A temporary provider failure (5xx, connection reset, unavailable)."""

    retryable = True


class ThrottledError(TransientError):
    """The API throttled the calls (retried; raised past the retry budget)."""


class JobFailedError(CloudnnError):
    pass


class EndpointError(CloudnnError):
    pass


class CloudnnTimeoutError(CloudnnError):
    pass
