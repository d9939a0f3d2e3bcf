"""One view of the job's environment, whichever platform runs it.

``context()`` reads the variables that SageMaker, Vertex AI, Azure ML, torchrun
or cloudnn's local backend set, and returns a :class:`RuntimeContext`: where to
write the model, checkpoints and outputs, where each data channel lives, the
hyperparameters, and the process's place in a distributed job.
``local_job_env()`` is the other half of the contract: the local backend sets
the *same* variables, so a script written against any one cloud's conventions
runs unchanged locally.

Stdlib only: this module is imported in every job before anything heavy, and
by the local provider while planning, where torch must not load.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

__all__ = [
    "CHANNEL_SCHEME",
    "GCS_FUSE_ROOT_ENV",
    "PLATFORMS",
    "Platform",
    "RuntimeContext",
    "context",
    "channel_ref",
    "detect_platform",
    "gcs_fuse_path",
    "hyperparameter_args",
    "local_job_env",
    "resolve_data_path",
]

#: how a bundle's spec.json names data: ``channel://train/digits.csv`` is the
#: file ``digits.csv`` in channel ``train``; ``channel://train`` the channel
CHANNEL_SCHEME = "channel://"

Platform = Literal["sagemaker", "vertex", "azureml", "torchrun", "local"]
PLATFORMS: tuple[Platform, ...] = get_args(Platform)

# SageMaker: the toolkit honours SAGEMAKER_BASE_DIR in place of /opt/ml.
_SM_BASE = "/opt/ml"
# CheckpointConfig.LocalPath and TensorBoardOutputConfig.LocalPath defaults.
_SM_CHECKPOINTS = "checkpoints"
_SM_TENSORBOARD = ("output", "tensorboard")
# The v3 SDK's in-container driver exports SM_MASTER_PORT=7777.
_SM_MASTER_PORT = 7777
# SageMaker keeps its own settings in hyperparameters.json under these keys
# (sagemaker_program, sagemaker_submit_directory, ...); the toolkit strips them.
_SM_RESERVED_PREFIX = "sagemaker_"
# Variables only a SageMaker training container (toolkit or v3 driver) sets.
# Not a bare "SM_" prefix: other libraries use it (segmentation_models reads
# SM_FRAMEWORK).
_SM_MARKERS = (
    "SM_MODEL_DIR",
    "SM_CHANNELS",
    "SM_HOSTS",
    "SM_CURRENT_HOST",
    "SM_HPS",
    "SM_TRAINING_ENV",
    "SM_OUTPUT_DATA_DIR",
    "SM_INPUT_DIR",
    "TRAINING_JOB_NAME",  # set by the platform itself, even in BYO containers
    "TRAINING_JOB_ARN",
    "SAGEMAKER_BASE_DIR",  # the toolkit's "pretend /opt/ml is here" switch
)

# Vertex AI: data channels arrive as AIP_<X>_DATA_URI; cloudnn names them the
# way SageMaker channels are usually named.
_AIP_CHANNELS = {
    "train": "AIP_TRAINING_DATA_URI",
    "validation": "AIP_VALIDATION_DATA_URI",
    "test": "AIP_TEST_DATA_URI",
}
# Worker pool order is semantic: [0] chief (one replica), [1] workers,
# [2] parameter/reduction servers, [3] evaluator. Only 0 and 1 train.
_TF_POOLS = {
    "chief": "workerpool0",
    "master": "workerpool0",
    "worker": "workerpool1",
    "ps": "workerpool2",
    "evaluator": "workerpool3",
}

_DEFAULT_MASTER_ADDR = "127.0.0.1"
_DEFAULT_MASTER_PORT = 29500  # torch.distributed's customary default


@dataclass(frozen=True)
class RuntimeContext:
    """Where a job writes, what it reads, and its place in a distributed run.

    Path fields are local paths (Vertex ``gs://`` URIs become their ``/gcs/``
    FUSE mount); ``*_uri`` fields keep what the platform actually gave.
    ``rank`` is -1 for a Vertex task outside the training world (reduction
    server or evaluator pool).
    """

    platform: Platform
    model_dir: Path
    checkpoint_dir: Path
    output_dir: Path
    tensorboard_dir: Path
    channels: dict[str, str] = field(default_factory=dict)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    node_rank: int = 0
    num_nodes: int = 1
    master_addr: str = _DEFAULT_MASTER_ADDR
    master_port: int = _DEFAULT_MASTER_PORT
    num_gpus: int = 0
    hosts: tuple[str, ...] = ("localhost",)
    current_host: str = "localhost"
    run_id: str = ""
    model_uri: str = ""
    checkpoint_uri: str = ""
    output_uri: str = ""
    channel_uris: dict[str, str] = field(default_factory=dict)

    @property
    def is_main(self) -> bool:
        """True on global rank 0: the one process that writes the model."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        """True when more than one process takes part in training."""
        return self.world_size > 1

    def data_dir(self, channel: str) -> Path:
        """Local path of data ``channel``; KeyError names the channels there are."""
        try:
            return Path(self.channels[channel])
        except KeyError:
            have = ", ".join(sorted(self.channels)) or "none"
            raise KeyError(
                f"no data channel {channel!r} in this job (channels: {have})"
            ) from None


# -- small parsing helpers ----------------------------------------------------


#: where Cloud Storage FUSE mounts buckets; an emulator points it elsewhere
GCS_FUSE_ROOT_ENV = "CLOUDNN_GCSFUSE_ROOT"


def gcs_fuse_path(uri: str) -> str:
    """``gs://bucket/path`` -> ``/gcs/bucket/path``; anything else unchanged.

    Vertex AI mounts Cloud Storage with Cloud Storage FUSE at ``/gcs/<bucket>``
    in every custom training container (``$CLOUDNN_GCSFUSE_ROOT`` replaces
    ``/gcs``, for a local emulator of that mount).
    """
    if not uri.startswith("gs://"):
        return uri
    root = os.environ.get(GCS_FUSE_ROOT_ENV) or "/gcs"
    return root.rstrip("/") + "/" + uri[len("gs://") :]


def _decode(value: str) -> Any:
    """A hyperparameter value as SageMaker hands it over: JSON where it parses.

    ``True``/``False`` too, since that is how SageMaker (and
    :func:`hyperparameter_args`) write Python booleans.
    """
    try:
        return json.loads(value)
    except ValueError:
        pass
    return {"True": True, "False": False}.get(value, value)


def _hp_str(value: Any) -> str:
    """One hyperparameter as a string, the way SageMaker's toolkit writes it."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return str(value)  # bool -> "True"/"False", like the toolkit


def _int(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None


def _json(env: Mapping[str, str], name: str) -> Any:
    raw = env.get(name)
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise ValueError(f"{name} is not valid JSON: {raw[:200]!r}") from None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _host_port(entry: str) -> tuple[str, int | None]:
    """``"host:port"`` -> (host, port); a bare host has no port."""
    host, sep, port = entry.rpartition(":")
    if sep and port.isdigit():
        return host, int(port)
    return entry, None


def _parent_uri(uri: str) -> str:
    return uri.rstrip("/").rpartition("/")[0]


def _cwd(*parts: str) -> Path:
    return Path.cwd().joinpath(*parts)


# -- platform detection --------------------------------------------------------


def detect_platform(environ: Mapping[str, str] | None = None) -> Platform:
    """Which platform runs this process (see :func:`context` for precedence)."""
    env = os.environ if environ is None else environ
    return _detect(env, probe_files=environ is None)


def _detect(env: Mapping[str, str], *, probe_files: bool) -> Platform:
    # cloudnn's own marker wins: the local backend sets SM_* *and* AIP_* so
    # scripts for either cloud run, and must still be seen as local.
    marker = env.get("CLOUDNN_PLATFORM")
    if marker:
        if marker not in PLATFORMS:
            raise ValueError(
                f"CLOUDNN_PLATFORM={marker!r}: expected one of {', '.join(PLATFORMS)}"
            )
        return marker
    if any(k in env for k in _SM_MARKERS) or (
        # A bring-your-own container without the toolkit gets no SM_*
        # variables, only the /opt/ml tree; probe it for the real process only.
        probe_files
        and Path(_SM_BASE, "input", "config", "resourceconfig.json").exists()
    ):
        return "sagemaker"
    if (
        "CLUSTER_SPEC" in env
        or "CLOUD_ML_JOB_ID" in env
        or any(k.startswith("AIP_") for k in env)
    ):
        return "vertex"
    if any(k.startswith("AZUREML_") for k in env):
        return "azureml"
    if "TORCHELASTIC_RUN_ID" in env or ("RANK" in env and "WORLD_SIZE" in env):
        return "torchrun"
    return "local"


# -- per-platform readers --------------------------------------------------------
# Each returns only what its variables say (None = not said); `native` adds the
# platform's own defaults and is False when the local backend merely mimics it.


def _sagemaker(env: Mapping[str, str], *, native: bool) -> dict[str, Any]:
    base = Path(env.get("SAGEMAKER_BASE_DIR") or _SM_BASE)
    config_dir = Path(env.get("SM_INPUT_CONFIG_DIR") or base / "input" / "config")
    data_dir = Path(env.get("SM_INPUT_DATA_DIR") or base / "input" / "data")
    training_env: dict[str, Any] = _json(env, "SM_TRAINING_ENV") or {}
    resource: dict[str, Any] = _json(env, "SM_RESOURCE_CONFIG") or (
        (native and _read_json(config_dir / "resourceconfig.json")) or {}
    )

    hosts = _json(env, "SM_HOSTS") or resource.get("hosts") or training_env.get("hosts")
    current_host = (
        env.get("SM_CURRENT_HOST")
        or resource.get("current_host")
        or training_env.get("current_host")
    )

    # Channels: SM_CHANNELS names them (case kept), SM_CHANNEL_<NAME> locates them.
    channels: dict[str, str] = {}
    for name in _json(env, "SM_CHANNELS") or []:
        channels[name] = env.get(f"SM_CHANNEL_{name.upper()}") or str(data_dir / name)
    known = {name.upper() for name in channels}
    for key, value in env.items():
        suffix = key[len("SM_CHANNEL_") :]
        if key.startswith("SM_CHANNEL_") and suffix not in known:
            channels[suffix.lower()] = value
    if not channels:
        channels = dict(training_env.get("channel_input_dirs") or {})
    if not channels and native:
        # BYO container: inputdataconfig.json lists the channels the platform
        # downloaded to /opt/ml/input/data/<channel>.
        for name in _read_json(config_dir / "inputdataconfig.json") or {}:
            channels[name] = str(data_dir / name)

    # Hyperparameters: SM_HPS is already typed JSON; hyperparameters.json and
    # SM_HP_<NAME> carry strings that need decoding.
    hps: dict[str, Any] | None = _json(env, "SM_HPS")
    if hps is None and "hyperparameters" in training_env:
        hps = dict(training_env["hyperparameters"])
    if hps is None and native:
        raw = _read_json(config_dir / "hyperparameters.json")
        if isinstance(raw, dict):
            hps = {
                k: _decode(v) if isinstance(v, str) else v
                for k, v in raw.items()
                if not k.startswith(_SM_RESERVED_PREFIX)
            }
    if hps is None:
        sm_hp = {
            k[6:].lower(): _decode(v) for k, v in env.items() if k.startswith("SM_HP_")
        }
        hps = sm_hp or None

    node_rank = _int(env, "SM_CURRENT_HOST_RANK")
    if node_rank is None and hosts and current_host in hosts:
        node_rank = list(hosts).index(current_host)
    num_nodes = _int(env, "SM_HOST_COUNT") or (len(hosts) if hosts else None)
    gpus = _int(env, "SM_NUM_GPUS")
    if gpus is None:
        gpus = training_env.get("num_gpus")

    def default(*parts: str) -> Path | None:
        return base.joinpath(*parts) if native else None

    model_dir = env.get("SM_MODEL_DIR") or training_env.get("model_dir")
    output_dir = env.get("SM_OUTPUT_DATA_DIR") or training_env.get("output_data_dir")
    out: dict[str, Any] = {
        "model_dir": model_dir or default("model"),
        "output_dir": output_dir or default("output", "data"),
        "checkpoint_dir": default(_SM_CHECKPOINTS),
        "tensorboard_dir": default(*_SM_TENSORBOARD),
        "channels": channels or None,
        "hyperparameters": hps,
        "hosts": tuple(hosts) if hosts else None,
        "current_host": current_host,
        "node_rank": node_rank,
        "num_nodes": num_nodes,
        "num_gpus": gpus,
        "master_addr": env.get("SM_MASTER_ADDR")
        # the toolkit sorts hosts and the v3 driver makes the first the master
        or (sorted(hosts)[0] if native and hosts else None),
        "master_port": _int(env, "SM_MASTER_PORT")
        or (_SM_MASTER_PORT if native else None),
        "run_id": env.get("TRAINING_JOB_NAME") or training_env.get("job_name"),
    }
    return out


def _cluster_spec(env: Mapping[str, str]) -> dict[str, Any] | None:
    """Vertex CLUSTER_SPEC, or TF_CONFIG rewritten into its workerpoolN shape."""
    spec = _json(env, "CLUSTER_SPEC")
    if spec:
        return dict(spec)
    tf = _json(env, "TF_CONFIG")
    if not tf or "cluster" not in tf:
        return None
    cluster = {_TF_POOLS.get(k, k): v for k, v in tf["cluster"].items()}
    task = dict(tf.get("task") or {})
    task["type"] = _TF_POOLS.get(task.get("type", ""), task.get("type"))
    return {"cluster": cluster, "task": task}


def _vertex(env: Mapping[str, str], *, native: bool) -> dict[str, Any]:
    model_uri = env.get("AIP_MODEL_DIR")
    checkpoint_uri = env.get("AIP_CHECKPOINT_DIR")
    tensorboard_uri = env.get("AIP_TENSORBOARD_LOG_DIR")
    # No output variable on Vertex: use <base_output_dir>/output next to
    # AIP_MODEL_DIR=<base_output_dir>/model/ (per trial under tuning).
    output_uri = f"{_parent_uri(model_uri)}/output/" if native and model_uri else None
    channel_uris = {
        name: env[var] for name, var in _AIP_CHANNELS.items() if env.get(var)
    }

    out: dict[str, Any] = {
        "model_uri": model_uri,
        "checkpoint_uri": checkpoint_uri,
        "output_uri": output_uri,
        "model_dir": Path(gcs_fuse_path(model_uri)) if model_uri else None,
        "checkpoint_dir": Path(gcs_fuse_path(checkpoint_uri))
        if checkpoint_uri
        else None,
        "output_dir": Path(gcs_fuse_path(output_uri)) if output_uri else None,
        "tensorboard_dir": Path(gcs_fuse_path(tensorboard_uri))
        if tensorboard_uri
        else None,
        "channels": {k: gcs_fuse_path(v) for k, v in channel_uris.items()} or None,
        "channel_uris": channel_uris or None,
        "run_id": env.get("CLOUD_ML_JOB_ID"),
    }

    spec = _cluster_spec(env)
    if spec:
        cluster: dict[str, list[str]] = spec.get("cluster") or {}
        chief = list(cluster.get("workerpool0") or [])
        workers = list(cluster.get("workerpool1") or [])
        training = chief + workers
        task = spec.get("task") or {}
        kind, index = task.get("type", "workerpool0"), int(task.get("index", 0))
        if kind == "workerpool0":
            node_rank = index
        elif kind == "workerpool1":
            node_rank = len(chief) + index
        else:  # reduction server / evaluator: outside the training world
            node_rank = -1
        own = list(cluster.get(kind) or [])
        if training:
            out["hosts"] = tuple(_host_port(e)[0] for e in training)
            out["num_nodes"] = len(training)
            out["master_addr"], out["master_port"] = _host_port(training[0])
        if index < len(own):
            out["current_host"] = _host_port(own[index])[0]
        out["node_rank"] = node_rank
    return out


def _azureml(env: Mapping[str, str]) -> dict[str, Any]:
    # Named job outputs/inputs arrive as AZURE_ML_OUTPUT_<name> and
    # AZURE_ML_INPUT_<name>, the name in its original case.
    outputs = {
        k[len("AZURE_ML_OUTPUT_") :].lower(): v
        for k, v in env.items()
        if k.startswith("AZURE_ML_OUTPUT_")
    }
    # Literal inputs (numbers, strings) share the prefix; data inputs are paths.
    channels = {
        k[len("AZURE_ML_INPUT_") :]: v
        for k, v in env.items()
        if k.startswith("AZURE_ML_INPUT_") and ("/" in v or "\\" in v)
    }
    model = outputs.get("model")
    checkpoints = outputs.get("checkpoints") or outputs.get("checkpoint")

    master_addr = master_port = None
    if env.get("AZ_BATCH_MASTER_NODE"):  # "10.0.0.4:6105"
        master_addr, master_port = _host_port(env["AZ_BATCH_MASTER_NODE"])
    elif env.get("AZ_BATCHAI_MPI_MASTER_NODE"):
        master_addr = env["AZ_BATCHAI_MPI_MASTER_NODE"]
    hosts = [h for h in env.get("AZ_BATCH_HOST_LIST", "").split(",") if h]

    return {
        # ./outputs and ./logs are uploaded to the run when the job ends.
        "model_dir": Path(model) if model else _cwd("outputs", "model"),
        "checkpoint_dir": (
            Path(checkpoints) if checkpoints else _cwd("outputs", "checkpoints")
        ),
        "output_dir": _cwd("outputs"),
        "tensorboard_dir": _cwd("logs", "tensorboard"),
        "channels": channels or None,
        "run_id": env.get("AZUREML_RUN_ID"),
        "hosts": tuple(hosts) or None,
        "num_nodes": _int(env, "AZUREML_NODE_COUNT") or len(hosts) or None,
        "master_addr": master_addr,
        "master_port": master_port,
        # MPI distribution launches through mpirun: Open MPI's own variables.
        "rank": _int(env, "OMPI_COMM_WORLD_RANK"),
        "world_size": _int(env, "OMPI_COMM_WORLD_SIZE"),
        "local_rank": _int(env, "OMPI_COMM_WORLD_LOCAL_RANK"),
        "local_world_size": _int(env, "OMPI_COMM_WORLD_LOCAL_SIZE"),
    }


def _torch(env: Mapping[str, str]) -> dict[str, Any]:
    """The torch.distributed variables; torchrun, Azure ML and Vertex's PyTorch
    containers set them, and they win over anything derived from the platform."""
    node_rank = _int(env, "GROUP_RANK")
    if node_rank is None:
        node_rank = _int(env, "NODE_RANK")  # Azure ML, Lightning
    return {
        "rank": _int(env, "RANK"),
        "local_rank": _int(env, "LOCAL_RANK"),
        "world_size": _int(env, "WORLD_SIZE"),
        "local_world_size": _int(env, "LOCAL_WORLD_SIZE"),
        "node_rank": node_rank,
        "num_nodes": _int(env, "GROUP_WORLD_SIZE"),
        "master_addr": env.get("MASTER_ADDR") or None,
        "master_port": _int(env, "MASTER_PORT"),
    }


def _merge(into: dict[str, Any], layer: Mapping[str, Any]) -> None:
    into.update({k: v for k, v in layer.items() if v is not None})


def _uri(path: Path, uri: str | None) -> str:
    """The platform's URI for ``path`` if it still names it, else the path."""
    if uri and Path(gcs_fuse_path(uri)) == path:
        return uri
    return str(path)


# -- the public entry points --------------------------------------------------------


def context(environ: Mapping[str, str] | None = None) -> RuntimeContext:
    """Build the :class:`RuntimeContext` from ``environ`` (default ``os.environ``).

    Platform precedence: ``CLOUDNN_PLATFORM`` (the local backend sets
    ``local``), SageMaker (``SM_*``, ``TRAINING_JOB_NAME``, ``/opt/ml``),
    Vertex (``AIP_*``, ``CLUSTER_SPEC``), Azure ML (``AZUREML_*``), torchrun
    (``TORCHELASTIC_RUN_ID`` or ``RANK`` + ``WORLD_SIZE``), else local.
    Paths come from the platform; ``RANK``/``WORLD_SIZE``/... from the
    torch.distributed variables override rank numbers derived from it (torchrun
    inside a multi-host SageMaker job); ``CLOUDNN_MODEL_DIR``,
    ``CLOUDNN_CHECKPOINT_DIR``, ``CLOUDNN_OUTPUT_DIR`` and ``CLOUDNN_RUN_ID``
    override everything.
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    platform = _detect(env, probe_files=environ is None)

    v: dict[str, Any] = {}
    if platform == "local":
        # The local backend mimics both clouds; SageMaker's variables are the
        # richer set, so they are read last and win where both speak.
        _merge(v, _vertex(env, native=False))
        _merge(v, _sagemaker(env, native=False))
    elif platform == "sagemaker":
        _merge(v, _sagemaker(env, native=True))
    elif platform == "vertex":
        _merge(v, _vertex(env, native=True))
    elif platform == "azureml":
        _merge(v, _azureml(env))
    elif platform == "torchrun":
        run_id = env.get("TORCHELASTIC_RUN_ID")
        # torchrun's run id is the literal "none" unless --rdzv-id is given
        if run_id and run_id != "none":
            v["run_id"] = run_id
    _merge(v, _torch(env))

    for name, var in (
        ("model_dir", "CLOUDNN_MODEL_DIR"),
        ("checkpoint_dir", "CLOUDNN_CHECKPOINT_DIR"),
        ("output_dir", "CLOUDNN_OUTPUT_DIR"),
    ):
        if env.get(var):
            v[name] = Path(env[var])
    if env.get("CLOUDNN_RUN_ID"):
        v["run_id"] = env["CLOUDNN_RUN_ID"]
    return _finalize(platform, v, env)


def _finalize(
    platform: Platform, v: dict[str, Any], env: Mapping[str, str]
) -> RuntimeContext:
    """Fill what no variable said, and derive the rank numbers from each other."""
    model_dir = Path(v.get("model_dir") or _cwd("model"))
    checkpoint_dir = Path(v.get("checkpoint_dir") or _cwd("checkpoints"))
    output_dir = Path(v.get("output_dir") or _cwd("output"))
    tensorboard_dir = Path(v.get("tensorboard_dir") or output_dir / "tensorboard")
    channels: dict[str, str] = dict(v.get("channels") or {})
    channel_uris = {**channels, **(v.get("channel_uris") or {})}

    current_host = v.get("current_host") or env.get("HOSTNAME") or "localhost"
    hosts: tuple[str, ...] = tuple(v.get("hosts") or (current_host,))

    rank: int | None = v.get("rank")
    local_rank: int = v.get("local_rank") or 0
    world: int | None = v.get("world_size")
    lws: int | None = v.get("local_world_size")
    node_rank: int | None = v.get("node_rank")
    num_nodes: int | None = v.get("num_nodes")

    if lws is None:
        if world and num_nodes:
            lws = max(1, world // num_nodes)
        elif world and rank is not None and node_rank:
            lws = max(1, (rank - local_rank) // node_rank)
        elif world and num_nodes is None:
            lws = world  # one node is by far the common case
        else:
            lws = 1  # one process per node unless a launcher says otherwise
    if num_nodes is None:
        num_nodes = max(1, world // lws) if world else 1
    if node_rank is None:
        node_rank = rank // lws if rank is not None and rank >= 0 else 0
    if world is None:
        world = num_nodes * lws
    if rank is None:
        rank = -1 if node_rank < 0 else node_rank * lws + local_rank

    return RuntimeContext(
        platform=platform,
        model_dir=model_dir,
        checkpoint_dir=checkpoint_dir,
        output_dir=output_dir,
        tensorboard_dir=tensorboard_dir,
        channels=channels,
        hyperparameters=dict(v.get("hyperparameters") or {}),
        rank=rank,
        local_rank=local_rank,
        world_size=world,
        local_world_size=lws,
        node_rank=node_rank,
        num_nodes=num_nodes,
        master_addr=v.get("master_addr") or _DEFAULT_MASTER_ADDR,
        master_port=v.get("master_port") or _DEFAULT_MASTER_PORT,
        num_gpus=int(v.get("num_gpus") or 0),
        hosts=hosts,
        current_host=current_host,
        run_id=v.get("run_id")
        or ("local" if platform in ("local", "torchrun") else platform),
        model_uri=_uri(model_dir, v.get("model_uri")),
        checkpoint_uri=_uri(checkpoint_dir, v.get("checkpoint_uri")),
        output_uri=_uri(output_dir, v.get("output_uri")),
        channel_uris=channel_uris,
    )


def channel_ref(name: str, filename: str = "") -> str:
    """``channel://<name>[/<filename>]``: a data path relative to a channel."""
    return (
        f"{CHANNEL_SCHEME}{name}/{filename}" if filename else f"{CHANNEL_SCHEME}{name}"
    )


def resolve_data_path(value: str, ctx: RuntimeContext) -> str:
    """The local path of a data reference inside this job.

    ``channel://NAME/FILE`` -> ``<channel NAME's folder>/FILE``; when the
    channel holds only one file under another name (an S3 prefix, a renamed
    upload) that file is taken, and a channel that is a file (Vertex's
    ``AIP_TRAINING_DATA_URI``) is that file. ``channel://NAME`` -> the
    channel's folder.
    Anything else is returned unchanged.
    """
    if not value.startswith(CHANNEL_SCHEME):
        return value
    name, _, filename = value[len(CHANNEL_SCHEME) :].partition("/")
    folder = ctx.data_dir(name)
    if not filename or folder.is_file():
        return str(folder)  # Vertex hands over the file's own URI
    path = folder / filename
    if not path.exists() and folder.is_dir():
        files = [p for p in folder.iterdir() if p.is_file()]
        if len(files) == 1:
            return str(files[0])
    return str(path)


def hyperparameter_args(hps: Mapping[str, Any]) -> list[str]:
    """SageMaker script-mode argv: ``["--name", "value", ...]``.

    Booleans become ``True``/``False`` (what SageMaker passes), lists and dicts
    JSON; ``None`` is left out so the script's argparse default applies.
    """
    args: list[str] = []
    for name, value in hps.items():
        if value is None:
            continue
        args += [f"--{name}", _hp_str(value)]
    return args


def local_job_env(
    *,
    model_dir: str | os.PathLike[str],
    checkpoint_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    channels: Mapping[str, str],
    hyperparameters: Mapping[str, Any],
    run_id: str,
    num_gpus: int = 0,
    hosts: Sequence[str] = ("algo-1",),
    current_host: str = "algo-1",
    rank: int = 0,
    world_size: int = 1,
    local_rank: int = 0,
    local_world_size: int = 1,
    master_addr: str = _DEFAULT_MASTER_ADDR,
    master_port: int = _DEFAULT_MASTER_PORT,
) -> dict[str, str]:
    """Environment for a local job that looks like SageMaker, Vertex and torchrun.

    ``context()`` of the result reports platform ``local`` (``CLOUDNN_PLATFORM``)
    and reproduces every argument. No machine facts: the result goes into
    plans, which must be the same on every machine; the job's launcher adds
    ``SM_NUM_CPUS`` when it starts the process.
    """
    hosts = list(hosts)
    if current_host not in hosts:
        raise ValueError(f"current_host {current_host!r} is not in hosts {hosts}")
    node_rank = hosts.index(current_host)
    model, ckpt, out = (os.fspath(p) for p in (model_dir, checkpoint_dir, output_dir))
    tensorboard = str(Path(out) / "tensorboard")
    hps = dict(hyperparameters)
    user_args = hyperparameter_args(hps)

    env: dict[str, str] = {
        "CLOUDNN_PLATFORM": "local",
        "CLOUDNN_RUN_ID": run_id,
        "CLOUDNN_MODEL_DIR": model,
        "CLOUDNN_CHECKPOINT_DIR": ckpt,
        "CLOUDNN_OUTPUT_DIR": out,
    }

    # SageMaker script mode (sagemaker-training-toolkit / v3 driver names).
    # Scripts write reports to SM_OUTPUT_DATA_DIR; locally that is the run's
    # output dir itself, so nothing has to be copied afterwards.
    training_env = {
        "channel_input_dirs": dict(channels),
        "current_host": current_host,
        "hosts": hosts,
        "hyperparameters": hps,
        "job_name": run_id,
        "model_dir": model,
        "num_gpus": num_gpus,
        "output_data_dir": out,
        "output_dir": out,
        "resource_config": {"current_host": current_host, "hosts": hosts},
        "user_args": user_args,
    }
    env.update(
        {
            "SM_MODEL_DIR": model,
            "SM_OUTPUT_DATA_DIR": out,
            "SM_OUTPUT_DIR": out,
            "SM_CHANNELS": json.dumps(sorted(channels)),
            "SM_HPS": json.dumps(hps),
            "SM_USER_ARGS": json.dumps(user_args),
            "SM_NUM_GPUS": str(num_gpus),
            "SM_HOSTS": json.dumps(hosts),
            "SM_CURRENT_HOST": current_host,
            "SM_HOST_COUNT": str(len(hosts)),
            "SM_CURRENT_HOST_RANK": str(node_rank),
            "SM_MASTER_ADDR": master_addr,
            "SM_MASTER_PORT": str(master_port),
            "SM_RESOURCE_CONFIG": json.dumps(training_env["resource_config"]),
            "SM_TRAINING_ENV": json.dumps(training_env),
        }
    )
    for name, path in channels.items():
        env[f"SM_CHANNEL_{name.upper()}"] = path
    for name, value in hps.items():
        # the toolkit upper-cases the name and keeps dashes: SM_HP_LEARNING-RATE
        if value is not None:
            env[f"SM_HP_{name.upper()}"] = _hp_str(value)

    # Vertex AI custom training.
    env.update(
        {
            "AIP_MODEL_DIR": model,
            "AIP_CHECKPOINT_DIR": ckpt,
            "AIP_TENSORBOARD_LOG_DIR": tensorboard,
            "CLUSTER_SPEC": json.dumps(
                _local_cluster_spec(hosts, node_rank, master_addr, master_port)
            ),
        }
    )
    for name, var in _AIP_CHANNELS.items():
        if name in channels:
            env[var] = channels[name]

    # torch.distributed (+ NODE_RANK, which Azure ML sets per node).
    env.update(
        {
            "RANK": str(rank),
            "LOCAL_RANK": str(local_rank),
            "WORLD_SIZE": str(world_size),
            "LOCAL_WORLD_SIZE": str(local_world_size),
            "NODE_RANK": str(node_rank),
            "MASTER_ADDR": master_addr,
            "MASTER_PORT": str(master_port),
        }
    )
    return env


def _local_cluster_spec(
    hosts: Iterable[str], node_rank: int, master_addr: str, master_port: int
) -> dict[str, Any]:
    """A CLUSTER_SPEC whose chief entry is the torch master, as on Vertex."""
    hosts = list(hosts)
    workers = [f"{h}:{master_port}" for h in hosts[1:]]
    task = (
        {"type": "workerpool0", "index": 0}
        if node_rank == 0
        else {"type": "workerpool1", "index": node_rank - 1}
    )
    cluster: dict[str, list[str]] = {"workerpool0": [f"{master_addr}:{master_port}"]}
    if workers:
        cluster["workerpool1"] = workers
    return {"cluster": cluster, "environment": "cloud", "task": task}
