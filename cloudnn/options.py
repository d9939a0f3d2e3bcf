"""Provider options: keyword options over environment variables, validated.

Every provider takes keyword options (``region``, ``endpoint_url``, ...) and
also reads its vendor's standard environment variables, the options winning.
:func:`load_options` does that once for all of them, with a pydantic model
of the options and a table ``option -> variables``; a bad value is a
:class:`~cloudnn.errors.SpecError` naming where it came from (the option, or
the variable it was read from).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from cloudnn.errors import SpecError

__all__ = ["load_options"]

M = TypeVar("M", bound=BaseModel)


def load_options(
    model: type[M],
    options: Mapping[str, Any],
    variables: Mapping[str, tuple[str, ...]],
    *,
    provider: str,
    environ: Mapping[str, str] | None = None,
) -> M:
    """``options`` over the first set variable of each option, as ``model``.

    ``variables`` maps an option to the environment variables read for it, in
    order. ``poll_interval``/``max_poll_interval``, where the model has them,
    are kept in order (the maximum is never below the start).
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name, names in variables.items():
        for var in names:
            if env.get(var):
                values[name] = env[var]
                break
    values.update({k: v for k, v in options.items() if v is not None})
    try:
        config = model.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else "options"
        if first["type"] == "extra_forbidden":
            known = ", ".join(sorted(model.model_fields))
            raise SpecError(
                f"providers.{provider}",
                f"unknown option {name!r} for provider {provider!r}",
                hint=f"use one of: {known}",
            ) from None
        from_env = name not in options and name in variables
        where = (
            " or ".join(variables[name]) if from_env else f"provider option {name!r}"
        )
        raise SpecError(
            f"{provider}.{name}",
            f"{first['msg']} (from {where}: {values.get(name)!r})",
            hint=f"fix {where}",
        ) from None
    start = getattr(config, "poll_interval", None)
    most = getattr(config, "max_poll_interval", None)
    if start is not None and most is not None and most < start:
        config = config.model_copy(update={"max_poll_interval": start})
    return config
