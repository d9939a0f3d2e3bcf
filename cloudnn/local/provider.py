"""The local backend: the same job contract as the clouds, as a local process.

A training job is ``python -m cloudnn.runtime.job`` in its own session, with
the SageMaker/Vertex/torch.distributed variables a cloud container would see.
Its run directory (``$CLOUDNN_HOME/runs/<run_id>/``) holds::

    spec.json  status.json  job.log  model/  checkpoints/  output/  input/data/<channel>/
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

from cloudnn.errors import JobFailedError, NotFoundError
from cloudnn.provider import (
    Capability,
    CheckReport,
    EndpointPlan,
    EndpointRef,
    JobRef,
    JobState,
    JobStatus,
    LogLine,
    Provider,
    TrainingPlan,
)
from cloudnn.runs import cloudnn_home
from cloudnn.spec import ScriptModel, Spec

__all__ = ["LocalProvider"]

_JOB_MODULE = "cloudnn.runtime.job"


def _pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        try:
            # field 3 is the state; 'Z' = zombie, 'X' = dead
            return stat.read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
        except (OSError, IndexError):
            return True
    return True


class LocalProvider(Provider):
    """Runs jobs as local PyTorch processes and endpoints as local servers."""

    name: ClassVar[str] = "local"
    unsupported: ClassVar[dict[Capability, str]] = {
        Capability.MULTI_NODE: "the local backend runs on this one machine; "
        "use --provider aws, azure or gcp for resources.nodes > 1",
        Capability.REMOTE_DATA: "the local backend reads local files only; "
        "download the data or train on the cloud that holds it",
    }
    #: seconds between status polls (clouds back off from ~5 s to 60 s)
    poll_interval: ClassVar[float] = 0.2

    def __init__(self, *, home: str | os.PathLike[str] | None = None) -> None:
        self.home = Path(home) if home is not None else cloudnn_home()
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    # -- paths -----------------------------------------------------------

    def run_dir(self, run_id: str) -> Path:
        return self.home / "runs" / run_id

    def check(self) -> CheckReport:
        import importlib.util

        has_torch = importlib.util.find_spec("torch") is not None
        existing = self.home
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent  # the folder that would hold CLOUDNN_HOME
        writable = os.access(existing, os.W_OK)
        return CheckReport(
            provider=self.name,
            ok=has_torch and writable,
            checks=(
                (
                    "torch installed",
                    has_torch,
                    "" if has_torch else "pip install torch",
                ),
                ("run directory writable", writable, str(self.home)),
            ),
        )

    # -- planning (pure) ---------------------------------------------------

    def _channels(self, spec: Spec, run_dir: Path) -> dict[str, str]:
        channels = {}
        for key in ("train", "validation", "test"):
            value = getattr(spec.data, key)
            if value:
                p = Path(value)
                channels[key] = str(
                    p if p.is_dir() else run_dir / "input" / "data" / key
                )
        return channels

    def plan_training(self, spec: Spec, *, run_id: str) -> TrainingPlan:
        from cloudnn.runtime.context import local_job_env

        self.refuse_unsupported(spec)
        run_dir = self.run_dir(run_id)
        warnings: list[str] = []
        if spec.resources.accelerator:
            warnings.append(
                f"resources.accelerator {spec.resources.accelerator}: the local "
                "backend uses a local GPU when torch sees one, otherwise the CPU"
            )
        if spec.resources.spot:
            warnings.append(
                "resources.spot has no meaning locally; checkpoint/resume still applies"
            )
        if spec.resources.max_runtime:
            warnings.append("resources.max_runtime is enforced by cloud providers only")
        nprocs = spec.resources.processes_per_node
        hps: dict[str, Any] = (
            dict(spec.model.hyperparameters)
            if isinstance(spec.model, ScriptModel)
            else {}
        )
        env = local_job_env(
            model_dir=str(run_dir / "model"),
            checkpoint_dir=str(run_dir / "checkpoints"),
            output_dir=str(run_dir / "output"),
            channels=self._channels(spec, run_dir),
            hyperparameters=hps,
            run_id=run_id,
        )
        env["CLOUDNN_STATUS_FILE"] = str(run_dir / "status.json")
        command = [
            sys.executable,
            "-m",
            _JOB_MODULE,
            "--spec",
            str(run_dir / "spec.json"),
        ]
        request = {
            "kind": "local.process",
            "command": command,
            "cwd": str(run_dir),
            "env": dict(sorted(env.items())),
            "log": str(run_dir / "job.log"),
        }
        return TrainingPlan(
            provider=self.name,
            spec=spec,
            run_id=run_id,
            job_name=run_id,
            requests=(request,),
            instance_type="local",
            instance_count=1,
            processes_per_node=1 if nprocs == "auto" else int(nprocs),
            accelerator=spec.resources.accelerator,
            hourly_cost_usd=0.0,
            estimated_cost_usd=0.0,
            warnings=tuple(warnings),
            details={"run_dir": str(run_dir)},
        )

    def plan_endpoint(self, spec: Spec, model_uri: str) -> EndpointPlan:
        from cloudnn.local.serving import plan_local_endpoint

        return plan_local_endpoint(self, spec, model_uri)

    # -- jobs ----------------------------------------------------------------

    def _status(self, run_id: str) -> dict[str, Any]:
        """The job's status.json, with the pid from job.pid until the job writes it."""
        run_dir = self.run_dir(run_id)
        try:
            status: dict[str, Any] = json.loads((run_dir / "status.json").read_text())
        except (OSError, ValueError):
            return {}
        if not status.get("pid"):
            with contextlib.suppress(OSError, ValueError):
                status["pid"] = int((run_dir / "job.pid").read_text())
        return status

    def submit_training(self, plan: TrainingPlan) -> JobRef:
        run_dir = self.run_dir(plan.run_id)
        status = self._status(plan.run_id)
        pid = status.get("pid")
        if status.get("state") in ("QUEUED", "RUNNING") and pid and _pid_alive(pid):
            return self._ref(plan.run_id, pid)  # already running: adopt, never twice
        if status.get("state") == "SUCCEEDED":
            return self._ref(plan.run_id, pid or 0)  # done: adopt, do not retrain
        request = plan.requests[0]
        self._cancel_marker(plan.run_id).unlink(missing_ok=True)
        for sub in ("model", "checkpoints", "output"):
            (run_dir / sub).mkdir(parents=True, exist_ok=True)
        (run_dir / "spec.json").write_text(plan.spec.model_dump_json(indent=2))
        self._link_channels(plan.spec, run_dir)
        env = {**os.environ, **request["env"]}
        # The job must see the same cloudnn as this process, even from a checkout.
        pkg_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (pkg_root, os.environ.get("PYTHONPATH", "")) if p
        )
        (run_dir / "job.pid").unlink(missing_ok=True)
        log = open(run_dir / "job.log", "ab")  # noqa: SIM115 - handed to the child
        tmp = run_dir / ".status.json.submit"
        tmp.write_text(json.dumps({"state": "QUEUED", "submitted_at": time.time()}))
        os.replace(tmp, run_dir / "status.json")
        try:
            proc = subprocess.Popen(
                request["command"],
                cwd=request["cwd"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # own session: Ctrl-C in the terminal reaches the CLI, which
                # then stops the job with SIGTERM so it checkpoints first
                start_new_session=True,
            )
        finally:
            log.close()
        self._procs[plan.run_id] = proc
        # job.pid is ours alone; status.json belongs to the child, which
        # writes it atomically (a read-modify-write here could race with it)
        tmp = run_dir / ".job.pid.tmp"
        tmp.write_text(str(proc.pid))
        os.replace(tmp, run_dir / "job.pid")
        return self._ref(plan.run_id, proc.pid)

    def _ref(self, run_id: str, pid: int) -> JobRef:
        return JobRef(
            provider=self.name,
            run_id=run_id,
            job_id=run_id,
            extra={"pid": pid, "run_dir": str(self.run_dir(run_id))},
        )

    def _link_channels(self, spec: Spec, run_dir: Path) -> None:
        # SageMaker channels are directories; a single local file is exposed
        # through a symlink so the script sees just that file.
        for key in ("train", "validation", "test"):
            value = getattr(spec.data, key)
            if not value or Path(value).is_dir():
                continue
            channel = run_dir / "input" / "data" / key
            channel.mkdir(parents=True, exist_ok=True)
            link = channel / Path(value).name
            if not link.exists():
                link.symlink_to(Path(value).resolve())

    def get_job(self, ref: JobRef) -> JobStatus:
        status = self._status(ref.run_id)
        if not status:
            raise NotFoundError(
                f"no local job for run {ref.run_id!r}",
                hint="list runs with `cloudnn runs list`",
            )
        proc = self._procs.get(ref.run_id)
        if proc is not None:
            proc.poll()  # reap our own child so it does not linger as a zombie
        state = status.get("state", "QUEUED")
        pid = status.get("pid") or ref.extra.get("pid")
        if state in ("QUEUED", "RUNNING") and pid and not _pid_alive(int(pid)):
            status = self._status(ref.run_id)  # it may have finished just now
            state = status.get("state", state)
            if (
                state in ("QUEUED", "RUNNING")
                and self._cancel_marker(ref.run_id).exists()
            ):
                return JobStatus(
                    state=JobState.CANCELLED,
                    vendor_state="cancelled",
                    message="cancelled before training started",
                )
            if state in ("QUEUED", "RUNNING"):
                return JobStatus(
                    state=JobState.FAILED,
                    vendor_state="died",
                    message="the training process died without a word (killed?); "
                    f"resume it with `cloudnn train SPEC --resume {ref.run_id}`",
                )
        metrics: dict[str, Any] = {}
        if state == "SUCCEEDED":
            metrics_file = self.run_dir(ref.run_id) / "output" / "metrics.json"
            if metrics_file.exists():
                metrics = json.loads(metrics_file.read_text())
        return JobStatus(
            state=JobState(state),
            vendor_state=state,
            message=status.get("message", ""),
            metrics=metrics,
        )

    def stream_logs(self, ref: JobRef, since: Any = None) -> Iterator[LogLine]:
        path = self.run_dir(ref.run_id) / "job.log"
        offset = int(since or 0)
        if not path.exists():
            return
        with open(path, "rb") as fh:
            fh.seek(offset)
            for raw in fh:
                if not raw.endswith(b"\n"):
                    break  # partial line: wait until it is complete
                offset += len(raw)
                yield LogLine(
                    text=raw.decode("utf-8", "replace").rstrip("\n"), cursor=offset
                )

    def _cancel_marker(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "cancel_requested"

    def cancel_job(self, ref: JobRef) -> None:
        status = self._status(ref.run_id)
        pid = status.get("pid") or ref.extra.get("pid")
        if status.get("state") not in ("QUEUED", "RUNNING") or not pid:
            return
        # a job killed before it could install its handler still reads CANCELLED
        self._cancel_marker(ref.run_id).touch()
        try:
            os.killpg(int(pid), signal.SIGTERM)
        except ProcessLookupError:
            return

    def wait_process(self, ref: JobRef, timeout: float) -> None:
        """Wait for our own child to exit (used after cancel)."""
        proc = self._procs.get(ref.run_id)
        if proc is not None:
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired as exc:
                raise JobFailedError(
                    f"job {ref.run_id} did not stop within {timeout:.0f} s",
                    hint=f"kill it: kill {proc.pid}",
                ) from exc

    # -- endpoints -----------------------------------------------------------

    def create_endpoint(self, plan: EndpointPlan) -> EndpointRef:
        from cloudnn.local.serving import create_local_endpoint

        return create_local_endpoint(self, plan)

    def invoke(self, ref: EndpointRef, payload: Mapping[str, Any]) -> dict[str, Any]:
        from cloudnn.local.serving import invoke_local_endpoint

        return invoke_local_endpoint(self, ref, payload)

    def delete_endpoint(self, ref: EndpointRef) -> None:
        from cloudnn.local.serving import delete_local_endpoint

        delete_local_endpoint(self, ref)
