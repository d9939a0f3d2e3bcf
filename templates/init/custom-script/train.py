"""A SageMaker script-mode training script: plain PyTorch, no cloudnn import.

It runs unchanged on SageMaker (PyTorch estimator, entry_point="train.py") and
under `cloudnn train spec.yaml`, which provides the same contract:
hyperparameters as --name value arguments, data channels in SM_CHANNEL_<NAME>,
the model directory in SM_MODEL_DIR, reports in SM_OUTPUT_DATA_DIR.
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


def read_csv(folder: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    with open(Path(folder) / name, newline="") as fh:
        rows = list(csv.reader(fh))[1:]
    data = np.asarray(rows, dtype=np.float32)
    return data[:, :-1], data[:, -1].astype(np.int64)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument(
        "--batch-size", "--batch_size", dest="batch_size", type=int, default=32
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model-dir", default=os.environ.get("SM_MODEL_DIR", "model"))
    parser.add_argument(
        "--train", default=os.environ.get("SM_CHANNEL_TRAIN", "data/train")
    )
    parser.add_argument(
        "--test", default=os.environ.get("SM_CHANNEL_TEST", "data/test")
    )
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    x_train, y_train = read_csv(args.train, "train.csv")
    x_test, y_test = read_csv(args.test, "test.csv")
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    xt = torch.from_numpy((x_train - mean) / std)
    yt = torch.from_numpy(y_train)
    model = nn.Sequential(
        nn.Linear(xt.shape[1], 128), nn.ReLU(), nn.Dropout(0.2), nn.Linear(128, 10)
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
        if (epoch + 1) % 10 == 0:
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
    (out / "metrics.json").write_text(json.dumps({"test_accuracy": accuracy}))


if __name__ == "__main__":
    main()
