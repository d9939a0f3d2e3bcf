"""`cloudnn evaluate RUN [--data FILE]`: metrics of a trained model."""

from __future__ import annotations

import click


@click.command("evaluate")
@click.argument("run_id")
@click.option(
    "--data",
    type=click.Path(exists=True),
    help="Labelled data in the training format (default: the run's test split).",
)
@click.option("--json", "as_json", is_flag=True)
def cli(run_id: str, data: str | None, as_json: bool) -> None:
    """Evaluate RUN's model on its test split, or on FILE.

    FILE's columns are matched to the training columns by name. Prints the
    metrics, the confusion matrix (classification) and the run's fit
    diagnosis; --json prints the whole report.
    """
    import json

    from cloudnn.client import Client

    report = Client(quiet=True).evaluate(run_id, data=data)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    from cloudnn.runtime.evaluate import format_report

    click.echo(format_report(report, confusion=True))
