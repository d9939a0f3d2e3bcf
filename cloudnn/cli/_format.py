"""Shared rendering of runs and plans for the CLI (rich, imported lazily)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from cloudnn.client import Run


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "-" if value is None else str(value)


def print_run_summary(run: Run) -> None:
    """Headline metrics, fit diagnosis and artifact paths of a finished run."""
    m = run.metrics
    click.echo(f"run      {run.run_id}  [{run.state}]")
    head = m.get("headline") or {}
    if head.get("metric"):
        parts = [
            f"{split} {_fmt(head[split])}"
            for split in ("train", "validation", "test")
            if split in head
        ]
        click.echo(f"{head['metric']:<8} " + "  ".join(parts))
    elif head:
        click.echo("metrics  " + "  ".join(f"{k} {_fmt(v)}" for k, v in head.items()))
    else:
        numeric = {k: v for k, v in m.items() if isinstance(v, int | float)}
        if numeric:
            click.echo(
                "metrics  " + "  ".join(f"{k} {_fmt(v)}" for k, v in numeric.items())
            )
    test = m.get("test") or {}
    if "f1_macro" in test:
        click.echo(f"test f1  {_fmt(test['f1_macro'])} (macro)")
    fit = m.get("fit") or {}
    if fit.get("status"):
        click.echo(f"fit      {fit['status']}: {fit.get('reason', '')}")
    groups = m.get("groups") or {}
    if groups.get("flag"):
        click.echo(
            f"groups   {groups.get('reason') or groups.get('message') or 'gap flagged'}"
        )
    if m.get("stopped_early"):
        click.echo(
            f"stopped  early at epoch {m.get('epochs_run')} (best {m.get('best_epoch')})"
        )
    if run.model_uri:
        click.echo(f"model    {run.model_uri}")
    if run.output_uri:
        click.echo(f"report   {run.output_uri}")
