"""Every example spec plans deterministically on every installed provider.

Plans are pinned as canonical JSON under tests/golden/<provider>/<example>.json
with machine-specific paths replaced by placeholders. `UPDATE_GOLDEN=1 pytest
tests/test_golden_plans.py` rewrites them; review the diff like code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import PYTHON, REPO

from cloudnn.client import Client
from cloudnn.registry import available_providers
from cloudnn.spec import load_spec

GOLDEN = REPO / "tests" / "golden"
EXAMPLES = sorted(p.parent.name for p in (REPO / "examples").glob("*/spec.yaml"))


def _canonical(value: Any, replacements: list[tuple[str, str]]) -> Any:
    if isinstance(value, dict):
        return {k: _canonical(v, replacements) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical(v, replacements) for v in value]
    if isinstance(value, str):
        for real, placeholder in replacements:
            value = value.replace(real, placeholder)
    return value


@pytest.fixture(scope="module")
def prepared() -> None:
    for name in EXAMPLES:  # specs name their data files, which must exist
        subprocess.run(
            [PYTHON, "prepare.py"],
            cwd=REPO / "examples" / name,
            check=True,
            capture_output=True,
        )


@pytest.fixture(params=["this-machine", "8-cpus"])
def machine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Plans hold no machine facts: the goldens match with any CPU count."""
    if request.param == "8-cpus":
        monkeypatch.setattr(os, "cpu_count", lambda: 8)
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    return str(request.param)


@pytest.mark.parametrize("provider", available_providers())
@pytest.mark.parametrize("example", EXAMPLES)
def test_plan_matches_golden(
    prepared: None,
    example: str,
    provider: str,
    cloudnn_home: Path,
    machine: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # plans take defaults (region, project, bucket) from the environment
    for name in list(os.environ):
        if name.startswith(
            ("AWS_", "GOOGLE_", "CLOUDSDK_", "CLOUDNN_AWS", "CLOUDNN_GCP")
        ):
            monkeypatch.delenv(name)
    spec = load_spec(REPO / "examples" / example / "spec.yaml")
    plan = Client(quiet=True).plan(spec, provider=provider, run_id="golden-run")
    again = Client(quiet=True).plan(spec, provider=provider, run_id="golden-run")
    assert plan.to_dict() == again.to_dict()  # deterministic
    replacements = [
        # the hash covers absolute data paths, so it differs per checkout
        (plan.spec.spec_hash(), "$SPEC_HASH"),
        (str(cloudnn_home), "$CLOUDNN_HOME"),
        (sys.executable, "$PYTHON"),
        (str(REPO), "$REPO"),
    ]
    # a job bundle holds cloudnn's own sources: its hash follows every core edit
    replacements += [
        (u.sha256, "$BUNDLE_SHA256") for u in plan.uploads if u.kind == "bundle"
    ]
    data = plan.to_dict()
    for upload in data["uploads"]:
        if upload["kind"] == "bundle":
            upload["size"] = 0
    actual = _canonical(data, replacements)
    text = json.dumps(actual, indent=2, sort_keys=True) + "\n"
    path = GOLDEN / provider / f"{example}.json"
    if os.environ.get("UPDATE_GOLDEN") == "1" and machine == "this-machine":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.is_file(), (
        f"no golden for {provider}/{example}: run with UPDATE_GOLDEN=1"
    )
    assert text == path.read_text(), (
        f"{provider} plan of {example} changed; if intended, rerun with UPDATE_GOLDEN=1"
    )
