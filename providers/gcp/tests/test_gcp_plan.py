"""Offline planning for Vertex AI: the exact CustomJob, machines, refusals, endpoints.

Everything here runs with no credentials, no project and no network
(pytest-socket allows loopback only, and nothing here even opens that).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from gcp_testlib import PYTHON, REPO, cli, offline_gcp_env

from cloudnn.errors import SpecError
from cloudnn.spec import Spec
from cloudnn_gcp import VertexAIProvider
from cloudnn_gcp.compile import RUN_LABEL, TRAINING_BOOTSTRAP


def _spec(tmp_path: Path, **overrides: Any) -> Spec:
    data = tmp_path / "train.csv"
    data.write_text(
        "a,b,label\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(20))
    )
    raw: dict[str, Any] = {
        "name": "tiny",
        "task": "classification",
        "model": {"type": "mlp", "hidden_sizes": [4]},
        "data": {"train": str(data), "target": "label"},
        "train": {"epochs": 1},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return Spec.model_validate(raw)


def _job(plan: Any) -> dict[str, Any]:
    request = plan.requests[0]
    assert request["method"] == "CreateCustomJob"
    return dict(request["request"]["custom_job"])


def _pools(plan: Any) -> list[dict[str, Any]]:
    return list(_job(plan)["job_spec"]["worker_pool_specs"])


@pytest.fixture
def provider(tmp_path: Path) -> VertexAIProvider:
    return VertexAIProvider(
        home=tmp_path / "home", project="my-project", bucket="my-bucket"
    )


# --------------------------------------------------------------- the CLI plan


def test_cli_plan_of_digits_needs_no_credentials_and_says_what_is_missing(
    digits_spec_path: Path, tmp_path: Path
) -> None:
    env = offline_gcp_env(__import__("os").environ)
    env["CLOUDNN_HOME"] = str(tmp_path / "home")
    env["PYTHONPATH"] = str(REPO)
    out = cli("plan", str(digits_spec_path), "--provider", "gcp", env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("provider        gcp\n")
    assert "resources       1 x n1-standard-4" in out.stdout
    assert "warning         providers.gcp.project is not set" in out.stdout
    assert "warning         providers.gcp.bucket is not set" in out.stdout
    requests = json.loads(out.stdout.split("requests:\n", 1)[1])
    job = requests[0]["request"]["custom_job"]
    assert (
        requests[0]["request"]["parent"]
        == "projects/YOUR_PROJECT/locations/us-central1"
    )
    pool = job["job_spec"]["worker_pool_specs"][0]
    assert pool["container_spec"]["image_uri"].endswith("/pytorch-cpu.2-4.py310:latest")
    assert job["job_spec"]["base_output_directory"]["output_uri_prefix"].startswith(
        "gs://YOUR_BUCKET/cloudnn/runs/"
    )
    assert not (tmp_path / "home").exists(), "a plan wrote files"


def test_plan_loads_no_google_sdk(digits_spec_path: Path, tmp_path: Path) -> None:
    probe = (
        "import sys\n"
        "from cloudnn.client import Client\n"
        f"Client(quiet=True).plan({str(digits_spec_path)!r}, provider='gcp')\n"
        "heavy = [m for m in sys.modules if m.startswith(('google.cloud.aiplatform',"
        " 'google.cloud.storage', 'google.cloud.logging', 'google.api_core', 'grpc'))]\n"
        "print(heavy)\n"
    )
    env = offline_gcp_env(__import__("os").environ)
    env["CLOUDNN_HOME"] = str(tmp_path)
    out = subprocess.run(
        [PYTHON, "-c", probe], capture_output=True, text=True, env=env, cwd=REPO
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_submit_without_a_project_refuses_naming_the_setting(tmp_path: Path) -> None:
    provider = VertexAIProvider(home=tmp_path / "home")
    plan = provider.plan_training(_spec(tmp_path), run_id="tiny-1")
    assert any("providers.gcp.project is not set" in w for w in plan.warnings)
    with pytest.raises(SpecError) as caught:
        provider.submit_training(plan)
    assert caught.value.field == "providers.gcp.project"
    assert "GOOGLE_CLOUD_PROJECT" in (caught.value.hint or "")


# ------------------------------------------------------------------- payload


def test_single_node_job_payload(provider: VertexAIProvider, tmp_path: Path) -> None:
    plan = provider.plan_training(_spec(tmp_path), run_id="tiny-20260101-a1b2")
    job = _job(plan)
    assert job["display_name"] == "cloudnn-tiny-20260101-a1b2"
    assert job["labels"][RUN_LABEL] == "tiny-20260101-a1b2"
    base = "gs://my-bucket/cloudnn/runs/tiny-20260101-a1b2/"
    assert job["job_spec"]["base_output_directory"] == {"output_uri_prefix": base}
    assert plan.model_uri == base + "model/" and plan.output_uri == base + "output/"
    [pool] = _pools(plan)
    assert pool["replica_count"] == 1
    assert pool["machine_spec"] == {"machine_type": "n1-standard-4"}
    container = pool["container_spec"]
    assert container["command"] == ["python", "-c", TRAINING_BOOTSTRAP]
    env = {e["name"]: e["value"] for e in container["env"]}
    bundle = next(u for u in plan.uploads if u.kind == "bundle")
    assert env["CLOUDNN_BUNDLE_URI"] == bundle.destination
    assert bundle.destination == (
        f"gs://my-bucket/cloudnn/bundles/{bundle.sha256}/cloudnn-bundle.tar.gz"
    )
    data = next(u for u in plan.uploads if u.kind == "data")
    assert data.destination == f"gs://my-bucket/cloudnn/data/{data.sha256}/train.csv"
    assert env["AIP_TRAINING_DATA_URI"] == f"gs://my-bucket/cloudnn/data/{data.sha256}/"
    assert "scheduling" not in job["job_spec"]
    assert plan.hourly_cost_usd is not None and plan.hourly_cost_usd > 0


def test_multi_node_spot_job_has_a_chief_pool_and_a_worker_pool(
    provider: VertexAIProvider, tmp_path: Path
) -> None:
    spec = _spec(
        tmp_path,
        resources={
            "accelerator": "T4:1",
            "nodes": 3,
            "spot": True,
            "max_runtime": "2h",
        },
    )
    plan = provider.plan_training(spec, run_id="tiny-2")
    chief, workers = _pools(plan)
    assert chief["replica_count"] == 1 and workers["replica_count"] == 2
    for pool in (chief, workers):
        assert pool["machine_spec"] == {
            "machine_type": "n1-standard-8",
            "accelerator_type": "NVIDIA_TESLA_T4",
            "accelerator_count": 1,
        }
        assert pool["container_spec"]["image_uri"].endswith(
            "/pytorch-gpu.2-4.py310:latest"
        )
    assert _job(plan)["job_spec"]["scheduling"] == {
        "timeout": "7200s",
        "strategy": "SPOT",
        "restart_job_on_worker_restart": True,
    }
    assert plan.instance_count == 3
    assert plan.estimated_cost_usd is not None and plan.estimated_cost_usd > 0


def test_provider_options_reach_the_payload(tmp_path: Path) -> None:
    spec = _spec(
        tmp_path,
        providers={
            "gcp": {
                "project": "spec-project",
                "region": "europe-west4",
                "bucket": "spec-bucket",
                "service_account": "trainer@spec-project.iam.gserviceaccount.com",
                "network": "projects/123/global/networks/ml",
                "kms_key_name": "projects/p/locations/europe-west4/keyRings/r/cryptoKeys/k",
                "boot_disk_size_gb": 250,
                "labels": {"team": "vision"},
            }
        },
        tags={"Owner": "Ana"},
    )
    provider = VertexAIProvider(home=tmp_path / "home", project="ignored-project")
    plan = provider.plan_training(spec, run_id="tiny-3")
    request = plan.requests[0]["request"]
    assert request["parent"] == "projects/spec-project/locations/europe-west4"
    job = request["custom_job"]
    assert job["job_spec"]["service_account"].startswith("trainer@")
    assert job["job_spec"]["network"] == "projects/123/global/networks/ml"
    assert job["encryption_spec"]["kms_key_name"].endswith("/cryptoKeys/k")
    assert job["labels"] == {
        "cloudnn_run_id": "tiny-3",
        "cloudnn_spec": spec.spec_hash(),
        "owner": "ana",
        "team": "vision",
    }
    [pool] = job["job_spec"]["worker_pool_specs"]
    assert pool["disk_spec"]["boot_disk_size_gb"] == 250
    assert pool["container_spec"]["image_uri"].startswith("europe-docker.pkg.dev/")
    assert plan.model_uri.startswith("gs://spec-bucket/")


def test_environment_configures_what_the_spec_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "env-project")
    monkeypatch.setenv("CLOUDNN_GCP_BUCKET", "env-bucket")
    monkeypatch.setenv("CLOUDNN_GCP_REGION", "asia-northeast1")
    plan = VertexAIProvider(home=tmp_path).plan_training(_spec(tmp_path), run_id="r1")
    assert plan.requests[0]["request"]["parent"] == (
        "projects/env-project/locations/asia-northeast1"
    )
    assert plan.model_uri.startswith("gs://env-bucket/cloudnn/")
    assert not plan.warnings


def test_a_cost_cap_becomes_the_job_timeout(
    provider: VertexAIProvider, tmp_path: Path
) -> None:
    spec = _spec(tmp_path, resources={"accelerator": "T4:1", "max_cost_usd": 1.0})
    plan = provider.plan_training(spec, run_id="r")
    seconds = int(_job(plan)["job_spec"]["scheduling"]["timeout"].rstrip("s"))
    assert seconds == int(1.0 / plan.hourly_cost_usd * 3600)
    assert any("max_cost_usd" in w for w in plan.warnings)


def test_bad_provider_option_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as caught:
        VertexAIProvider(home=tmp_path, region="Mars")
    assert caught.value.field == "gcp.region"
    with pytest.raises(SpecError) as unknown:
        VertexAIProvider(home=tmp_path, zone="us-central1-a")
    assert "unknown option 'zone'" in str(unknown.value)


# ------------------------------------------------------------------- machines


@pytest.mark.parametrize(
    ("accelerator", "machine", "enum", "count"),
    [
        ("A100:1", "a2-highgpu-1g", "NVIDIA_TESLA_A100", 1),
        ("A100:8", "a2-highgpu-8g", "NVIDIA_TESLA_A100", 8),
        ("A100-80GB:4", "a2-ultragpu-4g", "NVIDIA_A100_80GB", 4),
        ("L4:1", "g2-standard-4", "NVIDIA_L4", 1),
        ("L4:8", "g2-standard-96", "NVIDIA_L4", 8),
        ("H100:8", "a3-highgpu-8g", "NVIDIA_H100_80GB", 8),
        ("H200:8", "a3-ultragpu-8g", "NVIDIA_H200_141GB", 8),
        ("V100:1", "n1-standard-8", "NVIDIA_TESLA_V100", 1),
        ("V100:2", "n1-standard-8", "NVIDIA_TESLA_V100", 2),
        ("T4:4", "n1-standard-32", "NVIDIA_TESLA_T4", 4),
    ],
)
def test_accelerator_resolves_to_a_machine_of_its_family(
    provider: VertexAIProvider,
    tmp_path: Path,
    accelerator: str,
    machine: str,
    enum: str,
    count: int,
) -> None:
    spec = _spec(tmp_path, resources={"accelerator": accelerator})
    [pool] = _pools(provider.plan_training(spec, run_id="m"))
    assert pool["machine_spec"] == {
        "machine_type": machine,
        "accelerator_type": enum,
        "accelerator_count": count,
    }


def test_explicit_machine_type_wins_when_it_fits(
    provider: VertexAIProvider, tmp_path: Path
) -> None:
    spec = _spec(
        tmp_path,
        resources={"accelerator": "L4:2"},
        providers={"gcp": {"machine_type": "g2-standard-24"}},
    )
    [pool] = _pools(provider.plan_training(spec, run_id="m"))
    assert pool["machine_spec"]["machine_type"] == "g2-standard-24"
    spec = _spec(tmp_path, providers={"gcp": {"machine_type": "e2-standard-8"}})
    [pool] = _pools(provider.plan_training(spec, run_id="m"))
    assert pool["machine_spec"] == {"machine_type": "e2-standard-8"}


@pytest.mark.parametrize(
    ("resources", "machine", "field", "listed"),
    [
        (
            {"accelerator": "A100:1"},
            "n1-standard-8",
            "providers.gcp.machine_type",
            ["a2-highgpu-1g"],
        ),
        (
            {"accelerator": "H100:8"},
            "a2-highgpu-8g",
            "providers.gcp.machine_type",
            ["a3-highgpu-8g", "a3-megagpu-8g"],
        ),
        (
            {"accelerator": "T4:1"},
            "a2-highgpu-1g",
            "providers.gcp.machine_type",
            ["n1-standard-4", "n1-standard-32"],
        ),
        (
            {"accelerator": "V100:1"},
            "n1-standard-32",
            "providers.gcp.machine_type",
            ["n1-standard-4", "n1-standard-8"],
        ),
        (
            {"accelerator": "L4:1"},
            "g2-standard-48",
            "providers.gcp.machine_type",
            ["g2-standard-4", "g2-standard-32"],
        ),
        (
            {"accelerator": "T4:3"},
            None,
            "resources.accelerator",
            ["T4:1", "T4:2", "T4:4"],
        ),
        ({"accelerator": "A10G:1"}, None, "resources.accelerator", ["L4"]),
        ({}, "a2-highgpu-1g", "providers.gcp.machine_type", ["A100:1"]),
        ({}, "n1-standard-3", "providers.gcp.machine_type", ["n1-standard"]),
    ],
)
def test_impossible_machine_and_accelerator_pairs_are_refused_at_plan_time(
    provider: VertexAIProvider,
    tmp_path: Path,
    resources: dict[str, Any],
    machine: str | None,
    field: str,
    listed: list[str],
) -> None:
    providers = {"gcp": {"machine_type": machine}} if machine else {}
    spec = _spec(tmp_path, resources=resources, providers=providers)
    with pytest.raises(SpecError) as caught:
        provider.plan_training(spec, run_id="bad")
    err = caught.value
    assert err.field == field
    text = f"{err} {err.hint}"
    for option in listed:
        assert option in text, text


def test_cli_refuses_a_bad_pair_with_exit_2_and_the_fix(
    tmp_path: Path, write_spec_file: Any
) -> None:
    path = write_spec_file(
        resources={"accelerator": "A100:2"},
        providers={"gcp": {"machine_type": "n1-standard-16"}},
    )
    env = offline_gcp_env(__import__("os").environ)
    env["CLOUDNN_HOME"] = str(tmp_path / "home")
    env["PYTHONPATH"] = str(REPO)
    out = cli("plan", str(path), "--provider", "gcp", env=env)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "error: providers.gcp.machine_type: n1-standard-16" in out.stderr
    assert "To fix: use one of a2-highgpu-2g for A100:2" in out.stderr


@pytest.fixture
def write_spec_file(tmp_path: Path) -> Any:
    import yaml

    def write(**overrides: Any) -> Path:
        spec = _spec(tmp_path, **overrides)
        path = tmp_path / "spec.yaml"
        path.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
        return path

    return write


# ----------------------------------------------------------------------- data


def test_remote_gs_data_is_read_in_place_and_other_clouds_are_refused(
    provider: VertexAIProvider, tmp_path: Path
) -> None:
    spec = _spec(tmp_path, data={"train": "gs://data-bucket/digits/train.csv"})
    plan = provider.plan_training(spec, run_id="r")
    assert [u.kind for u in plan.uploads] == ["bundle"]
    [pool] = _pools(plan)
    env = {e["name"]: e["value"] for e in pool["container_spec"]["env"]}
    assert env["AIP_TRAINING_DATA_URI"] == "gs://data-bucket/digits/"
    spec = _spec(tmp_path, data={"train": "s3://bucket/train.csv"})
    with pytest.raises(SpecError) as caught:
        provider.plan_training(spec, run_id="r")
    assert caught.value.field == "data.train"


# ------------------------------------------------------------------ endpoints


def test_endpoint_plan_uploads_a_model_creates_an_endpoint_and_deploys(
    provider: VertexAIProvider, tmp_path: Path
) -> None:
    spec = _spec(
        tmp_path,
        deploy={
            "accelerator": "T4:1",
            "autoscaling": {
                "min_replicas": 2,
                "max_replicas": 5,
                "target_requests_per_replica": 300,
            },
        },
    )
    model_uri = "gs://my-bucket/cloudnn/runs/tiny-20260101-a1b2/model/"
    plan = provider.plan_endpoint(spec, model_uri)
    upload, create, deploy = (r["request"] for r in plan.requests)
    assert [r["method"] for r in plan.requests] == [
        "UploadModel",
        "CreateEndpoint",
        "DeployModel",
    ]
    name = plan.endpoint_name
    assert upload["model_id"] == create["endpoint_id"] == name
    container = upload["model"]["container_spec"]
    assert upload["model"]["artifact_uri"] == model_uri
    assert container["predict_route"] == "/predict"
    assert container["health_route"] == "/health"
    assert container["ports"] == [{"container_port": 8080}]
    code = {e["name"]: e["value"] for e in container["env"]}["CLOUDNN_SERVING_CODE_URI"]
    [bundle] = plan.uploads
    assert code == bundle.destination and bundle.sha256 in code
    deployed = deploy["deployed_model"]
    assert deploy["endpoint"].endswith(f"/endpoints/{name}")
    assert deploy["traffic_split"] == {"0": 100}
    assert deployed["model"].endswith(f"/models/{name}")
    resources = deployed["dedicated_resources"]
    assert resources["min_replica_count"] == 2 and resources["max_replica_count"] == 5
    assert resources["machine_spec"]["accelerator_type"] == "NVIDIA_TESLA_T4"
    assert resources["autoscaling_metric_specs"] == [
        {
            "metric_name": "aiplatform.googleapis.com/prediction/online/request_count",
            "target": 300,
        }
    ]
    assert plan.replicas == 2


def test_endpoint_of_a_local_model_is_refused(
    provider: VertexAIProvider, tmp_path: Path
) -> None:
    with pytest.raises(SpecError) as caught:
        provider.plan_endpoint(_spec(tmp_path), str(tmp_path))
    assert "Cloud Storage" in str(caught.value)


def test_setup_templates_name_the_bucket_and_minimal_roles(tmp_path: Path) -> None:
    provider = VertexAIProvider(home=tmp_path, project="my-project", bucket="my-bucket")
    files = provider.setup_templates()
    assert set(files) == {"setup.sh", "main.tf"}
    script = files["setup.sh"]
    assert 'PROJECT="my-project"' in script and 'BUCKET="my-bucket"' in script
    assert "roles/storage.objectAdmin" in script and "roles/owner" not in script
    assert "roles/logging.logWriter" in script
    assert 'default = "my-bucket"' in files["main.tf"]
