"""The job-event protocol: structured lines a job prints and every client parses.

A job (the built-in trainer, the script runner, any provider's container)
prints progress as one JSON object per line behind :data:`EVENT_PREFIX`::

    ::cloudnn:: {"event": "epoch", "epoch": 3, "total": 60, "train_loss": 0.41, ...}

The lines travel through whatever log stream the backend has (a local file,
CloudWatch Logs, Cloud Logging, Azure job logs), and :class:`cloudnn.Client`
turns them into a progress bar. Standard library only: imported by the job
before anything heavy, and by the client without torch.

Events: ``start`` (``epochs``, ``run_id``, ...), ``resume`` (``epoch``),
``epoch`` (``epoch``, ``total``, ``train_loss``, ``val_loss``, ``val_metric``),
``early_stop``, ``preempted``, ``log`` (``message``), ``finished``
(``headline``, ``fit``), ``failed`` (``message``).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "EVENT_PREFIX",
    "EXIT_PREEMPTED",
    "TERMINAL_EVENTS",
    "emit",
    "first_line",
    "parse_event",
]

#: prefix of the structured progress events a job prints to its log
EVENT_PREFIX = "::cloudnn:: "

#: exit status after SIGTERM: checkpoint saved, job stopped on purpose (128 + 15)
EXIT_PREEMPTED = 143

#: events after which the job is about to end: worth a status call right away
TERMINAL_EVENTS = frozenset({"finished", "failed", "preempted"})


def emit(event: str, **fields: Any) -> None:
    """Print one structured event line (flushed: logs are read while it runs)."""
    print(EVENT_PREFIX + json.dumps({"event": event, **fields}), flush=True)


def parse_event(line: str) -> dict[str, Any] | None:
    """The structured event in a job log line, if it is one."""
    at = line.find(EVENT_PREFIX)
    if at < 0:
        return None
    try:
        event = json.loads(line[at + len(EVENT_PREFIX) :])
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def first_line(exc: BaseException) -> str:
    """``"Type: first line of the message"``; never fails on an empty message."""
    lines = str(exc).strip().splitlines()
    name = type(exc).__name__
    return f"{name}: {lines[0]}" if lines else name
