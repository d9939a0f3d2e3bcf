"""Vendor errors become cloudnn errors with a fix; the emulator answers like AWS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from aws_testlib import RunningEmulator, cli
from botocore.exceptions import ClientError, NoCredentialsError

from cloudnn.errors import (
    AuthenticationError,
    CapacityError,
    NotFoundError,
    QuotaExceededError,
    SpecError,
    ThrottledError,
    TransientError,
)
from cloudnn.provider import JobState
from cloudnn.testing import make_contract_spec, wait_for_terminal
from cloudnn_aws import SageMakerProvider
from cloudnn_aws._sdk import CREDENTIAL_CHAIN, AlreadyExistsError, map_error


def _client_error(code: str, message: str, status: int = 400, **headers: str) -> Any:
    response = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers},
    }
    return ClientError(response, "CreateTrainingJob")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("code", "message", "status", "kind"),
    [
        ("ThrottlingException", "Rate exceeded", 400, ThrottledError),
        ("InternalFailure", "oops", 500, TransientError),
        ("ServiceUnavailable", "later", 503, TransientError),
        ("AccessDeniedException", "not allowed", 400, AuthenticationError),
        ("ExpiredTokenException", "expired", 400, AuthenticationError),
        ("UnrecognizedClientException", "bad key", 400, AuthenticationError),
        (
            "ResourceLimitExceeded",
            "The account-level service limit 'ml.p4d.24xlarge for training job usage'"
            " is 0 Instances",
            400,
            QuotaExceededError,
        ),
        (
            "ResourceLimitExceeded",
            "Unable to provision requested ML compute capacity.",
            400,
            CapacityError,
        ),
        ("ResourceInUse", "already exists", 400, AlreadyExistsError),
        ("ValidationException", "Could not find training job 'x'", 400, NotFoundError),
    ],
)
def test_vendor_errors_are_mapped(
    code: str, message: str, status: int, kind: type[Exception]
) -> None:
    mapped = map_error(_client_error(code, message, status))
    assert type(mapped) is kind
    assert mapped is not None and code in str(mapped)
    if kind is AuthenticationError:
        assert mapped.hint == CREDENTIAL_CHAIN
    if kind in (QuotaExceededError, CapacityError):
        assert mapped.hint and "instance type" in mapped.hint
    assert mapped.retryable == (kind in (ThrottledError, TransientError))


def test_throttling_honours_retry_after() -> None:
    mapped = map_error(
        _client_error("ThrottlingException", "slow down", 400, **{"retry-after": "3"})
    )
    assert isinstance(mapped, ThrottledError) and mapped.retry_after == 3.0


def test_validation_exception_names_the_spec_field() -> None:
    mapped = map_error(
        _client_error(
            "ValidationException",
            "1 validation error detected: Value 'ml.x' at "
            "'resourceConfig.instanceType' failed to satisfy constraint",
        )
    )
    assert isinstance(mapped, SpecError)
    assert mapped.field == "providers.aws.instance_type"


def test_no_credentials_names_the_credential_chain() -> None:
    mapped = map_error(NoCredentialsError())
    assert isinstance(mapped, AuthenticationError)
    assert "AWS_PROFILE" in (mapped.hint or "")


def test_the_emulator_validates_like_sagemaker(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    provider = SageMakerProvider(home=tmp_path, **emulator.options())
    spec = make_contract_spec(tmp_path / "data")
    params = dict(provider.plan_training(spec, run_id="v-1").requests[0]["params"])
    params["TrainingJobName"] = "bad_name"
    sm = emulator.boto3("sagemaker")
    with pytest.raises(ClientError) as caught:
        sm.create_training_job(**params)
    mapped = map_error(caught.value)
    assert isinstance(mapped, SpecError) and mapped.field == "run id"
    assert "trainingJobName" in str(mapped)


def test_duplicate_names_and_late_stops_are_refused(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    provider = SageMakerProvider(home=tmp_path, **emulator.options())
    spec = make_contract_spec(tmp_path / "data")
    plan = provider.plan_training(spec, run_id="dup-1")
    ref = provider.submit_training(plan)
    sm = emulator.boto3("sagemaker")
    with pytest.raises(ClientError) as caught:
        sm.create_training_job(**plan.requests[0]["params"])
    assert caught.value.response["Error"]["Code"] == "ResourceInUse"
    assert wait_for_terminal(provider, ref, timeout=120)[-1].state is JobState.SUCCEEDED
    with pytest.raises(ClientError) as late:
        sm.stop_training_job(TrainingJobName=ref.job_id)
    assert "in status Completed" in late.value.response["Error"]["Message"]


def test_a_failing_job_reports_why(emulator: RunningEmulator, tmp_path: Path) -> None:
    provider = SageMakerProvider(home=tmp_path, **emulator.options())
    raw = make_contract_spec(tmp_path / "data").model_dump(mode="json")
    raw["data"]["target"] = "no-such-column"
    from cloudnn.spec import Spec

    ref = provider.submit_training(
        provider.plan_training(Spec.model_validate(raw), run_id="fails-1")
    )
    final = wait_for_terminal(provider, ref, timeout=120)[-1]
    assert final.state is JobState.FAILED
    assert final.message.startswith("AlgorithmError:"), final.message
    assert "no-such-column" in final.message
    sm = emulator.boto3("sagemaker")
    described = sm.describe_training_job(TrainingJobName=ref.job_id)
    assert described["FailureReason"] == final.message


def test_cli_check_against_the_emulator(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    out = cli("check", "--provider", "aws", env=emulator.cli_env(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines()[0].split() == ["aws", "ready"]
    assert "ok execution role: arn:aws:iam::123456789012:role/" in out.stdout
    assert "ok bucket: s3://cloudnn-emulator (us-east-1)" in out.stdout
    assert "ml.m5.xlarge for training job usage: 8" in out.stdout


def test_check_reports_a_missing_bucket(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    options = {**emulator.options(), "bucket": "no-such-bucket-here"}
    report = SageMakerProvider(home=tmp_path, **options).check()
    assert not report.ok
    (bucket,) = [c for c in report.checks if c[0] == "bucket"]
    assert bucket[1] is False and "To fix:" in bucket[2]


def test_setup_templates_create_a_sagemaker_role_and_a_bucket() -> None:
    files = SageMakerProvider().setup_templates()
    stack = yaml.safe_load(files["cloudnn-sagemaker.yaml"])
    resources = stack["Resources"]
    trust = resources["ExecutionRole"]["Properties"]["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Principal"] == {"Service": "sagemaker.amazonaws.com"}
    assert resources["Bucket"]["Type"] == "AWS::S3::Bucket"
    public = resources["Bucket"]["Properties"]["PublicAccessBlockConfiguration"]
    assert all(public.values())
    assert "README.md" in files
