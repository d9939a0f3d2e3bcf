"""What following a cloud job costs in API calls: the Client against a naive poller.

Both follow the same simulated 10-minute job (30 s queued, 90 s
provisioning, 8 epochs of 60 s) on the in-memory fake provider with a fake
clock, so the run takes milliseconds and the counts are exact. The Client
backs off from the provider's poll interval (5 s) to its maximum (60 s) and
reads logs between status calls; the naive loop describes and reads logs
every 5 s, as a hand-written ``while not done: describe(); sleep(5)`` does.
Prints the status (Describe) calls, log calls, and how late each noticed the
end, against the target of ARCHITECTURE §6 (<= ~25 status calls). It prints;
it asserts nothing.

    python benchmarks/polling.py [--epochs 8] [--epoch-seconds 60] [--runs 20]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cloudnn.client import Client  # noqa: E402
from cloudnn.testing.fake import FakeClock, FakeProvider  # noqa: E402

TARGET = 25


def _spec(folder: Path, epochs: int) -> dict[str, object]:
    data = folder / "train.csv"
    with open(data, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["a", "b", "label"])
        w.writerows([[i % 7, i % 5, i % 2] for i in range(20)])
    return {
        "name": "polling",
        "task": "classification",
        "model": {"type": "mlp"},
        "data": {"train": str(data), "target": "label"},
        "train": {"epochs": epochs},
    }


def _client_run(
    folder: Path, spec: dict[str, object], epoch_seconds: float, seed: int
) -> tuple[int, int, float, float]:
    clock = FakeClock()
    fake = FakeProvider(clock=clock, epoch_seconds=epoch_seconds)
    client = Client(
        quiet=True, home=folder / f"home-{seed}", providers={"fake": fake}, clock=clock
    )
    client._rng.seed(seed)  # the jitter, reproducibly
    start = clock.now
    run = client.train(spec, provider="fake")
    assert run.state == "SUCCEEDED", run.state
    job_time = fake.queued_seconds + fake.provisioning_seconds
    job_time += int(str(spec["train"]["epochs"])) * epoch_seconds  # type: ignore[index]
    took = clock.now - start
    return fake.calls["get_job"], fake.calls["stream_logs"], took, took - job_time


def _naive_run(
    spec: dict[str, object], epoch_seconds: float
) -> tuple[int, int, float, float]:
    from cloudnn.spec import spec_from_dict

    clock = FakeClock()
    fake = FakeProvider(clock=clock, epoch_seconds=epoch_seconds)
    s = spec_from_dict(spec)
    ref = fake.submit_training(fake.plan_training(s, run_id="naive"))
    start = clock.now
    cursor = None
    while True:
        status = fake.get_job(ref)
        for line in fake.stream_logs(ref, since=cursor):
            cursor = line.cursor
        if status.state.terminal:
            break
        clock.sleep(fake.poll_interval)
    took = clock.now - start
    job_time = (
        fake.queued_seconds
        + fake.provisioning_seconds
        + s.train.epochs * (epoch_seconds)
    )
    return fake.calls["get_job"], fake.calls["stream_logs"], took, took - job_time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--epoch-seconds", type=float, default=60.0)
    parser.add_argument("--runs", type=int, default=20, help="jitter seeds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        spec = _spec(folder, args.epochs)
        client = [
            _client_run(folder, spec, args.epoch_seconds, seed)
            for seed in range(args.runs)
        ]
        naive = _naive_run(spec, args.epoch_seconds)
    minutes = (30 + 90 + args.epochs * args.epoch_seconds) / 60
    print(
        f"job: {minutes:.1f} min (30 s queued, 90 s provisioning, "
        f"{args.epochs} epochs x {args.epoch_seconds:.0f} s); fake provider, "
        f"fake clock; poll 5 s -> 60 s"
    )
    print(
        f"{'follower':<22} {'status calls':>13} {'log calls':>10} {'noticed end':>12}"
    )
    describes = [c[0] for c in client]
    logs = [c[1] for c in client]
    late = [c[3] for c in client]
    print(
        f"{'cloudnn Client':<22} {statistics.median(describes):>13.0f} "
        f"{statistics.median(logs):>10.0f} {statistics.median(late):>10.1f} s"
        f"   (over {args.runs} jitter seeds: status calls "
        f"{min(describes)}..{max(describes)})"
    )
    print(f"{'naive 5 s loop':<22} {naive[0]:>13} {naive[1]:>10} {naive[3]:>10.1f} s")
    print(
        f"status calls: {statistics.median(describes):.0f} vs target <= {TARGET} "
        f"({'met' if max(describes) <= TARGET else 'MISSED'}); "
        f"{naive[0] / statistics.median(describes):.1f}x fewer than the naive loop"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
