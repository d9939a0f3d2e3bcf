"""A SageMaker script-mode training script: plain PyTorch, no cloudnn import.

It runs unchanged on SageMaker (PyTorch estimator, entry_point="train.py") and
under `cloudnn train spec.yaml`, which provides the same contract:

- hyperparameters arrive as ``--name value`` arguments (``--batch-size`` and
  ``--batch_size`` both work);
- data channels are folders named by ``SM_CHANNEL_<NAME>``: ``train.csv`` in
  ``SM_CHANNEL_TRAIN``, and ``test.csv`` in the optional ``SM_CHANNEL_TEST``
  (without it the script holds out 20% of train itself);
- the model goes to ``SM_MODEL_DIR``, ``metrics.json`` to ``SM_OUTPUT_DATA_DIR``.

Standalone: ``SM_CHANNEL_TRAIN=data/train SM_MODEL_DIR=/tmp/m python train.py``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn


def parse_args() -> argparse.Namespace:
    """Hyperparameters and SageMaker paths; unknown arguments are ignored."""
    parser = argparse.ArgumentParser(description="Train a small MLP on CSV data.")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument(
        "--batch-size", "--batch_size", dest="batch_size", type=int, default=32
    )
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target", default="label", help="label column name")
    parser.add_argument(
        "--model-dir",
        "--model_dir",
        dest="model_dir",
        default=os.environ.get("SM_MODEL_DIR", "model"),
    )
    parser.add_argument("--train", default=os.environ.get("SM_CHANNEL_TRAIN"))
    parser.add_argument("--test", default=os.environ.get("SM_CHANNEL_TEST"))
    args, unknown = parser.parse_known_args()
    if unknown:
        print(f"ignoring unknown arguments: {' '.join(unknown)}", flush=True)
    if not args.train:
        parser.error("set SM_CHANNEL_TRAIN (or pass --train DIR)")
    return args


def read_csv(path: Path, target: str) -> tuple[np.ndarray, np.ndarray]:
    """Features and integer labels of a CSV (label: `target`, else last column)."""
    with open(path, newline="") as fh:
        header, *rows = list(csv.reader(fh))
    col = header.index(target) if target in header else len(header) - 1
    data = np.asarray(rows, dtype=np.float32)
    return np.delete(data, col, axis=1), data[:, col].astype(np.int64)


def channel_file(folder: str, name: str) -> Path:
    """`name` inside a channel folder, or the folder's only CSV file."""
    root = Path(folder)
    if root.is_file():
        return root
    if (root / name).is_file():
        return root / name
    found = sorted(root.glob("*.csv"))
    if len(found) != 1:
        raise SystemExit(f"expected {root / name} (or a single .csv in {root})")
    return found[0]


def main() -> None:
    args = parse_args()
    torch.manual_seed(args.seed)
    x_train, y_train = read_csv(channel_file(args.train, "train.csv"), args.target)
    if args.test:
        x_test, y_test = read_csv(channel_file(args.test, "test.csv"), args.target)
    else:
        order = np.random.default_rng(args.seed).permutation(len(y_train))
        cut = int(0.8 * len(order))
        x_test, y_test = x_train[order[cut:]], y_train[order[cut:]]
        x_train, y_train = x_train[order[:cut]], y_train[order[:cut]]
        print(f"no test channel: holding out {len(y_test)} training rows", flush=True)

    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    xt = torch.from_numpy((x_train - mean) / std)
    yt = torch.from_numpy(y_train)
    classes = int(max(y_train.max(), y_test.max())) + 1
    model = nn.Sequential(
        nn.Linear(xt.shape[1], args.hidden),
        nn.ReLU(),
        nn.Dropout(args.dropout),
        nn.Linear(args.hidden, classes),
    )
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(xt))
        total = 0.0
        for i in range(0, len(xt), args.batch_size):
            idx = perm[i : i + args.batch_size]
            opt.zero_grad()
            loss = loss_fn(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        if (epoch + 1) % 5 == 0 or epoch + 1 == args.epochs:
            print(f"epoch {epoch + 1}: train loss {total / len(xt):.4f}", flush=True)

    model.eval()
    with torch.no_grad():
        pred = model(torch.from_numpy((x_test - mean) / std)).argmax(1).numpy()
    accuracy = float((pred == y_test).mean())
    print(f"test accuracy: {accuracy:.4f}")

    model_dir = Path(args.model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), model_dir / "model.pt")
    np.savez(model_dir / "normalization.npz", mean=mean, std=std)
    out = Path(os.environ.get("SM_OUTPUT_DATA_DIR", model_dir))
    out.mkdir(parents=True, exist_ok=True)
    metrics = {"test_accuracy": accuracy, "test_count": len(y_test)}
    (out / "metrics.json").write_text(json.dumps(metrics))


if __name__ == "__main__":
    main()
