"""`cloudnn export RUN --format torchscript|onnx`: a portable model file, verified."""

from __future__ import annotations

import click


@click.command("export")
@click.argument("run_id", metavar="RUN")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["torchscript", "onnx"]),
    required=True,
    help="Output format.",
)
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False), help="Where to write the file."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def cli(run_id: str, fmt: str, output: str | None, as_json: bool) -> None:
    """Export RUN's model (id, prefix, 'latest', or a model directory) and check it.

    The exported model runs on a batch of inputs next to the PyTorch model;
    the largest absolute difference of their outputs is printed.
    """
    import json
    from pathlib import Path

    if (Path(run_id) / "cloudnn_model.json").is_file():
        model_dir = Path(run_id)
    else:
        from cloudnn.client import Client

        # a cloud run's model is downloaded once, next to the registry
        model_dir = Client(quiet=True).model_dir(run_id)
    from cloudnn.runtime.export import export_model

    result = export_model(model_dir, fmt, output)  # type: ignore[arg-type]
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
        return
    size = result.get("bytes")
    click.echo(
        f"exported {fmt} -> {result['path']}" + (f" ({size:,} bytes)" if size else "")
    )
    diff = result.get("max_abs_diff")
    rows = result.get("rows_checked")
    if diff is not None:
        click.echo(
            f"max abs diff vs PyTorch: {diff:.3g}"
            + (f" over {rows} rows" if rows else "")
        )
