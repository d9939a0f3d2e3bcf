"""Job bundles: deterministic archives, and the job contract on each platform.

The digits-mlp training bundle is unpacked into a temporary folder and run
the way SageMaker, Vertex AI and Azure ML run it -- their folder layouts and
variables, the original data file gone -- and each writes its model where
the platform collects it; the serving bundle's adapters then serve that
model with the same predictions as :class:`cloudnn.runtime.serve.Handler`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from conftest import PYTHON, REPO

from cloudnn.bundle import (
    BUNDLE_ENTRY,
    content_sha256,
    serving_bundle,
    training_bundle,
)
from cloudnn.errors import SpecError
from cloudnn.spec import load_spec


def _unpack(data: bytes, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(dest, filter="data")
    return dest


@pytest.fixture(scope="module")
def digits_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of examples/digits-mlp with its data, 4 epochs (the job is the point)."""
    folder = tmp_path_factory.mktemp("digits-project")
    subprocess.run(
        [PYTHON, "prepare.py"],
        cwd=REPO / "examples" / "digits-mlp",
        check=True,
        capture_output=True,
    )
    shutil.copytree(REPO / "examples" / "digits-mlp", folder, dirs_exist_ok=True)
    spec = yaml.safe_load((folder / "spec.yaml").read_text())
    spec["train"]["epochs"] = 4
    spec["train"]["early_stopping"] = None
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec))
    return folder


# ------------------------------------------------------------ determinism


def test_same_inputs_give_the_same_bytes(digits_project: Path) -> None:
    spec = load_spec(digits_project / "spec.yaml")
    first, again = (
        training_bundle(spec),
        training_bundle(load_spec(digits_project / "spec.yaml")),
    )
    assert first.data == again.data and first.sha256 == again.sha256
    assert first.sha256 == hashlib.sha256(first.data).hexdigest()
    # another process, another moment: still the same archive
    code = (
        "import sys; from cloudnn.bundle import training_bundle;"
        "from cloudnn.spec import load_spec;"
        f"sys.stdout.write(training_bundle(load_spec({str(digits_project / 'spec.yaml')!r})).sha256)"
    )
    time.sleep(1.1)  # a timestamp in the archive would now differ
    out = subprocess.run(
        [PYTHON, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout == first.sha256


def test_a_training_bundle_holds_the_runtime_and_channel_references(
    digits_project: Path,
) -> None:
    spec = load_spec(digits_project / "spec.yaml")
    bundle = training_bundle(spec)
    names = set(bundle.members)
    assert {BUNDLE_ENTRY, "spec.json", "requirements.txt"} <= names
    assert "cloudnn/runtime/job.py" in names and "cloudnn/spec.py" in names
    assert not any(n.startswith(("cloudnn/cli/", "cloudnn/testing/")) for n in names)
    shipped = [n for n in names if n.endswith((".pyc", ".csv"))]
    assert shipped == ["cloudnn/data/accelerator_catalog.csv"], "no data, no caches"
    with tarfile.open(fileobj=io.BytesIO(bundle.data), mode="r:gz") as tar:
        job_spec = json.loads(tar.extractfile("spec.json").read())  # type: ignore[union-attr]
        members = tar.getmembers()
    assert job_spec["data"]["train"] == "channel://train/digits.csv"
    assert str(digits_project) not in json.dumps(job_spec), (
        "no submitting-machine paths"
    )
    assert {m.mtime for m in members} == {0} and {m.uid for m in members} == {0}


def test_user_code_ships_without_data_and_ignored_files(tmp_path: Path) -> None:
    (tmp_path / "nets").mkdir()
    (tmp_path / "nets" / "mlp.py").write_text(
        "def build(input_dim, num_outputs):\n    pass\n"
    )
    (tmp_path / "data.csv").write_text("a,b,label\n1,2,0\n3,4,1\n")
    (tmp_path / "notes.tmp").write_text("scratch")
    (tmp_path / ".cloudnnignore").write_text("# scratch files\n*.tmp\n")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref")
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(
        yaml.safe_dump(
            {
                "name": "own-net",
                "task": "classification",
                "model": {"module": "nets.mlp:build"},
                "data": {"train": "data.csv", "target": "label"},
            }
        )
    )
    bundle = training_bundle(load_spec(spec_file))
    user = sorted(n for n in bundle.members if n.startswith("user/"))
    assert user == ["user/.cloudnnignore", "user/nets/mlp.py", "user/spec.yaml"]
    big = tmp_path / "weights.bin"
    with open(big, "wb") as fh:
        fh.truncate(51 * 1024 * 1024)
    with pytest.raises(SpecError) as info:
        training_bundle(load_spec(spec_file))
    assert info.value.field == "model.path" and "weights.bin" in str(info.value)


def test_folder_content_hash_covers_names_and_bytes(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"1")
    first = content_sha256(tmp_path / "a")
    os.rename(tmp_path / "a" / "x.png", tmp_path / "a" / "y.png")
    assert content_sha256(tmp_path / "a") != first
    assert content_sha256(tmp_path / "a" / "y.png") == (
        hashlib.sha256(b"1").hexdigest(),
        1,
    )


# ------------------------------------------------------ platforms, simulated


def _run_entry(bundle_dir: Path, env: dict[str, str], cwd: Path) -> str:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SM_", "AIP_", "CLOUDNN_", "AZUREML", "AZURE_ML"))
        and k not in ("PYTHONPATH", "CLUSTER_SPEC", "TRAINING_JOB_NAME")
    }
    out = subprocess.run(
        [PYTHON, str(bundle_dir / BUNDLE_ENTRY)],
        cwd=cwd,
        env={**clean, "OMP_NUM_THREADS": "1", **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


@pytest.fixture(scope="module")
def moved_bundle(
    digits_project: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """(unpacked bundle, the data file, now moved away from the spec's path)."""
    bundle = training_bundle(load_spec(digits_project / "spec.yaml"))
    where = _unpack(bundle.data, tmp_path_factory.mktemp("bundle"))
    data = tmp_path_factory.mktemp("elsewhere") / "digits.csv"
    shutil.move(digits_project / "data" / "digits.csv", data)
    # the job runs the bundle's cloudnn, not this checkout's
    assert (where / "cloudnn" / "__init__.py").is_file()
    return where, data


def _assert_model(folder: Path) -> None:
    assert (folder / "cloudnn_model.json").is_file(), sorted(os.listdir(folder))
    assert (folder / "model.pt").is_file()


@pytest.fixture(scope="module")
def sagemaker_model(moved_bundle: tuple[Path, Path], tmp_path_factory: Any) -> Path:
    """A bring-your-own container: the /opt/ml tree and TRAINING_JOB_NAME only."""
    bundle, data = moved_bundle
    base = tmp_path_factory.mktemp("opt-ml")
    config = base / "input" / "config"
    config.mkdir(parents=True)
    (config / "resourceconfig.json").write_text(
        json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]})
    )
    (config / "hyperparameters.json").write_text("{}")
    (config / "inputdataconfig.json").write_text(json.dumps({"train": {}}))
    channel = base / "input" / "data" / "train"
    channel.mkdir(parents=True)
    shutil.copy(data, channel / "digits.csv")
    out = _run_entry(
        bundle,
        {"SAGEMAKER_BASE_DIR": str(base), "TRAINING_JOB_NAME": "digits-sm-1"},
        cwd=bundle,
    )
    assert '"event": "finished"' in out
    _assert_model(base / "model")  # SageMaker tars /opt/ml/model to S3
    assert (base / "checkpoints").is_dir()  # synced to S3 when configured
    return base / "model"


def test_sagemaker_layout(sagemaker_model: Path) -> None:
    meta = json.loads((sagemaker_model / "cloudnn_model.json").read_text())
    assert meta["run_id"] == "digits-sm-1"


def test_vertex_layout(moved_bundle: tuple[Path, Path], tmp_path: Path) -> None:
    bundle, data = moved_bundle
    gcs = tmp_path / "gcs"  # what Cloud Storage FUSE mounts at /gcs
    (gcs / "bucket" / "data").mkdir(parents=True)
    shutil.copy(data, gcs / "bucket" / "data" / "train.csv")
    env = {
        "CLOUDNN_GCSFUSE_ROOT": str(gcs),
        "AIP_MODEL_DIR": "gs://bucket/run-1/model/",
        "AIP_CHECKPOINT_DIR": "gs://bucket/run-1/checkpoints/",
        "AIP_TENSORBOARD_LOG_DIR": "gs://bucket/run-1/logs/",
        "AIP_TRAINING_DATA_URI": "gs://bucket/data/train.csv",
        "CLOUD_ML_JOB_ID": "1234567",
        "CLUSTER_SPEC": json.dumps(
            {
                "cluster": {"workerpool0": ["cmle-training-workerpool0-0:2222"]},
                "task": {"type": "workerpool0", "index": 0},
            }
        ),
    }
    out = _run_entry(bundle, env, cwd=tmp_path)
    assert '"event": "finished"' in out
    _assert_model(gcs / "bucket" / "run-1" / "model")
    assert any((gcs / "bucket" / "run-1" / "checkpoints").iterdir())


def test_azureml_layout(moved_bundle: tuple[Path, Path], tmp_path: Path) -> None:
    bundle, data = moved_bundle
    mount = tmp_path / "mnt" / "azureml" / "cr" / "j" / "abc" / "cap"
    (mount / "data" / "train").mkdir(parents=True)
    shutil.copy(data, mount / "data" / "train" / "digits.csv")
    workdir = tmp_path / "wd"
    shutil.copytree(bundle, workdir)  # Azure runs the job in its code folder
    env = {
        "AZUREML_RUN_ID": "digits-az-1",
        "AZURE_ML_INPUT_train": str(mount / "data" / "train"),
        "AZURE_ML_OUTPUT_model": str(mount / "outputs" / "model"),
    }
    out = _run_entry(workdir, env, cwd=workdir)
    assert '"event": "finished"' in out
    _assert_model(mount / "outputs" / "model")
    assert (workdir / "outputs" / "metrics.json").is_file()  # uploaded by Azure


def _load(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_each_serving_adapter_serves_the_trained_model(
    sagemaker_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import serving_fixtures as sf

    from cloudnn.runtime.serve import Handler

    rows = sf.digits_test_split()[0][:20]
    expected = Handler.from_model_dir(sagemaker_model).predict(rows)
    body = json.dumps({"instances": rows})

    sm = _unpack(serving_bundle(sagemaker_model, "sagemaker").data, tmp_path / "sm")
    inference = _load(sm / "code" / "inference.py", "bundle_inference")
    model = inference.model_fn(str(sm))  # /opt/ml/model, code/ inside
    answer = inference.output_fn(
        inference.predict_fn(inference.input_fn(body, "application/json"), model),
        "application/json",
    )
    assert json.loads(answer) == {"predictions": expected}

    az = _unpack(serving_bundle(sagemaker_model, "azureml").data, tmp_path / "az")
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(az))
    score = _load(az / "code" / "score.py", "bundle_score")
    score.init()
    assert score.run(body) == {"predictions": expected}

    vx = _unpack(serving_bundle(sagemaker_model, "vertex").data, tmp_path / "vx")
    port = _free_port()
    env = {
        **os.environ,
        "AIP_STORAGE_URI": str(vx),
        "AIP_HTTP_PORT": str(port),
        "CLOUDNN_HOST": "127.0.0.1",
        "PYTHONPATH": "",  # the bundle's own code/cloudnn
    }
    server = subprocess.Popen(
        [sys.executable, str(vx / "code" / "server.py")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        url = f"http://127.0.0.1:{port}"
        while True:
            try:
                if httpx.get(url + "/health", trust_env=False).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the Vertex server did not start"
            time.sleep(0.1)
        r = httpx.post(url + "/predict", content=body, trust_env=False, timeout=30)
        assert r.json() == {"predictions": expected}
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_a_sagemaker_script_runs_unchanged_on_vertex(tmp_path: Path) -> None:
    """The bring-your-own example reads SM_CHANNEL_TRAIN and SM_MODEL_DIR; on
    Vertex AI nothing sets those, so the runtime derives them from AIP_*."""
    example = REPO / "examples" / "bring-your-own-script"
    subprocess.run([PYTHON, "prepare.py"], cwd=example, check=True, capture_output=True)
    spec = load_spec(example / "spec.yaml")
    spec = spec.model_copy(
        update={
            "model": spec.model.model_copy(
                update={"hyperparameters": {"epochs": 2, "lr": 0.001}}
            )
        }
    )
    bundle = _unpack(training_bundle(spec).data, tmp_path / "bundle")
    gcs = tmp_path / "gcs"
    for channel in ("train", "test"):
        (gcs / "b" / channel).mkdir(parents=True)
        shutil.copy(
            example / "data" / channel / f"{channel}.csv",
            gcs / "b" / channel / f"{channel}.csv",
        )
    env = {
        "CLOUDNN_GCSFUSE_ROOT": str(gcs),
        "AIP_MODEL_DIR": "gs://b/out/model/",
        "AIP_CHECKPOINT_DIR": "gs://b/out/checkpoints/",
        "AIP_TRAINING_DATA_URI": "gs://b/train/train.csv",
        "AIP_TEST_DATA_URI": "gs://b/test/test.csv",
        "CLOUD_ML_JOB_ID": "42",
    }
    out = _run_entry(bundle, env, cwd=tmp_path)
    assert "test accuracy" in out
    assert (gcs / "b" / "out" / "model" / "model.pt").is_file()
