"""`cloudnn deploy SPEC|RUN`: serve a trained model as an HTTP endpoint."""

from __future__ import annotations

from typing import Any

import click


def _example_instance(info: dict[str, Any]) -> Any:
    """A well-formed (all-zero) instance for the curl example."""
    if info.get("input_kind") == "text":
        return "some text"
    shape = [int(d) for d in info.get("input_shape") or [1]]

    def zeros(dims: list[int]) -> Any:
        return [0] * dims[0] if len(dims) == 1 else [zeros(dims[1:])] * dims[0]

    return zeros(shape) if shape else 0


@click.command("deploy")
@click.argument("target", metavar="SPEC|RUN")
@click.option("--provider", "-p", default="local", show_default=True, help="Backend.")
@click.option(
    "--port", type=click.IntRange(0, 65535), help="Port (default: a free one)."
)
@click.option("--host", help="Bind address (default 127.0.0.1: this machine only).")
@click.option(
    "--runtime",
    type=click.Choice(["torch", "torchscript", "onnx"]),
    help="Inference runtime (default: the spec's deploy.runtime).",
)
@click.option("--workers", type=click.IntRange(1), help="Server worker processes.")
@click.option(
    "--batch-size",
    type=click.IntRange(1),
    help="Turn on dynamic batching: up to N rows per forward pass.",
)
@click.option(
    "--max-wait-ms",
    type=click.FloatRange(0),
    help="With batching: longest wait for a batch to fill.",
)
@click.option("--no-batching", is_flag=True, help="Turn off the spec's batching.")
@click.option(
    "--auth",
    type=click.Choice(["token", "none"]),
    help="Bearer-token auth (default: the spec's deploy.auth, token).",
)
@click.option("--show-token", is_flag=True, help="Print the bearer token too.")
@click.option("--detach", is_flag=True, help="Return without waiting for it to answer.")
@click.option("--json", "as_json", is_flag=True, help="Print the endpoint as JSON.")
def cli(
    target: str,
    provider: str,
    port: int | None,
    host: str | None,
    runtime: str | None,
    workers: int | None,
    batch_size: int | None,
    max_wait_ms: float | None,
    no_batching: bool,
    auth: str | None,
    show_token: bool,
    detach: bool,
    as_json: bool,
) -> None:
    """Serve the model of RUN (id, prefix or 'latest'), or SPEC's newest successful run.

    Deploying the same run again adopts the running endpoint. The bearer token
    is kept in a file readable only by you; --show-token prints it.
    """
    import json
    import shlex

    from cloudnn.client import Client

    if no_batching and (batch_size or max_wait_ms is not None):
        raise click.UsageError("--no-batching contradicts --batch-size/--max-wait-ms")
    batching: Any = None
    if no_batching:
        batching = False
    elif batch_size or max_wait_ms is not None:
        batching = {}
        if batch_size:
            batching["max_batch_size"] = batch_size
        if max_wait_ms is not None:
            batching["max_wait_ms"] = max_wait_ms
    ep = Client().deploy(
        target,
        provider=provider,
        runtime=runtime,
        port=port,
        host=host,
        workers=workers,
        batching=batching,
        auth=auth,
        wait=not detach,
    )
    token_file = ep.record.extra.get("token_file")
    if as_json:
        out = {
            "name": ep.name,
            "provider": ep.provider,
            "state": ep.state,
            "url": ep.url,
            "run_id": ep.run_id,
            "token_file": token_file,
        }
        if show_token:
            out["token"] = ep.token
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(f"endpoint  {ep.name}  [{ep.state}]")
    click.echo(f"url       {ep.url}")
    settings = ep.record.extra.get("settings") or {}
    bound = settings.get("host")
    if bound and bound not in ("127.0.0.1", "localhost", "::1"):
        click.echo(
            f"bound to  {bound}:{ep.record.extra.get('port')} (other machines too)"
        )
    click.echo(f"run       {ep.run_id}")
    if "auth" not in settings:
        # a cloud endpoint: the vendor's own authentication (signed requests)
        click.echo("call it:")
        click.echo(f"  cloudnn predict {ep.name} --data FILE.csv")
        click.echo(f"stop it:  cloudnn delete {ep.name}")
        return
    if token_file:
        if show_token:
            click.echo(f"token     {ep.token}")
        else:
            click.echo(f"token     in {token_file} (mode 0600; --show-token prints it)")
    else:
        click.echo("auth      none: anyone who reaches the port can call it")
    example: Any = [0]
    if not detach and ep.state == "InService":
        from cloudnn.errors import CloudnnError

        try:
            example = _example_instance(ep.info())
        except CloudnnError as exc:  # the endpoint is up; only the example suffers
            click.echo(f"note      could not read what it serves: {exc}", err=True)
    body = json.dumps({"instances": [example]}, separators=(",", ":"))
    click.echo("call it:")
    click.echo(f"  curl -s {ep.url}/predict \\")
    if token_file:
        click.echo(
            f'    -H "Authorization: Bearer $(cat {shlex.quote(token_file)})" \\'
        )
    click.echo('    -H "Content-Type: application/json" \\')
    click.echo(f"    -d {shlex.quote(body)}")
    click.echo(f"  cloudnn predict {ep.name} --data FILE.csv")
    click.echo(f"stop it:  cloudnn delete {ep.name}")
