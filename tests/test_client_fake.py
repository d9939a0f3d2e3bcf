"""The Client against the in-memory fake provider and a fake clock.

Minutes of cloud time pass in microseconds, so these check what would take
an hour against a real cloud: how often the Client asks for a job's state,
what Ctrl-C does, what a failure leaves in the registry, adoption.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
from conftest import write_csv

from cloudnn.client import Client
from cloudnn.errors import (
    AuthenticationError,
    CloudnnTimeoutError,
    JobFailedError,
    ThrottledError,
)
from cloudnn.provider import JobState
from cloudnn.runtime.events import parse_event
from cloudnn.testing.fake import FakeClock, FakeProvider


@pytest.fixture
def spec(tmp_path: Path) -> dict[str, Any]:
    data = write_csv(
        tmp_path / "train.csv",
        ["a", "b", "label"],
        [[i % 7, (i * 3) % 5, i % 2] for i in range(40)],
    )
    return {
        "name": "fake-run",
        "task": "classification",
        "model": {"type": "mlp", "hidden_sizes": [4]},
        "data": {"train": str(data), "target": "label"},
        "train": {"epochs": 8},
    }


def _client(**fake_options: Any) -> tuple[Client, FakeProvider, FakeClock]:
    clock = FakeClock()
    fake = FakeProvider(clock=clock, **fake_options)
    return Client(quiet=True, providers={"fake": fake}, clock=clock), fake, clock


def test_a_ten_minute_job_costs_few_status_calls(spec: dict[str, Any]) -> None:
    # 30 s queued + 90 s provisioning + 8 epochs x 60 s = 10 minutes
    client, fake, clock = _client()
    start = clock.now
    run = client.train(spec, provider="fake")
    assert run.state == "SUCCEEDED"
    took = clock.now - start
    assert 600 <= took <= 600 + 60, took  # noticed within one maximum interval
    assert fake.calls["get_job"] <= 25, fake.calls
    # it backs off: no wait longer than the maximum (+ jitter), first ones short
    assert max(clock.sleeps) <= fake.max_poll_interval * 1.1
    assert min(clock.sleeps[:2]) <= fake.poll_interval * 1.1


def test_the_end_of_the_log_triggers_a_status_call(spec: dict[str, Any]) -> None:
    # the job ends long after the last back-off step: the "finished" log line,
    # not the 60 s schedule, tells the client to look
    client, fake, clock = _client(epoch_seconds=600.0)
    start = clock.now
    client.train({**spec, "train": {"epochs": 2}}, provider="fake")
    end = start + 30 + 90 + 2 * 600
    # logs are read at least every 4 poll intervals: far below the 60 s maximum
    assert clock.now - end <= 5 * fake.poll_interval, clock.now - end


def test_progress_comes_from_the_log_events(spec: dict[str, Any]) -> None:
    client, _, _ = _client()
    seen: list[str] = []
    run = client.train(spec, provider="fake", wait=False)
    client.wait(run, on_line=seen.append)
    events = [e["event"] for e in map(parse_event, seen) if e]
    assert events == ["start"] + ["epoch"] * 8 + ["finished"]


def test_ctrl_c_stops_the_job_and_records_it(spec: dict[str, Any]) -> None:
    client, fake, _ = _client()
    run = client.train(spec, provider="fake", wait=False)

    def interrupt_after_first_epoch(line: str) -> None:
        event = parse_event(line)
        if event and event["event"] == "epoch":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        client.wait(run, on_line=interrupt_after_first_epoch)
    assert fake.calls["cancel_job"] == 1
    assert client.run(run.run_id).state == "CANCELLED"


def test_sigterm_is_handled_like_ctrl_c(spec: dict[str, Any]) -> None:
    client, fake, _ = _client()
    run = client.train(spec, provider="fake", wait=False)

    def terminate(line: str) -> None:
        event = parse_event(line)
        if event and event["event"] == "epoch":
            signal.raise_signal(signal.SIGTERM)

    with pytest.raises(KeyboardInterrupt):
        client.wait(run, on_line=terminate)
    assert fake.calls["cancel_job"] == 1
    assert client.run(run.run_id).state == "CANCELLED"
    # the handler is gone afterwards
    assert signal.getsignal(signal.SIGTERM) in (
        signal.SIG_DFL,
        signal.default_int_handler,
    )


def test_a_failed_job_is_recorded_with_its_message(spec: dict[str, Any]) -> None:
    client, _, _ = _client(final=JobState.FAILED, final_message="CUDA out of memory")
    with pytest.raises(JobFailedError) as info:
        client.train(spec, provider="fake")
    assert "CUDA out of memory" in str(info.value)
    assert "--resume" in (info.value.hint or "")
    record = client.registry.list_runs()[0]
    assert (record.state, record.message) == ("FAILED", "CUDA out of memory")


def test_a_refused_submit_leaves_a_failed_run_and_no_job(spec: dict[str, Any]) -> None:
    client, fake, _ = _client()
    fake.fail_next("submit_training", AuthenticationError("no credentials found"))
    with pytest.raises(AuthenticationError) as info:
        client.train(spec, provider="fake")
    assert info.value.exit_code == 2
    assert fake.calls["submit_training"] == 1  # never retried: a user error
    assert not fake.jobs
    record = client.registry.list_runs()[0]
    assert record.state == "FAILED" and "no credentials" in record.message


def test_throttling_is_retried_and_creates_one_job(spec: dict[str, Any]) -> None:
    client, fake, _ = _client()
    fake.fail_next("submit_training", ThrottledError("rate exceeded"), times=3)
    run = client.train(spec, provider="fake")
    assert run.state == "SUCCEEDED"
    assert fake.calls["submit_training"] == 4
    assert fake.creates["job"] == 1


def test_heavy_throttling_everywhere_still_completes(spec: dict[str, Any]) -> None:
    client, fake, _ = _client(throttle=0.3, seed=3)
    run = client.train(spec, provider="fake")
    ep = client.deploy(run.run_id, provider="fake")
    assert ep.state == "InService"
    rows = [[1, 2], [3, 40]]
    assert ep.predict(rows) == [{"label": len(str(r)) % 3} for r in rows]
    ep.delete()
    assert (fake.creates["job"], fake.creates["endpoint"]) == (1, 1)
    assert not fake.endpoints


def test_a_detached_run_shows_its_real_state_later(spec: dict[str, Any]) -> None:
    client, _, clock = _client()
    run = client.train(spec, provider="fake", wait=False)
    assert client.run(run.run_id).state == "QUEUED"
    clock.advance(200)
    assert client.runs()[0].state == "RUNNING"
    clock.advance(600)
    again = Client(
        quiet=True,
        home=client.registry.home,
        providers={"fake": client.provider("fake")},
    )
    assert again.run(run.run_id).state == "SUCCEEDED"


def test_timeout_names_the_commands_to_follow_or_stop(spec: dict[str, Any]) -> None:
    client, _, _ = _client()
    run = client.train(spec, provider="fake", wait=False)
    with pytest.raises(CloudnnTimeoutError) as info:
        client.wait(run, timeout=60)
    assert f"cloudnn cancel {run.run_id}" in (info.value.hint or "")


def test_deploy_waits_for_the_endpoint_and_adopts_it(spec: dict[str, Any]) -> None:
    client, fake, clock = _client(endpoint_seconds=300.0)
    run = client.train(spec, provider="fake")
    before = clock.now
    ep = client.deploy(run.run_id, provider="fake")
    assert ep.state == "InService"
    assert 300 <= clock.now - before <= 300 + fake.max_poll_interval * 1.1
    again = client.deploy(run.run_id, provider="fake")
    assert again.name == ep.name and fake.creates["endpoint"] == 1
    rows = client.registry.list_endpoints()
    assert [(r.name, r.state, r.run_id) for r in rows] == [
        (ep.name, "InService", run.run_id)
    ]
    client.endpoint(ep.name).delete()
    assert client.registry.list_endpoints() == []


def test_resume_adopts_the_job_of_an_interrupted_submit(spec: dict[str, Any]) -> None:
    client, fake, _ = _client()
    run = client.train(spec, provider="fake", wait=False)
    # the CLI died before it recorded anything after the submit
    client.registry.update_run(run.run_id, state="SUBMITTING", job_id="")
    resumed = client.train(spec, provider="fake", resume=run.run_id)
    assert resumed.run_id == run.run_id and resumed.state == "SUCCEEDED"
    assert fake.creates["job"] == 1
