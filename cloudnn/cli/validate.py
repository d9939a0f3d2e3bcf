"""`cloudnn validate FILE...`: check spec files and their data without training."""

from __future__ import annotations

import click


@click.command("validate")
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
def cli(files: tuple[str, ...]) -> None:
    """Load and check each spec FILE; stop at the first invalid one (exit 2).

    Checks types, ranges, unknown keys, accelerator names, provider options,
    and the local data the spec names: headers and columns, NPZ keys, shapes
    and dtypes, labels, a sample of the values, image folders and headers.
    Remote data (s3://, gs://, ...) is checked by the job. Imports neither
    torch nor any cloud SDK.
    """
    # no click.Path(exists=True): a missing file should fail through load_spec,
    # with the same `error: ... / To fix: ...` as every other spec problem
    from cloudnn.datacheck import check_data
    from cloudnn.spec import load_spec

    for file in files:
        spec = load_spec(file)
        check_data(spec)
        click.echo(f"ok: {file} ({spec.name}, {spec.task}, {spec.model.type})")
