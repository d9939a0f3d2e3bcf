"""`cloudnn plan SPEC --provider P`: the exact requests a provider would receive."""

from __future__ import annotations

import click


@click.command("plan")
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option(
    "--provider",
    "-p",
    default="local",
    show_default=True,
    help="Backend, or 'all' for every installed one.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def cli(spec: str, provider: str, as_json: bool) -> None:
    """Plan SPEC offline: resources, requests, cost and warnings. No side effects."""
    import json

    from cloudnn.client import Client
    from cloudnn.registry import available_providers

    client = Client(quiet=True)
    names = available_providers() if provider == "all" else [provider]
    plans = [client.plan(spec, provider=name).to_dict() for name in names]
    if as_json:
        click.echo(json.dumps(plans if provider == "all" else plans[0], indent=2))
        return
    for p in plans:
        click.echo(f"provider        {p['provider']}")
        click.echo(f"job             {p['job_name']}  (spec {p['spec_hash']})")
        click.echo(
            f"resources       {p['instance_count']} x {p['instance_type']}, "
            f"{p['processes_per_node']} process(es)/node, accelerator {p['accelerator'] or 'none'}"
        )
        cost = p["estimated_cost_usd"]
        hourly = p["hourly_cost_usd"]
        click.echo(
            "cost            "
            + ("unknown" if hourly is None else f"${hourly:.2f}/h")
            + ("" if cost is None else f", estimated ${cost:.2f}")
        )
        if p["model_uri"]:
            click.echo(f"model           {p['model_uri']}")
        for u in p["uploads"]:
            click.echo(
                f"upload          {u['kind']}: {u['source']} -> {u['destination']} "
                f"({u['size']:,} bytes)"
            )
        for w in p["warnings"]:
            click.echo(f"warning         {w}")
        click.echo("requests:")
        click.echo(json.dumps(p["requests"], indent=2))
