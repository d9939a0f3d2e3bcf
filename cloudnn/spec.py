"""The cloudnn spec: one description of a neural network job for every backend.

A spec is a frozen pydantic model (``extra="forbid"``, ``version: 1``) loaded
from YAML with :func:`load_spec` or built in Python. Validation needs neither
torch nor any vendor SDK. ``cloudnn schema`` prints its JSON Schema.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import json
import math
import os
import re
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from cloudnn.errors import SpecError

__all__ = [
    "AWSOptions",
    "AzureOptions",
    "CNNModel",
    "DataSpec",
    "DeploySpec",
    "GCPOptions",
    "MLPModel",
    "ModuleModel",
    "ProvidersSpec",
    "RNNModel",
    "ResourcesSpec",
    "ScriptModel",
    "Spec",
    "TrainSpec",
    "TransformerModel",
    "known_accelerators",
    "load_spec",
    "parse_accelerator",
    "spec_from_dict",
]

SPEC_VERSION = 1
_URI_SCHEMES = ("s3://", "gs://", "azureml://", "https://", "http://", "abfss://")


class _Strict(BaseModel):
    # allow_inf_nan=False: YAML's .inf/.nan would validate, then be written to
    # spec.json as null and fail inside the job with no field named
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class _SpecValueError(ValueError):
    """A validator's ValueError that also says how to fix it.

    pydantic keeps the exception in the error's ``ctx["error"]``, so
    :func:`_error_from_validation` can use ``hint`` and ``field`` (a path
    relative to the model that raised it, e.g. ``max_replicas``).
    """

    def __init__(self, reason: str, *, hint: str, field: str | None = None) -> None:
        super().__init__(reason)
        self.hint = hint
        self.field = field


# --------------------------------------------------------------------- model


class MLPModel(_Strict):
    """A multi-layer perceptron over tabular features."""

    type: Literal["mlp"] = "mlp"
    hidden_sizes: list[PositiveInt] = Field(
        default=[128, 64], description="Width of each hidden layer."
    )
    activation: Literal["relu", "gelu", "tanh", "silu"] = "relu"
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    batch_norm: bool = False


class CNNModel(_Strict):
    """A small convolutional network over images (C, H, W)."""

    type: Literal["cnn"] = "cnn"
    channels: list[PositiveInt] = Field(
        default=[32, 64], description="Output channels of each conv block."
    )
    kernel_size: PositiveInt = 3
    hidden_size: PositiveInt = 128
    dropout: float = Field(default=0.25, ge=0.0, lt=1.0)
    batch_norm: bool = True
    input_shape: tuple[PositiveInt, PositiveInt, PositiveInt] | None = Field(
        default=None,
        description="(channels, height, width); reshapes flat feature rows, "
        "e.g. [1, 8, 8] for 64 pixel columns.",
    )


class RNNModel(_Strict):
    """An LSTM or GRU over sequences (N, T, F) or token ids (with data.text)."""

    type: Literal["rnn"] = "rnn"
    cell: Literal["lstm", "gru"] = "lstm"
    hidden_size: PositiveInt = 64
    num_layers: PositiveInt = 1
    bidirectional: bool = False
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    pooling: Literal["last", "mean"] = "last"
    embedding_dim: PositiveInt = Field(
        default=64, description="Token embedding size when the input is text."
    )


class TransformerModel(_Strict):
    """A transformer encoder classifier/regressor over token ids."""

    type: Literal["transformer"] = "transformer"
    d_model: PositiveInt = 64
    nhead: PositiveInt = 4
    num_layers: PositiveInt = 2
    dim_feedforward: PositiveInt = 128
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    pooling: Literal["mean", "cls"] = "mean"

    @model_validator(mode="after")
    def _heads_divide(self) -> TransformerModel:
        if self.d_model % self.nhead:
            fits = [
                n for n in range(1, min(self.d_model, 16) + 1) if not self.d_model % n
            ]
            raise _SpecValueError(
                f"d_model ({self.d_model}) must be divisible by nhead ({self.nhead})",
                field="nhead",
                hint=f"use an nhead that divides {self.d_model}, e.g. one of "
                + ", ".join(map(str, fits)),
            )
        return self


_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class ModuleModel(_Strict):
    """Your own ``torch.nn.Module``: ``module: pkg.mod:factory`` plus kwargs.

    The factory is called as ``factory(input_dim=..., num_outputs=..., **params)``
    (the two keywords only if it accepts them) and must return an ``nn.Module``.
    """

    module: str = Field(description="Import path 'package.module:factory'.")
    params: dict[str, Any] = Field(default_factory=dict)
    path: str | None = Field(
        default=None,
        description="Directory added to sys.path to import the module "
        "(default: the spec file's directory).",
    )

    @field_validator("module")
    @classmethod
    def _import_path(cls, v: str) -> str:
        if not _IMPORT_PATH.match(v):
            raise _SpecValueError(
                f"{v!r} is not of the form 'package.module:factory'",
                hint="name the module and the function that builds the network, "
                "e.g. `module: mynets.mlp:build` for def build() in mynets/mlp.py",
            )
        return v

    @property
    def type(self) -> str:
        return "module"


class ScriptModel(_Strict):
    """Bring your own training script, run under the cloud job contract.

    The script reads SageMaker-style ``SM_*`` variables (and Vertex ``AIP_*``),
    receives ``hyperparameters`` as ``--name value`` arguments, and writes its
    model to ``SM_MODEL_DIR``. A ``requirements.txt`` next to it is installed.
    """

    script: str = Field(description="Path of the entry script.")
    hyperparameters: dict[str, str | int | float | bool] = Field(default_factory=dict)
    source_dir: str | None = Field(
        default=None,
        description="Directory shipped with the script (default: its own).",
    )

    @property
    def type(self) -> str:
        return "script"


def _model_tag(value: Any) -> str | None:
    if isinstance(value, Mapping):
        if "module" in value:
            return "module"
        if "script" in value:
            return "script"
        tag = value.get("type")
        return tag if isinstance(tag, str) else None
    return getattr(value, "type", None)


ModelSpec = Annotated[
    Annotated[MLPModel, Tag("mlp")]
    | Annotated[CNNModel, Tag("cnn")]
    | Annotated[RNNModel, Tag("rnn")]
    | Annotated[TransformerModel, Tag("transformer")]
    | Annotated[ModuleModel, Tag("module")]
    | Annotated[ScriptModel, Tag("script")],
    Discriminator(
        _model_tag,
        custom_error_type="model_kind",
        custom_error_message="expected `type: mlp|cnn|rnn|transformer`, "
        "`module: pkg.mod:factory` or `script: train.py`",
    ),
]

# ---------------------------------------------------------------------- data


def is_uri(path: str) -> bool:
    return path.startswith(_URI_SCHEMES)


class SplitSpec(_Strict):
    """Seeded train/validation/test split of ``data.train`` (when not given)."""

    validation: float = Field(default=0.1, ge=0.0, lt=0.5)
    test: float = Field(default=0.2, ge=0.0, lt=0.5)
    seed: int = 0
    stratify: bool = True


class TextSpec(_Strict):
    """Tokenise a text column into word ids (vocabulary saved with the model)."""

    column: str
    max_length: PositiveInt = 64
    vocab_size: PositiveInt = 10000
    min_freq: PositiveInt = 1
    lowercase: bool = True


class DataSpec(_Strict):
    """Where the data is and how to turn it into tensors."""

    train: str = Field(description="File or directory (or URI) of training data.")
    validation: str | None = None
    test: str | None = None
    format: Literal["auto", "csv", "npz", "parquet", "images"] = "auto"
    target: str | None = Field(
        default=None,
        description="Label column (csv/parquet; default: the last column) or "
        "array key (npz; default 'y').",
    )
    features: list[str] | None = Field(
        default=None, description="Feature columns (default: all but target/group)."
    )
    group_column: str | None = Field(
        default=None, description="Column for per-group metrics (bias check)."
    )
    text: TextSpec | None = None
    normalize: Literal["standard", "minmax", "none"] = "standard"
    image_size: tuple[PositiveInt, PositiveInt] | None = None
    grayscale: bool = False
    split: SplitSpec = SplitSpec()

    @field_validator("train", "validation", "test")
    @classmethod
    def _local_path_exists(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None or is_uri(v):
            return v
        if info.context and not info.context.get("check_paths", True):
            return v  # reloading a saved spec: the data may be long gone
        if not v:
            raise _SpecValueError(
                "must not be empty", hint="give a file, directory or s3://, gs:// URI"
            )
        if not Path(v).expanduser().exists():
            raise _SpecValueError(
                f"no such file or directory: {v}",
                hint="fix the path (relative paths are read from the spec file's "
                "folder) or use a URI such as s3://bucket/train.csv",
            )
        return v

    @model_validator(mode="after")
    def _columns_apart(self) -> DataSpec:
        features = self.features or []
        seen: set[str] = set()
        for name in features:
            if name in seen:
                raise _SpecValueError(
                    f"lists column {name!r} twice",
                    field="features",
                    hint="list each feature column once",
                )
            seen.add(name)
        if self.target is not None and self.target in seen:
            raise _SpecValueError(
                f"lists the target column {self.target!r}: the model would be "
                "given the label it has to predict",
                field="features",
                hint=f"remove {self.target!r} from data.features",
            )
        if self.target is not None and self.group_column == self.target:
            raise _SpecValueError(
                f"is the target column {self.target!r}",
                field="group_column",
                hint="name the column that holds the groups (e.g. region), "
                "not the label",
            )
        if self.text is not None and self.text.column == self.target:
            raise _SpecValueError(
                f"is the target column {self.target!r}",
                field="text.column",
                hint="name the column that holds the text, not the label",
            )
        return self


# --------------------------------------------------------------------- train


class OptimizerSpec(_Strict):
    name: Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"
    lr: PositiveFloat = 1e-3
    weight_decay: NonNegativeFloat = 0.0
    momentum: NonNegativeFloat = 0.9


class SchedulerSpec(_Strict):
    name: Literal["none", "step", "cosine", "plateau", "exponential"] = "none"
    step_size: PositiveInt = 10
    gamma: PositiveFloat = 0.1
    patience: PositiveInt = 5
    warmup_epochs: NonNegativeInt = 0


class EarlyStoppingSpec(_Strict):
    patience: PositiveInt = 10
    min_delta: NonNegativeFloat = 0.0
    monitor: Literal["val_loss", "val_metric"] = "val_loss"
    restore_best: bool = True


class CheckpointSpec(_Strict):
    enabled: bool = True
    every_epochs: PositiveInt = 1
    keep: PositiveInt = 2


class TrainSpec(_Strict):
    epochs: PositiveInt = 10
    batch_size: PositiveInt = 32
    optimizer: OptimizerSpec = OptimizerSpec()
    loss: Literal["auto", "cross_entropy", "mse", "mae", "huber"] = "auto"
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=1.0)
    scheduler: SchedulerSpec = SchedulerSpec()
    early_stopping: EarlyStoppingSpec | None = None
    grad_clip: PositiveFloat | None = None
    checkpoint: CheckpointSpec = CheckpointSpec()
    seed: int = 0
    deterministic: bool = True


# ----------------------------------------------------------------- resources


@lru_cache(maxsize=1)
def _catalog_rows() -> tuple[dict[str, str], ...]:
    text = (
        resources.files("cloudnn")
        .joinpath("data/accelerator_catalog.csv")
        .read_text(encoding="utf-8")
    )
    return tuple(csv.DictReader(text.splitlines()))


@lru_cache(maxsize=1)
def known_accelerators() -> dict[str, str]:
    """Upper-cased accelerator name -> canonical name, from the price catalog."""
    names = {r["accelerator"] for r in _catalog_rows() if r["accelerator"] != "none"}
    return {n.upper(): n for n in sorted(names)}


def parse_accelerator(value: str | None) -> tuple[str, int] | None:
    """``"A100:8"`` -> ``("A100", 8)``; ``None``/``"none"``/``"cpu"`` -> None."""
    if value is None:
        return None
    text = str(value).strip()
    if text.lower() in ("", "none", "cpu"):
        return None
    name, _, count_text = text.partition(":")
    canonical = known_accelerators().get(name.strip().upper())
    if canonical is None:
        close = difflib.get_close_matches(
            name.upper(), list(known_accelerators()), n=1, cutoff=0.5
        )
        maybe = f" (did you mean {known_accelerators()[close[0]]}?)" if close else ""
        raise _SpecValueError(
            f"unknown accelerator {name!r}{maybe}; known: "
            + ", ".join(known_accelerators().values()),
            hint="use NAME or NAME:COUNT with a listed name, e.g. 'T4:1', "
            "or 'none' for CPU",
        )
    if not count_text:
        return canonical, 1
    if not count_text.isdigit() or int(count_text) < 1:
        raise _SpecValueError(
            f"accelerator count {count_text!r} must be a positive integer",
            hint=f"use {canonical}:1 or more GPUs per node, e.g. '{canonical}:1'",
        )
    return canonical, int(count_text)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


#: longest max_runtime accepted (the clouds' own limits are far lower)
_MAX_DURATION = 365 * 86400

_DURATION_HINT = "use seconds (3600) or a number with s, m, h or d: '90m', '2h', '1d'"


def _parse_duration(value: int | float | str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _SpecValueError(
            f"expected a duration like 3600, '90m' or '2h', got {value!r}",
            hint=_DURATION_HINT,
        )
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
    else:
        m = _DURATION.match(value)
        if not m:
            raise _SpecValueError(
                f"{value!r} is not a duration like 3600, '90m' or '2h'",
                hint=_DURATION_HINT,
            )
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    if seconds <= 0:
        raise _SpecValueError("must be positive", hint=_DURATION_HINT)
    if not math.isfinite(seconds) or seconds > _MAX_DURATION:
        shown = repr(value) if len(repr(value)) <= 24 else repr(value)[:20] + "..."
        raise _SpecValueError(
            f"{shown} is not a usable duration (at most {_MAX_DURATION // 86400} days)",
            hint=_DURATION_HINT,
        )
    return int(seconds)


class ResourcesSpec(_Strict):
    """Cloud-neutral compute request, resolved per provider at plan time."""

    accelerator: str | None = Field(
        default=None,
        description="'NAME:COUNT' per node, e.g. 'T4:1', 'A100:8'; none = CPU.",
    )
    nodes: PositiveInt = 1
    processes_per_node: PositiveInt | Literal["auto"] = Field(
        default=1, description="Training processes per node ('auto': one per GPU)."
    )
    spot: bool = False
    max_runtime: int | None = Field(
        default=None, description="Seconds, or a duration string such as '2h'."
    )
    max_cost_usd: PositiveFloat | None = None

    @field_validator("accelerator", mode="before")
    @classmethod
    def _accelerator(cls, v: Any) -> str | None:
        if v is None:
            return None
        if not isinstance(v, str):
            raise _SpecValueError(
                f"expected a string like 'T4:1' or 'none', got {v!r}",
                hint="quote it as NAME:COUNT, e.g. accelerator: 'T4:1'",
            )
        parsed = parse_accelerator(v)
        return None if parsed is None else f"{parsed[0]}:{parsed[1]}"

    @field_validator("max_runtime", mode="before")
    @classmethod
    def _runtime(cls, v: Any) -> int | None:
        return None if v is None else _parse_duration(v)

    @property
    def accelerator_name(self) -> str | None:
        parsed = parse_accelerator(self.accelerator)
        return parsed[0] if parsed else None

    @property
    def accelerator_count(self) -> int:
        parsed = parse_accelerator(self.accelerator)
        return parsed[1] if parsed else 0


# -------------------------------------------------------------------- deploy


class AutoscalingSpec(_Strict):
    min_replicas: PositiveInt = 1
    max_replicas: PositiveInt = 1
    target_requests_per_replica: PositiveInt = Field(
        default=100, description="Requests per minute per replica to scale on."
    )

    @model_validator(mode="after")
    def _order(self) -> AutoscalingSpec:
        if self.max_replicas < self.min_replicas:
            raise _SpecValueError(
                f"max_replicas ({self.max_replicas}) must be >= min_replicas "
                f"({self.min_replicas})",
                field="max_replicas",
                hint=f"raise max_replicas to at least {self.min_replicas} "
                "or lower min_replicas",
            )
        return self


class BatchingSpec(_Strict):
    max_batch_size: PositiveInt = 32
    max_wait_ms: NonNegativeFloat = 2.0


class DeploySpec(_Strict):
    accelerator: str | None = None
    instance_type: str | None = None
    replicas: PositiveInt = 1
    autoscaling: AutoscalingSpec | None = None
    auth: Literal["token", "none"] = "token"
    batching: BatchingSpec | None = None
    workers: PositiveInt = 1
    runtime: Literal["torch", "torchscript", "onnx"] = "torch"
    host: str = "127.0.0.1"
    port: int | None = Field(default=None, ge=0, le=65535)
    max_request_bytes: PositiveInt = 1_048_576

    _check_accelerator = field_validator("accelerator", mode="before")(
        ResourcesSpec._accelerator.__func__  # type: ignore[attr-defined]
    )


# ----------------------------------------------------------------- providers

_AWS_REGION = r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d$"
_ROLE_ARN = r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9_+=,.@/-]+$"
_S3_BUCKET = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
_GCS_BUCKET = r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$"
_GCP_PROJECT = r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$"
_GCP_REGION = r"^[a-z]+-[a-z]+\d+$"
_UUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


class AWSOptions(_Strict):
    """SageMaker options (validated here, without boto3)."""

    region: str = Field(default="us-east-1", pattern=_AWS_REGION)
    role_arn: str | None = Field(default=None, pattern=_ROLE_ARN)
    bucket: str | None = Field(default=None, pattern=_S3_BUCKET)
    prefix: str = "cloudnn"
    instance_type: str | None = Field(
        default=None, pattern=r"^ml\.[a-z0-9]+\.[a-z0-9]+$"
    )
    image_uri: str | None = None
    subnets: list[str] = Field(default_factory=list)
    security_group_ids: list[str] = Field(default_factory=list)
    kms_key_id: str | None = Field(
        default=None, description="KMS key for the output, volumes and endpoint."
    )
    volume_size_gb: PositiveInt = Field(
        default=30, description="Training instance storage (GB)."
    )
    network_isolation: bool = Field(
        default=False, description="No outbound network from the job's container."
    )
    tags: dict[str, str] = Field(default_factory=dict)


class GCPOptions(_Strict):
    """Vertex AI options (validated here, without google-cloud-aiplatform)."""

    project: str | None = Field(default=None, pattern=_GCP_PROJECT)
    region: str = Field(default="us-central1", pattern=_GCP_REGION)
    bucket: str | None = Field(default=None, pattern=_GCS_BUCKET)
    prefix: str = "cloudnn"
    service_account: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+$")
    machine_type: str | None = None
    image_uri: str | None = None
    network: str | None = Field(
        default=None,
        description="VPC network: projects/<number>/global/networks/<name>.",
    )
    kms_key_name: str | None = Field(
        default=None, description="CMEK key for the job, model and endpoint."
    )
    boot_disk_size_gb: PositiveInt = 100
    labels: dict[str, str] = Field(default_factory=dict)


class AzureOptions(_Strict):
    """Azure ML options (validated here, without azure-ai-ml)."""

    subscription_id: str | None = Field(default=None, pattern=_UUID)
    resource_group: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9_.()-]{1,90}$"
    )
    workspace: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{2,32}$"
    )
    location: str | None = None
    compute: str | None = Field(default=None, pattern=r"^[A-Za-z][A-Za-z0-9-]{1,31}$")
    instance_type: str | None = None
    environment: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)


class LocalOptions(_Strict):
    """Local PyTorch backend options."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    install_requirements: bool = Field(
        default=True, description="pip-install a script's requirements.txt."
    )


class ProvidersSpec(_Strict):
    aws: AWSOptions | None = None
    gcp: GCPOptions | None = None
    azure: AzureOptions | None = None
    local: LocalOptions = LocalOptions()


# ---------------------------------------------------------------------- spec


class Spec(_Strict):
    """One neural-network job: model, data, training, resources, deployment."""

    version: Literal[1] = Field(default=1, description="Spec format version.")
    name: str = Field(
        pattern=r"^[a-z][a-z0-9-]{0,39}$",
        description="Lowercase letters, digits and '-', <= 40 chars "
        "(it becomes part of cloud resource names).",
    )
    description: str = ""
    task: Literal["classification", "regression"]
    model: ModelSpec
    data: DataSpec
    train: TrainSpec = TrainSpec()
    resources: ResourcesSpec = ResourcesSpec()
    deploy: DeploySpec = DeploySpec()
    providers: ProvidersSpec = ProvidersSpec()
    tags: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _finite_numbers(cls, raw: Any) -> Any:
        # also reaches the free-form mappings (model.params, hyperparameters)
        # that allow_inf_nan cannot: JSON has no inf/nan, spec.json would say null
        where = _non_finite_path(raw)
        if where is not None:
            path, value = where
            raise _SpecValueError(
                f"must be a finite number, got {value}",
                field=path,
                hint="use an ordinary number (YAML's .inf and .nan are not "
                "allowed in a spec)",
            )
        return raw

    @model_validator(mode="after")
    def _cross_checks(self) -> Spec:
        if self.resources.spot and not self.train.checkpoint.enabled:
            raise _SpecValueError(
                "spot training needs train.checkpoint.enabled "
                "(a preempted job resumes only from a checkpoint)",
                field="resources.spot",
                hint="set train.checkpoint.enabled: true, or resources.spot: false",
            )
        if self.model.type == "transformer" and self.data.text is None:
            raise _SpecValueError(
                "model.type transformer needs data.text (token ids)",
                field="data.text",
                hint="add `text: {column: <your text column>}` under data:",
            )
        loss = self.train.loss
        if self.task == "classification" and loss in _REGRESSION_LOSSES:
            raise _SpecValueError(
                f"{loss!r} is a regression loss, but task is classification",
                field="train.loss",
                hint="use loss: cross_entropy (or auto) for classification, "
                "or set task: regression",
            )
        if self.task == "regression" and loss == "cross_entropy":
            raise _SpecValueError(
                "'cross_entropy' is a classification loss, but task is regression",
                field="train.loss",
                hint="use loss: mse, mae or huber (or auto) for regression, "
                "or set task: classification",
            )
        if self.task == "regression" and self.train.label_smoothing:
            raise _SpecValueError(
                "applies to classification only",
                field="train.label_smoothing",
                hint="remove train.label_smoothing, or set task: classification",
            )
        return self

    def spec_hash(self) -> str:
        """Short content hash, stable across runs, used for idempotent names."""
        canonical = json.dumps(
            self.model_dump(mode="json"), sort_keys=True, separators=(",", ":")
        )
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(
            self.model_dump(mode="json", exclude_defaults=True), sort_keys=False
        )


_REGRESSION_LOSSES = ("mse", "mae", "huber")


def _non_finite_path(value: Any, path: str = "") -> tuple[str, float] | None:
    """(dotted path, value) of the first NaN/infinite float in ``value``."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (path or "<spec>", value)
    if isinstance(value, Mapping):
        for key, item in value.items():
            found = _non_finite_path(item, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = _non_finite_path(item, f"{path}[{i}]")
            if found is not None:
                return found
    return None


# -------------------------------------------------------------------- loading

_PATH_FIELDS = (("data", "train"), ("data", "validation"), ("data", "test"))


def _resolve_paths(raw: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """Make relative local paths absolute against the spec file's directory."""

    def fix(value: Any) -> Any:
        if isinstance(value, str) and value and not is_uri(value):
            p = Path(value).expanduser()
            return str(p if p.is_absolute() else (base_dir / p).resolve())
        return value

    out = dict(raw)
    data = out.get("data")
    if isinstance(data, dict):
        out["data"] = {
            k: fix(v) if k in ("train", "validation", "test") else v
            for k, v in data.items()
        }
    model = out.get("model")
    if isinstance(model, dict):
        model = dict(model)
        for key in ("script", "source_dir", "path"):
            if key in model:
                model[key] = fix(model[key])
        if "module" in model and "path" not in model:
            model["path"] = str(base_dir.resolve())
        out["model"] = model
    return out


_MODEL_TAGS = ("mlp", "cnn", "rnn", "transformer", "module", "script")
_FIELD_PREFIX = re.compile(r"^([a-z_]+(?:\.[a-z_]+)+): (.*)$")


# pydantic's names for schema steps that are not keys the user wrote: union
# member tags ("constrained-int", "literal['auto']", "function-after[...]",
# "list[int]", ...) and the bare type names it uses for str | int | ... unions
_INTERNAL_LOC = re.compile(
    r"^(?:[a-z][a-z0-9_-]*\[.*\]|constrained-[a-z]+|function-[a-z]+.*"
    r"|definition-ref|json-or-python|lax-or-strict|nullable|default)$"
)
_TYPE_TAGS = frozenset(
    {"str", "int", "float", "bool", "bytes", "none", "list", "dict", "tuple", "set"}
)


def _unwrap(ann: Any) -> Any:
    import typing

    while typing.get_origin(ann) is Annotated:
        ann = typing.get_args(ann)[0]
    return ann


def _union_members(ann: Any) -> list[Any] | None:
    """The members of a union annotation (None excluded), or None if not a union."""
    import types
    import typing

    if typing.get_origin(ann) not in (typing.Union, types.UnionType):
        return None
    return [a for a in typing.get_args(ann) if a is not type(None)]


def _member_for_tag(members: list[Any], item: str) -> Any:
    """The union member a pydantic loc tag stands for (Any if unsure)."""
    import typing

    for member in members:
        if typing.get_origin(member) is Annotated:
            for meta in typing.get_args(member)[1:]:
                if isinstance(meta, Tag) and meta.tag == item:
                    return _unwrap(member)
        base = _unwrap(member)
        if getattr(base, "__name__", None) == item:
            return base
    return Any


def _loc_step(ann: Any, item: str) -> tuple[bool, Any]:
    """(is it a key the user wrote, the annotation below it) for one loc item."""
    import typing

    ann = _unwrap(ann)
    members = _union_members(ann)
    if members is not None:
        if len(members) == 1:
            return _loc_step(members[0], item)  # `X | None`: no tag in the loc
        tagged = _member_for_tag(members, item)
        if tagged is not Any or item in _TYPE_TAGS or _INTERNAL_LOC.match(item):
            return False, tagged
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        field = ann.model_fields.get(item)
        if field is None:
            # a model validator's step, or a key the user wrote in error
            return not _INTERNAL_LOC.match(item), Any
        return True, field.annotation
    if typing.get_origin(ann) is dict:
        args = typing.get_args(ann)
        return True, args[1] if len(args) == 2 else Any
    # where our walk and pydantic's schema part ways, drop only what is
    # unmistakably internal
    return not _INTERNAL_LOC.match(item), Any


def _index_step(ann: Any, index: int) -> Any:
    import typing

    ann = _unwrap(ann)
    members = _union_members(ann)
    if members is not None and len(members) == 1:
        ann = _unwrap(members[0])
    args = [a for a in typing.get_args(ann) if a is not Ellipsis]
    if typing.get_origin(ann) is tuple and len(args) > 1:
        return args[index] if index < len(args) else Any
    return args[0] if args else Any


def _loc_to_path(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as the dotted path the user wrote.

    pydantic inserts schema steps into ``loc`` (``constrained-int``,
    ``literal['auto']``, ``str`` for a ``str | int`` union, the model kind
    ``mlp``); they are dropped by walking the Spec's annotations alongside,
    so a mapping key that happens to be called ``int`` is kept.
    """
    parts: list[str] = []
    ann: Any = Spec
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
            ann = _index_step(ann, item)
            continue
        keep, ann = _loc_step(ann, str(item))
        if keep:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "<spec>"


def _allowed_keys(loc: tuple[int | str, ...], raw: Any) -> list[str]:
    """Field names allowed where an unknown key ``loc[-1]`` was found."""
    model: Any = Spec
    node: Any = raw
    for item in loc[:-1]:
        if isinstance(item, int):
            node = node[item] if isinstance(node, list) else None
            continue
        fields = getattr(model, "model_fields", None)
        if fields and item in fields:
            ann = fields[item].annotation
            node = node.get(item) if isinstance(node, dict) else None
            model = _first_model(ann, node)
        elif item in ("mlp", "cnn", "rnn", "transformer", "module", "script"):
            model = {
                "mlp": MLPModel,
                "cnn": CNNModel,
                "rnn": RNNModel,
                "transformer": TransformerModel,
                "module": ModuleModel,
                "script": ScriptModel,
            }[item]
    fields = getattr(model, "model_fields", None)
    return sorted(fields) if fields else []


def _first_model(ann: Any, node: Any) -> Any:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in getattr(ann, "__args__", ()):
        found = _first_model(arg, node)
        if found is not None:
            return found
    return None


_HINTS = {
    "finite_number": "use an ordinary number (YAML's .inf and .nan are not "
    "allowed in a spec)",
    "int_parsing": "use a whole number",
    "int_type": "use a whole number",
    "int_from_float": "use a whole number, without a fraction",
    "float_parsing": "use a number",
    "float_type": "use a number",
    "bool_parsing": "use true or false",
    "bool_type": "use true or false",
    "string_type": "use text (quote it if YAML reads it as something else)",
    "list_type": "use a YAML list, e.g. [64, 32]",
    "tuple_type": "use a YAML list, e.g. [1, 28, 28]",
    "too_long": "remove the extra items",
    "too_short": "add the missing items",
}

# human form of each `pattern=` field, keyed by path (list indices dropped)
_PATTERN_HINTS = {
    "name": "lowercase letters, digits and '-', starting with a letter, "
    "at most 40 characters",
    "providers.aws.region": "an AWS region such as 'us-east-1' or 'eu-west-2'",
    "providers.aws.role_arn": "a full IAM role ARN: "
    "'arn:aws:iam::<12-digit account id>:role/<role name>'",
    "providers.aws.bucket": "an S3 bucket name: 3-63 lowercase letters, digits, "
    "'.' and '-' (no 's3://', no '_')",
    "providers.aws.instance_type": "a SageMaker instance type such as 'ml.g5.xlarge'",
    "providers.gcp.project": "a GCP project id: 6-30 lowercase letters, digits "
    "and '-', starting with a letter",
    "providers.gcp.region": "a GCP region such as 'us-central1'",
    "providers.gcp.bucket": "a GCS bucket name (no 'gs://'): lowercase letters, "
    "digits, '.', '_' and '-'",
    "providers.gcp.service_account": "a service account email, "
    "e.g. 'trainer@my-project.iam.gserviceaccount.com'",
    "providers.azure.subscription_id": "a subscription UUID such as "
    "'00000000-0000-0000-0000-000000000000'",
    "providers.azure.resource_group": "1-90 letters, digits and '_.()-'",
    "providers.azure.workspace": "3-33 letters, digits, '_' and '-', "
    "starting with a letter or digit",
    "providers.azure.compute": "2-32 letters, digits and '-', starting with a letter",
}

_BOUNDS = (
    ("gt", "greater than"),
    ("ge", "at least"),
    ("lt", "less than"),
    ("le", "at most"),
)


def _expected_literals(error: Mapping[str, Any]) -> list[str]:
    expected = str((error.get("ctx") or {}).get("expected", ""))
    return re.findall(r"'([^']*)'", expected) or re.findall(r"[\w.-]+", expected)


def _model_kind_error(value: Any) -> tuple[str, str, str]:
    """(path, reason, hint) for a model that matches none of the model kinds."""
    kinds = "mlp, cnn, rnn, transformer"
    if not isinstance(value, Mapping):
        return (
            "model",
            f"expected a mapping, got {type(value).__name__}",
            f"indent `type:` ({kinds}), `module: pkg.mod:factory` or "
            "`script: train.py` under `model:`",
        )
    tag = value.get("type")
    if tag is None:
        return (
            "model",
            "needs one of `type`, `module` or `script`",
            f"add `type:` ({kinds}), `module: pkg.mod:factory` for your own "
            "nn.Module, or `script: train.py` for your own script",
        )
    close = difflib.get_close_matches(str(tag), kinds.split(", "), n=1)
    maybe = f"did you mean {close[0]!r}? " if close else ""
    return (
        "model.type",
        f"unknown model type {tag!r}",
        f"{maybe}use one of {kinds}; for your own network use "
        "`module: pkg.mod:factory` instead of type",
    )


def _reason_and_hint(
    error: Mapping[str, Any], loc: tuple[int | str, ...], path: str, raw: Any
) -> tuple[str, str, str]:
    """(path, reason, hint) for one pydantic error: readable, with a fix."""
    etype = error["type"]
    ctx = error.get("ctx") or {}
    value = error.get("input")
    msg = error["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    msg = msg[0].lower() + msg[1:] if msg else msg
    hinted = ctx.get("error")
    if isinstance(hinted, _SpecValueError):
        if hinted.field:
            path = hinted.field if path == "<spec>" else f"{path}.{hinted.field}"
        return path, msg, hinted.hint
    if path == "<spec>" and (m := _FIELD_PREFIX.match(msg)):
        # cross-field checks name their field in the message itself
        return m.group(1), m.group(2), "fix the value (see `cloudnn schema`)"
    if etype == "extra_forbidden":
        allowed = _allowed_keys(loc, raw)
        key = str(loc[-1])
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = (
            f"rename it to `{close[0]}`"
            if close
            else "remove it; allowed keys here: " + ", ".join(allowed)
        )
        return path, f"unknown key {key!r}", hint
    if etype == "missing":
        if loc and isinstance(loc[-1], int):
            # a short tuple: pydantic reports the first absent position
            parent = _loc_to_path(loc[:-1])
            return (
                parent,
                f"too few items: item [{loc[-1]}] is missing",
                _HINTS["too_short"],
            )
        parent, _, key = path.rpartition(".")
        where = f" under `{parent}:`" if parent else ""
        hint = f"add `{key}:`{where} (see `cloudnn schema`)"
        return path, "required field is missing", hint
    if etype == "model_kind":
        return _model_kind_error(value)
    if path == "version" and etype == "literal_error":
        return (
            path,
            f"unsupported spec version {value!r}; this cloudnn reads version "
            f"{SPEC_VERSION}",
            f"set `version: {SPEC_VERSION}`, or upgrade cloudnn to read newer specs",
        )
    if etype == "literal_error":
        choices = _expected_literals(error)
        close = difflib.get_close_matches(str(value), choices, n=1)
        maybe = f"did you mean {close[0]!r}? " if close else ""
        return path, msg, f"{maybe}use one of: " + ", ".join(choices)
    if etype == "string_pattern_mismatch":
        pattern = ctx.get("pattern", "")
        what = _PATTERN_HINTS.get(re.sub(r"\[\d+\]", "", path))
        reason = f"{value!r} does not match the required format {pattern}"
        if path == "name" and isinstance(value, str):
            fixed = re.sub(r"[^a-z0-9-]+", "-", value.lower()).strip("-")[:40]
            if re.fullmatch(r"[a-z][a-z0-9-]{0,39}", fixed):
                return path, reason, f"use {fixed!r}: {what}"
        return path, reason, f"use {what}" if what else "fix the value's format"
    for key, words in _BOUNDS:
        if key in ctx and etype.startswith(("greater_than", "less_than")):
            return path, msg, f"use a value {words} {ctx[key]}"
    if etype in ("dict_type", "model_type", "model_attributes_type"):
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        return (
            path,
            f"expected a mapping, got {type(value).__name__} {shown}",
            f"indent `key: value` lines under `{path}:`",
        )
    return path, msg, _HINTS.get(etype, "fix the value (see `cloudnn schema`)")


def _error_from_validation(
    exc: ValidationError, raw: Any, source: str = ""
) -> SpecError:
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = tuple(first["loc"])
    path, msg, hint = _reason_and_hint(first, loc, _loc_to_path(loc), raw)
    if len(errors) > 1:
        msg += f" (+{len(errors) - 1} more; --debug lists all)"
    err = SpecError(path, msg, hint=hint, source=source)
    err.all_errors = errors  # type: ignore[attr-defined]
    return err


def spec_from_dict(
    raw: Any, *, base_dir: str | os.PathLike[str] | None = None, source: str = ""
) -> Spec:
    """Validate a plain mapping into a :class:`Spec`, raising :class:`SpecError`."""
    if not isinstance(raw, dict):
        got = "an empty file" if raw is None else type(raw).__name__
        raise SpecError(
            "<spec>",
            f"expected a mapping at the top level, got {got}",
            hint="start the file with `name: ...`, `task: ...`, `model: ...`",
            source=source,
        )
    if base_dir is not None:
        raw = _resolve_paths(raw, Path(base_dir))
    try:
        return Spec.model_validate(raw)
    except ValidationError as exc:
        raise _error_from_validation(exc, raw, source) from exc


def load_spec(path: str | os.PathLike[str]) -> Spec:
    """Read a YAML (or JSON) spec file; relative paths resolve against its folder."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise SpecError(
            str(path), "no such spec file", hint="pass the path of a .yaml spec file"
        )
    text = _read_text(p, str(path))
    try:
        raw = yaml.load(text, Loader=_unique_key_loader())  # noqa: S506 - a SafeLoader
    except _DuplicateKeyError as exc:
        raise SpecError(
            f"{p.name}:{exc.line}:{exc.column}",
            f"duplicate key {exc.key!r} (first at line {exc.first_line})",
            hint="remove one of the two: YAML would silently keep only the last",
            source=str(p),
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{p.name}:{mark.line + 1}:{mark.column + 1}" if mark else p.name
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        hint = "fix the YAML syntax at that line (indentation, ':' and quotes)"
        if "'\\t'" in problem:
            hint = "replace the tab with spaces: YAML indents with spaces only"
        raise SpecError(
            where,
            f"invalid YAML: {problem}",
            hint=hint,
            source=str(p),
        ) from exc
    return spec_from_dict(raw, base_dir=p.parent, source=str(p))


def _read_text(p: Path, shown: str) -> str:
    """The spec file's text; a file that is not UTF-8 is a SpecError naming it."""
    data = p.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
            what = "it is UTF-16 text: "
            hint = f"re-save it as UTF-8, e.g. `iconv -f UTF-16 -t UTF-8 {p.name}`"
        else:
            what = ""
            hint = "pass a YAML spec file saved as UTF-8 text"
        raise SpecError(
            shown,
            f"not a UTF-8 text file ({what}byte 0x{data[exc.start]:02x} at "
            f"offset {exc.start})",
            hint=hint,
            source=str(p),
        ) from None


class _DuplicateKeyError(Exception):
    def __init__(self, key: Any, line: int, column: int, first_line: int) -> None:
        super().__init__(f"duplicate key {key!r}")
        self.key, self.line, self.column = key, line, column
        self.first_line = first_line


@lru_cache(maxsize=1)
def _unique_key_loader() -> type[Any]:
    """A yaml.SafeLoader that refuses a key repeated in one mapping.

    YAML says keys are unique; PyYAML silently keeps the last, so a second
    ``epochs:`` would override the first without a word. Keys merged in with
    ``<<:`` may still be overridden, as YAML intends.
    """
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            if isinstance(node, yaml.MappingNode):
                first_seen: dict[Any, int] = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue
                    key = self.construct_object(key_node, deep=True)
                    try:
                        hash(key)
                    except TypeError:
                        continue  # unhashable: PyYAML reports it itself
                    mark = key_node.start_mark
                    if key in first_seen:
                        raise _DuplicateKeyError(
                            key, mark.line + 1, mark.column + 1, first_seen[key] + 1
                        )
                    first_seen[key] = mark.line
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def saved_spec(text: str) -> Spec:
    """Reload a spec saved with a run (JSON) without requiring its data files."""
    return Spec.model_validate_json(text, context={"check_paths": False})


# ------------------------------------------------------------------ reference


def _type_text(ann: Any) -> str:
    import types
    import typing

    origin = typing.get_origin(ann)
    args = typing.get_args(ann)
    if ann is type(None):
        return "null"
    if origin is Literal:
        return " \\| ".join(
            f'`"{a}"`' if isinstance(a, str) else f"`{a}`" for a in args
        )
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_text(a) for a in args)
    if origin is Annotated:
        return _type_text(args[0])
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return f"[{ann.__name__}](#{ann.__name__.lower()})"
    if origin in (list, tuple, dict):
        inner = ", ".join(_type_text(a) for a in args if a is not Ellipsis)
        return f"{origin.__name__}[{inner}]"
    return str(getattr(ann, "__name__", ann))


def _constraints_text(metadata: list[Any]) -> str:
    marks = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    parts = [
        f"{sym} {getattr(m, attr)}"
        for m in metadata
        for attr, sym in marks.items()
        if getattr(m, attr, None) is not None
    ]
    parts += [f"matches `{m.pattern}`" for m in metadata if getattr(m, "pattern", None)]
    return f" ({', '.join(parts)})" if parts else ""


def _models_in(ann: Any) -> list[type[BaseModel]]:
    import typing

    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [ann]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(ann):
        found += _models_in(arg)
    return found


def reference_markdown() -> str:
    """The spec reference (docs/spec.md), generated from the models themselves."""
    import json as _json

    lines = [
        "# Spec reference",
        "",
        "Generated from `cloudnn/spec.py` by `cloudnn schema --markdown`; do not",
        "edit by hand. Unknown keys are errors everywhere.",
    ]
    seen: list[type[BaseModel]] = []
    queue: list[type[BaseModel]] = [Spec]
    while queue:
        model = queue.pop(0)
        if model in seen:
            continue
        seen.append(model)
        lines += ["", f"## {model.__name__}", ""]
        doc = (model.__doc__ or "").strip().splitlines()
        if doc:
            lines += [doc[0], ""]
        lines += ["| field | type | default | description |", "|---|---|---|---|"]
        for name, info in model.model_fields.items():
            if info.is_required():
                default = "**required**"
            elif info.default_factory is not None:
                default = f"`{_json.dumps(info.default_factory())}`"  # type: ignore[call-arg]
            elif isinstance(info.default, BaseModel):
                default = "defaults"
            else:
                default = f"`{_json.dumps(info.default)}`"
            desc = (info.description or "").replace("|", "\\|").replace("\n", " ")
            kind = _type_text(info.annotation) + _constraints_text(info.metadata)
            lines.append(f"| `{name}` | {kind} | {default} | {desc} |")
            queue += [m for m in _models_in(info.annotation) if m not in seen]
    return "\n".join(lines) + "\n"
