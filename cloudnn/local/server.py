"""The local inference server: FastAPI + uvicorn around :class:`cloudnn.runtime.serve.Handler`.

Run it as ``python -m cloudnn.local.server --model-dir DIR --port 8080``
(``cloudnn deploy`` does, in the background). Routes::

    POST /predict                    {"instances": [...]} -> {"predictions": [...]}
    POST /v1/models/{name}:predict   the same, Vertex AI style
    POST /invocations                SageMaker style: JSON or text/csv
    GET  /ping   GET /health         liveness (no token: health checkers have none)
    GET  /   GET /info               model metadata (Handler.info() + "server")

Every answer is JSON; an error is ``{"error": "<one line>"}`` with 400
(malformed), 401 (token), 413 (too large), 415 (content type), 422 (wrong
shape or value) or 500 (a bug: the server logs it and keeps serving).

Dynamic batching (``--max-batch-size``) queues the rows of concurrent requests
and runs them as one forward pass in a worker thread: while one batch runs,
the next one fills, so under load requests share forward passes and a lone
request never waits for company.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import hmac
import json
import logging
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from fastapi import FastAPI

__all__ = ["CONFIG_ENV", "ServerConfig", "app_from_env", "create_app", "main"]

#: the config that uvicorn worker processes read (``--workers`` > 1)
CONFIG_ENV = "CLOUDNN_SERVER_CONFIG"
#: request bodies above this are parsed in a worker thread, off the event loop
_PARSE_INLINE_BYTES = 64 * 1024

log = logging.getLogger("cloudnn.server")

try:  # orjson encodes float-heavy predictions ~5x faster; optional
    import orjson

    def _dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)

except ImportError:  # pragma: no cover - depends on the environment
    _encoder = json.JSONEncoder(separators=(",", ":"), allow_nan=False)

    def _dumps(obj: Any) -> bytes:
        return _encoder.encode(obj).encode()


@dataclass(frozen=True)
class ServerConfig:
    """Everything a server process needs; JSON-serialisable for worker processes."""

    model_dir: str
    name: str = ""
    runtime: str = "torch"
    device: str = "cpu"
    token_file: str | None = None
    max_batch_size: int | None = None  # None: batching off
    max_wait_ms: float = 2.0
    max_request_bytes: int = 1_048_576
    threads: int = 0  # inference threads; 0: min(4, CPUs)
    body_timeout_s: float = 30.0  # whole body, from the end of the headers

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ServerConfig:
        return cls(**json.loads(text))


class _HTTPError(Exception):
    """An answer other than 200, raised anywhere in request handling."""

    def __init__(
        self, status: int, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = " ".join(message.split()) or "error"
        self.headers = headers or {}


def _one_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (error bodies and log lines are one line)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0]}"[:300] if lines else type(exc).__name__


def _read_token(path: str) -> bytes:
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        from cloudnn.errors import EndpointError

        raise EndpointError(
            f"cannot read the token file {path}: {exc.strerror}",
            hint="pass --token-file with a readable file, or omit it to serve without auth",
        ) from exc
    if not token:
        from cloudnn.errors import EndpointError

        raise EndpointError(
            f"the token file {path} is empty", hint="write a token to it"
        )
    return token.encode()


class _Batcher:
    """Collects concurrent requests' rows and runs them as one forward pass.

    One batch is in flight at a time: while it runs in the worker thread, new
    requests queue and become the next batch (up to ``max_batch_size`` rows).
    When the worker is idle the batcher waits at most ``max_wait_s`` for more
    rows, and only while other requests are still being read; a lone request
    is dispatched at once.
    """

    def __init__(
        self,
        run: Callable[[list[np.ndarray]], list[list[Any]]],
        *,
        max_batch_size: int,
        max_wait_s: float,
        executor: ThreadPoolExecutor,
    ) -> None:
        self._run_batch = run
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self._executor = executor
        self._queue: collections.deque[tuple[np.ndarray, asyncio.Future[Any]]] = (
            collections.deque()
        )
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        #: requests accepted but not queued yet (still reading or parsing)
        self.arriving = 0
        # observability: requests and rows per forward pass
        self.batches = 0
        self.batched_requests = 0
        self.rows = 0

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        while self._queue:
            _, fut = self._queue.popleft()
            if not fut.done():
                fut.set_exception(_HTTPError(503, "the server is shutting down"))

    async def submit(self, x: np.ndarray) -> list[Any]:
        """Predictions for the rows of ``x``, computed with other requests' rows."""
        loop = asyncio.get_running_loop()
        if (
            len(x) >= self.max_batch_size
            or self._task is None
            or self._task.done()
            or self._wake is None
        ):
            # a full batch on its own (or no batcher running): no queueing
            (out,) = await loop.run_in_executor(self._executor, self._run_batch, [x])
            return out
        fut: asyncio.Future[Any] = loop.create_future()
        self._queue.append((x, fut))
        self._wake.set()
        return await fut

    def _take(
        self, batch: list[tuple[np.ndarray, asyncio.Future[Any]]], rows: int
    ) -> int:
        """Move whole requests from the queue into ``batch`` while they fit."""
        queue = self._queue
        while queue:
            n = len(queue[0][0])
            if batch and rows + n > self.max_batch_size:
                break
            batch.append(queue.popleft())
            rows += n
        return rows

    async def _loop(self) -> None:
        assert self._wake is not None
        wake = self._wake
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                wake.clear()
                await wake.wait()
            # one loop turn: requests whose bytes arrived together all get queued
            await asyncio.sleep(0)
            batch: list[tuple[np.ndarray, asyncio.Future[Any]]] = []
            rows = self._take(batch, 0)
            if rows < self.max_batch_size and self.max_wait_s > 0 and self.arriving:
                deadline = loop.time() + self.max_wait_s
                while rows < self.max_batch_size and self.arriving:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    wake.clear()
                    try:
                        await asyncio.wait_for(wake.wait(), remaining)
                    except asyncio.TimeoutError:
                        break
                    rows = self._take(batch, rows)
            if not batch:
                continue
            self.batches += 1
            self.batched_requests += len(batch)
            self.rows += rows
            try:
                outs = await loop.run_in_executor(
                    self._executor, self._run_batch, [x for x, _ in batch]
                )
            except asyncio.CancelledError:
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(
                            _HTTPError(503, "the server is shutting down")
                        )
                raise
            except Exception as exc:  # the futures carry it to each request
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, fut), out in zip(batch, outs, strict=True):
                if not fut.done():
                    fut.set_result(out)


class InferenceService:
    """Request handling shared by every route: auth, size limit, parse, predict."""

    def __init__(self, config: ServerConfig, *, handler: Any = None) -> None:
        if handler is None:
            from cloudnn.runtime.serve import Handler

            handler = Handler.from_model_dir(
                config.model_dir,
                runtime=config.runtime,  # type: ignore[arg-type]
                device=config.device,
            )
        from cloudnn.runtime.serve import InputError

        self.config = config
        self.handler = handler
        self._input_error = InputError
        self._expected = (
            b"bearer " + _read_token(config.token_file) if config.token_file else None
        )
        threads = config.threads or min(4, os.cpu_count() or 1)
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="cloudnn-infer")
        self.batcher: _Batcher | None = None
        if config.max_batch_size:
            self.batcher = _Batcher(
                self._forward_batch,
                max_batch_size=config.max_batch_size,
                max_wait_s=config.max_wait_ms / 1000.0,
                executor=self.executor,
            )
        self.started_at = time.time()
        self.requests = 0
        self.errors = 0

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        if self.batcher is not None:
            self.batcher.start()

    async def stop(self) -> None:
        if self.batcher is not None:
            await self.batcher.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)

    # -- pieces ------------------------------------------------------------

    def check_auth(self, headers: Sequence[tuple[bytes, bytes]]) -> None:
        if self._expected is None:
            return
        given = b""
        for key, value in headers:
            if key == b"authorization":
                given = value
                break
        if not given:
            raise _HTTPError(
                401,
                "missing bearer token (send 'Authorization: Bearer <token>')",
                {"WWW-Authenticate": 'Bearer realm="cloudnn"'},
            )
        # the scheme is case-insensitive (RFC 7235); the token is compared in
        # constant time so its bytes cannot be guessed one by one from timings
        scheme, _, token = given.partition(b" ")
        candidate = scheme.lower() + b" " + token.strip()
        if not hmac.compare_digest(candidate, self._expected):
            raise _HTTPError(
                401,
                "invalid bearer token",
                {"WWW-Authenticate": 'Bearer realm="cloudnn", error="invalid_token"'},
            )

    async def read_body(
        self, headers: Sequence[tuple[bytes, bytes]], receive: Callable[[], Any]
    ) -> bytes:
        """The request body, refused with 413 as soon as it passes the limit."""
        limit = self.config.max_request_bytes
        for key, value in headers:
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    raise _HTTPError(400, "invalid Content-Length header") from None
                if declared > limit:
                    # refuse before reading a byte; uvicorn discards the rest
                    raise _HTTPError(
                        413, f"request body of {declared} bytes exceeds {limit} bytes"
                    )
                break
        chunks: list[bytes] = []
        size = 0
        timeout = self.config.body_timeout_s
        try:
            # a client trickling its body would hold a worker slot forever
            async with asyncio.timeout(timeout):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":  # client went away
                        raise _HTTPError(
                            400, "client disconnected before sending the body"
                        )
                    chunk = message.get("body", b"")
                    if chunk:
                        size += len(chunk)
                        if size > limit:  # chunked bodies carry no length: cap it
                            raise _HTTPError(413, f"request body exceeds {limit} bytes")
                        chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            raise _HTTPError(
                408, f"request body not received within {timeout:g} s"
            ) from None
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _parse(self, body: bytes, content_type: str) -> list[Any]:
        return self.handler.parse_request(body, content_type)

    def _preprocess(self, body: bytes, content_type: str) -> np.ndarray:
        return self.handler.preprocess(self._parse(body, content_type))

    def _predict_body(self, body: bytes, content_type: str) -> bytes:
        """The whole request in one worker-thread call (batching off)."""
        x = self._preprocess(body, content_type)
        preds = self.handler.decode_outputs(self.handler.predict_arrays(x))
        return _dumps({"predictions": preds})

    def _forward_batch(self, xs: list[np.ndarray]) -> list[list[Any]]:
        """One forward pass over several requests' rows, split back per request."""
        import numpy as np

        handler = self.handler
        if len(xs) == 1:
            return [handler.decode_outputs(handler.predict_arrays(xs[0]))]
        first = xs[0]
        if any(x.shape[1:] != first.shape[1:] or x.dtype != first.dtype for x in xs):
            return [handler.decode_outputs(handler.predict_arrays(x)) for x in xs]
        preds = handler.decode_outputs(handler.predict_arrays(np.concatenate(xs)))
        out: list[list[Any]] = []
        start = 0
        for x in xs:
            out.append(preds[start : start + len(x)])
            start += len(x)
        return out

    async def predict(
        self,
        headers: Sequence[tuple[bytes, bytes]],
        receive: Callable[[], Any],
    ) -> tuple[int, bytes, dict[str, str]]:
        """Status, JSON body and extra headers for one prediction request."""
        self.requests += 1
        batcher = self.batcher
        counted = False
        try:
            self.check_auth(headers)
            if batcher is not None:
                batcher.arriving += 1
                counted = True
            body = await self.read_body(headers, receive)
            content_type = ""
            for key, value in headers:
                if key == b"content-type":
                    content_type = value.decode("latin-1")
                    break
            loop = asyncio.get_running_loop()
            if batcher is None:
                payload = await loop.run_in_executor(
                    self.executor, self._predict_body, body, content_type
                )
                return 200, payload, {}
            if len(body) > _PARSE_INLINE_BYTES:
                x = await loop.run_in_executor(
                    self.executor, self._preprocess, body, content_type
                )
            else:
                x = self._preprocess(body, content_type)
            batcher.arriving -= 1
            counted = False
            preds = await batcher.submit(x)
            return 200, _dumps({"predictions": preds}), {}
        except _HTTPError as exc:
            self.errors += 1
            return exc.status, _dumps({"error": exc.message}), exc.headers
        except self._input_error as exc:
            self.errors += 1
            return exc.status, _dumps({"error": exc.message}), {}
        except Exception as exc:  # a bug, not the client's fault: log, answer, go on
            self.errors += 1
            log.exception("prediction failed")
            return 500, _dumps({"error": f"internal error: {_one_line(exc)}"}), {}
        finally:
            if counted and batcher is not None:
                batcher.arriving -= 1

    def info(self) -> dict[str, Any]:
        """``Handler.info()`` (what a client needs) plus this server's settings."""
        cfg = self.config
        batcher = self.batcher
        server = {
            "name": cfg.name,
            "batching": (
                {
                    "max_batch_size": cfg.max_batch_size,
                    "max_wait_ms": cfg.max_wait_ms,
                    "batches": batcher.batches,
                    "requests": batcher.batched_requests,
                    "rows": batcher.rows,
                }
                if batcher is not None
                else None
            ),
            "auth": "token" if self._expected is not None else "none",
            "max_request_bytes": cfg.max_request_bytes,
            "routes": {
                "predict": ["/predict", "/v1/models/{name}:predict", "/invocations"],
                "health": ["/ping", "/health"],
                "metadata": ["/", "/info"],
            },
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started_at, 3),
            "requests": self.requests,
            "errors": self.errors,
        }
        return {**self.handler.info(), "server": server}


async def _send(
    send: Callable[[dict[str, Any]], Any],
    status: int,
    body: bytes,
    headers: dict[str, str] | None = None,
    content_type: bytes = b"application/json",
) -> None:
    raw = [(b"content-type", content_type), (b"content-length", b"%d" % len(body))]
    if headers:
        raw += [
            (k.lower().encode("latin-1"), v.encode("latin-1"))
            for k, v in headers.items()
        ]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class _PredictRoute:
    """Raw ASGI endpoint of the prediction routes.

    Mounted as a Starlette route, so FastAPI still routes, answers 404/405 and
    runs middleware, but the hot path builds no Request object and solves no
    dependencies: per-request overhead is what limits a small model's RPS.
    """

    def __init__(self, service: InferenceService, *, vertex: bool = False) -> None:
        self.service = service
        self.vertex = vertex

    async def __call__(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Any],
        send: Callable[..., Any],
    ) -> None:
        service = self.service
        if self.vertex:
            name = scope.get("path_params", {}).get("name", "")
            served = service.config.name
            if served and name not in (served, "default"):
                try:
                    service.check_auth(scope["headers"])
                except _HTTPError as exc:
                    await _send(
                        send, exc.status, _dumps({"error": exc.message}), exc.headers
                    )
                    return
                message = f"no model {name!r} here; this server serves {served!r}"
                await _send(send, 404, _dumps({"error": message}))
                return
        status, body, headers = await service.predict(scope["headers"], receive)
        await _send(send, status, body, headers)


def create_app(config: ServerConfig, *, handler: Any = None) -> FastAPI:
    """The FastAPI app serving ``config.model_dir`` (loads the model now)."""
    from fastapi import FastAPI
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.requests import Request
    from starlette.responses import Response

    service = InferenceService(config, handler=handler)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title=f"cloudnn endpoint {config.name}".strip(),
        lifespan=lifespan,
        # no interactive docs: nothing here should be reachable without the token
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.service = service

    def answer(
        status: int, body: bytes, headers: dict[str, str] | None = None
    ) -> Response:
        return Response(body, status, headers, media_type="application/json")

    # /ping and /health answer without the token on purpose: load balancers,
    # SageMaker and Vertex health checkers and `cloudnn deploy` itself probe
    # them with no credentials, and they reveal nothing but "up".
    async def ping(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await _send(send, 200, b"", content_type=b"text/plain")

    async def health(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await _send(send, 200, b'{"status":"ok"}')

    async def metadata(request: Request) -> Response:
        try:
            service.check_auth(request.scope["headers"])
        except _HTTPError as exc:
            return answer(exc.status, _dumps({"error": exc.message}), exc.headers)
        return answer(200, _dumps(service.info()))

    predict = _PredictRoute(service)
    # raw ASGI callables: starlette's stubs only describe request handlers
    raw_routes: list[tuple[str, Any, str]] = [
        ("/predict", predict, "POST"),
        ("/invocations", predict, "POST"),
        ("/v1/models/{name}:predict", _PredictRoute(service, vertex=True), "POST"),
        ("/ping", _AsgiFunction(ping), "GET"),
        ("/health", _AsgiFunction(health), "GET"),
    ]
    for path, endpoint, method in raw_routes:
        app.add_route(path, endpoint, methods=[method], include_in_schema=False)
    for path in ("/", "/info"):  # /info: the Vertex container's route
        app.add_route(path, metadata, methods=["GET"], include_in_schema=False)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # 404/405 in the same one-line JSON shape as every other error
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404:
            detail = f"no route {request.method} {request.url.path}"
        return answer(
            exc.status_code, _dumps({"error": detail}), dict(exc.headers or {})
        )

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error")
        return answer(500, _dumps({"error": f"internal error: {_one_line(exc)}"}))

    return app


class _AsgiFunction:
    """An ASGI function as an object, so Starlette mounts it raw (no Request)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.fn(scope, receive, send)


def app_from_env() -> FastAPI:
    """uvicorn app factory for ``--workers`` > 1: each worker process loads the model."""
    text = os.environ.get(CONFIG_ENV)
    if not text:
        raise RuntimeError(f"{CONFIG_ENV} is not set")
    if not text.lstrip().startswith("{"):
        text = Path(text).read_text()
    return create_app(ServerConfig.from_json(text))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m cloudnn.local.server",
        description="Serve a cloudnn model directory over HTTP.",
    )
    p.add_argument("--model-dir", required=True, help="a run's model/ directory")
    p.add_argument(
        "--host", default="127.0.0.1", help="bind address (default: loopback only)"
    )
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--name", default="", help="endpoint name (Vertex route, metadata)")
    p.add_argument(
        "--token-file", help="require 'Authorization: Bearer <file content>'"
    )
    p.add_argument(
        "--runtime", default="torch", choices=["torch", "torchscript", "onnx"]
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--max-batch-size", type=int, default=0, help="0: batching off")
    p.add_argument("--max-wait-ms", type=float, default=2.0)
    p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    p.add_argument(
        "--threads", type=int, default=0, help="inference threads per worker"
    )
    p.add_argument("--max-request-bytes", type=int, default=1_048_576)
    p.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        help="seconds a client may take to send a request's headers",
    )
    p.add_argument(
        "--body-timeout",
        type=float,
        default=30.0,
        help="seconds a client may take to send a request's body",
    )
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.add_argument("--log-level", default="info")
    return p


def _uvicorn_options() -> dict[str, Any]:
    """The fastest HTTP parser and loop installed (httptools, uvloop are optional)."""
    import importlib.util

    def has(mod: str) -> bool:
        return importlib.util.find_spec(mod) is not None

    return {
        "http": "httptools" if has("httptools") else "h11",
        "loop": "uvloop" if has("uvloop") else "asyncio",
    }


def _set_nodelay(transport: asyncio.BaseTransport) -> None:
    """Switch Nagle's algorithm off on one accepted TCP connection.

    A response goes out in two writes (head, then body); with Nagle on, the
    second waits for the client to ACK the first, and clients delay that ACK
    by ~40 ms. asyncio's loop only switches Nagle off itself when the
    listening socket says ``proto=IPPROTO_TCP``, and the socket uvicorn binds
    for ``--workers`` > 1 says ``proto=0``. uvloop always switches it off.
    """
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with suppress(OSError):  # the client may be gone already: nothing to speed up
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@functools.cache
def _nodelay_protocol_class(http: str) -> type[asyncio.Protocol]:
    """uvicorn's ``http`` protocol class ("httptools" or "h11"), Nagle off."""
    base: type[asyncio.Protocol]
    if http == "httptools":
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        base = HttpToolsProtocol
    else:
        from uvicorn.protocols.http.h11_impl import H11Protocol

        base = H11Protocol

    class NoDelayProtocol(base):  # type: ignore[valid-type,misc]
        header_timeout_s: float = 10.0
        _header_timer: asyncio.TimerHandle | None = None
        _cycle_at_start: Any = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            _set_nodelay(transport)
            super().connection_made(transport)

        def data_received(self, data: bytes) -> None:
            # Slow headers (slowloris): uvicorn cancels its keep-alive timer
            # on every byte and has no header timeout of its own, so a client
            # trickling a request line holds the connection forever.
            if self._header_timer is None:
                self._cycle_at_start = self.cycle
                loop = asyncio.get_running_loop()
                self._header_timer = loop.call_later(
                    self.header_timeout_s, self._headers_due
                )
            super().data_received(data)

        def _headers_due(self) -> None:
            self._header_timer = None
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete:
                return  # a request is in progress: the body timeout applies
            if cycle is not self._cycle_at_start:
                return  # the headers came in time (and it may be done already)
            log.info(
                "closing a connection: no complete headers within %gs",
                self.header_timeout_s,
            )
            self.transport.close()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None
            super().connection_lost(exc)

    return NoDelayProtocol


def _nodelay_http_protocol(
    http: str, header_timeout_s: float, *args: Any, **kwargs: Any
) -> asyncio.Protocol:
    """uvicorn ``http`` factory; module-level so worker processes can unpickle it."""
    protocol: Any = _nodelay_protocol_class(http)(*args, **kwargs)
    protocol.header_timeout_s = header_timeout_s
    return protocol


def _server_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of ``uvicorn.run`` for one worker or several."""
    stack = _uvicorn_options()
    # resolved now so that a uvicorn without the class fails at startup, not
    # on every connection
    _nodelay_protocol_class(stack["http"])
    return {
        "host": args.host,
        "port": args.port,
        "access_log": args.access_log,
        "log_level": args.log_level,
        # no X-Forwarded-* rewriting (nothing proxies a local endpoint) and no
        # Server header: less work per request, less to fingerprint
        "proxy_headers": False,
        "server_header": False,
        "timeout_graceful_shutdown": 5,
        "loop": stack["loop"],
        # Nagle off whoever bound the listening socket and whichever the loop:
        # the multi-worker socket would otherwise cost ~40 ms per response
        "http": functools.partial(
            _nodelay_http_protocol, stack["http"], args.header_timeout
        ),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m cloudnn.local.server``."""
    args = _parser().parse_args(argv)
    from cloudnn.errors import CloudnnError

    def fail(message: str) -> int:
        print(f"error: {message}", file=sys.stderr, flush=True)
        return 2

    if not Path(args.model_dir).is_dir():
        return fail(f"model directory {args.model_dir} does not exist")
    if args.max_batch_size < 0 or args.max_wait_ms < 0 or args.workers < 1:
        return fail("--max-batch-size, --max-wait-ms must be >= 0 and --workers >= 1")
    if args.max_request_bytes < 1:
        return fail("--max-request-bytes must be >= 1")
    if args.header_timeout <= 0 or args.body_timeout <= 0:
        return fail("--header-timeout and --body-timeout must be > 0")
    config = ServerConfig(
        model_dir=str(Path(args.model_dir).resolve()),
        name=args.name,
        runtime=args.runtime,
        device=args.device,
        token_file=str(Path(args.token_file).resolve()) if args.token_file else None,
        max_batch_size=args.max_batch_size or None,
        max_wait_ms=args.max_wait_ms,
        max_request_bytes=args.max_request_bytes,
        threads=args.threads,
        body_timeout_s=args.body_timeout,
    )
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as exc:
        return fail(
            f"{exc.name} is not installed (to fix: pip install 'cloudnn[serve]')"
        )

    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    options = _server_options(args)
    try:
        if args.workers == 1:
            try:
                app: Any = create_app(config)
            except CloudnnError:
                raise
            except Exception as exc:  # traceback for the log, one line last
                import traceback

                traceback.print_exc()
                return fail(
                    f"cannot load the model in {config.model_dir}: {_one_line(exc)}"
                )
            uvicorn.run(app, **options)
        else:
            if config.token_file:  # fail here, once, not in every worker
                _read_token(config.token_file)
            os.environ[CONFIG_ENV] = config.to_json()
            uvicorn.run(
                "cloudnn.local.server:app_from_env",
                factory=True,
                workers=args.workers,
                **options,
            )
    except CloudnnError as exc:
        return fail(f"{exc}" + (f" (to fix: {exc.hint})" if exc.hint else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
