"""The serving templates, each called the way its platform calls it.

They are text files copied into job bundles, not modules of cloudnn: load
them from their paths, like the platforms do.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import serving_fixtures as sf

from cloudnn.runtime.serve import Handler, InputError

digits_split_csvs = sf.digits_split_csvs
mlp_model_dir = sf.mlp_model_dir
cnn_model_dir = sf.cnn_model_dir

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = REPO / "templates" / "serving"


def load_template(relative: str) -> ModuleType:
    path = TEMPLATES / relative
    name = "cloudnn_template_" + relative.replace("/", "_").removesuffix(".py")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rows() -> list[list[int]]:
    return sf.digits_test_split()[0][:25]


@pytest.fixture(scope="module")
def expected(mlp_model_dir: Path, rows: list[list[int]]) -> list[dict[str, Any]]:
    return Handler.from_model_dir(mlp_model_dir).predict(rows)


# -------------------------------------------------------------- SageMaker


def test_sagemaker_json_and_csv(
    mlp_model_dir: Path, rows: list[list[int]], expected: list[dict[str, Any]]
) -> None:
    sm = load_template("sagemaker/inference.py")
    # /opt/ml/model may hold the model folder one level down
    model = sm.model_fn(str(mlp_model_dir.parent))
    assert model.model_dir == mlp_model_dir
    for body, ctype in [
        (json.dumps({"instances": rows}).encode(), "application/json"),
        (json.dumps({"inputs": rows}), "application/json"),
        ("\n".join(",".join(map(str, r)) for r in rows), "text/csv"),
    ]:
        data = sm.input_fn(body, ctype)
        prediction = sm.predict_fn(data, model)
        out = sm.output_fn(prediction, "application/json")
        assert json.loads(out) == {"predictions": expected}
    csv_out = sm.output_fn(prediction, "text/csv")
    assert csv_out.splitlines() == [str(p["label"]) for p in expected]


def test_sagemaker_errors_carry_status(mlp_model_dir: Path) -> None:
    sm = load_template("sagemaker/inference.py")
    model = sm.model_fn(str(mlp_model_dir), None)  # the toolkit may pass a context
    with pytest.raises(InputError) as info:
        sm.predict_fn(sm.input_fn(b"{not json", "application/json"), model)
    assert info.value.status == 400
    with pytest.raises(InputError) as info:
        sm.predict_fn(sm.input_fn(b"[[1, 2]]", "application/json"), model)
    assert info.value.status == 422
    with pytest.raises(InputError) as info:
        sm.output_fn([{"label": 1}], "application/xml")
    assert info.value.status == 406


# ----------------------------------------------------------------- Azure ML


def test_azureml_init_and_run(
    monkeypatch: pytest.MonkeyPatch,
    mlp_model_dir: Path,
    rows: list[list[int]],
    expected: list[dict[str, Any]],
) -> None:
    score = load_template("azureml/score.py")
    # AZUREML_MODEL_DIR is .../<model>/<version>; the folder sits below it
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(mlp_model_dir.parent))
    score.init()
    assert score.run(json.dumps({"instances": rows})) == {"predictions": expected}
    assert score.run(json.dumps({"data": rows})) == {"predictions": expected}
    error = score.run("this is not json")
    assert error["status"] == 400 and error["error"]
    error = score.run(json.dumps({"instances": [[1.0] * 3]}))
    assert error["status"] == 422


def test_azureml_without_model_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    score = load_template("azureml/score.py")
    monkeypatch.delenv("AZUREML_MODEL_DIR", raising=False)
    with pytest.raises(RuntimeError, match="AZUREML_MODEL_DIR"):
        score.init()


# ---------------------------------------------------------------- Vertex AI


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def vertex_server(cnn_model_dir: Path) -> Iterator[dict[str, Any]]:
    port = _free_port()
    env = dict(os.environ)
    env.update(
        AIP_HTTP_PORT=str(port),
        AIP_HEALTH_ROUTE="/v1/endpoints/e/deployedModels/m",
        AIP_PREDICT_ROUTE="/v1/endpoints/e/deployedModels/m:predict",
        AIP_STORAGE_URI=str(cnn_model_dir.parent),
        CLOUDNN_HOST="127.0.0.1",
        PYTHONPATH=str(REPO),
    )
    proc = subprocess.Popen(
        [sys.executable, str(TEMPLATES / "vertex" / "server.py")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                out = proc.stdout.read().decode() if proc.stdout else ""
                raise AssertionError(f"server exited {proc.returncode}:\n{out}")
            try:
                r = httpx.get(base + env["AIP_HEALTH_ROUTE"], timeout=1)
                if r.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("vertex server did not become healthy")
            time.sleep(0.1)
        yield {"base": base, "env": env}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_vertex_predict_route(
    vertex_server: dict[str, Any], cnn_model_dir: Path, rows: list[list[int]]
) -> None:
    expected = Handler.from_model_dir(cnn_model_dir).predict(rows)
    url = vertex_server["base"] + vertex_server["env"]["AIP_PREDICT_ROUTE"]
    r = httpx.post(url, json={"instances": rows, "parameters": {}}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": expected}
    csv_body = "\n".join(",".join(map(str, row)) for row in rows)
    r = httpx.post(
        url, content=csv_body, headers={"content-type": "text/csv"}, timeout=30
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": expected}


def test_vertex_errors_and_info(vertex_server: dict[str, Any]) -> None:
    url = vertex_server["base"] + vertex_server["env"]["AIP_PREDICT_ROUTE"]
    r = httpx.post(url, content=b"{oops", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["status"] == 400
    r = httpx.post(url, json={"instances": [[1, 2, 3]]})
    assert r.status_code == 422 and "error" in r.json()
    r = httpx.post(url, json={"predict": []})
    assert r.status_code == 400
    info = httpx.get(vertex_server["base"] + "/info").json()
    assert info["input_shape"] == [1, 8, 8]


def test_vertex_model_location(cnn_model_dir: Path) -> None:
    vertex = load_template("vertex/server.py")
    assert vertex.model_location({"AIP_STORAGE_URI": str(cnn_model_dir)}) == (
        cnn_model_dir
    )
    assert vertex.model_location({"CLOUDNN_MODEL_DIR": str(cnn_model_dir.parent)}) == (
        cnn_model_dir
    )
    with pytest.raises(FileNotFoundError):
        vertex.model_location({"AIP_STORAGE_URI": str(cnn_model_dir / "output")})


def test_vertex_gcs_uri_without_fuse_or_client(monkeypatch: pytest.MonkeyPatch) -> None:
    vertex = load_template("vertex/server.py")
    monkeypatch.setitem(sys.modules, "google.cloud.storage", None)
    monkeypatch.setitem(sys.modules, "google.cloud", None)
    with pytest.raises(RuntimeError, match="google-cloud-storage"):
        vertex.model_location({"AIP_STORAGE_URI": "gs://no-such-bucket-xyz/model"})
