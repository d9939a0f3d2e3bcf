"""Multi-worker servers answer keep-alive requests as fast as single-worker ones.

With ``--workers`` > 1 uvicorn binds the listening socket itself, with
``proto=0``, and asyncio's event loop only switches Nagle's algorithm off on
connections whose socket says ``proto=IPPROTO_TCP``: each response's second
write (the body) then waited for the client's delayed ACK, ~40 ms a request.
uvloop always switches Nagle off, so the bug only showed without it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import pickle
import signal
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import serving_fixtures as sf
from conftest import PYTHON, cli_env

from cloudnn.local import server as srv

# pytest finds fixtures by module-level name
digits_split_csvs = sf.digits_split_csvs
mlp_model_dir = sf.mlp_model_dir

#: every (HTTP parser, event loop) the server may pick, installed or not
STACKS = [
    pytest.param(http, loop, id=f"{http}-{loop}")
    for loop in ("asyncio", "uvloop")
    for http in ("h11", "httptools")
]
#: Linux delays an ACK by at least 40 ms; the bug added that to every request
DELAYED_ACK_MS = 40.0


class KeepAlive:
    """One keep-alive HTTP/1.1 connection, one request at a time."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.reader = self.sock.makefile("rb")

    def exchange(self, request: bytes) -> bytes:
        """Send ``request``, read the whole response; its status line."""
        self.sock.sendall(request)
        status = self.reader.readline()
        length = 0
        while (line := self.reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        self.reader.read(length)
        return bytes(status)

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def _need(*modules: str) -> None:
    for module in modules:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed")


async def _hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    # two writes, head then body, like every response of the real server
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"5")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"hello"})


@pytest.mark.parametrize(("http", "loop"), STACKS)
def test_connection_on_the_multi_worker_socket_has_nodelay(
    http: str, loop: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server's own uvicorn options, on the socket uvicorn binds for workers."""
    _need("uvicorn", http, *(["uvloop"] if loop == "uvloop" else []))
    import uvicorn

    monkeypatch.setattr(srv, "_uvicorn_options", lambda: {"http": http, "loop": loop})
    args = srv._parser().parse_args(
        ["--model-dir", str(tmp_path), "--port", "0", "--log-level", "warning"]
    )
    # worker processes are spawned: they get the options through pickle
    options = pickle.loads(pickle.dumps(srv._server_options(args)))
    config = uvicorn.Config(_hello, lifespan="off", log_config=None, **options)
    sock = config.bind_socket()  # what uvicorn.run does for workers > 1
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive(), "the server thread exited"
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)
        client = KeepAlive(sock.getsockname()[1])
        try:
            status = client.exchange(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            assert status.startswith(b"HTTP/1.1 200"), status
            (protocol,) = list(server.server_state.connections)
            accepted = protocol.transport.get_extra_info("socket")
            nodelay = accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        finally:
            client.close()
        assert nodelay, f"Nagle is on for connections served by {http}/{loop}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


# ------------------------------------------------------------- end to end


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _connect(proc: subprocess.Popen[bytes], port: int) -> KeepAlive:
    """A keep-alive connection to ``port``, once the server answers on it."""
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            stderr = proc.stderr.read().decode() if proc.stderr else ""
            raise AssertionError(f"the server exited:\n{stderr}")
        assert time.monotonic() < deadline, "the server did not start"
        with contextlib.suppress(OSError):
            client = KeepAlive(port)
            try:
                if client.exchange(b"GET /ping HTTP/1.1\r\nHost: t\r\n\r\n"):
                    return client
            except OSError:
                pass
            client.close()
        time.sleep(0.1)


@pytest.fixture
def keep_alive(mlp_model_dir: Path, tmp_path: Path) -> Iterator[dict[int, KeepAlive]]:
    """Connections to the digits MLP served with 1 and 2 workers, by workers."""
    servers: dict[int, tuple[subprocess.Popen[bytes], int]] = {}
    clients: dict[int, KeepAlive] = {}
    try:
        for workers in (2, 1):  # started together: both load the model at once
            port = _free_port()
            proc = subprocess.Popen(
                [PYTHON, "-m", "cloudnn.local.server"]
                + ["--model-dir", str(mlp_model_dir), "--port", str(port)]
                + ["--workers", str(workers), "--log-level", "warning"],
                env=cli_env(tmp_path / "home"),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            servers[workers] = proc, port
        for workers, (proc, port) in servers.items():
            clients[workers] = _connect(proc, port)
        yield clients
    finally:
        for client in clients.values():
            client.close()
        for proc, _ in servers.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # the supervisor and its workers
            proc.wait(timeout=30)


@pytest.mark.slow
def test_two_workers_answer_keep_alive_requests_like_one(
    keep_alive: dict[int, KeepAlive],
) -> None:
    """20 sequential keep-alive requests each, interleaved so load hits both alike."""
    rows, _ = sf.digits_test_split()
    body = json.dumps({"instances": [rows[0]]}).encode()
    request = (
        b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    ) + body
    # warm-up: first forward passes, and the connections' first segments,
    # which Linux ACKs at once whatever Nagle does
    for client in keep_alive.values():
        for _ in range(5):
            assert client.exchange(request).startswith(b"HTTP/1.1 200")
    medians: list[tuple[float, float]] = []
    # the bug delays every request of every round, so a retry cannot hide it;
    # it only absorbs a burst of load on a shared 2-core machine
    for _ in range(3):
        latency: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(20):
            for workers, client in keep_alive.items():
                t0 = time.perf_counter()
                status = client.exchange(request)
                latency[workers].append((time.perf_counter() - t0) * 1000)
                assert status.startswith(b"HTTP/1.1 200"), status
        one, two = statistics.median(latency[1]), statistics.median(latency[2])
        if two < one + DELAYED_ACK_MS / 2:
            return
        medians.append((one, two))
    pytest.fail(
        "median ms per request, (1 worker, 2 workers) per round: "
        + ", ".join(f"({one:.2f}, {two:.2f})" for one, two in medians)
        + f"; 2 workers pay the {DELAYED_ACK_MS:g} ms delayed ACK (Nagle on)"
    )
