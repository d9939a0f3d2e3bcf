"""The built wheel works on its own: templates ship inside it, extras name providers."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(out),
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    (path,) = out.glob("cloudnn-*.whl")
    return path


def test_wheel_contains_templates_and_metadata(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    for template in (
        "mlp-tabular",
        "cnn-image",
        "rnn-sequence",
        "transformer-text",
        "custom-script",
    ):
        assert f"cloudnn/_templates/init/{template}/spec.yaml" in names
    assert "cloudnn/_templates/serving/sagemaker/inference.py" in names
    assert "cloudnn/data/accelerator_catalog.csv" in names
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(meta).decode()
    assert "Requires-Dist: cloudnn-aws; extra == 'aws'" in text
    assert "Requires-Dist: cloudnn-gcp; extra == 'gcp'" in text
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert (
        "local = cloudnn.local:LocalProvider"
        in zipfile.ZipFile(wheel).read(entry).decode()
    )


def test_init_from_wheel_in_a_clean_venv(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    site = Path(
        sysconfig.get_path(
            "purelib", vars={"base": str(env_dir), "platbase": str(env_dir)}
        )
    )
    # install the wheel itself by unpacking it (what pip does for a pure wheel),
    # with dependencies visible through a .pth (no network, no editable cloudnn)
    zipfile.ZipFile(wheel).extractall(site)
    deps = Path(sysconfig.get_path("purelib"))
    (site / "_deps.pth").write_text(str(deps) + "\n")
    python = env_dir / "bin" / "python"
    target = tmp_path / "project"
    code = (
        "import sys, cloudnn; from cloudnn.cli.main import main;"
        "print(cloudnn.__file__, file=sys.stderr);"
        f"sys.argv = ['cloudnn', 'init', {str(target)!r}, '--template', 'custom-script'];"
        "main()"
    )
    out = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert str(site) in out.stderr  # the wheel's cloudnn, not the checkout's
    assert (target / "spec.yaml").is_file() and (target / "train.py").is_file()
    check = subprocess.run(
        [
            str(python),
            "-c",
            "from cloudnn.cli.main import main; import sys;"
            f"sys.argv=['cloudnn', 'validate', {str(target / 'spec.yaml')!r}]; main()",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert check.returncode == 0, check.stderr
    assert "ok:" in check.stdout
