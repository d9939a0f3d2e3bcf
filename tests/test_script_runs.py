"""Bring-your-own scripts: channel placeholders, their own requirements, clear failures."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import PYTHON, cli_env

from cloudnn.client import Client
from cloudnn.errors import JobFailedError, SpecError

pytestmark = pytest.mark.slow

VERTEX_STYLE = '''"""A Vertex-style script: data paths arrive as arguments."""
import argparse, json, os, sys
import numpy as np

p = argparse.ArgumentParser()
p.add_argument("--train", required=True)
p.add_argument("--val", required=True)
p.add_argument("--epochs", type=int, default=1)
a = p.parse_args()
x = np.load(a.train)["x"]
v = np.load(a.val)["x"]
model_dir = os.environ["AIP_MODEL_DIR"]
os.makedirs(model_dir, exist_ok=True)
open(os.path.join(model_dir, "model.txt"), "w").write(str(x.sum()))
out = os.environ.get("SM_OUTPUT_DATA_DIR", model_dir)
json.dump({"train_rows": int(len(x)), "val_rows": int(len(v)),
           "train_arg": a.train, "python": sys.executable},
          open(os.path.join(out, "metrics.json"), "w"))
'''


def _project(tmp_path: Path, script: str, hps: dict[str, object]) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    np.savez(data / "train.npz", x=np.arange(12.0).reshape(6, 2), y=np.arange(6))
    np.savez(data / "val.npz", x=np.ones((3, 2)), y=np.arange(3))
    (tmp_path / "train.py").write_text(script)
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "script-run",
                "task": "classification",
                "model": {"script": "train.py", "hyperparameters": hps},
                "data": {"train": "data/train.npz", "validation": "data/val.npz"},
            }
        )
    )
    return spec


def test_channel_placeholders_become_local_paths(tmp_path: Path) -> None:
    spec = _project(
        tmp_path,
        VERTEX_STYLE,
        {"train": "{channel:train}", "val": "{channel:validation}", "epochs": 1},
    )
    run = Client(quiet=True).train(spec)
    assert run.state == "SUCCEEDED", run.record.message
    assert run.metrics["train_rows"] == 6 and run.metrics["val_rows"] == 3
    # the file inside the job's train channel, not the path written in the spec
    assert run.metrics["train_arg"].endswith("/input/data/train/train.npz")


def test_an_unknown_channel_placeholder_fails_naming_it(tmp_path: Path) -> None:
    spec = _project(
        tmp_path, VERTEX_STYLE, {"train": "{channel:train}", "val": "{channel:test}"}
    )
    with pytest.raises(JobFailedError) as info:
        Client(quiet=True).train(spec)
    assert "{channel:test}" in str(info.value) and "train" in str(info.value)


def _wheel(folder: Path, name: str) -> Path:
    """A minimal pure-Python wheel of module ``name`` (``VALUE = 42``)."""
    path = folder / f"{name}-0.1-py3-none-any.whl"
    files = {
        f"{name}.py": b"VALUE = 42\n",
        f"{name}-0.1.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n".encode()
        ),
        f"{name}-0.1.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n"
        ),
    }
    record = []
    with zipfile.ZipFile(path, "w") as zf:
        for arc, content in files.items():
            zf.writestr(arc, content)
            digest = base64.urlsafe_b64encode(hashlib.sha256(content).digest())
            record.append(f"{arc},sha256={digest.rstrip(b'=').decode()},{len(content)}")
        record.append(f"{name}-0.1.dist-info/RECORD,,")
        zf.writestr(f"{name}-0.1.dist-info/RECORD", "\n".join(record) + "\n")
    return path


def test_requirements_go_into_a_run_environment_not_cloudnns(
    tmp_path: Path, cloudnn_home: Path
) -> None:
    script = VERTEX_STYLE.replace(
        "import numpy as np", "import numpy as np\nimport cloudnn_extra_dep\n"
    )
    spec = _project(
        tmp_path, script, {"train": "{channel:train}", "val": "{channel:validation}"}
    )
    wheel = _wheel(tmp_path, "cloudnn_extra_dep")
    (tmp_path / "requirements.txt").write_text(f"numpy\n{wheel.name}\n")
    client = Client(quiet=True)
    run = client.train(spec)
    assert run.state == "SUCCEEDED", run.record.message
    assert importlib.util.find_spec("cloudnn_extra_dep") is None, (
        "cloudnn's env changed"
    )
    envs = list((cloudnn_home / "envs").iterdir())
    assert len(envs) == 1
    assert run.metrics["python"] == str(envs[0] / "bin" / "python")
    built = envs[0].stat().st_mtime_ns
    again = client.train(spec)  # unchanged requirements: the same environment
    assert again.metrics["python"] == run.metrics["python"]
    assert envs[0].stat().st_mtime_ns == built


def test_a_failing_script_names_its_exception_and_no_resume(
    tmp_path: Path, cloudnn_home: Path
) -> None:
    spec = _project(
        tmp_path,
        "import sys\nprint('starting')\nraise ValueError('learning rate must be > 0')\n",
        {},
    )
    out = subprocess.run(
        [PYTHON, "-m", "cloudnn.cli.main", "train", str(spec)],
        env=cli_env(cloudnn_home),
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert (
        errors == [errors[0]]
        and "script train.py failed: ValueError: learning rate must be > 0" in errors[0]
    )
    hint = next(line for line in out.stderr.splitlines() if line.startswith("To fix:"))
    assert "--resume" not in hint
    # the job's own log (the script's traceback) is shown; cloudnn's is not
    assert "cloudnn/client.py" not in out.stderr
    assert "cloudnn/cli/main.py" not in out.stderr


def test_script_runs_are_not_evaluated_or_served_by_cloudnn(tmp_path: Path) -> None:
    spec = _project(
        tmp_path,
        VERTEX_STYLE,
        {"train": "{channel:train}", "val": "{channel:validation}"},
    )
    client = Client(quiet=True)
    run = client.train(spec)
    for action in (
        lambda: client.evaluate(run.run_id),
        lambda: client.deploy(run.run_id),
        lambda: client.model_dir(run.run_id),
    ):
        with pytest.raises(SpecError) as info:
            action()
        assert info.value.field == "model.script"
        assert "your own code" in (info.value.hint or "")
    assert (
        json.loads(Path(run.output_uri, "metrics.json").read_text())["train_rows"] == 6
    )
