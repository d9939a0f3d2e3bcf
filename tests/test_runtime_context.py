"""cloudnn.runtime.context: one view of every platform's job environment."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cloudnn.runtime.context import (
    RuntimeContext,
    context,
    detect_platform,
    gcs_fuse_path,
    hyperparameter_args,
    local_job_env,
)

REPO = Path(__file__).resolve().parents[1]


# -- SageMaker ----------------------------------------------------------------


def test_sagemaker_single_host() -> None:
    # What sagemaker-training-toolkit exports in a PyTorch script-mode container.
    env = {
        "TRAINING_JOB_NAME": "digits-2024-05-01-12-00-00-000",
        "SM_MODEL_DIR": "/opt/ml/model",
        "SM_OUTPUT_DATA_DIR": "/opt/ml/output/data",
        "SM_OUTPUT_DIR": "/opt/ml/output",
        "SM_INPUT_DIR": "/opt/ml/input",
        "SM_CHANNELS": '["test","train"]',
        "SM_CHANNEL_TRAIN": "/opt/ml/input/data/train",
        "SM_CHANNEL_TEST": "/opt/ml/input/data/test",
        "SM_HPS": '{"epochs": 3, "lr": 0.01, "layers": [64, 32], "amp": true}',
        "SM_HP_EPOCHS": "3",
        "SM_HOSTS": '["algo-1"]',
        "SM_CURRENT_HOST": "algo-1",
        "SM_NUM_GPUS": "1",
        "SM_NUM_CPUS": "4",
        "SM_FRAMEWORK": "tf.keras",  # segmentation_models noise: not a marker
    }
    ctx = context(env)
    assert ctx.platform == "sagemaker"
    assert ctx.model_dir == Path("/opt/ml/model")
    assert ctx.output_dir == Path("/opt/ml/output/data")
    assert ctx.checkpoint_dir == Path("/opt/ml/checkpoints")
    assert ctx.tensorboard_dir == Path("/opt/ml/output/tensorboard")
    assert ctx.channels == {
        "train": "/opt/ml/input/data/train",
        "test": "/opt/ml/input/data/test",
    }
    assert ctx.data_dir("train") == Path("/opt/ml/input/data/train")
    assert ctx.hyperparameters == {
        "epochs": 3,
        "lr": 0.01,
        "layers": [64, 32],
        "amp": True,
    }
    assert (ctx.rank, ctx.world_size, ctx.num_nodes, ctx.node_rank) == (0, 1, 1, 0)
    assert ctx.is_main and not ctx.is_distributed
    assert (ctx.hosts, ctx.current_host) == (("algo-1",), "algo-1")
    assert (ctx.master_addr, ctx.master_port) == ("algo-1", 7777)
    assert ctx.num_gpus == 1
    assert ctx.run_id == "digits-2024-05-01-12-00-00-000"
    assert ctx.model_uri == "/opt/ml/model"
    with pytest.raises(KeyError, match="channels: test, train"):
        ctx.data_dir("validation")


SM_MULTI = {
    "TRAINING_JOB_NAME": "ddp-job",
    "SM_MODEL_DIR": "/opt/ml/model",
    "SM_CHANNELS": '["train"]',
    "SM_CHANNEL_TRAIN": "/opt/ml/input/data/train",
    "SM_HPS": "{}",
    "SM_HOSTS": '["algo-1","algo-2","algo-3"]',
    "SM_CURRENT_HOST": "algo-2",
    "SM_NUM_GPUS": "4",
}


def test_sagemaker_multi_host_one_process_per_host() -> None:
    ctx = context(SM_MULTI)
    assert ctx.platform == "sagemaker"
    assert (ctx.node_rank, ctx.num_nodes) == (1, 3)
    assert (ctx.rank, ctx.local_rank, ctx.world_size, ctx.local_world_size) == (
        1,
        0,
        3,
        1,
    )
    assert ctx.is_distributed and not ctx.is_main
    assert (ctx.master_addr, ctx.master_port) == ("algo-1", 7777)


def test_sagemaker_multi_host_with_torchrun_inside() -> None:
    # The v3 driver runs torchrun --nnodes=3 --nproc_per_node=4
    # --node_rank=$SM_CURRENT_HOST_RANK; torchrun's numbers win for ranks,
    # paths and the job name still come from SageMaker.
    env = {
        **SM_MULTI,
        "SM_CURRENT_HOST_RANK": "1",
        "SM_HOST_COUNT": "3",
        "SM_MASTER_ADDR": "algo-1",
        "SM_MASTER_PORT": "7777",
        "TORCHELASTIC_RUN_ID": "none",
        "RANK": "6",
        "LOCAL_RANK": "2",
        "WORLD_SIZE": "12",
        "LOCAL_WORLD_SIZE": "4",
        "GROUP_RANK": "1",
        "GROUP_WORLD_SIZE": "3",
        "MASTER_ADDR": "10.0.1.15",
        "MASTER_PORT": "7777",
    }
    ctx = context(env)
    assert ctx.platform == "sagemaker"
    assert ctx.run_id == "ddp-job"
    assert ctx.model_dir == Path("/opt/ml/model")
    assert (ctx.rank, ctx.local_rank, ctx.world_size, ctx.local_world_size) == (
        6,
        2,
        12,
        4,
    )
    assert (ctx.node_rank, ctx.num_nodes) == (1, 3)
    assert (ctx.master_addr, ctx.master_port) == ("10.0.1.15", 7777)
    assert ctx.hosts == ("algo-1", "algo-2", "algo-3")


def test_sagemaker_byo_container_reads_config_files(tmp_path: Path) -> None:
    # No toolkit: only TRAINING_JOB_NAME and the /opt/ml tree (relocated by
    # SAGEMAKER_BASE_DIR, as the toolkit allows). hyperparameters.json holds
    # JSON-encoded strings, and SageMaker's own sagemaker_* keys.
    config = tmp_path / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(
        json.dumps(
            {
                "epochs": "3",
                "lr": "0.001",
                "name": '"resnet"',
                "opt": "adam",
                "amp": "true",
                "layers": "[64, 32]",
                "sagemaker_program": '"train.py"',
                "sagemaker_submit_directory": '"s3://b/src.tar.gz"',
            }
        )
    )
    (config / "resourceconfig.json").write_text(
        json.dumps(
            {
                "current_host": "algo-2",
                "hosts": ["algo-1", "algo-2"],
                "network_interface_name": "eth0",
            }
        )
    )
    (config / "inputdataconfig.json").write_text(
        json.dumps({"train": {"TrainingInputMode": "File"}})
    )
    env = {"TRAINING_JOB_NAME": "byo-1", "SAGEMAKER_BASE_DIR": str(tmp_path)}
    ctx = context(env)
    assert ctx.platform == "sagemaker"
    assert ctx.hyperparameters == {
        "epochs": 3,
        "lr": 0.001,
        "name": "resnet",
        "opt": "adam",
        "amp": True,
        "layers": [64, 32],
    }
    assert (ctx.hosts, ctx.current_host) == (("algo-1", "algo-2"), "algo-2")
    assert (ctx.rank, ctx.world_size, ctx.node_rank) == (1, 2, 1)
    assert ctx.channels == {"train": str(tmp_path / "input" / "data" / "train")}
    assert ctx.model_dir == tmp_path / "model"
    assert ctx.checkpoint_dir == tmp_path / "checkpoints"
    assert ctx.output_dir == tmp_path / "output" / "data"


def test_sagemaker_hp_variables_are_json_decoded() -> None:
    env = {
        "SM_MODEL_DIR": "/opt/ml/model",
        "SM_HP_LEARNING-RATE": "0.001",
        "SM_HP_EPOCHS": "10",
        "SM_HP_USE-AMP": "True",
        "SM_HP_LAYERS": "[128,64]",
        "SM_HP_OPTIMIZER": "adam",
        "SM_HP_SCHEDULE": '{"warmup":100}',
    }
    assert context(env).hyperparameters == {
        "learning-rate": 0.001,
        "epochs": 10,
        "use-amp": True,
        "layers": [128, 64],
        "optimizer": "adam",
        "schedule": {"warmup": 100},
    }


# -- Vertex AI ------------------------------------------------------------------


def test_vertex_single_replica_gcs_dirs() -> None:
    env = {
        "CLOUD_ML_JOB_ID": "1234567890",
        "AIP_MODEL_DIR": "gs://my-bucket/runs/r1/model/",
        "AIP_CHECKPOINT_DIR": "gs://my-bucket/runs/r1/checkpoints/",
        "AIP_TENSORBOARD_LOG_DIR": "gs://my-bucket/runs/r1/logs/",
        "AIP_TRAINING_DATA_URI": "gs://my-bucket/data/train.csv",
        "AIP_VALIDATION_DATA_URI": "gs://my-bucket/data/val.csv",
        "AIP_TEST_DATA_URI": "bq://proj.dataset.test",
        "CLUSTER_SPEC": json.dumps(
            {
                "cluster": {"workerpool0": ["cmle-training-workerpool0-ab-0:2222"]},
                "environment": "cloud",
                "task": {"type": "workerpool0", "index": 0},
            }
        ),
    }
    ctx = context(env)
    assert ctx.platform == "vertex"
    assert ctx.model_dir == Path("/gcs/my-bucket/runs/r1/model")
    assert ctx.model_uri == "gs://my-bucket/runs/r1/model/"
    assert ctx.checkpoint_dir == Path("/gcs/my-bucket/runs/r1/checkpoints")
    assert ctx.checkpoint_uri == "gs://my-bucket/runs/r1/checkpoints/"
    assert ctx.output_dir == Path("/gcs/my-bucket/runs/r1/output")
    assert ctx.output_uri == "gs://my-bucket/runs/r1/output/"
    assert ctx.tensorboard_dir == Path("/gcs/my-bucket/runs/r1/logs")
    assert ctx.channels == {
        "train": "/gcs/my-bucket/data/train.csv",
        "validation": "/gcs/my-bucket/data/val.csv",
        "test": "bq://proj.dataset.test",  # not on the FUSE mount: kept as is
    }
    assert ctx.channel_uris["train"] == "gs://my-bucket/data/train.csv"
    assert ctx.run_id == "1234567890"
    assert (ctx.rank, ctx.world_size, ctx.num_nodes) == (0, 1, 1)
    assert (ctx.master_addr, ctx.master_port) == (
        "cmle-training-workerpool0-ab-0",
        2222,
    )
    assert ctx.current_host == "cmle-training-workerpool0-ab-0"
    assert ctx.hyperparameters == {}  # Vertex passes them as argv only


VERTEX_CLUSTER = {
    "workerpool0": ["chief-0:2222"],
    "workerpool1": ["worker-0:2222", "worker-1:2222", "worker-2:2222"],
    "workerpool2": ["reducer-0:2222"],
}


def _vertex_env(task_type: str, index: int) -> dict[str, str]:
    return {
        "AIP_MODEL_DIR": "gs://b/job/model/",
        "AIP_CHECKPOINT_DIR": "gs://b/job/checkpoints/",
        "CLUSTER_SPEC": json.dumps(
            {
                "cluster": VERTEX_CLUSTER,
                "environment": "cloud",
                "task": {"type": task_type, "index": index},
                "job": '{"worker_pool_specs": []}',
            }
        ),
    }


@pytest.mark.parametrize(
    ("task_type", "index", "node_rank", "host"),
    [
        ("workerpool0", 0, 0, "chief-0"),
        ("workerpool1", 0, 1, "worker-0"),
        ("workerpool1", 2, 3, "worker-2"),
    ],
)
def test_vertex_cluster_spec_multi_worker(
    task_type: str, index: int, node_rank: int, host: str
) -> None:
    ctx = context(_vertex_env(task_type, index))
    assert ctx.platform == "vertex"
    assert (ctx.node_rank, ctx.rank, ctx.num_nodes, ctx.world_size) == (
        node_rank,
        node_rank,
        4,
        4,
    )
    assert ctx.is_main == (node_rank == 0)
    assert ctx.hosts == ("chief-0", "worker-0", "worker-1", "worker-2")
    assert ctx.current_host == host
    assert (ctx.master_addr, ctx.master_port) == ("chief-0", 2222)
    assert ctx.checkpoint_dir == Path("/gcs/b/job/checkpoints")


def test_vertex_cluster_spec_with_torchrun_per_node() -> None:
    # 4 nodes x 8 GPUs: torchrun started on each node with --node_rank from
    # CLUSTER_SPEC; its per-process numbers win.
    env = {
        **_vertex_env("workerpool1", 1),
        "RANK": "21",
        "LOCAL_RANK": "5",
        "WORLD_SIZE": "32",
        "LOCAL_WORLD_SIZE": "8",
        "GROUP_RANK": "2",
        "TORCHELASTIC_RUN_ID": "none",
    }
    ctx = context(env)
    assert ctx.platform == "vertex"
    assert (ctx.rank, ctx.local_rank, ctx.world_size, ctx.local_world_size) == (
        21,
        5,
        32,
        8,
    )
    assert (ctx.node_rank, ctx.num_nodes) == (2, 4)
    assert ctx.master_addr == "chief-0"


def test_vertex_reduction_server_is_outside_the_training_world() -> None:
    ctx = context(_vertex_env("workerpool2", 0))
    assert (ctx.node_rank, ctx.rank) == (-1, -1)
    assert not ctx.is_main
    assert ctx.world_size == 4


def test_vertex_tf_config_shape() -> None:
    env = {
        "AIP_MODEL_DIR": "gs://b/m/",
        "TF_CONFIG": json.dumps(
            {
                "cluster": {"chief": ["c:2222"], "worker": ["w0:2222", "w1:2222"]},
                "task": {"type": "worker", "index": 1},
            }
        ),
    }
    ctx = context(env)
    assert (ctx.node_rank, ctx.num_nodes, ctx.current_host) == (2, 3, "w1")
    assert ctx.master_addr == "c"


# -- Azure ML ----------------------------------------------------------------------


def test_azureml_multi_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    # PyTorch distribution, instance_count=2, process_count_per_instance=4:
    # Azure sets MASTER_ADDR/MASTER_PORT/WORLD_SIZE/NODE_RANK per node and
    # RANK/LOCAL_RANK per process, no LOCAL_WORLD_SIZE.
    env = {
        "AZUREML_RUN_ID": "sincere_plum_abc123",
        "AZUREML_CR_EXECUTION_WORKING_DIR_PATH": "/mnt/azureml/cr/j/abc/exe/wd",
        "AZ_BATCH_MASTER_NODE": "10.0.0.4:6105",
        "MASTER_ADDR": "10.0.0.4",
        "MASTER_PORT": "6105",
        "WORLD_SIZE": "8",
        "NODE_RANK": "1",
        "RANK": "5",
        "LOCAL_RANK": "1",
        "AZURE_ML_INPUT_train": "/mnt/azureml/cr/j/abc/cap/data-capability/wd/INPUT_train",
        "AZURE_ML_INPUT_epochs": "3",  # a literal input, not a data channel
        "AZURE_ML_OUTPUT_model": "/mnt/azureml/cr/j/abc/cap/data-capability/wd/model",
    }
    ctx = context(env)
    assert ctx.platform == "azureml"
    assert ctx.run_id == "sincere_plum_abc123"
    assert (ctx.rank, ctx.local_rank, ctx.world_size) == (5, 1, 8)
    assert (ctx.node_rank, ctx.local_world_size, ctx.num_nodes) == (1, 4, 2)
    assert (ctx.master_addr, ctx.master_port) == ("10.0.0.4", 6105)
    assert ctx.model_dir == Path("/mnt/azureml/cr/j/abc/cap/data-capability/wd/model")
    assert ctx.output_dir == tmp_path / "outputs"  # uploaded with the run
    assert ctx.checkpoint_dir == tmp_path / "outputs" / "checkpoints"
    assert ctx.channels == {
        "train": "/mnt/azureml/cr/j/abc/cap/data-capability/wd/INPUT_train"
    }


def test_azureml_master_from_batch_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    env = {
        "AZUREML_RUN_ID": "r",
        "AZ_BATCH_MASTER_NODE": "10.0.0.7:6105",
        "AZUREML_NODE_COUNT": "2",
        "WORLD_SIZE": "2",
        "NODE_RANK": "0",
        "RANK": "0",
        "LOCAL_RANK": "0",
    }
    ctx = context(env)
    assert (ctx.master_addr, ctx.master_port) == ("10.0.0.7", 6105)
    assert (ctx.num_nodes, ctx.local_world_size, ctx.is_main) == (2, 1, True)
    assert ctx.model_dir == tmp_path / "outputs" / "model"


# -- torchrun and bare local --------------------------------------------------------


def test_torchrun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = {
        "TORCHELASTIC_RUN_ID": "exp-7",
        "RANK": "3",
        "LOCAL_RANK": "1",
        "WORLD_SIZE": "4",
        "LOCAL_WORLD_SIZE": "2",
        "GROUP_RANK": "1",
        "GROUP_WORLD_SIZE": "2",
        "ROLE_RANK": "3",
        "MASTER_ADDR": "node-0",
        "MASTER_PORT": "29400",
    }
    ctx = context(env)
    assert ctx.platform == "torchrun"
    assert ctx.run_id == "exp-7"
    assert (ctx.rank, ctx.local_rank, ctx.world_size, ctx.local_world_size) == (
        3,
        1,
        4,
        2,
    )
    assert (ctx.node_rank, ctx.num_nodes) == (1, 2)
    assert (ctx.master_addr, ctx.master_port) == ("node-0", 29400)
    assert ctx.model_dir == tmp_path / "model"


def test_local_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    ctx = context({})
    assert ctx == RuntimeContext(
        platform="local",
        model_dir=tmp_path / "model",
        checkpoint_dir=tmp_path / "checkpoints",
        output_dir=tmp_path / "output",
        tensorboard_dir=tmp_path / "output" / "tensorboard",
        run_id="local",
        model_uri=str(tmp_path / "model"),
        checkpoint_uri=str(tmp_path / "checkpoints"),
        output_uri=str(tmp_path / "output"),
    )
    assert ctx.is_main and not ctx.is_distributed
    override = context({"CLOUDNN_MODEL_DIR": "/data/m", "CLOUDNN_RUN_ID": "r9"})
    assert (override.model_dir, override.run_id) == (Path("/data/m"), "r9")


def test_platform_precedence() -> None:
    assert detect_platform({"SM_MODEL_DIR": "/opt/ml/model", "AIP_MODEL_DIR": "x"}) == (
        "sagemaker"
    )
    assert detect_platform({"AIP_MODEL_DIR": "x", "AZUREML_RUN_ID": "r"}) == "vertex"
    assert detect_platform({"AZUREML_RUN_ID": "r", "RANK": "0", "WORLD_SIZE": "1"}) == (
        "azureml"
    )
    assert detect_platform({"RANK": "0", "WORLD_SIZE": "2"}) == "torchrun"
    assert detect_platform({"SM_FRAMEWORK": "tf.keras"}) == "local"
    assert detect_platform({"CLOUDNN_PLATFORM": "vertex", "SM_HPS": "{}"}) == "vertex"
    with pytest.raises(ValueError, match="CLOUDNN_PLATFORM"):
        detect_platform({"CLOUDNN_PLATFORM": "gcp"})


def test_gcs_fuse_path() -> None:
    assert gcs_fuse_path("gs://b/a/b/") == "/gcs/b/a/b/"
    assert gcs_fuse_path("/local/path") == "/local/path"


def test_bad_integer_names_the_variable() -> None:
    with pytest.raises(ValueError, match="WORLD_SIZE='two'"):
        context({"RANK": "0", "WORLD_SIZE": "two"})


# -- the local backend's environment ----------------------------------------------


def _local_env(tmp_path: Path, **overrides: object) -> tuple[dict[str, str], dict]:
    args: dict = {
        "model_dir": str(tmp_path / "run" / "model"),
        "checkpoint_dir": str(tmp_path / "run" / "checkpoints"),
        "output_dir": str(tmp_path / "run" / "output"),
        "channels": {
            "train": str(tmp_path / "data" / "train"),
            "validation": str(tmp_path / "data" / "validation"),
            "extra-data": str(tmp_path / "data" / "extra"),
        },
        "hyperparameters": {
            "epochs": 3,
            "lr": 0.001,
            "layers": [64, 32],
            "use-amp": True,
            "name": "mlp",
            "sched": {"warmup": 10},
            "seed": None,
        },
        "run_id": "run-123",
    }
    args.update(overrides)
    return local_job_env(**args), args


def test_local_job_env_round_trip(tmp_path: Path) -> None:
    env, a = _local_env(
        tmp_path,
        num_gpus=2,
        hosts=("algo-1", "algo-2"),
        current_host="algo-2",
        rank=3,
        world_size=4,
        local_rank=1,
        local_world_size=2,
        master_addr="10.0.0.1",
        master_port=29501,
    )
    assert all(isinstance(v, str) for v in env.values())
    expected = RuntimeContext(
        platform="local",
        model_dir=Path(a["model_dir"]),
        checkpoint_dir=Path(a["checkpoint_dir"]),
        output_dir=Path(a["output_dir"]),
        tensorboard_dir=Path(a["output_dir"]) / "tensorboard",
        channels=a["channels"],
        hyperparameters=a["hyperparameters"],
        rank=3,
        local_rank=1,
        world_size=4,
        local_world_size=2,
        node_rank=1,
        num_nodes=2,
        master_addr="10.0.0.1",
        master_port=29501,
        num_gpus=2,
        hosts=("algo-1", "algo-2"),
        current_host="algo-2",
        run_id="run-123",
        model_uri=a["model_dir"],
        checkpoint_uri=a["checkpoint_dir"],
        output_uri=a["output_dir"],
        channel_uris=a["channels"],
    )
    assert context(env) == expected


def test_local_job_env_speaks_every_cloud(tmp_path: Path) -> None:
    env, a = _local_env(tmp_path)
    # SageMaker script mode
    assert env["SM_MODEL_DIR"] == a["model_dir"]
    assert env["SM_OUTPUT_DATA_DIR"] == a["output_dir"]
    assert env["SM_CHANNEL_TRAIN"] == a["channels"]["train"]
    assert env["SM_CHANNEL_EXTRA-DATA"] == a["channels"]["extra-data"]
    assert json.loads(env["SM_CHANNELS"]) == ["extra-data", "train", "validation"]
    assert env["SM_HP_USE-AMP"] == "True"
    assert env["SM_HP_LAYERS"] == "[64,32]"
    assert "SM_HP_SEED" not in env
    assert json.loads(env["SM_USER_ARGS"])[:4] == ["--epochs", "3", "--lr", "0.001"]
    assert json.loads(env["SM_HOSTS"]) == ["algo-1"]
    training_env = json.loads(env["SM_TRAINING_ENV"])
    assert training_env["model_dir"] == a["model_dir"]
    assert training_env["channel_input_dirs"]["train"] == a["channels"]["train"]
    # a machine fact: the launcher adds it, the plan (and its golden) has none
    assert "SM_NUM_CPUS" not in env and "num_cpus" not in training_env
    # Vertex AI
    assert env["AIP_MODEL_DIR"] == a["model_dir"]
    assert env["AIP_CHECKPOINT_DIR"] == a["checkpoint_dir"]
    assert env["AIP_TRAINING_DATA_URI"] == a["channels"]["train"]
    assert env["AIP_VALIDATION_DATA_URI"] == a["channels"]["validation"]
    assert "AIP_TEST_DATA_URI" not in env
    spec = json.loads(env["CLUSTER_SPEC"])
    assert spec["task"] == {"type": "workerpool0", "index": 0}
    assert spec["cluster"]["workerpool0"] == ["127.0.0.1:29500"]
    # torch.distributed and cloudnn's markers
    assert {k: env[k] for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE")} == {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
    }
    assert (env["MASTER_ADDR"], env["MASTER_PORT"]) == ("127.0.0.1", "29500")
    assert env["CLOUDNN_PLATFORM"] == "local"
    assert env["CLOUDNN_RUN_ID"] == "run-123"
    assert env["CLOUDNN_CHECKPOINT_DIR"] == a["checkpoint_dir"]
    # ... and a Vertex-only reader of the same variables sees the same dirs.
    vertex = context(
        {k: v for k, v in env.items() if not k.startswith(("SM_", "CLOUDNN_"))}
    )
    assert vertex.platform == "vertex"
    assert vertex.model_dir == Path(a["model_dir"])
    assert vertex.checkpoint_dir == Path(a["checkpoint_dir"])


def test_local_workers_spawned_by_the_elastic_agent(tmp_path: Path) -> None:
    # job.py launches nproc workers with torch's elastic agent, which
    # overwrites the torch.distributed variables; the job stays "local".
    env, a = _local_env(tmp_path)
    env.update(
        {
            "TORCHELASTIC_RUN_ID": "run-123",
            "RANK": "2",
            "LOCAL_RANK": "2",
            "WORLD_SIZE": "4",
            "LOCAL_WORLD_SIZE": "4",
            "GROUP_RANK": "0",
            "GROUP_WORLD_SIZE": "1",
            "MASTER_PORT": "41234",
        }
    )
    ctx = context(env)
    assert ctx.platform == "local"
    assert (ctx.rank, ctx.world_size, ctx.num_nodes, ctx.master_port) == (
        2,
        4,
        1,
        41234,
    )
    assert ctx.model_dir == Path(a["model_dir"])


def test_local_job_env_rejects_unknown_current_host(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="current_host"):
        _local_env(tmp_path, current_host="algo-9")


def test_hyperparameter_args() -> None:
    assert hyperparameter_args(
        {
            "epochs": 3,
            "lr": 1e-3,
            "use-amp": True,
            "shuffle": False,
            "layers": [64, 32],
            "sched": {"b": 2, "a": 1},
            "name": "mlp",
            "seed": None,
        }
    ) == [
        "--epochs",
        "3",
        "--lr",
        "0.001",
        "--use-amp",
        "True",
        "--shuffle",
        "False",
        "--layers",
        "[64,32]",
        "--sched",
        '{"a":1,"b":2}',
        "--name",
        "mlp",
    ]


def test_import_loads_no_torch_or_vendor_sdk() -> None:
    code = (
        "import sys\n"
        "from cloudnn.runtime import context\n"
        "context({})\n"
        "heavy = ('torch', 'numpy', 'boto3', 'sagemaker', 'google.cloud', 'azure')\n"
        # google-cloud-aiplatform's *-nspkg.pth creates the bare `google` and
        # `google.cloud` namespaces in every interpreter: count real modules
        "print(sorted(m for m, mod in list(sys.modules.items())\n"
        "             if (m.split('.')[0] in heavy or m.startswith(heavy))\n"
        "             and getattr(mod, '__file__', None)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]", out.stdout
