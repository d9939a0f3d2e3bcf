"""`cloudnn check [--provider P]`: is each provider installed and usable?"""

from __future__ import annotations

import click


@click.command("check")
@click.option("--provider", "-p", "names", multiple=True, help="Only these providers.")
def cli(names: tuple[str, ...]) -> None:
    """Report, per provider, whether it is installed and its checks pass.

    Checks have no side effects: they look at installed packages, credentials
    and permissions, and create nothing.
    """
    from cloudnn.client import Client
    from cloudnn.errors import CloudnnError
    from cloudnn.registry import known_providers

    client = Client(quiet=True)
    failed = False
    for name in names or tuple(known_providers()):
        try:
            report = client.provider(name).check()
        except CloudnnError as exc:
            hint = f"  ({exc.hint})" if exc.hint else ""
            click.echo(f"{name:<8} not installed{hint}")
            failed = failed or bool(names)
            continue
        click.echo(f"{name:<8} {'ready' if report.ok else 'NOT READY'}")
        for what, passed, detail in report.checks:
            mark = "ok " if passed else "!! "
            click.echo(f"  {mark}{what}" + (f": {detail}" if detail else ""))
        failed = failed or not report.ok
    if failed:
        raise SystemExit(1)
