"""End-to-end training on the local backend: accuracy, resume, preemption, DDP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import PYTHON, REPO, cli_env, digits_spec

import cloudnn
from cloudnn.client import Client
from cloudnn.local.provider import _pid_alive
from cloudnn.runtime.checkpoint import checkpoint_files
from cloudnn.spec import load_spec

pytestmark = pytest.mark.slow


def _state(run: cloudnn.Run) -> dict[str, torch.Tensor]:
    return torch.load(run.model_dir / "model.pt", weights_only=True)


def _assert_bit_identical(
    a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]
) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert torch.equal(a[key], b[key]), f"{key} differs"


def test_train_writes_model_report_and_registry(digits_csv: Path, write_spec) -> None:
    spec = write_spec(digits_spec(digits_csv, train={"epochs": 3}))
    run = Client(quiet=True).train(spec)
    assert run.state == "SUCCEEDED"
    for name in ("model.pt", "model.ts", "preprocess.json", "cloudnn_model.json"):
        assert (run.model_dir / name).is_file(), name
    for name in ("metrics.json", "training_curves.png", "confusion_matrix.png"):
        assert (run.output_dir / name).is_file(), name
    metrics = json.loads((run.output_dir / "metrics.json").read_text())
    assert metrics["headline"]["metric"] == "accuracy"
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0
    assert len(metrics["test"]["confusion_matrix"]) == 10
    assert metrics["fit"]["status"] in ("good_fit", "overfitting", "underfitting")
    # a new client (a new CLI process) finds the run in the registry
    again = Client(quiet=True).run(run.run_id)
    assert again.state == "SUCCEEDED"
    assert again.metrics["test"]["accuracy"] == metrics["test"]["accuracy"]


def _start_cli_train(spec: Path, home: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [PYTHON, "-m", "cloudnn.cli.main", "train", str(spec), "--quiet", *extra],
        env=cli_env(home),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _wait_for(predicate, timeout: float = 120.0, interval: float = 0.005) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError("condition not reached in time")


def _slow_spec(digits_csv: Path) -> dict:
    # small batches + dropout: enough steps to interrupt mid-run, and an RNG
    # stream (dropout) that must be restored exactly for bit-identity
    return digits_spec(
        digits_csv,
        model={"type": "mlp", "hidden_sizes": [128, 64], "dropout": 0.2},
        train={
            "epochs": 14,
            "batch_size": 8,
            "seed": 7,
            "scheduler": {"name": "step", "step_size": 4, "gamma": 0.5},
            "checkpoint": {"every_epochs": 1, "keep": 2},
        },
    )


def test_sigkill_then_resume_is_bit_identical(
    digits_csv: Path, write_spec, cloudnn_home: Path
) -> None:
    spec = write_spec(_slow_spec(digits_csv))
    client = Client(quiet=True)
    reference = client.train(spec)

    proc = _start_cli_train(spec, cloudnn_home)
    try:
        _wait_for(lambda: len(client.runs()) == 2)
        victim = next(r for r in client.runs() if r.run_id != reference.run_id)
        ckpts = Path(victim.model_uri).parent / "checkpoints"
        _wait_for(
            lambda: any(p.name >= "ckpt-e000003" for p in checkpoint_files(ckpts))
        )
        status = json.loads((Path(victim.model_uri).parent / "status.json").read_text())
        os.kill(status["pid"], signal.SIGKILL)  # the job dies with no chance to react
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    # SIGKILL is asynchronous: a job still dying would be adopted, not restarted
    _wait_for(lambda: not _pid_alive(status["pid"]))
    killed_at = latest_epoch(ckpts)
    assert killed_at < 14, "the run finished before it could be killed"
    assert not (Path(victim.model_uri) / "model.pt").exists()

    resumed = client.train(spec, resume=victim.run_id)
    assert resumed.run_id == victim.run_id
    assert resumed.state == "SUCCEEDED"
    log = (Path(victim.model_uri).parent / "job.log").read_text()
    assert '"event": "resume"' in log
    _assert_bit_identical(_state(reference), _state(resumed))
    print(f"\nkilled after epoch {killed_at} of 14, resumed: final weights identical")


def latest_epoch(directory: Path) -> int:
    files = checkpoint_files(directory)
    return int(files[-1].name[6:12]) if files else 0


def test_sigterm_saves_mid_epoch_checkpoint_and_resumes_identically(
    digits_csv: Path, write_spec, cloudnn_home: Path
) -> None:
    spec_dict = _slow_spec(digits_csv)
    spec_dict["train"]["checkpoint"] = {"every_epochs": 50, "keep": 2}
    spec = write_spec(spec_dict)
    client = Client(quiet=True)
    reference = client.train(spec)

    proc = _start_cli_train(spec, cloudnn_home, "--detach")
    proc.wait(timeout=60)
    victim = next(r for r in client.runs() if r.run_id != reference.run_id)
    _wait_for(
        lambda: '"event": "epoch"' in _read(Path(victim.model_uri).parent / "job.log")
    )
    status = json.loads((Path(victim.model_uri).parent / "status.json").read_text())
    os.kill(status["pid"], signal.SIGTERM)  # what a spot preemption sends
    _wait_for(
        lambda: (
            json.loads(
                _read(Path(victim.model_uri).parent / "status.json") or "{}"
            ).get("state")
            == "CANCELLED"
        )
    )
    files = checkpoint_files(Path(victim.model_uri).parent / "checkpoints")
    assert files, "SIGTERM must leave a checkpoint"
    assert not files[-1].name.endswith("-s000000000.pt"), (
        "expected a mid-epoch checkpoint"
    )
    assert client.run(victim.run_id).status().state.value == "CANCELLED"

    resumed = client.train(spec, resume=victim.run_id)
    _assert_bit_identical(_state(reference), _state(resumed))


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def test_two_process_ddp_matches_single_process() -> None:
    """The digits-mlp example, once in one process and once as 2-process DDP."""
    folder = REPO / "examples" / "digits-mlp"
    subprocess.run([PYTHON, "prepare.py"], cwd=folder, check=True, capture_output=True)
    spec = load_spec(folder / "spec.yaml")
    ddp_spec = spec.model_copy(
        update={
            "resources": spec.resources.model_copy(update={"processes_per_node": 2})
        }
    )
    client = Client(quiet=True)
    single = client.train(spec)
    ddp = client.train(ddp_spec)
    a = single.metrics["test"]["accuracy"]
    b = ddp.metrics["test"]["accuracy"]
    print(f"\ndigits-mlp test accuracy: 1 process {a:.4f}, 2-process DDP {b:.4f}")
    assert single.metrics["world_size"] == 1
    assert ddp.metrics["world_size"] == 2
    assert abs(a - b) <= 0.01
