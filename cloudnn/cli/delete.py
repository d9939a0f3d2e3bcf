"""`cloudnn delete ENDPOINT`: stop an endpoint and remove what it created."""

from __future__ import annotations

import click


@click.command("delete")
@click.argument("endpoint")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def cli(endpoint: str, yes: bool) -> None:
    """Delete ENDPOINT: stop its server, free its port, remove its token and record."""
    import sys

    from cloudnn.client import Client

    client = Client(quiet=True)
    ep = client.endpoint(endpoint)
    if not yes:
        if not sys.stdin.isatty():
            raise click.UsageError(
                f"refusing to delete {ep.name} without confirmation; pass --yes"
            )
        click.confirm(
            f"Delete endpoint {ep.name} ({ep.provider}, {ep.state}, {ep.url or 'no url'})?",
            abort=True,
        )
    client.delete_endpoint(ep)
    click.echo(f"deleted {ep.name}")
