"""Wrong results with no warning: columns, blanks and shapes treated alike everywhere.

- columns are lined up by name wherever a header exists: data.validation /
  data.test, ``cloudnn evaluate --data``, and ``text/csv`` bodies with a
  header at the endpoint; files that cannot be lined up are refused, naming
  the missing or extra columns;
- blank cells are imputed with the training mean in training *and* serving,
  and the number imputed is said in the run's log;
- serving refuses an instance nested differently from the model's input,
  even when it holds as many numbers;
- the fit diagnosis does not claim a good fit without validation data;
- ``cloudnn evaluate`` prints the confusion matrix and the fit diagnosis.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import PYTHON, cli_env, write_csv
from serving_fixtures import train_model_dir

from cloudnn.errors import SpecError
from cloudnn.runtime.data import Preprocessor, load_datasets, load_labeled
from cloudnn.runtime.evaluate import fit_diagnosis, format_report
from cloudnn.spec import DataSpec

FEATURES = ["a", "b", "c", "d"]


def rows(n: int, seed: int) -> list[list[Any]]:
    """Only column a tells the class; b, c, d are noise on other scales."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        label = i % 2
        out.append(
            [
                round(float(rng.normal(4.0 * label, 0.5)), 4),
                round(float(rng.normal(50.0, 20.0)), 3),
                round(float(rng.normal(-3.0, 0.1)), 4),
                round(float(rng.normal(0.0, 5.0)), 3),
                label,
            ]
        )
    return out


def reorder(table: list[list[Any]], order: list[int]) -> list[list[Any]]:
    return [[r[i] for i in order] for r in table]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("columns")
    write_csv(folder / "train.csv", [*FEATURES, "label"], rows(200, 0))
    test = rows(60, 1)
    write_csv(folder / "test.csv", [*FEATURES, "label"], test)
    # the same rows, the columns in another order
    order = [4, 1, 3, 0, 2]
    header = [[*FEATURES, "label"][i] for i in order]
    write_csv(folder / "test_reordered.csv", header, reorder(test, order))
    # the same rows under other names
    write_csv(folder / "test_renamed.csv", ["w", "x", "y", "z", "label"], test)
    extra = [[*r[:4], 7, r[4]] for r in test]
    write_csv(folder / "test_extra.csv", [*FEATURES, "e", "label"], extra)
    return folder


def spec_dict(folder: Path, **data: Any) -> dict[str, Any]:
    return {
        "name": "columns",
        "task": "classification",
        "model": {"type": "mlp", "hidden_sizes": [16], "dropout": 0.0},
        "data": {"train": str(folder / "train.csv"), "target": "label", **data},
        "train": {"epochs": 15, "batch_size": 32, "seed": 0},
    }


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    spec = spec_dict(data_dir, test=str(data_dir / "test.csv"))
    return train_model_dir(tmp_path_factory.mktemp("columns-run"), spec)


# --------------------------------------------------------- splits (item 1)


def test_validation_and_test_files_are_lined_up_by_name(data_dir: Path) -> None:
    in_order = DataSpec(
        train=str(data_dir / "train.csv"),
        validation=str(data_dir / "test.csv"),
        test=str(data_dir / "test.csv"),
    )
    reordered = in_order.model_copy(
        update={
            "validation": str(data_dir / "test_reordered.csv"),
            "test": str(data_dir / "test_reordered.csv"),
        }
    )
    _, va, te, pre = load_datasets(in_order, "classification")
    _, va2, te2, pre2 = load_datasets(reordered, "classification")
    assert pre.feature_names == pre2.feature_names == FEATURES
    assert np.array_equal(va.x, va2.x) and np.array_equal(te.x, te2.x)
    assert np.array_equal(te.y, te2.y)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("test_renamed.csv", "has no column(s) 'a', 'b', 'c', 'd' that data.train has"),
        ("test_extra.csv", "has column(s) 'e' that data.train does not have"),
    ],
)
def test_files_that_cannot_be_lined_up_are_refused(
    data_dir: Path, name: str, message: str
) -> None:
    spec = DataSpec(train=str(data_dir / "train.csv"), test=str(data_dir / name))
    with pytest.raises(SpecError) as info:
        load_datasets(spec, "classification")
    assert info.value.field == "data.test" and message in info.value.reason


def test_explicit_features_ignore_other_columns(data_dir: Path) -> None:
    spec = DataSpec(
        train=str(data_dir / "train.csv"),
        test=str(data_dir / "test_extra.csv"),
        features=["d", "a"],
    )
    _, _, te, pre = load_datasets(spec, "classification")
    assert pre.feature_names == ["d", "a"] and te.x.shape == (60, 2)


# ------------------------------------------------- evaluate --data (item 1)


def test_evaluate_data_is_lined_up_by_name(model_dir: Path, data_dir: Path) -> None:
    from cloudnn.runtime.evaluate_run import evaluate_run

    straight = evaluate_run(model_dir, data=str(data_dir / "test.csv"))
    shuffled = evaluate_run(model_dir, data=str(data_dir / "test_reordered.csv"))
    assert straight["data"]["accuracy"] > 0.9
    assert shuffled["data"] == straight["data"]

    with pytest.raises(SpecError) as info:
        evaluate_run(model_dir, data=str(data_dir / "test_renamed.csv"))
    assert info.value.field == "--data"
    assert "no column(s) 'a', 'b', 'c', 'd'" in info.value.reason
    with pytest.raises(SpecError, match="'e'"):
        evaluate_run(model_dir, data=str(data_dir / "test_extra.csv"))


def test_evaluate_without_column_names_in_the_model(
    model_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    """A preprocess.json written before columns were saved still lines up by
    feature name."""
    pre = Preprocessor.load(model_dir)
    old = Preprocessor.from_dict({**pre.to_dict(), "columns": None})
    spec = DataSpec(train=str(data_dir / "train.csv"), target="label")
    a = load_labeled(data_dir / "test.csv", spec, old)
    b = load_labeled(data_dir / "test_reordered.csv", spec, old)
    assert np.array_equal(a.x, b.x)


# ------------------------------------------------------ serving (items 1, 6)


@pytest.fixture(scope="module")
def handler(model_dir: Path) -> Any:
    from cloudnn.runtime.serve import Handler

    return Handler.from_model_dir(model_dir)


def _csv(header: list[str] | None, table: list[list[Any]]) -> str:
    lines = [",".join(header)] if header else []
    lines += [",".join(str(v) for v in r) for r in table]
    return "\n".join(lines) + "\n"


def test_serving_csv_header_is_lined_up_by_name(handler: Any) -> None:
    test = rows(12, 1)
    features = [r[:4] for r in test]
    expected = handler.predict(features)
    order = [3, 0, 2, 1]
    body = _csv([FEATURES[i] for i in order], reorder(features, order))
    assert handler.predict(handler.parse_request(body, "text/csv")) == expected
    # the training file's label column may come along: it is dropped
    with_label = _csv(["label", *FEATURES], [[r[4], *r[:4]] for r in test])
    assert handler.predict(handler.parse_request(with_label, "text/csv")) == expected
    # no header: by position, as documented
    plain = _csv(None, features)
    assert handler.predict(handler.parse_request(plain, "text/csv")) == expected


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (["a", "b", "c", "x"], "lacks feature column(s) 'd'"),
        (["a", "b", "c", "d", "zz"], "has column(s) 'zz' that the training data"),
        (["w", "x", "y", "z"], "lacks feature column(s) 'a', 'b', 'c', 'd'"),
    ],
)
def test_serving_csv_header_that_cannot_be_lined_up(
    handler: Any, header: list[str], message: str
) -> None:
    from cloudnn.runtime.serve import InputError

    body = _csv(header, [[1.0] * len(header)])
    with pytest.raises(InputError) as info:
        handler.handle(body, "text/csv")
    assert info.value.status == 422 and message in info.value.message


def test_serving_imputes_blanks_like_training(handler: Any, model_dir: Path) -> None:
    pre = Preprocessor.load(model_dir)
    assert pre.fill is not None
    row = rows(1, 5)[0][:4]
    filled = [pre.fill[0], *row[1:]]
    expected = handler.predict([filled])
    assert handler.predict([[None, *row[1:]]]) == expected  # JSON null
    body = _csv(None, [["", *row[1:]]])  # an empty CSV cell
    assert handler.predict(handler.parse_request(body, "text/csv")) == expected
    keyed = dict(zip(FEATURES, [None, *row[1:]], strict=True))
    assert handler.predict([keyed]) == expected  # {"a": null, ...}
    assert handler.predict([{**keyed, "label": 1}]) == expected  # a training column
    from cloudnn.runtime.serve import InputError

    with pytest.raises(InputError, match="key\\(s\\) 'id' that the training data"):
        handler.predict([{**keyed, "id": 7}])
    # NaN is not a blank: refused, as a NaN in training data is
    with pytest.raises(InputError) as info:
        handler.handle(
            "[[" + ",".join(["NaN", "1", "2", "3"]) + "]]", "application/json"
        )
    assert info.value.status == 422


def test_training_imputes_blank_cells_with_the_train_mean(tmp_path: Path) -> None:
    table = rows(40, 2)
    table[3][1] = ""
    path = write_csv(tmp_path / "t.csv", [*FEATURES, "label"], table)
    said: list[str] = []
    tr, _, _, pre = load_datasets(
        DataSpec(train=str(path), split={"validation": 0.0, "test": 0.0}),
        "classification",
        log=said.append,
    )
    assert pre.fill is not None
    again = pre.transform([[table[3][0], None, *table[3][2:4]]])
    assert np.array_equal(again, tr.x[3:4])  # serving == training, exactly
    assert pre.extra["imputed"] == {
        "cells": 1,
        "train": 1,
        "validation": 0,
        "test": 0,
        "columns": {"b": 1},
    }
    assert said and "imputed 1 blank cell(s)" in said[0] and "b 1" in said[0]


@pytest.mark.parametrize(
    "instance",
    [
        [[6.5, 2.7], [5.9, 1.9]],  # the example: 4 values, wrong rank
        [[[6.5, 2.7, 5.9, 1.9]]],
        [[6.5], [2.7], [5.9], [1.9]],
    ],
    ids=["2x2", "1x1x4", "4x1"],
)
def test_serving_refuses_a_wrong_rank_instance(handler: Any, instance: Any) -> None:
    from cloudnn.runtime.serve import InputError

    with pytest.raises(InputError) as info:
        handler.handle({"instances": [instance]}, "application/json")
    assert info.value.status == 422
    assert "expected 4 features per instance" in info.value.message


def test_a_cnn_still_takes_flat_rows_and_its_own_shape(tmp_path: Path) -> None:
    table = [[*(float(v) for v in range(i, i + 4)), i % 2] for i in range(20)]
    path = write_csv(tmp_path / "px.csv", ["p0", "p1", "p2", "p3", "y"], table)
    spec = DataSpec(train=str(path), split={"validation": 0.0, "test": 0.0})
    tr, _, _, pre = load_datasets(spec, "classification", input_shape=(1, 2, 2))
    flat = [r[:4] for r in table[:2]]
    nested = [np.asarray(r).reshape(1, 2, 2).tolist() for r in flat]
    assert np.array_equal(pre.transform(flat), tr.x[:2])
    assert np.array_equal(pre.transform(nested), tr.x[:2])
    with pytest.raises(ValueError, match="nested as"):
        pre.transform([np.asarray(r).reshape(2, 2).tolist() for r in flat])


# ------------------------------------------------------------ fit (item 5)


def test_no_validation_data_is_not_a_good_fit() -> None:
    history = [
        {"epoch": e, "train_loss": 1.0 / e, "train_metric": 0.97, "val_loss": None}
        for e in range(1, 6)
    ]
    fit = fit_diagnosis(history, task="classification")
    assert fit["status"] == "unknown"
    assert "no validation data" in fit["reason"]
    # underfitting still shows on the training data alone
    low = [{**r, "train_metric": 0.4} for r in history]
    assert fit_diagnosis(low, task="classification")["status"] == "underfitting"


def test_a_run_without_validation_reports_unknown_fit(
    tmp_path: Path,
    data_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLOUDNN_RUN_ID", "no-validation")  # as inside a job
    table = rows(60, 3)
    table[0][2] = ""
    table[1][2] = ""
    path = write_csv(tmp_path / "train.csv", [*FEATURES, "label"], table)
    spec = spec_dict(data_dir, split={"validation": 0.0, "test": 0.2})
    spec["data"]["train"] = str(path)
    spec["train"]["epochs"] = 20
    model = train_model_dir(tmp_path / "run", spec)
    metrics = json.loads((model.parent / "output" / "metrics.json").read_text())
    assert metrics["fit"]["status"] == "unknown"
    assert "no validation data" in metrics["fit"]["reason"]
    report = (model.parent / "output" / "report.txt").read_text()
    assert "good_fit" not in report
    # the job's log says how many blank cells were imputed
    events = [
        json.loads(line.split("::cloudnn:: ", 1)[1])
        for line in capsys.readouterr().out.splitlines()
        if "::cloudnn:: " in line
    ]
    logs = [e["message"] for e in events if e.get("event") == "log"]
    assert any("imputed 2 blank cell(s)" in m for m in logs), logs
    assert (
        json.loads((model / "preprocess.json").read_text())["extra"]["imputed"]["cells"]
        == 2
    )


# ----------------------------------------------------- evaluate's text output


def test_format_report_prints_the_confusion_matrix_fit_and_imputed() -> None:
    report = {
        "data": {
            "accuracy": 0.75,
            "f1_macro": 0.7,
            "count": 8,
            "confusion_matrix": [[3, 1], [1, 3]],
            "labels": ["cat", "dog"],
        },
        "fit": {"status": "good_fit", "reason": "train and validation agree"},
        "imputed": {"cells": 4},
    }
    text = format_report(report, confusion=True)
    assert "confusion matrix (rows: true, columns: predicted)" in text
    lines = text.splitlines()
    header = next(ln for ln in lines if "cat" in ln and "dog" in ln)
    assert header.split() == ["cat", "dog"]
    assert ["cat", "3", "1"] in [ln.split() for ln in lines]
    assert ["dog", "1", "3"] in [ln.split() for ln in lines]
    assert "fit        good_fit: train and validation agree" in text
    assert "4 blank cell(s) imputed" in text
    assert "confusion" not in format_report(report)  # report.txt stays short


@pytest.mark.slow
def test_cli_evaluate_lines_up_columns_and_prints_matrix_and_fit(
    tmp_path: Path, data_dir: Path, cloudnn_home: Path
) -> None:
    """The issue's report, end to end: test rows under b,a,label score as in order."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(spec_dict(data_dir)))
    env = cli_env(cloudnn_home)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PYTHON, "-m", "cloudnn.cli.main", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )

    trained = run("train", str(spec), "--quiet")
    assert trained.returncode == 0, trained.stderr
    straight = run("evaluate", "latest", "--data", str(data_dir / "test.csv"))
    shuffled = run("evaluate", "latest", "--data", str(data_dir / "test_reordered.csv"))
    assert straight.returncode == 0 and shuffled.returncode == 0, shuffled.stderr
    assert shuffled.stdout == straight.stdout
    assert "confusion matrix (rows: true, columns: predicted)" in shuffled.stdout
    assert "\nfit " in shuffled.stdout
    as_json = run("evaluate", "latest", "--data", str(data_dir / "test.csv"), "--json")
    assert json.loads(as_json.stdout)["data"]["accuracy"] > 0.9

    renamed = run("evaluate", "latest", "--data", str(data_dir / "test_renamed.csv"))
    assert renamed.returncode == 2
    first, hint = renamed.stderr.splitlines()[:2]
    assert first.startswith("error: ")
    assert "test_renamed.csv has no column(s) 'a', 'b', 'c', 'd'" in first
    assert hint.startswith("To fix: ") and "Traceback" not in renamed.stderr
