"""`make demo`: prepare and train every example on the local backend.

Each example's data is generated (or read from an installed package) by its
``prepare.py``; nothing is downloaded. Prints each example's test metric.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXAMPLES = [
    "digits-mlp",
    "digits-cnn",
    "sequence-rnn",
    "text-transformer",
    "bring-your-own-script",
]


def serve_demo(run_id: str | None) -> None:
    """Serve the digits MLP on a local endpoint, predict five rows, delete it."""
    if run_id is None:
        return
    import csv

    import cloudnn

    print("\n=== serving digits-mlp ===", flush=True)
    with open(HERE / "digits-mlp" / "data" / "digits.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))[:5]
    labels = [row.pop("label") for row in rows]
    endpoint = cloudnn.deploy(run_id)
    try:
        print(f"endpoint {endpoint.name} at {endpoint.url}")
        predictions = endpoint.predict([[float(v) for v in r.values()] for r in rows])
        for want, got in zip(labels, predictions, strict=True):
            print(f"  label {want}  predicted {got['label']}")
    finally:
        endpoint.delete()
        print(f"deleted {endpoint.name}")


def cloud_providers() -> list[str]:
    """Clouds whose provider and emulator are installed (make demo installs them)."""
    from cloudnn.emulator import available_emulators

    return available_emulators()


def _clean_env() -> dict[str, str]:
    """This environment minus every cloud credential or setting: a newcomer's."""
    prefixes = (
        "AWS_",
        "GOOGLE_",
        "GCLOUD",
        "CLOUDSDK_",
        "AZURE_",
        "CLOUDNN_AWS",
        "CLOUDNN_GCP",
    )
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


def _step(title: str, command: list[str], env: dict[str, str], **kwargs: object) -> str:
    print(f"$ cloudnn {' '.join(command[3:])}", flush=True)
    out = subprocess.run(
        command, env=env, check=False, stdout=subprocess.PIPE, text=True, **kwargs
    )
    if out.returncode != 0:
        raise RuntimeError(f"{title} failed (exit {out.returncode})")
    return out.stdout


def _run_through(
    cloudnn: list[str], provider: str, folder: Path, env: dict[str, str]
) -> None:
    """Train, deploy, predict and delete digits-mlp on ``provider`` (its emulator)."""
    import csv

    env["CLOUDNN_HOME"] = str(HERE.parent / ".demo" / f"home-{provider}")
    trained = _step(
        "train",
        [*cloudnn, "train", "spec.yaml", "--provider", provider, "--json"],
        env,
        cwd=folder,
    )
    metrics = json.loads(trained)
    head = metrics.get("headline") or {}
    print(f"  run {metrics['run_id']}: test {head.get('metric')} {head.get('test')}")
    deployed = json.loads(
        _step(
            "deploy",
            [
                *cloudnn,
                "deploy",
                metrics["run_id"],
                "--provider",
                provider,
                "--json",
            ],
            env,
        )
    )
    print(f"  endpoint {deployed['name']} [{deployed['state']}]")
    with open(folder / "data" / "digits.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))[:5]
    labels = [row.pop("label") for row in rows]
    request = HERE.parent / ".demo" / f"rows-{provider}.json"
    request.parent.mkdir(parents=True, exist_ok=True)
    request.write_text(
        json.dumps({"instances": [[float(v) for v in r.values()] for r in rows]})
    )
    answer = _step(
        "predict",
        [*cloudnn, "predict", deployed["name"], "--data", str(request), "--json"],
        env,
    )
    predicted = [p.get("label") for p in json.loads(answer)["predictions"]]
    for want, got in zip(labels, predicted, strict=True):
        print(f"  label {want}  predicted {got}")
    _step("delete", [*cloudnn, "delete", deployed["name"], "--yes"], env)
    print(f"  deleted {deployed['name']}")


def cloud_demo(provider: str) -> int:
    """Plan digits-mlp for ``provider`` offline, then train, deploy, predict and
    delete it through the provider's local emulator, with the public CLI only."""
    cloudnn = [sys.executable, "-m", "cloudnn.cli.main"]
    folder = HERE / "digits-mlp"
    env = _clean_env()
    print(f"\n=== digits-mlp on {provider}: offline plan, then the local emulator ===")
    plan = _step(
        "plan", [*cloudnn, "plan", "spec.yaml", "--provider", provider], env, cwd=folder
    )
    for line in plan.splitlines():
        if line.split(" ", 1)[0] in (
            "provider",
            "resources",
            "cost",
            "model",
            "upload",
        ):
            print("  " + line)
    from cloudnn.emulator import emulator_process

    try:
        with emulator_process(provider, env=env) as (_, printed):
            env.update(printed)
            print(
                f"  # {provider} emulator started; its environment points cloudnn at it"
            )
            _run_through(cloudnn, provider, folder, env)
    except RuntimeError as exc:
        print(f"{provider}: {exc}", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    cloudnn = [sys.executable, "-m", "cloudnn.cli.main"]
    results: list[tuple[str, str, float, str]] = []
    for name in EXAMPLES:
        folder = HERE / name
        print(f"\n=== {name} ===", flush=True)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "prepare.py"], cwd=folder, check=True)
        out = subprocess.run(
            [*cloudnn, "train", "spec.yaml", "--json"],
            cwd=folder,
            check=False,
            stdout=subprocess.PIPE,
            text=True,
        )
        if out.returncode != 0:
            print(f"{name}: training failed (exit {out.returncode})", file=sys.stderr)
            return out.returncode
        metrics = json.loads(out.stdout)
        head = metrics.get("headline") or {}
        if "test" in head:
            label = f"test {head['metric']} {head['test']:.4f}"
        else:
            numeric = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
            label = ", ".join(f"{k} {v:.4f}" for k, v in numeric.items())
        seconds = time.perf_counter() - t0
        results.append((name, label, seconds, metrics["run_id"]))
        print(
            f"{name}: {label}  (run {metrics['run_id']}, {seconds:.0f} s)", flush=True
        )
    serve_demo(results[0][3] if results else None)
    for provider in cloud_providers():
        code = cloud_demo(provider)
        if code:
            return code
    print("\nsummary")
    for name, label, seconds, _ in results:
        print(f"  {name:<24} {label:<32} {seconds:5.0f} s")
    print("\nnext: `cloudnn runs list`, `cloudnn evaluate RUN`, `cloudnn deploy RUN`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
