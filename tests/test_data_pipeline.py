"""Data formats, splits and the saved preprocessing that serving relies on."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import write_csv

from cloudnn.errors import SpecError
from cloudnn.runtime.data import (
    Preprocessor,
    load_datasets,
    load_labeled,
    split_indices,
)
from cloudnn.spec import DataSpec


@pytest.fixture
def table(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(200):
        label = ["cat", "dog", "eel"][i % 3]
        a = rng.normal(loc=i % 3)
        b = "" if i == 5 else f"{rng.normal(10, 2):.3f}"  # one missing value
        rows.append([f"{a:.4f}", b, "north" if i % 2 else "south", label])
    return write_csv(tmp_path / "t.csv", ["a", "b", "region", "animal"], rows)


def test_csv_split_is_deterministic_stratified_and_disjoint(table: Path) -> None:
    spec = DataSpec(train=str(table), target="animal", group_column="region")
    tr1, va1, te1, pre = load_datasets(spec, "classification")
    tr2, va2, te2, _ = load_datasets(spec, "classification")
    assert np.array_equal(te1.x, te2.x) and np.array_equal(va1.y, va2.y)
    assert len(tr1) + len(va1) + len(te1) == 200
    assert pre.classes == ["cat", "dog", "eel"]
    assert pre.feature_names == ["a", "b"]  # target and group column excluded
    counts = np.bincount(te1.y, minlength=3)
    assert counts.max() - counts.min() <= 1  # stratified
    assert te1.groups is not None and set(te1.groups) <= {"north", "south"}
    assert np.isfinite(tr1.x).all()  # the missing value was imputed
    # statistics come from the train split only
    raw_train = tr1.x * np.asarray(pre.scale) + np.asarray(pre.shift)
    assert np.allclose(raw_train.mean(0), pre.shift, atol=1e-4)


def test_other_split_seed_gives_other_split(table: Path) -> None:
    labels = ["x", "y"] * 50
    a = split_indices(labels, validation=0.1, test=0.2, seed=0, stratify=True)
    b = split_indices(labels, validation=0.1, test=0.2, seed=1, stratify=True)
    assert not np.array_equal(a[2], b[2])
    assert not set(a[0]) & set(a[2]) and not set(a[1]) & set(a[2])


def test_preprocessor_round_trip_and_serving_inputs(
    table: Path, tmp_path: Path
) -> None:
    spec = DataSpec(train=str(table), target="animal", group_column="region")
    _, _, test, pre = load_datasets(spec, "classification")
    pre.save(tmp_path)
    again = Preprocessor.load(tmp_path)
    assert again == pre
    raw = load_labeled(table, spec, again)
    with open(table, newline="") as fh:
        rows = list(csv.DictReader(fh))
    as_lists = again.transform([[float(r["a"]), float(r["b"] or 10)] for r in rows[:3]])
    as_dicts = again.transform([{"a": r["a"], "b": r["b"] or 10} for r in rows[:3]])
    assert np.array_equal(as_lists, as_dicts)
    assert np.allclose(as_lists[0], raw.x[0])
    assert again.decode([2, 0]) == ["eel", "cat"]
    with pytest.raises(ValueError, match="expected 2 features per instance, got 3"):
        again.transform([[1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match="NaN"):
        again.transform([[float("nan"), 1.0]])
    with pytest.raises(ValueError, match="missing feature"):
        again.transform([{"a": 1.0}])
    json.dumps(again.to_dict())  # plain JSON


def test_non_numeric_feature_names_the_column(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "bad.csv", ["a", "colour", "y"], [[1, "red", 0], [2, "blue", 1]]
    )
    with pytest.raises(SpecError) as info:
        load_datasets(DataSpec(train=str(path)), "classification")
    assert info.value.field == "data.features"
    assert "'colour'" in str(info.value)


def test_single_class_label_is_refused(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "one.csv", ["a", "y"], [[i, 1] for i in range(20)])
    with pytest.raises(SpecError, match="distinct"):
        load_datasets(DataSpec(train=str(path)), "classification")


def test_npz_sequences_and_input_shape(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "s.npz", x=rng.normal(size=(60, 7, 2)), y=np.arange(60) % 2)
    tr, _, _, pre = load_datasets(
        DataSpec(train=str(tmp_path / "s.npz")), "classification"
    )
    assert pre.kind == "sequence" and pre.input_shape == (7, 2)
    assert tr.x.shape[1:] == (7, 2) and tr.x.dtype == np.float32
    flat = write_csv(
        tmp_path / "flat.csv",
        [f"p{i}" for i in range(4)] + ["y"],
        [[i, i + 1, i + 2, i + 3, i % 2] for i in range(30)],
    )
    tr, _, _, pre = load_datasets(
        DataSpec(train=str(flat)), "classification", input_shape=(1, 2, 2)
    )
    assert tr.x.shape[1:] == (1, 2, 2)
    with pytest.raises(SpecError) as info:
        load_datasets(
            DataSpec(train=str(flat)), "classification", input_shape=(1, 3, 3)
        )
    assert info.value.field == "model.input_shape"


def test_image_folder(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg

    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / "img" / cls).mkdir(parents=True)
        for i in range(6):
            mpimg.imsave(
                tmp_path / "img" / cls / f"{i}.png", rng.random((10, 12)), cmap="gray"
            )
    spec = DataSpec(train=str(tmp_path / "img"), image_size=(8, 8), grayscale=True)
    tr, _, _, pre = load_datasets(spec, "classification")
    assert pre.kind == "image" and pre.input_shape == (1, 8, 8)
    assert pre.classes == ["a", "b"]
    assert tr.x.shape[1:] == (1, 8, 8)


def test_text_vocabulary_from_train_only(tmp_path: Path) -> None:
    rows = [["good thing", "pos"], ["bad thing", "neg"]] * 20 + [["zebra", "pos"]]
    path = write_csv(tmp_path / "t.csv", ["text", "label"], rows)
    spec = DataSpec.model_validate(
        {"train": str(path), "text": {"column": "text", "max_length": 4}}
    )
    tr, _, _, pre = load_datasets(spec, "classification")
    assert pre.kind == "text" and tr.x.dtype == np.int64 and tr.x.shape[1] == 4
    ids = pre.transform(["good good unknownword", "bad"])
    assert ids[0, 2] == 1  # unknown word
    assert ids[1, 1] == 0  # padding


def test_parquet(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table(
        {"a": [float(i) for i in range(40)], "y": [i % 2 for i in range(40)]}
    )
    pq.write_table(table, tmp_path / "d.parquet")
    tr, va, te, pre = load_datasets(
        DataSpec(train=str(tmp_path / "d.parquet")), "classification"
    )
    assert pre.feature_names == ["a"] and pre.classes == [0, 1]
    assert len(tr) + len(va) + len(te) == 40
