"""``pip install "cloudnn[<provider>]"`` resolves to the provider's distribution.

The core wheel and every provider wheel in ``providers/`` are built into one
folder; a fresh virtual environment then installs ``cloudnn[<provider>]``
from that folder alone (``--no-index --find-links``: no network), seeing
the project's third-party packages (torch, boto3, ...) through a ``.pth`` so
nothing is downloaded. The installed provider must be the wheel's, and
cloudnn's registry must find it through its entry point.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
from importlib import metadata
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow

SPEC = REPO / "examples" / "digits-mlp" / "spec.yaml"
PROVIDERS = sorted(p.parent.name for p in (REPO / "providers").glob("*/pyproject.toml"))
#: what must not leak from the project's environment into the fresh one
_OURS = ("cloudnn",)


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheels")
    for folder in [REPO, *(REPO / "providers" / p for p in PROVIDERS)]:
        build = subprocess.run(
            [sys.executable, "-m", "build", "--wheel", "--no-isolation"]
            + ["--outdir", str(out)],
            cwd=folder,
            capture_output=True,
            text=True,
        )
        assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    return out


def _dependencies_dir(target: Path) -> Path:
    """The project's site-packages minus cloudnn's own distributions (links)."""
    target.mkdir()
    site = Path(sysconfig.get_paths()["purelib"])
    for entry in site.iterdir():
        name = entry.name.lower().replace("-", "_")
        if name.startswith(_OURS) or "editable" in name or name.endswith(".pth"):
            continue
        (target / entry.name).symlink_to(entry)
    return target


@pytest.mark.parametrize("provider", PROVIDERS)
def test_extra_installs_the_provider_from_the_wheels(
    provider: str, wheels: Path, tmp_path: Path
) -> None:
    distribution = f"cloudnn-{provider}"
    try:
        metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        pytest.skip(f"{distribution} (and so its SDK) is not installed here")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = Path(
        sysconfig.get_path(
            "purelib", vars={"base": str(env_dir), "platbase": str(env_dir)}
        )
    )
    deps = _dependencies_dir(tmp_path / "deps")
    (site / "_project_deps.pth").write_text(f"{deps}\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install"]
        + ["--no-index", "--find-links", str(wheels), f"cloudnn[{provider}]"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-2000:]
    assert f"Successfully installed cloudnn-0.1.0 {distribution}-0.1.0" in (
        install.stdout
    ), install.stdout[-2000:]
    probe = (
        "import json, cloudnn\n"
        "from cloudnn.registry import available_providers, provider_class\n"
        f"cls = provider_class({provider!r})\n"
        "import importlib.metadata as m\n"
        "print(json.dumps({'providers': available_providers(),"
        " 'cloudnn': cloudnn.__file__,"
        " 'provider': __import__(cls.__module__.split('.')[0]).__file__,"
        f" 'requires': m.requires('cloudnn') or []}}))\n"
    )
    out = subprocess.run(
        [str(python), "-c", probe],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    found = json.loads(out.stdout)
    assert provider in found["providers"]
    assert found["provider"].startswith(str(site))  # the wheel's, not the checkout's
    assert found["cloudnn"].startswith(str(site))
    assert f"{distribution}; extra == '{provider}'" in found["requires"]
    if provider == "aws":  # the wheel carries its data: schema, templates
        plan = (
            "from cloudnn.client import Client\n"
            f"p = Client(quiet=True).plan({str(SPEC)!r}, provider='aws', run_id='w-1')\n"
            "from cloudnn_aws import SageMakerProvider as S\n"
            "print(p.instance_type, sorted(S().setup_templates()))\n"
        )
        planned = subprocess.run(
            [str(python), "-c", plan],
            capture_output=True,
            text=True,
            env={**env, "CLOUDNN_HOME": str(tmp_path / "home")},
            cwd=tmp_path,
        )
        assert planned.returncode == 0, planned.stderr[-2000:]
        assert planned.stdout.split()[0] == "ml.m5.xlarge"
        assert "cloudnn-sagemaker.yaml" in planned.stdout
