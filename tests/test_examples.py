"""Every example trains end to end; the digits models beat scikit-learn's MLP."""

from __future__ import annotations

import json
import os
import subprocess
import warnings
from pathlib import Path

import pytest
from conftest import PYTHON, REPO

from cloudnn.client import Client
from cloudnn.runtime.data import load_datasets
from cloudnn.spec import load_spec

pytestmark = pytest.mark.slow
EXAMPLES = REPO / "examples"


def _prepare(name: str) -> Path:
    folder = EXAMPLES / name
    subprocess.run([PYTHON, "prepare.py"], cwd=folder, check=True, capture_output=True)
    return folder / "spec.yaml"


def _sklearn_accuracy(spec_path: Path) -> float:
    """scikit-learn's MLPClassifier on exactly the split cloudnn trained on."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    spec = load_spec(spec_path)
    train, _, test, _ = load_datasets(spec.data, spec.task)
    flat = lambda a: a.reshape(len(a), -1)  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier(random_state=0, max_iter=300).fit(flat(train.x), train.y)
    return float(clf.score(flat(test.x), test.y))


@pytest.mark.parametrize("name", ["digits-mlp", "digits-cnn"])
def test_digits_beats_sklearn_mlp(name: str) -> None:
    spec = _prepare(name)
    run = Client(quiet=True).train(spec)
    ours = run.metrics["test"]["accuracy"]
    theirs = _sklearn_accuracy(spec)
    print(
        f"\n{name}: cloudnn test accuracy {ours:.4f}, sklearn MLPClassifier {theirs:.4f}"
    )
    assert ours >= 0.95
    assert ours >= theirs
    # the split really is the same: both evaluated the same number of rows
    assert run.metrics["test"]["count"] == len(
        load_datasets(load_spec(spec).data, "classification")[2]
    )


@pytest.mark.parametrize(
    ("name", "floor"), [("sequence-rnn", 0.85), ("text-transformer", 0.85)]
)
def test_generated_examples_learn(name: str, floor: float) -> None:
    run = Client(quiet=True).train(_prepare(name))
    print(f"\n{name}: test accuracy {run.metrics['test']['accuracy']:.4f}")
    assert run.metrics["test"]["accuracy"] >= floor


def test_bring_your_own_script_runs_unchanged() -> None:
    run = Client(quiet=True).train(_prepare("bring-your-own-script"))
    assert run.state == "SUCCEEDED"
    assert (Path(run.model_uri) / "model.pt").is_file()  # written to SM_MODEL_DIR
    assert run.metrics["test_accuracy"] >= 0.9  # the script's own metrics.json
    log = "\n".join(run.logs())
    assert "test accuracy" in log
    assert "installing" in log and "requirements.txt" in log


def test_script_sees_the_sagemaker_and_vertex_contract(
    tmp_path: Path, write_spec
) -> None:
    script = tmp_path / "probe.py"
    script.write_text(
        "import json, os, sys\n"
        "keys = ['SM_MODEL_DIR', 'SM_CHANNEL_TRAIN', 'SM_HPS', 'AIP_MODEL_DIR',"
        " 'RANK', 'WORLD_SIZE', 'SM_NUM_CPUS']\n"
        "out = {k: os.environ.get(k) for k in keys}\n"
        "out['argv'] = sys.argv[1:]\n"
        "out['files'] = sorted(os.listdir(os.environ['SM_CHANNEL_TRAIN']))\n"
        "os.makedirs(os.environ['SM_MODEL_DIR'], exist_ok=True)\n"
        "open(os.path.join(os.environ['SM_OUTPUT_DATA_DIR'], 'metrics.json'), 'w')"
        ".write(json.dumps({'probe': 1}))\n"
        "print('PROBE ' + json.dumps(out))\n"
    )
    data = tmp_path / "rows.csv"
    data.write_text("a,b\n1,2\n")
    spec = write_spec(
        {
            "name": "probe",
            "task": "classification",
            "model": {
                "script": str(script),
                "hyperparameters": {"epochs": 3, "lr": 0.1},
            },
            "data": {"train": str(data)},
        }
    )
    run = Client(quiet=True).train(spec)
    line = next(x for x in run.logs() if x.startswith("PROBE "))
    seen = json.loads(line[len("PROBE ") :])
    assert seen["argv"] == ["--epochs", "3", "--lr", "0.1"]
    assert json.loads(seen["SM_HPS"]) == {"epochs": 3, "lr": 0.1}
    assert seen["SM_MODEL_DIR"] == seen["AIP_MODEL_DIR"] == run.model_uri
    assert seen["SM_NUM_CPUS"] == str(os.cpu_count())
    assert seen["files"] == ["rows.csv"]  # a single file is exposed as a channel folder
    assert (seen["RANK"], seen["WORLD_SIZE"]) == ("0", "1")
    assert run.metrics == {"probe": 1}
