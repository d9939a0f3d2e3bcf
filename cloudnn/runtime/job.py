"""Entry point of every training job: ``python -m cloudnn.runtime.job --spec FILE``.

Runs inside a local subprocess, a local emulator, or a vendor container (a
bundle's ``cloudnn_entry.py`` calls :func:`main`). It reads the runtime context
from the environment, turns the spec's channel references
(``channel://train/x.csv``) into this machine's paths, then either trains a
built-in/module model with the built-in trainer (spawning
``processes_per_node`` workers through torch's elastic launcher when asked),
or runs the user's own script under the same cloud contract. It records its
state in ``$CLOUDNN_STATUS_FILE`` when set, and reports a failure as one line
(``failed`` event + status message) naming the cause.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudnn.runtime.context import (
    CHANNEL_SCHEME,
    RuntimeContext,
    _hp_str,
    context,
    hyperparameter_args,
    resolve_data_path,
)
from cloudnn.runtime.events import EXIT_PREEMPTED, emit, first_line

if TYPE_CHECKING:
    from cloudnn.spec import Spec

__all__ = ["EXIT_PREEMPTED", "localize_spec", "main", "script_arguments"]

#: ``{channel:train}`` in a script hyperparameter: the channel's local path
_PLACEHOLDER = re.compile(r"\{channel:([A-Za-z0-9_-]+)\}")
#: the line of a Python traceback that names the exception
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b.*")
_SPLITS = ("train", "validation", "test")


class ScriptFailed(Exception):
    """The user's script exited non-zero; ``str()`` names its exception."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def write_status(state: str, **fields: Any) -> None:
    """Atomically update the status file (no-op when none is configured)."""
    target = os.environ.get("CLOUDNN_STATUS_FILE")
    if not target:
        return
    path = Path(target)
    current: dict[str, Any] = {}
    if path.exists():
        try:
            current = json.loads(path.read_text())
        except (OSError, ValueError):
            current = {}
    current.update(fields, state=state, updated_at=time.time())
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(current))
    os.replace(tmp, path)


# ------------------------------------------------------------------ spec


def localize_spec(spec: Spec, ctx: RuntimeContext, base: Path) -> Spec:
    """``spec`` with channel references and relative code paths made local.

    ``base`` is the folder relative code paths are read from (the bundle's
    root: the folder of its spec.json).
    """

    def local(value: str | None) -> str | None:
        if value is None:
            return None
        if value.startswith(CHANNEL_SCHEME):
            return resolve_data_path(value, ctx)
        return value

    def code(value: str | None) -> str | None:
        if value is None or Path(value).is_absolute():
            return value
        return str((base / value).resolve())

    data = spec.data.model_copy(
        update={name: local(getattr(spec.data, name)) for name in _SPLITS}
    )
    model: Any = spec.model
    if spec.model.type == "script":
        model = model.model_copy(
            update={"script": code(model.script), "source_dir": code(model.source_dir)}
        )
    elif spec.model.type == "module":
        model = model.model_copy(update={"path": code(model.path)})
    return spec.model_copy(update={"data": data, "model": model})


def _channel_paths(spec: Spec, ctx: RuntimeContext) -> dict[str, str]:
    """Channel name -> local path of its data: the file the spec names, else the folder."""
    paths = {name: str(path) for name, path in ctx.channels.items()}
    for name in _SPLITS:
        value = getattr(spec.data, name)
        if value:
            paths[name] = value  # already localized: the exact file
    return paths


def script_arguments(
    hyperparameters: dict[str, Any], channels: dict[str, str]
) -> dict[str, Any]:
    """Hyperparameters with ``{channel:NAME}`` replaced by the channel's local path."""

    def fill(value: Any) -> Any:
        if not isinstance(value, str):
            return value

        def sub(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in channels:
                have = ", ".join(sorted(channels)) or "none"
                raise ValueError(
                    f"hyperparameter placeholder {{channel:{name}}}: no data channel "
                    f"{name!r} in this job (channels: {have})"
                )
            return channels[name]

        return _PLACEHOLDER.sub(sub, value)

    return {key: fill(value) for key, value in hyperparameters.items()}


# -------------------------------------------------------------- processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _nprocs(spec: Any) -> int:
    n = spec.resources.processes_per_node
    if n == "auto":
        import torch

        return max(1, torch.cuda.device_count())
    return int(n)


def _worker(spec_json: str, resume: bool) -> int:
    """One DDP worker (runs in a process spawned by the elastic agent)."""
    from cloudnn.runtime.trainer import main_exit, train
    from cloudnn.spec import saved_spec

    return main_exit(train(saved_spec(spec_json), context(), resume=resume))


def _launch(nprocs: int, ctx: RuntimeContext, entrypoint: Any, *args: Any) -> int:
    """``nprocs`` local workers under torch's elastic agent, over all nodes."""
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if ctx.num_nodes > 1:
        # one agent per node; they meet at the master (SageMaker algo-1,
        # Vertex's chief, Azure's MASTER_ADDR) and number the workers
        endpoint = f"{ctx.master_addr}:{ctx.master_port}"
        for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE"):
            os.environ.pop(var, None)
    else:
        endpoint = f"127.0.0.1:{_free_port()}"
    config = LaunchConfig(
        min_nodes=ctx.num_nodes,
        max_nodes=ctx.num_nodes,
        nproc_per_node=nprocs,
        run_id=ctx.run_id or "cloudnn",
        rdzv_backend="c10d",
        rdzv_endpoint=endpoint,
        rdzv_configs={"is_host": ctx.node_rank == 0} if ctx.num_nodes > 1 else {},
        max_restarts=0,
        monitor_interval=0.2,
        start_method="spawn",
    )
    results = elastic_launch(config, entrypoint)(*args)
    return max((int(v or 0) for v in results.values()), default=0)


def _needs_launcher(nprocs: int, ctx: RuntimeContext) -> bool:
    # a platform that already started one process per rank (torchrun, Azure
    # ML's per-process launch) has WORLD_SIZE set; otherwise this process is
    # the node's only one and starts the workers itself
    if ctx.world_size > ctx.num_nodes:
        return False
    return nprocs > 1 or ctx.num_nodes > 1


def run_builtin(spec: Spec, ctx: RuntimeContext, *, resume: bool) -> int:
    from cloudnn.runtime.trainer import main_exit, train

    nprocs = _nprocs(spec)
    if _needs_launcher(nprocs, ctx):
        return _launch(nprocs, ctx, _worker, spec.model_dump_json(), resume)
    return main_exit(train(spec, ctx, resume=resume))


# ---------------------------------------------------------------- scripts


def _layered_env(requirements: Path, envs_dir: Path) -> Path:
    """A venv with the script's requirements, layered on this environment.

    It sees this environment's packages (a ``.pth`` adds them after its own),
    so only what the requirements change is installed -- into it, never into
    cloudnn's environment. Reused while the requirements file is unchanged.
    """
    digest = hashlib.sha256(requirements.read_bytes())
    digest.update(sys.prefix.encode() + sys.version.encode())
    target = envs_dir / digest.hexdigest()[:16]
    python = target / "bin" / "python"
    if python.exists():
        return python
    envs_dir.mkdir(parents=True, exist_ok=True)
    building = envs_dir / f".{target.name}.{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(building)], check=True
    )
    purelib = sysconfig.get_paths(vars={"base": str(building)})["purelib"]
    parents = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    lines = [f"import site; site.addsitedir({p!r})" for p in sorted(parents)]
    Path(purelib).mkdir(parents=True, exist_ok=True)
    (Path(purelib) / "_cloudnn_parent.pth").write_text("\n".join(lines) + "\n")
    emit("log", message=f"installing {requirements.name} into {target}")
    subprocess.run(
        [
            str(building / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "-r",
            str(requirements),
        ],
        check=True,
        cwd=requirements.parent,
    )
    try:
        os.rename(building, target)
    except OSError:  # another run built the same environment meanwhile
        shutil.rmtree(building, ignore_errors=True)
    return python


def _script_python(spec: Spec, ctx: RuntimeContext, source_dir: Path) -> str:
    requirements = source_dir / "requirements.txt"
    if not requirements.is_file():
        return sys.executable
    if ctx.platform == "local":
        if not spec.providers.local.install_requirements:
            return sys.executable
        envs = os.environ.get("CLOUDNN_ENVS_DIR")
        envs_dir = Path(envs) if envs else ctx.output_dir.parent / "envs"
        return str(_layered_env(requirements, envs_dir))
    # a cloud container is the job's own: install into it, as SageMaker does
    emit("log", message=f"installing {requirements}")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "-r", str(requirements)],
        check=True,
        cwd=source_dir,
    )
    return sys.executable


def _script_contract(ctx: RuntimeContext, hps: dict[str, Any]) -> dict[str, str]:
    """Every cloud's script variables, from this job's context.

    A SageMaker script-mode script reads ``SM_*``, a Vertex one ``AIP_*``,
    both ``RANK``/``WORLD_SIZE``: on any platform the script finds them all,
    so one written for one cloud runs unchanged on the others.
    """
    from cloudnn.runtime.context import local_job_env

    channels = {
        name: str(Path(path).parent if Path(path).is_file() else path)
        for name, path in ctx.channels.items()
    }
    hosts = list(ctx.hosts) if ctx.current_host in ctx.hosts else [ctx.current_host]
    env = local_job_env(
        model_dir=ctx.model_dir,
        checkpoint_dir=ctx.checkpoint_dir,
        output_dir=ctx.output_dir,
        channels=channels,
        hyperparameters=hps,
        run_id=ctx.run_id,
        num_gpus=ctx.num_gpus,
        hosts=hosts,
        current_host=ctx.current_host,
        rank=max(ctx.rank, 0),
        world_size=ctx.world_size,
        local_rank=ctx.local_rank,
        local_world_size=ctx.local_world_size,
        master_addr=ctx.master_addr,
        master_port=ctx.master_port,
    )
    # cloudnn's own markers would make the script's context() think it is local
    return {k: v for k, v in env.items() if not k.startswith("CLOUDNN_")}


def _pump(proc: subprocess.Popen[bytes]) -> list[str]:
    """Copy the script's output to ours; return its last lines."""
    tail: collections.deque[str] = collections.deque(maxlen=200)
    assert proc.stdout is not None
    for raw in proc.stdout:
        sys.stdout.buffer.write(raw)
        sys.stdout.flush()
        tail.append(raw.decode("utf-8", "replace").rstrip())
    proc.wait()
    return list(tail)


def _script_error(script: Path, code: int, tail: list[str]) -> str:
    for line in reversed(tail):
        if _EXCEPTION_LINE.match(line.strip()):
            return f"script {script.name} failed: {line.strip()}"
    return f"script {script.name} exited with status {code}"


def run_script(spec: Spec, ctx: RuntimeContext) -> int:
    """Run a user script exactly as SageMaker script mode would, then collect metrics."""
    model: Any = spec.model
    script = Path(model.script)
    source_dir = Path(model.source_dir) if model.source_dir else script.parent
    python = _script_python(spec, ctx, source_dir)
    hps = script_arguments(dict(model.hyperparameters), _channel_paths(spec, ctx))
    for name, value in _script_contract(ctx, hps).items():
        os.environ.setdefault(name, value)  # what the platform set wins
    args = hyperparameter_args(hps)
    # the script reads SM_HPS/SM_HP_* too: give it the filled-in values
    os.environ["SM_HPS"] = json.dumps(hps)
    for name, value in hps.items():
        if value is not None:
            os.environ[f"SM_HP_{name.upper()}"] = _hp_str(value)
    nprocs = _nprocs(spec)
    emit("start", run_id=ctx.run_id, script=str(script), world_size=nprocs)
    if _needs_launcher(nprocs, ctx):
        code = _launch(nprocs, ctx, python, str(script), *args)
        if code not in (0, EXIT_PREEMPTED):
            raise ScriptFailed(f"script {script.name} exited with status {code}", code)
    else:
        proc = subprocess.Popen(
            [python, str(script), *args],
            cwd=source_dir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            tail = _pump(proc)
        except BaseException:
            # SIGTERM (cancel, spot) reaches us first: pass it on and wait
            proc.send_signal(signal.SIGTERM)
            proc.wait()
            raise
        code = proc.returncode
        if code not in (0, EXIT_PREEMPTED):
            raise ScriptFailed(_script_error(script, code, tail), code)
    if code != 0:
        return code
    _collect_script_metrics(ctx)
    return 0


def _collect_script_metrics(ctx: RuntimeContext) -> None:
    """Adopt the script's metrics.json (output data dir or model dir) as the run's."""
    out_data = Path(os.environ.get("SM_OUTPUT_DATA_DIR", ctx.output_dir))
    ctx.output_dir.mkdir(parents=True, exist_ok=True)
    target = ctx.output_dir / "metrics.json"
    for candidate in (out_data / "metrics.json", ctx.model_dir / "metrics.json"):
        if candidate.is_file() and candidate.resolve() != target.resolve():
            shutil.copyfile(candidate, target)
            break
    metrics: dict[str, Any] = {}
    if target.is_file():
        try:
            metrics = json.loads(target.read_text())
        except ValueError:
            metrics = {}
    headline = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
    emit("finished", headline=headline, fit=None)


# ------------------------------------------------------------------- main


class _Terminated(Exception):
    """SIGTERM arrived before the trainer took over the signal."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Terminated()


def _failure_message(exc: BaseException) -> str:
    from cloudnn.errors import SpecError

    if isinstance(exc, ScriptFailed):
        return str(exc)
    if isinstance(exc, SpecError):
        return str(exc)  # already "data.target: ..." with its field
    return first_line(exc)


def _fail(message: str, code: int, hint: str | None = None) -> int:
    emit("failed", message=message, **({"hint": hint} if hint else {}))
    write_status("FAILED", exit_code=code, message=message)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cloudnn.runtime.job")
    parser.add_argument("--spec", required=True, help="spec JSON written at submit")
    parser.add_argument("--no-resume", action="store_true")
    ns = parser.parse_args(argv)

    # a cancel during start-up (imports, data loading) must end CANCELLED, not
    # as a silent death; the trainer installs its own checkpointing handler
    signal.signal(signal.SIGTERM, _on_sigterm)
    write_status("RUNNING", pid=os.getpid(), started_at=time.time())
    try:
        from cloudnn.spec import saved_spec

        spec_path = Path(ns.spec).resolve()
        ctx = context()
        spec = localize_spec(saved_spec(spec_path.read_text()), ctx, spec_path.parent)
        if spec.model.type == "script":
            code = run_script(spec, ctx)
        else:
            code = run_builtin(spec, ctx, resume=not ns.no_resume)
    except _Terminated:
        write_status(
            "CANCELLED",
            exit_code=EXIT_PREEMPTED,
            message="stopped by SIGTERM before training started",
        )
        return EXIT_PREEMPTED
    except ScriptFailed as exc:
        return _fail(str(exc), exc.code)
    except BaseException as exc:  # record every way out, then re-raise
        if isinstance(exc, SystemExit) and not exc.code:
            raise
        hint = getattr(exc, "hint", None)
        if isinstance(exc, Exception):
            traceback.print_exc()
            return _fail(_failure_message(exc), 1, hint)
        write_status("FAILED", exit_code=1, message=_failure_message(exc))
        raise
    if code == 0:
        write_status("SUCCEEDED", exit_code=0, message="")
    elif code == EXIT_PREEMPTED:
        write_status(
            "CANCELLED",
            exit_code=code,
            message="stopped by SIGTERM after saving a checkpoint",
        )
    else:
        return _fail(f"exited with status {code}", code)
    return code


if __name__ == "__main__":
    sys.exit(main())
