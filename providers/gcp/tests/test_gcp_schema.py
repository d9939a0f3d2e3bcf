"""The bundled Vertex AI schema is the installed SDK's, and it catches what the API would.

``cloudnn plan --provider gcp`` validates against ``data/vertex_schema.json``
so that it never imports ``google.cloud.aiplatform``; these tests keep that
file honest against the real ``aiplatform_v1`` messages.
"""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from gcp_testlib import EXAMPLES, PYTHON

from cloudnn.errors import SpecError
from cloudnn.spec import load_spec
from cloudnn_gcp import VertexAIProvider, schema
from cloudnn_gcp._sdk import to_message

ROOT = "google.cloud.aiplatform.v1.CreateCustomJobRequest"
EXAMPLE_SPECS = sorted(p.parent.name for p in EXAMPLES.glob("*/spec.yaml"))


def _comparable(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != "sdk"}


def test_bundled_schema_matches_the_installed_sdk() -> None:
    bundled = json.loads(
        (Path(schema.__file__).parent / "data" / "vertex_schema.json").read_text()
    )
    assert _comparable(schema.extract_schema()) == _comparable(bundled), (
        "the installed google-cloud-aiplatform changed the API schema: regenerate "
        "with `python -m cloudnn_gcp.schema` and review the diff"
    )


def test_schema_knows_required_and_output_only_fields() -> None:
    messages = schema.schema()["messages"]
    job = messages["google.cloud.aiplatform.v1.CustomJob"]
    assert job["display_name"].get("required") and job["job_spec"].get("required")
    assert job["state"].get("output_only") and job["create_time"].get("output_only")
    container = messages["google.cloud.aiplatform.v1.ContainerSpec"]
    assert container["image_uri"].get("required")
    resources = messages["google.cloud.aiplatform.v1.DedicatedResources"]
    assert resources["machine_spec"].get("required")


@pytest.fixture(scope="module")
def example_plans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    for name in EXAMPLE_SPECS:  # the specs name data files prepare.py writes
        subprocess.run(
            [PYTHON, "prepare.py"], cwd=EXAMPLES / name, check=True, capture_output=True
        )
    provider = VertexAIProvider(
        home=tmp_path_factory.mktemp("home"), project="my-project", bucket="my-bucket"
    )
    out = {}
    for name in EXAMPLE_SPECS:
        spec = load_spec(EXAMPLES / name / "spec.yaml")
        training = provider.plan_training(spec, run_id=f"{spec.name}-golden")
        endpoint = provider.plan_endpoint(spec, training.model_uri)
        out[name] = [*training.requests, *endpoint.requests]
    return out


@pytest.mark.parametrize("example", EXAMPLE_SPECS)
def test_every_example_request_is_a_valid_aiplatform_v1_message(
    example_plans: dict[str, Any], example: str
) -> None:
    """What the offline validator passed, the real message classes accept too."""
    for call in example_plans[example]:
        message = to_message(f"{call['method']}Request", call["request"])
        assert type(message).__name__ == f"{call['method']}Request"


def _request(example_plans: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(example_plans["digits-mlp"][0]["request"])


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda r: r["custom_job"].update(jobspec={}),
            "custom_job.jobspec: unknown field",
        ),
        (
            lambda r: r["custom_job"]["job_spec"]["worker_pool_specs"][0][
                "machine_spec"
            ].update(accelerator_type="NVIDIA_H9000"),
            "accelerator_type: 'NVIDIA_H9000' is not one of",
        ),
        (
            lambda r: r["custom_job"].pop("display_name"),
            "custom_job.display_name: required but unset",
        ),
        (
            lambda r: r["custom_job"]["job_spec"]["worker_pool_specs"][0][
                "container_spec"
            ].pop("image_uri"),
            "container_spec.image_uri: required but unset",
        ),
        (lambda r: r["custom_job"].update(state="JOB_STATE_RUNNING"), "output only"),
        (
            lambda r: r["custom_job"]["job_spec"]["worker_pool_specs"][0].update(
                python_package_spec={"executor_image_uri": "x", "python_module": "m"}
            ),
            "oneof 'task'",
        ),
        (
            lambda r: r["custom_job"]["job_spec"]["worker_pool_specs"][0].update(
                replica_count="one"
            ),
            "replica_count: expected an integer",
        ),
        (
            lambda r: r["custom_job"]["job_spec"].update(scheduling={"timeout": "2h"}),
            "expected a duration",
        ),
    ],
)
def test_offline_validation_finds_what_the_api_would_reject(
    example_plans: dict[str, Any], mutate: Any, expected: str
) -> None:
    request = _request(example_plans)
    mutate(request)
    found = schema.violations(ROOT, request)
    assert any(expected in v for v in found), found
    with pytest.raises(SpecError):
        schema.validate(ROOT, request)


def test_the_real_messages_reject_the_same_unknown_field(
    example_plans: dict[str, Any],
) -> None:
    request = _request(example_plans)
    request["custom_job"]["jobspec"] = {}
    from google.protobuf.json_format import ParseError

    with pytest.raises(ParseError, match="jobspec"):
        to_message("CreateCustomJobRequest", request)
