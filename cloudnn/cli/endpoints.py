"""`cloudnn endpoints list|show`: endpoints recorded under CLOUDNN_HOME."""

from __future__ import annotations

import click


@click.group("endpoints")
def cli() -> None:
    """List and inspect endpoints (state is checked live)."""


@cli.command("list")
@click.option("--json", "as_json", is_flag=True)
def list_endpoints(as_json: bool) -> None:
    """Every endpoint, newest first."""
    import json
    import time

    from cloudnn.client import Client

    endpoints = Client(quiet=True).endpoints()
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "name": e.name,
                        "provider": e.provider,
                        "state": e.state,
                        "url": e.url,
                        "run_id": e.run_id,
                        "message": e.message,
                        "created_at": e.record.created_at,
                    }
                    for e in endpoints
                ],
                indent=2,
            )
        )
        return
    if not endpoints:
        click.echo("no endpoints: start one with `cloudnn deploy RUN`")
        return
    click.echo(
        f"{'NAME':<33} {'PROVIDER':<9} {'STATE':<10} {'URL':<28} {'RUN':<40} CREATED"
    )
    for e in endpoints:
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.record.created_at))
        click.echo(
            f"{e.name:<33} {e.provider:<9} {e.state:<10} {e.url or '-':<28} "
            f"{e.run_id or '-':<40} {created}"
        )
        if e.message and e.state in ("Failed", "Stopped"):
            click.echo(f"  {e.message}")


@cli.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
def show(name: str, as_json: bool) -> None:
    """What endpoint NAME serves: model, settings, request counts."""
    import json

    from cloudnn.client import Client

    ep = Client(quiet=True).endpoint(name)
    endpoint = {
        "name": ep.name,
        "provider": ep.provider,
        "state": ep.state,
        "url": ep.url,
        "run_id": ep.run_id,
    }
    if ep.state == "InService":
        info = ep.info()
    else:  # nothing answers: what the registry knows
        info = {"endpoint": endpoint, "message": ep.message}
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    for key, value in info.items():
        text = json.dumps(value) if isinstance(value, dict | list) else str(value)
        click.echo(f"{key:<18} {text}")
