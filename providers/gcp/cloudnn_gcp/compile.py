"""Pure spec -> Vertex AI requests: the exact payloads a plan shows and submit sends.

Nothing here opens a socket, reads credentials or writes a file; the same
inputs give the same dicts (golden-tested). Requests are proto3 JSON with
snake_case names, validated offline by :mod:`cloudnn_gcp.schema` and turned
into ``aiplatform_v1`` messages at submit with ``Message.from_json``.

Training: one ``CreateCustomJob``. Worker pool 0 is the chief (one replica),
pool 1 the other ``nodes - 1`` workers (Vertex AI's pool order is semantic).
Each replica runs the prebuilt PyTorch training image with a container
command that unpacks the cloudnn bundle from Cloud Storage and runs its
``cloudnn_entry.py`` (see :data:`TRAINING_BOOTSTRAP` for why not
``python_package_spec``). ``base_output_directory`` makes Vertex AI set
``AIP_MODEL_DIR``/``AIP_CHECKPOINT_DIR`` under ``gs://<bucket>/<prefix>/runs/<run id>/``.

Serving: ``UploadModel`` (the run's model folder as ``artifact_uri``, a
serving container that fetches the content-addressed serving code and runs
the Vertex adapter ``code/server.py``), ``CreateEndpoint`` and
``DeployModel``, all with deterministic IDs so a retry adopts.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cloudnn.errors import SpecError
from cloudnn_gcp import schema
from cloudnn_gcp._machines import Machine, resolve_machine
from cloudnn_gcp.config import Target

__all__ = [
    "RUN_LABEL",
    "SERVING_BOOTSTRAP",
    "TRAINING_BOOTSTRAP",
    "CompiledEndpoint",
    "CompiledTraining",
    "compile_endpoint",
    "compile_training",
    "deployed_model_id",
    "endpoint_name",
    "label_value",
    "run_id_of_model_uri",
]

SERVICE = "google.cloud.aiplatform.v1"
#: the label that finds a run's job again (ListCustomJobs filter)
RUN_LABEL = "cloudnn_run_id"
SPEC_LABEL = "cloudnn_spec"
#: Vertex AI's PyTorch images: region's Artifact Registry multi-region + version
_IMAGE_VERSION = "2-4"
_PY = "py310"
#: Vertex AI endpoint ids: [a-z0-9-], a letter first, <= 63; names stay <= 32
#: like the other providers' (Azure's 32 is the tightest)
_ENDPOINT_NAME_MAX = 32
_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")

#: Container command of every training replica.
#:
#: Why a container command and not ``python_package_spec``: the latter needs
#: a pip-installable source distribution (setup.py / pyproject), and the
#: core's bundle is a plain archive with one entry point. Every Vertex AI
#: custom-training container has Cloud Storage mounted at ``/gcs/<bucket>``
#: (Cloud Storage FUSE), so the bundle is read from there; where the mount
#: is missing (a local emulator) it is downloaded with google-cloud-storage,
#: which the prebuilt images ship.
TRAINING_BOOTSTRAP = """\
import os, sys, tarfile, tempfile
uri = os.environ["CLOUDNN_BUNDLE_URI"]
path = "/gcs/" + uri[len("gs://"):]
if not os.path.isfile(path):
    from google.cloud import storage
    bucket, _, name = uri[len("gs://"):].partition("/")
    path = os.path.join(tempfile.mkdtemp(), "bundle.tar.gz")
    storage.Client().bucket(bucket).blob(name).download_to_filename(path)
root = tempfile.mkdtemp(prefix="cloudnn-job-")
with tarfile.open(path) as tar:
    tar.extractall(root, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
os.chdir(root)
os.execv(sys.executable, [sys.executable, "-u", "cloudnn_entry.py"])
"""

#: Container command of the serving container: fetch the content-addressed
#: serving code (``code/server.py`` + the cloudnn runtime), install what the
#: image lacks, and run the adapter, which loads the model from
#: ``AIP_STORAGE_URI`` (Vertex AI's copy of ``artifact_uri``; prediction
#: containers have no FUSE mount, so it is downloaded).
SERVING_BOOTSTRAP = """\
import importlib.util, os, subprocess, sys, tarfile, tempfile
def missing(module):
    try:
        return importlib.util.find_spec(module) is None
    except ModuleNotFoundError:
        return True
if missing("google.cloud.storage"):
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "google-cloud-storage"])
from google.cloud import storage
uri = os.environ["CLOUDNN_SERVING_CODE_URI"]
bucket, _, name = uri[len("gs://"):].partition("/")
root = tempfile.mkdtemp(prefix="cloudnn-serving-")
path = os.path.join(root, "code.tar.gz")
storage.Client().bucket(bucket).blob(name).download_to_filename(path)
with tarfile.open(path) as tar:
    tar.extractall(root, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
wanted = []
for line in open(os.path.join(root, "code", "requirements.txt")):
    req, _, note = line.partition("#")
    if req.strip() and missing(note.strip().replace("import ", "", 1)):
        wanted.append(req.strip())
if wanted:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", *wanted])
os.execv(sys.executable, [sys.executable, "-u", os.path.join(root, "code", "server.py")])
"""

HEALTH_ROUTE = "/health"
PREDICT_ROUTE = "/predict"
SERVING_PORT = 8080
#: Vertex AI's default autoscaling target (percent) when only replicas are given
_REQUEST_COUNT_METRIC = "aiplatform.googleapis.com/prediction/online/request_count"


# --------------------------------------------------------------------- names


def _short_hash(text: str, n: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def label_value(text: str) -> str:
    """``text`` as a GCP label value: [a-z0-9_-], at most 63 (hashed if longer)."""
    value = re.sub(r"[^a-z0-9_-]+", "-", text.lower())
    if len(value) > 63:
        value = f"{value[:54]}-{_short_hash(text)}"
    return value


def job_display_name(run_id: str) -> str:
    """The CustomJob's display name (<= 128 characters)."""
    return f"cloudnn-{run_id}"[:128]


def endpoint_name(spec_name: str, run_id: str) -> str:
    """Deterministic endpoint id: ``<spec name>-<8 hex of the run id>`` (<= 32)."""
    short = _short_hash(run_id)
    stem = spec_name[: _ENDPOINT_NAME_MAX - len(short) - 1].strip("-") or "endpoint"
    return f"{stem}-{short}"


def deployed_model_id(name: str) -> str:
    """A deterministic DeployedModel id (Vertex AI: 1-10 digits, no leading 0)."""
    return str(1_000_000_000 + int(_short_hash(name, 12), 16) % 1_000_000_000)


_RUN_IN_URI = re.compile(r"/runs/([^/]+)/model/?$")


def run_id_of_model_uri(model_uri: str) -> str:
    """The run that wrote ``model_uri`` (``.../runs/<run id>/model/``), else a hash."""
    match = _RUN_IN_URI.search(model_uri)
    if match:
        return match.group(1)
    return "uri-" + _short_hash(model_uri, 12)


def _labels(spec: Any, extra: Mapping[str, str], warnings: list[str]) -> dict[str, str]:
    """User labels (providers.gcp.labels, then spec.tags) plus cloudnn's own."""
    options = spec.providers.gcp
    out: dict[str, str] = {}
    for key, value in (options.labels if options else {}).items():
        if not _LABEL_KEY.match(key) or not _LABEL_VALUE.match(value):
            raise SpecError(
                f"providers.gcp.labels.{key}",
                f"{key}={value!r} is not a valid GCP label",
                hint="keys: a lowercase letter then [a-z0-9_-], values: [a-z0-9_-], "
                "at most 63 characters each",
            )
        out[key] = value
    for key, value in spec.tags.items():
        k, v = key.lower(), label_value(str(value))
        if not _LABEL_KEY.match(k):
            warnings.append(
                f"tags.{key} is not a valid GCP label key; not sent as a label"
            )
            continue
        out.setdefault(k, v)
    out.update(extra)
    return dict(sorted(out.items()))


def _registry(region: str) -> str:
    """The Artifact Registry multi-region holding Vertex AI's images for ``region``."""
    if region.startswith("europe"):
        return "europe-docker.pkg.dev"
    if region.startswith(("asia", "australia", "me-")):
        return "asia-docker.pkg.dev"
    return "us-docker.pkg.dev"


def training_image(region: str, gpu: bool) -> str:
    kind = "gpu" if gpu else "cpu"
    return (
        f"{_registry(region)}/vertex-ai/training/pytorch-{kind}.{_IMAGE_VERSION}.{_PY}"
        ":latest"
    )


def serving_image(region: str, gpu: bool) -> str:
    kind = "gpu" if gpu else "cpu"
    return f"{_registry(region)}/vertex-ai/prediction/pytorch-{kind}.{_IMAGE_VERSION}:latest"


def _env(values: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in sorted(values.items())]


def _request(method: str, service: str, request: dict[str, Any]) -> dict[str, Any]:
    """One planned call: ``{"service", "method", "request"}`` (request: proto JSON)."""
    root = f"{SERVICE}.{method}Request"
    schema.validate(root, request, what=method)
    return {"service": f"{SERVICE}.{service}", "method": method, "request": request}


# ------------------------------------------------------------------ training


@dataclass(frozen=True)
class CompiledTraining:
    request: dict[str, Any]
    machine: Machine
    instance_count: int
    processes_per_node: int
    hourly_cost_usd: float | None
    estimated_cost_usd: float | None
    base_output: str
    model_uri: str
    output_uri: str
    warnings: tuple[str, ...]
    details: dict[str, Any] = field(default_factory=dict)


def compile_training(
    spec: Any,
    *,
    run_id: str,
    target: Target,
    bundle_uri: str,
    channel_uris: Mapping[str, str],
) -> CompiledTraining:
    """The ``CreateCustomJob`` request for ``spec`` (see the module docstring).

    ``channel_uris``: data channel -> ``gs://`` folder the job reads it from
    (Vertex AI's ``AIP_<SPLIT>_DATA_URI`` variables carry them).
    """
    options = spec.providers.gcp
    res = spec.resources
    warnings: list[str] = []
    machine = resolve_machine(
        res.accelerator, options.machine_type if options else None, purpose="training"
    )
    gpu = machine.accelerator_count > 0
    image = (options.image_uri if options else None) or training_image(
        target.region, gpu
    )
    nprocs = res.processes_per_node
    processes = (machine.accelerator_count or 1) if nprocs == "auto" else int(nprocs)
    if processes > 1 and processes > max(machine.accelerator_count, 1) and gpu:
        warnings.append(
            f"resources.processes_per_node={processes} exceeds the "
            f"{machine.accelerator_count} GPU(s) per node; processes will share GPUs"
        )

    base = f"{target.root}/runs/{run_id}/"
    env = {
        "CLOUDNN_BUNDLE_URI": bundle_uri,
        "CLOUDNN_RUN_ID": run_id,
        # stdout straight to Cloud Logging, line by line (progress events)
        "PYTHONUNBUFFERED": "1",
    }
    variables = {
        "train": "AIP_TRAINING_DATA_URI",
        "validation": "AIP_VALIDATION_DATA_URI",
        "test": "AIP_TEST_DATA_URI",
    }
    for channel, uri in channel_uris.items():
        env[variables[channel]] = uri

    pool: dict[str, Any] = {
        "machine_spec": machine.spec(),
        "replica_count": 1,
        "disk_spec": {
            "boot_disk_type": "pd-ssd",
            "boot_disk_size_gb": options.boot_disk_size_gb if options else 100,
        },
        "container_spec": {
            "image_uri": image,
            "command": ["python", "-c", TRAINING_BOOTSTRAP],
            "env": _env(env),
        },
    }
    pools = [pool]
    if res.nodes > 1:
        pools.append({**pool, "replica_count": res.nodes - 1})

    hourly = machine.spot_hourly_usd if res.spot else machine.hourly_usd
    if res.spot and hourly is None and machine.hourly_usd is not None:
        hourly = machine.hourly_usd
        warnings.append("no spot price known: the estimate uses the on-demand price")
    total = None if hourly is None else round(hourly * res.nodes, 4)
    timeout = res.max_runtime
    if res.max_cost_usd is not None:
        # the budget becomes a hard stop: Vertex AI ends the job at its timeout
        if not total:
            raise SpecError(
                "resources.max_cost_usd",
                f"no price is known for {machine.machine_type} on Vertex AI, so a "
                "cost cap cannot be enforced",
                hint="set resources.max_runtime instead, or choose a machine the "
                "catalog prices (see `cloudnn plan --provider gcp`)",
            )
        budget = int(res.max_cost_usd / total * 3600)
        if budget < 60:
            raise SpecError(
                "resources.max_cost_usd",
                f"${res.max_cost_usd} buys {budget} s at ${total:.2f}/h",
                hint="raise the budget or use a smaller machine",
            )
        if timeout is None or budget < timeout:
            warnings.append(
                f"resources.max_cost_usd={res.max_cost_usd}: the job stops after "
                f"{budget} s (${total:.2f}/h)"
            )
            timeout = budget

    scheduling: dict[str, Any] = {}
    if timeout:
        scheduling["timeout"] = f"{timeout}s"
    if res.spot:
        scheduling["strategy"] = "SPOT"
    if res.nodes > 1:
        # torch's elastic launcher runs a fixed world: one replica restarting
        # alone cannot rejoin it, so the whole job restarts (from checkpoints)
        scheduling["restart_job_on_worker_restart"] = True

    job_spec: dict[str, Any] = {
        "worker_pool_specs": pools,
        "base_output_directory": {"output_uri_prefix": base},
    }
    if scheduling:
        job_spec["scheduling"] = scheduling
    if options and options.service_account:
        job_spec["service_account"] = options.service_account
    if options and options.network:
        job_spec["network"] = options.network

    labels = _labels(
        spec,
        {RUN_LABEL: label_value(run_id), SPEC_LABEL: spec.spec_hash()},
        warnings,
    )
    custom_job: dict[str, Any] = {
        "display_name": job_display_name(run_id),
        "job_spec": job_spec,
        "labels": labels,
    }
    if options and options.kms_key_name:
        custom_job["encryption_spec"] = {"kms_key_name": options.kms_key_name}
    request = _request(
        "CreateCustomJob",
        "JobService",
        {"parent": target.parent, "custom_job": custom_job},
    )

    estimated = None
    if total is not None and timeout:
        estimated = round(total * timeout / 3600, 2)
    return CompiledTraining(
        request=request,
        machine=machine,
        instance_count=res.nodes,
        processes_per_node=processes,
        hourly_cost_usd=total,
        estimated_cost_usd=estimated,
        base_output=base,
        model_uri=f"{base}model/",
        output_uri=f"{base}output/",
        warnings=tuple(warnings),
        details={
            "region": target.region,
            "machine_type": machine.machine_type,
            "image_uri": image,
            "base_output_directory": base,
            "checkpoint_uri": f"{base}checkpoints/",
            "console": "https://console.cloud.google.com/vertex-ai/training/custom-jobs",
        },
    )


# ------------------------------------------------------------------ endpoints


@dataclass(frozen=True)
class CompiledEndpoint:
    requests: tuple[dict[str, Any], ...]
    endpoint_name: str
    endpoint: str  # resource name
    model: str  # resource name
    deployed_model_id: str
    machine: Machine
    replicas: int
    hourly_cost_usd: float | None
    warnings: tuple[str, ...]
    details: dict[str, Any] = field(default_factory=dict)


def compile_endpoint(
    spec: Any,
    model_uri: str,
    *,
    target: Target,
    code_uri: str,
) -> CompiledEndpoint:
    """``UploadModel`` + ``CreateEndpoint`` + ``DeployModel`` for the model at ``model_uri``.

    ``code_uri``: the serving code archive (``code/server.py`` + runtime) in GCS.
    """
    options = spec.providers.gcp
    deploy = spec.deploy
    warnings: list[str] = []
    if not model_uri.startswith("gs://"):
        raise SpecError(
            "model_uri",
            f"Vertex AI serves models from Cloud Storage, not {model_uri}",
            hint="deploy a run trained with --provider gcp (its model is in gs://)",
        )
    machine = resolve_machine(
        deploy.accelerator,
        deploy.instance_type,
        purpose="serving",
        accelerator_field="deploy.accelerator",
        machine_field="deploy.instance_type",
    )
    gpu = machine.accelerator_count > 0
    run_id = run_id_of_model_uri(model_uri)
    name = endpoint_name(spec.name, run_id)
    model_name = f"{target.parent}/models/{name}"
    endpoint = f"{target.parent}/endpoints/{name}"
    dm_id = deployed_model_id(name)
    labels = _labels(
        spec, {RUN_LABEL: label_value(run_id), SPEC_LABEL: spec.spec_hash()}, warnings
    )
    encryption = (
        {"encryption_spec": {"kms_key_name": options.kms_key_name}}
        if options and options.kms_key_name
        else {}
    )
    env = {
        "CLOUDNN_SERVING_CODE_URI": code_uri,
        "CLOUDNN_RUNTIME": deploy.runtime,
        "PYTHONUNBUFFERED": "1",
    }
    model: dict[str, Any] = {
        "display_name": f"cloudnn-{name}",
        "artifact_uri": model_uri,
        "container_spec": {
            "image_uri": serving_image(target.region, gpu),
            "command": ["python", "-c", SERVING_BOOTSTRAP],
            "env": _env(env),
            "ports": [{"container_port": SERVING_PORT}],
            "predict_route": PREDICT_ROUTE,
            "health_route": HEALTH_ROUTE,
        },
        "labels": labels,
        **encryption,
    }
    upload = _request(
        "UploadModel",
        "ModelService",
        {"parent": target.parent, "model_id": name, "model": model},
    )
    create = _request(
        "CreateEndpoint",
        "EndpointService",
        {
            "parent": target.parent,
            "endpoint_id": name,
            "endpoint": {
                "display_name": f"cloudnn-{name}",
                "labels": labels,
                **encryption,
            },
        },
    )

    auto = deploy.autoscaling
    min_replicas = auto.min_replicas if auto else deploy.replicas
    max_replicas = auto.max_replicas if auto else deploy.replicas
    resources: dict[str, Any] = {
        "machine_spec": machine.spec(),
        "min_replica_count": min_replicas,
        "max_replica_count": max_replicas,
    }
    if auto is not None:
        resources["autoscaling_metric_specs"] = [
            {
                "metric_name": _REQUEST_COUNT_METRIC,
                "target": auto.target_requests_per_replica,
            }
        ]
    deployed: dict[str, Any] = {
        "id": dm_id,
        "model": model_name,
        "display_name": f"cloudnn-{name}",
        "dedicated_resources": resources,
    }
    if options and options.service_account:
        deployed["service_account"] = options.service_account
    deploy_request = _request(
        "DeployModel",
        "EndpointService",
        {
            "endpoint": endpoint,
            "deployed_model": deployed,
            # "0" stands for the model being deployed: all traffic to it
            "traffic_split": {"0": 100},
        },
    )
    if deploy.auth == "none":
        warnings.append(
            "deploy.auth=none: Vertex AI endpoints always need IAM credentials "
            "(roles/aiplatform.user) to predict"
        )
    if deploy.batching is not None:
        warnings.append("deploy.batching is not applied by the Vertex AI adapter")
    hourly = None if machine.hourly_usd is None else machine.hourly_usd * min_replicas
    return CompiledEndpoint(
        requests=(upload, create, deploy_request),
        endpoint_name=name,
        endpoint=endpoint,
        model=model_name,
        deployed_model_id=dm_id,
        machine=machine,
        replicas=min_replicas,
        hourly_cost_usd=None if hourly is None else round(hourly, 4),
        warnings=tuple(warnings),
        details={
            "region": target.region,
            "machine_type": machine.machine_type,
            "min_replicas": min_replicas,
            "max_replicas": max_replicas,
        },
    )
