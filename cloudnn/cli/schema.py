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
@click.option(
    "--markdown",
    is_flag=True,
    help="Print the human-readable spec reference (docs/spec.md) instead.",
)
def cli(output: str | None, markdown: bool) -> None:
    """Print the JSON Schema of a cloudnn spec.

    \b
    Point your editor's YAML support at it, e.g. with a first line
      # yaml-language-server: $schema=cloudnn.schema.json
    """
    import json

    from cloudnn.spec import SPEC_VERSION, Spec, reference_markdown

    if markdown:
        _emit(reference_markdown(), output)
        return
    # pydantic emits 2020-12 keywords ($defs, prefixItems) without naming the
    # dialect; validators and editors need "$schema" to pick the right one
    body = Spec.model_json_schema()
    body.pop("title", None)
    schema = {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": f"cloudnn spec (version {SPEC_VERSION})",
        **body,
    }
    _emit(json.dumps(schema, indent=2) + "\n", output)


def _emit(text: str, output: str | None) -> None:
    from pathlib import Path

    if output is None:
        click.echo(text, nl=False)
        return
    Path(output).write_text(text, encoding="utf-8")
    click.echo(f"wrote {output}", err=True)
