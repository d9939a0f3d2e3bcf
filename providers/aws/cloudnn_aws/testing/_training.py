"""Training jobs that really run: what SageMaker does between Create and Completed.

A :class:`TrainingRun` thread drives one job through SageMaker's states,
writing them onto moto's job object (so ``DescribeTrainingJob`` answers
them)::

    InProgress/Starting -> LaunchingMLInstances -> Downloading -> Training
      -> Uploading -> Completed                       (every host exited 0)
      -> Failed + FailureReason                       (a host failed)
    StopTrainingJob: Stopping (SIGTERM, model kept) -> Stopped
    MaxRuntimeInSeconds passed: SIGTERM -> Stopped/MaxRuntimeExceeded
    spot interruption (managed spot jobs): Interrupted (SIGTERM, checkpoints
      synced to CheckpointConfig.S3Uri) -> Restarting -> Downloading (fresh
      hosts, checkpoints restored) -> Training -> ...

Each host is a folder laid out like ``/opt/ml`` (``SAGEMAKER_BASE_DIR``) and
one process of the bundle's entry point, started as the PyTorch container's
training toolkit would (script mode: ``sagemaker_program`` from
``sagemaker_submit_directory``) with the toolkit's ``SM_*`` variables. The
hosts meet over loopback: ``SM_MASTER_ADDR=127.0.0.1`` and a free port,
since ``algo-N`` names do not resolve here. Output goes to CloudWatch Logs
stream ``<job>/algo-N-<epoch>``. GPUs are not emulated (``SM_NUM_GPUS=0``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudnn.testing.emulation import (
    LogStore,
    ProcessSpec,
    ReplicaSet,
    free_port,
    pack_directory,
    unpack_archive,
)

if TYPE_CHECKING:
    from cloudnn_aws.testing import SageMakerEmulator

__all__ = ["TrainingRun", "container_env"]

_EVENT = "::cloudnn:: "
#: seconds between checkpoint syncs while a job trains
_SYNC_EVERY_S = 2.0
#: variables of the emulator's own process that a container would not have
_STRIP_PREFIXES = ("AWS_", "SM_", "CLOUDNN_", "SAGEMAKER_", "TRAINING_JOB_")
_STRIP = frozenset({"PYTHONPATH", "VIRTUAL_ENV_PROMPT"})


def container_env() -> dict[str, str]:
    """This process's environment minus what a fresh container would not have
    (the caller's AWS identity and cloudnn settings, PYTHONPATH)."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(_STRIP_PREFIXES) and k not in _STRIP
    }


class _Stop(Exception):
    """The run ends early (stop request, time limit): carries the final state."""

    def __init__(self, secondary: str, message: str) -> None:
        super().__init__(message)
        self.secondary = secondary


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://") :].partition("/")
    return bucket, key


class TrainingRun(threading.Thread):
    """One training job's life, from CreateTrainingJob to a terminal state."""

    def __init__(
        self, emulator: SageMakerEmulator, region: str, request: Mapping[str, Any]
    ) -> None:
        name = str(request["TrainingJobName"])
        super().__init__(name=f"training-{name}", daemon=True)
        self.job_name = name
        self.emu = emulator
        self.region = region
        self.request = dict(request)
        resources = request["ResourceConfig"]
        self.instance_type = str(resources["InstanceType"])
        count = int(resources.get("InstanceCount", 1))
        self.hosts = [f"algo-{i + 1}" for i in range(count)]
        self.folder = emulator.workdir / "jobs" / self.job_name
        self.spot = bool(request.get("EnableManagedSpotTraining"))
        self.checkpoint = request.get("CheckpointConfig") or None
        self.max_runtime = int(
            (request.get("StoppingCondition") or {}).get("MaxRuntimeInSeconds", 86400)
        )
        stamp = int(time.time())
        self.streams = {h: f"{self.job_name}/{h}-{stamp}" for h in self.hosts}
        self.stop_requested = threading.Event()
        self.replicas: ReplicaSet | None = None
        self.interruptions = 0
        self._training_s = 0.0
        self._synced: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    # -- moto's job object ------------------------------------------------------

    @property
    def job(self) -> Any:
        return self.emu.sagemaker_backend(self.region).training_jobs[self.job_name]

    def set_status(
        self, status: str, secondary: str, message: str, *, dwell: bool = True
    ) -> None:
        from moto.core.utils import utcnow

        if status == "InProgress" and self.stop_requested.is_set():
            return  # a stop was asked for: the job reads Stopping until it ends
        with self._lock:
            job = self.job
            now = utcnow()
            transitions = list(getattr(job, "secondary_status_transitions", []) or [])
            if transitions and "EndTime" not in transitions[-1]:
                transitions[-1]["EndTime"] = now
            entry: dict[str, Any] = {
                "Status": secondary,
                "StartTime": now,
                "StatusMessage": message,
            }
            if status in ("Completed", "Failed", "Stopped"):
                entry["EndTime"] = now
            transitions.append(entry)
            job.secondary_status_transitions = transitions
            job.training_job_status = status
            job.secondary_status = secondary
            job.last_modified_time = now
            if (
                secondary == "Training"
                and getattr(job, "training_start_time", None) is None
            ):
                job.training_start_time = now
            if status in ("Completed", "Failed", "Stopped"):
                job.training_end_time = now
                seconds = max(1, int(self._training_s))
                job.training_time_in_seconds = seconds
                job.billable_time_in_seconds = seconds
        if dwell:
            self.emu.dwell()

    def begin(self) -> None:
        """Reset what moto's CreateTrainingJob pre-filled, then start the thread."""
        job = self.job
        job.training_start_time = None
        job.training_end_time = None
        job.secondary_status_transitions = []
        job.final_metric_data_list = None
        # moto replaces MetricDefinitions with its own sample: keep the request's
        job.algorithm_specification = dict(self.request["AlgorithmSpecification"])
        self.set_status("InProgress", "Starting", "Starting the training job")
        self.start()

    # -- the run ----------------------------------------------------------------

    def run(self) -> None:
        try:
            self._run()
        except _Stop as stop:
            self._finish_stopped(stop.secondary, str(stop))
        except Exception as exc:  # the job fails; the emulator keeps serving
            self._fail(f"InternalServerError: the emulator failed: {exc!r}")
        finally:
            if self.replicas is not None:
                self.replicas.terminate(grace=0)

    def _run(self) -> None:
        self.set_status(
            "InProgress", "LaunchingMLInstances", "Launching requested ML instances"
        )
        self._check_stop()
        self.set_status("InProgress", "Downloading", "Downloading input data")
        try:
            self._prepare_hosts()
        except _DownloadError as exc:
            self._fail(f"ClientError: Data download failed: {exc}")
            return
        while True:
            self._check_stop()
            self.set_status(
                "InProgress",
                "Training",
                "Training image download completed. Training in progress.",
            )
            outcome = self._train()
            if outcome == "interrupted":
                self._recover()
                continue
            break
        codes = outcome
        assert isinstance(codes, list)
        if any(code != 0 for code in codes):
            self._fail(self._failure_reason(codes))
            return
        self.set_status("InProgress", "Uploading", "Uploading generated training model")
        self._upload_outputs()
        self.emu.flush_logs()
        self.set_status("Completed", "Completed", "Training job completed")

    def _check_stop(self) -> None:
        if self.stop_requested.is_set():
            raise _Stop("Stopped", "Training job stopped")

    # -- hosts --------------------------------------------------------------------

    def host_dir(self, host: str) -> Path:
        return self.folder / host

    def _prepare_hosts(self, restore_checkpoints: bool = False) -> None:
        """Lay out every host's /opt/ml: config, channels, code, checkpoints."""
        if self.folder.exists():
            shutil.rmtree(self.folder)  # a (re)started instance is a fresh one
        cache = self.folder / ".downloads"
        channels = self._download_channels(cache)
        code = self._download_code(cache)
        checkpoints = cache / "checkpoints"
        if self.checkpoint:
            self._download_prefix(str(self.checkpoint["S3Uri"]), checkpoints)
        for host in self.hosts:
            base = self.host_dir(host)
            for sub in ("input/config", "input/data", "model", "output/data", "code"):
                (base / sub).mkdir(parents=True, exist_ok=True)
            config = base / "input" / "config"
            hps = dict(self.request.get("HyperParameters") or {})
            (config / "hyperparameters.json").write_text(json.dumps(hps))
            (config / "resourceconfig.json").write_text(
                json.dumps(self._resource_config(host))
            )
            (config / "inputdataconfig.json").write_text(
                json.dumps(
                    {
                        name: {
                            "TrainingInputMode": "File",
                            "S3DistributionType": "FullyReplicated",
                            "RecordWrapperType": "None",
                        }
                        for name in channels
                    }
                )
            )
            for name, folder in channels.items():
                shutil.copytree(folder, base / "input" / "data" / name)
            unpack_archive(code, base / "code")
            if self.checkpoint:
                target = self._checkpoint_dir(host)
                if checkpoints.is_dir():
                    shutil.copytree(checkpoints, target, dirs_exist_ok=True)
                else:
                    target.mkdir(parents=True, exist_ok=True)

    def _resource_config(self, host: str) -> dict[str, Any]:
        return {
            "current_host": host,
            "current_instance_type": self.instance_type,
            "current_group_name": "homogeneousCluster",
            "hosts": self.hosts,
            "instance_groups": [
                {
                    "instance_group_name": "homogeneousCluster",
                    "instance_type": self.instance_type,
                    "hosts": self.hosts,
                }
            ],
            "network_interface_name": "lo",
        }

    def _checkpoint_dir(self, host: str) -> Path:
        local = str((self.checkpoint or {}).get("LocalPath") or "/opt/ml/checkpoints")
        rel = (
            local[len("/opt/ml/") :] if local.startswith("/opt/ml/") else "checkpoints"
        )
        return self.host_dir(host) / rel

    def _download_channels(self, cache: Path) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for channel in self.request.get("InputDataConfig") or []:
            name = str(channel["ChannelName"])
            source = channel["DataSource"].get("S3DataSource") or {}
            uri = str(source.get("S3Uri", ""))
            if not uri.startswith("s3://"):
                raise _DownloadError(
                    f"channel {name}: only S3 data sources are emulated"
                )
            target = cache / "channels" / name
            if self._download_prefix(uri, target) == 0:
                raise _DownloadError(f"channel {name}: no objects under {uri}")
            out[name] = target
        return out

    def _download_code(self, cache: Path) -> Path:
        hps = self.request.get("HyperParameters") or {}
        uri = str(hps.get("sagemaker_submit_directory", ""))
        if not uri.startswith("s3://"):
            raise _DownloadError(
                "this emulator runs script-mode jobs: HyperParameters need "
                "sagemaker_submit_directory (an s3:// .tar.gz) and sagemaker_program"
            )
        target = cache / "sourcedir.tar.gz"
        bucket, key = _split(uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.emu.s3.download_file(bucket, key, str(target))
        except Exception as exc:
            raise _DownloadError(f"could not download {uri}: {exc}") from exc
        return target

    def _download_prefix(self, uri: str, target: Path) -> int:
        """Every object under ``uri`` into ``target``, as SageMaker lays it out."""
        bucket, prefix = _split(uri)
        # keys land relative to the prefix's folder: ".../<sha>/" and
        # ".../<sha>/digits.csv" both give "digits.csv"
        base = prefix[: prefix.rfind("/") + 1]
        count = 0
        target.mkdir(parents=True, exist_ok=True)
        try:
            paginator = self.emu.s3.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    key = str(obj["Key"])
                    if key.endswith("/"):
                        continue
                    dest = target / key[len(base) :]
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    self.emu.s3.download_file(bucket, key, str(dest))
                    count += 1
        except Exception as exc:
            raise _DownloadError(f"could not download {uri}: {exc}") from exc
        return count

    # -- processes ----------------------------------------------------------------

    def _env(self, host: str, master_port: int) -> dict[str, str]:
        base = self.host_dir(host)
        hps = {
            str(k): str(v)
            for k, v in (self.request.get("HyperParameters") or {}).items()
        }
        user_hps = {k: v for k, v in hps.items() if not k.startswith("sagemaker_")}
        user_args: list[str] = []
        for key, value in user_hps.items():
            user_args += [f"--{key}", value]
        channels = sorted(
            c["ChannelName"] for c in self.request.get("InputDataConfig") or []
        )
        program = hps.get("sagemaker_program", "train.py")
        env = container_env()
        resource = self._resource_config(host)
        training_env = {
            "channel_input_dirs": {
                c: str(base / "input" / "data" / c) for c in channels
            },
            "current_host": host,
            "hosts": self.hosts,
            "hyperparameters": user_hps,
            "input_config_dir": str(base / "input" / "config"),
            "input_data_config": {c: {"TrainingInputMode": "File"} for c in channels},
            "input_dir": str(base / "input"),
            "job_name": self.job_name,
            "log_level": 20,
            "master_hostname": self.hosts[0],
            "model_dir": str(base / "model"),
            "module_dir": hps.get("sagemaker_submit_directory", ""),
            "module_name": Path(program).stem,
            "network_interface_name": "lo",
            "num_cpus": os.cpu_count() or 1,
            "num_gpus": 0,
            "output_data_dir": str(base / "output" / "data"),
            "output_dir": str(base / "output"),
            "resource_config": resource,
            "user_entry_point": program,
        }
        env.update(
            {
                "SAGEMAKER_BASE_DIR": str(base),
                "TRAINING_JOB_NAME": self.job_name,
                "TRAINING_JOB_ARN": str(self.job.arn),
                "AWS_REGION": self.region,
                "SM_MODEL_DIR": str(base / "model"),
                "SM_INPUT_DIR": str(base / "input"),
                "SM_INPUT_DATA_DIR": str(base / "input" / "data"),
                "SM_INPUT_CONFIG_DIR": str(base / "input" / "config"),
                "SM_OUTPUT_DIR": str(base / "output"),
                "SM_OUTPUT_DATA_DIR": str(base / "output" / "data"),
                "SM_OUTPUT_INTERMEDIATE_DIR": str(base / "output" / "intermediate"),
                "SM_CHANNELS": json.dumps(channels),
                "SM_HPS": json.dumps(user_hps),
                "SM_USER_ARGS": json.dumps(user_args),
                "SM_USER_ENTRY_POINT": program,
                "SM_MODULE_NAME": Path(program).stem,
                "SM_MODULE_DIR": hps.get("sagemaker_submit_directory", ""),
                "SM_LOG_LEVEL": "20",
                "SM_CURRENT_HOST": host,
                "SM_CURRENT_INSTANCE_TYPE": self.instance_type,
                "SM_HOSTS": json.dumps(self.hosts),
                "SM_HOST_COUNT": str(len(self.hosts)),
                "SM_CURRENT_HOST_RANK": str(self.hosts.index(host)),
                "SM_NETWORK_INTERFACE_NAME": "lo",
                "SM_NUM_CPUS": str(os.cpu_count() or 1),
                "SM_NUM_GPUS": "0",
                "SM_NUM_NEURONS": "0",
                # the v3 driver's variables; loopback, since algo-N do not resolve here
                "SM_MASTER_ADDR": "127.0.0.1",
                "SM_MASTER_PORT": str(master_port),
                "SM_RESOURCE_CONFIG": json.dumps(resource),
                "SM_INPUT_DATA_CONFIG": json.dumps(training_env["input_data_config"]),
                "SM_TRAINING_ENV": json.dumps(training_env),
                "CUDA_VISIBLE_DEVICES": "",
            }
        )
        # emulated hosts share this machine (and often with other jobs): one
        # thread each unless the emulator's environment says otherwise, which
        # also keeps results the same from one machine to the next
        env.setdefault("OMP_NUM_THREADS", "1")
        for channel in channels:
            env[f"SM_CHANNEL_{channel.upper()}"] = str(
                base / "input" / "data" / channel
            )
        for key, value in user_hps.items():
            env[f"SM_HP_{key.upper()}"] = value
        env.update(
            {str(k): str(v) for k, v in (self.request.get("Environment") or {}).items()}
        )
        return env

    def _specs(self) -> list[ProcessSpec]:
        hps = self.request.get("HyperParameters") or {}
        program = str(hps.get("sagemaker_program", "train.py"))
        user_args: list[str] = []
        for key, value in hps.items():
            if not str(key).startswith("sagemaker_"):
                user_args += [f"--{key}", str(value)]
        master_port = free_port()
        specs = []
        for host in self.hosts:
            code = self.host_dir(host) / "code"
            if program.endswith(".py"):
                argv = [sys.executable, program, *user_args]
            else:
                argv = [sys.executable, "-m", program, *user_args]
            specs.append(
                ProcessSpec(
                    argv=argv,
                    cwd=code,
                    env=self._env(host, master_port),
                    stream=self.streams[host],
                    inherit_env=False,
                )
            )
        return specs

    def _train(self) -> list[int] | str:
        """Run the hosts once: exit codes, or "interrupted" (spot)."""
        logs: LogStore = self.emu.training_logs
        for host in self.hosts:
            logs.append(
                self.streams[host],
                f"Invoking script with the following command: python "
                f"{(self.request.get('HyperParameters') or {}).get('sagemaker_program')}",
            )
        self.replicas = ReplicaSet(self._specs(), logs, grace=self.emu.kill_grace)
        self.replicas.start()
        started = time.monotonic()
        synced_at = started
        try:
            while True:
                codes = self.replicas.wait(timeout=0.1)
                if codes is not None:
                    return codes
                if time.monotonic() - synced_at > _SYNC_EVERY_S:
                    self._sync_checkpoints()
                    synced_at = time.monotonic()
                if self.stop_requested.is_set():
                    self.replicas.terminate()
                    raise _Stop("Stopped", "Training job stopped")
                if self._training_s + time.monotonic() - started > self.max_runtime:
                    self.replicas.terminate()
                    raise _Stop(
                        "MaxRuntimeExceeded",
                        "Training job stopped: MaxRuntimeInSeconds exceeded",
                    )
                if self.spot and self._interruption_due():
                    self.interruptions += 1
                    self.set_status(
                        "InProgress",
                        "Interrupted",
                        "Training job interrupted: the spot instance was reclaimed",
                    )
                    self.replicas.terminate()
                    self._sync_checkpoints()
                    return "interrupted"
        finally:
            self._training_s += time.monotonic() - started

    def _interruption_due(self) -> bool:
        def match(value: Any) -> bool:
            wanted = value if isinstance(value, dict) else {"job": value}
            job = wanted.get("job") or "*"
            if job not in ("*", True, self.job_name):
                return False
            after = int(wanted.get("after_epoch") or 0)
            return after <= 0 or self._epochs_done() >= after

        return self.emu.faults.take("spot_interruption", match=match) is not None

    def _epochs_done(self) -> int:
        events, _ = self.emu.training_logs.read(self.streams[self.hosts[0]])
        return sum(
            1 for e in events if _EVENT in e.text and '"event": "epoch"' in e.text
        )

    def _recover(self) -> None:
        self.set_status(
            "InProgress", "Restarting", "Restarting the job on a new spot instance"
        )
        time.sleep(self.emu.restart_delay)
        self._check_stop()
        self.set_status(
            "InProgress", "Downloading", "Downloading input data and checkpoints"
        )
        self._prepare_hosts()

    # -- the end ------------------------------------------------------------------

    def _sync_checkpoints(self) -> None:
        """New or changed checkpoint files up to CheckpointConfig.S3Uri.

        SageMaker syncs the checkpoint folder continuously while a job runs
        (and once more when it stops); algo-1's files win on a name clash.
        """
        if not self.checkpoint:
            return
        bucket, prefix = _split(str(self.checkpoint["S3Uri"]))
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        uploaded: dict[str, tuple[int, int]] = {}
        for host in self.hosts:
            folder = self._checkpoint_dir(host)
            if not folder.is_dir():
                continue
            for path in sorted(folder.rglob("*")):
                if not path.is_file() or path.name.startswith("."):
                    continue  # temporary files of an atomic write
                key = prefix + path.relative_to(folder).as_posix()
                if key in uploaded:
                    continue
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue  # rotated away meanwhile
                version = (st.st_size, st.st_mtime_ns)
                uploaded[key] = version
                if self._synced.get(key) == version:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    self.emu.s3.upload_file(str(path), bucket, key)
                    self._synced[key] = version

    def _upload_outputs(self) -> None:
        lead = self.host_dir(self.hosts[0])
        model_uri = str(self.job.model_artifacts["S3ModelArtifacts"])
        bucket, key = _split(model_uri)
        self.emu.s3.put_object(
            Bucket=bucket, Key=key, Body=pack_directory(lead / "model")
        )
        output_key = key.rsplit("/", 1)[0] + "/output.tar.gz"
        data = lead / "output" / "data"
        if data.is_dir() and any(data.iterdir()):
            self.emu.s3.put_object(
                Bucket=bucket, Key=output_key, Body=pack_directory(data)
            )
        self._sync_checkpoints()

    def _finish_stopped(self, secondary: str, message: str) -> None:
        with contextlib.suppress(Exception):
            if any((self.host_dir(self.hosts[0]) / "model").glob("*")):
                self._upload_outputs()  # SageMaker keeps what a stopped job saved
            else:
                self._sync_checkpoints()  # a resumed run continues from them
        self.emu.flush_logs()
        self.set_status("Stopped", secondary, message)

    def _fail(self, reason: str) -> None:
        self.emu.flush_logs()
        with self._lock:
            self.job.failure_reason = reason[:1024]
        self.set_status("Failed", "Failed", "Training job failed")

    def _failure_reason(self, codes: list[int]) -> str:
        for host, code in zip(self.hosts, codes, strict=True):
            if code == 0:
                continue
            failure = self.host_dir(host) / "output" / "failure"
            if failure.is_file() and failure.read_text().strip():
                return f"AlgorithmError: {failure.read_text().strip()}"
            events, _ = self.emu.training_logs.read(self.streams[host])
            message = ""
            for event in reversed(events):
                if _EVENT in event.text and '"event": "failed"' in event.text:
                    with contextlib.suppress(ValueError):
                        payload = json.loads(event.text.split(_EVENT, 1)[1])
                        message = str(payload.get("message", ""))
                    break
            if not message:
                lines = [e.text for e in events if e.text.strip()]
                message = lines[-1] if lines else "no output"
            return (
                f"AlgorithmError: ExecuteUserScriptError: {message} "
                f"(exit code {code} on {host})"
            )
        return "AlgorithmError: a host failed"

    # -- requests from the API ------------------------------------------------------

    def request_stop(self) -> None:
        """StopTrainingJob: the job reads Stopping at once, the thread stops it."""
        if self.job.training_job_status != "InProgress":
            return
        self.stop_requested.set()
        self.set_status(
            "Stopping", "Stopping", "Stopping the training job", dwell=False
        )


class _DownloadError(Exception):
    """An input could not be downloaded: the job fails with a ClientError."""
