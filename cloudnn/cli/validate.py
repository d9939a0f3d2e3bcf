"""`cloudnn validate FILE...`: check spec files without training (no torch)."""

from __future__ import annotations

import click


@click.command("validate")
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
def cli(files: tuple[str, ...]) -> None:
    """Load and check each spec FILE; stop at the first invalid one (exit 2).

    Checks types, ranges, unknown keys, accelerator names, provider options
    and that local data files exist. Imports neither torch nor any cloud SDK.
    """
    # no click.Path(exists=True): a missing file should fail through load_spec,
    # with the same `error: ... / To fix: ...` as every other spec problem
    from cloudnn.spec import load_spec

    for file in files:
        spec = load_spec(file)
        click.echo(f"ok: {file} ({spec.name}, {spec.task}, {spec.model.type})")
