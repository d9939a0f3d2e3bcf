"""Planning on SageMaker: pure, offline, validated, and early with its errors."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from aws_testlib import PYTHON, REPO, cli, offline_aws_env

from cloudnn.client import Client
from cloudnn.errors import SpecError
from cloudnn.spec import Spec, load_spec
from cloudnn.testing import assert_no_side_effects, make_contract_spec
from cloudnn_aws import SageMakerProvider
from cloudnn_aws.compile import endpoint_name, job_name

ROLE = "arn:aws:iam::123456789012:role/cloudnn-test"


def _spec(tmp_path: Path, **overrides: Any) -> Spec:
    return make_contract_spec(tmp_path / "data", **overrides)


def _params(plan: Any, operation: str = "CreateTrainingJob") -> dict[str, Any]:
    (req,) = [r for r in plan.requests if r["operation"] == operation]
    return dict(req["params"])


def _aws(**opts: Any) -> dict[str, Any]:
    return {"providers": {"aws": {"role_arn": ROLE, "bucket": "my-bucket", **opts}}}


def test_cli_plan_prints_the_request_with_no_aws_config(tmp_path: Path) -> None:
    env = offline_aws_env({"PATH": "/usr/bin:/bin", "CLOUDNN_HOME": str(tmp_path)})
    env["PYTHONPATH"] = str(REPO)
    spec = REPO / "examples" / "digits-mlp" / "spec.yaml"
    out = cli("plan", str(spec), "--provider", "aws", env=env)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "provider        aws" in text
    assert "resources       1 x ml.m5.xlarge" in text
    assert '"operation": "CreateTrainingJob"' in text
    assert "pytorch-training:2.6.0-cpu-py312" in text
    # the missing settings are shown as such, with the fix
    assert "warning         providers.aws.role_arn is not set" in text
    assert "<unset:providers.aws.bucket>" in text


def test_planning_imports_no_aws_sdk(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from cloudnn.cli.main import main\n"
        f"sys.argv = ['cloudnn', 'plan', {str(REPO / 'examples/digits-mlp/spec.yaml')!r},"
        " '--provider', 'aws']\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "heavy = sorted(m for m in ('boto3', 'botocore', 'moto') if m in sys.modules)\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    env = offline_aws_env({"PATH": "/usr/bin:/bin", "CLOUDNN_HOME": str(tmp_path)})
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run(
        [PYTHON, "-c", code], env=env, capture_output=True, text=True, cwd=REPO
    )
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stderr


def test_plan_is_pure_and_offline_without_credentials(
    tmp_path: Path, cloudnn_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var)
    spec = _spec(tmp_path)
    provider = SageMakerProvider(home=cloudnn_home)
    with assert_no_side_effects([cloudnn_home, tmp_path]):
        plan = provider.plan_training(spec, run_id="pure-1")
    assert plan.instance_type == "ml.m5.xlarge"
    json.dumps(plan.to_dict(), allow_nan=False)


def test_submit_refuses_a_missing_role_before_any_call(
    tmp_path: Path, cloudnn_home: Path
) -> None:
    # nothing listens there: a call would fail differently, and later
    provider = SageMakerProvider(
        home=cloudnn_home, endpoint_url="http://127.0.0.1:9", bucket="my-bucket"
    )
    client = Client(quiet=True, providers={"aws": provider})
    with pytest.raises(SpecError) as caught:
        client.train(_spec(tmp_path), provider="aws", wait=False)
    err = caught.value
    assert err.field == "providers.aws.role_arn"
    assert "cloudnn setup --provider aws" in (err.hint or "")
    assert err.exit_code == 2


def test_cli_train_without_a_bucket_is_one_line_and_exit_2(tmp_path: Path) -> None:
    env = offline_aws_env({"PATH": "/usr/bin:/bin", "CLOUDNN_HOME": str(tmp_path)})
    env.update(
        PYTHONPATH=str(REPO),
        AWS_ENDPOINT_URL="http://127.0.0.1:9",
        CLOUDNN_AWS_ROLE_ARN=ROLE,
    )
    spec = REPO / "examples" / "digits-mlp" / "spec.yaml"
    out = cli("train", str(spec), "--provider", "aws", env=env)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert lines[0].startswith("error: providers.aws.bucket: is not set"), lines
    assert lines[1].startswith("To fix: set providers.aws.bucket"), lines


def test_instance_type_is_resolved_from_the_accelerator(tmp_path: Path) -> None:
    provider = SageMakerProvider()
    spec = _spec(tmp_path, resources={"accelerator": "T4:1"}, **_aws())
    plan = provider.plan_training(spec, run_id="gpu-1")
    params = _params(plan)
    assert plan.instance_type == params["ResourceConfig"]["InstanceType"]
    assert plan.instance_type == "ml.g4dn.xlarge"
    assert "-gpu-py312-cu126-" in params["AlgorithmSpecification"]["TrainingImage"]
    assert plan.hourly_cost_usd == pytest.approx(0.7364)
    assert plan.processes_per_node == 1


def test_a_count_sagemaker_lacks_takes_the_next_size_with_a_warning(
    tmp_path: Path,
) -> None:
    spec = _spec(tmp_path, resources={"accelerator": "T4:2"}, **_aws())
    plan = SageMakerProvider().plan_training(spec, run_id="gpu-2")
    assert plan.instance_type == "ml.g4dn.12xlarge"
    assert any("no training instance has exactly 2" in w for w in plan.warnings)


@pytest.mark.parametrize(
    ("opts", "resources", "field", "words"),
    [
        ({"instance_type": "ml.m5.huge"}, {}, "providers.aws.instance_type", "not a"),
        (
            {"instance_type": "ml.m5.xlarge"},
            {"accelerator": "T4:1"},
            "providers.aws.instance_type",
            "has no GPU",
        ),
        ({"subnets": ["subnet-1"]}, {}, "providers.aws.security_group_ids", "both"),
        ({}, {"max_runtime": "40d"}, "resources.max_runtime", "28 days"),
        ({"tags": {"aws:reserved": "x"}}, {}, "tags", "reserved prefix"),
        ({"tags": {"bad|key": "x"}}, {}, "tags", "does not match"),
    ],
)
def test_bad_settings_name_the_field_at_plan_time(
    tmp_path: Path,
    opts: dict[str, Any],
    resources: dict[str, Any],
    field: str,
    words: str,
) -> None:
    spec = _spec(tmp_path, resources=resources, **_aws(**opts))
    with pytest.raises(SpecError) as caught:
        SageMakerProvider().plan_training(spec, run_id="bad-1")
    assert caught.value.field == field
    assert words in str(caught.value)
    assert caught.value.hint


def test_gcs_data_is_refused_with_the_field(tmp_path: Path) -> None:
    raw = _spec(tmp_path).model_dump(mode="json")
    raw["data"]["train"] = "gs://bucket/train.csv"
    with pytest.raises(SpecError) as caught:
        SageMakerProvider().plan_training(Spec.model_validate(raw), run_id="gcs-1")
    assert caught.value.field == "data.train"


def test_the_request_carries_everything_the_spec_asks_for(tmp_path: Path) -> None:
    spec = _spec(
        tmp_path,
        resources={"nodes": 2, "spot": True, "max_runtime": "2h"},
        tags={"team": "vision"},
        **_aws(
            subnets=["subnet-0abc"],
            security_group_ids=["sg-0abc"],
            kms_key_id="arn:aws:kms:us-east-1:123456789012:key/abc",
            network_isolation=True,
            image_uri="123456789012.dkr.ecr.us-east-1.amazonaws.com/mine:1",
        ),
    )
    plan = SageMakerProvider().plan_training(spec, run_id="full-1")
    p = _params(plan)
    assert p["ResourceConfig"]["InstanceCount"] == 2 == plan.instance_count
    assert p["EnableManagedSpotTraining"] is True
    assert p["StoppingCondition"] == {
        "MaxRuntimeInSeconds": 7200,
        "MaxWaitTimeInSeconds": 14400,
    }
    assert p["CheckpointConfig"]["S3Uri"] == (
        f"s3://my-bucket/cloudnn/checkpoints/{plan.job_name}/"
    )
    assert p["VpcConfig"] == {
        "SecurityGroupIds": ["sg-0abc"],
        "Subnets": ["subnet-0abc"],
    }
    assert p["OutputDataConfig"]["KmsKeyId"].endswith("key/abc")
    assert p["ResourceConfig"]["VolumeKmsKeyId"].endswith("key/abc")
    assert p["EnableNetworkIsolation"] is True
    assert p["AlgorithmSpecification"]["TrainingImage"].endswith("/mine:1")
    tags = {t["Key"]: t["Value"] for t in p["Tags"]}
    assert tags["cloudnn:run-id"] == "full-1" and tags["team"] == "vision"
    assert plan.estimated_cost_usd == pytest.approx(0.23 * 2 * 2)
    hps = p["HyperParameters"]
    assert hps["sagemaker_program"] == "cloudnn_entry.py"
    (bundle,) = [u for u in plan.uploads if u.kind == "bundle"]
    assert hps["sagemaker_submit_directory"] == bundle.destination
    assert bundle.destination == (
        f"s3://my-bucket/cloudnn/bundles/{bundle.sha256}/bundle.tar.gz"
    )
    (data,) = [u for u in plan.uploads if u.kind == "data"]
    channel = p["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"]
    assert data.destination == channel + "contract.csv"
    assert plan.model_uri == (
        f"s3://my-bucket/cloudnn/jobs/{plan.job_name}/output/model.tar.gz"
    )


def test_s3_data_is_used_in_place(tmp_path: Path) -> None:
    raw = _spec(tmp_path, **_aws()).model_dump(mode="json")
    raw["data"]["train"] = "s3://datasets/digits/train.csv"
    plan = SageMakerProvider().plan_training(Spec.model_validate(raw), run_id="s3-1")
    channel = _params(plan)["InputDataConfig"][0]["DataSource"]["S3DataSource"]
    assert channel["S3Uri"] == "s3://datasets/digits/train.csv"
    assert [u.kind for u in plan.uploads] == ["bundle"]


def test_a_budget_becomes_the_time_limit(tmp_path: Path) -> None:
    spec = _spec(tmp_path, resources={"max_cost_usd": 0.23}, **_aws())
    plan = SageMakerProvider().plan_training(spec, run_id="budget-1")
    assert _params(plan)["StoppingCondition"]["MaxRuntimeInSeconds"] == 3600
    assert plan.estimated_cost_usd == pytest.approx(0.23)


def test_spec_settings_win_over_provider_options(tmp_path: Path) -> None:
    provider = SageMakerProvider(
        region="eu-west-1", bucket="option-bucket", role_arn=ROLE
    )
    plain = provider.plan_training(_spec(tmp_path), run_id="o-1")
    assert plain.details["region"] == "eu-west-1"
    assert plain.model_uri.startswith("s3://option-bucket/")
    assert (
        "763104351884.dkr.ecr.eu-west-1."
        in _params(plain)["AlgorithmSpecification"]["TrainingImage"]
    )
    spec = _spec(tmp_path, **_aws(region="us-west-2"))
    own = provider.plan_training(spec, run_id="o-1")
    assert own.details["region"] == "us-west-2"
    assert own.model_uri.startswith("s3://my-bucket/")


def test_unknown_provider_options_are_refused() -> None:
    with pytest.raises(SpecError) as caught:
        SageMakerProvider(regoin="us-east-1")
    assert "regoin" in str(caught.value)


@pytest.mark.parametrize(
    "run_id",
    ["golden-run", "my_run.with dots", "x" * 120, "digits-mlp-20260101-120000-ab12"],
)
def test_job_names_fit_sagemaker(run_id: str) -> None:
    name = job_name(run_id, "0123456789ab")
    assert re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}", name), name
    assert "_" not in name and len(name) <= 63
    assert name == job_name(run_id, "0123456789ab")
    assert name != job_name(run_id + "x", "0123456789ab")


def test_endpoint_plan_has_model_config_endpoint_and_scaling(tmp_path: Path) -> None:
    spec = _spec(
        tmp_path,
        deploy={
            "accelerator": "T4:1",
            "autoscaling": {"min_replicas": 1, "max_replicas": 3},
        },
        **_aws(),
    )
    model_uri = "s3://my-bucket/cloudnn/jobs/j/output/model.tar.gz"
    plan = SageMakerProvider().plan_endpoint(spec, model_uri)
    assert [r["operation"] for r in plan.requests] == [
        "CreateModel",
        "CreateEndpointConfig",
        "CreateEndpoint",
        "RegisterScalableTarget",
        "PutScalingPolicy",
    ]
    model = _params(plan, "CreateModel")
    container = model["PrimaryContainer"]
    assert "pytorch-inference:2.6.0-gpu" in container["Image"]
    assert container["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    assert container["ModelDataUrl"] == plan.uploads[0].destination
    variant = _params(plan, "CreateEndpointConfig")["ProductionVariants"][0]
    assert variant["InstanceType"] == plan.instance_type == "ml.g4dn.xlarge"
    scaling = _params(plan, "RegisterScalableTarget")
    assert (scaling["MinCapacity"], scaling["MaxCapacity"]) == (1, 3)
    assert plan.endpoint_name == endpoint_name(spec.name, model_uri)
    assert len(_params(plan, "CreateEndpointConfig")["EndpointConfigName"]) <= 63


def test_every_example_plans_and_validates() -> None:
    for folder in sorted((REPO / "examples").glob("*/spec.yaml")):
        spec = load_spec(folder)
        plan = SageMakerProvider(role_arn=ROLE, bucket="my-bucket").plan_training(
            spec, run_id="example-1"
        )
        assert not plan.details["missing"], folder
