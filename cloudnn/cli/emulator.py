"""`cloudnn emulator --provider P`: a local stand-in for a cloud, until interrupted."""

from __future__ import annotations

import click


@click.command("emulator")
@click.option("--provider", "-p", required=True, help="Cloud to emulate (aws, gcp).")
@click.option("--port", type=click.IntRange(0, 65535), help="Port (default: free).")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Bind address (loopback: only this machine can reach it).",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False),
    help="Where jobs, models and logs go (default: a temporary folder).",
)
def cli(provider: str, port: int | None, host: str, workdir: str | None) -> None:
    """Serve PROVIDER's API on this machine; jobs really run, endpoints really serve.

    Prints NAME=value lines, then one line starting with '#' once it serves:
    export the variables and cloudnn (SDK and CLI) and the vendor's own
    clients talk to the emulator instead of the cloud. In CI:

    \b
      cloudnn emulator -p aws > emulator.env &
      until grep -q '^#' emulator.env; do sleep 0.2; done
      set -a; . ./emulator.env; set +a
      cloudnn train spec.yaml --provider aws
    """
    import signal
    import sys
    import threading

    from cloudnn.emulator import start_emulator

    emulator = start_emulator(provider, host=host, port=port or None, workdir=workdir)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    try:
        for name, value in sorted(emulator.env.items()):
            click.echo(f"{name}={value}")
        # a comment line ends the environment: readers stop at the first '#'
        click.echo(f"# {provider} emulator serving at {emulator.url}; Ctrl-C stops it")
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
    finally:
        emulator.stop()
        click.echo(f"# {provider} emulator stopped", err=True)
