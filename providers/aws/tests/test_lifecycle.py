"""The whole SageMaker path, from the CLI and the SDK, against the emulator.

The digits-mlp example is trained once on the emulator (``digits_aws_run``)
and that run is what the local accuracy, the spot restart's weights and the
two-node accuracy are compared with.
"""

from __future__ import annotations

import csv
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from aws_testlib import EXAMPLES, DigitsRun, RunningEmulator, cli

from cloudnn.client import Client
from cloudnn.provider import JobState
from cloudnn.runtime.events import parse_event
from cloudnn.spec import Spec, load_spec
from cloudnn.testing import wait_for_terminal
from cloudnn_aws import SageMakerProvider

pytestmark = pytest.mark.slow


def _digits_variant(tmp_path: Path, name: str, **resources: Any) -> Spec:
    """examples/digits-mlp with other resources (same data, seed and training)."""
    raw = load_spec(EXAMPLES / "digits-mlp" / "spec.yaml").model_dump(mode="json")
    raw["name"] = name
    raw["resources"].update(resources)
    return Spec.model_validate(raw)


def _state_dict(provider: SageMakerProvider, model_uri: str, dest: Path) -> Any:
    import torch

    folder = provider.download(model_uri, dest)
    saved = torch.load(folder / "model.pt", map_location="cpu", weights_only=False)
    return saved.get("state_dict", saved) if isinstance(saved, dict) else saved


def _test_accuracy(metrics: dict[str, Any]) -> float:
    return float(metrics["headline"]["test"])


# ------------------------------------------------------------------ the CLI


def test_cli_train_follows_the_job_and_matches_the_local_run(
    digits_aws_run: DigitsRun, digits_spec_path: Path, tmp_path: Path
) -> None:
    # progress came from the job's log events in CloudWatch
    assert re.search(r"training .*60/60", digits_aws_run.stderr), digits_aws_run.stderr
    assert "Invoking script with the following command" in digits_aws_run.stderr
    assert digits_aws_run.model_uri.startswith("s3://cloudnn-emulator/cloudnn/jobs/")
    local = cli(
        "train",
        str(digits_spec_path),
        "--json",
        env={**_local_env(tmp_path), "CLOUDNN_HOME": str(tmp_path / "local-home")},
    )
    assert local.returncode == 0, local.stderr[-2000:]
    local_metrics = json.loads(local.stdout)
    assert _test_accuracy(digits_aws_run.metrics) == _test_accuracy(local_metrics)


def _local_env(tmp_path: Path) -> dict[str, str]:
    import os

    from aws_testlib import REPO, offline_aws_env

    env = offline_aws_env(os.environ)
    env["PYTHONPATH"] = str(REPO)
    return env


def test_cli_deploy_predict_delete(
    digits_aws_run: DigitsRun, emulator: RunningEmulator, tmp_path: Path
) -> None:
    env = emulator.cli_env(digits_aws_run.home)
    out = cli("deploy", digits_aws_run.run_id, "--provider", "aws", env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    match = re.search(r"^endpoint\s+(\S+)\s+\[InService\]", out.stdout, re.M)
    assert match, out.stdout
    name = match.group(1)

    rows, labels = [], []
    with open(EXAMPLES / "digits-mlp" / "data" / "digits.csv", newline="") as fh:
        for row in list(csv.DictReader(fh))[:5]:
            labels.append(int(row.pop("label")))
            rows.append(list(row.values()))
    data = tmp_path / "rows.csv"
    data.write_text("\n".join(",".join(r) for r in rows) + "\n")
    predicted = cli("predict", name, "--data", str(data), env=env)
    assert predicted.returncode == 0, predicted.stderr
    answers = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert [a["label"] for a in answers] == labels

    sm = emulator.boto3("sagemaker")
    assert sm.describe_endpoint(EndpointName=name)["EndpointStatus"] == "InService"
    deleted = cli("delete", name, "--yes", env=env)
    assert deleted.returncode == 0, deleted.stderr
    assert not sm.list_endpoints(NameContains=name)["Endpoints"]
    assert not sm.list_endpoint_configs(NameContains=name)["EndpointConfigs"]
    assert not sm.list_models(NameContains=name)["Models"]


# ------------------------------------------------------------------ spot


def test_spot_interruption_recovers_with_identical_weights(
    digits_aws_run: DigitsRun, emulator: RunningEmulator, faults: Any, tmp_path: Path
) -> None:
    provider = SageMakerProvider(home=tmp_path / "home", **emulator.options())
    spec = _digits_variant(tmp_path, "digits-spot", spot=True)
    plan = provider.plan_training(spec, run_id="digits-spot-1")
    assert plan.requests[0]["params"]["EnableManagedSpotTraining"] is True
    ref = provider.submit_training(plan)
    faults.interrupt(ref.job_id, after_epoch=20)
    seen = wait_for_terminal(provider, ref, timeout=400)
    states = [s.state for s in seen]
    assert JobState.RECOVERING in states, states
    assert states.index(JobState.RECOVERING) > states.index(JobState.RUNNING)
    assert seen[-1].state is JobState.SUCCEEDED, seen[-1].message

    events = [parse_event(line.text) for line in provider.stream_logs(ref)]
    kinds = [e["event"] for e in events if e]
    assert "preempted" in kinds and "resume" in kinds, kinds
    resumed = next(e for e in events if e and e["event"] == "resume")
    assert resumed["epoch"] >= 20  # from the checkpoint, not from scratch

    import torch

    spot = _state_dict(provider, seen[-1].model_uri, tmp_path / "spot")
    plain = _state_dict(provider, digits_aws_run.model_uri, tmp_path / "plain")
    assert spot.keys() == plain.keys()
    assert all(torch.equal(spot[k], plain[k]) for k in plain)


# ------------------------------------------------------------------ two nodes


def test_two_nodes_reach_the_one_node_accuracy(
    digits_aws_run: DigitsRun, emulator: RunningEmulator, tmp_path: Path
) -> None:
    provider = SageMakerProvider(home=tmp_path / "home", **emulator.options())
    spec = _digits_variant(tmp_path, "digits-2nodes", nodes=2)
    plan = provider.plan_training(spec, run_id="digits-2nodes-1")
    assert plan.requests[0]["params"]["ResourceConfig"]["InstanceCount"] == 2
    ref = provider.submit_training(plan)
    seen = wait_for_terminal(provider, ref, timeout=500)
    assert seen[-1].state is JobState.SUCCEEDED, seen[-1].message
    metrics = dict(seen[-1].metrics)
    assert metrics["world_size"] == 2
    logs = emulator.boto3("logs")
    streams = logs.describe_log_streams(
        logGroupName="/aws/sagemaker/TrainingJobs", logStreamNamePrefix=f"{ref.job_id}/"
    )["logStreams"]
    assert sorted(s["logStreamName"].split("/")[1][:6] for s in streams) == [
        "algo-1",
        "algo-2",
    ]
    one = _test_accuracy(digits_aws_run.metrics)
    assert abs(_test_accuracy(metrics) - one) <= 0.01, (metrics["headline"], one)


# ------------------------------------------------------------------ faults


def _small_spec(tmp_path: Path, name: str, epochs: int = 2) -> Path:
    """A tiny classification spec file (its data beside it)."""
    from cloudnn.testing import write_contract_data

    data = write_contract_data(tmp_path / "data")
    path = tmp_path / f"{name}.yaml"
    spec = {
        "name": name,
        "task": "classification",
        "model": {"type": "mlp", "hidden_sizes": [8]},
        "data": {"train": str(data), "target": "label"},
        "train": {"epochs": epochs, "batch_size": 16, "seed": 0},
    }
    path.write_text(yaml.safe_dump(spec))
    return path


def test_throttled_lifecycle_creates_each_resource_once(
    emulator: RunningEmulator, faults: Any, tmp_path: Path
) -> None:
    spec_path = _small_spec(tmp_path, "throttled")
    provider = SageMakerProvider(home=tmp_path / "home", **emulator.options())
    client = Client(home=tmp_path / "home", quiet=True, providers={"aws": provider})
    faults.configure(throttle_fraction=0.3, seed=11)
    run = client.train(spec_path, provider="aws")
    assert run.state == "SUCCEEDED", run.record.message
    endpoint = client.deploy(run.run_id, provider="aws")
    assert len(endpoint.predict([[0.0] * 8, [2.0, 0, 0, 2.0, 0, 0, 2.0, 0]])) == 2
    injected = faults.faults()["injected"]
    assert len([i for i in injected if i[0] == "throttle"]) >= 5, injected

    sm = emulator.boto3("sagemaker")
    jobs = sm.list_training_jobs(NameContains=run.run_id)["TrainingJobSummaries"]
    assert len(jobs) == 1
    name = endpoint.name
    assert len(sm.list_models(NameContains=name)["Models"]) == 1
    assert len(sm.list_endpoint_configs(NameContains=name)["EndpointConfigs"]) == 1
    assert len(sm.list_endpoints(NameContains=name)["Endpoints"]) == 1
    endpoint.delete()
    assert not sm.list_endpoints(NameContains=name)["Endpoints"]
    assert not sm.list_models(NameContains=name)["Models"]


def test_no_capacity_is_reported_then_resume_submits_again(
    emulator: RunningEmulator, faults: Any, tmp_path: Path
) -> None:
    spec_path = _small_spec(tmp_path, "capacity", epochs=1)
    env = emulator.cli_env(tmp_path / "home")
    faults.configure(fail_create={"CreateTrainingJob": 1})
    out = cli("train", str(spec_path), "--provider", "aws", env=env)
    assert out.returncode == 1, out.stderr
    lines = out.stderr.strip().splitlines()
    assert any(
        line.startswith("error: CreateTrainingJob: ResourceLimitExceeded")
        for line in lines
    ), lines
    assert any(line.startswith("To fix: SageMaker has no capacity") for line in lines)
    runs = json.loads(cli("runs", "list", "--json", env=env).stdout)
    (failed,) = [r for r in runs if r["run_id"].startswith("capacity-")]
    assert failed["state"] == "FAILED"
    again = cli(
        "train",
        str(spec_path),
        "--provider",
        "aws",
        "--resume",
        failed["run_id"],
        env=env,
    )
    assert again.returncode == 0, again.stderr[-2000:]


def test_killed_cli_then_resume_adopts_the_job(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    import subprocess
    import sys

    spec_path = _small_spec(tmp_path, "killed", epochs=3)
    env = emulator.cli_env(tmp_path / "home")
    sm = emulator.boto3("sagemaker")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloudnn.cli.main", "train", str(spec_path)]
        + ["--provider", "aws"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    jobs: list[dict[str, Any]] = []
    while not jobs and time.monotonic() < deadline:
        jobs = sm.list_training_jobs(NameContains="killed-")["TrainingJobSummaries"]
        time.sleep(0.02)
    proc.kill()  # right after CreateTrainingJob: no cleanup, no last word
    proc.wait()
    assert len(jobs) == 1, "the CLI never created its job"
    runs = json.loads(cli("runs", "list", "--json", env=env).stdout)
    (run,) = runs
    assert run["state"] in ("SUBMITTING", "QUEUED")
    resumed = cli(
        "train",
        str(spec_path),
        "--provider",
        "aws",
        "--resume",
        run["run_id"],
        "--json",
        env=env,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    after = sm.list_training_jobs(NameContains="killed-")["TrainingJobSummaries"]
    assert [j["TrainingJobName"] for j in after] == [jobs[0]["TrainingJobName"]]
    assert json.loads(resumed.stdout)["run_id"] == run["run_id"]


def test_autoscaling_is_attached_in_service_and_removed_with_the_endpoint(
    digits_aws_run: DigitsRun, emulator: RunningEmulator, tmp_path: Path
) -> None:
    from cloudnn.testing.fixtures import wait_for_endpoint

    provider = SageMakerProvider(home=tmp_path / "home", **emulator.options())
    raw = load_spec(EXAMPLES / "digits-mlp" / "spec.yaml").model_dump(mode="json")
    raw["deploy"]["autoscaling"] = {"min_replicas": 1, "max_replicas": 3}
    plan = provider.plan_endpoint(Spec.model_validate(raw), digits_aws_run.model_uri)
    ref = provider.create_endpoint(plan)
    aas = emulator.boto3("application-autoscaling")
    resource = f"endpoint/{plan.endpoint_name}/variant/AllTraffic"
    try:
        seen = wait_for_endpoint(provider, ref, timeout=180)
        assert seen[-1].state.value == "InService", seen[-1]
        targets = aas.describe_scalable_targets(
            ServiceNamespace="sagemaker", ResourceIds=[resource]
        )["ScalableTargets"]
        assert [(t["MinCapacity"], t["MaxCapacity"]) for t in targets] == [(1, 3)]
        policies = aas.describe_scaling_policies(
            ServiceNamespace="sagemaker", ResourceId=resource
        )["ScalingPolicies"]
        assert [p["PolicyType"] for p in policies] == ["TargetTrackingScaling"]
    finally:
        provider.delete_endpoint(ref)
    assert not aas.describe_scalable_targets(
        ServiceNamespace="sagemaker", ResourceIds=[resource]
    )["ScalableTargets"]


def test_resubmitting_a_cancelled_run_continues_from_its_checkpoint(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    from cloudnn.testing import make_contract_spec

    provider = SageMakerProvider(home=tmp_path / "home", **emulator.options())
    spec = make_contract_spec(
        tmp_path / "data", train={"epochs": 150, "batch_size": 16, "seed": 0}
    )
    plan = provider.plan_training(spec, run_id="cancelled-1")
    first = provider.submit_training(plan)
    logs: list[str] = []
    deadline = time.monotonic() + 120
    while not any('"epoch": 5,' in line for line in logs):
        assert time.monotonic() < deadline, logs[-5:]
        logs = [line.text for line in provider.stream_logs(first)]
        time.sleep(0.2)
    provider.cancel_job(first)
    assert wait_for_terminal(provider, first, timeout=120)[-1].state is (
        JobState.CANCELLED
    )
    second = provider.submit_training(plan)  # what `cloudnn train --resume` does
    assert second.job_id == f"{first.job_id}-r2"
    final = wait_for_terminal(provider, second, timeout=180)[-1]
    assert final.state is JobState.SUCCEEDED, final.message
    assert final.model_uri.endswith(f"/{second.job_id}/output/model.tar.gz")
    events = [parse_event(line.text) for line in provider.stream_logs(second)]
    resumed = [e for e in events if e and e["event"] == "resume"]
    assert resumed and resumed[0]["epoch"] >= 5, resumed
