"""`cloudnn init DIR [--template NAME]`: start a project from a template."""

from __future__ import annotations

import click


@click.command("init")
@click.argument("directory", metavar="[DIR]", required=False)
@click.option(
    "--template",
    "-t",
    "template",
    metavar="NAME",
    default=None,
    help="Starter template (default: mlp-tabular; --list shows all).",
)
@click.option("--list", "list_only", is_flag=True, help="List templates and exit.")
@click.option("--force", is_flag=True, help="Overwrite files that already exist.")
def cli(
    directory: str | None, template: str | None, list_only: bool, force: bool
) -> None:
    """Copy a starter project (a spec, sample data, a README) into DIR."""
    from cloudnn.templates import (
        DEFAULT_INIT_TEMPLATE,
        copy_init_template,
        list_init_templates,
        templates_root,
    )

    if list_only:
        templates = list_init_templates()
        if not templates:
            click.echo(f"no templates under {templates_root() / 'init'}")
            return
        width = max(len(name) for name in templates)
        for name, summary in templates.items():
            mark = " (default)" if name == DEFAULT_INIT_TEMPLATE else ""
            click.echo(f"{name:<{width}}  {summary}{mark}".rstrip())
        return
    if directory is None:
        raise click.UsageError("missing argument 'DIR' (or pass --list)")
    name = template or DEFAULT_INIT_TEMPLATE
    written = copy_init_template(name, directory, force=force)
    click.echo(f"created {directory} from template {name!r} ({len(written)} files):")
    shown = [p for p in written if p.parent == written[0].parent or p.suffix == ".yaml"]
    for path in (shown or written)[:12]:
        click.echo(f"  {path}")
    hidden = len(written) - min(len(shown or written), 12)
    if hidden > 0:
        click.echo(f"  ... and {hidden} more (data files)")
    spec = next((p for p in written if p.name in ("spec.yaml", "spec.yml")), None)
    if spec is not None:
        click.echo(f"next: cloudnn validate {spec} && cloudnn train {spec}")
