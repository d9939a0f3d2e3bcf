"""Write the digits as data/train/train.csv and data/test/test.csv channels."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits


def main() -> None:
    root = Path(__file__).resolve().parent / "data"
    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))
    cut = int(0.8 * len(order))
    for channel, idx in (("train", order[:cut]), ("test", order[cut:])):
        folder = root / channel
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"{channel}.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow([f"p{i}" for i in range(64)] + ["label"])
            for i in idx:
                writer.writerow(
                    [int(v) for v in digits.data[i]] + [int(digits.target[i])]
                )
        print(f"wrote {folder / f'{channel}.csv'} ({len(idx)} rows)")


if __name__ == "__main__":
    main()
