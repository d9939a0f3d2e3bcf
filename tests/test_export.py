"""TorchScript and ONNX export, verified against the PyTorch model."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import serving_fixtures as sf
import torch

from cloudnn.runtime.export import ExportError, MissingDependencyError, export_model
from cloudnn.runtime.serve import Handler

digits_split_csvs = sf.digits_split_csvs
mlp_model_dir = sf.mlp_model_dir
cnn_model_dir = sf.cnn_model_dir
text_model_dir = sf.text_model_dir

pytestmark = pytest.mark.slow


@pytest.fixture(params=["mlp", "cnn"])
def model_dir(request: pytest.FixtureRequest) -> Path:
    return request.getfixturevalue(f"{request.param}_model_dir")  # type: ignore[no-any-return]


def _test_inputs(model_dir: Path) -> tuple[Handler, np.ndarray]:
    handler = Handler.from_model_dir(model_dir)
    return handler, handler.preprocess(sf.digits_test_split()[0])


def test_torchscript_export(tmp_path: Path, model_dir: Path) -> None:
    handler, x = _test_inputs(model_dir)
    result = export_model(model_dir, "torchscript", tmp_path / "m.ts", sample=x)
    assert result["path"] == str(tmp_path / "m.ts")
    assert result["max_abs_diff"] < 1e-5
    scripted = torch.jit.load(result["path"])
    with torch.inference_mode():
        got = scripted(torch.from_numpy(x[:5])).numpy()
    np.testing.assert_allclose(got, handler.predict_arrays(x[:5]), atol=1e-5)


def test_onnx_export_matches_torch(tmp_path: Path, model_dir: Path) -> None:
    import onnxruntime as ort

    handler, x = _test_inputs(model_dir)
    result = export_model(model_dir, "onnx", tmp_path / "m.onnx", sample=x)
    assert result["format"] == "onnx" and result["rows_checked"] == len(x)
    assert result["max_abs_diff"] < 1e-5
    assert not (model_dir / "model.onnx").exists()  # output= was honoured
    session = ort.InferenceSession(result["path"], providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    reference = handler.predict_arrays(x)
    for n in (1, 3, len(x)):  # the batch axis is dynamic
        (out,) = session.run(None, {name: x[:n]})
        assert np.abs(out - reference[:n]).max() < 1e-5


def test_onnx_default_path_and_random_sample(
    tmp_path: Path, mlp_model_dir: Path
) -> None:
    import shutil

    model_dir = shutil.copytree(mlp_model_dir, tmp_path / "model")
    result = export_model(model_dir, "onnx")
    assert result["path"] == str(model_dir / "model.onnx")
    assert result["rows_checked"] == 7 and result["max_abs_diff"] < 1e-4
    assert not list(model_dir.glob(".*.tmp"))  # the temp file was renamed


def test_dynamo_exporter(tmp_path: Path, mlp_model_dir: Path) -> None:
    _, x = _test_inputs(mlp_model_dir)
    result = export_model(
        mlp_model_dir, "onnx", tmp_path / "d.onnx", sample=x, exporter="dynamo"
    )
    assert result["exporter"] == "dynamo" and result["opset"] >= 18
    assert result["max_abs_diff"] < 1e-5


def test_export_errors(
    tmp_path: Path, mlp_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ExportError, match="format"):
        export_model(mlp_model_dir, "tflite", tmp_path / "x")  # type: ignore[arg-type]
    with pytest.raises(ExportError, match="shape"):
        export_model(mlp_model_dir, "onnx", tmp_path / "x", sample=np.zeros((2, 3)))
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx -> ImportError
    with pytest.raises(MissingDependencyError) as info:
        export_model(mlp_model_dir, "onnx", tmp_path / "x.onnx")
    assert "cloudnn[onnx]" in (info.value.hint or "")
    assert info.value.exit_code == 2


# -------------------------------------------------------------- text model


def test_text_transformer_onnx(tmp_path: Path, text_model_dir: Path) -> None:
    handler = Handler.from_model_dir(text_model_dir)
    texts = [t for t, _ in sf.sentences(40, seed=1)] + ["", "never seen words xyz"]
    x = handler.preprocess(texts)
    assert x.dtype == np.int64
    result = export_model(text_model_dir, "onnx", tmp_path / "t.onnx", sample=x)
    assert result["input_dtype"] == "int64"
    assert result["max_abs_diff"] < 1e-5
    onnx_handler = Handler.from_model_dir(
        _with_onnx(tmp_path, text_model_dir, Path(result["path"])), runtime="onnx"
    )
    got, want = onnx_handler.predict(texts), handler.predict(texts)
    assert [p["label"] for p in got] == [p["label"] for p in want]
    for g, w in zip(got, want, strict=True):
        assert g["probabilities"].keys() == w["probabilities"].keys()
        for key, value in w["probabilities"].items():
            assert abs(g["probabilities"][key] - value) < 1e-5


def _with_onnx(tmp_path: Path, model_dir: Path, onnx_file: Path) -> Path:
    import shutil

    target = shutil.copytree(model_dir, tmp_path / "text-model")
    shutil.copyfile(onnx_file, target / "model.onnx")
    return target
