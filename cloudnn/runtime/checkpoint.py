"""Atomic checkpoints: write a temporary file, fsync, rename; resume from the newest.

A checkpoint holds everything needed for a bit-identical continuation: model
and optimiser state, scheduler state, every RNG state, the position inside the
epoch, the early-stopping state and the history so far.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

__all__ = ["latest_checkpoint", "load_checkpoint", "save_checkpoint"]

_NAME = re.compile(r"^ckpt-e(\d{6})-s(\d{9})\.pt$")


def _key(path: Path) -> tuple[int, int]:
    m = _NAME.match(path.name)
    assert m is not None
    return int(m.group(1)), int(m.group(2))


def checkpoint_files(directory: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary files are ignored)."""
    if not directory.is_dir():
        return []
    return sorted((p for p in directory.iterdir() if _NAME.match(p.name)), key=_key)


def latest_checkpoint(directory: Path) -> Path | None:
    files = checkpoint_files(directory)
    return files[-1] if files else None


def save_checkpoint(
    directory: Path, state: dict[str, Any], *, epoch: int, step: int, keep: int
) -> Path:
    """Atomically write ``state`` as the checkpoint for (epoch, step); prune old ones."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"ckpt-e{epoch:06d}-s{step:09d}.pt"
    tmp = directory / f".{final.name}.{os.getpid()}.tmp"
    with open(tmp, "wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    # a rename is only durable once the directory entry is flushed too
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    for old in checkpoint_files(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return final


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``: tensors and plain data only.

    A checkpoint can come back from cloud storage (spot restarts, resumes), so
    it is never unpickled as arbitrary objects; RNG states are stored as
    tensors and Python numbers for that reason.
    """
    import pickle

    from cloudnn.runtime.events import first_line

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        from cloudnn.errors import SpecError

        raise SpecError(
            str(path),
            "not a checkpoint this cloudnn can read safely (it holds objects "
            f"other than tensors and plain data: {first_line(exc)[:120]})",
            hint="move it out of the checkpoint folder to start from the one before, "
            "or train without --resume",
        ) from exc
