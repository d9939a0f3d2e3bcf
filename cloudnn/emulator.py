"""Local cloud emulators: find and start the one a provider package ships.

A provider distribution may ship an emulator of its cloud that really runs
jobs on this machine (``cloudnn_aws.testing`` for SageMaker, ...). It
registers a start function in the ``cloudnn.emulators`` entry-point group::

    [project.entry-points."cloudnn.emulators"]
    aws = "cloudnn_aws.testing:start"

The function is called as ``start(host=..., port=..., workdir=...)`` (port
``None``: a free one; ``workdir``: where the emulator keeps jobs, models and
logs, ``None``: a temporary folder) and returns a running
:class:`Emulator`. ``cloudnn emulator --provider P`` prints its ``env`` as
``NAME=value`` lines -- the variables with which the provider's real code
(boto3, the GAPIC clients, ...) talks to it -- and serves until interrupted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from cloudnn.errors import ProviderNotInstalledError

__all__ = [
    "ENTRY_POINT_GROUP",
    "Emulator",
    "available_emulators",
    "emulator_process",
    "start_emulator",
]

ENTRY_POINT_GROUP = "cloudnn.emulators"


class Emulator(Protocol):
    """A running emulator: where it listens and how to point clients at it."""

    #: the environment that points the provider's real code at the emulator
    env: Mapping[str, str]
    #: its main address, e.g. ``http://127.0.0.1:5000``
    url: str

    def stop(self) -> None:
        """Stop serving and every job or endpoint process it started."""


@lru_cache(maxsize=1)
def _entry_points() -> dict[str, str]:
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_emulators() -> list[str]:
    """Provider names with an installed emulator."""
    return sorted(_entry_points())


def start_emulator(
    provider: str,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    workdir: str | os.PathLike[str] | None = None,
    **options: Any,
) -> Emulator:
    """Start provider ``provider``'s emulator; raise naming the extra if missing."""
    import importlib

    target = _entry_points().get(provider)
    hint = f'pip install "cloudnn-{provider}[testing]"'
    if target is None:
        have = ", ".join(available_emulators()) or "none"
        raise ProviderNotInstalledError(
            f"no emulator for provider {provider!r} is installed (installed: {have})",
            hint=hint,
        )
    module_name, _, attr = target.partition(":")
    try:
        start = getattr(importlib.import_module(module_name), attr)
    except ImportError as exc:
        raise ProviderNotInstalledError(
            f"the {provider} emulator cannot be imported "
            f"({getattr(exc, 'name', None) or exc})",
            hint=hint,
        ) from exc
    emulator: Emulator = start(host=host, port=port, workdir=workdir, **options)
    return emulator


@contextlib.contextmanager
def emulator_process(
    provider: str,
    *,
    env: Mapping[str, str] | None = None,
    workdir: str | os.PathLike[str] | None = None,
    stderr: str | os.PathLike[str] | None = None,
) -> Iterator[tuple[subprocess.Popen[str], dict[str, str]]]:
    """``cloudnn emulator --provider P`` in a subprocess, as a user starts it.

    Yields the process and the variables it printed (read up to its ``#``
    line): ``env`` plus those points cloudnn at it. Interrupts it (SIGINT: it
    stops its jobs and servers) on the way out. ``stderr``: a file for its
    log (default: discarded).
    """
    command = [sys.executable, "-m", "cloudnn.cli.main", "emulator", "-p", provider]
    if workdir is not None:
        command += ["--workdir", str(workdir)]
    err: Any = open(stderr, "w") if stderr is not None else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        command,
        env=dict(os.environ if env is None else env),
        stdout=subprocess.PIPE,
        stderr=err,
        text=True,
        start_new_session=True,  # its jobs and servers form one group with it
    )
    try:
        printed: dict[str, str] = {}
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("#"):
                break
            name, _, value = line.rstrip("\n").partition("=")
            printed[name] = value
        else:
            detail = Path(stderr).read_text()[-2000:] if stderr is not None else ""
            raise RuntimeError(f"the {provider} emulator did not start\n{detail}")
        yield proc, printed
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if err is not subprocess.DEVNULL:
            err.close()
