"""`cloudnn cancel RUN`: stop a training job (it checkpoints first)."""

from __future__ import annotations

import click


@click.command("cancel")
@click.argument("run_id", metavar="RUN")
@click.option("--no-wait", is_flag=True, help="Return once the stop is requested.")
def cli(run_id: str, no_wait: bool) -> None:
    """Stop RUN (id, unique prefix, or 'latest'); resume it later with --resume."""
    from cloudnn.client import Client

    client = Client(quiet=True)
    before = client.run(run_id)
    if before.state in ("SUCCEEDED", "FAILED", "CANCELLED"):
        click.echo(f"{before.run_id} already ended: {before.state}")
        return
    run = client.cancel(before.run_id, wait=not no_wait)
    if no_wait:
        click.echo(f"stop requested for {run.run_id} ({run.state})")
        return
    click.echo(f"{run.run_id}: {run.state}")
    if run.state == "CANCELLED":
        click.echo(f"continue with: cloudnn train SPEC --resume {run.run_id}")
