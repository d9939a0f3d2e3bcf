"""Retries in one place: only retryable errors, capped back-off, Retry-After honoured."""

from __future__ import annotations

import email.utils
import random
import time

import pytest

from cloudnn.errors import (
    AuthenticationError,
    CapacityError,
    SpecError,
    ThrottledError,
    TransientError,
)
from cloudnn.retry import RetryPolicy, call, map_errors, parse_retry_after


class VendorThrottle(Exception):
    pass


class VendorDenied(Exception):
    pass


def _mapper(exc: BaseException) -> ThrottledError | AuthenticationError | None:
    if isinstance(exc, VendorThrottle):
        return ThrottledError("Rate exceeded", retry_after=None)
    if isinstance(exc, VendorDenied):
        return AuthenticationError("access denied", hint="check your credentials")
    return None


def _flaky(errors: list[BaseException], result: str = "ok"):  # type: ignore[no-untyped-def]
    calls = []

    def fn() -> str:
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return result

    return fn, calls


def test_throttling_is_retried_with_capped_jittered_backoff() -> None:
    sleeps: list[float] = []
    fn, calls = _flaky([VendorThrottle()] * 5)
    policy = RetryPolicy(attempts=8, initial=1.0, maximum=4.0)
    assert (
        call(
            fn, mapper=_mapper, policy=policy, sleep=sleeps.append, rng=random.Random(1)
        )
        == "ok"
    )
    assert len(calls) == 6 and len(sleeps) == 5
    assert all(0 <= s <= 4.0 for s in sleeps)
    ceilings = [min(4.0, 1.0 * 2**i) for i in range(5)]
    assert all(s <= c for s, c in zip(sleeps, ceilings, strict=True))


def test_retry_after_is_honoured() -> None:
    sleeps: list[float] = []
    fn, _ = _flaky([ThrottledError("slow down", retry_after=3.5)])
    call(fn, sleep=sleeps.append)
    assert sleeps == [3.5]


def test_user_errors_are_never_retried_and_keep_their_cause() -> None:
    for error in (VendorDenied(),):
        fn, calls = _flaky([error])
        with pytest.raises(AuthenticationError) as info:
            call(fn, mapper=_mapper, sleep=lambda s: None)
        assert len(calls) == 1
        assert isinstance(info.value.__cause__, VendorDenied)
    for error in (SpecError("x", "bad"), CapacityError("no capacity")):
        fn, calls = _flaky([error])
        with pytest.raises(type(error)):
            call(fn, sleep=lambda s: None)
        assert len(calls) == 1


def test_giving_up_says_how_often_it_tried() -> None:
    fn, calls = _flaky([TransientError("HTTP 503")] * 10)
    with pytest.raises(TransientError) as info:
        call(
            fn,
            what="CreateEndpoint",
            policy=RetryPolicy(attempts=3),
            sleep=lambda s: None,
        )
    assert len(calls) == 3
    assert str(info.value) == "CreateEndpoint: HTTP 503 (gave up after 3 attempts)"


def test_the_deadline_bounds_the_total_time(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    fn, calls = _flaky([TransientError("503")] * 100)
    policy = RetryPolicy(attempts=100, initial=10.0, maximum=10.0, deadline=35.0)
    monkeypatch.setattr(time, "monotonic", lambda: now[0])  # tenacity's clock
    with pytest.raises(TransientError):
        call(fn, policy=policy, sleep=sleep, rng=random.Random(0))
    # no attempt starts after the deadline: at most one wait beyond it
    assert len(calls) < 100 and now[0] <= 35.0 + 10.0, (len(calls), now[0])


def test_unknown_vendor_errors_pass_through_unchanged() -> None:
    with pytest.raises(KeyError), map_errors(_mapper):
        raise KeyError("not a vendor error")


def test_parse_retry_after() -> None:
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= (parse_retry_after(later) or 0) <= 31
