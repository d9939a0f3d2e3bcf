"""`cloudnn schema [--output FILE]`: the spec's JSON Schema (for editors and CI)."""

from __future__ import annotations

import click

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


@click.command("schema")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, writable=True),
    help="Write the schema to FILE instead of stdout.",
)
def cli(output: str | None) -> None:
    """Print the JSON Schema of a cloudnn spec.

    \b
    Point your editor's YAML support at it, e.g. with a first line
      # yaml-language-server: $schema=cloudnn.schema.json
    """
    import json
    from pathlib import Path

    from cloudnn.spec import SPEC_VERSION, Spec

    # pydantic emits 2020-12 keywords ($defs, prefixItems) without naming the
    # dialect; validators and editors need "$schema" to pick the right one
    body = Spec.model_json_schema()
    body.pop("title", None)
    schema = {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": f"cloudnn spec (version {SPEC_VERSION})",
        **body,
    }
    text = json.dumps(schema, indent=2) + "\n"
    if output is None:
        click.echo(text, nl=False)
        return
    Path(output).write_text(text, encoding="utf-8")
    click.echo(f"wrote {output}", err=True)
