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


def main() -> int:
    cloudnn = [sys.executable, "-m", "cloudnn.cli.main"]
    results: list[tuple[str, str, float]] = []
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
        results.append((name, label, seconds))
        print(
            f"{name}: {label}  (run {metrics['run_id']}, {seconds:.0f} s)", flush=True
        )
    print("\nsummary")
    for name, label, seconds in results:
        print(f"  {name:<24} {label:<32} {seconds:5.0f} s")
    print("\nnext: `cloudnn runs list`, `cloudnn evaluate latest`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
