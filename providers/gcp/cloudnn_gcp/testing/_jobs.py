"""A CustomJob, really run: one local process per replica, Vertex AI's environment.

:class:`JobRunner` does for one job what Vertex AI's training service does:

* PENDING: the data channels (``AIP_*_DATA_URI``) and earlier checkpoints
  are copied from the emulated Cloud Storage into the mirror that stands in
  for ``/gcs`` (see :mod:`._gcs`);
* RUNNING: each replica's container command (``container_spec.command`` +
  ``args``, ``python`` being this interpreter) starts with the variables a
  Vertex AI container gets -- ``AIP_MODEL_DIR``/``AIP_CHECKPOINT_DIR``/
  ``AIP_TENSORBOARD_LOG_DIR`` under ``base_output_directory``,
  ``CLUSTER_SPEC``/``TF_CONFIG``, ``CLOUD_ML_JOB_ID`` -- its output going to
  the Cloud Logging fake; replicas of a multi-node job meet at the chief over
  127.0.0.1;
* SUCCEEDED/FAILED: what the replicas wrote is copied back to Cloud Storage;
  a non-zero exit fails the job with Vertex AI's message and the job's own
  ``failed`` event; CANCELLED after ``CancelCustomJob`` (SIGTERM: the job
  checkpoints first); FAILED past ``scheduling.timeout``;
* an injected SPOT preemption SIGTERMs every replica, keeps the checkpoint
  folder, and starts them again: the job resumes where it was.

Since there is no FUSE mount, the job is told where the mirror is with the
runtime's ``CLOUDNN_MODEL_DIR``/``CLOUDNN_CHECKPOINT_DIR``/``CLOUDNN_OUTPUT_DIR``
overrides and mirror paths in ``AIP_*_DATA_URI``; ``AIP_MODEL_DIR`` and
friends keep their ``gs://`` values, as on Vertex AI.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudnn.runtime.events import EXIT_PREEMPTED, parse_event
from cloudnn.testing.emulation import (
    FaultInjector,
    LogEvent,
    LogStore,
    ProcessSpec,
    ReplicaSet,
    free_port,
)
from cloudnn_gcp.testing._gcs import StorageEmulator

__all__ = ["JobRunner", "SPOT_TRIGGER", "job_env_base"]

SPOT_TRIGGER = "spot_interruption"
#: seconds a replica gets between SIGTERM and SIGKILL (Vertex AI: ~30 s)
GRACE_S = 30.0
_DATA_VARS = ("AIP_TRAINING_DATA_URI", "AIP_VALIDATION_DATA_URI", "AIP_TEST_DATA_URI")
#: variables of this process that must not leak into a "container"
_PRIVATE_PREFIXES = (
    "CLOUDNN_",
    "AIP_",
    "SM_",
    "AZUREML_",
    "AZ_BATCH",
    "CLOUD_ML_",
    "CLUSTER_SPEC",
    "TF_CONFIG",
    "TORCHELASTIC_",
    "GOOGLE_",
    "STORAGE_EMULATOR_HOST",
    "PYTEST_",
)
_PRIVATE = frozenset(
    {
        "MASTER_ADDR",
        "MASTER_PORT",
        "RANK",
        "LOCAL_RANK",
        "WORLD_SIZE",
        "LOCAL_WORLD_SIZE",
        "NODE_RANK",
        "GROUP_RANK",
    }
)


def job_env_base() -> dict[str, str]:
    """This process's environment minus what a fresh container would not have."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(_PRIVATE_PREFIXES) and k not in _PRIVATE
    }


@dataclass
class Outcome:
    """How an attempt ended (what :class:`JobRunner` reports to the service)."""

    state: str  # JOB_STATE_SUCCEEDED | JOB_STATE_FAILED | JOB_STATE_CANCELLED
    code: int = 0  # google.rpc.Code of the job's error
    message: str = ""


class JobRunner:
    """Runs one CustomJob in a thread; reports state changes through ``on_state``."""

    def __init__(
        self,
        *,
        job_id: str,
        job: Mapping[str, Any],
        project: str,
        workdir: Path,
        storage: StorageEmulator,
        logs: LogStore,
        faults: FaultInjector,
        shim_dir: Path,
        on_state: Callable[[str, Outcome | None], None],
        grace: float = GRACE_S,
    ) -> None:
        self.job_id = job_id
        self.job = job  # the CustomJob as proto JSON (snake_case)
        self.project = project
        self.workdir = workdir
        self.storage = storage
        self.logs = logs
        self.faults = faults
        self.shim_dir = shim_dir
        self.on_state = on_state
        self.grace = grace
        self._cancel = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"vertex-job-{job_id}", daemon=True
        )
        self.epoch = 0
        self.replicas: ReplicaSet | None = None
        self.attempts = 0
        logs.add_listener(self._on_line)

    # -- control ------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def cancel(self) -> None:
        self._cancel.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def stop(self) -> None:
        """Emulator shutdown: stop the processes at once."""
        self._cancel.set()
        if self.replicas is not None:
            self.replicas.terminate(grace=2.0)

    @property
    def chief_stream(self) -> str:
        return f"{self.job_id}/workerpool0-0"

    def _on_line(self, stream: str, event: LogEvent) -> None:
        if stream != self.chief_stream:
            return
        parsed = parse_event(event.text)
        if parsed and parsed.get("event") == "epoch":
            self.epoch = int(parsed.get("epoch") or 0)

    def note(self, text: str) -> None:
        """A line from the platform itself in the chief's log."""
        self.logs.append(self.chief_stream, f"[vertex-ai emulator] {text}")

    # -- layout ---------------------------------------------------------------

    @property
    def spec(self) -> Mapping[str, Any]:
        return dict(self.job.get("job_spec") or {})

    @property
    def base_output(self) -> str:
        base = (self.spec.get("base_output_directory") or {}).get("output_uri_prefix")
        return str(base).rstrip("/") + "/" if base else ""

    def _tasks(self) -> list[tuple[str, int, Mapping[str, Any]]]:
        """(pool name, index, pool spec) of every replica, chief first."""
        out = []
        for i, pool in enumerate(self.spec.get("worker_pool_specs") or []):
            for index in range(int(pool.get("replica_count") or 0)):
                out.append((f"workerpool{i}", index, pool))
        return out

    def _prepare(self) -> dict[str, str]:
        """Pull inputs into the mirror; the channel variables pointing at it."""
        channels: dict[str, str] = {}
        for pool in self.spec.get("worker_pool_specs") or []:
            for item in (pool.get("container_spec") or {}).get("env") or []:
                name, value = item.get("name", ""), str(item.get("value", ""))
                if name in _DATA_VARS and value.startswith("gs://"):
                    channels[name] = str(self.storage.pull(value))
        if self.base_output:
            self.storage.pull(self.base_output + "checkpoints/")
        return channels

    def _specs(self, channels: Mapping[str, str]) -> list[ProcessSpec]:
        tasks = self._tasks()
        ports = {(pool, index): free_port() for pool, index, _ in tasks}
        cluster: dict[str, list[str]] = {}
        for pool, index, _ in tasks:
            cluster.setdefault(pool, []).append(f"127.0.0.1:{ports[(pool, index)]}")
        base = self.base_output
        specs = []
        for pool, index, pool_spec in tasks:
            container = pool_spec.get("container_spec") or {}
            argv = [*(container.get("command") or []), *(container.get("args") or [])]
            if not argv:
                raise ValueError(
                    f"{pool}: container_spec.command is empty; the emulator has no "
                    "image whose entrypoint it could run"
                )
            task_dir = self.workdir / f"{pool}-{index}"
            (task_dir / "tmp").mkdir(parents=True, exist_ok=True)
            cluster_spec = {
                "cluster": cluster,
                "environment": "cloud",
                "task": {"type": pool, "index": index},
                "job": {"job_id": self.job_id},
            }
            tf_types = {
                "workerpool0": "chief",
                "workerpool1": "worker",
                "workerpool2": "ps",
                "workerpool3": "evaluator",
            }
            tf_config = {
                "cluster": {tf_types.get(k, k): v for k, v in cluster.items()},
                "task": {"type": tf_types.get(pool, pool), "index": index},
                "environment": "cloud",
            }
            env = job_env_base()
            env.update(
                {
                    item["name"]: str(item.get("value", ""))
                    for item in container.get("env") or []
                    if item.get("name")
                }
            )
            env.update(
                {
                    "CLOUD_ML_JOB_ID": self.job_id,
                    "CLUSTER_SPEC": json.dumps(cluster_spec),
                    "TF_CONFIG": json.dumps(tf_config),
                    "PATH": f"{self.shim_dir}{os.pathsep}{env.get('PATH', '')}",
                    "TMPDIR": str(task_dir / "tmp"),
                    "STORAGE_EMULATOR_HOST": self.storage.url,
                    "GOOGLE_CLOUD_PROJECT": self.project,
                    "PYTHONUNBUFFERED": "1",
                }
            )
            if base:
                env.update(
                    {
                        "AIP_MODEL_DIR": base + "model/",
                        "AIP_CHECKPOINT_DIR": base + "checkpoints/",
                        "AIP_TENSORBOARD_LOG_DIR": base + "logs/",
                        # the emulator's stand-in for the /gcs mount
                        "CLOUDNN_MODEL_DIR": str(self.storage.local(base + "model/")),
                        "CLOUDNN_CHECKPOINT_DIR": str(
                            self.storage.local(base + "checkpoints/")
                        ),
                        "CLOUDNN_OUTPUT_DIR": str(self.storage.local(base + "output/")),
                    }
                )
            env.update(channels)
            specs.append(
                ProcessSpec(
                    argv=argv,
                    cwd=task_dir,
                    env=env,
                    stream=f"{self.job_id}/{pool}-{index}",
                    inherit_env=False,
                )
            )
        return specs

    def _push(self) -> None:
        if not self.base_output:
            return
        for sub in ("model/", "checkpoints/", "output/", "logs/"):
            if self.storage.local(self.base_output + sub).is_dir():
                self.storage.push(self.base_output + sub)

    # -- the job ----------------------------------------------------------------

    def _timeout(self) -> float | None:
        raw = (self.spec.get("scheduling") or {}).get("timeout")
        if not raw:
            return None
        return float(str(raw).rstrip("s"))

    @property
    def spot(self) -> bool:
        return (self.spec.get("scheduling") or {}).get("strategy") == "SPOT"

    def _preempt_now(self) -> bool:
        if not self.spot:
            return False  # only Spot VMs are preempted

        def matches(value: Any) -> bool:
            wanted = value if isinstance(value, Mapping) else {}
            job = str(wanted.get("job") or "*")
            if job not in ("*", self.job_id) and not job.endswith("/" + self.job_id):
                return False
            return self.epoch >= int(wanted.get("after_epoch") or 0)

        return self.faults.take(SPOT_TRIGGER, match=matches) is not None

    def _run(self) -> None:
        try:
            outcome = self._attempts()
        except Exception as exc:  # noqa: BLE001 - the job fails, the emulator lives
            outcome = Outcome("JOB_STATE_FAILED", 13, f"Internal error: {exc}")
        self.on_state(outcome.state, outcome)

    def _attempts(self) -> Outcome:
        channels = self._prepare()
        if self._cancel.is_set():
            return Outcome("JOB_STATE_CANCELLED", 1, "CustomJob was cancelled.")
        try:
            specs = self._specs(channels)
        except ValueError as exc:
            return Outcome("JOB_STATE_FAILED", 3, str(exc))
        self.on_state("JOB_STATE_RUNNING", None)
        started = time.monotonic()
        timeout = self._timeout()
        replicas = ReplicaSet(specs, self.logs, grace=self.grace)
        self.replicas = replicas
        replicas.start()
        self.attempts = 1
        while True:
            codes = replicas.poll()
            if all(c is not None for c in codes):
                break
            if any(c not in (None, 0) for c in codes):
                replicas.wait()  # a failed replica stops the others
                break
            if self._cancel.is_set():
                replicas.terminate()
                self._push()
                return Outcome("JOB_STATE_CANCELLED", 1, "CustomJob was cancelled.")
            if timeout is not None and time.monotonic() - started > timeout:
                self.note(
                    f"the job exceeded its timeout of {timeout:.0f} s; stopping it"
                )
                replicas.terminate()
                self._push()
                return Outcome(
                    "JOB_STATE_FAILED",
                    4,
                    f"Job exceeded its timeout of {timeout:.0f}s.",
                )
            if self._preempt_now():
                self.note("SPOT VM preempted: stopping every replica (SIGTERM)")
                replicas.terminate()
                self._push()
                self.attempts += 1
                self.note(
                    f"restarting the job (attempt {self.attempts}); "
                    "its checkpoint folder is kept"
                )
                # new ports: the old rendezvous may linger in TIME_WAIT
                replicas.restart(self._specs(channels))
                continue
            time.sleep(0.1)
        codes_final = [int(c) for c in replicas.poll() if c is not None]
        self._push()
        if all(c == 0 for c in codes_final):
            return Outcome("JOB_STATE_SUCCEEDED")
        tasks = self._tasks()
        for (pool, index, _), code in zip(tasks, codes_final, strict=False):
            if code != 0:
                reason = (
                    "SIGTERM (exit 143)" if code == EXIT_PREEMPTED else f"status {code}"
                )
                return Outcome(
                    "JOB_STATE_FAILED",
                    3,
                    f"The replica {pool}-{index} exited with a non-zero {reason}. "
                    "Termination reason: Error.",
                )
        return Outcome("JOB_STATE_FAILED", 13, "The job failed.")
