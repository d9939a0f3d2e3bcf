"""Generate noisy waveforms (sine / square / sawtooth) as data/waves.npz.

x: float32 (N, T, 1) sequences with random frequency, phase, amplitude and
noise; y: int64 class. Deterministic (fixed seed), no download.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CLASSES = ("sine", "square", "sawtooth")


def make(
    n: int = 1500, steps: int = 50, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, steps)
    y = rng.integers(0, len(CLASSES), size=n)
    freq = rng.uniform(1.5, 4.0, size=(n, 1))
    phase = rng.uniform(0.0, 1.0, size=(n, 1))
    amp = rng.uniform(0.5, 2.0, size=(n, 1))
    cycles = freq * t[None, :] + phase
    sine = np.sin(2 * np.pi * cycles)
    square = np.sign(sine)
    saw = 2.0 * (cycles - np.floor(cycles + 0.5))
    waves = np.choose(y[:, None], [sine, square, saw])
    x = amp * waves + rng.normal(0.0, 0.3, size=(n, steps))
    return x[:, :, None].astype(np.float32), y.astype(np.int64)


def main() -> None:
    out = Path(__file__).resolve().parent / "data" / "waves.npz"
    out.parent.mkdir(exist_ok=True)
    x, y = make()
    np.savez(out, x=x, y=y)
    print(f"wrote {out}: x {x.shape}, classes {CLASSES}")


if __name__ == "__main__":
    main()
