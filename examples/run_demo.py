"""`make demo`: prepare and train every example on the local backend.

Each example's data is generated (or read from an installed package) by its
``prepare.py``; nothing is downloaded. Prints each example's test metric.
"""

from __future__ import annotations

import json
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
    print("\nsummary")
    for name, label, seconds, _ in results:
        print(f"  {name:<24} {label:<32} {seconds:5.0f} s")
    print("\nnext: `cloudnn runs list`, `cloudnn evaluate RUN`, `cloudnn deploy RUN`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
