"""cloudnn.runtime.data: formats, splits, train-only statistics, serving transform."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import write_csv

from cloudnn.errors import SpecError
from cloudnn.runtime.data import (
    PAD,
    UNK,
    Dataset,
    Preprocessor,
    load_datasets,
    split_indices,
    tokenize,
)
from cloudnn.spec import DataSpec


def _spec(**kw: Any) -> DataSpec:
    return DataSpec.model_validate(kw)


def _no_split(**kw: Any) -> DataSpec:
    """All of data.train is the training split, in file order."""
    return _spec(split={"validation": 0.0, "test": 0.0}, **kw)


@pytest.fixture
def animals(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(300):
        label = ["cat", "dog", "eel"][i % 3]
        rows.append(
            [
                f"{rng.normal(i % 3):.4f}",
                f"{rng.normal(10, 2):.3f}",
                "north" if i % 2 else "south",
                label,
            ]
        )
    return write_csv(tmp_path / "animals.csv", ["a", "b", "region", "animal"], rows)


# ------------------------------------------------------------------ torch-free


def test_importing_data_loads_neither_torch_nor_optional_readers() -> None:
    code = (
        "import sys, cloudnn.runtime.data\n"
        "bad = [m for m in ('torch', 'pyarrow', 'PIL', 'matplotlib') "
        "if m in sys.modules]\n"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------ CSV


def test_csv_defaults_and_groups(animals: Path) -> None:
    tr, va, te, pre = load_datasets(
        _spec(train=str(animals), group_column="region"), "classification"
    )
    assert pre.kind == "tabular" and pre.task == "classification"
    assert pre.feature_names == ["a", "b"]  # the last column is the target
    assert pre.classes == ["cat", "dog", "eel"] and pre.num_outputs == 3
    assert (len(tr), len(va), len(te)) == (210, 30, 60)
    assert tr.x.dtype == np.float32 and tr.x.shape == (210, 2)
    assert tr.y.dtype == np.int64 and set(tr.y) == {0, 1, 2}
    assert te.groups is not None and set(te.groups) <= {"north", "south"}
    assert isinstance(tr, Dataset) and len(tr) == 210


def test_csv_explicit_features_and_tsv_channel_folder(tmp_path: Path) -> None:
    folder = tmp_path / "channel"
    folder.mkdir()
    rows = [[i, i * 2, i % 2, "x"] for i in range(40)]
    with open(folder / "train.tsv", "w", newline="") as fh:
        w = csv.writer(fh, delimiter="\t")
        w.writerow(["f1", "f2", "label", "note"])
        w.writerows(rows)
    tr, _, _, pre = load_datasets(
        _no_split(train=str(folder), target="label", features=["f2"]),
        "classification",
    )
    assert pre.feature_names == ["f2"] and tr.x.shape == (40, 1)
    assert pre.classes == [0, 1]


def test_split_is_deterministic_stratified_disjoint(animals: Path) -> None:
    spec = _spec(
        train=str(animals),
        group_column="region",
        split={"validation": 0.1, "test": 0.2},
    )
    a = load_datasets(spec, "classification")
    b = load_datasets(spec, "classification")
    for one, two in zip(a[:3], b[:3], strict=True):
        assert np.array_equal(one.x, two.x) and np.array_equal(one.y, two.y)
    other = load_datasets(spec, "classification", seed=7)  # seed= overrides
    assert not np.array_equal(a[2].x, other[2].x)
    for ds in a[:3]:  # 100 per class: stratified splits hold the same share each
        counts = np.bincount(ds.y, minlength=3)
        assert counts.max() == counts.min()

    labels = ["p"] * 70 + ["q"] * 30
    tr, va, te = split_indices(labels, validation=0.1, test=0.2, seed=3, stratify=True)
    assert sorted(np.concatenate([tr, va, te]).tolist()) == list(range(100))
    assert not (set(tr) & set(va) or set(tr) & set(te) or set(va) & set(te))
    assert [labels[i] for i in te].count("q") == 6  # 20% of each class
    again = split_indices(labels, validation=0.1, test=0.2, seed=3, stratify=True)
    assert all(np.array_equal(x, y) for x, y in zip((tr, va, te), again, strict=True))


def test_regression_split_is_not_stratified_and_targets_are_float(
    tmp_path: Path,
) -> None:
    path = write_csv(tmp_path / "r.csv", ["x", "y"], [[i, i * 0.5] for i in range(50)])
    tr, va, te, pre = load_datasets(_spec(train=str(path)), "regression")
    assert tr.y.dtype == np.float32 and tr.y.ndim == 1
    assert len(tr) + len(va) + len(te) == 50
    assert pre.classes is None and pre.num_outputs == 1
    with pytest.raises(ValueError, match="classification"):
        pre.decode([0])


def test_statistics_come_from_the_train_split_only(tmp_path: Path) -> None:
    train = write_csv(
        tmp_path / "tr.csv", ["a", "b", "y"], [[i, 5.0, i % 2] for i in range(20)]
    )
    # validation/test are far away: their values must not move the statistics
    val = write_csv(
        tmp_path / "va.csv", ["a", "b", "y"], [[1000, 99, 0], [2000, 99, 1]]
    )
    tst = write_csv(tmp_path / "te.csv", ["a", "b", "y"], [[-500, 99, 1], [0, 99, 0]])
    spec = _spec(train=str(train), validation=str(val), test=str(tst))
    tr, va, te, pre = load_datasets(spec, "classification")
    a = np.arange(20.0)
    assert pre.normalize == "standard"
    assert np.allclose(pre.shift, [a.mean(), 5.0])
    assert np.allclose(pre.scale, [a.std(), 1.0])  # constant column: scale 1
    assert np.allclose(tr.x.mean(0), 0.0, atol=1e-6)
    assert np.allclose(va.x[:, 0], (np.array([1000, 2000]) - a.mean()) / a.std())
    assert len(tr) == 20 and len(va) == 2 and len(te) == 2

    _, va2, _, mm = load_datasets(
        _spec(train=str(train), validation=str(val), test=str(tst), normalize="minmax"),
        "classification",
    )
    assert mm.shift == [0.0, 5.0] and mm.scale == [19.0, 1.0]
    assert va2.x[0, 0] == pytest.approx(1000 / 19)


def test_split_statistics_ignore_held_out_rows(animals: Path) -> None:
    spec = _spec(train=str(animals), group_column="region", split={"seed": 4})
    tr, _, te, pre = load_datasets(spec, "classification")
    restored = tr.x * np.asarray(pre.scale) + np.asarray(pre.shift)
    assert np.allclose(restored.mean(0), pre.shift, atol=1e-4)
    assert not np.allclose(te.x.mean(0), 0.0, atol=1e-3)


def test_missing_values_are_imputed_with_the_train_mean(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "m.csv", ["a", "y"], [[1, 0], ["", 1], [3, 0], [5, 1], [None, 0]]
    )
    tr, _, _, pre = load_datasets(_no_split(train=str(path)), "classification")
    assert pre.fill == [3.0]
    assert np.isfinite(tr.x).all() and tr.x[1, 0] == 0.0  # the mean, normalised


# ------------------------------------------------------------ other formats


def test_npz_tabular_custom_key_groups_and_multi_target(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3))
    np.savez(
        tmp_path / "d.npz",
        x=x,
        label=np.arange(40) % 4,
        groups=np.array(["g1", "g2"] * 20),
    )
    tr, va, te, pre = load_datasets(
        _spec(train=str(tmp_path / "d.npz"), target="label"), "classification"
    )
    assert pre.feature_names == ["x0", "x1", "x2"] and pre.classes == [0, 1, 2, 3]
    assert tr.groups is not None and set(tr.groups) == {"g1", "g2"}
    assert len(tr) + len(va) + len(te) == 40

    np.savez(tmp_path / "r.npz", x=x, y=rng.normal(size=(40, 2)))
    tr, _, _, pre = load_datasets(_spec(train=str(tmp_path / "r.npz")), "regression")
    assert tr.y.shape[1:] == (2,) and tr.y.dtype == np.float32
    assert pre.num_outputs == 2


def test_npz_sequences_are_normalised_per_feature_over_time(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 5, 2)) * np.array([1.0, 100.0]) + np.array([0, 50])
    np.savez(tmp_path / "s.npz", x=x, y=np.arange(30) % 2)
    tr, _, _, pre = load_datasets(
        _no_split(train=str(tmp_path / "s.npz")), "classification"
    )
    assert pre.kind == "sequence" and pre.input_shape == (5, 2)
    assert len(pre.shift) == 2  # one statistic per feature, not per timestep
    assert np.allclose(pre.shift, x.mean(axis=(0, 1)))
    assert np.allclose(tr.x.reshape(-1, 2).std(0), 1.0, atol=1e-5)
    again = pre.transform(x[:3].tolist())
    assert np.array_equal(again, tr.x[:3])
    with pytest.raises(ValueError, match=r"expected instances of shape \[5, 2\]"):
        pre.transform(rng.normal(size=(2, 4, 2)))


def test_npz_images_normalised_per_channel(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    x = rng.random((24, 3, 4, 5)) + np.array([0.0, 1.0, 2.0])[None, :, None, None]
    np.savez(tmp_path / "i.npz", x=x, y=np.arange(24) % 2)
    tr, _, _, pre = load_datasets(
        _no_split(train=str(tmp_path / "i.npz")), "classification"
    )
    assert pre.kind == "image" and pre.input_shape == (3, 4, 5)
    assert np.allclose(pre.shift, x.mean(axis=(0, 2, 3)))
    channel_last = x[:2].transpose(0, 2, 3, 1).tolist()  # (H, W, C) also accepted
    assert np.array_equal(pre.transform(channel_last), tr.x[:2])
    assert np.array_equal(pre.transform(x[:2]), tr.x[:2])


def test_parquet_and_missing_pyarrow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "a": [float(i) for i in range(40)],
            "kind": ["odd" if i % 2 else "even" for i in range(40)],
        }
    )
    pq.write_table(table, tmp_path / "d.parquet")
    spec = _spec(train=str(tmp_path / "d.parquet"))
    tr, va, te, pre = load_datasets(spec, "classification")
    assert pre.feature_names == ["a"] and pre.classes == ["even", "odd"]
    assert len(tr) + len(va) + len(te) == 40

    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(SpecError) as info:
        load_datasets(spec, "classification")
    assert info.value.field == "data.format"
    assert 'pip install "cloudnn[parquet]"' in (info.value.hint or "")


def _image_folder(root: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg

    rng = np.random.default_rng(0)
    for cls in ("circle", "square"):
        (root / cls).mkdir(parents=True)
        for i in range(5):
            mpimg.imsave(root / cls / f"{i}.png", rng.random((12, 10, 3)))


def test_image_folder_colour_resize_and_serving_the_decoded_file(
    tmp_path: Path,
) -> None:
    from PIL import Image

    _image_folder(tmp_path / "img")
    spec = _no_split(train=str(tmp_path / "img"), image_size=(6, 5))
    tr, _, _, pre = load_datasets(spec, "classification")
    assert pre.kind == "image" and pre.input_shape == (3, 6, 5)
    assert pre.classes == ["circle", "square"] and list(tr.y) == [0] * 5 + [1] * 5
    assert len(pre.shift) == 3  # per channel
    # a client posts the decoded file (H, W, C bytes, even RGBA): same input
    first = np.asarray(Image.open(tmp_path / "img" / "circle" / "0.png"))
    assert first.shape == (12, 10, 4)
    assert np.allclose(pre.transform([first.tolist()]), tr.x[:1], atol=1e-6)
    with pytest.raises(ValueError, match=r"expected instances of shape \[3, 6, 5\]"):
        pre.transform([np.zeros((2, 6, 5))])

    gray = _no_split(train=str(tmp_path / "img"), image_size=(4, 4), grayscale=True)
    tr, _, _, pre = load_datasets(gray, "classification", input_shape=(1, 4, 4))
    assert tr.x.shape[1:] == (1, 4, 4) and pre.grayscale
    with pytest.raises(SpecError) as info:
        load_datasets(gray, "classification", input_shape=(1, 2, 8))
    assert info.value.field == "model.input_shape"


# ----------------------------------------------------------------------- text


def test_text_vocabulary_padding_and_transform(tmp_path: Path) -> None:
    train = write_csv(
        tmp_path / "tr.csv",
        ["review", "label"],
        [["Great film, GREAT cast!", "pos"], ["awful plot", "neg"]] * 5
        + [["rare words here and there", "pos"]],
    )
    test = write_csv(tmp_path / "te.csv", ["review", "label"], [["zebra great", "pos"]])
    spec = _spec(
        train=str(train),
        validation=str(test),
        test=str(test),
        text={"column": "review", "max_length": 3, "min_freq": 2, "vocab_size": 6},
    )
    tr, _, te, pre = load_datasets(spec, "classification")
    assert tokenize("Don't STOP-me now") == ["don't", "stop", "me", "now"]
    assert pre.kind == "text" and pre.input_shape == (3,) and pre.max_length == 3
    # ids 0/1 are padding/unknown; counts: great 10, awful/cast/film/plot 5 each
    assert pre.vocab == {"great": 2, "awful": 3, "cast": 4, "film": 5}
    assert "zebra" not in pre.vocab  # only seen outside train
    assert tr.x.dtype == np.int64 and tr.x.shape == (11, 3)
    assert tr.x[0].tolist() == [2, 5, 2]  # truncated to max_length
    assert tr.x[1].tolist() == [3, UNK, PAD]
    assert te.x[0].tolist() == [UNK, 2, PAD]
    assert np.array_equal(pre.transform(["Great film, GREAT cast!"]), tr.x[:1])
    assert np.array_equal(pre.transform([{"review": "awful plot"}]), tr.x[1:2])
    assert np.array_equal(pre.transform(np.array(["awful plot"])), tr.x[1:2])
    with pytest.raises(ValueError, match="expected a string"):
        pre.transform([3])
    with pytest.raises(ValueError, match="'review'"):
        pre.transform([{"text": "hi"}])


# --------------------------------------------------------------- preprocessor


def test_preprocessor_json_round_trip_and_transform_matches_training(
    tmp_path: Path,
) -> None:
    rows = [[i * 1.5, (i * 7) % 5, f"{i % 3}"] for i in range(30)]
    path = write_csv(tmp_path / "t.csv", ["height", "width", "kind"], rows)
    tr, _, _, pre = load_datasets(_no_split(train=str(path)), "classification")
    pre.save(tmp_path)
    loaded = Preprocessor.load(tmp_path)
    assert loaded == pre
    assert Preprocessor.from_dict(json.loads(json.dumps(pre.to_dict()))) == pre
    raw = [[float(a), float(b)] for a, b, _ in rows]
    assert np.array_equal(loaded.transform(raw), tr.x)  # exactly, not approx
    as_dicts = [{"width": b, "height": a} for a, b in raw]
    assert np.array_equal(loaded.transform(as_dicts), tr.x)
    assert np.array_equal(loaded.transform(np.asarray(raw)), tr.x)
    assert np.array_equal(loaded.transform(raw[0]), tr.x[:1])  # one flat row
    assert loaded.decode(np.array([2, 0])) == [2, 0] and loaded.classes == [0, 1, 2]
    assert loaded.decode([1]) == [1] and loaded.num_outputs == 3


def test_transform_rejects_wrong_shapes_with_one_line_messages(animals: Path) -> None:
    _, _, _, pre = load_datasets(
        _spec(train=str(animals), group_column="region"), "classification"
    )
    bad: list[tuple[Any, str]] = [
        ([[1.0, 2.0, 3.0]], "expected 2 features per instance, got 3"),
        ([1.0, 2.0, 3.0], "expected a list of instances with 2 features each"),
        ([[1.0], [1.0, 2.0]], "consistent shape"),
        ([{"a": 1.0}], "missing feature"),
        ([{"a": 1.0, "b": "x"}], "must be numbers"),
        ([[float("nan"), 1.0]], "NaN"),
        ([], "no instances"),
        ("1,2", "expected a list of instances"),
    ]
    for instances, message in bad:
        with pytest.raises(ValueError, match=message) as info:
            pre.transform(instances)
        assert "\n" not in str(info.value)


def test_flat_rows_reshaped_by_input_shape(tmp_path: Path) -> None:
    rows = [[*(float(v) for v in range(i, i + 64)), i % 2] for i in range(20)]
    path = write_csv(tmp_path / "px.csv", [f"p{i}" for i in range(64)] + ["y"], rows)
    tr, _, _, pre = load_datasets(
        _no_split(train=str(path)), "classification", input_shape=(1, 8, 8)
    )
    assert pre.input_shape == (1, 8, 8) and tr.x.shape == (20, 1, 8, 8)
    assert np.array_equal(pre.transform([r[:64] for r in rows[:2]]), tr.x[:2])
    with pytest.raises(ValueError, match="expected 64 features per instance, got 10"):
        pre.transform([[0.0] * 10])
    with pytest.raises(SpecError) as info:
        load_datasets(_spec(train=str(path)), "classification", input_shape=(1, 9, 9))
    assert info.value.field == "model.input_shape" and "81" in str(info.value)


# --------------------------------------------------------------------- errors


def _field(spec: DataSpec, task: str = "classification") -> str:
    with pytest.raises(SpecError) as info:
        load_datasets(spec, task)
    assert "\n" not in info.value.reason
    return info.value.field


def test_bad_data_names_the_spec_field(tmp_path: Path) -> None:
    ok = write_csv(tmp_path / "ok.csv", ["a", "y"], [[i, i % 2] for i in range(10)])
    assert _field(_spec(train=str(ok), target="label")) == "data.target"
    assert _field(_spec(train=str(ok), features=["a", "zz"])) == "data.features"
    assert _field(_spec(train=str(ok), group_column="g")) == "data.group_column"
    assert _field(_spec(train=str(ok), text={"column": "review"})) == "data.text.column"

    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert _field(_spec(train=str(empty))) == "data.train"
    header = tmp_path / "header.csv"
    header.write_text("a,y\n")
    assert _field(_spec(train=str(header))) == "data.train"

    one = write_csv(tmp_path / "one.csv", ["a", "y"], [[i, "same"] for i in range(10)])
    with pytest.raises(SpecError, match="distinct") as info:
        load_datasets(_spec(train=str(one)), "classification")
    assert info.value.field == "data.target"

    text = write_csv(tmp_path / "s.csv", ["a", "colour", "y"], [[1, "red", 0]] * 4)
    with pytest.raises(SpecError, match="'colour'") as info:
        load_datasets(_spec(train=str(text)), "classification")
    assert info.value.field == "data.features"

    unseen = write_csv(tmp_path / "unseen.csv", ["a", "y"], [[1, 7]])
    assert _field(_spec(train=str(ok), validation=str(unseen))) == "data.target"

    words = write_csv(tmp_path / "w.csv", ["a", "y"], [[1, "high"], [2, "low"]])
    assert _field(_spec(train=str(words)), "regression") == "data.target"

    np.savez(tmp_path / "nokeys.npz", features=np.zeros((4, 2)))
    assert _field(_spec(train=str(tmp_path / "nokeys.npz"))) == "data.train"
    np.savez(tmp_path / "short.npz", x=np.zeros((4, 2)), y=np.zeros(3))
    assert _field(_spec(train=str(tmp_path / "short.npz"))) == "data.train"
    np.savez(tmp_path / "flat.npz", x=np.zeros(4), y=np.zeros(4))
    assert _field(_spec(train=str(tmp_path / "flat.npz"))) == "data.train"

    (tmp_path / "imgs" / "a").mkdir(parents=True)
    assert _field(_spec(train=str(tmp_path / "imgs"))) == "data.train"
