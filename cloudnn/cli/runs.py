"""`cloudnn runs list|show`: the run registry."""

from __future__ import annotations

import click


@click.group("runs")
def cli() -> None:
    """List and inspect runs recorded under CLOUDNN_HOME."""


@cli.command("list")
@click.option("--limit", default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def list_runs(limit: int, as_json: bool) -> None:
    """The most recent runs, newest first."""
    import json
    import time

    from cloudnn.client import Client

    # a run that is not over is asked for its state: the registry alone can lag
    records = [run.record for run in Client(quiet=True).runs(limit=limit)]
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "run_id": r.run_id,
                        "provider": r.provider,
                        "state": r.state,
                        "headline": r.metrics.get("headline"),
                        "created_at": r.created_at,
                    }
                    for r in records
                ],
                indent=2,
            )
        )
        return
    if not records:
        click.echo("no runs yet: start one with `cloudnn train SPEC`")
        return
    click.echo(f"{'RUN':<44} {'PROVIDER':<9} {'STATE':<10} {'TEST':>8}  CREATED")
    for r in records:
        head = r.metrics.get("headline") or {}
        test = head.get("test")
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created_at))
        click.echo(
            f"{r.run_id:<44} {r.provider:<9} {r.state:<10} "
            f"{'-' if test is None else f'{test:.4f}':>8}  {created}"
        )


@cli.command("show")
@click.argument("run_id")
@click.option("--log", is_flag=True, help="Print the job log too.")
@click.option("--json", "as_json", is_flag=True)
def show(run_id: str, log: bool, as_json: bool) -> None:
    """Details of RUN (id, unique prefix, or 'latest')."""
    import json

    from cloudnn.cli._format import print_run_summary
    from cloudnn.client import Client

    run = Client(quiet=True).run(run_id)  # asks the provider unless it is over
    if as_json:
        r = run.record
        click.echo(
            json.dumps(
                {
                    "run_id": r.run_id,
                    "provider": r.provider,
                    "state": r.state,
                    "message": r.message,
                    "model_uri": r.model_uri,
                    "output_uri": r.output_uri,
                    "spec_path": r.spec_path,
                    "metrics": r.metrics,
                },
                indent=2,
            )
        )
        return
    print_run_summary(run)
    if run.record.message:
        click.echo(f"message  {run.record.message}")
    if run.record.spec_path:
        click.echo(f"spec     {run.record.spec_path}")
    if log:
        for line in run.logs():
            click.echo(line)
