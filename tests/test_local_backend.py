"""Planning, the registry, the CLI around training, and the less common model kinds."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import PYTHON, REPO, cli_env, digits_spec

import cloudnn
from cloudnn.cli.main import cli
from cloudnn.client import Client
from cloudnn.errors import ProviderNotInstalledError, SpecError, UnsupportedFeatureError


def _invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


# -- planning -------------------------------------------------------------------


def test_plan_is_pure_and_shows_the_job_contract(
    digits_csv: Path, write_spec, cloudnn_home: Path
) -> None:
    spec = write_spec(digits_spec(digits_csv))
    before = sorted(cloudnn_home.rglob("*"))
    code, out, _ = _invoke("plan", str(spec), "--json")
    assert code == 0
    assert sorted(cloudnn_home.rglob("*")) == before  # nothing written
    plan = json.loads(out)
    assert plan["provider"] == "local"
    assert plan["estimated_cost_usd"] == 0.0
    (request,) = plan["requests"]
    assert request["command"][1:4] == ["-m", "cloudnn.runtime.job", "--spec"]
    env = request["env"]
    assert env["SM_MODEL_DIR"] == env["AIP_MODEL_DIR"] == env["CLOUDNN_MODEL_DIR"]
    assert env["CLOUDNN_PLATFORM"] == "local"


def test_plan_python_api_matches_cli(digits_csv: Path, write_spec) -> None:
    spec = write_spec(digits_spec(digits_csv, resources={"accelerator": "T4:1"}))
    plan = cloudnn.plan(spec)
    assert plan.accelerator == "T4:1"
    assert any("GPU" in w for w in plan.warnings)


def test_missing_provider_names_the_extra(digits_csv: Path, write_spec) -> None:
    # azure is a known cloud whose distribution this repository does not build
    spec = write_spec(digits_spec(digits_csv))
    with pytest.raises(ProviderNotInstalledError) as info:
        Client(quiet=True).plan(spec, provider="azure")
    assert 'pip install "cloudnn[azure]"' in (info.value.hint or "")
    code, _, err = _invoke("plan", str(spec), "--provider", "azure")
    assert code == 2
    assert err.splitlines()[0].startswith("error: provider 'azure' is not installed")
    assert 'To fix: pip install "cloudnn[azure]"' in err


@pytest.mark.parametrize(
    ("override", "feature"),
    [
        ({"resources": {"nodes": 2}}, "multi_node"),
        (
            {"data": {"train": "s3://bucket/digits.csv", "target": "label"}},
            "remote_data",
        ),
    ],
)
def test_local_refuses_what_it_cannot_do_before_any_side_effect(
    digits_csv: Path, write_spec, cloudnn_home: Path, override: dict, feature: str
) -> None:
    spec = write_spec(digits_spec(digits_csv, **override))
    with pytest.raises(UnsupportedFeatureError) as info:
        Client(quiet=True).train(spec)
    assert feature in str(info.value)
    assert info.value.rows and all(reason for _, reason in info.value.rows)
    assert Client(quiet=True).runs() == []  # refused before anything was recorded
    code, _, err = _invoke("train", str(spec))
    assert code == 2 and "To fix:" in err and "Traceback" not in err


def test_every_refusal_is_listed_as_a_table(
    digits_csv: Path, write_spec, cloudnn_home: Path
) -> None:
    spec = write_spec(
        digits_spec(
            digits_csv,
            resources={"nodes": 3},
            data={"train": "s3://bucket/digits.csv", "target": "label"},
        )
    )
    code, _, err = _invoke("plan", str(spec))
    assert code == 2
    lines = err.splitlines()
    assert lines[0] == (
        "error: provider 'local' does not support 2 things this spec asks for: "
        "multi_node (resources.nodes=3), remote_data (data.train=s3://bucket/digits.csv)"
    )
    assert lines[1].split() == ["Feature", "Reason"]
    assert lines[2].lstrip().startswith("multi_node (resources.nodes=3)")
    assert lines[3].lstrip().startswith("remote_data (data.train=s3://")
    assert lines[4].startswith("To fix:")


# -- registry and CLI -------------------------------------------------------------


@pytest.mark.slow
def test_cli_train_runs_show_evaluate(
    digits_csv: Path, write_spec, cloudnn_home: Path
) -> None:
    spec = write_spec(digits_spec(digits_csv, train={"epochs": 3}))
    out = subprocess.run(
        [PYTHON, "-m", "cloudnn.cli.main", "train", str(spec), "--json"],
        env=cli_env(cloudnn_home),
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    metrics = json.loads(out.stdout)
    run_id = metrics["run_id"]
    # a new process finds it through the registry
    code, listing, _ = _invoke("runs", "list")
    assert code == 0 and run_id in listing and "SUCCEEDED" in listing
    code, shown, _ = _invoke("runs", "show", run_id[:12], "--json")
    assert (
        json.loads(shown)["metrics"]["test"]["accuracy"] == metrics["test"]["accuracy"]
    )
    code, report, _ = _invoke("evaluate", "latest", "--json")
    assert code == 0
    # re-evaluating the test split reproduces the training-time number exactly
    assert json.loads(report)["test"]["accuracy"] == metrics["test"]["accuracy"]
    code, report, _ = _invoke("evaluate", run_id, "--data", str(digits_csv), "--json")
    assert json.loads(report)["data"]["count"] == 1797


def test_unknown_run_is_a_clear_error() -> None:
    code, _, err = _invoke("runs", "show", "no-such-run")
    assert code == 2
    assert err.startswith("error: no run 'no-such-run'")
    assert "To fix:" in err


@pytest.mark.slow
def test_resume_refuses_a_changed_spec(digits_csv: Path, write_spec) -> None:
    client = Client(quiet=True)
    run = client.train(write_spec(digits_spec(digits_csv, train={"epochs": 2})))
    changed = write_spec(digits_spec(digits_csv, train={"epochs": 4}), "changed.yaml")
    with pytest.raises(SpecError) as info:
        client.train(changed, resume=run.run_id)
    assert "spec changed" in str(info.value)


# -- model kinds and tasks -------------------------------------------------------------


@pytest.mark.slow
def test_user_module_factory_trains(
    digits_csv: Path, write_spec, tmp_path: Path
) -> None:
    (tmp_path / "mynets.py").write_text(
        "import torch.nn as nn\n"
        "def make(input_dim, num_outputs, width=32):\n"
        "    return nn.Sequential(nn.Linear(input_dim, width), nn.ReLU(),"
        " nn.Linear(width, num_outputs))\n"
    )
    spec = write_spec(
        digits_spec(
            digits_csv,
            model={"module": "mynets:make", "params": {"width": 48}},
            train={"epochs": 8},
        )
    )
    run = Client(quiet=True).train(spec)
    assert run.metrics["test"]["accuracy"] > 0.9
    state = __import__("torch").load(run.model_dir / "model.pt", weights_only=True)
    assert state["0.weight"].shape == (48, 64)  # params reached the factory


@pytest.mark.slow
def test_regression_with_groups(write_spec, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 3))
    group = np.where(rng.random(600) < 0.5, "north", "south")
    y = x @ np.array([1.5, -2.0, 0.5]) + 0.1 * rng.normal(size=600)
    path = tmp_path / "reg.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["a", "b", "c", "region", "y"])
        for row, g, t in zip(x, group, y, strict=True):
            w.writerow([*row, g, t])
    spec = write_spec(
        {
            "name": "reg",
            "task": "regression",
            "model": {"type": "mlp", "hidden_sizes": [32], "dropout": 0.0},
            "data": {"train": str(path), "target": "y", "group_column": "region"},
            "train": {"epochs": 40, "optimizer": {"lr": 0.01}},
        }
    )
    run = Client(quiet=True).train(spec)
    assert run.metrics["headline"]["metric"] == "r2"
    assert run.metrics["test"]["r2"] > 0.95
    groups = run.metrics["groups"]
    assert set(groups["groups"]) == {"north", "south"}
    assert groups["flag"] is False


def test_check_reports_each_provider() -> None:
    code, out, _ = _invoke("check", "--provider", "local")
    assert code == 0
    assert "local    ready" in out
    # every known provider is listed, installed or not
    _, out, _ = _invoke("check")
    for name in ("local", "aws", "gcp", "azure"):
        assert any(line.startswith(f"{name} ") for line in out.splitlines()), out
    code, out, _ = _invoke("check", "--provider", "azure")
    assert code == 1
    assert 'azure    not installed  (pip install "cloudnn[azure]")' in out
