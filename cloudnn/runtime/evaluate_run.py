"""Evaluate a trained model folder on its test split or on a labelled file.

Runs on the machine that asks (``cloudnn evaluate``), for a model of any
backend: a cloud run's model is downloaded first by the Client.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cloudnn.spec import Spec

__all__ = ["evaluate_run"]


def evaluate_run(
    model_dir: str | Path,
    *,
    data: str | None = None,
    spec: Spec | None = None,
    output_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Metrics report (as in metrics.json) for ``model_dir``.

    Without ``data`` the run's own test split is rebuilt from its spec (the
    split is deterministic); with ``data``, that file is read in the training
    format -- its columns lined up with the training columns by name -- and
    preprocessed with the statistics saved at training time. ``spec`` is the
    spec as submitted (with this machine's data paths; default: the one saved
    with the model). The fit diagnosis is re-read from ``output_dir`` (the
    run's reports) when given.
    """
    import numpy as np

    from cloudnn.runtime.artifacts import load_model_dir
    from cloudnn.runtime.data import load_datasets, load_labeled
    from cloudnn.runtime.evaluate import group_metrics, run_fit
    from cloudnn.runtime.report import evaluate_dataset, headline, predictions
    from cloudnn.spec import saved_spec

    loaded = load_model_dir(model_dir)
    if spec is None:
        spec = saved_spec((Path(model_dir) / "spec.json").read_text())
    if data is None:
        split = "test"
        input_shape = getattr(spec.model, "input_shape", None)
        # the split is a pure function of the spec, so this is the very test
        # split the run reported on (as long as the data file is unchanged)
        _, _, ds, _ = load_datasets(
            spec.data, spec.task, input_shape=input_shape, log=_quiet
        )
    else:
        split = "data"
        ds = load_labeled(data, spec.data, loaded.pre, where="--data")
    report: dict[str, Any] = {
        split: evaluate_dataset(loaded.model, loaded.pre, ds, spec.task),
        "source": data or "test split",
        "run_id": loaded.meta.get("run_id"),
    }
    if ds.groups is not None and len(ds):
        pre = loaded.pre
        labels = [str(c) for c in pre.classes] if pre.classes is not None else None
        report["groups"] = group_metrics(
            np.asarray(ds.y),
            predictions(loaded.model, ds, spec.task),
            np.asarray(ds.groups),
            task=spec.task,
            labels=labels,
        )
    if output_dir is not None:
        fit = run_fit(output_dir, task=spec.task)
        if fit is not None:
            report["fit"] = fit
    report["headline"] = headline({"test": report[split]}, spec.task)
    return report


def _quiet(message: str) -> None:
    """Imputation notes belong in a job's log, not in evaluate's output."""
