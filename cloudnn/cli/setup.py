"""`cloudnn setup --provider P [-o DIR]`: the one-time account set-up, as files."""

from __future__ import annotations

import click


@click.command("setup")
@click.option("--provider", "-p", required=True, help="Cloud to set up (aws, gcp).")
@click.option(
    "--output",
    "-o",
    type=click.Path(file_okay=False),
    help="Write the files into this folder instead of printing them.",
)
def cli(provider: str, output: str | None) -> None:
    """Print (or write) what PROVIDER needs once per account: roles, buckets.

    Nothing is created in the cloud: review the files, then apply them with the
    vendor's own tool (the header of each says how).
    """
    from pathlib import Path

    from cloudnn.client import Client

    files = Client(quiet=True).provider(provider).setup_templates()
    if not files:
        click.echo(f"{provider} needs no one-time set-up")
        return
    if output is None:
        for name, text in files.items():
            click.echo(f"# ---- {name}")
            click.echo(text.rstrip("\n"))
        return
    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        target = folder / name
        if target.exists() and target.read_text() != text:
            from cloudnn.errors import FileConflictError

            raise FileConflictError(
                f"{target} exists with other content",
                hint="choose an empty folder with -o, or move the file aside",
            )
        target.write_text(text)
        click.echo(f"wrote {target}")
