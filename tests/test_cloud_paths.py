"""The same spec on every cloud emulator, from the CLI, as a user would run it.

Each provider's own suite (providers/<cloud>/tests) covers its lifecycle in
depth; this checks the paths the README's feature matrix promises on every
cloud at once: your own ``nn.Module`` trained with two DDP processes, then
evaluated and exported here after its model is downloaded, and your own
SageMaker-style script run unchanged.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import PYTHON, REPO

from cloudnn.emulator import available_emulators, emulator_process

pytestmark = pytest.mark.slow

CLOUDS = available_emulators()

NET = """
import torch


def build(input_dim, num_outputs, hidden=32):
    return torch.nn.Sequential(
        torch.nn.Linear(input_dim, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, num_outputs)
    )
"""


def _clean_env() -> dict[str, str]:
    prefixes = ("AWS_", "GOOGLE_", "CLOUDSDK_", "CLOUDNN_", "STORAGE_EMULATOR")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update({"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    env.update({"AWS_EC2_METADATA_DISABLED": "true", "NO_GCE_CHECK": "true"})
    return env


@pytest.fixture(scope="module", params=CLOUDS or ["none"])
def cloud(request: pytest.FixtureRequest) -> Iterator[tuple[str, dict[str, str]]]:
    """(provider, environment printed by `cloudnn emulator --provider P`)."""
    provider = str(request.param)
    if provider == "none":
        pytest.skip("no cloud emulator is installed")
    env = _clean_env()
    with emulator_process(provider, env=env) as (_, printed):
        yield provider, {**env, **printed}


def _cli(
    env: dict[str, str], home: Path, *args: str, cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [PYTHON, "-m", "cloudnn.cli.main", *args],
        env={**env, "CLOUDNN_HOME": str(home)},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, f"cloudnn {' '.join(args)}:\n{out.stderr[-3000:]}"
    return out


def test_own_module_with_ddp_then_evaluate_and_export_here(
    cloud: tuple[str, dict[str, str]], tmp_path: Path, digits_csv: Path
) -> None:
    provider, env = cloud
    (tmp_path / "mynets.py").write_text(NET)
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "own-net",
                "task": "classification",
                "model": {"module": "mynets:build", "params": {"hidden": 32}},
                "data": {"train": str(digits_csv), "target": "label"},
                "train": {"epochs": 10, "batch_size": 64, "seed": 0},
                "resources": {"processes_per_node": 2},
            }
        )
    )
    home = tmp_path / "home"
    trained = json.loads(
        _cli(env, home, "train", str(spec), "--provider", provider, "--json").stdout
    )
    assert trained["world_size"] == 2  # two DDP processes in the job
    reported = trained["test"]["accuracy"]
    assert reported > 0.85  # it learned (10 short epochs)
    # the model comes back from the cloud's storage; metrics are the job's own
    evaluated = json.loads(
        _cli(env, home, "evaluate", trained["run_id"], "--json").stdout
    )
    assert evaluated["test"]["accuracy"] == pytest.approx(reported, abs=1e-6)
    exported = json.loads(
        _cli(
            env,
            home,
            "export",
            trained["run_id"],
            "--format",
            "onnx",
            "-o",
            str(tmp_path / "model.onnx"),
            "--json",
        ).stdout
    )
    assert (tmp_path / "model.onnx").is_file() and exported["max_abs_diff"] < 1e-4


def test_sagemaker_style_script_runs_unchanged(
    cloud: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    provider, env = cloud
    example = REPO / "examples" / "bring-your-own-script"
    subprocess.run([PYTHON, "prepare.py"], cwd=example, check=True, capture_output=True)
    spec = yaml.safe_load((example / "spec.yaml").read_text())
    spec["model"]["hyperparameters"]["epochs"] = 3
    spec["model"]["script"] = str(example / "train.py")
    for split in ("train", "test"):
        spec["data"][split] = str(example / spec["data"][split])
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = _cli(
        env, tmp_path / "home", "train", str(path), "--provider", provider, "--json"
    )
    metrics = json.loads(out.stdout)
    assert metrics["test_accuracy"] > 0.8  # the script's own metrics.json


@pytest.mark.parametrize("provider", CLOUDS or ["none"])
def test_setup_prints_and_writes_the_account_templates(
    provider: str, tmp_path: Path
) -> None:
    if provider == "none":
        pytest.skip("no cloud provider is installed")
    env = _clean_env()
    printed = _cli(env, tmp_path / "home", "setup", "--provider", provider).stdout
    names = [
        line[len("# ---- ") :]
        for line in printed.splitlines()
        if line.startswith("# ---- ")
    ]
    assert names, printed[:500]
    out = tmp_path / "setup"
    _cli(env, tmp_path / "home", "setup", "--provider", provider, "-o", str(out))
    assert sorted(p.name for p in out.iterdir()) == sorted(names)
    assert not (tmp_path / "home").exists(), "set-up creates nothing but its files"
