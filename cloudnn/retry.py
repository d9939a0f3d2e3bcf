"""Retries and vendor-error mapping, in one place, for every provider.

A provider wraps each SDK call::

    from cloudnn.retry import call

    job = call(lambda: sm.create_training_job(**request), mapper=_map_error,
               what="CreateTrainingJob")

``mapper`` turns a vendor exception into a :mod:`cloudnn.errors` error (or
``None`` to let it through unchanged); the result is raised ``from`` the
vendor exception, so ``--debug`` still shows the original. Errors whose
``retryable`` is true (:class:`~cloudnn.errors.TransientError`,
:class:`~cloudnn.errors.ThrottledError`) are retried with capped exponential
back-off and full jitter, waiting ``retry_after`` seconds instead when the
service said so (``Retry-After``); everything else -- a bad request, missing
credentials, a quota -- is raised at once. This sits on top of each SDK's own
retry policy: theirs handles a single HTTP call, this one a whole operation.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from cloudnn.errors import CloudnnError

__all__ = ["RetryPolicy", "call", "map_errors", "parse_retry_after"]

T = TypeVar("T")
Mapper = Callable[[BaseException], CloudnnError | None]


@dataclass(frozen=True)
class RetryPolicy:
    """How long to keep trying a retryable error.

    ``attempts`` calls at most, waiting ``initial`` seconds doubling to
    ``maximum`` (full jitter), and never starting an attempt after
    ``deadline`` seconds in total.
    """

    attempts: int = 8
    initial: float = 0.5
    maximum: float = 20.0
    deadline: float = 300.0


DEFAULT_POLICY = RetryPolicy()


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@contextmanager
def map_errors(mapper: Mapper) -> Iterator[None]:
    """Raise ``mapper(exc) from exc`` for vendor exceptions it recognises."""
    try:
        yield
    except CloudnnError:
        raise
    except Exception as exc:
        mapped = mapper(exc)
        if mapped is None:
            raise
        raise mapped from exc


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, CloudnnError) and exc.retryable


def _wait(policy: RetryPolicy, rng: random.Random) -> Callable[[Any], float]:
    def wait(state: Any) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        after = getattr(exc, "retry_after", None)
        if after is not None:
            return float(min(policy.maximum, max(0.0, after)))
        ceiling = min(policy.maximum, policy.initial * 2 ** (state.attempt_number - 1))
        return rng.uniform(0.0, ceiling)  # full jitter: callers spread out

    return wait


def call(
    fn: Callable[[], T],
    *,
    mapper: Mapper | None = None,
    policy: RetryPolicy = DEFAULT_POLICY,
    what: str = "",
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> T:
    """Run ``fn`` with errors mapped and retryable ones retried (see module doc)."""
    from tenacity import (
        RetryCallState,
        Retrying,
        retry_if_exception,
        stop_after_attempt,
        stop_after_delay,
    )

    attempts = 0

    def once() -> T:
        nonlocal attempts
        attempts += 1
        if mapper is None:
            return fn()
        with map_errors(mapper):
            return fn()

    def give_up(state: RetryCallState) -> T:
        exc = state.outcome.exception() if state.outcome is not None else None
        assert exc is not None
        if isinstance(exc, CloudnnError):
            where = f"{what}: " if what and not exc.message.startswith(what) else ""
            exc.message = f"{where}{exc.message} (gave up after {attempts} attempts)"
            exc.args = (exc.message,)
        raise exc

    retrying = Retrying(
        stop=stop_after_attempt(policy.attempts) | stop_after_delay(policy.deadline),
        wait=_wait(policy, rng or random.Random()),
        retry=retry_if_exception(_is_retryable),
        retry_error_callback=give_up,
        sleep=sleep,
    )
    return retrying(once)
