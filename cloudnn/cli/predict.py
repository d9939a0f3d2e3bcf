"""`cloudnn predict ENDPOINT --data FILE|-`: call an endpoint with JSON or CSV rows."""

from __future__ import annotations

from typing import Any

import click


def _cell(text: str) -> Any:
    """A CSV cell as a number when it is one (int before float), else the string."""
    value = text.strip()
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        return value


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_instances(text: str, *, fmt: str = "auto") -> list[Any]:
    """Instances from JSON (``{"instances": [...]}``, a list, or JSON lines) or CSV.

    A CSV header row (any non-numeric cell in the first row) names the
    features: rows are then sent as ``{feature: value}`` objects.
    """
    import csv
    import io
    import json

    from cloudnn.errors import SpecError

    stripped = text.strip()
    if not stripped:
        raise SpecError("--data", "no input rows", hint="pass a JSON or CSV file")
    if fmt == "auto":
        fmt = "json" if stripped[0] in "[{" else "csv"
    if fmt == "json":
        try:
            data = json.loads(stripped)
        except ValueError:
            try:  # JSON lines: one instance per line
                data = [
                    json.loads(line) for line in stripped.splitlines() if line.strip()
                ]
            except ValueError as exc:
                raise SpecError(
                    "--data",
                    f"not valid JSON: {exc}",
                    hint='send {"instances": [...]}, a JSON list, or CSV rows',
                ) from None
        if isinstance(data, dict):
            if "instances" not in data:
                raise SpecError(
                    "--data",
                    'a JSON object needs an "instances" list',
                    hint='wrap the rows: {"instances": [[...], [...]]}',
                )
            data = data["instances"]
        if not isinstance(data, list):
            raise SpecError("--data", "instances must be a JSON list")
        return data
    rows = [r for r in csv.reader(io.StringIO(stripped)) if any(c.strip() for c in r)]
    if rows and not all(_is_number(c) for c in rows[0]):
        header = [c.strip() for c in rows[0]]
        return [dict(zip(header, map(_cell, r), strict=False)) for r in rows[1:]]
    return [[_cell(c) for c in r] for r in rows]


@click.command("predict")
@click.argument("endpoint")
@click.option(
    "--data",
    "-d",
    required=True,
    metavar="FILE|-",
    help="JSON ({'instances': [...]} or a list) or CSV rows; '-' reads stdin.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", "json", "csv"]),
    default="auto",
    show_default=True,
    help="Input format (auto: by the first character).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1),
    help="Instances per request (default: auto).",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print {'predictions': [...]} at once."
)
def cli(
    endpoint: str, data: str, fmt: str, batch_size: int | None, as_json: bool
) -> None:
    """Send instances to ENDPOINT; print one prediction per line (JSON)."""
    import json
    import sys
    from pathlib import Path

    from cloudnn.client import Client
    from cloudnn.errors import SpecError

    if data == "-":
        text = sys.stdin.read()
    else:
        path = Path(data)
        if not path.is_file():
            raise SpecError(
                "--data", f"no such file: {data}", hint="pass a JSON or CSV file"
            )
        text = path.read_text(encoding="utf-8-sig")
        if fmt == "auto" and path.suffix.lower() in (".csv", ".tsv"):
            fmt = "csv"
    instances = parse_instances(text, fmt=fmt)
    if not instances:
        raise SpecError("--data", "no input rows", hint="pass a JSON or CSV file")
    predictions = (
        Client(quiet=True).endpoint(endpoint).predict(instances, batch_size=batch_size)
    )
    if as_json:
        click.echo(json.dumps({"predictions": predictions}, indent=2))
        return
    for prediction in predictions:
        click.echo(json.dumps(prediction, separators=(",", ":")))
