"""Google errors become cloudnn errors with a fix; only transient ones are retried.

The exceptions are the real ``google.api_core``/``google.auth`` classes, built
the way the GAPIC clients build them from a gRPC status; the emulator tests
below produce them over the wire.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from gcp_testlib import RunningEmulator

from cloudnn.errors import (
    AuthenticationError,
    CapacityError,
    NotFoundError,
    QuotaExceededError,
    SpecError,
    ThrottledError,
    TransientError,
)
from cloudnn.spec import Spec
from cloudnn.testing import make_contract_spec
from cloudnn_gcp import VertexAIProvider
from cloudnn_gcp._sdk import map_error


def _bad_request(field: str, message: str) -> Any:
    from google.api_core import exceptions as gexc
    from google.rpc import error_details_pb2

    details = [
        error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=field, description=message
                )
            ]
        )
    ]
    return gexc.InvalidArgument(message, details=details)


def _cases() -> list[tuple[Any, type[Exception], str]]:
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc

    return [
        (
            gexc.ResourceExhausted(
                "The following quota metrics exceed quota limits: "
                "aiplatform.googleapis.com/custom_model_training_nvidia_a100_gpus"
            ),
            QuotaExceededError,
            "request more quota",
        ),
        (
            gexc.ResourceExhausted(
                "The zone 'us-central1-a' does not have enough resources available "
                "to fulfill the request (stockout)."
            ),
            CapacityError,
            "try another region",
        ),
        (
            gexc.ResourceExhausted(
                "Quota exceeded for quota metric 'Resource management (CRUD) requests'"
                " and limit '... per minute per region'"
            ),
            ThrottledError,
            "",
        ),
        (gexc.ServiceUnavailable("connection reset"), TransientError, ""),
        (gexc.DeadlineExceeded("deadline"), TransientError, ""),
        (
            gexc.PermissionDenied("aiplatform.customJobs.create denied"),
            AuthenticationError,
            "gcloud auth application-default login",
        ),
        (
            gexc.Unauthenticated("invalid token"),
            AuthenticationError,
            "gcloud auth application-default login",
        ),
        (
            auth_exc.DefaultCredentialsError(
                "Your default credentials were not found."
            ),
            AuthenticationError,
            "gcloud auth application-default login",
        ),
        (gexc.NotFound("CustomJob x not found"), NotFoundError, ""),
    ]


@pytest.mark.parametrize("index", range(9))
def test_google_errors_map_to_cloudnn_errors(index: int) -> None:
    exc, expected, hint = _cases()[index]
    mapped = map_error(exc)
    assert type(mapped) is expected, (exc, mapped)
    assert (hint in (mapped.hint or "")) if hint else True
    retryable = expected in (TransientError, ThrottledError)
    assert mapped.retryable is retryable


def test_invalid_argument_names_the_spec_field() -> None:
    exc = _bad_request(
        "custom_job.job_spec.worker_pool_specs[0].machine_spec.machine_type",
        "Machine type n1-standard-3 is not supported.",
    )
    mapped = map_error(exc)
    assert isinstance(mapped, SpecError)
    assert mapped.field == "providers.gcp.machine_type"
    assert "n1-standard-3" in str(mapped)


def test_without_application_default_credentials_check_says_how_to_log_in(
    tmp_path: Path,
) -> None:
    provider = VertexAIProvider(home=tmp_path, project="my-project", bucket="my-bucket")
    report = provider.check()
    assert not report.ok
    checks = {what: (passed, detail) for what, passed, detail in report.checks}
    passed, detail = checks["credentials"]
    assert not passed and "gcloud auth application-default login" in detail
    with pytest.raises(AuthenticationError) as caught:
        provider.get_job(
            __import__("cloudnn.provider", fromlist=["JobRef"]).JobRef(
                provider="gcp",
                run_id="r",
                job_id="projects/my-project/locations/us-central1/customJobs/1",
            )
        )
    assert caught.value.exit_code == 2


# ------------------------------------------------------- over the wire (emulator)


@pytest.fixture
def provider(emulator: RunningEmulator, tmp_path: Path) -> VertexAIProvider:
    return VertexAIProvider(home=tmp_path / "home", **emulator.options())


@pytest.fixture
def spec(tmp_path: Path) -> Spec:
    return make_contract_spec(tmp_path / "data")


def test_server_side_invalid_argument_arrives_as_a_spec_error_naming_the_field(
    provider: VertexAIProvider, spec: Spec
) -> None:
    plan = provider.plan_training(spec, run_id="bad-pool-1")
    pools = plan.requests[0]["request"]["custom_job"]["job_spec"]["worker_pool_specs"]
    pools[0]["replica_count"] = 2  # the service wants one chief
    with pytest.raises(SpecError) as caught:
        provider.submit_training(plan)
    assert caught.value.field == "resources.nodes"
    assert "replica_count" in str(caught.value)


def test_check_against_the_emulator_passes(provider: VertexAIProvider) -> None:
    report = provider.check()
    assert report.ok, report.checks
    names = [what for what, _, _ in report.checks]
    assert names == [
        "google-cloud-aiplatform installed",
        "credentials",
        "project",
        "region",
        "bucket",
        "Vertex AI API reachable",
    ]


def test_a_missing_bucket_is_reported_by_check(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    options = {**emulator.options(), "bucket": "no-such-bucket"}
    report = VertexAIProvider(home=tmp_path, **options).check()
    checks = {what: (passed, detail) for what, passed, detail in report.checks}
    assert checks["bucket"] == (
        False,
        "gs://no-such-bucket does not exist (cloudnn setup --provider gcp)",
    )


def test_a_failed_job_reports_the_jobs_own_failure(
    provider: VertexAIProvider, tmp_path: Path
) -> None:
    from cloudnn.provider import JobState
    from cloudnn.testing import wait_for_terminal

    spec = make_contract_spec(tmp_path / "data")
    broken = Spec.model_validate(
        {
            **spec.model_dump(mode="json"),
            "data": {**spec.data.model_dump(), "target": "nope"},
        }
    )
    ref = provider.submit_training(provider.plan_training(broken, run_id="broken-1"))
    final = wait_for_terminal(provider, ref, timeout=120)[-1]
    assert final.state is JobState.FAILED
    assert final.vendor_state == "JOB_STATE_FAILED"
    assert "nope" in final.message, final.message
