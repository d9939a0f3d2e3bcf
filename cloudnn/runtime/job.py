"""Entry point of every training job: ``python -m cloudnn.runtime.job --spec FILE``.

Runs inside a local subprocess or a vendor container. It reads the runtime
context from the environment, then either trains a built-in/module model with
the built-in trainer (spawning ``processes_per_node`` workers through torch's
elastic launcher when asked), or runs the user's own script under the same
cloud contract. It records its state in ``$CLOUDNN_STATUS_FILE`` when set.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from cloudnn.runtime.context import RuntimeContext, context, hyperparameter_args

#: exit status after SIGTERM: checkpoint saved, job stopped on purpose (128 + 15)
EXIT_PREEMPTED = 143


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
    from cloudnn.spec import Spec

    spec = Spec.model_validate_json(spec_json)
    return main_exit(train(spec, context(), resume=resume))


def _launch(nprocs: int, run_id: str, entrypoint: Any, *args: Any) -> dict[int, Any]:
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nprocs,
        run_id=run_id or "cloudnn",
        rdzv_backend="c10d",
        rdzv_endpoint=f"127.0.0.1:{_free_port()}",
        max_restarts=0,
        monitor_interval=0.2,
        start_method="spawn",
    )
    return elastic_launch(config, entrypoint)(*args)


def run_builtin(spec: Any, ctx: RuntimeContext, *, resume: bool) -> int:
    from cloudnn.runtime.trainer import main_exit, train

    nprocs = _nprocs(spec)
    if nprocs > 1 and ctx.world_size == 1:
        results = _launch(nprocs, ctx.run_id, _worker, spec.model_dump_json(), resume)
        return max((int(v or 0) for v in results.values()), default=0)
    return main_exit(train(spec, ctx, resume=resume))


def run_script(spec: Any, ctx: RuntimeContext) -> int:
    """Run a user script exactly as SageMaker script mode would, then collect metrics."""
    from cloudnn.runtime.trainer import emit

    model = spec.model
    script = Path(model.script)
    source_dir = Path(model.source_dir) if model.source_dir else script.parent
    requirements = source_dir / "requirements.txt"
    if requirements.is_file() and spec.providers.local.install_requirements:
        emit("log", message=f"installing {requirements}")
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "-r", str(requirements)],
            check=True,
            cwd=source_dir,
        )
    args = hyperparameter_args(dict(model.hyperparameters))
    nprocs = _nprocs(spec)
    emit("start", run_id=ctx.run_id, script=str(script), world_size=nprocs)
    if nprocs > 1 and ctx.world_size == 1:
        results = _launch(nprocs, ctx.run_id, sys.executable, str(script), *args)
        code = max((int(v or 0) for v in results.values()), default=0)
    else:
        code = subprocess.call([sys.executable, str(script), *args], cwd=source_dir)
    if code != 0:
        return code
    _collect_script_metrics(ctx)
    return 0


def _collect_script_metrics(ctx: RuntimeContext) -> None:
    """Adopt the script's metrics.json (output data dir or model dir) as the run's."""
    from cloudnn.runtime.trainer import emit

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


class _Terminated(Exception):
    """SIGTERM arrived before the trainer took over the signal."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Terminated()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cloudnn.runtime.job")
    parser.add_argument("--spec", required=True, help="spec JSON written at submit")
    parser.add_argument("--no-resume", action="store_true")
    ns = parser.parse_args(argv)

    from cloudnn.spec import Spec

    # a cancel during start-up (imports, data loading) must end CANCELLED, not
    # as a silent death; the trainer installs its own checkpointing handler
    signal.signal(signal.SIGTERM, _on_sigterm)
    write_status("RUNNING", pid=os.getpid(), started_at=time.time())
    try:
        spec = Spec.model_validate_json(Path(ns.spec).read_text())
        ctx = context()
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
    except BaseException as exc:  # record every way out, then re-raise
        if isinstance(exc, SystemExit) and not exc.code:
            raise
        message = f"{type(exc).__name__}: {exc}".splitlines()[0]
        write_status("FAILED", exit_code=1, message=message)
        if isinstance(exc, Exception):
            traceback.print_exc()
            return 1
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
        write_status("FAILED", exit_code=code, message=f"exited with status {code}")
    return code


if __name__ == "__main__":
    sys.exit(main())
