"""Bad data is refused before a run exists: `cloudnn validate` and `cloudnn train`.

Each case builds one bad data set in tmp_path and a spec that names it. The
contract, for both commands: exit 2, stderr's first line
``error: data.<field>: <reason>`` (model.* for model/data mismatches), the
second ``To fix: ...``, no traceback, and nothing in CLOUDNN_HOME. The job's
loader (cloudnn.runtime.data) must refuse the same data with the same
SpecError, since remote data is only ever seen by the job.
"""

from __future__ import annotations

import io
import json
import sqlite3
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import PYTHON, cli_env, write_csv

from cloudnn.datacheck import (
    DataInfo,
    check_data,
    check_local_resources,
    estimate_parameters,
    machine_facts,
)
from cloudnn.errors import SpecError
from cloudnn.spec import Spec, spec_from_dict

Maker = Callable[[Path], dict[str, Any]]


def spec_dict(
    train: Path | str,
    *,
    task: str = "classification",
    model: dict[str, Any] | None = None,
    **data: Any,
) -> dict[str, Any]:
    return {
        "name": "bad-data",
        "task": task,
        "model": model or {"type": "mlp", "hidden_sizes": [8]},
        "data": {"train": str(train), **data},
        "train": {"epochs": 1, "batch_size": 8},
    }


def good_rows(n: int = 40, classes: int = 2) -> list[list[Any]]:
    return [[i * 0.5, (i * 7) % 5, i % classes] for i in range(n)]


def good_csv(folder: Path, name: str = "train.csv") -> Path:
    return write_csv(folder / name, ["a", "b", "label"], good_rows())


def text_file(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def png_bytes(h: int = 6, w: int = 5, mode: str = "RGB") -> bytes:
    from PIL import Image

    rng = np.random.default_rng(h * 100 + w)
    shape = (h, w, 3) if mode == "RGB" else (h, w)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(buf, "PNG")
    return buf.getvalue()


def image_folder(root: Path, classes: dict[str, list[bytes]]) -> Path:
    for name, images in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i, data in enumerate(images):
            (root / name / f"{i}.png").write_bytes(data)
    return root


def npz(path: Path, **arrays: Any) -> Path:
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path


# ------------------------------------------------------------------- corpus


@dataclass(frozen=True)
class Bad:
    id: str
    field: str  # exact field on the first stderr line
    reason: str  # a substring of what follows "<field>: "
    make: Maker


def _folder_given_as_csv(d: Path) -> dict[str, Any]:
    (d / "data").mkdir()
    text_file(d / "data" / "notes.txt", "not data")
    return spec_dict(d / "data", format="csv")


def _folder_of_nothing(d: Path) -> dict[str, Any]:
    (d / "data").mkdir()
    text_file(d / "data" / "notes.txt", "not data")
    return spec_dict(d / "data")


def _npz_named_csv(d: Path) -> dict[str, Any]:
    path = npz(d / "train.csv", x=np.zeros((4, 2)), y=np.arange(4) % 2)
    return spec_dict(path)


def _latin1_csv(d: Path) -> dict[str, Any]:
    body = "a,b,label\n1,2,0\ncaf\xe9,3,1\n".encode("latin-1")
    return spec_dict(text_file(d / "train.csv", body))


def _nul_csv(d: Path) -> dict[str, Any]:
    return spec_dict(text_file(d / "train.csv", "a,b,label\n1,2\x00,0\n3,4,1\n"))


def _empty_csv(d: Path) -> dict[str, Any]:
    return spec_dict(text_file(d / "train.csv", ""))


def _header_only_csv(d: Path) -> dict[str, Any]:
    return spec_dict(text_file(d / "train.csv", "a,b,label\n"))


def _ragged_csv(d: Path) -> dict[str, Any]:
    return spec_dict(text_file(d / "train.csv", "a,b,label\n1,2,0\n3,4,5,1\n"))


def _duplicate_column(d: Path) -> dict[str, Any]:
    rows = [[1, 2, 3, i % 2] for i in range(10)]
    return spec_dict(write_csv(d / "train.csv", ["a", "b", "a", "label"], rows))


def _string_in_numeric(d: Path) -> dict[str, Any]:
    rows = good_rows()
    rows[7][1] = "seven"
    return spec_dict(write_csv(d / "train.csv", ["a", "b", "label"], rows))


def _inf_cell(d: Path) -> dict[str, Any]:
    rows = good_rows()
    rows[3][0] = "inf"
    return spec_dict(write_csv(d / "train.csv", ["a", "b", "label"], rows))


def _nan_text_cell(d: Path) -> dict[str, Any]:
    rows = good_rows()
    rows[5][1] = "NaN"
    return spec_dict(write_csv(d / "train.csv", ["a", "b", "label"], rows))


def _missing_target(d: Path) -> dict[str, Any]:
    return spec_dict(good_csv(d), target="species")


def _missing_feature(d: Path) -> dict[str, Any]:
    return spec_dict(good_csv(d), features=["a", "zz"])


def _target_in_features(d: Path) -> dict[str, Any]:
    # no data.target: the last column, label, is the target, and it is listed
    return spec_dict(good_csv(d), features=["a", "b", "label"])


def _missing_group(d: Path) -> dict[str, Any]:
    return spec_dict(good_csv(d), group_column="region")


def _missing_text_column(d: Path) -> dict[str, Any]:
    rows = [[f"text number {i}", i % 2] for i in range(20)]
    path = write_csv(d / "train.csv", ["text", "label"], rows)
    return spec_dict(path, model={"type": "rnn"}, text={"column": "review"})


def _one_class(d: Path) -> dict[str, Any]:
    rows = [[i, i * 2, "cat"] for i in range(20)]
    return spec_dict(write_csv(d / "train.csv", ["a", "b", "label"], rows))


def _blank_labels(d: Path) -> dict[str, Any]:
    rows = good_rows()
    rows[4][2] = ""
    return spec_dict(write_csv(d / "train.csv", ["a", "b", "label"], rows))


def _nan_label(d: Path) -> dict[str, Any]:
    rows = good_rows()
    rows[6][2] = "nan"
    return spec_dict(write_csv(d / "train.csv", ["a", "b", "label"], rows))


def _regression_text_target(d: Path) -> dict[str, Any]:
    rows = [[i, i * 2, "high" if i % 2 else "low"] for i in range(20)]
    path = write_csv(d / "train.csv", ["a", "b", "price"], rows)
    return spec_dict(path, task="regression")


def _regression_blank_target(d: Path) -> dict[str, Any]:
    rows = [[i, i * 2, i * 1.5] for i in range(20)]
    rows[9][2] = ""
    path = write_csv(d / "train.csv", ["a", "b", "price"], rows)
    return spec_dict(path, task="regression")


def _test_other_names(d: Path) -> dict[str, Any]:
    test = write_csv(d / "test.csv", ["x1", "x2", "label"], good_rows(10))
    return spec_dict(good_csv(d), test=str(test))


def _test_extra_column(d: Path) -> dict[str, Any]:
    rows = [[*r[:2], 9, r[2]] for r in good_rows(10)]
    test = write_csv(d / "test.csv", ["a", "b", "c", "label"], rows)
    return spec_dict(good_csv(d), test=str(test))


def _test_unseen_label(d: Path) -> dict[str, Any]:
    test = write_csv(d / "test.csv", ["a", "b", "label"], [[1, 2, 7], [3, 4, 0]])
    return spec_dict(good_csv(d), test=str(test))


def _validation_other_kind(d: Path) -> dict[str, Any]:
    val = npz(d / "val.npz", x=np.zeros((6, 3, 2)), y=np.arange(6) % 2)
    return spec_dict(good_csv(d), validation=str(val))


def _unnamed_index_column(d: Path) -> dict[str, Any]:
    rows = [[i, *r] for i, r in enumerate(good_rows())]
    return spec_dict(write_csv(d / "train.csv", ["", "a", "b", "label"], rows))


def _npz_wrong_keys(d: Path) -> dict[str, Any]:
    return spec_dict(npz(d / "d.npz", features=np.zeros((8, 2)), labels=np.zeros(8)))


def _npz_missing_target_key(d: Path) -> dict[str, Any]:
    path = npz(d / "d.npz", x=np.zeros((8, 2)), y=np.arange(8) % 2)
    return spec_dict(path, target="label")


def _npz_lengths(d: Path) -> dict[str, Any]:
    return spec_dict(npz(d / "d.npz", x=np.zeros((10, 2)), y=np.arange(9) % 2))


def _npz_1d_x(d: Path) -> dict[str, Any]:
    return spec_dict(npz(d / "d.npz", x=np.arange(10.0), y=np.arange(10) % 2))


def _npz_2d_y(d: Path) -> dict[str, Any]:
    return spec_dict(
        npz(d / "d.npz", x=np.zeros((10, 2)), y=np.eye(2)[np.arange(10) % 2])
    )


def _npz_object_array(d: Path) -> dict[str, Any]:
    y = np.array([{"label": i % 2} for i in range(6)], dtype=object)
    return spec_dict(npz(d / "d.npz", x=np.zeros((6, 2)), y=y))


def _npz_not_a_zip(d: Path) -> dict[str, Any]:
    return spec_dict(text_file(d / "d.npz", "a,b,label\n1,2,0\n"))


def _npz_single_npy(d: Path) -> dict[str, Any]:
    path = d / "d.npz"
    with open(path, "wb") as fh:
        np.save(fh, np.zeros((4, 2)))
    return spec_dict(path)


def _npz_nan_x(d: Path) -> dict[str, Any]:
    x = np.random.default_rng(0).normal(size=(30, 3))
    x[17, 2] = np.nan
    return spec_dict(npz(d / "d.npz", x=x, y=np.arange(30) % 2))


def _npz_inf_y_regression(d: Path) -> dict[str, Any]:
    y = np.arange(20.0)
    y[3] = np.inf
    path = npz(d / "d.npz", x=np.ones((20, 2)), y=y)
    return spec_dict(path, task="regression")


def _npz_string_x(d: Path) -> dict[str, Any]:
    x = np.array([["a", "b"]] * 6)
    return spec_dict(npz(d / "d.npz", x=x, y=np.arange(6) % 2))


def _npz_empty_x(d: Path) -> dict[str, Any]:
    return spec_dict(npz(d / "d.npz", x=np.zeros((0, 3)), y=np.zeros(0)))


def _npz_groups_length(d: Path) -> dict[str, Any]:
    path = npz(
        d / "d.npz", x=np.zeros((8, 2)), y=np.arange(8) % 2, groups=np.array(["g"] * 5)
    )
    return spec_dict(path)


def _images_one_class(d: Path) -> dict[str, Any]:
    root = image_folder(d / "img", {"cat": [png_bytes()] * 4})
    return spec_dict(root, model={"type": "cnn"})


def _images_corrupt_png(d: Path) -> dict[str, Any]:
    root = image_folder(
        d / "img", {"cat": [png_bytes()] * 3, "dog": [png_bytes(), b"garbage"]}
    )
    return spec_dict(root, model={"type": "cnn"})


def _images_truncated_png(d: Path) -> dict[str, Any]:
    whole = png_bytes(16, 16)
    root = image_folder(
        d / "img",
        {"cat": [png_bytes(16, 16)] * 3, "dog": [png_bytes(16, 16), whole[:60]]},
    )
    return spec_dict(root, model={"type": "cnn"})


def _images_mixed_sizes(d: Path) -> dict[str, Any]:
    root = image_folder(
        d / "img", {"cat": [png_bytes(6, 5)] * 3, "dog": [png_bytes(8, 8)] * 3}
    )
    return spec_dict(root, model={"type": "cnn"})


def _images_none(d: Path) -> dict[str, Any]:
    (d / "img" / "cat").mkdir(parents=True)
    (d / "img" / "dog").mkdir(parents=True)
    text_file(d / "img" / "cat" / "readme.txt", "no images")
    return spec_dict(d / "img", model={"type": "cnn"})


def _images_format_on_a_file(d: Path) -> dict[str, Any]:
    return spec_dict(good_csv(d), format="images", model={"type": "cnn"})


def _images_regression_names(d: Path) -> dict[str, Any]:
    root = image_folder(
        d / "img", {"small": [png_bytes()] * 2, "large": [png_bytes()] * 2}
    )
    return spec_dict(root, task="regression", model={"type": "cnn"})


def _images_test_unseen_class(d: Path) -> dict[str, Any]:
    root = image_folder(d / "img", {"cat": [png_bytes()] * 3, "dog": [png_bytes()] * 3})
    test = image_folder(d / "test", {"cat": [png_bytes()], "eel": [png_bytes()]})
    return spec_dict(root, test=str(test), model={"type": "cnn"})


def _parquet_not_parquet(d: Path) -> dict[str, Any]:
    return spec_dict(text_file(d / "train.parquet", "a,b,label\n1,2,0\n"))


def _parquet_string_feature(d: Path) -> dict[str, Any]:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "a": [float(i) for i in range(20)],
            "colour": ["red", "blue"] * 10,
            "label": [i % 2 for i in range(20)],
        }
    )
    pq.write_table(table, d / "train.parquet")
    return spec_dict(d / "train.parquet")


def _parquet_nan(d: Path) -> dict[str, Any]:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    a = pa.array([float(i) for i in range(19)] + [float("nan")], from_pandas=False)
    table = pa.table({"a": a, "label": [i % 2 for i in range(20)]})
    pq.write_table(table, d / "train.parquet")
    return spec_dict(d / "train.parquet")


CORPUS = [
    Bad("folder-given-as-csv", "data.train", "no .csv/.tsv file in folder",
        _folder_given_as_csv),
    Bad("folder-of-no-data", "data.format", "cannot tell the format",
        _folder_of_nothing),
    Bad("npz-named-csv", "data.train", "looks like a ZIP archive", _npz_named_csv),
    Bad("csv-not-utf8", "data.train", "is not UTF-8 text", _latin1_csv),
    Bad("csv-nul-byte", "data.train", "NUL byte", _nul_csv),
    Bad("csv-empty", "data.train", "train.csv is empty", _empty_csv),
    Bad("csv-header-only", "data.train", "has a header but no rows",
        _header_only_csv),
    Bad("csv-ragged-row", "data.train", "line 3 has 4 fields", _ragged_csv),
    Bad("csv-duplicate-column", "data.train", "'a' appears twice",
        _duplicate_column),
    Bad("csv-string-in-numeric", "data.features", "column 'b' is not numeric",
        _string_in_numeric),
    Bad("csv-inf-cell", "data.features", "non-finite value 'inf'", _inf_cell),
    Bad("csv-nan-cell", "data.features", "non-finite value 'NaN'", _nan_text_cell),
    Bad("csv-missing-target", "data.target", "no column 'species'",
        _missing_target),
    Bad("csv-missing-feature", "data.features", "no column(s) 'zz'",
        _missing_feature),
    Bad("csv-target-in-features", "data.features",
        "lists the target column 'label'", _target_in_features),
    Bad("csv-missing-group", "data.group_column", "no column 'region'",
        _missing_group),
    Bad("csv-missing-text-column", "data.text.column", "no column 'review'",
        _missing_text_column),
    Bad("csv-one-class", "data.target", "1 distinct value", _one_class),
    Bad("csv-blank-label", "data.target", "1 row(s) of train.csv have no label",
        _blank_labels),
    Bad("csv-nan-label", "data.target", "have a NaN or infinite label",
        _nan_label),
    Bad("regression-text-target", "data.target",
        "regression targets must be numbers", _regression_text_target),
    Bad("regression-blank-target", "data.target", "missing or not finite",
        _regression_blank_target),
    Bad("test-columns-other-names", "data.test",
        "test.csv has no column(s) 'a', 'b' that data.train has", _test_other_names),
    Bad("test-extra-column", "data.test",
        "test.csv has column(s) 'c' that data.train does not have",
        _test_extra_column),
    Bad("test-unseen-label", "data.target", "label 7 in test.csv does not occur",
        _test_unseen_label),
    Bad("validation-other-kind", "data.validation",
        "holds sequence data, data.train holds tabular data",
        _validation_other_kind),
    Bad("csv-unnamed-index-column", "data.train", "column 1 has no name",
        _unnamed_index_column),
    Bad("npz-wrong-keys", "data.train", "needs arrays 'x' and 'y'",
        _npz_wrong_keys),
    Bad("npz-missing-target-key", "data.target", "needs arrays 'x' and 'label'",
        _npz_missing_target_key),
    Bad("npz-mismatched-lengths", "data.train", "x has 10 rows, y has 9",
        _npz_lengths),
    Bad("npz-1d-x", "data.train", "got 1-D", _npz_1d_x),
    Bad("npz-2d-y", "data.target", "expected one label per row", _npz_2d_y),
    Bad("npz-object-array", "data.train", "dtype object", _npz_object_array),
    Bad("npz-not-a-zip", "data.train", "cannot read d.npz as .npz", _npz_not_a_zip),
    Bad("npz-single-npy", "data.train", "a single .npy array", _npz_single_npy),
    Bad("npz-nan-in-x", "data.train", "NaN or infinite value", _npz_nan_x),
    Bad("npz-inf-regression-y", "data.target", "missing or not finite",
        _npz_inf_y_regression),
    Bad("npz-string-x", "data.train", "x must be numeric", _npz_string_x),
    Bad("npz-empty-x", "data.train", "x has no rows", _npz_empty_x),
    Bad("npz-groups-length", "data.train", "groups has 5", _npz_groups_length),
    Bad("images-one-class", "data.train", "one class only", _images_one_class),
    Bad("images-corrupt-png", "data.train", "cannot read image",
        _images_corrupt_png),
    Bad("images-truncated-png", "data.train", "cannot read image",
        _images_truncated_png),
    Bad("images-mixed-sizes", "data.image_size", "different sizes",
        _images_mixed_sizes),
    Bad("images-none", "data.train", "no images under", _images_none),
    Bad("images-format-on-a-file", "data.train", "is not a folder of class folders",
        _images_format_on_a_file),
    Bad("images-regression-names", "data.target",
        "regression targets must be numbers", _images_regression_names),
    Bad("images-test-unseen-class", "data.target", "label 'eel'",
        _images_test_unseen_class),
    Bad("parquet-not-parquet", "data.train", "cannot read train.parquet as Parquet",
        _parquet_not_parquet),
    Bad("parquet-string-feature", "data.features", "column 'colour' is not numeric",
        _parquet_string_feature),
    Bad("parquet-nan", "data.features", "non-finite value nan", _parquet_nan),
]  # fmt: skip

#: data that cannot feed the model the spec asks for
MODEL_CASES = [
    Bad(
        "cnn-on-rows-without-input-shape",
        "model.input_shape",
        "cnn needs images (C, H, W)",
        lambda d: spec_dict(good_csv(d), model={"type": "cnn"}),
    ),
    Bad(
        "input-shape-product",
        "model.input_shape",
        "[1, 3, 3] holds 9 values, the data has 2 per row",
        lambda d: spec_dict(
            good_csv(d), model={"type": "cnn", "input_shape": [1, 3, 3]}
        ),
    ),
    Bad(
        "mlp-on-text",
        "model.type",
        "mlp does not take text",
        lambda d: spec_dict(
            write_csv(
                d / "t.csv", ["text", "label"], [["a b", i % 2] for i in range(9)]
            ),
            text={"column": "text"},
        ),
    ),
]

ALL = CORPUS + MODEL_CASES


def write_spec(case: Bad, folder: Path) -> Path:
    raw = case.make(folder)
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def load(case: Bad, folder: Path) -> Spec:
    raw = case.make(folder)
    return spec_from_dict(raw, base_dir=folder)


def test_enough_cases() -> None:
    assert len(CORPUS) >= 30
    assert len({c.id for c in ALL}) == len(ALL)
    assert all(c.field.startswith("data.") for c in CORPUS)


@pytest.mark.parametrize("case", ALL, ids=[c.id for c in ALL])
def test_check_data_names_the_field(case: Bad, tmp_path: Path) -> None:
    spec = load(case, tmp_path)
    with pytest.raises(SpecError) as info:
        check_data(spec)
    err = info.value
    assert err.field == case.field, str(err)
    assert case.reason in err.reason, str(err)
    assert "\n" not in str(err) and err.hint


@pytest.mark.parametrize("case", CORPUS, ids=[c.id for c in CORPUS])
def test_the_job_refuses_the_same_data_alike(case: Bad, tmp_path: Path) -> None:
    """One source of truth: the job's loader (remote data) says the same."""
    from cloudnn.runtime.data import load_datasets

    spec = load(case, tmp_path)
    with pytest.raises(SpecError) as checked:
        check_data(spec)
    with pytest.raises(SpecError) as loaded:
        load_datasets(
            spec.data,
            spec.task,
            input_shape=getattr(spec.model, "input_shape", None),
            log=lambda message: None,
        )
    assert (loaded.value.field, loaded.value.reason) == (
        checked.value.field,
        checked.value.reason,
    )


def _assert_refused(proc: subprocess.CompletedProcess[str], case: Bad) -> None:
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert lines and lines[0].startswith(f"error: {case.field}: "), proc.stderr
    assert case.reason in lines[0], lines[0]
    assert len(lines) >= 2 and lines[1].startswith("To fix: "), proc.stderr
    assert "--resume" not in proc.stderr


def _home_is_empty(home: Path) -> None:
    runs = home / "runs"
    assert not runs.exists() or not any(runs.iterdir()), list(runs.iterdir())
    db = home / "registry.db"
    if db.exists():
        with sqlite3.connect(db) as conn:
            count = conn.execute("SELECT count(*) FROM runs").fetchone()[0]
        assert count == 0
    assert not db.exists(), "cloudnn train created a run registry for bad data"


def _cli(args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "cloudnn.cli.main", *args],
        capture_output=True,
        text=True,
        env=cli_env(home),
        timeout=120,
    )


@pytest.mark.parametrize("case", ALL, ids=[c.id for c in ALL])
def test_validate_refuses(case: Bad, tmp_path: Path, cloudnn_home: Path) -> None:
    spec = write_spec(case, tmp_path)
    proc = _cli(["validate", str(spec)], cloudnn_home)
    _assert_refused(proc, case)
    assert "ok:" not in proc.stdout
    assert not any(cloudnn_home.iterdir())


@pytest.mark.parametrize("case", ALL, ids=[c.id for c in ALL])
def test_train_refuses_before_a_run_exists(
    case: Bad, tmp_path: Path, cloudnn_home: Path
) -> None:
    spec = write_spec(case, tmp_path)
    proc = _cli(["train", str(spec), "--quiet"], cloudnn_home)
    _assert_refused(proc, case)
    _home_is_empty(cloudnn_home)


# -------------------------------------------------------------- good data


def test_good_data_passes_and_is_described(tmp_path: Path) -> None:
    rows = good_rows(60, classes=3)
    rows[2][0] = ""  # a blank cell: imputed, counted
    path = write_csv(tmp_path / "train.csv", ["a", "b", "label"], rows)
    reordered = [[c, b, a] for a, b, c in good_rows(9, 3)]
    test = write_csv(tmp_path / "test.csv", ["label", "b", "a"], reordered)
    spec = spec_from_dict(spec_dict(path, test=str(test)))
    info = check_data(spec)
    assert info.format == "csv" and info.kind == "tabular"
    assert info.feature_names == ("a", "b") and info.input_shape == (2,)
    assert info.num_classes == 3 and info.complete and info.missing_cells == 1
    assert info.checked == ("data.train", "data.test") and info.skipped == ()
    assert info.rows_sampled == 69


def test_remote_data_is_left_to_the_job(tmp_path: Path) -> None:
    spec = spec_from_dict(
        spec_dict("s3://bucket/train.csv", test=str(good_csv(tmp_path)))
    )
    info = check_data(spec)
    assert info.skipped == ("data.train",) and info.checked == ("data.test",)
    assert info.kind is None and info.format == "remote"


def test_a_local_split_beside_remote_training_data_is_checked_alone(
    tmp_path: Path,
) -> None:
    one_class = write_csv(tmp_path / "val.csv", ["a", "b", "label"], [[1, 2, 0]] * 5)
    spec = spec_from_dict(spec_dict("s3://bucket/train.csv", validation=str(one_class)))
    info = check_data(spec)
    assert info.checked == ("data.validation",) and info.skipped == ("data.train",)
    bad = write_csv(tmp_path / "bad.csv", ["a", "b", "label"], [[1, "x", 0]] * 5)
    with pytest.raises(SpecError, match="'b' is not numeric"):
        check_data(spec_from_dict(spec_dict("s3://b/t.csv", validation=str(bad))))


def test_script_models_only_need_readable_paths(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("print('hi')\n")
    weird = text_file(tmp_path / "anything.bin", b"\x00\x01 not a csv")
    raw = spec_dict(weird, model={"script": "train.py"})
    info = check_data(spec_from_dict(raw, base_dir=tmp_path))
    assert info.format == "script" and info.checked == ("data.train",)


def test_a_large_csv_is_sampled_not_scanned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cloudnn.datacheck as dc

    monkeypatch.setattr(dc, "SAMPLE_CELLS", 300)
    monkeypatch.setattr(dc, "MIN_SAMPLE_ROWS", 50)
    rows = good_rows(500)
    rows[450][1] = "late text"  # beyond the sample: the job finds it
    path = write_csv(tmp_path / "big.csv", ["a", "b", "label"], rows)
    info = check_data(spec_from_dict(spec_dict(path)))
    assert info.rows_sampled == 100 and not info.complete
    assert info.num_classes == 2


def test_npz_nan_found_by_streaming_the_array(tmp_path: Path) -> None:
    x = np.zeros((5000, 8), dtype=np.float32)
    x[4999, 7] = np.inf
    spec = spec_from_dict(
        spec_dict(npz(tmp_path / "d.npz", x=x, y=np.arange(5000) % 2))
    )
    with pytest.raises(SpecError, match=r"the first at index \[4999, 7\]"):
        check_data(spec)


def test_compressed_npz_and_images_pass(tmp_path: Path) -> None:
    path = tmp_path / "c.npz"
    np.savez_compressed(path, x=np.ones((30, 4, 2)), y=np.arange(30) % 3)
    info = check_data(spec_from_dict(spec_dict(path, model={"type": "rnn"})))
    assert info.kind == "sequence" and info.input_shape == (4, 2)
    assert info.num_classes == 3

    root = image_folder(
        tmp_path / "img",
        {"a": [png_bytes(6, 5, "L")] * 2, "b": [png_bytes(9, 9, "L")] * 2},
    )
    raw = spec_dict(root, model={"type": "cnn"}, image_size=[4, 4])
    info = check_data(spec_from_dict(raw))
    assert info.kind == "image" and info.input_shape == (1, 4, 4)


# ------------------------------------------------------------- resources


def _spec(**model: Any) -> Spec:
    return spec_from_dict(
        {
            "name": "r",
            "task": "classification",
            "model": model or {"type": "mlp"},
            "data": {"train": "s3://b/t.csv"},
        }
    )


INFO = DataInfo(format="csv", kind="tabular", raw_shape=(4,), input_shape=(4,),
                num_classes=3)  # fmt: skip


@pytest.mark.parametrize(
    "model",
    [
        {"type": "mlp", "hidden_sizes": [16, 8], "batch_norm": True},
        {"type": "cnn", "channels": [4, 8], "input_shape": [1, 2, 2]},
        {"type": "rnn", "cell": "gru", "num_layers": 2, "bidirectional": True},
        {"type": "rnn", "cell": "lstm", "num_layers": 2},
    ],
    ids=["mlp", "cnn", "bi-gru", "lstm"],
)
def test_parameter_estimate_is_exact(model: dict[str, Any]) -> None:
    torch = pytest.importorskip("torch")
    from cloudnn.runtime.data import Preprocessor
    from cloudnn.runtime.models import build_model

    spec = _spec(**model)
    shape = (1, 2, 2) if model["type"] == "cnn" else (4,)
    info = DataInfo(format="csv", kind="tabular", raw_shape=(4,), input_shape=shape,
                    num_classes=3)  # fmt: skip
    pre = Preprocessor(kind="tabular", task="classification", input_shape=shape,
                       classes=[0, 1, 2])  # fmt: skip
    net = build_model(spec.model, pre)
    assert isinstance(net, torch.nn.Module)
    assert estimate_parameters(spec, info) == sum(p.numel() for p in net.parameters())


def test_huge_model_is_refused_with_its_field() -> None:
    spec = _spec(type="mlp", hidden_sizes=[100_000_000_000])
    with pytest.raises(SpecError) as info:
        check_local_resources(
            spec, INFO, cpu_count=2, memory_bytes=16 * 2**30, gpu_count=0
        )
    assert info.value.field == "model.hidden_sizes"
    assert "parameters" in info.value.reason and "16.0 GiB" in info.value.reason
    # without data facts the estimate is a lower bound, still far too big
    with pytest.raises(SpecError):
        check_local_resources(
            spec, DataInfo(format="remote"), cpu_count=2, memory_bytes=2**34
        )


def test_processes_are_bounded_by_cores_and_gpus() -> None:
    spec = spec_from_dict(
        {
            "name": "r",
            "task": "classification",
            "model": {"type": "mlp"},
            "data": {"train": "s3://b/t.csv"},
            "resources": {"processes_per_node": 100000},
        }
    )
    with pytest.raises(SpecError) as info:
        check_local_resources(spec, INFO, cpu_count=2, memory_bytes=2**34)
    assert info.value.field == "resources.processes_per_node"
    assert "2 CPU core(s)" in info.value.reason and "at most 2" in str(info.value.hint)
    with pytest.raises(SpecError, match="2 GPU"):
        check_local_resources(spec, INFO, cpu_count=64, memory_bytes=2**34, gpu_count=2)
    two = spec.model_copy(
        update={
            "resources": spec.resources.model_copy(update={"processes_per_node": 2})
        }
    )
    check_local_resources(two, INFO, cpu_count=2, memory_bytes=2**34)


def test_cuda_asked_for_without_a_gpu() -> None:
    spec = spec_from_dict(
        {
            "name": "r",
            "task": "classification",
            "model": {"type": "mlp"},
            "data": {"train": "s3://b/t.csv"},
            "providers": {"local": {"device": "cuda"}},
        }
    )
    with pytest.raises(SpecError) as info:
        check_local_resources(spec, INFO, cpu_count=4, memory_bytes=2**34)
    assert info.value.field == "providers.local.device"


def test_machine_facts_feed_check_local_resources(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    facts = machine_facts()
    assert set(facts) == {"cpu_count", "memory_bytes", "gpu_count"}
    assert facts["cpu_count"] >= 1 and facts["memory_bytes"] >= 0
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert machine_facts()["gpu_count"] == 0
    check_local_resources(_spec(), INFO, **machine_facts())


def test_datacheck_imports_no_torch() -> None:
    code = (
        "import sys, cloudnn.datacheck\n"
        "bad = [m for m in ('torch', 'pyarrow', 'PIL', 'matplotlib') "
        "if m in sys.modules]\n"
        "assert not bad, bad"
    )
    subprocess.run([PYTHON, "-c", code], check=True)


def test_validate_reports_the_first_bad_file_only(
    tmp_path: Path, cloudnn_home: Path
) -> None:
    good = tmp_path / "good"
    good.mkdir()
    bad = tmp_path / "bad"
    bad.mkdir()
    good_spec = good / "spec.yaml"
    good_spec.write_text(yaml.safe_dump(spec_dict(good_csv(good))))
    bad_spec = write_spec(CORPUS[5], bad)
    proc = _cli(["validate", str(good_spec), str(bad_spec)], cloudnn_home)
    assert proc.returncode == 2
    assert proc.stdout.count("ok:") == 1
    assert json.dumps(proc.stderr).count("error:") == 1
