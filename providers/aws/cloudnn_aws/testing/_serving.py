"""A stand-in for the SageMaker PyTorch inference container's model server.

Run by the emulator as ``python .../_serving.py --model-dir DIR --port N``
(by path: nothing of cloudnn is imported before the model's own copy of the
runtime, ``DIR/code/cloudnn``), with the model's
``PrimaryContainer.Environment``. Like the
container's toolkit it imports ``$SAGEMAKER_PROGRAM`` (``inference.py``) from
``DIR/code``, calls ``model_fn(DIR)`` once, then answers::

    GET  /ping          200 once the model is loaded
    POST /invocations   input_fn(body, content type) -> predict_fn -> output_fn(accept)

An exception carrying an HTTP status (the toolkit's
``GenericInferenceToolkitError``, or cloudnn's ``InputError`` outside the
container) answers with that status and ``{"error": ..., "status": ...}``;
any other exception answers 500. Standard library only (plus what the
adapter imports).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def _load_adapter(model_dir: Path) -> Any:
    code = model_dir / "code"
    program = os.environ.get("SAGEMAKER_PROGRAM", "inference.py")
    path = code / program
    if not path.is_file():
        raise FileNotFoundError(f"{program} not found in {code} (SAGEMAKER_PROGRAM)")
    sys.path.insert(0, str(code))
    spec = importlib.util.spec_from_file_location(Path(program).stem, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _status_of(exc: BaseException) -> int:
    for attr in ("status_code", "status"):
        value = getattr(exc, attr, None)
        if isinstance(value, int) and 400 <= value <= 599:
            return value
    return 500


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="_serving.py")
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    ns = parser.parse_args(argv)
    model_dir = Path(ns.model_dir)
    adapter = _load_adapter(model_dir)
    model = adapter.model_fn(str(model_dir))
    print(f"model loaded from {model_dir}", flush=True)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            print(
                f"{self.command} {self.path} {args[1] if len(args) > 1 else ''}",
                flush=True,
            )

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/ping":
                self._answer(200, b"{}", "application/json")
            else:
                self._answer(404, b'{"error": "not found"}', "application/json")

        def do_POST(self) -> None:
            if self.path != "/invocations":
                self._answer(404, b'{"error": "not found"}', "application/json")
                return
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            content_type = self.headers.get("Content-Type") or "application/json"
            accept = self.headers.get("Accept") or "application/json"
            try:
                data = adapter.input_fn(body, content_type)
                prediction = adapter.predict_fn(data, model)
                out = adapter.output_fn(prediction, accept)
            except Exception as exc:  # the server must answer every request
                status = _status_of(exc)
                message = getattr(exc, "message", None) or str(exc)
                print(f"invocation failed ({status}): {message}", flush=True)
                payload = json.dumps({"error": str(message), "status": status})
                self._answer(status, payload.encode(), "application/json")
                return
            raw = out.encode() if isinstance(out, str) else bytes(out)
            media = accept.split(";", 1)[0].strip()
            if media in ("", "*/*", "application/*"):
                media = "application/json"
            self._answer(200, raw, media)

    server = ThreadingHTTPServer((ns.host, ns.port), Handler)
    server.daemon_threads = True

    def stop(signum: int, frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    print(f"serving on http://{ns.host}:{ns.port}", flush=True)
    server.serve_forever(poll_interval=0.2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
