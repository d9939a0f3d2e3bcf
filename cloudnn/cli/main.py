"""The ``cloudnn`` command line: a lazy click group and the one error handler.

``cloudnn --help`` imports click and this module only: every command lives in
its own module, named in :data:`COMMANDS` and imported when it is invoked, so
neither torch nor pydantic nor any vendor SDK loads before it is needed.
Errors are reported in one place, :meth:`LazyGroup.invoke`::

    error: train.epochs: input should be greater than 0
    To fix: use a value greater than 0

Exit codes: 0 ok, 1 provider/job failure or internal error, 2 user error
(bad spec, bad usage), 130 interrupted.
"""

from __future__ import annotations

import errno
import importlib
import os
from typing import Any

import click

# name -> (module, attribute, short help). Order is the order `--help` shows:
# the workflow from a new project to a live endpoint.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "init": ("cloudnn.cli.init", "cli", "Create a project from a template."),
    "check": ("cloudnn.cli.check", "cli", "Check that providers are ready to use."),
    "setup": ("cloudnn.cli.setup", "cli", "Print a provider's one-time set-up files."),
    "validate": ("cloudnn.cli.validate", "cli", "Check spec files without training."),
    "schema": ("cloudnn.cli.schema", "cli", "Print the spec's JSON Schema."),
    "plan": ("cloudnn.cli.plan", "cli", "Show what a provider would be asked to run."),
    "train": ("cloudnn.cli.train", "cli", "Train a spec on a provider."),
    "runs": ("cloudnn.cli.runs", "cli", "List and inspect training runs."),
    "evaluate": ("cloudnn.cli.evaluate", "cli", "Metrics of a trained model."),
    "export": ("cloudnn.cli.export", "cli", "Export a model to TorchScript or ONNX."),
    "deploy": ("cloudnn.cli.deploy", "cli", "Serve a trained model as an endpoint."),
    "endpoints": ("cloudnn.cli.endpoints", "cli", "List and inspect endpoints."),
    "predict": ("cloudnn.cli.predict", "cli", "Send rows to an endpoint."),
    "delete": ("cloudnn.cli.delete", "cli", "Delete an endpoint and its resources."),
    "logs": ("cloudnn.cli.logs", "cli", "Print (or follow) a run's log."),
    "cancel": ("cloudnn.cli.cancel", "cli", "Stop a running training job."),
    "emulator": (
        "cloudnn.cli.emulator",
        "cli",
        "Run a provider's local cloud emulator.",
    ),
}

_DEBUG_ENV = "CLOUDNN_DEBUG"
_OS_HINT = "choose another place, or fix this one's permissions"
_OS_HINTS = {
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path",
    errno.EACCES: "choose a place you can write, or fix its permissions",
    errno.EPERM: "choose a place you can write, or fix its permissions",
    errno.EROFS: "that file system is read-only: choose another place",
    errno.ENOSPC: "free some disk space, or choose another place",
    errno.EISDIR: "that path is a folder: name a file",
    errno.ENOENT: "check the path: a folder on the way does not exist",
}


def _version() -> str:
    import cloudnn

    found = getattr(cloudnn, "__version__", None)
    if isinstance(found, str):
        return found
    from importlib.metadata import version  # slower; only if __init__ lacks it

    return version("cloudnn")


def _debug_enabled(ctx: click.Context) -> bool:
    if ctx.params.get("debug"):
        return True
    return os.environ.get(_DEBUG_ENV, "").strip().lower() in ("1", "true", "yes")


def _echo_err(text: str) -> None:
    click.echo(text, err=True)


def _report(exc: BaseException, *, message: str, hint: str | None, debug: bool) -> None:
    """Traceback (debug only) first, so the one-line error is what stays on screen."""
    if debug:
        import traceback

        _echo_err("".join(traceback.format_exception(exc)).rstrip())
        for line in _all_spec_errors(exc):
            _echo_err(line)
    _echo_err(f"error: {message}")
    table = getattr(exc, "table", None)
    if callable(table) and len(getattr(exc, "rows", ())) > 1:
        for line in table():  # UnsupportedFeatureError: Feature | Reason
            _echo_err(line)
    if hint:
        _echo_err(f"To fix: {hint}")


def _all_spec_errors(exc: BaseException) -> list[str]:
    """Every pydantic error behind a SpecError (it reports only the first)."""
    errors = getattr(exc, "all_errors", None)
    if not errors or len(errors) < 2:
        return []
    # spec.py raised exc, so importing it here costs nothing
    from cloudnn.spec import _loc_to_path

    lines = [f"all {len(errors)} problems in the spec:"]
    for e in errors:
        loc = _loc_to_path(tuple(e.get("loc", ())))
        lines.append(f"  - {loc}: {e.get('msg', '')} [{e.get('type', '')}]")
    return lines


class LazyGroup(click.Group):
    """A group whose subcommands are imported from :data:`COMMANDS` on use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS) + sorted(set(self.commands) - set(COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module_name, attr, _ = entry
        command = getattr(importlib.import_module(module_name), attr)
        if not isinstance(command, click.Command):
            raise TypeError(f"{module_name}.{attr} is not a click command")
        return command

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else ""
        if name and not name.startswith("-") and name not in self.list_commands(ctx):
            import difflib  # only on a typo: it costs ~1 ms at start-up

            close = difflib.get_close_matches(name, self.list_commands(ctx), n=1)
            maybe = f" Did you mean {close[0]!r}?" if close else ""
            ctx.fail(f"No such command {name!r}.{maybe}")
        return super().resolve_command(ctx, args)

    def format_commands(
        self, ctx: click.Context, formatter: click.HelpFormatter
    ) -> None:
        # the table's own help text: listing must not import the modules
        rows = [(name, COMMANDS[name][2]) for name in COMMANDS]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise  # usage errors keep click's own message and exit code 2
        except KeyboardInterrupt as exc:
            _report(exc, message="interrupted", hint=None, debug=_debug_enabled(ctx))
            ctx.exit(130)
        except Exception as exc:
            from cloudnn.errors import CloudnnError

            debug = _debug_enabled(ctx)
            if isinstance(exc, CloudnnError):
                _report(exc, message=str(exc), hint=exc.hint, debug=debug)
                ctx.exit(exc.exit_code)
            if isinstance(exc, OSError) and exc.errno == errno.EPIPE:
                raise  # `cloudnn runs list | head`: click silences it
            if isinstance(exc, OSError) and exc.filename:
                # a place the user named (or CLOUDNN_HOME) that cannot be used:
                # the input must change, as for any other bad input
                where = exc.filename
                if exc.filename2:
                    where = f"{where} -> {exc.filename2}"
                _report(
                    exc,
                    message=f"{where}: {exc.strerror or type(exc).__name__}",
                    hint=_OS_HINTS.get(exc.errno or 0, _OS_HINT),
                    debug=debug,
                )
                ctx.exit(2)
            _report(
                exc,
                message=f"internal error: {type(exc).__name__}: {exc}",
                hint="re-run with --debug and report it",
                debug=debug,
            )
            ctx.exit(1)


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option(
    "--debug",
    is_flag=True,
    help=f"Show full tracebacks on errors (or set {_DEBUG_ENV}=1).",
)
@click.version_option(_version(), "--version", "-V", prog_name="cloudnn")
def cli(debug: bool) -> None:
    """Train and serve one neural-network spec locally or on any cloud.

    \b
    Quick start:
      cloudnn init my-project
      cloudnn validate my-project/spec.yaml
      cloudnn train my-project/spec.yaml
    """


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``cloudnn = "cloudnn.cli.main:main"``).

    ``--debug`` is accepted anywhere on the line (``cloudnn train x --debug``),
    since a failing command is usually re-run by appending it.
    """
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in args[1:] and "--" not in args[: args.index("--debug")]:
        args.remove("--debug")
        args.insert(0, "--debug")
    cli.main(args=args, prog_name="cloudnn")


if __name__ == "__main__":
    main()
