"""Pure compilation: a cloudnn spec -> the exact SageMaker API requests.

Nothing here opens a socket, reads credentials or writes a file; the same
inputs give the same requests (golden-tested), and each request is validated
against botocore's service model (:mod:`cloudnn_aws._schema`) before a plan
is returned. The provider (:mod:`cloudnn_aws.provider`) sends what this
module builds, in order.

How a training job runs on SageMaker
    The PyTorch training Deep Learning Container runs the cloudnn training
    bundle in *script mode*: ``HyperParameters`` carry only the container's
    own ``sagemaker_program`` (``cloudnn_entry.py``) and
    ``sagemaker_submit_directory`` (the bundle's ``s3://.../bundle.tar.gz``),
    and the image's training toolkit downloads and unpacks the bundle, installs
    its ``requirements.txt``, exports the ``SM_*`` variables
    (:mod:`cloudnn.runtime.context` reads them) and runs the entry point once
    per host. That is the convention the PyTorch DLC implements and SageMaker
    has run for years; ``ContainerEntrypoint`` would bypass the toolkit, so
    the job would see no ``SM_*`` variables and no requirements would be
    installed. The spec travels inside the bundle (``spec.json``), so no user
    hyperparameter is passed on the command line (the toolkit would turn each
    one into ``--name value`` arguments of the entry point). Multi-node jobs
    need nothing more: each host's cloudnn runtime starts torch's elastic agent,
    and the agents meet at the first host (``algo-1``, port 7777).

Where things go (``<p>`` = ``s3://<bucket>/<prefix>``)::

    <p>/data/<sha256>/<file>          a local data file, content-addressed
    <p>/bundles/<sha256>/bundle.tar.gz  the training bundle
    <p>/jobs/<job>/output/model.tar.gz  the model SageMaker writes (plan.model_uri)
    <p>/jobs/<job>/output/output.tar.gz reports and metrics.json (plan.output_uri)
    <p>/checkpoints/<job>/            CheckpointConfig (synced both ways)
    <p>/serving/<sha256>/model.tar.gz the model plus code/inference.py, served
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudnn.errors import SpecError
from cloudnn_aws._schema import PLACEHOLDER_PREFIX, Problem, enum_values, validate

if TYPE_CHECKING:
    from cloudnn.bundle import Bundle
    from cloudnn.provider import Upload
    from cloudnn.spec import Spec
    from cloudnn_aws.config import ProviderConfig

__all__ = [
    "CompiledEndpoint",
    "CompiledTraining",
    "Offer",
    "Settings",
    "compile_endpoint",
    "compile_training",
    "endpoint_name",
    "inference_image",
    "job_name",
    "resolve_settings",
    "training_image",
]

# --------------------------------------------------------------------- names

#: SageMaker resource names: <= 63 characters, letters, digits and '-'
_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_NAME_MAX = 63
#: the container's own script-mode settings (the toolkit strips sagemaker_*)
ENTRY_POINT = "cloudnn_entry.py"
#: where SageMaker mounts CheckpointConfig inside the container (its default)
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
#: SageMaker's own default MaxRuntimeInSeconds (1 day), and its hard ceiling
DEFAULT_MAX_RUNTIME = 86_400
MAX_RUNTIME_CEILING = 28 * 86_400
#: the default account quota "Longest run time for a training job" (5 days)
MAX_RUNTIME_QUOTA = 5 * 86_400
#: log group SageMaker writes training jobs' output to
LOG_GROUP = "/aws/sagemaker/TrainingJobs"
ENDPOINT_LOG_GROUP = "/aws/sagemaker/Endpoints"
VARIANT = "AllTraffic"


def _slug(text: str) -> str:
    """Letters, digits and single dashes only (SageMaker's name alphabet)."""
    out = re.sub(r"[^a-zA-Z0-9]+", "-", text).strip("-")
    return out or "run"


def job_name(run_id: str, spec_hash: str) -> str:
    """``<run id>-<spec hash>``: the training job's name, derived once.

    The same run of the same spec always gets the same name (a retried or
    resumed submit finds its job), two runs never share one. Run ids that
    would make it too long are shortened with a hash of the full run id.
    """
    tail = f"-{spec_hash}"
    stem = _slug(run_id)
    room = _NAME_MAX - len(tail)
    if len(stem) > room:
        digest = hashlib.sha256(run_id.encode()).hexdigest()[:8]
        stem = f"{stem[: room - 9].rstrip('-')}-{digest}"
    return f"{stem}{tail}"


def endpoint_name(spec_name: str, model_uri: str) -> str:
    """``<spec name>-<8 hex of the model URI>``: one endpoint per trained model."""
    digest = hashlib.sha256(model_uri.encode()).hexdigest()[:8]
    # room for "-<8 hex>" here and another in the endpoint config's name
    return f"{_slug(spec_name)[: _NAME_MAX - 18].rstrip('-')}-{digest}"


# -------------------------------------------------------------------- images

#: AWS Deep Learning Containers: PyTorch 2.6 images (py312), per processor
_DLC_VERSION = "2.6.0"
_TRAINING_TAGS = {
    "cpu": f"{_DLC_VERSION}-cpu-py312-ubuntu22.04-sagemaker",
    "gpu": f"{_DLC_VERSION}-gpu-py312-cu126-ubuntu22.04-sagemaker",
}
_INFERENCE_TAGS = {
    "cpu": f"{_DLC_VERSION}-cpu-py312-ubuntu22.04-sagemaker",
    "gpu": f"{_DLC_VERSION}-gpu-py312-cu124-ubuntu22.04-sagemaker",
}
#: the DLC registry account is 763104351884 except in these regions
_DLC_ACCOUNTS = {
    "af-south-1": "626614931356",
    "ap-east-1": "871362719292",
    "ap-northeast-3": "364406365360",
    "eu-south-1": "692866216735",
    "me-south-1": "217643126080",
    "cn-north-1": "727897471807",
    "cn-northwest-1": "727897471807",
    "us-gov-west-1": "442386744353",
}


def _ecr(region: str) -> str:
    account = _DLC_ACCOUNTS.get(region, "763104351884")
    suffix = ".amazonaws.com.cn" if region.startswith("cn-") else ".amazonaws.com"
    return f"{account}.dkr.ecr.{region}{suffix}"


def training_image(region: str, *, gpu: bool) -> str:
    """The PyTorch training DLC for ``region``, CPU or GPU build."""
    return f"{_ecr(region)}/pytorch-training:{_TRAINING_TAGS['gpu' if gpu else 'cpu']}"


def inference_image(region: str, *, gpu: bool) -> str:
    """The PyTorch inference DLC (TorchServe + the SageMaker toolkit)."""
    tag = _INFERENCE_TAGS["gpu" if gpu else "cpu"]
    return f"{_ecr(region)}/pytorch-inference:{tag}"


# ------------------------------------------------------------------ settings


@dataclass(frozen=True)
class Settings:
    """The AWS settings of one spec: its ``providers.aws`` over the provider's."""

    region: str
    role_arn: str
    bucket: str
    prefix: str
    #: spec fields that are unset (the values above are placeholders)
    missing: tuple[str, ...] = ()
    instance_type: str | None = None
    image_uri: str | None = None
    subnets: tuple[str, ...] = ()
    security_group_ids: tuple[str, ...] = ()
    kms_key_id: str | None = None
    volume_size_gb: int = 30
    network_isolation: bool = False
    tags: tuple[tuple[str, str], ...] = ()

    @property
    def root(self) -> str:
        """``s3://<bucket>/<prefix>``: everything cloudnn stores goes under it."""
        return (
            f"s3://{self.bucket}/{self.prefix}"
            if self.prefix
            else f"s3://{self.bucket}"
        )


def placeholder(field_path: str) -> str:
    """What a plan shows for a setting the user has not given yet."""
    return f"{PLACEHOLDER_PREFIX}{field_path}>"


_MISSING_HINTS = {
    "providers.aws.role_arn": (
        "set providers.aws.role_arn in the spec (or CLOUDNN_AWS_ROLE_ARN) to a "
        "SageMaker execution role; `cloudnn setup --provider aws` prints a "
        "CloudFormation template that creates one"
    ),
    "providers.aws.bucket": (
        "set providers.aws.bucket in the spec (or CLOUDNN_AWS_BUCKET) to an S3 "
        "bucket in the job's region; `cloudnn setup --provider aws` prints a "
        "template that creates one"
    ),
}


def _missing_warning(field_path: str, command: str) -> str:
    env = (
        "CLOUDNN_AWS_ROLE_ARN"
        if field_path.endswith("role_arn")
        else "CLOUDNN_AWS_BUCKET"
    )
    return (
        f"{field_path} is not set (shown as {placeholder(field_path)}): "
        f"`cloudnn {command}` refuses until the spec or {env} sets it; "
        "`cloudnn setup --provider aws` creates one"
    )


def missing_setting_error(field_path: str) -> SpecError:
    """The one-line error for a setting a submission cannot do without."""
    what = "an execution role" if field_path.endswith("role_arn") else "a bucket"
    return SpecError(
        field_path,
        f"is not set: SageMaker needs {what} to run this job",
        hint=_MISSING_HINTS[field_path],
    )


def resolve_settings(spec: Spec, config: ProviderConfig) -> Settings:
    """Merge the spec's ``providers.aws`` (wins where set) with provider options."""
    from cloudnn.spec import AWSOptions

    opts = spec.providers.aws or AWSOptions()
    explicit = opts.model_fields_set
    region = opts.region if "region" in explicit else (config.region or opts.region)
    role = opts.role_arn or config.role_arn
    bucket = opts.bucket or config.bucket
    missing: list[str] = []
    if not role:
        missing.append("providers.aws.role_arn")
        role = placeholder("providers.aws.role_arn")
    if not bucket:
        missing.append("providers.aws.bucket")
        bucket = placeholder("providers.aws.bucket")
    tags = {**spec.tags, **opts.tags}
    return Settings(
        region=region,
        role_arn=role,
        bucket=bucket,
        prefix=opts.prefix.strip("/"),
        missing=tuple(missing),
        instance_type=opts.instance_type,
        image_uri=opts.image_uri,
        subnets=tuple(opts.subnets),
        security_group_ids=tuple(opts.security_group_ids),
        kms_key_id=opts.kms_key_id,
        volume_size_gb=opts.volume_size_gb,
        network_isolation=opts.network_isolation,
        tags=tuple(sorted(tags.items())),
    )


# ------------------------------------------------------------------ catalog


@dataclass(frozen=True)
class Offer:
    """One ``ml.*`` instance type from cloudnn's price catalog."""

    instance_type: str
    accelerator: str | None
    gpus: int
    vcpus: int
    price: float | None  # USD per hour, on demand, the catalog's region
    region: str


@lru_cache(maxsize=1)
def offers() -> tuple[Offer, ...]:
    """The catalog's SageMaker rows (``cloudnn/data/accelerator_catalog.csv``)."""
    text = (
        resources.files("cloudnn")
        .joinpath("data/accelerator_catalog.csv")
        .read_text(encoding="utf-8")
    )
    out: list[Offer] = []
    for row in csv.DictReader(text.splitlines()):
        if row["provider"] != "aws":
            continue
        price = row.get("managed_estimate_per_hour_usd") or row["price_per_hour_usd"]
        acc = row["accelerator"]
        out.append(
            Offer(
                instance_type=row["instance_type"],
                accelerator=None if acc in ("", "none") else acc,
                gpus=int(row["accelerator_count"] or 0),
                vcpus=int(row["vcpus"] or 0),
                price=float(price) if price else None,
                region=row["region"],
            )
        )
    return tuple(out)


def _offer(instance_type: str) -> Offer | None:
    return next((o for o in offers() if o.instance_type == instance_type), None)


def _cheapest(candidates: Sequence[Offer]) -> Offer:
    return min(
        candidates,
        key=lambda o: (o.price is None, o.price or 0.0, o.gpus, o.instance_type),
    )


def _pick_instance(
    *,
    explicit: str | None,
    explicit_field: str,
    accelerator: str | None,
    accelerator_field: str,
    enum_shape: str,
    what: str,
) -> tuple[str, Offer | None, list[str]]:
    """(instance type, its catalog row, warnings) for a training job or endpoint."""
    from cloudnn.spec import parse_accelerator

    allowed = set(enum_values("sagemaker", enum_shape))
    parsed = parse_accelerator(accelerator)
    warnings: list[str] = []
    if explicit:
        if explicit not in allowed:
            import difflib

            close = difflib.get_close_matches(
                explicit, sorted(allowed), n=3, cutoff=0.6
            )
            maybe = f" (did you mean {', '.join(close)}?)" if close else ""
            raise SpecError(
                explicit_field,
                f"{explicit!r} is not a SageMaker {what} instance type{maybe}",
                hint=f"use an instance type SageMaker offers for {what}, or drop "
                f"{explicit_field} and let {accelerator_field} choose one",
            )
        offer = _offer(explicit)
        if offer is None:
            warnings.append(
                f"{explicit_field} {explicit} is not in cloudnn's price catalog: "
                "its price is unknown and its GPUs are not checked"
            )
        elif parsed is not None:
            name, count = parsed
            if offer.accelerator != name or offer.gpus < count:
                has = f"{offer.gpus}x {offer.accelerator}" if offer.gpus else "no GPU"
                raise SpecError(
                    explicit_field,
                    f"{explicit} has {has}, but {accelerator_field} asks for "
                    f"{count}x {name}",
                    hint=f"pick an instance type with {count}x {name}, or change "
                    f"{accelerator_field}",
                )
        elif offer.gpus:
            warnings.append(
                f"{explicit} has {offer.gpus}x {offer.accelerator}, but "
                f"{accelerator_field} is not set: cloudnn uses the GPUs it finds"
            )
        return explicit, offer, warnings
    candidates = [o for o in offers() if o.instance_type in allowed]
    if parsed is None:
        cpu = [o for o in candidates if o.accelerator is None]
        offer = _cheapest(cpu)
        return offer.instance_type, offer, warnings
    name, count = parsed
    same = [o for o in candidates if o.accelerator == name]
    exact = [o for o in same if o.gpus == count]
    if exact:
        offer = _cheapest(exact)
    else:
        bigger = [o for o in same if o.gpus > count]
        if not bigger:
            counts = sorted({o.gpus for o in same})
            have = (
                f"SageMaker {what} offers {name} in counts {counts}"
                if counts
                else f"SageMaker {what} offers no {name}"
            )
            raise SpecError(
                accelerator_field,
                f"no {what} instance type has {count}x {name}; {have}",
                hint="ask for a count SageMaker offers (e.g. "
                f"'{name}:{counts[0] if counts else 1}'), another GPU, or set "
                f"{explicit_field}",
            )
        offer = _cheapest(bigger)
        warnings.append(
            f"{accelerator_field} {name}:{count}: no {what} instance has exactly "
            f"{count}; using {offer.instance_type} with {offer.gpus}"
        )
    return offer.instance_type, offer, warnings


# ------------------------------------------------------------------- helpers


def _tags(settings: Settings, extra: Mapping[str, str]) -> list[dict[str, str]]:
    for key in dict(settings.tags):
        if key.lower().startswith(("aws:", "cloudnn:")):
            raise SpecError(
                "tags",
                f"tag key {key!r} uses a reserved prefix (aws: is AWS's, "
                "cloudnn: is cloudnn's own)",
                hint="rename the tag",
            )
    tags = dict(settings.tags)
    tags.update(extra)
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())]


def _request(service: str, operation: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"service": service, "operation": operation, "params": params}


#: where a problem in a request comes from in the spec, by request path prefix
_FIELDS: tuple[tuple[str, str], ...] = (
    ("TrainingJobName", "run id"),
    ("RoleArn", "providers.aws.role_arn"),
    ("ExecutionRoleArn", "providers.aws.role_arn"),
    ("ResourceConfig.InstanceType", "providers.aws.instance_type"),
    ("ResourceConfig.VolumeSizeInGB", "providers.aws.volume_size_gb"),
    ("ResourceConfig.VolumeKmsKeyId", "providers.aws.kms_key_id"),
    ("ResourceConfig.InstanceCount", "resources.nodes"),
    ("AlgorithmSpecification.TrainingImage", "providers.aws.image_uri"),
    ("PrimaryContainer.Image", "providers.aws.image_uri"),
    ("OutputDataConfig.KmsKeyId", "providers.aws.kms_key_id"),
    ("KmsKeyId", "providers.aws.kms_key_id"),
    ("OutputDataConfig", "providers.aws.bucket"),
    ("CheckpointConfig", "providers.aws.bucket"),
    ("VpcConfig.Subnets", "providers.aws.subnets"),
    ("VpcConfig.SecurityGroupIds", "providers.aws.security_group_ids"),
    ("StoppingCondition", "resources.max_runtime"),
    ("Tags", "tags"),
    ("ProductionVariants[0].InstanceType", "deploy.instance_type"),
    ("ProductionVariants[0].InitialInstanceCount", "deploy.replicas"),
    ("InputDataConfig", "data"),
)


def field_for(path: str) -> str:
    """The spec field a request path comes from (best effort)."""
    for prefix, spec_field in _FIELDS:
        if path == prefix or path.startswith((prefix + ".", prefix + "[")):
            return spec_field
    return "providers.aws"


def check_requests(requests: Sequence[Mapping[str, Any]]) -> None:
    """Validate each request offline; :class:`SpecError` naming the first bad field."""
    for req in requests:
        problems: list[Problem] = validate(
            req["service"], req["operation"], req["params"]
        )
        if problems:
            first = problems[0]
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            spec_field = field_for(first.path)
            raise SpecError(
                spec_field,
                f"{req['operation']} would be rejected: {first}{more}",
                hint=f"fix {spec_field} (checked against botocore's "
                f"{req['service']} service model)",
            )


# ------------------------------------------------------------------ training


@dataclass(frozen=True)
class CompiledTraining:
    """A spec compiled for SageMaker: requests plus what the plan reports."""

    job_name: str
    requests: tuple[dict[str, Any], ...]
    instance_type: str
    instance_count: int
    processes_per_node: int
    hourly_cost_usd: float | None
    estimated_cost_usd: float | None
    model_uri: str
    output_uri: str
    uploads: tuple[Upload, ...]
    warnings: tuple[str, ...]
    details: dict[str, Any] = field(default_factory=dict)


def _channel_uploads(
    spec: Spec, settings: Settings
) -> tuple[list[dict[str, Any]], list[Upload]]:
    """InputDataConfig channels, and the uploads that back the local ones."""
    from cloudnn.bundle import channels, content_sha256
    from cloudnn.provider import Upload

    configs: list[dict[str, Any]] = []
    uploads: list[Upload] = []
    for ch in channels(spec):
        if ch.is_remote:
            if not ch.source.startswith("s3://"):
                raise SpecError(
                    f"data.{ch.name}",
                    f"{ch.source}: SageMaker reads training data from S3 only",
                    hint="copy it to s3:// (or give a local path: cloudnn uploads it)",
                )
            uri = ch.source
        else:
            sha, size = content_sha256(ch.source)
            base = f"{settings.root}/data/{sha}/"
            uri = base
            dest = base if ch.is_dir else base + ch.filename
            uploads.append(Upload(ch.source, dest, sha, size, "data"))
        configs.append(
            {
                "ChannelName": ch.name,
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": uri,
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
                "InputMode": "File",
            }
        )
    return configs, uploads


#: families with local NVMe instance storage: SageMaker refuses VolumeKmsKeyId
_INSTANCE_STORAGE: tuple[str, ...] = (
    "ml.g4dn.",
    "ml.g5.",
    "ml.g6.",
    "ml.g6e.",
    "ml.p3dn.",
    "ml.p4",
    "ml.p5",
    "ml.m5d.",
    "ml.c5d.",
    "ml.r5d.",
    "ml.trn1.",
)

#: SageMaker metrics parsed from the runtime's structured events
_METRICS = (
    ("train:loss", r'"event": "epoch".*?"train_loss": (-?[0-9.]+(?:[eE][-+]?[0-9]+)?)'),
    (
        "validation:loss",
        r'"event": "epoch".*?"val_loss": (-?[0-9.]+(?:[eE][-+]?[0-9]+)?)',
    ),
    (
        "validation:metric",
        r'"event": "epoch".*?"val_metric": (-?[0-9.]+(?:[eE][-+]?[0-9]+)?)',
    ),
)


def compile_training(
    spec: Spec,
    *,
    run_id: str,
    config: ProviderConfig,
    bundle: Bundle,
    bundle_path: str,
) -> CompiledTraining:
    """The CreateTrainingJob request of ``spec`` (pure; see the module docstring)."""
    from cloudnn.provider import Upload

    settings = resolve_settings(spec, config)
    res = spec.resources
    name = job_name(run_id, spec.spec_hash())
    instance, offer, warnings = _pick_instance(
        explicit=settings.instance_type,
        explicit_field="providers.aws.instance_type",
        accelerator=res.accelerator,
        accelerator_field="resources.accelerator",
        enum_shape="TrainingInstanceType",
        what="training",
    )
    gpus = offer.gpus if offer is not None else res.accelerator_count
    if res.processes_per_node == "auto":
        nprocs = max(1, gpus)
    else:
        nprocs = int(res.processes_per_node)
        if gpus and nprocs > gpus:
            warnings.append(
                f"resources.processes_per_node {nprocs} > {gpus} GPUs on {instance}: "
                "processes will share GPUs"
            )
    nodes = res.nodes
    warnings += [_missing_warning(m, "train") for m in settings.missing]

    root = settings.root
    channel_configs, uploads = _channel_uploads(spec, settings)
    bundle_uri = f"{root}/bundles/{bundle.sha256}/bundle.tar.gz"
    uploads.append(
        Upload(bundle_path, bundle_uri, bundle.sha256, bundle.size, "bundle")
    )
    output_path = f"{root}/jobs"
    model_uri = f"{output_path}/{name}/output/model.tar.gz"
    output_uri = f"{output_path}/{name}/output/output.tar.gz"

    # -- time and money
    hourly = offer.price * nodes if offer is not None and offer.price else None
    runtime = res.max_runtime or DEFAULT_MAX_RUNTIME
    cost_basis = "resources.max_runtime" if res.max_runtime else None
    if res.max_cost_usd is not None:
        if hourly is None:
            raise SpecError(
                "resources.max_cost_usd",
                f"the price of {instance} is not in cloudnn's catalog, so the "
                "budget cannot be turned into a time limit",
                hint="set resources.max_runtime instead, or pick a catalogued "
                "providers.aws.instance_type",
            )
        budget_s = int(res.max_cost_usd / hourly * 3600)
        if budget_s < 60:
            raise SpecError(
                "resources.max_cost_usd",
                f"${res.max_cost_usd:g} buys {budget_s} s of {nodes} x {instance} "
                f"(${hourly:.2f}/h)",
                hint="raise the budget or use a cheaper instance",
            )
        if budget_s < runtime:
            runtime = budget_s
            cost_basis = "resources.max_cost_usd"
            warnings.append(
                f"resources.max_cost_usd ${res.max_cost_usd:g}: the job is stopped "
                f"after {runtime} s (MaxRuntimeInSeconds)"
            )
    if runtime > MAX_RUNTIME_CEILING:
        raise SpecError(
            "resources.max_runtime",
            f"{runtime} s is longer than SageMaker's limit of "
            f"{MAX_RUNTIME_CEILING} s (28 days)",
            hint="split the training into resumed runs, or lower max_runtime",
        )
    if runtime > MAX_RUNTIME_QUOTA:
        warnings.append(
            f"resources.max_runtime {runtime} s exceeds SageMaker's default quota "
            f"of {MAX_RUNTIME_QUOTA} s; ask AWS for a longer limit first"
        )
    estimated = hourly * runtime / 3600 if hourly is not None and cost_basis else None

    gpu_image = bool(gpus)
    image = settings.image_uri or training_image(settings.region, gpu=gpu_image)
    hyperparameters = {
        "sagemaker_program": ENTRY_POINT,
        "sagemaker_submit_directory": bundle_uri,
        "sagemaker_region": settings.region,
        "sagemaker_container_log_level": "20",
        "sagemaker_job_name": name,
    }
    params: dict[str, Any] = {
        "TrainingJobName": name,
        "RoleArn": settings.role_arn,
        "AlgorithmSpecification": {
            "TrainingImage": image,
            "TrainingInputMode": "File",
            "MetricDefinitions": [{"Name": n, "Regex": r} for n, r in _METRICS],
        },
        "HyperParameters": hyperparameters,
        "Environment": {
            "CLOUDNN_RUN_ID": run_id,
            "PYTHONUNBUFFERED": "1",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        },
        "InputDataConfig": channel_configs,
        "OutputDataConfig": {"S3OutputPath": output_path},
        "ResourceConfig": {
            "InstanceType": instance,
            "InstanceCount": nodes,
            "VolumeSizeInGB": settings.volume_size_gb,
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": runtime},
        "Tags": _tags(
            settings,
            {
                "cloudnn:run-id": run_id,
                "cloudnn:spec-name": spec.name,
                "cloudnn:spec-hash": spec.spec_hash(),
            },
        ),
    }
    if settings.kms_key_id:
        params["OutputDataConfig"]["KmsKeyId"] = settings.kms_key_id
        if instance.startswith(_INSTANCE_STORAGE):
            warnings.append(
                f"{instance} has local NVMe storage, which SageMaker encrypts "
                "itself: providers.aws.kms_key_id applies to the output only"
            )
        else:
            params["ResourceConfig"]["VolumeKmsKeyId"] = settings.kms_key_id
    if spec.train.checkpoint.enabled or res.spot:
        params["CheckpointConfig"] = {
            "S3Uri": f"{root}/checkpoints/{name}/",
            "LocalPath": CHECKPOINT_LOCAL_PATH,
        }
    if res.spot:
        params["EnableManagedSpotTraining"] = True
        # the wait for spot capacity counts too: allow as long again
        params["StoppingCondition"]["MaxWaitTimeInSeconds"] = max(
            runtime, min(2 * runtime, MAX_RUNTIME_CEILING)
        )
        warnings.append(
            "resources.spot: managed spot training; interruptions resume from "
            "the latest checkpoint, and costs are shown at the on-demand price"
        )
    vpc = _vpc(settings)
    if vpc is not None:
        params["VpcConfig"] = vpc
    if settings.network_isolation:
        params["EnableNetworkIsolation"] = True
        if not settings.image_uri:
            warnings.append(
                "providers.aws.network_isolation: the job cannot pip-install "
                "cloudnn's runtime requirements (pydantic, PyYAML); set "
                "providers.aws.image_uri to an image that has them"
            )
    if nodes > 1 and settings.network_isolation:
        params["EnableInterContainerTrafficEncryption"] = True

    requests = (_request("sagemaker", "CreateTrainingJob", params),)
    check_requests(requests)
    details: dict[str, Any] = {
        "region": settings.region,
        "image": image,
        "bundle": bundle_uri,
        "channels": {
            c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"]
            for c in channel_configs
        },
        "checkpoints": params.get("CheckpointConfig", {}).get("S3Uri"),
        "log_group": LOG_GROUP,
        "price": {
            "instance_type": instance,
            "per_hour_usd": offer.price if offer is not None else None,
            "catalog_region": offer.region if offer is not None else None,
            "estimate_basis": cost_basis,
        },
        "missing": list(settings.missing),
    }
    if offer is not None and offer.region != settings.region:
        warnings.append(
            f"prices are {offer.region} list prices; {settings.region} may differ"
        )
    return CompiledTraining(
        job_name=name,
        requests=requests,
        instance_type=instance,
        instance_count=nodes,
        processes_per_node=nprocs,
        hourly_cost_usd=hourly,
        estimated_cost_usd=estimated,
        model_uri=model_uri,
        output_uri=output_uri,
        uploads=tuple(uploads),
        warnings=tuple(warnings),
        details=details,
    )


def _vpc(settings: Settings) -> dict[str, list[str]] | None:
    if not settings.subnets and not settings.security_group_ids:
        return None
    if not settings.subnets or not settings.security_group_ids:
        missing = "subnets" if not settings.subnets else "security_group_ids"
        raise SpecError(
            f"providers.aws.{missing}",
            "a VPC needs both subnets and security_group_ids",
            hint=f"set providers.aws.{missing} too, or neither",
        )
    return {
        "SecurityGroupIds": list(settings.security_group_ids),
        "Subnets": list(settings.subnets),
    }


# ------------------------------------------------------------------ endpoint


@dataclass(frozen=True)
class CompiledEndpoint:
    endpoint_name: str
    model_name: str
    config_name: str
    requests: tuple[dict[str, Any], ...]
    instance_type: str
    replicas: int
    hourly_cost_usd: float | None
    model_data_url: str
    upload: Upload
    warnings: tuple[str, ...]
    details: dict[str, Any] = field(default_factory=dict)


def serving_code_sha256() -> str:
    """Content hash of what the serving bundle adds to a model (adapter + runtime)."""
    import cloudnn
    from cloudnn.bundle import SERVING_ADAPTERS, content_sha256
    from cloudnn.templates import templates_root

    adapter = templates_root() / "serving" / SERVING_ADAPTERS["sagemaker"]
    runtime, _ = content_sha256(Path(cloudnn.__file__).resolve().parent)
    digest = hashlib.sha256(adapter.read_bytes())
    digest.update(runtime.encode())
    return digest.hexdigest()


def compile_endpoint(
    spec: Spec,
    model_uri: str,
    *,
    config: ProviderConfig,
    model_sha256: str,
    model_size: int,
    model_source: str,
) -> CompiledEndpoint:
    """CreateModel, CreateEndpointConfig, CreateEndpoint (+ autoscaling) requests.

    ``model_sha256`` addresses the archive that will be served: the serving
    bundle's own hash for a local model folder, or a hash of the trained
    model's URI and the serving code for a model in S3 (which is repacked
    with ``code/inference.py`` once, at creation).
    """
    from cloudnn.provider import Upload

    settings = resolve_settings(spec, config)
    dep = spec.deploy
    if spec.model.type == "script":
        raise SpecError(
            "model.script",
            "a script run's model is in the script's own format, which "
            "cloudnn's SageMaker adapter (inference.py) cannot load",
            hint="serve it with your own inference code, or train a built-in "
            "model or model.module to deploy it with cloudnn",
        )
    name = endpoint_name(spec.name, model_uri)
    instance, offer, warnings = _pick_instance(
        explicit=dep.instance_type,
        explicit_field="deploy.instance_type",
        accelerator=dep.accelerator,
        accelerator_field="deploy.accelerator",
        enum_shape="ProductionVariantInstanceType",
        what="hosting",
    )
    warnings += [_missing_warning(m, "deploy") for m in settings.missing]
    gpu = bool(offer.gpus if offer is not None else dep.accelerator)
    image = settings.image_uri or inference_image(settings.region, gpu=gpu)
    replicas = dep.autoscaling.min_replicas if dep.autoscaling else dep.replicas
    data_url = f"{settings.root}/serving/{model_sha256}/model.tar.gz"
    settings_hash = hashlib.sha256(
        f"{instance}|{replicas}|{image}|{data_url}|{dep.runtime}|{dep.workers}".encode()
    ).hexdigest()[:8]
    config_name = f"{name}-{settings_hash}"
    environment = {
        "SAGEMAKER_PROGRAM": "inference.py",
        "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code",
        "SAGEMAKER_CONTAINER_LOG_LEVEL": "20",
        "SAGEMAKER_REGION": settings.region,
        "SAGEMAKER_MODEL_SERVER_WORKERS": str(dep.workers),
        "CLOUDNN_RUNTIME": dep.runtime,
        "CLOUDNN_DEVICE": "cuda" if gpu else "cpu",
    }
    tags = _tags(settings, {"cloudnn:spec-name": spec.name, "cloudnn:model": name})
    model_params: dict[str, Any] = {
        "ModelName": name,
        "ExecutionRoleArn": settings.role_arn,
        "PrimaryContainer": {
            "Image": image,
            "ModelDataUrl": data_url,
            "Environment": environment,
        },
        "Tags": tags,
    }
    vpc = _vpc(settings)
    if vpc is not None:
        model_params["VpcConfig"] = vpc
    if settings.network_isolation:
        model_params["EnableNetworkIsolation"] = True
    variant: dict[str, Any] = {
        "VariantName": VARIANT,
        "ModelName": name,
        "InitialInstanceCount": replicas,
        "InstanceType": instance,
        "InitialVariantWeight": 1.0,
    }
    config_params: dict[str, Any] = {
        "EndpointConfigName": config_name,
        "ProductionVariants": [variant],
        "Tags": tags,
    }
    if settings.kms_key_id and not instance.startswith(_INSTANCE_STORAGE):
        config_params["KmsKeyId"] = settings.kms_key_id
    endpoint_params = {
        "EndpointName": name,
        "EndpointConfigName": config_name,
        "Tags": tags,
    }
    requests: list[dict[str, Any]] = [
        _request("sagemaker", "CreateModel", model_params),
        _request("sagemaker", "CreateEndpointConfig", config_params),
        _request("sagemaker", "CreateEndpoint", endpoint_params),
    ]
    if dep.autoscaling is not None:
        scaling = dep.autoscaling
        resource_id = f"endpoint/{name}/variant/{VARIANT}"
        dimension = "sagemaker:variant:DesiredInstanceCount"
        requests.append(
            _request(
                "application-autoscaling",
                "RegisterScalableTarget",
                {
                    "ServiceNamespace": "sagemaker",
                    "ResourceId": resource_id,
                    "ScalableDimension": dimension,
                    "MinCapacity": scaling.min_replicas,
                    "MaxCapacity": scaling.max_replicas,
                },
            )
        )
        requests.append(
            _request(
                "application-autoscaling",
                "PutScalingPolicy",
                {
                    "PolicyName": f"{name}-invocations",
                    "ServiceNamespace": "sagemaker",
                    "ResourceId": resource_id,
                    "ScalableDimension": dimension,
                    "PolicyType": "TargetTrackingScaling",
                    "TargetTrackingScalingPolicyConfiguration": {
                        # invocations per instance per minute, SageMaker's metric
                        "TargetValue": float(scaling.target_requests_per_replica),
                        "PredefinedMetricSpecification": {
                            "PredefinedMetricType": (
                                "SageMakerVariantInvocationsPerInstance"
                            )
                        },
                        "ScaleInCooldown": 300,
                        "ScaleOutCooldown": 60,
                    },
                },
            )
        )
    if dep.auth == "none":
        warnings.append(
            "deploy.auth none: SageMaker endpoints always require AWS "
            "credentials (SigV4); there is no anonymous access"
        )
    if dep.batching is not None:
        warnings.append(
            "deploy.batching: SageMaker endpoints batch with TorchServe's own "
            "settings; cloudnn's batching applies to local endpoints only"
        )
    check_requests(requests)
    hourly = offer.price * replicas if offer is not None and offer.price else None
    upload = Upload(model_source, data_url, model_sha256, model_size, "model")
    return CompiledEndpoint(
        endpoint_name=name,
        model_name=name,
        config_name=config_name,
        requests=tuple(requests),
        instance_type=instance,
        replicas=replicas,
        hourly_cost_usd=hourly,
        model_data_url=data_url,
        upload=upload,
        warnings=tuple(warnings),
        details={
            "region": settings.region,
            "image": image,
            "model_data_url": data_url,
            "trained_model": model_uri,
            "missing": list(settings.missing),
            "autoscaling": dep.autoscaling is not None,
        },
    )
