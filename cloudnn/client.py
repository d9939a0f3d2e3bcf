"""The user API: :class:`Client` and the :class:`Run` handle.

``cloudnn.train(spec)`` and friends open a :class:`Client` and call it: one
code path. The client owns waiting, progress, log streaming and the run
registry; providers implement the small SPI in :mod:`cloudnn.provider`.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudnn.errors import CloudnnError, CloudnnTimeoutError, JobFailedError, SpecError
from cloudnn.provider import (
    EVENT_PREFIX,
    JobRef,
    JobState,
    JobStatus,
    Provider,
    TrainingPlan,
)
from cloudnn.registry import get_provider
from cloudnn.runs import RunRecord, RunRegistry
from cloudnn.spec import Spec, load_spec, spec_from_dict

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["Client", "Run", "SpecLike", "as_spec"]

SpecLike = Spec | str | os.PathLike[str] | dict[str, Any]


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


class Run:
    """A training run: state, logs, metrics, and where its artifacts are."""

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
    def run_dir(self) -> Path:
        return Path(self.record.run_dir)

    @property
    def model_dir(self) -> Path:
        return self.run_dir / "model"

    @property
    def output_dir(self) -> Path:
        return self.run_dir / "output"

    @property
    def ref(self) -> JobRef:
        return JobRef(
            provider=self.provider,
            run_id=self.run_id,
            job_id=self.record.job_id,
            extra=self.record.extra,
        )

    def refresh(self) -> Run:
        self.record = self._client.registry.get_run(self.run_id)
        return self

    def status(self) -> JobStatus:
        status = self._client.provider(self.provider).get_job(self.ref)
        self._client._record_status(self.run_id, status)
        self.refresh()
        return status

    def wait(self, *, timeout: float | None = None, progress: bool = True) -> Run:
        """Block until the job ends; raise :class:`JobFailedError` if it failed."""
        self._client.wait(self, timeout=timeout, progress=progress)
        return self

    def cancel(self) -> None:
        self._client.provider(self.provider).cancel_job(self.ref)

    def logs(self) -> Iterator[str]:
        for line in self._client.provider(self.provider).stream_logs(self.ref):
            yield line.text


class Client:
    """Entry point of the SDK: plan, train, evaluate, deploy across providers.

    Args:
        home: registry/run directory (default ``$CLOUDNN_HOME`` or ``~/.cloudnn``).
        console: a ``rich`` console for progress output (default: stderr).
        quiet: no progress output at all.
    """

    def __init__(
        self,
        *,
        home: str | os.PathLike[str] | None = None,
        console: Console | None = None,
        quiet: bool = False,
    ) -> None:
        self.registry = RunRegistry(home)
        self._console = console
        self.quiet = quiet
        self._providers: dict[str, Provider] = {}

    @property
    def console(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=True)
        return self._console

    def provider(self, name: str) -> Provider:
        if name not in self._providers:
            if name == "local":
                # the built-in backend keeps its runs under this client's home
                from cloudnn.local import LocalProvider

                self._providers[name] = LocalProvider(home=self.registry.home)
            else:
                self._providers[name] = get_provider(name)
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
        """Submit a training run (or resume run ``resume``) and, by default, wait."""
        s, spec_path = as_spec(spec)
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
                run_dir=str(plan.details.get("run_dir", "")),
            )
        self.registry.update_run(run_id, state="SUBMITTING", message="")
        try:
            ref = prov.submit_training(plan)
        except CloudnnError as exc:
            self.registry.update_run(run_id, state="FAILED", message=str(exc))
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
        """The run with this id (or unique prefix, or ``latest``)."""
        return Run(self, self.registry.get_run(run_id))

    def runs(self, *, limit: int = 50) -> list[Run]:
        return [Run(self, r) for r in self.registry.list_runs(limit=limit)]

    def _record_status(self, run_id: str, status: JobStatus) -> None:
        fields: dict[str, Any] = {
            "state": status.state.value,
            "message": status.message,
        }
        if status.metrics:
            fields["metrics"] = dict(status.metrics)
        self.registry.update_run(run_id, **fields)

    def wait(
        self,
        run: Run,
        *,
        timeout: float | None = None,
        progress: bool = True,
        on_line: Callable[[str], None] | None = None,
    ) -> JobStatus:
        """Follow a run's logs and state until it ends; progress bar per epoch."""
        prov = self.provider(run.provider)
        interval = float(getattr(prov, "poll_interval", 5.0))
        max_interval = max(
            interval, float(getattr(prov, "max_poll_interval", interval))
        )
        deadline = None if timeout is None else time.monotonic() + timeout
        show = progress and not self.quiet
        view = _ProgressView(self.console) if show else None
        cursor: Any = None
        try:
            while True:
                status = prov.get_job(run.ref)
                for line in prov.stream_logs(run.ref, since=cursor):
                    cursor = line.cursor
                    if on_line is not None:
                        on_line(line.text)
                    if view is not None:
                        view.line(line.text)
                if status.state.terminal:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    raise CloudnnTimeoutError(
                        f"run {run.run_id} still {status.state.value} after {timeout:.0f} s",
                        hint=f"follow it later with `cloudnn runs show {run.run_id}`",
                    )
                time.sleep(interval)
                interval = min(max_interval, interval * 1.5)
        except KeyboardInterrupt:
            if view is not None:
                view.close()
            self.console.print(
                f"[yellow]interrupted: stopping {run.run_id} (it saves a checkpoint)…"
            )
            prov.cancel_job(run.ref)
            if hasattr(prov, "wait_process"):
                prov.wait_process(run.ref, timeout=120)
            self._record_status(run.run_id, prov.get_job(run.ref))
            self.console.print(
                f"stopped; continue with `cloudnn train SPEC --resume {run.run_id}`"
            )
            raise
        finally:
            if view is not None:
                view.close()
        self._record_status(run.run_id, status)
        run.refresh()
        if status.state == JobState.FAILED:
            raise JobFailedError(
                f"run {run.run_id} failed: {status.message or 'see its log'}",
                hint=f"read the log with `cloudnn runs show {run.run_id} --log`; "
                f"resume with `cloudnn train SPEC --resume {run.run_id}`",
            )
        return status

    # -- evaluation ----------------------------------------------------------

    def evaluate(self, run_id: str, *, data: str | None = None) -> dict[str, Any]:
        """Metrics of a finished run's model on its test split or on ``data``."""
        from cloudnn.local.evaluate import evaluate_run

        run = self.run(run_id)
        if run.state != JobState.SUCCEEDED.value:
            raise JobFailedError(
                f"run {run.run_id} is {run.state}, it has no final model",
                hint="evaluate a SUCCEEDED run (see `cloudnn runs list`)",
            )
        return evaluate_run(run.model_dir, data=data)

    # -- endpoints -------------------------------------------------------------

    def deploy(
        self, target: SpecLike | str, *, provider: str = "local", **options: Any
    ) -> Any:
        """Serve a run's model (run id, or a spec's latest successful run).

        Returns an :class:`cloudnn.endpoints.Endpoint` handle.
        """
        from cloudnn.endpoints import deploy

        return deploy(self, target, provider=provider, **options)

    def endpoint(self, name: str) -> Any:
        """Handle of an existing endpoint, from the registry."""
        from cloudnn.endpoints import get_endpoint

        return get_endpoint(self, name)

    def endpoints(self) -> list[Any]:
        from cloudnn.endpoints import list_endpoints

        return list_endpoints(self)


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

    def close(self) -> None:
        if self.started:
            self.progress.stop()
            self.started = False
