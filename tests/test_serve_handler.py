"""The inference handler: exact predictions, request parsing, hostile input."""

from __future__ import annotations

import json
import math
import random
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import serving_fixtures as sf
import torch

from cloudnn.runtime.artifacts import load_model_dir
from cloudnn.runtime.serve import Handler, InputError

# pytest finds fixtures by module-level name; rebinding keeps ruff quiet
digits_split_csvs = sf.digits_split_csvs
mlp_model_dir = sf.mlp_model_dir
cnn_model_dir = sf.cnn_model_dir
regression_model_dir = sf.regression_model_dir
text_model_dir = sf.text_model_dir

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mlp(mlp_model_dir: Path) -> Handler:
    return Handler.from_model_dir(mlp_model_dir)


@pytest.fixture(scope="module")
def cnn(cnn_model_dir: Path) -> Handler:
    return Handler.from_model_dir(cnn_model_dir)


@pytest.fixture(params=["mlp", "cnn"])
def handler(request: pytest.FixtureRequest) -> Handler:
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


# ------------------------------------------------------------- exactness


def test_outputs_equal_in_process_model(handler: Handler) -> None:
    rows, _ = sf.digits_test_split()
    loaded = load_model_dir(handler.model_dir)
    x = torch.from_numpy(np.asarray(loaded.pre.transform(rows), dtype=np.float32))
    with torch.no_grad():
        expected = loaded.model(x).numpy()
    got = handler.predict_arrays(handler.preprocess(rows))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)
    labels = [p["label"] for p in handler.predict(rows)]
    assert labels == list(loaded.pre.decode(expected.argmax(1).tolist()))


def test_test_accuracy_equals_run_metrics(handler: Handler) -> None:
    rows, labels = sf.digits_test_split()
    preds = handler.predict(rows)
    correct = sum(p["label"] == y for p, y in zip(preds, labels, strict=True))
    metrics = sf.run_metrics(handler.model_dir)
    assert correct / len(labels) == metrics["test"]["accuracy"]
    assert metrics["test"]["accuracy"] > 0.5  # the fixture model learned something


def test_prediction_format(mlp: Handler) -> None:
    rows, _ = sf.digits_test_split()
    preds = mlp.predict(rows[:3])
    assert len(preds) == 3
    for p in preds:
        assert set(p) == {"label", "probabilities"}
        assert isinstance(p["label"], int)  # the original label type
        probs = p["probabilities"]
        assert list(probs) == [str(c) for c in range(10)]
        assert math.isclose(sum(probs.values()), 1.0, rel_tol=1e-9)
        assert max(probs, key=probs.__getitem__) == str(p["label"])
    json.dumps(preds, allow_nan=False)


def test_info(cnn: Handler) -> None:
    info = cnn.info()
    assert info["task"] == "classification"
    assert info["classes"] == list(range(10))
    assert info["input_shape"] == [1, 8, 8]
    assert info["runtime"] == "torch"
    assert info["model_type"] == "cnn"
    json.dumps(info)


def test_torchscript_runtime_matches(mlp_model_dir: Path, mlp: Handler) -> None:
    ts = Handler.from_model_dir(mlp_model_dir, runtime="torchscript")
    assert ts.info()["runtime"] == "torchscript"
    rows, _ = sf.digits_test_split()
    x = mlp.preprocess(rows)
    np.testing.assert_allclose(ts.predict_arrays(x), mlp.predict_arrays(x), atol=1e-6)


def test_onnx_runtime_same_labels(
    tmp_path: Path, mlp_model_dir: Path, cnn_model_dir: Path
) -> None:
    rows, _ = sf.digits_test_split()
    for src in (mlp_model_dir, cnn_model_dir):
        # a copy: exporting on first use writes model.onnx into the folder
        model_dir = shutil.copytree(src, tmp_path / src.parent.name)
        onnx_handler = Handler.from_model_dir(model_dir, runtime="onnx")
        assert (model_dir / "model.onnx").is_file()
        torch_handler = Handler.from_model_dir(model_dir)
        x = torch_handler.preprocess(rows)
        np.testing.assert_allclose(
            onnx_handler.predict_arrays(x), torch_handler.predict_arrays(x), atol=1e-5
        )
        assert [p["label"] for p in onnx_handler.predict(rows)] == [
            p["label"] for p in torch_handler.predict(rows)
        ]
        assert onnx_handler.info()["runtime"] == "onnx"


def test_regression_values(regression_model_dir: Path) -> None:
    handler = Handler.from_model_dir(regression_model_dir)
    rows, _ = sf.digits_test_split()
    loaded = load_model_dir(regression_model_dir)
    with torch.no_grad():
        expected = loaded.model(torch.from_numpy(loaded.pre.transform(rows[:9])))
    preds = handler.predict(rows[:9])
    assert preds == [{"value": float(v)} for v in expected[:, 0].tolist()]
    assert handler.info()["classes"] is None
    json.dumps(preds, allow_nan=False)
    # several targets: one list per instance
    two = handler.decode_outputs(np.array([[1.5, -2.0], [0.0, 3.0]], np.float32))
    assert two == [{"value": [1.5, -2.0]}, {"value": [0.0, 3.0]}]


def test_text_model_requests(text_model_dir: Path) -> None:
    handler = Handler.from_model_dir(text_model_dir)
    texts = ["the movie was great", "awful, really bad plot", "", "zzz unknown"]
    preds = handler.predict(texts)
    assert all(p["label"] in ("neg", "pos") for p in preds)
    assert set(preds[0]["probabilities"]) == {"neg", "pos"}
    # text/csv: one document per line, commas included
    parsed = handler.parse_request("\n".join(texts[:2]) + "\n", "text/csv")
    assert parsed == texts[:2]
    assert handler.predict([{"text": t} for t in texts]) == preds
    for bad in ([1, 2], [None], [["a", "b"]], [{"other": "x"}], [{"text": 3}]):
        with pytest.raises(InputError) as info:
            handler.predict(bad)
        assert info.value.status == 422
    assert handler.info()["input_kind"] == "text"


# ------------------------------------------------------- parse_request


def _csv(rows: list[list[Any]], header: bool = False) -> str:
    lines = [",".join(sf.FEATURES)] if header else []
    lines += [",".join(str(v) for v in row) for row in rows]
    return "\n".join(lines) + "\n"


def test_parse_request_accepts_every_documented_form(mlp: Handler) -> None:
    rows, _ = sf.digits_test_split()
    rows = rows[:4]
    body = {"instances": rows}
    forms: list[tuple[Any, str]] = [
        (json.dumps(body), "application/json"),
        (json.dumps(body).encode(), "application/json; charset=utf-8"),
        (json.dumps(rows), "application/json"),
        (json.dumps({"inputs": rows}), "application/json"),
        (json.dumps({"instances": rows, "parameters": {"x": 1}}), "application/json"),
        (body, "application/json"),
        (rows, ""),
        (json.dumps(body), ""),  # no content type: JSON
        (_csv(rows), "text/csv"),
        (_csv(rows, header=True).encode(), "text/csv"),
        (_csv(rows).replace("\n", "\r\n"), "text/csv"),
        ("\n".join(json.dumps(r) for r in rows), "application/jsonlines"),
    ]
    expected = mlp.predict(rows)
    for payload, ctype in forms:
        instances = mlp.parse_request(payload, ctype)
        assert len(instances) == 4, (payload, ctype)
        assert mlp.predict(instances) == expected, ctype


def test_dict_instances_keyed_by_feature_name(mlp: Handler) -> None:
    rows, _ = sf.digits_test_split()
    as_dicts = [dict(zip(sf.FEATURES, row, strict=True)) for row in rows[:5]]
    assert mlp.predict(as_dicts) == mlp.predict(rows[:5])


def test_cnn_takes_flat_rows_csv_and_nested_images(cnn: Handler) -> None:
    rows, _ = sf.digits_test_split()
    expected = cnn.predict(rows[:3])
    images = [np.asarray(r).reshape(1, 8, 8).tolist() for r in rows[:3]]
    assert cnn.predict(images) == expected
    assert cnn.predict(cnn.parse_request(_csv(rows[:3]), "text/csv")) == expected


_ROW = [0] * 64
_FAILURES: list[tuple[str, Any, str, int]] = [
    ("malformed json", b'{"instances": [1, 2', "application/json", 400),
    ("not utf-8", b"\xff\xfe\x00garbage", "application/json", 400),
    ("no instances key", '{"rows": [[1, 2]]}', "application/json", 400),
    ("empty list", '{"instances": []}', "application/json", 400),
    ("bare empty list", "[]", "application/json", 400),
    ("instances not a list", '{"instances": 5}', "application/json", 400),
    ("instances a dict", '{"instances": {"a": 1}}', "application/json", 400),
    ("scalar body", "5", "application/json", 400),
    ("null body", "null", "application/json", 400),
    ("deep nesting", "[" * 100_000 + "]" * 100_000, "application/json", 400),
    ("empty csv", "\n\n", "text/csv", 400),
    ("csv header only", ",".join(sf.FEATURES), "text/csv", 400),
    ("csv NUL", "1,2\x00,3", "text/csv", 400),
    ("unsupported type", "<x/>", "application/xml", 415),
    ("wrong width", json.dumps([[1.0] * 63]), "application/json", 422),
    ("ragged", json.dumps([_ROW, [1.0] * 10]), "application/json", 422),
    ("strings", json.dumps([["a"] * 64]), "application/json", 422),
    # a null feature is a blank cell, imputed as in training (test_columns_by_name)
    ("wrong rank", json.dumps([[[0.0] * 32, [0.0] * 32]]), "application/json", 422),
    ("null instance", json.dumps([None]), "application/json", 422),
    ("booleans", json.dumps([[True] * 64]), "application/json", 422),
    ("nested dict", json.dumps([{"p0": {"x": 1}}]), "application/json", 422),
    ("NaN", "[[" + ",".join(["NaN"] * 64) + "]]", "application/json", 422),
    (
        "Infinity",
        "[[" + ",".join(["1"] * 63 + ["Infinity"]) + "]]",
        "application/json",
        422,
    ),
    ("1e999", "[[" + ",".join(["1"] * 63 + ["1e999"]) + "]]", "application/json", 422),
    ("beyond float32", json.dumps([[1e39] * 64]), "application/json", 422),
    ("huge int", json.dumps([[10**40] * 64]), "application/json", 422),
    ("csv text cell", "1," * 63 + "abc\n", "text/csv", 422),
    ("csv nan", "1," * 63 + "nan\n", "text/csv", 422),
    ("csv ragged", "1,2,3\n", "text/csv", 422),
    ("too deep", json.dumps([[[[[[1]]]]]]), "application/json", 422),
]


@pytest.mark.parametrize(
    ("body", "ctype", "status"),
    [f[1:] for f in _FAILURES],
    ids=[f[0] for f in _FAILURES],
)
def test_bad_requests_get_input_error(
    mlp: Handler, body: Any, ctype: str, status: int
) -> None:
    with pytest.raises(InputError) as info:
        mlp.handle(body, ctype)
    assert info.value.status == status
    assert "\n" not in str(info.value)
    assert json.loads(json.dumps(info.value.to_dict()))["status"] == status


def test_one_flat_row_is_one_instance(mlp: Handler) -> None:
    row = sf.digits_test_split()[0][0]
    assert mlp.handle({"instances": row}) == {"predictions": mlp.predict([row])}
    with pytest.raises(InputError) as info:
        mlp.predict(row[:10])
    assert info.value.status == 422


def test_max_instances(mlp_model_dir: Path) -> None:
    limited = Handler.from_model_dir(mlp_model_dir, max_instances=2)
    with pytest.raises(InputError) as info:
        limited.predict([_ROW] * 3)
    assert info.value.status == 413


def test_non_list_instances_to_predict(mlp: Handler) -> None:
    for bad in (None, 5, "x", {"a": 1}):
        with pytest.raises(InputError):
            mlp.predict(bad)


# ------------------------------------------------------------------- fuzz


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(12 if depth < 3 else 7)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 7, 2**63, -(2**70), 10**30])
    if kind == 3:
        return rng.choice([0.5, -1e-300, 1e38, 3.5e38, float("nan"), float("inf")])
    if kind == 4:
        return rng.choice(["", "1", "abc", "nan", "1e999", "\x00", "é" * 5])
    if kind in (5, 6):
        return rng.uniform(-20, 20)
    if kind in (7, 8, 9):
        n = rng.choice([0, 1, 2, 8, 63, 64, 65, 128])
        return [_random_value(rng, depth + 1) for _ in range(n)]
    keys = rng.choice([["p0"], sf.FEATURES[:3], ["x", "instances"], [1, 2]])
    return {
        (k if isinstance(k, str) else k): _random_value(rng, depth + 1) for k in keys
    }


def _random_body(rng: random.Random) -> tuple[Any, str]:
    ctype = rng.choice(
        ["application/json", "text/csv", "", "application/jsonlines", "image/png"]
    )
    shape = rng.randrange(6)
    if shape == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))), ctype
    if shape == 1:
        row = [
            rng.choice(["1", "2.5", "", "x", "nan", '"', "1e400"]) for _ in range(64)
        ]
        return ",".join(row[: rng.choice([1, 63, 64, 65])]), ctype
    value = _random_value(rng)
    if shape == 2:
        value = {"instances": value}
    elif shape == 3:
        value = {"instances": [value, _random_value(rng)]}
    text = json.dumps(value)
    if rng.random() < 0.2:
        text = text[: rng.randrange(len(text) + 1)]  # truncated JSON
    return (text.encode() if rng.random() < 0.5 else text), ctype


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_random_malformed_input_only_raises_input_error(
    request: pytest.FixtureRequest, name: str
) -> None:
    handler: Handler = request.getfixturevalue(name)
    rng = random.Random(1234)
    outcomes = {"ok": 0, "error": 0}
    for _ in range(200):
        body, ctype = _random_body(rng)
        try:
            result = handler.handle(body, ctype)
        except InputError as exc:
            assert exc.status in (400, 413, 415, 422)
            assert "\n" not in exc.message
            outcomes["error"] += 1
        else:
            json.dumps(result, allow_nan=False)
            outcomes["ok"] += 1
    assert outcomes["error"] > 150


def test_non_finite_outputs_are_rejected_not_serialised(
    mlp: Handler, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = sf.digits_test_split()[0][:3]
    assert len(mlp.predict([[1e36] * 64])) == 1  # huge yet finite: served
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy overflow warning either
        with pytest.raises(InputError, match="out-of-range"):
            mlp.predict([[1e37] * 64])  # finite, but not once standardised

    def overflowing(x: np.ndarray) -> np.ndarray:
        out = np.zeros((len(x), 10), np.float32)
        out[1, 3] = np.inf
        return out

    monkeypatch.setattr(mlp, "predict_arrays", overflowing)
    with pytest.raises(InputError, match="instance 1: the model's output") as info:
        mlp.predict(rows)
    assert info.value.status == 422
    decoded = mlp.decode_outputs(np.array([[np.inf] + [0.0] * 9]))
    json.dumps(decoded, allow_nan=False)


def test_onnx_export_falls_back_to_a_cache_when_read_only(
    tmp_path: Path, mlp_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cloudnn.runtime.export as export

    model_dir = shutil.copytree(mlp_model_dir, tmp_path / "ro-model")
    real = export.export_model
    targets: list[Any] = []

    def read_only_dir(root: Path, fmt: str, output: Path | None = None) -> Any:
        targets.append(output)
        if output is None:  # writing into the model folder: refused (Azure mount)
            raise PermissionError(13, "Read-only file system")
        return real(root, fmt, output)

    monkeypatch.setattr(export, "export_model", read_only_dir)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    handler = Handler.from_model_dir(model_dir, runtime="onnx")
    assert targets[0] is None
    assert Path(targets[1]).is_relative_to(tmp_path / "tmp" / "cloudnn-onnx")
    assert not (model_dir / "model.onnx").exists()
    rows, _ = sf.digits_test_split()
    expected = Handler.from_model_dir(model_dir).predict(rows[:20])
    assert [p["label"] for p in handler.predict(rows[:20])] == [
        p["label"] for p in expected
    ]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without GPU")
def test_cuda_without_gpu_is_a_clear_error(mlp_model_dir: Path) -> None:
    from cloudnn.errors import CloudnnError

    with pytest.raises(CloudnnError, match="no CUDA GPU") as info:
        Handler.from_model_dir(mlp_model_dir, device="cuda")
    assert info.value.hint
    assert Handler.from_model_dir(mlp_model_dir, device="auto").device == "cpu"
