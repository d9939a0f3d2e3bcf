"""cloudnn: one neural-network spec, trained and served locally or on any cloud.

>>> import cloudnn
>>> run = cloudnn.train("spec.yaml")              # local PyTorch by default
>>> plan = cloudnn.plan("spec.yaml", provider="local")

Importing cloudnn loads neither torch nor any vendor SDK; they load on the
code path that needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cloudnn.errors import (
    AuthenticationError,
    CapacityError,
    CloudnnError,
    CloudnnTimeoutError,
    EndpointError,
    ExportError,
    FileConflictError,
    JobFailedError,
    MissingDependencyError,
    NotFoundError,
    ProviderNotInstalledError,
    QuotaExceededError,
    SpecError,
    ThrottledError,
    TransientError,
    UnsupportedFeatureError,
)

if TYPE_CHECKING:
    from cloudnn.client import Client, Run, SpecLike
    from cloudnn.provider import TrainingPlan
    from cloudnn.spec import Spec

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "CapacityError",
    "Client",
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
    "Run",
    "Spec",
    "SpecError",
    "ThrottledError",
    "TransientError",
    "UnsupportedFeatureError",
    "__version__",
    "deploy",
    "evaluate",
    "load_spec",
    "plan",
    "train",
]

_LAZY = {
    "Client": "cloudnn.client",
    "Run": "cloudnn.client",
    "Spec": "cloudnn.spec",
    "load_spec": "cloudnn.spec",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cloudnn' has no attribute {name!r}")


def plan(spec: SpecLike, *, provider: str = "local") -> TrainingPlan:
    """Offline training plan for ``spec`` on ``provider`` (no side effects)."""
    from cloudnn.client import Client

    return Client(quiet=True).plan(spec, provider=provider)


def train(spec: SpecLike, *, provider: str = "local", **kwargs: Any) -> Run:
    """Train ``spec`` on ``provider`` and wait; see :meth:`Client.train`."""
    from cloudnn.client import Client

    return Client().train(spec, provider=provider, **kwargs)


def evaluate(run_id: str, *, data: str | None = None) -> dict[str, Any]:
    """Metrics of a finished run; see :meth:`Client.evaluate`."""
    from cloudnn.client import Client

    return Client(quiet=True).evaluate(run_id, data=data)


def deploy(target: SpecLike | str, *, provider: str = "local", **kwargs: Any) -> Any:
    """Deploy a run (id) or a spec's latest run as an endpoint; see :meth:`Client.deploy`."""
    from cloudnn.client import Client

    return Client().deploy(target, provider=provider, **kwargs)
