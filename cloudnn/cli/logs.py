"""`cloudnn logs RUN [-f]`: a run's job log, from whichever provider ran it."""

from __future__ import annotations

import click


@click.command("logs")
@click.argument("run_id", metavar="RUN")
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the job ends.")
def cli(run_id: str, follow: bool) -> None:
    """Print the log of RUN (id, unique prefix, or 'latest')."""
    from cloudnn.client import Client

    for line in Client(quiet=True).logs(run_id, follow=follow):
        click.echo(line)
