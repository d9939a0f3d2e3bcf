"""The user API: :class:`Client`, and the :class:`Run` and :class:`Endpoint` handles.

``cloudnn.train(spec)`` and friends open a :class:`Client` and call it: one
code path. The client owns everything around the provider SPI
(:mod:`cloudnn.provider`): the run registry (the only writer), waiting with
back-off, following logs into a progress bar, Ctrl-C/SIGTERM handling,
and fetching a cloud model back for evaluation. Retries of single API calls
live with each provider (:mod:`cloudnn.retry`).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from cloudnn.endpoints import Endpoint
from cloudnn.errors import (
    CloudnnError,
    CloudnnTimeoutError,
    EndpointError,
    JobFailedError,
    NotFoundError,
    SpecError,
)
from cloudnn.provider import (
    EndpointState,
    EndpointStatus,
    JobRef,
    JobState,
    JobStatus,
    Provider,
    TrainingPlan,
)
from cloudnn.registry import get_provider
from cloudnn.runs import EndpointRecord, RunRecord, RunRegistry
from cloudnn.runtime.events import TERMINAL_EVENTS, parse_event
from cloudnn.spec import Spec, is_uri, load_spec, saved_spec, spec_from_dict

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["Client", "Clock", "Endpoint", "Run", "SpecLike", "as_spec"]

SpecLike = Spec | str | os.PathLike[str] | dict[str, Any]

_SPEC_SUFFIXES = (".yaml", ".yml", ".json")
#: back-off factor between status calls, and the jitter around each wait
_BACKOFF = 1.5
_JITTER = 0.1
#: log reads (no status calls) back off to this many poll intervals at most
_LOG_BACKOFF_CAP = 4


class Clock(Protocol):
    """Time as the Client sees it (tests pass a fake one)."""

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class _SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def as_spec(spec: SpecLike) -> tuple[Spec, str]:
    """Accept a Spec, a YAML path or a mapping; return the spec and its file path."""
    if isinstance(spec, Spec):
        return spec, ""
    if isinstance(spec, dict):
        return spec_from_dict(spec, base_dir=Path.cwd()), ""
    return load_spec(spec), str(Path(spec).resolve())


def new_run_id(spec: Spec) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return f"{spec.name}-{stamp}-{secrets.token_hex(2)}"


class Run:
    """A training run: state, logs, metrics, and where its model is."""

    def __init__(self, client: Client, record: RunRecord) -> None:
        self._client = client
        self.record = record

    def __repr__(self) -> str:
        return f"Run({self.run_id!r}, provider={self.provider!r}, state={self.state!r})"

    @property
    def run_id(self) -> str:
        return self.record.run_id

    @property
    def provider(self) -> str:
        return self.record.provider

    @property
    def state(self) -> str:
        return self.record.state

    @property
    def metrics(self) -> dict[str, Any]:
        return self.record.metrics

    @property
    def model_uri(self) -> str:
        """Where the trained model is: a local folder or the provider's URI."""
        return self.record.model_uri

    @property
    def output_uri(self) -> str:
        """Where the run's reports (metrics.json, plots) are."""
        return self.record.output_uri

    @property
    def model_dir(self) -> Path:
        """The model as a local folder (a cloud model is downloaded once)."""
        return self._client.model_dir(self)

    @property
    def output_dir(self) -> Path:
        """The reports folder, for a run whose outputs are on this machine."""
        if not self.output_uri or is_uri(self.output_uri):
            raise NotFoundError(
                f"run {self.run_id}'s reports are at {self.output_uri or 'unknown'}",
                hint="read them with the provider's tools; metrics are in "
                "`cloudnn runs show RUN --json`",
            )
        return Path(self.output_uri)

    @property
    def ref(self) -> JobRef:
        return JobRef(
            provider=self.provider,
            run_id=self.run_id,
            job_id=self.record.job_id,
            extra=self.record.extra,
        )

    def refresh(self) -> Run:
        """Re-read the record, asking the provider when the job is not over."""
        self.record = self._client._synced(self._client.registry.get_run(self.run_id))
        return self

    def status(self) -> JobStatus:
        status = self._client.provider(self.provider).get_job(self.ref)
        self.record = self._client._record_status(self.record, status)
        return status

    def wait(self, *, timeout: float | None = None, progress: bool = True) -> Run:
        """Block until the job ends; raise :class:`JobFailedError` if it failed."""
        self._client.wait(self, timeout=timeout, progress=progress)
        return self

    def cancel(self) -> None:
        """Ask the job to stop (it checkpoints first); returns at once."""
        self._client.provider(self.provider).cancel_job(self.ref)

    def logs(self, *, follow: bool = False) -> Iterator[str]:
        """The job's log lines; with ``follow``, until the job ends."""
        yield from self._client.logs(self, follow=follow)


class Client:
    """Entry point of the SDK: plan, train, evaluate, deploy across providers.

    Args:
        home: registry folder (default ``$CLOUDNN_HOME`` or ``~/.cloudnn``);
            also handed to each provider for state of its own.
        console: a ``rich`` console for progress output (default: stderr).
        quiet: no progress output at all.
        providers: options per provider name (``{"aws": {"region": ...}}``),
            or ready provider instances.
        clock: the time source for waiting (tests pass a fake one).
    """

    def __init__(
        self,
        *,
        home: str | os.PathLike[str] | None = None,
        console: Console | None = None,
        quiet: bool = False,
        providers: Mapping[str, Mapping[str, Any] | Provider] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.registry = RunRegistry(home)
        self._console = console
        self.quiet = quiet
        self._options: dict[str, Mapping[str, Any]] = {}
        self._providers: dict[str, Provider] = {}
        for name, value in (providers or {}).items():
            if isinstance(value, Provider):
                self._providers[name] = value
            else:
                self._options[name] = dict(value)
        self.clock: Clock = clock or _SystemClock()
        self._rng = random.Random()

    @property
    def console(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=True)
        return self._console

    def provider(self, name: str) -> Provider:
        """The provider called ``name``, built once with this client's options."""
        if name not in self._providers:
            options = {"home": self.registry.home, **self._options.get(name, {})}
            self._providers[name] = get_provider(name, **options)
        return self._providers[name]

    # -- planning ------------------------------------------------------------

    def plan(
        self, spec: SpecLike, *, provider: str = "local", run_id: str | None = None
    ) -> TrainingPlan:
        """Offline plan of a training: exact requests, resources, cost, warnings."""
        s, _ = as_spec(spec)
        return self.provider(provider).plan_training(s, run_id=run_id or new_run_id(s))

    # -- training --------------------------------------------------------------

    def train(
        self,
        spec: SpecLike,
        *,
        provider: str = "local",
        resume: str | None = None,
        wait: bool = True,
        progress: bool = True,
        timeout: float | None = None,
    ) -> Run:
        """Submit a training run (or resume run ``resume``) and, by default, wait.

        The data are checked before anything is created, so bad data fail
        here, with the field named, and leave no run behind.
        """
        from cloudnn.datacheck import check_data

        s, spec_path = as_spec(spec)
        check_data(s)
        if resume is not None:
            record = self.registry.get_run(resume)
            if record.provider != provider:
                raise SpecError(
                    "--provider",
                    f"run {record.run_id} ran on {record.provider!r}, not {provider!r}",
                    hint=f"resume it with --provider {record.provider}",
                )
            if record.spec_hash != s.spec_hash():
                raise SpecError(
                    "--resume",
                    f"the spec changed since run {record.run_id} "
                    f"(hash {record.spec_hash} -> {s.spec_hash()})",
                    hint="resume with the same spec, or start a new run without --resume",
                )
            run_id = record.run_id
        else:
            run_id = new_run_id(s)
        prov = self.provider(provider)
        plan = prov.plan_training(s, run_id=run_id)
        if resume is None:
            self.registry.create_run(
                run_id=run_id,
                name=s.name,
                provider=provider,
                spec_hash=s.spec_hash(),
                spec_json=s.model_dump_json(),
                spec_path=spec_path,
                model_uri=plan.model_uri,
                output_uri=plan.output_uri,
            )
        self.registry.update_run(run_id, state="SUBMITTING", message="")
        try:
            ref = prov.submit_training(plan)
        except CloudnnError as exc:
            self.registry.update_run(run_id, state="FAILED", message=str(exc))
            raise
        except KeyboardInterrupt:
            # the create call may or may not have gone through: a resume adopts
            self.registry.update_run(
                run_id, state="SUBMITTING", message="interrupted while submitting"
            )
            raise
        self.registry.update_run(
            run_id,
            state=JobState.QUEUED.value,
            job_id=ref.job_id,
            extra=dict(ref.extra),
        )
        run = Run(self, self.registry.get_run(run_id))
        if wait:
            self.wait(run, timeout=timeout, progress=progress)
        return run

    def run(self, run_id: str) -> Run:
        """The run with this id (or unique prefix, or ``latest``), state current."""
        return Run(self, self._synced(self.registry.get_run(run_id)))

    def runs(self, *, limit: int = 50) -> list[Run]:
        """Recent runs, newest first; a run not yet over is asked for its state."""
        return [
            Run(self, self._synced(r)) for r in self.registry.list_runs(limit=limit)
        ]

    def cancel(self, run_id: str, *, wait: bool = True) -> Run:
        """Stop a run (it saves a checkpoint first) and, by default, wait for it."""
        run = self.run(run_id)
        if run.state in _TERMINAL:
            return run
        prov = self.provider(run.provider)
        prov.cancel_job(run.ref)
        if wait:
            self._wait_stopped(run, prov)
        return run.refresh()

    def logs(self, run: Run | str, *, follow: bool = False) -> Iterator[str]:
        """A run's log lines; with ``follow``, new lines until the job ends."""
        if isinstance(run, str):
            run = self.run(run)
        prov = self.provider(run.provider)
        cursor: Any = None
        interval = prov.poll_interval
        while True:
            got = False
            for line in prov.stream_logs(run.ref, since=cursor):
                cursor = line.cursor
                got = True
                yield line.text
            if not follow:
                return
            if run.refresh().state in _TERMINAL:
                for line in prov.stream_logs(run.ref, since=cursor):
                    yield line.text
                return
            interval = prov.poll_interval if got else _grow(interval, prov)
            self.clock.sleep(self._jittered(interval))

    # -- state ---------------------------------------------------------------

    def _synced(self, record: RunRecord) -> RunRecord:
        """``record`` with the job's real state, for a run not known to be over."""
        if record.state in _TERMINAL or not record.job_id:
            return record
        try:
            prov = self.provider(record.provider)
            ref = JobRef(
                provider=record.provider,
                run_id=record.run_id,
                job_id=record.job_id,
                extra=record.extra,
            )
            status = prov.get_job(ref)
        except CloudnnError:
            return record  # unreachable now: show what the registry knows
        return self._record_status(record, status)

    def _record_status(self, record: RunRecord, status: JobStatus) -> RunRecord:
        fields: dict[str, Any] = {}
        if status.state.value != record.state:
            fields["state"] = status.state.value
        if status.message != record.message:
            fields["message"] = status.message
        if status.metrics and dict(status.metrics) != record.metrics:
            fields["metrics"] = dict(status.metrics)
        if status.model_uri and status.model_uri != record.model_uri:
            fields["model_uri"] = status.model_uri
        if not fields:
            return record
        return self.registry.update_run(record.run_id, **fields)

    def _jittered(self, seconds: float) -> float:
        return seconds * self._rng.uniform(1 - _JITTER, 1 + _JITTER)

    # -- waiting -------------------------------------------------------------

    def wait(
        self,
        run: Run,
        *,
        timeout: float | None = None,
        progress: bool = True,
        on_line: Callable[[str], None] | None = None,
    ) -> JobStatus:
        """Follow a run's logs and state until it ends; progress bar per epoch.

        Status calls back off from the provider's ``poll_interval`` to its
        ``max_poll_interval``; log lines are read in between (they cost no
        status call), and a log line saying the job is ending triggers a
        status call at once. Ctrl-C, SIGTERM and SIGHUP stop the job (it
        checkpoints) and wait for it to end before re-raising.
        """
        prov = self.provider(run.provider)
        clock = self.clock
        start = clock.monotonic()
        deadline = None if timeout is None else start + timeout
        show = progress and not self.quiet
        view = _ProgressView(self.console) if show else None
        cursor: Any = None
        describe_every = prov.poll_interval
        logs_every = prov.poll_interval
        next_describe = start
        next_logs = start
        status: JobStatus | None = None
        try:
            with _signals_as_interrupt():
                while True:
                    now = clock.monotonic()
                    ending = False
                    if now >= next_logs:
                        got = False
                        for line in prov.stream_logs(run.ref, since=cursor):
                            cursor = line.cursor
                            got = True
                            event = parse_event(line.text)
                            if event and event.get("event") in TERMINAL_EVENTS:
                                ending = True
                            if on_line is not None:
                                on_line(line.text)
                            if view is not None:
                                view.line(line.text)
                        # quiet logs: look less often, but often enough to see
                        # the job's last line soon (it triggers a status call)
                        logs_every = (
                            prov.poll_interval
                            if got
                            else min(
                                _grow(logs_every, prov),
                                _LOG_BACKOFF_CAP * prov.poll_interval,
                            )
                        )
                        next_logs = now + self._jittered(logs_every)
                    if ending or now >= next_describe:
                        status = prov.get_job(run.ref)
                        run.record = self._record_status(run.record, status)
                        if status.state.terminal:
                            break
                        # ending but not ended (uploading the model): look again soon
                        describe_every = (
                            prov.poll_interval
                            if ending
                            else _grow(describe_every, prov)
                        )
                        next_describe = now + self._jittered(describe_every)
                    if deadline is not None and now > deadline:
                        state = status.state.value if status else run.state
                        raise CloudnnTimeoutError(
                            f"run {run.run_id} still {state} after {timeout:.0f} s",
                            hint=f"follow it with `cloudnn logs {run.run_id} -f`; "
                            f"stop it with `cloudnn cancel {run.run_id}`",
                        )
                    clock.sleep(max(0.0, min(next_describe, next_logs) - now))
                # the last lines (the report) may land after the final state
                for line in prov.stream_logs(run.ref, since=cursor):
                    if on_line is not None:
                        on_line(line.text)
                    if view is not None:
                        view.line(line.text)
        except KeyboardInterrupt:
            if view is not None:
                view.close()
            self._interrupted(run, prov)
            raise
        finally:
            if view is not None:
                view.close()
        assert status is not None
        run.refresh()
        if status.state == JobState.FAILED:
            raise JobFailedError(
                f"run {run.run_id} failed: {status.message or 'see its log'}",
                hint=self._failure_hint(run),
            )
        return status

    def _failure_hint(self, run: Run) -> str:
        spec = run.record.spec
        model = spec.get("model") or {}
        message = run.record.message
        logs = f"read the log with `cloudnn logs {run.run_id}`"
        if "script" in model:
            return f"fix the script, then train again; {logs}"
        if message.startswith("data.") or "SpecError" in message:
            return "fix the data or the spec, then train again (no --resume)"
        return f"{logs}; continue with `cloudnn train SPEC --resume {run.run_id}`"

    def _interrupted(self, run: Run, prov: Provider) -> None:
        """Stop the job after Ctrl-C/SIGTERM, and say where it stands."""
        self.console.print(
            f"[yellow]interrupted: stopping {run.run_id} (it saves a checkpoint)…"
        )
        with _signals_as_interrupt():
            try:
                prov.cancel_job(run.ref)
                self._wait_stopped(run, prov)
            except KeyboardInterrupt:
                self.console.print(
                    f"not waiting: {run.run_id} is still stopping; "
                    f"see `cloudnn runs show {run.run_id}`"
                )
                return
            except CloudnnError as exc:
                self.console.print(f"could not stop {run.run_id}: {exc}")
                return
        self.console.print(
            f"stopped; continue with `cloudnn train SPEC --resume {run.run_id}`"
        )

    def _wait_stopped(self, run: Run, prov: Provider) -> None:
        deadline = self.clock.monotonic() + prov.cancel_timeout
        interval = prov.poll_interval
        while True:
            status = prov.get_job(run.ref)
            run.record = self._record_status(run.record, status)
            if status.state.terminal:
                return
            if self.clock.monotonic() > deadline:
                raise CloudnnTimeoutError(
                    f"run {run.run_id} did not stop within {prov.cancel_timeout:.0f} s",
                    hint=f"check it with `cloudnn runs show {run.run_id}`",
                )
            self.clock.sleep(self._jittered(interval))
            interval = _grow(interval, prov)

    # -- models ----------------------------------------------------------------

    def _succeeded(self, run_id: str) -> Run:
        run = self.run(run_id)
        if run.state != JobState.SUCCEEDED.value:
            raise JobFailedError(
                f"run {run.run_id} is {run.state}: only a SUCCEEDED run has a model",
                hint="use a finished run (see `cloudnn runs list`)",
            )
        spec = run.record.spec
        if "script" in (spec.get("model") or {}):
            raise SpecError(
                "model.script",
                f"run {run.run_id} trained your own script, whose model format "
                "cloudnn does not know",
                hint="evaluate and serve it with your own code; cloudnn evaluates, "
                "exports and serves built-in and model.module runs",
            )
        return run

    def model_dir(self, run: Run | str) -> Path:
        """A finished run's model as a local folder (downloaded once for a cloud run)."""
        if isinstance(run, str):
            run = self._succeeded(run)
        uri = run.model_uri
        if not uri:
            raise NotFoundError(
                f"run {run.run_id} has no recorded model location",
                hint="train it again with this version of cloudnn",
            )
        dest = self.registry.home / "models" / run.run_id
        path = self.provider(run.provider).download(uri, dest)
        if not (path / "cloudnn_model.json").is_file():
            raise NotFoundError(
                f"run {run.run_id} has no cloudnn model at {uri}",
                hint="was the model folder moved or deleted?",
            )
        return path

    def evaluate(self, run_id: str, *, data: str | None = None) -> dict[str, Any]:
        """Metrics of a finished run's model on its test split or on ``data``."""
        from cloudnn.runtime.evaluate_run import evaluate_run

        run = self._succeeded(run_id)
        spec = saved_spec(run.record.spec_json)
        local_reports = run.output_uri and not is_uri(run.output_uri)
        report = evaluate_run(
            self.model_dir(run),
            data=data,
            spec=spec,
            output_dir=run.output_uri if local_reports else None,
        )
        if "fit" not in report and run.metrics.get("fit"):
            report["fit"] = run.metrics["fit"]  # as the job diagnosed it
        return report

    # -- endpoints -------------------------------------------------------------

    def deploy(
        self,
        target: SpecLike | str | Run,
        *,
        provider: str = "local",
        wait: bool = True,
        timeout: float | None = None,
        batching: Any = None,
        **overrides: Any,
    ) -> Endpoint:
        """Serve a run's model (run id, :class:`Run`, or a spec's latest success).

        ``overrides`` replace fields of the spec's ``deploy`` section
        (``port``, ``host``, ``workers``, ``runtime``, ``auth``,
        ``max_request_bytes``, ``instance_type``, ``replicas``); ``batching``
        is True, False or ``{"max_batch_size": N, "max_wait_ms": MS}``.
        Idempotent: deploying the same run again adopts its endpoint.
        """
        record, spec = self._deploy_target(target)
        spec = _with_deploy_overrides(spec, overrides, batching)
        prov = self.provider(provider)
        plan = prov.plan_endpoint(spec, record.model_uri)
        name = plan.endpoint_name
        registry = self.registry
        with contextlib.suppress(NotFoundError):
            existing = registry.get_endpoint(name)
            if existing.provider != provider:
                raise EndpointError(
                    f"endpoint name {name!r} is taken by a {existing.provider} endpoint",
                    hint=f"delete it first: cloudnn delete {name}",
                )
        # recorded before the side effect, like every create
        registry.upsert_endpoint(
            name=name,
            provider=provider,
            state=EndpointState.CREATING.value,
            run_id=record.run_id,
            extra={"model_uri": plan.model_uri},
        )
        try:
            ref = prov.create_endpoint(plan)
        except CloudnnError as exc:
            registry.upsert_endpoint(
                name=name,
                provider=provider,
                state=EndpointState.FAILED.value,
                run_id=record.run_id,
                extra={"model_uri": plan.model_uri, "message": str(exc)},
            )
            raise
        registry.upsert_endpoint(
            name=name,
            provider=provider,
            state=EndpointState.CREATING.value,
            run_id=record.run_id,
            url=ref.url,
            extra={**ref.extra, "model_uri": plan.model_uri},
        )
        endpoint = Endpoint(self, registry.get_endpoint(name))
        for warning in plan.warnings:
            if not self.quiet:
                self.console.print(f"[yellow]warning:[/] {warning}", highlight=False)
        if wait:
            self.wait_endpoint(endpoint, timeout=timeout)
        return endpoint

    def _deploy_target(self, target: Any) -> tuple[RunRecord, Spec]:
        if isinstance(target, Run | Endpoint):
            record = self._succeeded(target.run_id).record
        elif _is_spec_target(target):
            spec, _ = as_spec(target)
            record = self._succeeded(self._latest_success(spec).run_id).record
        else:
            record = self._succeeded(str(target)).record
        return record, saved_spec(record.spec_json)

    def _latest_success(self, spec: Spec) -> RunRecord:
        """Newest SUCCEEDED run of ``spec`` (same hash, else same training settings)."""
        runs = [
            r for r in self.registry.list_runs(limit=100_000) if r.state == "SUCCEEDED"
        ]
        spec_hash = spec.spec_hash()
        for record in runs:
            if record.spec_hash == spec_hash:
                return record
        # only deploy settings changed since training: the model is the same
        key = _training_key(spec.model_dump(mode="json"))
        for record in runs:
            if record.name == spec.name and _training_key(record.spec_json) == key:
                return record
        raise NotFoundError(
            f"no successful run of spec {spec.name!r} (hash {spec_hash}) in the registry",
            hint="train it first: cloudnn train SPEC",
        )

    def wait_endpoint(
        self, endpoint: Endpoint, *, timeout: float | None = None
    ) -> None:
        """Poll an endpoint (with back-off) until it is ``InService``."""
        prov = self.provider(endpoint.provider)
        limit = prov.endpoint_timeout if timeout is None else timeout
        start = self.clock.monotonic()
        deadline = start + limit
        interval = prov.poll_interval
        spinner = None
        if not self.quiet:
            spinner = self.console.status(f"endpoint {endpoint.name}: starting")
            spinner.start()
        try:
            self._poll_endpoint(
                endpoint, prov, deadline, limit, interval, spinner, start
            )
        finally:
            if spinner is not None:
                spinner.stop()

    def _poll_endpoint(
        self,
        endpoint: Endpoint,
        prov: Provider,
        deadline: float,
        limit: float,
        interval: float,
        spinner: Any,
        start: float,
    ) -> None:
        while True:
            status = self._endpoint_status(endpoint, prov)
            if spinner is not None:
                waited = self.clock.monotonic() - start
                spinner.update(
                    f"endpoint {endpoint.name}: {status.state.value} ({waited:.0f} s)"
                )
            if status.state is EndpointState.IN_SERVICE:
                return
            if status.state.settled:
                raise EndpointError(
                    f"endpoint {endpoint.name} is {status.state.value}"
                    + (f": {status.message}" if status.message else ""),
                    hint=f"read its log, fix the cause, then `cloudnn delete "
                    f"{endpoint.name}` and deploy again",
                )
            if self.clock.monotonic() > deadline:
                raise CloudnnTimeoutError(
                    f"endpoint {endpoint.name} still {status.state.value} after "
                    f"{limit:.0f} s",
                    hint=f"check it later with `cloudnn endpoints show {endpoint.name}`",
                )
            self.clock.sleep(self._jittered(interval))
            interval = _grow(interval, prov)

    def _endpoint_status(self, endpoint: Endpoint, prov: Provider) -> EndpointStatus:
        status = prov.get_endpoint(endpoint.ref)
        record = endpoint.record
        if (status.state.value, status.message, status.url or record.url) != (
            record.state,
            str(record.extra.get("message", "")),
            record.url,
        ):
            extra = {**record.extra, "message": status.message}
            endpoint.record = self.registry.upsert_endpoint(
                name=record.name,
                provider=record.provider,
                state=status.state.value,
                run_id=record.run_id,
                url=status.url or record.url,
                extra=extra,
            )
        return status

    def _refreshed(self, record: EndpointRecord) -> Endpoint:
        endpoint = Endpoint(self, record)
        with contextlib.suppress(NotFoundError):
            self._endpoint_status(endpoint, self.provider(record.provider))
        return endpoint

    def endpoint(self, name: str) -> Endpoint:
        """Handle of an existing endpoint (name or unique prefix), state current."""
        registry = self.registry
        try:
            record = registry.get_endpoint(name)
        except NotFoundError:
            matches = [r for r in registry.list_endpoints() if r.name.startswith(name)]
            if len(matches) != 1:
                if len(matches) > 1:
                    names = ", ".join(r.name for r in matches[:5])
                    raise NotFoundError(
                        f"endpoint name prefix {name!r} is ambiguous: {names}",
                        hint="give more characters of the name",
                    ) from None
                raise
            record = matches[0]
        return self._refreshed(record)

    def endpoints(self) -> list[Endpoint]:
        """Every endpoint in the registry, newest first, state current."""
        return [self._refreshed(r) for r in self.registry.list_endpoints()]

    def delete_endpoint(self, endpoint: Endpoint | str) -> None:
        """Delete an endpoint and everything created for it, then its record."""
        if isinstance(endpoint, str):
            endpoint = self.endpoint(endpoint)
        prov = self.provider(endpoint.provider)
        self.registry.upsert_endpoint(
            name=endpoint.name,
            provider=endpoint.provider,
            state=EndpointState.DELETING.value,
            run_id=endpoint.run_id,
            url=endpoint.url,
            extra=dict(endpoint.record.extra),
        )
        prov.delete_endpoint(endpoint.ref)
        self.registry.remove_endpoint(endpoint.name)


# --------------------------------------------------------------------- helpers

_TERMINAL = frozenset(s.value for s in JobState if s.terminal)


def _grow(interval: float, prov: Provider) -> float:
    return min(prov.max_poll_interval, max(prov.poll_interval, interval * _BACKOFF))


@contextlib.contextmanager
def _signals_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP behave like Ctrl-C while waiting on a job.

    ``timeout`` and a closed terminal must stop the job cleanly too, not leave
    it running with nobody watching.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    wanted = [signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    previous = {sig: signal.signal(sig, interrupt) for sig in wanted}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _is_spec_target(target: Any) -> bool:
    if isinstance(target, Spec | dict):
        return True
    if isinstance(target, str | os.PathLike):
        p = Path(target)
        return p.suffix.lower() in _SPEC_SUFFIXES or p.is_file()
    return False


def _training_key(spec_json: str | dict[str, Any]) -> str:
    """The spec minus ``deploy``: two specs with the same key train the same model."""
    data = json.loads(spec_json) if isinstance(spec_json, str) else dict(spec_json)
    data.pop("deploy", None)
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def _with_deploy_overrides(
    spec: Spec, overrides: Mapping[str, Any], batching: Any
) -> Spec:
    from pydantic import BaseModel, ValidationError

    from cloudnn.spec import BatchingSpec, DeploySpec

    data = spec.deploy.model_dump()
    unknown = sorted(set(overrides) - set(data))
    if unknown:
        raise SpecError(
            "deploy",
            f"unknown deploy option(s): {', '.join(unknown)}",
            hint="use fields of the spec's deploy section: " + ", ".join(sorted(data)),
        )
    data.update({k: v for k, v in overrides.items() if v is not None})
    if batching is False:
        data["batching"] = None
    elif batching is True:
        data["batching"] = data.get("batching") or BatchingSpec().model_dump()
    elif isinstance(batching, BaseModel):
        data["batching"] = batching.model_dump()
    elif isinstance(batching, Mapping):
        data["batching"] = {**(data.get("batching") or {}), **batching}
    elif batching is not None:
        raise SpecError(
            "deploy.batching",
            f"expected True, False or a mapping, got {type(batching).__name__}",
            hint="pass batching={'max_batch_size': 32, 'max_wait_ms': 2}",
        )
    try:
        deploy_spec = DeploySpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise SpecError(
            f"deploy.{where}",
            str(first["msg"]),
            hint="fix the deploy option (see `cloudnn deploy --help`)",
        ) from exc
    return spec.model_copy(update={"deploy": deploy_spec})


class _ProgressView:
    """Rich progress bar fed by the job's structured log events."""

    def __init__(self, console: Console) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.console = console
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[stats]}"),
            console=console,
            transient=False,
        )
        self.task: Any = None
        self.started = False

    def line(self, text: str) -> None:
        event = parse_event(text)
        if event is None:
            if text.strip():
                self.console.print(text, markup=False, highlight=False)
            return
        kind = event.get("event")
        if kind == "start" and event.get("epochs"):
            if not self.started:
                self.progress.start()
                self.started = True
            if self.task is None:
                self.task = self.progress.add_task(
                    "training", total=event["epochs"], stats=""
                )
        elif kind == "resume" and self.task is not None:
            self.progress.update(self.task, completed=event.get("epoch", 0))
        elif kind == "epoch" and self.task is not None:
            stats = f"loss {event['train_loss']:.4f}"
            if event.get("val_loss") is not None:
                stats += f"  val_loss {event['val_loss']:.4f}"
            if event.get("val_metric") is not None:
                stats += f"  val_metric {event['val_metric']:.4f}"
            self.progress.update(self.task, completed=event["epoch"], stats=stats)
        elif kind == "early_stop" and self.task is not None:
            self.progress.update(self.task, description="early stop")
        elif kind == "log":
            self.console.print(str(event.get("message", "")), markup=False)
        elif kind == "failed":
            self.console.print(f"failed: {event.get('message', '')}", markup=False)

    def close(self) -> None:
        if self.started:
            self.progress.stop()
            self.started = False
