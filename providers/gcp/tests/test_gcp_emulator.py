"""The emulator itself: its method table, server-side validation, its command.

The clients here are the real ``aiplatform_v1`` GAPIC clients, on the
insecure channel the provider uses for a plaintext endpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from gcp_testlib import RunningEmulator

from cloudnn_gcp.testing import ENV_KEYS, start
from cloudnn_gcp.testing._grpc import discover

PARENT = "projects/cloudnn-emulator/locations/us-central1"


def test_method_table_is_discovered_from_the_installed_clients() -> None:
    methods = discover()
    for path in (
        "/google.cloud.aiplatform.v1.JobService/CreateCustomJob",
        "/google.cloud.aiplatform.v1.JobService/CancelCustomJob",
        "/google.cloud.aiplatform.v1.ModelService/UploadModel",
        "/google.cloud.aiplatform.v1.EndpointService/DeployModel",
        "/google.cloud.aiplatform.v1.PredictionService/Predict",
        "/google.longrunning.Operations/GetOperation",
        "/google.logging.v2.LoggingServiceV2/ListLogEntries",
    ):
        assert path in methods, path
    services = {m.service for m in methods.values()}
    assert {
        "google.cloud.aiplatform.v1.JobService",
        "google.cloud.aiplatform.v1.ModelService",
        "google.cloud.aiplatform.v1.EndpointService",
        "google.cloud.aiplatform.v1.PredictionService",
        "google.logging.v2.LoggingServiceV2",
        "google.longrunning.Operations",
    } <= services


def test_printed_environment_is_all_the_provider_needs(
    emulator: RunningEmulator,
) -> None:
    assert sorted(emulator.env) == sorted(ENV_KEYS)
    assert emulator.env["CLOUDNN_GCP_API_ENDPOINT"].startswith("http://127.0.0.1:")
    assert emulator.env["STORAGE_EMULATOR_HOST"].startswith("http://127.0.0.1:")


def test_an_rpc_it_does_not_implement_is_unimplemented(
    emulator: RunningEmulator,
) -> None:
    from google.api_core import exceptions as gexc

    jobs = emulator.client("jobs")
    with pytest.raises(gexc.MethodNotImplemented, match="does not implement"):
        jobs.list_batch_prediction_jobs(parent=PARENT)


def _job(**pool: object) -> dict[str, object]:
    spec = {
        "machine_spec": {"machine_type": "n1-standard-4"},
        "replica_count": 1,
        "container_spec": {"image_uri": "python:3.11", "command": ["true"]},
        **pool,
    }
    return {"display_name": "raw", "job_spec": {"worker_pool_specs": [spec]}}


@pytest.mark.parametrize(
    ("custom_job", "field"),
    [
        ({"job_spec": _job()["job_spec"]}, "custom_job.display_name"),
        (
            _job(container_spec={"command": ["true"]}),
            "custom_job.job_spec.worker_pool_specs[0].container_spec.image_uri",
        ),
        (
            _job(
                machine_spec={
                    "machine_type": "n1-standard-8",
                    "accelerator_type": "NVIDIA_TESLA_A100",
                    "accelerator_count": 1,
                }
            ),
            "custom_job.job_spec.worker_pool_specs[0].machine_spec.machine_type",
        ),
        (
            _job(replica_count=2),
            "custom_job.job_spec.worker_pool_specs[0].replica_count",
        ),
    ],
)
def test_server_side_validation_names_the_field(
    emulator: RunningEmulator, custom_job: dict[str, object], field: str
) -> None:
    from google.api_core import exceptions as gexc
    from google.cloud import aiplatform_v1

    jobs = emulator.client("jobs")
    with pytest.raises(gexc.InvalidArgument) as caught:
        jobs.create_custom_job(
            parent=PARENT, custom_job=aiplatform_v1.CustomJob(custom_job)
        )
    fields = [v.field for d in caught.value.details for v in d.field_violations]
    assert fields == [field], caught.value


def test_a_job_whose_container_fails_ends_failed_with_the_replica_named(
    emulator: RunningEmulator,
) -> None:
    import time

    from google.cloud import aiplatform_v1

    jobs = emulator.client("jobs")
    custom_job = _job(container_spec={"image_uri": "python:3.11", "command": ["false"]})
    job = jobs.create_custom_job(
        parent=PARENT, custom_job=aiplatform_v1.CustomJob(custom_job)
    )
    assert job.name.startswith("projects/") and job.state.name == "JOB_STATE_PENDING"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = jobs.get_custom_job(name=job.name)
        if job.state.name in ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED"):
            break
        time.sleep(0.1)
    assert job.state.name == "JOB_STATE_FAILED"
    assert "workerpool0-0 exited with a non-zero status 1" in job.error.message


def test_it_binds_loopback_only() -> None:
    with pytest.raises(ValueError, match="loopback"):
        start(host="0.0.0.0")


def test_a_second_run_uploads_nothing_that_is_already_there(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    """Bundle and data are content-addressed: run 2 finds them in place."""
    from cloudnn.testing import make_contract_spec, wait_for_terminal
    from cloudnn_gcp import VertexAIProvider
    from cloudnn_gcp._sdk import Clients
    from cloudnn_gcp.config import load_config

    provider = VertexAIProvider(home=tmp_path / "home", **emulator.options())
    spec = make_contract_spec(tmp_path / "data")
    storage = Clients(load_config(emulator.options())).storage("cloudnn-emulator")

    def generations(plan: Any) -> dict[str, Any]:
        out = {}
        for upload in plan.uploads:
            bucket, _, name = upload.destination[len("gs://") :].partition("/")
            blob = storage.bucket(bucket).get_blob(name)
            out[upload.destination] = (blob.generation, blob.updated)
        return out

    first = provider.plan_training(spec, run_id="uploads-1")
    refs = [provider.submit_training(first)]
    before = generations(first)
    second = provider.plan_training(spec, run_id="uploads-2")
    assert [u.destination for u in second.uploads] == list(before)
    refs.append(provider.submit_training(second))
    try:
        assert generations(second) == before
    finally:  # the jobs are not the point: stop them
        for ref in refs:
            provider.cancel_job(ref)
            wait_for_terminal(provider, ref, timeout=120)


def test_only_spot_jobs_are_preempted(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    from cloudnn.testing import log_events, make_contract_spec, wait_for_terminal
    from cloudnn_gcp import VertexAIProvider

    control = emulator.control()
    control.reset()
    try:
        control.preempt(job="*", after_epoch=1)
        provider = VertexAIProvider(home=tmp_path / "home", **emulator.options())
        spec = make_contract_spec(tmp_path / "data", train={"epochs": 3, "seed": 0})
        ref = provider.submit_training(
            provider.plan_training(spec, run_id="standard-1")
        )
        assert (
            wait_for_terminal(provider, ref, timeout=120)[-1].state.value == "SUCCEEDED"
        )
        events = [e["event"] for e in log_events(provider.stream_logs(ref))]
        assert "resume" not in events
        assert control.state()["faults"]["injected"] == []
    finally:
        control.reset()
        control.close()


def test_the_job_timeout_stops_a_job_that_runs_too_long(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    from cloudnn.provider import JobState
    from cloudnn.testing import make_contract_spec, wait_for_terminal
    from cloudnn_gcp import VertexAIProvider

    provider = VertexAIProvider(home=tmp_path / "home", **emulator.options())
    spec = make_contract_spec(
        tmp_path / "data",
        train={"epochs": 100_000, "seed": 0},
        resources={"max_runtime": 4},
    )
    plan = provider.plan_training(spec, run_id="timeout-1")
    scheduling = plan.requests[0]["request"]["custom_job"]["job_spec"]["scheduling"]
    assert scheduling == {"timeout": "4s"}
    final = wait_for_terminal(provider, provider.submit_training(plan), timeout=120)[-1]
    assert final.state is JobState.FAILED
    assert "timeout of 4s" in final.message
