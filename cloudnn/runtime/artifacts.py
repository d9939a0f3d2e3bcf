"""Load a model directory written by :func:`cloudnn.runtime.report.save_model_dir`.

Built-in models are rebuilt from their config and ``model.pt`` (no user code
needed); ``module`` models load ``model.ts`` when present, else re-import the
factory. Serving, evaluation and export all load through here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from cloudnn.errors import NotFoundError

__all__ = ["LoadedModel", "load_model_dir"]


@dataclass
class LoadedModel:
    model: nn.Module
    pre: Any  # cloudnn.runtime.data.Preprocessor
    meta: dict[str, Any]
    model_dir: Path

    @property
    def task(self) -> str:
        return str(self.meta["task"])


def load_model_dir(
    model_dir: str | Path,
    *,
    prefer: Literal["torch", "torchscript"] = "torch",
    device: str = "cpu",
) -> LoadedModel:
    """Load model, preprocessing and metadata from ``model_dir`` in eval mode."""
    from cloudnn.runtime.data import Preprocessor

    root = Path(model_dir)
    meta_file = root / "cloudnn_model.json"
    if not meta_file.is_file():
        raise NotFoundError(
            f"{root} is not a cloudnn model directory (no cloudnn_model.json)",
            hint="point at a run's model/ folder, or train one with `cloudnn train`",
        )
    meta = json.loads(meta_file.read_text())
    pre = Preprocessor.load(root)
    model_cfg = meta["model"]
    has_ts = (root / "model.ts").is_file()
    use_ts = has_ts and (prefer == "torchscript" or "module" in model_cfg)
    model: nn.Module
    if use_ts:
        model = torch.jit.load(str(root / "model.ts"), map_location=device)
    else:
        from cloudnn.runtime.models import build_model
        from cloudnn.spec import saved_spec

        spec = saved_spec((root / "spec.json").read_text())
        model = build_model(spec.model, pre, num_outputs=meta["num_outputs"])
        state = torch.load(root / "model.pt", map_location=device, weights_only=True)
        model.load_state_dict(state)
    model.to(device).eval()
    return LoadedModel(model=model, pre=pre, meta=meta, model_dir=root)
