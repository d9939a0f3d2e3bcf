"""Lazy provider registry.

Providers are named by *import strings*; nothing is imported until a provider
is asked for. Third-party (and first-party) providers plug in through the
``cloudnn.providers`` entry-point group, or at run time with
:func:`register_provider`.
"""

from __future__ import annotations

import importlib
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from cloudnn.errors import ProviderNotInstalledError

if TYPE_CHECKING:
    from cloudnn.provider import Provider

__all__ = [
    "available_providers",
    "get_provider",
    "known_providers",
    "provider_class",
    "register_provider",
    "unregister_provider",
]

ENTRY_POINT_GROUP = "cloudnn.providers"

# name -> (import string, install hint). Entry points override the import string.
_KNOWN: dict[str, tuple[str, str]] = {
    "aws": ("cloudnn_aws:SageMakerProvider", 'pip install "cloudnn[aws]"'),
    "azure": ("cloudnn_azure:AzureMLProvider", 'pip install "cloudnn[azure]"'),
    "gcp": ("cloudnn_gcp:VertexAIProvider", 'pip install "cloudnn[gcp]"'),
    "local": ("cloudnn.local:LocalProvider", 'pip install "cloudnn"'),
}
_REGISTERED: dict[str, str | type[Provider]] = {}


@lru_cache(maxsize=1)
def _entry_points() -> dict[str, str]:
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def register_provider(
    name: str, target: str | type[Provider], *, clobber: bool = False
) -> None:
    """Register a provider class (or ``"pkg.mod:Class"`` string) under ``name``."""
    if not clobber and (name in _REGISTERED or name in _entry_points()):
        raise ValueError(f"provider {name!r} is already registered")
    _REGISTERED[name] = target


def unregister_provider(name: str) -> None:
    """Forget a :func:`register_provider` registration (entry points stay)."""
    _REGISTERED.pop(name, None)


def known_providers() -> list[str]:
    """Every provider name cloudnn knows of, installed or not."""
    return sorted(set(_KNOWN) | set(_entry_points()) | set(_REGISTERED))


def available_providers() -> list[str]:
    """Provider names whose distribution is installed (by entry point or registration)."""
    return sorted(set(_entry_points()) | set(_REGISTERED) | {"local"})


def _load(target: str) -> type[Provider]:
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr)  # type: ignore[no-any-return]


def provider_class(name: str) -> type[Provider]:
    """The class of provider ``name``; raise with the pip command if it is missing.

    Precedence: :func:`register_provider`, then the ``cloudnn.providers``
    entry points, then the built-in table of known names.
    """
    target: str | type[Provider] | None = _REGISTERED.get(name)
    if target is None:
        target = _entry_points().get(name)
    hint = _KNOWN.get(name, ("", f"install the distribution providing {name!r}"))[1]
    if target is None:
        if name not in _KNOWN:
            raise ProviderNotInstalledError(
                f"unknown provider {name!r}; known: {', '.join(known_providers())}",
                hint="pick one of the known providers with --provider",
            )
        target = _KNOWN[name][0]
    if isinstance(target, str):
        try:
            cls = _load(target)
        except ImportError as exc:
            missing = getattr(exc, "name", None) or str(exc)
            raise ProviderNotInstalledError(
                f"provider {name!r} is not installed (cannot import {missing})",
                hint=hint,
            ) from exc
    else:
        cls = target
    return cls


def get_provider(name: str, **options: Any) -> Provider:
    """An instance of provider ``name`` built with ``options`` (``home=``, region, ...).

    An option the provider does not take is a :class:`SpecError` naming it.
    """
    import inspect

    cls = provider_class(name)
    params = inspect.signature(cls).parameters.values()
    if not any(p.kind is p.VAR_KEYWORD for p in params):
        accepted = {p.name for p in params if p.kind is not p.VAR_POSITIONAL}
        unknown = sorted(set(options) - accepted)
        if unknown:
            from cloudnn.errors import SpecError

            raise SpecError(
                f"providers.{name}",
                f"unknown option(s) {', '.join(map(repr, unknown))} for provider "
                f"{name!r}",
                hint=(
                    "use one of: " + ", ".join(sorted(accepted - {"home"}))
                    if accepted - {"home"}
                    else f"provider {name!r} takes no options"
                ),
            )
    return cls(**options)
