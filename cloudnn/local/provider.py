"""The local backend: the same job contract as the clouds, as a local process.

A training job is ``python -m cloudnn.runtime.job`` in its own session, with
the SageMaker/Vertex/torch.distributed variables a cloud container would see,
reading a ``spec.json`` whose data paths are channel references, as in a
cloud bundle. Its run directory (``$CLOUDNN_HOME/runs/<run_id>/``) holds::

    spec.json  status.json  job.log  model/  checkpoints/  output/  input/data/<channel>/

The provider owns that folder and ``$CLOUDNN_HOME/endpoints/`` (see
:mod:`cloudnn.local.serving`); the Client owns the registry.
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

from cloudnn.bundle import bundle_spec, channels
from cloudnn.errors import NotFoundError
from cloudnn.local.serving import START_TIMEOUT_S, LocalEndpoints
from cloudnn.provider import (
    Capability,
    CheckReport,
    EndpointPlan,
    EndpointRef,
    EndpointStatus,
    JobRef,
    JobState,
    JobStatus,
    LogLine,
    Phase,
    Provider,
    TrainingPlan,
)
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
    #: a local process answers at once: poll often (clouds: ~5 s -> 60 s)
    poll_interval = 0.2
    max_poll_interval = 1.0
    cancel_timeout = 120.0
    endpoint_timeout = START_TIMEOUT_S

    def __init__(self, *, home: str | os.PathLike[str] | None = None) -> None:
        super().__init__(home=home)
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._endpoints = LocalEndpoints(self.home, self.name)

    # -- paths -----------------------------------------------------------

    def run_dir(self, run_id: str) -> Path:
        return self.home / "runs" / run_id

    def check(self) -> CheckReport:
        import importlib.util

        has_torch = importlib.util.find_spec("torch") is not None
        existing = self.home
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent  # the folder that would hold CLOUDNN_HOME
        writable = existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)
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
        """Channel -> folder the job reads: a data folder itself, or a folder of
        one link to the data file (SageMaker channels are folders)."""
        return {
            ch.name: ch.source
            if ch.is_dir
            else str(run_dir / "input" / "data" / ch.name)
            for ch in channels(spec)
        }

    def plan_training(self, spec: Spec, *, run_id: str) -> TrainingPlan:
        from cloudnn.datacheck import DataInfo, check_local_resources, machine_facts
        from cloudnn.runtime.context import local_job_env

        self.refuse_unsupported(spec, Phase.TRAINING)
        # this machine's cores, GPUs and memory bound what can run here; the
        # facts decide a refusal only, they never enter the plan
        check_local_resources(spec, DataInfo(format="unknown"), **machine_facts())
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
            model_uri=str(run_dir / "model"),
            output_uri=str(run_dir / "output"),
            warnings=tuple(warnings),
            details={"run_dir": str(run_dir)},
        )

    def plan_endpoint(self, spec: Spec, model_uri: str) -> EndpointPlan:
        self.refuse_unsupported(spec, Phase.ENDPOINT)
        return self._endpoints.plan(spec, model_uri)

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
        # data as channel references, exactly as a cloud bundle has them
        job_spec = bundle_spec(plan.spec, relocate_code=False)
        (run_dir / "spec.json").write_text(json.dumps(job_spec, indent=2))
        self._link_channels(plan.spec, run_dir)
        env = {**os.environ, **request["env"]}
        # machine facts stay out of the plan (it is the same on every machine)
        env["SM_NUM_CPUS"] = str(os.cpu_count() or 1)
        env["CLOUDNN_ENVS_DIR"] = str(self.home / "envs")
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
        for ch in channels(spec):
            if ch.is_dir:
                continue
            folder = run_dir / "input" / "data" / ch.name
            folder.mkdir(parents=True, exist_ok=True)
            link = folder / ch.filename
            if link.is_symlink() or link.exists():
                link.unlink()  # a resumed run may point at a moved file
            link.symlink_to(Path(ch.source).resolve())

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
            with contextlib.suppress(OSError, ValueError):
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

    # -- endpoints -----------------------------------------------------------

    def create_endpoint(self, plan: EndpointPlan) -> EndpointRef:
        return self._endpoints.create(plan)

    def get_endpoint(self, ref: EndpointRef) -> EndpointStatus:
        return self._endpoints.status(ref)

    def invoke(self, ref: EndpointRef, payload: Mapping[str, Any]) -> dict[str, Any]:
        return self._endpoints.invoke(ref, payload)

    def delete_endpoint(self, ref: EndpointRef) -> None:
        self._endpoints.delete(ref)

    def endpoint_token(self, ref: EndpointRef) -> str | None:
        return self._endpoints.token(ref)

    def endpoint_info(self, ref: EndpointRef) -> dict[str, Any]:
        return self._endpoints.info(ref)

    def download(self, uri: str, dest: Path) -> Path:
        """A local model is already a folder: returned as it is."""
        path = Path(uri)
        if not path.is_dir():
            raise NotFoundError(
                f"no model folder at {uri}",
                hint="was the run folder moved or deleted? (CLOUDNN_HOME)",
            )
        return path
