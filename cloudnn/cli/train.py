"""`cloudnn train SPEC`: train on a provider, follow progress, print the result."""

from __future__ import annotations

import click


@click.command("train")
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--provider", "-p", default="local", show_default=True, help="Backend.")
@click.option(
    "--resume", metavar="RUN", help="Continue RUN from its latest checkpoint."
)
@click.option("--detach", is_flag=True, help="Submit and return without waiting.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or job log.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the final metrics as JSON."
)
def cli(
    spec: str,
    provider: str,
    resume: str | None,
    detach: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """Train SPEC on a provider (default: local PyTorch) and wait for it."""
    import json

    from cloudnn.client import Client

    client = Client(quiet=quiet)
    run = client.train(spec, provider=provider, resume=resume, wait=not detach)
    if detach:
        click.echo(
            f"submitted {run.run_id} ({run.provider}); follow: cloudnn runs show {run.run_id}"
        )
        return
    if as_json:
        click.echo(json.dumps({"run_id": run.run_id, **run.metrics}, indent=2))
        return
    from cloudnn.cli._format import print_run_summary

    print_run_summary(run)
