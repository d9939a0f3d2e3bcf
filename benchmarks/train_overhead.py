"""Local backend step time against a hand-written PyTorch loop (target <= 1.02x).

Both run in this process, on the same model, data, seed and sample order,
alternating rounds so machine noise hits both alike. Prints the median time per
optimiser step of each, their ratio, and whether the final weights are
bit-identical. It prints; it asserts nothing.

    python benchmarks/train_overhead.py [--rounds 3] [--epochs 8] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn


def _digits_csv(folder: Path) -> Path:
    from sklearn.datasets import load_digits

    digits = load_digits()
    path = folder / "digits.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([f"p{i}" for i in range(64)] + ["label"])
        for row, label in zip(digits.data, digits.target, strict=True):
            w.writerow([int(v) for v in row] + [int(label)])
    return path


def _spec(data: Path, epochs: int, batch_size: int):  # type: ignore[no-untyped-def]
    from cloudnn.spec import spec_from_dict

    return spec_from_dict(
        {
            "name": "bench",
            "task": "classification",
            "model": {"type": "mlp", "hidden_sizes": [256, 128], "dropout": 0.1},
            "data": {"train": str(data), "target": "label"},
            "train": {
                "epochs": epochs,
                "batch_size": batch_size,
                "seed": 0,
                "checkpoint": {"enabled": False},
            },
        }
    )


def run_cloudnn(spec, workdir: Path) -> tuple[list[float], dict[str, torch.Tensor]]:  # type: ignore[no-untyped-def]
    from cloudnn.runtime.context import context, local_job_env
    from cloudnn.runtime.trainer import train

    env = local_job_env(
        model_dir=str(workdir / "model"),
        checkpoint_dir=str(workdir / "ckpt"),
        output_dir=str(workdir / "out"),
        channels={},
        hyperparameters={},
        run_id="bench",
    )
    with contextlib.redirect_stdout(io.StringIO()):  # the job's event lines
        result = train(spec, context(env), resume=False)
    per_step = [row["seconds"] / row["steps"] for row in result.history]
    state = torch.load(workdir / "model" / "model.pt", weights_only=True)
    return per_step, state


def run_hand_loop(spec) -> tuple[list[float], dict[str, torch.Tensor]]:  # type: ignore[no-untyped-def]
    """What a PyTorch user writes by hand: the same model, data order and seed."""
    from cloudnn.runtime.data import load_datasets
    from cloudnn.runtime.models import build_model
    from cloudnn.runtime.trainer import epoch_permutation, seed_everything

    seed_everything(0, deterministic=True)
    train_ds, _, _, pre = load_datasets(spec.data, spec.task, seed=0)
    x = torch.from_numpy(train_ds.x)
    y = torch.from_numpy(train_ds.y).long()
    torch.manual_seed(0)
    model = build_model(spec.model, pre, num_outputs=pre.num_outputs)
    opt = torch.optim.Adam(model.parameters(), lr=spec.train.optimizer.lr)
    loss_fn = nn.CrossEntropyLoss()
    bs = spec.train.batch_size
    per_step: list[float] = []
    model.train()
    for epoch in range(spec.train.epochs):
        t0 = time.perf_counter()
        perm = epoch_permutation(len(x), 0, epoch)
        running = 0.0
        steps = 0
        for i in range(0, len(x), bs):
            idx = perm[i : i + bs]
            opt.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            running += loss.item()
            steps += 1
        per_step.append((time.perf_counter() - t0) / steps)
    return per_step, {k: v.detach().clone() for k, v in model.state_dict().items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(1)
    ours: list[float] = []
    hand: list[float] = []
    identical = True
    with tempfile.TemporaryDirectory() as tmp:
        data = _digits_csv(Path(tmp))
        spec = _spec(data, args.epochs, args.batch_size)
        for r in range(args.rounds):
            a, state_a = run_cloudnn(spec, Path(tmp) / f"run{r}")
            b, state_b = run_hand_loop(spec)
            ours += a[1:]  # the first epoch includes warm-up
            hand += b[1:]
            identical &= state_a.keys() == state_b.keys() and all(
                torch.equal(state_a[k], state_b[k]) for k in state_a
            )
    m_ours, m_hand = statistics.median(ours), statistics.median(hand)
    print(f"model: mlp [256, 128] on digits, batch {args.batch_size}, 1 thread")
    print(f"cloudnn local trainer  median step {m_ours * 1e6:8.1f} us")
    print(f"hand-written loop      median step {m_hand * 1e6:8.1f} us")
    print(f"ratio (cloudnn / hand) {m_ours / m_hand:.3f}x   (target <= 1.02x)")
    print(f"final weights bit-identical: {identical}")


if __name__ == "__main__":
    main()
