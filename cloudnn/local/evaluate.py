"""Evaluate a trained model directory on its test split or on a labelled file."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def evaluate_run(model_dir: str | Path, *, data: str | None = None) -> dict[str, Any]:
    """Metrics report (as in metrics.json) for ``model_dir``.

    Without ``data`` the run's own test split is rebuilt from its spec (the
    split is deterministic); with ``data``, that file is read in the training
    format and preprocessed with the statistics saved at training time.
    """
    import numpy as np

    from cloudnn.runtime.artifacts import load_model_dir
    from cloudnn.runtime.data import load_datasets, load_labeled
    from cloudnn.runtime.evaluate import group_metrics
    from cloudnn.runtime.report import evaluate_dataset, headline, predictions
    from cloudnn.spec import saved_spec

    loaded = load_model_dir(model_dir)
    spec = saved_spec((Path(model_dir) / "spec.json").read_text())
    if data is None:
        split = "test"
        input_shape = getattr(spec.model, "input_shape", None)
        # the split is a pure function of the spec, so this is the very test
        # split the run reported on (as long as the data file is unchanged)
        _, _, ds, _ = load_datasets(spec.data, spec.task, input_shape=input_shape)
        ds_pre = loaded.pre
    else:
        split = "data"
        ds_pre = loaded.pre
        ds = load_labeled(data, spec.data, ds_pre)
    report: dict[str, Any] = {
        split: evaluate_dataset(loaded.model, ds_pre, ds, spec.task),
        "source": data or "test split",
        "run_id": loaded.meta.get("run_id"),
    }
    if ds.groups is not None and len(ds):
        labels = (
            [str(c) for c in ds_pre.classes] if ds_pre.classes is not None else None
        )
        report["groups"] = group_metrics(
            np.asarray(ds.y),
            predictions(loaded.model, ds, spec.task),
            np.asarray(ds.groups),
            task=spec.task,
            labels=labels,
        )
    report["headline"] = headline({"test": report[split]}, spec.task)
    return report
