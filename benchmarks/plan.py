"""`cloudnn plan --provider P` against importing the vendor's own SDK.

What a user pays to see a cloud request with cloudnn -- a fresh
`cloudnn plan examples/digits-mlp/spec.yaml --provider P` process, start to
exit, with no credentials and no network -- against what a user of the
vendor's SDK pays before writing a line: `python -c "<vendor import>"`.
Both run as fresh subprocesses, alternating (machine noise hits both alike),
one warm-up each, then the median of ``--runs``. Target: ratio <= 0.5.

The vendor SDK is installed into a throwaway virtual environment under
``$XDG_CACHE_HOME/cloudnn-benchmarks`` (created on first use with pip; the
project never depends on it). Adding a provider is one entry in ``ROWS``.

    python benchmarks/plan.py [--provider aws] [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "examples" / "digits-mlp" / "spec.yaml"
TARGET = 0.5


@dataclass(frozen=True)
class Row:
    """One provider: cloudnn's plan against its vendor SDK's import."""

    vendor_import: str
    #: pip requirements of the throwaway venv (pinned: the number must be stable)
    vendor_requirements: tuple[str, ...]
    #: environment the vendor import needs (never credentials)
    vendor_env: tuple[tuple[str, str], ...] = ()


ROWS: dict[str, Row] = {
    "aws": Row(
        vendor_import="import sagemaker.core",
        vendor_requirements=("sagemaker-core==2.27.0",),
        vendor_env=(("AWS_DEFAULT_REGION", "us-east-1"),),
    ),
    "gcp": Row(
        vendor_import="from google.cloud import aiplatform_v1",
        vendor_requirements=("google-cloud-aiplatform==2.7.0",),
    ),
}


def _cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cloudnn-benchmarks"


def vendor_python(provider: str, row: Row) -> Path:
    """The throwaway venv's python for ``row``, created on first use."""
    name = "-".join(r.replace("==", "-") for r in row.vendor_requirements)
    folder = _cache() / f"{provider}-{name}"
    python = folder / "bin" / "python"
    if not (folder / ".ready").is_file():
        print(f"creating {folder} (pip install {' '.join(row.vendor_requirements)})")
        subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *row.vendor_requirements],
            check=True,
        )
        (folder / ".ready").write_text("ok\n")
    return python


def _clean_env(extra: tuple[tuple[str, str], ...] = ()) -> dict[str, str]:
    """No cloud settings from this shell: the plan must need none."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "CLOUDNN_AWS_", "GOOGLE_", "AZURE_"))
    }
    env["PYTHONPATH"] = str(REPO)
    env["CLOUDNN_HOME"] = str(_cache() / "home")
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    # the SageMaker SDK sends telemetry unless told not to
    env["SAGEMAKER_USER_CONFIG_OVERRIDE"] = str(_telemetry_off())
    env.update(dict(extra))
    return env


def _telemetry_off() -> Path:
    path = _cache() / "sagemaker-telemetry-off.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n"
        "      TelemetryOptOut: true\n"
    )
    return path


def _wall(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def measure(provider: str, runs: int) -> tuple[float, float]:
    """Median seconds of (cloudnn plan, vendor import)."""
    row = ROWS[provider]
    vendor = vendor_python(provider, row)
    plan_cmd = [sys.executable, "-m", "cloudnn.cli.main", "plan", str(SPEC)]
    plan_cmd += ["--provider", provider]
    import_cmd = [str(vendor), "-c", row.vendor_import]
    plan_env, vendor_env = _clean_env(), _clean_env(row.vendor_env)
    vendor_env.pop("PYTHONPATH")
    _wall(plan_cmd, plan_env)  # warm the disk cache for both
    _wall(import_cmd, vendor_env)
    plans: list[float] = []
    imports: list[float] = []
    for _ in range(runs):
        plans.append(_wall(plan_cmd, plan_env))
        imports.append(_wall(import_cmd, vendor_env))
    return statistics.median(plans), statistics.median(imports)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--provider", action="append", choices=sorted(ROWS))
    parser.add_argument("--runs", type=int, default=7)
    ns = parser.parse_args()
    failed = False
    print(f"{'provider':<9} {'cloudnn plan':>13} {'vendor import':>14} {'ratio':>7}")
    for provider in ns.provider or sorted(ROWS):
        plan_s, import_s = measure(provider, ns.runs)
        ratio = plan_s / import_s
        verdict = "ok" if ratio <= TARGET else f"ABOVE {TARGET}"
        failed = failed or ratio > TARGET
        print(
            f"{provider:<9} {plan_s:>12.3f}s {import_s:>13.3f}s {ratio:>7.2f}  "
            f"{verdict}   ({ROWS[provider].vendor_import}; median of {ns.runs})"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
