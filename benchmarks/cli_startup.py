"""`cloudnn --help` start-up time against a bare interpreter (`python -c pass`).

Runs both as fresh subprocesses, alternating, so machine noise hits both
alike. Prints the median wall time of each, their ratio and difference, the
number of modules `--help` leaves in sys.modules (against a bare interpreter),
and the slowest imports by cumulative time from `-X importtime`. It prints; it
asserts nothing.

    python benchmarks/cli_startup.py [--runs 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HELP = [sys.executable, "-m", "cloudnn.cli.main", "--help"]
BARE = [sys.executable, "-c", "pass"]
_COUNT_MODULES = """
import sys
from cloudnn.cli.main import main
try:
    main(["--help"])
except SystemExit:
    pass
print("MODULES", len(sys.modules))
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # an editable install finds cloudnn anyway; a plain checkout needs this
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), env.get("PYTHONPATH", "")) if p
    )
    return env


def _wall(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def _module_count(code: str, env: dict[str, str]) -> int:
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, check=True, capture_output=True
    ).stdout.decode()
    return int(next(x for x in out.splitlines() if x.startswith("MODULES")).split()[1])


def _slowest_imports(env: dict[str, str], top: int) -> list[tuple[int, str]]:
    """(cumulative microseconds, module) of the costliest top-level imports."""
    err = subprocess.run(
        [sys.executable, "-X", "importtime", *HELP[1:]],
        env=env,
        check=True,
        capture_output=True,
    ).stderr.decode()
    rows: list[tuple[int, str]] = []
    for line in err.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _self, cumulative, name = line[len("import time:") :].split("|")
        # "| name" is top level; each level of nesting adds two more spaces
        if not name[1:].startswith(" "):
            rows.append((int(cumulative), name.strip()))
    return sorted(rows, reverse=True)[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="Runs of each.")
    parser.add_argument("--top", type=int, default=8, help="Slowest imports shown.")
    args = parser.parse_args()
    env = _env()

    # one warm-up of each fills the OS file cache and writes .pyc files
    _wall(HELP, env)
    _wall(BARE, env)
    help_times: list[float] = []
    bare_times: list[float] = []
    for _ in range(args.runs):
        help_times.append(_wall(HELP, env))
        bare_times.append(_wall(BARE, env))

    help_ms = statistics.median(help_times) * 1000
    bare_ms = statistics.median(bare_times) * 1000
    print(f"python {sys.version.split()[0]}, {args.runs} runs each (median wall time)")
    print(f"  python -c pass                     {bare_ms:8.1f} ms")
    print(f"  python -m cloudnn.cli.main --help  {help_ms:8.1f} ms")
    print(f"  ratio {help_ms / bare_ms:.2f}x, cloudnn adds {help_ms - bare_ms:.1f} ms")

    bare_modules = _module_count("import sys; print('MODULES', len(sys.modules))", env)
    help_modules = _module_count(_COUNT_MODULES, env)
    print(
        f"modules in sys.modules: --help {help_modules}, bare {bare_modules} "
        f"(+{help_modules - bare_modules})"
    )
    print(f"slowest top-level imports of --help (-X importtime, top {args.top}):")
    for micros, name in _slowest_imports(env, args.top):
        print(f"  {micros / 1000:8.1f} ms  {name}")


if __name__ == "__main__":
    main()
