"""Write scikit-learn's bundled 8x8 digits as data/digits.csv (no download)."""

from __future__ import annotations

import csv
from pathlib import Path

from sklearn.datasets import load_digits


def main() -> None:
    out = Path(__file__).resolve().parent / "data" / "digits.csv"
    out.parent.mkdir(exist_ok=True)
    digits = load_digits()
    with open(out, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([f"p{i}" for i in range(64)] + ["label"])
        for row, label in zip(digits.data, digits.target, strict=True):
            writer.writerow([int(v) for v in row] + [int(label)])
    print(f"wrote {out} ({len(digits.target)} rows)")


if __name__ == "__main__":
    main()
