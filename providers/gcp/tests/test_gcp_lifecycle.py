"""The whole cloud path from the CLI, against ``cloudnn emulator --provider gcp``.

Train digits-mlp (progress bar from Cloud Logging events, the local run's
accuracy), deploy, predict, delete; the same under 30% injected
UNAVAILABLE/RESOURCE_EXHAUSTED answers; a SPOT preemption mid-training; a
two-replica job; a stock-out. The CLI runs in subprocesses configured only
by the variables the emulator printed.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from gcp_testlib import EXAMPLES, DigitsRun, RunningEmulator, cli, train_cli

from cloudnn.testing import write_contract_data

pytestmark = pytest.mark.slow


def _digits_variant(tmp_path: Path, **changes: Any) -> Path:
    """examples/digits-mlp/spec.yaml with some sections changed (data path kept)."""
    raw = yaml.safe_load((EXAMPLES / "digits-mlp" / "spec.yaml").read_text())
    raw["data"]["train"] = str(EXAMPLES / "digits-mlp" / "data" / "digits.csv")
    for key, value in changes.items():
        raw[key] = {**raw.get(key, {}), **value}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _tiny_spec(tmp_path: Path) -> Path:
    data = write_contract_data(tmp_path / "data")
    spec = {
        "name": "tiny",
        "task": "classification",
        "model": {"type": "mlp", "hidden_sizes": [8]},
        "data": {"train": str(data), "target": "label"},
        "train": {"epochs": 2, "batch_size": 16, "seed": 0},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _rows(n: int) -> tuple[Path, list[int]]:
    """The first ``n`` digits as a CSV without labels, and their labels."""
    with open(EXAMPLES / "digits-mlp" / "data" / "digits.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))[:n]
    labels = [int(r.pop("label")) for r in rows]
    return rows, labels  # type: ignore[return-value]


def _write_rows(tmp_path: Path, n: int) -> tuple[Path, list[int]]:
    rows, labels = _rows(n)
    path = tmp_path / "rows.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        for row in rows:  # type: ignore[attr-defined]
            writer.writerow(row.values())
    return path, labels


def _state_dict(emulator: RunningEmulator, model_uri: str, dest: Path) -> Any:
    import torch

    from cloudnn_gcp import VertexAIProvider

    provider = VertexAIProvider(home=dest / "home", **emulator.options())
    folder = provider.download(model_uri, dest / "model")
    return torch.load(folder / "model.pt", map_location="cpu", weights_only=False)


def _tensors(obj: Any, prefix: str = "") -> dict[str, Any]:
    import torch

    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    out: dict[str, Any] = {}
    if isinstance(obj, dict):
        for key, value in obj.items():
            out.update(_tensors(value, f"{prefix}.{key}"))
    return out


def _ours(emulator: RunningEmulator, kind: str, run_id: str) -> list[Any]:
    """The run's custom jobs / models / endpoints, listed with the real clients."""
    client = emulator.client(
        {"jobs": "jobs", "models": "models", "endpoints": "endpoints"}[kind]
    )
    parent = "projects/cloudnn-emulator/locations/us-central1"
    request = {"parent": parent, "filter": f'labels.cloudnn_run_id="{run_id}"'}
    method = {
        "jobs": client.list_custom_jobs if kind == "jobs" else None,
        "models": getattr(client, "list_models", None),
        "endpoints": getattr(client, "list_endpoints", None),
    }[kind]
    return list(method(request=request))


# ---------------------------------------------------------------- digits-mlp


def test_cli_trains_digits_with_a_progress_bar_and_the_local_accuracy(
    digits_gcp_run: DigitsRun, digits_local_run: DigitsRun
) -> None:
    assert "training" in digits_gcp_run.stderr and "/60" in digits_gcp_run.stderr
    assert digits_gcp_run.model_uri == (
        f"gs://cloudnn-emulator/cloudnn/runs/{digits_gcp_run.run_id}/model/"
    )
    cloud = digits_gcp_run.metrics["headline"]
    local = digits_local_run.metrics["headline"]
    assert cloud["metric"] == "accuracy"
    assert cloud["test"] == local["test"], (cloud, local)
    assert cloud["test"] > 0.9


def test_cli_logs_replay_the_job_from_cloud_logging(
    emulator: RunningEmulator, digits_gcp_run: DigitsRun
) -> None:
    out = cli("logs", digits_gcp_run.run_id, env=emulator.cli_env(digits_gcp_run.home))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith('::cloudnn:: {"event": "start"')
    assert lines[-1].startswith('::cloudnn:: {"event": "finished"')


def test_cli_deploys_predicts_and_deletes(
    emulator: RunningEmulator, digits_gcp_run: DigitsRun, tmp_path: Path
) -> None:
    env = emulator.cli_env(digits_gcp_run.home)
    deploy = cli(
        "deploy", digits_gcp_run.run_id, "--provider", "gcp", "--json", env=env
    )
    assert deploy.returncode == 0, deploy.stderr[-3000:]
    endpoint = json.loads(deploy.stdout)
    assert endpoint["state"] == "InService" and endpoint["provider"] == "gcp"
    assert endpoint["url"].endswith(f"/endpoints/{endpoint['name']}:predict")

    rows, labels = _write_rows(tmp_path, 40)
    predict = cli("predict", endpoint["name"], "--data", str(rows), "--json", env=env)
    assert predict.returncode == 0, predict.stderr
    predictions = json.loads(predict.stdout)["predictions"]
    assert len(predictions) == 40
    got = [p["label"] for p in predictions]
    assert all(isinstance(label, int) for label in got)  # ints stay ints
    assert sum(g == w for g, w in zip(got, labels, strict=True)) >= 36

    run_id = digits_gcp_run.run_id
    assert len(_ours(emulator, "models", run_id)) == 1
    assert len(_ours(emulator, "endpoints", run_id)) == 1
    delete = cli("delete", endpoint["name"], "--yes", env=env)
    assert delete.returncode == 0, delete.stderr
    assert _ours(emulator, "models", run_id) == []
    assert _ours(emulator, "endpoints", run_id) == []


def test_spot_preemption_resumes_to_bit_identical_weights(
    emulator: RunningEmulator,
    faults: Any,
    digits_gcp_run: DigitsRun,
    tmp_path: Path,
) -> None:
    spec = _digits_variant(tmp_path, resources={"spot": True})
    faults.preempt(job="*", after_epoch=3)
    home = tmp_path / "home"
    run = train_cli(spec, provider="gcp", env=emulator.cli_env(home), home=home)
    injected = [kind for kind, _ in faults.state()["faults"]["injected"]]
    assert injected == ["spot_interruption"], injected
    logs = cli("logs", run.run_id, env=emulator.cli_env(home)).stdout
    assert "SPOT VM preempted" in logs
    assert '"event": "resume"' in logs
    uninterrupted = _tensors(
        _state_dict(emulator, digits_gcp_run.model_uri, tmp_path / "a")
    )
    resumed = _tensors(_state_dict(emulator, run.model_uri, tmp_path / "b"))
    assert uninterrupted and uninterrupted.keys() == resumed.keys()
    import torch

    different = [
        k for k in uninterrupted if not torch.equal(uninterrupted[k], resumed[k])
    ]
    assert not different, different


def test_two_replicas_reach_the_single_replica_accuracy(
    emulator: RunningEmulator, digits_gcp_run: DigitsRun, tmp_path: Path
) -> None:
    spec = _digits_variant(tmp_path, resources={"nodes": 2})
    home = tmp_path / "home"
    run = train_cli(spec, provider="gcp", env=emulator.cli_env(home), home=home)
    assert run.metrics.get("world_size") == 2
    one = digits_gcp_run.metrics["headline"]["test"]
    two = run.metrics["headline"]["test"]
    assert abs(two - one) <= 0.01, (one, two)
    [job] = _ours(emulator, "jobs", run.run_id)
    pools = job.job_spec.worker_pool_specs
    assert [p.replica_count for p in pools] == [1, 1]


# ------------------------------------------------------------------- faults


def test_lifecycle_completes_under_30_percent_faults_with_one_of_each(
    emulator: RunningEmulator, faults: Any, tmp_path: Path
) -> None:
    spec = _tiny_spec(tmp_path)
    home = tmp_path / "home"
    env = emulator.cli_env(home)
    faults.configure(throttle_fraction=0.3, seed=11)
    run = train_cli(spec, provider="gcp", env=env, home=home)
    deploy = cli("deploy", run.run_id, "--provider", "gcp", "--json", env=env)
    assert deploy.returncode == 0, deploy.stderr[-3000:]
    name = json.loads(deploy.stdout)["name"]
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps({"instances": [[0.5] * 8, [2.0] * 8]}))
    predict = cli("predict", name, "--data", str(rows), "--json", env=env)
    assert predict.returncode == 0, predict.stderr
    assert len(json.loads(predict.stdout)["predictions"]) == 2
    injected = faults.state()["faults"]["injected"]
    faults.reset()  # count with clean answers
    assert len(injected) >= 10, "the faults were not injected"
    assert len(_ours(emulator, "jobs", run.run_id)) == 1
    assert len(_ours(emulator, "models", run.run_id)) == 1
    assert len(_ours(emulator, "endpoints", run.run_id)) == 1
    faults.configure(throttle_fraction=0.3, seed=12)
    delete = cli("delete", name, "--yes", env=env)
    assert delete.returncode == 0, delete.stderr
    faults.reset()
    assert _ours(emulator, "endpoints", run.run_id) == []
    assert _ours(emulator, "models", run.run_id) == []


def test_a_stock_out_is_a_capacity_error_with_a_fix(
    emulator: RunningEmulator, faults: Any, tmp_path: Path
) -> None:
    faults.configure(fail_create={"CreateCustomJob": 1})
    home = tmp_path / "home"
    out = cli(
        "train",
        str(_tiny_spec(tmp_path)),
        "--provider",
        "gcp",
        env=emulator.cli_env(home),
    )
    assert out.returncode == 1, out.stderr
    assert "error: Vertex AI has no capacity for this request now" in out.stderr
    assert "To fix: try another region" in out.stderr


def test_your_own_module_travels_in_the_bundle_and_trains(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    from cloudnn.provider import Capability, JobState
    from cloudnn.testing import make_contract_spec, spec_requiring, wait_for_terminal
    from cloudnn_gcp import VertexAIProvider

    provider = VertexAIProvider(home=tmp_path / "home", **emulator.options())
    spec = spec_requiring(
        make_contract_spec(tmp_path / "data"),
        Capability.CUSTOM_MODULE,
        tmp_path / "net",
    )
    plan = provider.plan_training(spec, run_id="module-1")
    final = wait_for_terminal(provider, provider.submit_training(plan), timeout=180)[-1]
    assert final.state is JobState.SUCCEEDED, final.message
    folder = provider.download(plan.model_uri, tmp_path / "model")
    meta = json.loads((folder / "cloudnn_model.json").read_text())
    assert meta["model"]["module"] == "contract_net:build"
