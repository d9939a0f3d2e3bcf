"""An in-memory provider with a fake clock: scripted jobs and endpoints, no processes.

:class:`FakeProvider` behaves like a cloud -- jobs move through states over
(fake) minutes, print the runtime's log events, can be cancelled, endpoints
take a while to come up -- but runs nothing and answers in microseconds. It
counts every SPI call and injects errors on demand, which is what the
Client's own tests need (back-off, Ctrl-C, failure recording, adoption), and
it passes the provider contract suite itself.

>>> clock = FakeClock()
>>> fake = FakeProvider(clock=clock, epoch_seconds=60.0)   # spec.train.epochs of 60 s
>>> client = cloudnn.Client(providers={"fake": fake}, clock=clock)
>>> client.train(spec, provider="fake").state
'SUCCEEDED'
>>> fake.calls["get_job"]                                 # status calls it cost
14

With the default real clock (``time.monotonic``) and sub-second durations it
runs the contract suite in real time.
"""

from __future__ import annotations

import collections
import hashlib
import json
import random
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloudnn.bundle import channels, content_sha256
from cloudnn.client import Clock
from cloudnn.errors import CloudnnError, EndpointError, NotFoundError, ThrottledError
from cloudnn.provider import (
    Capability,
    CheckReport,
    EndpointPlan,
    EndpointRef,
    EndpointState,
    EndpointStatus,
    JobRef,
    JobState,
    JobStatus,
    LogLine,
    Phase,
    Provider,
    TrainingPlan,
    Upload,
)
from cloudnn.retry import RetryPolicy, call
from cloudnn.runtime.events import EVENT_PREFIX
from cloudnn.spec import Spec

__all__ = ["FakeClock", "FakeProvider"]


class _RealClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class FakeClock:
    """A clock whose ``sleep`` advances time at once (and records each sleep)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class _Job:
    name: str
    plan: TrainingPlan
    submitted_at: float
    cancelled_at: float | None = None
    lines: list[tuple[float, str]] = field(default_factory=list)


@dataclass
class _Endpoint:
    name: str
    plan: EndpointPlan
    created_at: float


def _event(kind: str, **fields: Any) -> str:
    return EVENT_PREFIX + json.dumps({"event": kind, **fields})


class FakeProvider(Provider):
    """A scripted cloud in memory. Options:

    ``clock``: anything with ``monotonic()`` and ``sleep()``; a
    :class:`FakeClock` shared with the Client makes minutes pass at once
    (default: real time).
    ``queued_seconds``, ``provisioning_seconds``: time a job spends QUEUED,
    then PROVISIONING; it then runs ``spec.train.epochs`` epochs of
    ``epoch_seconds`` each, printing the runtime's log events.
    ``final``: the state it ends in (SUCCEEDED or FAILED), ``final_message``.
    ``stop_seconds``: how long a cancelled job takes to end CANCELLED.
    ``endpoint_seconds``: how long an endpoint is Creating.
    ``throttle``: fraction of calls answered with a throttling error (retried
    by :func:`cloudnn.retry.call`, sleeping on ``clock``).
    """

    name = "fake"
    unsupported = {
        Capability.REMOTE_DATA: "the fake provider has no storage to read URIs from",
        Capability.AUTOSCALING: "the fake provider serves from one replica only",
    }
    poll_interval = 5.0
    max_poll_interval = 60.0
    cancel_timeout = 300.0
    endpoint_timeout = 1800.0

    def __init__(
        self,
        *,
        home: str | Path | None = None,
        clock: Clock | None = None,
        queued_seconds: float = 30.0,
        provisioning_seconds: float = 90.0,
        epoch_seconds: float = 60.0,
        final: JobState = JobState.SUCCEEDED,
        final_message: str = "",
        stop_seconds: float = 20.0,
        endpoint_seconds: float = 240.0,
        throttle: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__(home=home)
        self.clock: Clock = clock or _RealClock()
        self.queued_seconds = queued_seconds
        self.provisioning_seconds = provisioning_seconds
        self.epoch_seconds = epoch_seconds
        self.final = final
        self.final_message = final_message
        self.stop_seconds = stop_seconds
        self.endpoint_seconds = endpoint_seconds
        self.throttle = throttle
        self.calls: collections.Counter[str] = collections.Counter()
        self.creates: collections.Counter[str] = collections.Counter()
        self.jobs: dict[str, _Job] = {}
        self.endpoints: dict[str, _Endpoint] = {}
        self._faults: dict[str, list[CloudnnError]] = collections.defaultdict(list)
        self._rng = random.Random(seed)

    # -- test controls --------------------------------------------------------

    def fail_next(self, method: str, error: CloudnnError, *, times: int = 1) -> None:
        """The next ``times`` calls of SPI ``method`` raise ``error``."""
        self._faults[method].extend([error] * times)

    def _api(self, method: str) -> None:
        """One "API call": counted, maybe throttled or failed, retried like a cloud's."""

        def attempt() -> None:
            self.calls[method] += 1
            if self._faults[method]:
                raise self._faults[method].pop(0)
            if self.throttle and self._rng.random() < self.throttle:
                raise ThrottledError(f"{method}: rate exceeded", retry_after=None)

        call(
            attempt,
            what=method,
            sleep=self.clock.sleep,
            rng=self._rng,
            policy=RetryPolicy(attempts=12, deadline=600.0),
        )

    # -- SPI --------------------------------------------------------------------

    def check(self) -> CheckReport:
        self._api("check")
        return CheckReport(self.name, True, (("fake credentials", True, ""),))

    def plan_training(self, spec: Spec, *, run_id: str) -> TrainingPlan:
        self.refuse_unsupported(spec, Phase.TRAINING)
        name = f"{spec.name}-{hashlib.sha256(run_id.encode()).hexdigest()[:10]}"
        uploads = []
        for ch in channels(spec):
            sha, size = content_sha256(ch.source)
            target = ch.filename or ch.name
            uploads.append(
                Upload(ch.source, f"fake://data/{sha}/{target}", sha, size, "data")
            )
        request = {
            "kind": "fake.CreateJob",
            "name": name,
            "spec_hash": spec.spec_hash(),
            "channels": {u.destination: u.size for u in uploads},
        }
        return TrainingPlan(
            provider=self.name,
            spec=spec,
            run_id=run_id,
            job_name=name,
            requests=(request,),
            instance_type="fake.cpu",
            instance_count=spec.resources.nodes,
            processes_per_node=1,
            accelerator=spec.resources.accelerator,
            hourly_cost_usd=0.0,
            estimated_cost_usd=0.0,
            model_uri=f"fake://models/{name}",
            output_uri=f"fake://outputs/{name}",
            uploads=tuple(uploads),
        )

    def plan_endpoint(self, spec: Spec, model_uri: str) -> EndpointPlan:
        self.refuse_unsupported(spec, Phase.ENDPOINT)
        digest = hashlib.sha256(model_uri.encode()).hexdigest()[:8]
        name = f"{spec.name[:20]}-{digest}"
        return EndpointPlan(
            provider=self.name,
            spec=spec,
            endpoint_name=name,
            model_uri=model_uri,
            requests=({"kind": "fake.CreateEndpoint", "name": name},),
            instance_type="fake.cpu",
            replicas=spec.deploy.replicas,
            hourly_cost_usd=0.0,
        )

    def submit_training(self, plan: TrainingPlan) -> JobRef:
        self._api("submit_training")
        if plan.job_name not in self.jobs:  # a re-submit adopts
            self.creates["job"] += 1
            self.jobs[plan.job_name] = _Job(plan.job_name, plan, self.clock.monotonic())
        return JobRef(self.name, plan.run_id, plan.job_name, {"job": plan.job_name})

    def _job(self, ref: JobRef) -> _Job:
        job = self.jobs.get(ref.job_id)
        if job is None:
            raise NotFoundError(f"no fake job {ref.job_id!r}")
        return job

    def _timeline(self, job: _Job) -> tuple[float, float, float]:
        """When the job starts provisioning, starts running, and ends."""
        provisioning = job.submitted_at + self.queued_seconds
        running = provisioning + self.provisioning_seconds
        end = running + job.plan.spec.train.epochs * self.epoch_seconds
        return provisioning, running, end

    def _state(self, job: _Job, at: float) -> tuple[JobState, str]:
        provisioning, running, end = self._timeline(job)
        stop = job.cancelled_at
        if stop is not None and at >= stop + self.stop_seconds:
            return JobState.CANCELLED, "stopped on request"
        if at < provisioning:
            return JobState.QUEUED, ""
        if at < running:
            return JobState.PROVISIONING, ""
        if at < end:
            return JobState.RUNNING, ""
        return self.final, self.final_message

    def _lines(self, job: _Job, now: float) -> list[tuple[float, str]]:
        """Every log line the job has printed by ``now``, with its time."""
        _, running, end = self._timeline(job)
        epochs = job.plan.spec.train.epochs
        lines: list[tuple[float, str]] = [
            (running, _event("start", epochs=epochs, run_id=job.plan.run_id))
        ]
        stop = job.cancelled_at if job.cancelled_at is not None else end
        for epoch in range(1, epochs + 1):
            at = running + epoch * self.epoch_seconds
            if at > min(now, stop):
                break  # computed lazily: a long job has many epochs
            loss = round(1.0 / epoch, 4)
            lines.append(
                (at, _event("epoch", epoch=epoch, total=epochs, train_loss=loss))
            )
        if job.cancelled_at is not None and job.cancelled_at < end:
            lines.append((job.cancelled_at, _event("preempted", epoch=0, step=0)))
        elif self.final is JobState.SUCCEEDED:
            lines.append((end, _event("finished", headline={"accuracy": 0.9})))
        else:
            lines.append((end, _event("failed", message=self.final_message)))
        return [(t, text) for t, text in lines if t <= now]

    def get_job(self, ref: JobRef) -> JobStatus:
        self._api("get_job")
        job = self._job(ref)
        state, message = self._state(job, self.clock.monotonic())
        metrics = {"headline": {"accuracy": 0.9}} if state is JobState.SUCCEEDED else {}
        return JobStatus(state, message, state.value.lower(), metrics)

    def stream_logs(self, ref: JobRef, since: Any = None) -> Iterator[LogLine]:
        self._api("stream_logs")
        lines = self._lines(self._job(ref), self.clock.monotonic())
        start = int(since) + 1 if since is not None else 0
        for index in range(start, len(lines)):
            at, text = lines[index]
            yield LogLine(text, cursor=index, timestamp=at)

    def cancel_job(self, ref: JobRef) -> None:
        self._api("cancel_job")
        job = self._job(ref)
        if (
            job.cancelled_at is None
            and not self._state(job, self.clock.monotonic())[0].terminal
        ):
            job.cancelled_at = self.clock.monotonic()

    def create_endpoint(self, plan: EndpointPlan) -> EndpointRef:
        self._api("create_endpoint")
        if plan.endpoint_name not in self.endpoints:
            self.creates["endpoint"] += 1
            self.endpoints[plan.endpoint_name] = _Endpoint(
                plan.endpoint_name, plan, self.clock.monotonic()
            )
        return EndpointRef(
            self.name, plan.endpoint_name, f"fake://{plan.endpoint_name}"
        )

    def get_endpoint(self, ref: EndpointRef) -> EndpointStatus:
        self._api("get_endpoint")
        endpoint = self.endpoints.get(ref.name)
        if endpoint is None:
            raise NotFoundError(f"no fake endpoint {ref.name!r}")
        ready = self.clock.monotonic() >= endpoint.created_at + self.endpoint_seconds
        state = EndpointState.IN_SERVICE if ready else EndpointState.CREATING
        return EndpointStatus(state, "", state.value, f"fake://{ref.name}")

    def invoke(self, ref: EndpointRef, payload: Mapping[str, Any]) -> dict[str, Any]:
        self._api("invoke")
        if ref.name not in self.endpoints:
            raise EndpointError(f"no fake endpoint {ref.name!r}")
        instances = payload.get("instances")
        if not isinstance(instances, list):
            raise EndpointError('send {"instances": [...]}')
        return {"predictions": [{"label": len(str(x)) % 3} for x in instances]}

    def delete_endpoint(self, ref: EndpointRef) -> None:
        self._api("delete_endpoint")
        self.endpoints.pop(ref.name, None)

    def download(self, uri: str, dest: Path) -> Path:
        self._api("download")
        if not uri.startswith("fake://models/") or uri[14:] not in self.jobs:
            raise NotFoundError(f"no fake model at {uri}")
        dest.mkdir(parents=True, exist_ok=True)
        meta = {"format": 1, "fake": True, "source": uri}
        (dest / "cloudnn_model.json").write_text(json.dumps(meta))
        return dest
