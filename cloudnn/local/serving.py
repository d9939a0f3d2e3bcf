"""Local endpoints: ``cloudnn.local.server`` processes, found again through the registry.

An endpoint is one background server process (its own session, so it
outlives the CLI that started it) plus a folder::

    $CLOUDNN_HOME/endpoints/<name>/token       bearer token, mode 0600
    $CLOUDNN_HOME/endpoints/<name>/server.log  the server's output

Its registry row (``endpoints`` table) holds the pid, host, port, url, token
path, run id and model dir -- never the token itself. The row is written
before the process starts (``Creating``) and after it answers (``InService``),
so a crashed CLI can be re-run and adopts the live server instead of starting
a second one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudnn.errors import EndpointError, NotFoundError
from cloudnn.provider import EndpointPlan, EndpointRef

if TYPE_CHECKING:
    import httpx

    from cloudnn.local.provider import LocalProvider
    from cloudnn.runs import EndpointRecord, RunRegistry
    from cloudnn.spec import Spec

__all__ = [
    "CREATING",
    "DELETING",
    "FAILED",
    "IN_SERVICE",
    "STOPPED",
    "create_local_endpoint",
    "delete_local_endpoint",
    "endpoint_name",
    "info_local_endpoint",
    "invoke_local_endpoint",
    "local_endpoint_state",
    "plan_local_endpoint",
    "read_token",
    "wait_local_endpoint",
]

# SageMaker's endpoint states, so `cloudnn endpoints list` reads the same everywhere
CREATING = "Creating"
IN_SERVICE = "InService"
FAILED = "Failed"
STOPPED = "Stopped"
DELETING = "Deleting"

_SERVER_MODULE = "cloudnn.local.server"
_PORT_PLACEHOLDER = "{port}"
#: torch import + model load; generous for a cold disk cache
START_TIMEOUT_S = 120.0
#: uvicorn finishes in-flight requests within 5 s of SIGTERM (server.py)
STOP_GRACE_S = 10.0
#: Azure ML endpoint names are the tightest: 3-32 chars, letters, digits, '-'
_NAME_MAX = 32

_children: dict[int, subprocess.Popen[bytes]] = {}
_http_lock = threading.Lock()
_http_client: httpx.Client | None = None


# --------------------------------------------------------------------- naming


def endpoint_name(spec_name: str, run_id: str) -> str:
    """Deterministic, DNS-safe endpoint name: ``<spec name>-<8 hex of the run id>``."""
    short = hashlib.sha256(run_id.encode()).hexdigest()[:8]
    stem = spec_name[: _NAME_MAX - len(short) - 1].strip("-") or "endpoint"
    return f"{stem}-{short}"


def _run_id_of(model_uri: str) -> str:
    """The run that produced ``model_uri``: its metadata, else its path."""
    root = Path(model_uri)
    with contextlib.suppress(OSError, ValueError, AttributeError):
        run_id = json.loads((root / "cloudnn_model.json").read_text()).get("run_id")
        if run_id:
            return str(run_id)
    if root.name == "model" and root.parent.parent.name == "runs":
        return root.parent.name
    return "dir-" + hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]


def _connect_host(host: str) -> str:
    """Where a client on this machine reaches a server bound to ``host``."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def _url(host: str, port: int) -> str:
    h = _connect_host(host)
    return f"http://[{h}]:{port}" if ":" in h else f"http://{h}:{port}"


def _is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


# ------------------------------------------------------------------- planning


def plan_local_endpoint(
    provider: LocalProvider, spec: Spec, model_uri: str
) -> EndpointPlan:
    """Pure: the exact server command line and settings for ``spec.deploy``."""
    dep = spec.deploy
    run_id = _run_id_of(model_uri)
    name = endpoint_name(spec.name, run_id)
    ep_dir = provider.home / "endpoints" / name
    model_dir = str(Path(model_uri).resolve())
    token_file = str(ep_dir / "token") if dep.auth == "token" else None
    batching = (
        {
            "max_batch_size": dep.batching.max_batch_size,
            "max_wait_ms": dep.batching.max_wait_ms,
        }
        if dep.batching is not None
        else None
    )
    device = "auto" if dep.accelerator else "cpu"
    command = [
        sys.executable,
        "-m",
        _SERVER_MODULE,
        "--model-dir",
        model_dir,
        "--name",
        name,
        "--host",
        dep.host,
        "--port",
        str(dep.port) if dep.port else _PORT_PLACEHOLDER,
        "--runtime",
        dep.runtime,
        "--device",
        device,
        "--workers",
        str(dep.workers),
        "--max-request-bytes",
        str(dep.max_request_bytes),
    ]
    if token_file:
        command += ["--token-file", token_file]
    if batching:
        command += [
            "--max-batch-size",
            str(batching["max_batch_size"]),
            "--max-wait-ms",
            f"{batching['max_wait_ms']:g}",
        ]
    warnings: list[str] = []
    if not _is_loopback(dep.host):
        warnings.append(
            f"deploy.host {dep.host}: the endpoint is reachable from other machines"
            + ("" if token_file else " and deploy.auth is none: anyone can call it")
        )
    if dep.replicas > 1:
        warnings.append(
            f"deploy.replicas={dep.replicas}: a local endpoint is one server; "
            "use deploy.workers for more processes"
        )
    if dep.autoscaling is not None:
        warnings.append("deploy.autoscaling applies to cloud endpoints only")
    if dep.accelerator:
        warnings.append(
            f"deploy.accelerator {dep.accelerator}: the local server uses a local "
            "GPU when torch sees one, otherwise the CPU"
        )
    if dep.instance_type:
        warnings.append("deploy.instance_type applies to cloud endpoints only")
    settings = {
        "host": dep.host,
        "port": dep.port,
        "runtime": dep.runtime,
        "device": device,
        "workers": dep.workers,
        "auth": dep.auth,
        "batching": batching,
        "max_request_bytes": dep.max_request_bytes,
    }
    request = {
        "kind": "local.process",
        "command": command,
        "cwd": str(ep_dir),
        "log": str(ep_dir / "server.log"),
        "health_check": "GET /ping",
        "port": dep.port if dep.port else "a free port, chosen at create time",
    }
    return EndpointPlan(
        provider=provider.name,
        spec=spec,
        endpoint_name=name,
        model_uri=model_dir,
        requests=(request,),
        instance_type="local",
        replicas=1,
        hourly_cost_usd=0.0,
        warnings=tuple(warnings),
        details={
            "run_id": run_id,
            "model_dir": model_dir,
            "endpoint_dir": str(ep_dir),
            "token_file": token_file,
            "log": str(ep_dir / "server.log"),
            "url": _url(dep.host, dep.port) if dep.port else None,
            "settings": settings,
        },
    )


# --------------------------------------------------------------- processes


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, process group) from /proc, or None when unknown/gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[2])


def _is_server(pid: int | None) -> bool:
    """True while ``pid`` is alive and is a cloudnn server (guards pid reuse)."""
    if not pid:
        return False
    proc = _children.get(pid)
    if proc is not None and proc.poll() is not None:
        return False  # our own child that exited (now reaped)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # another user's process: not one we started
    if not Path("/proc").is_dir():  # pragma: no cover - macOS
        return True
    stat = _proc_stat(pid)
    if stat is None or stat[0] in ("Z", "X"):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return _SERVER_MODULE.encode() in cmdline


def _group_alive(pgid: int) -> bool:
    """Any live (non-zombie) process left in process group ``pgid``?"""
    if Path("/proc").is_dir():
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                stat = _proc_stat(int(entry.name))
                if stat is not None and stat[1] == pgid and stat[0] not in ("Z", "X"):
                    return True
        return False
    try:  # pragma: no cover - no /proc: zombies count as alive here
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _reap(pid: int) -> None:
    proc = _children.pop(pid, None)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.5)
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _stop_group(pid: int, grace: float = STOP_GRACE_S) -> None:
    """SIGTERM the server's process group; SIGKILL what is left after ``grace``."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            break
        except PermissionError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            proc = _children.get(pid)
            if proc is not None:
                proc.poll()  # reap our own child: a zombie keeps the group alive
            if not _group_alive(pid):
                _reap(pid)
                return
            time.sleep(0.02)
    _reap(pid)


def _port_in_use(host: str, port: int) -> bool:
    try:
        with socket.create_connection((_connect_host(host), port), timeout=0.2):
            return True
    except OSError:
        return False


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in _connect_host(host) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host if host != "localhost" else "127.0.0.1", 0))
        return int(s.getsockname()[1])


def _last_log_line(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 8192))
            lines = fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        if line.strip():
            text = line.strip()
            return text[len("error: ") :] if text.startswith("error: ") else text
    return ""


def _write_token(path: Path) -> None:
    """A fresh token in ``path``, readable by this user only (0600)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an older file keeps its mode otherwise
        os.write(fd, (secrets.token_urlsafe(32) + "\n").encode())
    finally:
        os.close(fd)


def read_token(ref_or_extra: EndpointRef | Mapping[str, Any]) -> str | None:
    """The endpoint's bearer token (None when it serves without auth)."""
    extra = (
        ref_or_extra.extra if isinstance(ref_or_extra, EndpointRef) else ref_or_extra
    )
    path = extra.get("token_file")
    if not path:
        return None
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise EndpointError(
            f"cannot read the endpoint token {path}: {exc.strerror}",
            hint="deploy the endpoint again (`cloudnn deploy RUN`) to get a new token",
        ) from exc


def _httpx() -> Any:
    """The httpx module, or an error naming the extra that installs it."""
    try:
        import httpx
    except ImportError as exc:
        from cloudnn.errors import ProviderNotInstalledError

        raise ProviderNotInstalledError(
            "endpoints need httpx, which is not installed",
            hint='pip install "cloudnn[serve]"',
        ) from exc
    return httpx


def _http() -> httpx.Client:
    global _http_client
    with _http_lock:
        if _http_client is None:
            httpx = _httpx()
            # trust_env=False: a local endpoint never goes through HTTP(S)_PROXY
            _http_client = httpx.Client(
                timeout=httpx.Timeout(60.0, connect=5.0), trust_env=False
            )
        return _http_client


# ------------------------------------------------------------------ registry


def _registry(provider: LocalProvider) -> RunRegistry:
    from cloudnn.runs import RunRegistry

    return RunRegistry(provider.home)


def _record(
    registry: RunRegistry,
    name: str,
    state: str,
    *,
    run_id: str,
    url: str,
    extra: dict[str, Any],
) -> EndpointRecord:
    return registry.upsert_endpoint(
        name=name, provider="local", state=state, run_id=run_id, url=url, extra=extra
    )


def _get(registry: RunRegistry, name: str) -> EndpointRecord | None:
    try:
        return registry.get_endpoint(name)
    except NotFoundError:
        return None


def local_endpoint_state(record: EndpointRecord) -> tuple[str, str]:
    """(state, message) of a local endpoint, from its process rather than the row."""
    if record.state in (FAILED, STOPPED):
        return record.state, str(record.extra.get("message", ""))
    pid = record.extra.get("pid")
    if record.state == CREATING and not pid:
        return CREATING, ""
    if _is_server(pid):
        return record.state, ""
    log = Path(str(record.extra.get("log", "")))
    last = _last_log_line(log) if log.name else ""
    if "Finished server process" in last:  # uvicorn's last words after SIGTERM
        return STOPPED, f"server process {pid} was stopped"
    return FAILED, f"server process {pid} exited" + (f": {last}" if last else "")


def _ref(record: EndpointRecord) -> EndpointRef:
    return EndpointRef(
        provider="local", name=record.name, url=record.url, extra=record.extra
    )


# ------------------------------------------------------------------ creation


def _settings_conflict(extra: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """How ``new`` settings differ from those of the running server."""
    old = {**(extra.get("settings") or {}), "port": extra.get("port")}
    diffs = []
    for key, value in new.items():
        if key == "port" and value is None:
            continue  # "any port" matches whatever port it runs on
        if key in old and old[key] != value:
            diffs.append(f"{key} {old[key]!r} -> {value!r}")
    return diffs


def create_local_endpoint(
    provider: LocalProvider,
    plan: EndpointPlan,
    *,
    wait: bool = True,
    timeout: float = START_TIMEOUT_S,
) -> EndpointRef:
    """Start the server for ``plan`` (or adopt the live one) and wait for ``/ping``."""
    registry = _registry(provider)
    name = plan.endpoint_name
    details = dict(plan.details)
    run_id = str(details["run_id"])
    settings = dict(details["settings"])
    existing = _get(registry, name)
    if existing is not None:
        if existing.provider != "local":
            raise EndpointError(
                f"endpoint name {name!r} is taken by a {existing.provider} endpoint",
                hint=f"delete it first: cloudnn delete {name}",
            )
        if existing.run_id and existing.run_id != run_id:
            raise EndpointError(
                f"endpoint {name!r} serves run {existing.run_id}, not {run_id}",
                hint=f"delete it first: cloudnn delete {name}",
            )
        pid = existing.extra.get("pid")
        if _is_server(pid):
            diffs = _settings_conflict(existing.extra, settings)
            if diffs:
                raise EndpointError(
                    f"endpoint {name!r} is already running with other settings "
                    f"({'; '.join(diffs)})",
                    hint=f"delete it first (cloudnn delete {name}), then deploy again",
                )
            ref = _ref(existing)
            if wait:  # it may still be starting, from another CLI process
                _wait_ready(ref, timeout=timeout)
                _record(
                    registry,
                    name,
                    IN_SERVICE,
                    run_id=run_id,
                    url=existing.url,
                    extra=dict(existing.extra),
                )
            return _ref(registry.get_endpoint(name))
        _cleanup_files(existing.extra)  # a dead server: start over, quietly
    port_given = settings.get("port")
    attempts = 1 if port_given else 3
    last_error: EndpointError | None = None
    for _ in range(attempts):
        try:
            return _start(provider, plan, wait=wait, timeout=timeout)
        except _PortTaken as exc:
            last_error = exc
    assert last_error is not None
    raise last_error


class _PortTaken(EndpointError):
    """The port went to someone else between choosing it and binding it."""


def _start(
    provider: LocalProvider, plan: EndpointPlan, *, wait: bool, timeout: float
) -> EndpointRef:
    registry = _registry(provider)
    name = plan.endpoint_name
    details = dict(plan.details)
    settings = dict(details["settings"])
    host = str(settings["host"])
    ep_dir = Path(details["endpoint_dir"])
    ep_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    log_path = Path(details["log"])
    port = settings.get("port")
    if port:
        if _port_in_use(host, int(port)):
            raise EndpointError(
                f"port {port} on {host} is already in use",
                hint="pick another port (--port) or omit it for a free one",
            )
    else:
        port = _free_port(host)
    url = _url(host, int(port))
    token_file = details.get("token_file")
    if token_file:
        _write_token(Path(token_file))
    command = [
        str(port) if a == _PORT_PLACEHOLDER else a for a in plan.requests[0]["command"]
    ]
    extra: dict[str, Any] = {
        "pid": None,
        "host": host,
        "port": int(port),
        "token_file": token_file,
        "model_dir": details["model_dir"],
        "log": str(log_path),
        "endpoint_dir": str(ep_dir),
        "command": command,
        "settings": settings,
    }
    run_id = str(details["run_id"])
    _record(registry, name, CREATING, run_id=run_id, url=url, extra=extra)
    env = dict(os.environ)
    # the server must import the same cloudnn as this process, even from a checkout
    pkg_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (pkg_root, os.environ.get("PYTHONPATH", "")) if p
    )
    env["PYTHONUNBUFFERED"] = "1"
    with open(log_path, "ab") as log:
        log.write(
            f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {name}\n".encode()
        )
        log.flush()
        proc = subprocess.Popen(
            command,
            cwd=ep_dir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # own session: a Ctrl-C in the deploying terminal must not reach
            # the server, and delete can stop its whole process group at once
            start_new_session=True,
        )
    _children[proc.pid] = proc
    extra["pid"] = proc.pid
    _record(registry, name, CREATING, run_id=run_id, url=url, extra=extra)
    ref = EndpointRef(provider="local", name=name, url=url, extra=extra)
    if not wait:
        return ref
    try:
        _wait_ready(ref, timeout=timeout)
    except EndpointError as exc:
        _stop_group(proc.pid, grace=2.0)
        _cleanup_files(extra, keep_log=True)
        extra["message"] = str(exc)
        _record(registry, name, FAILED, run_id=run_id, url=url, extra=extra)
        if not settings.get("port") and "address already in use" in str(exc).lower():
            raise _PortTaken(str(exc), hint=exc.hint) from None
        raise
    _record(registry, name, IN_SERVICE, run_id=run_id, url=url, extra=extra)
    return EndpointRef(provider="local", name=name, url=url, extra=extra)


def _wait_ready(ref: EndpointRef, *, timeout: float) -> None:
    """Block until the server answers ``/ping`` and says it is ``ref.name``."""
    httpx = _httpx()

    pid = ref.extra.get("pid")
    log = Path(str(ref.extra.get("log", "")))
    deadline = time.monotonic() + timeout
    headers = {}
    with httpx.Client(timeout=2.0, trust_env=False) as http:
        while True:
            if not _is_server(pid):
                last = _last_log_line(log)
                raise EndpointError(
                    f"endpoint {ref.name} failed to start"
                    + (f": {last}" if last else " (no output)"),
                    hint=f"read the server log: {log}",
                )
            try:
                if http.get(ref.url + "/ping").status_code == 200:
                    # the port could belong to another server: ask who answers
                    token = read_token(ref)
                    if token:
                        headers["Authorization"] = f"Bearer {token}"
                    r = http.get(ref.url + "/", headers=headers)
                    server = r.json().get("server") if r.status_code == 200 else None
                    if isinstance(server, dict) and server.get("name") == ref.name:
                        return
            except (httpx.TransportError, ValueError):
                pass
            if time.monotonic() > deadline:
                last = _last_log_line(log)
                raise EndpointError(
                    f"endpoint {ref.name} did not answer {ref.url}/ping within "
                    f"{timeout:.0f} s" + (f"; last log line: {last}" if last else ""),
                    hint=f"read the server log: {log}",
                )
            time.sleep(0.05)


def wait_local_endpoint(
    provider: LocalProvider, ref: EndpointRef, *, timeout: float = START_TIMEOUT_S
) -> EndpointRef:
    """Wait for a server started with ``wait=False``; marks it InService."""
    registry = _registry(provider)
    record = registry.get_endpoint(ref.name)
    _wait_ready(_ref(record), timeout=timeout)
    record = _record(
        registry,
        record.name,
        IN_SERVICE,
        run_id=record.run_id,
        url=record.url,
        extra=dict(record.extra),
    )
    return _ref(record)


# ------------------------------------------------------------------ deletion


def _cleanup_files(extra: Mapping[str, Any], *, keep_log: bool = False) -> None:
    token = extra.get("token_file")
    if token:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(token)
    ep_dir = extra.get("endpoint_dir")
    if ep_dir and not keep_log:
        shutil.rmtree(ep_dir, ignore_errors=True)


def delete_local_endpoint(provider: LocalProvider, ref: EndpointRef) -> None:
    """Stop the server's process group, free its port, remove token and row.

    An endpoint whose process is already gone is cleaned up quietly; so is a
    name the registry does not know (delete is idempotent).
    """
    registry = _registry(provider)
    record = _get(registry, ref.name)
    extra: dict[str, Any] = {**ref.extra, **(record.extra if record else {})}
    if record is not None:
        _record(
            registry,
            ref.name,
            DELETING,
            run_id=record.run_id,
            url=record.url,
            extra=dict(record.extra),
        )
    pid = extra.get("pid")
    if pid and _is_server(int(pid)):
        _stop_group(int(pid))
        if _group_alive(int(pid)):
            raise EndpointError(
                f"endpoint {ref.name}: processes of group {pid} survived SIGKILL",
                hint=f"check them with `ps -g {pid}`",
            )
    elif pid:
        _reap(int(pid))
    host, port = extra.get("host"), extra.get("port")
    if host and port and pid:
        # the listening socket closes with the process; wait until it has
        deadline = time.monotonic() + 5.0
        while _port_in_use(str(host), int(port)) and time.monotonic() < deadline:
            time.sleep(0.02)
    _cleanup_files(extra)
    registry.remove_endpoint(ref.name)


# ------------------------------------------------------------------- calling


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("error"):
        return str(body["error"])
    text = " ".join(response.text.split())
    return text[:200] or response.reason_phrase


def _request(
    ref: EndpointRef, method: str, path: str, *, content: bytes | None = None
) -> httpx.Response:
    httpx = _httpx()

    headers = {"Content-Type": "application/json"} if content is not None else {}
    token = read_token(ref)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    url = ref.url + path
    log = ref.extra.get("log", "its server.log")
    try:
        response = _http().request(method, url, content=content, headers=headers)
    except httpx.TimeoutException as exc:
        raise EndpointError(
            f"endpoint {ref.name} did not answer {url} in time ({type(exc).__name__})",
            hint=f"send fewer instances per request, or read the server log: {log}",
        ) from exc
    except httpx.TransportError as exc:
        raise EndpointError(
            f"endpoint {ref.name} is not answering at {ref.url} ({exc or type(exc).__name__})",
            hint="check it with `cloudnn endpoints list`; deploy it again with "
            "`cloudnn deploy RUN`",
        ) from exc
    if response.status_code == 200:
        return response
    message = _error_text(response)
    status = response.status_code
    if status == 401:
        hint = (
            f"the token in {ref.extra.get('token_file')} is not the server's; "
            f"delete and deploy the endpoint again"
        )
    elif status == 413:
        hint = (
            "send fewer instances per request (Endpoint.predict(x, batch_size=...)) "
            "or raise deploy.max_request_bytes"
        )
    elif status in (400, 415, 422):
        hint = (
            'send {"instances": [...]} with one row per instance, shaped like the '
            f"training features (see `cloudnn endpoints show {ref.name}`)"
        )
    elif status == 404:
        hint = "is another server on this port? check `cloudnn endpoints list`"
    else:
        hint = f"read the server log: {log}"
    error = EndpointError(
        f"endpoint {ref.name} answered HTTP {status}: {message}", hint=hint
    )
    if status in (400, 401, 413, 415, 422):
        error.exit_code = 2  # the request must change, not the endpoint
    raise error


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def invoke_local_endpoint(
    provider: LocalProvider, ref: EndpointRef, payload: Mapping[str, Any]
) -> dict[str, Any]:
    """POST ``{"instances": [...]}`` to ``/predict``; ``{"predictions": [...]}`` back."""
    try:
        body = json.dumps(payload, default=_json_default, allow_nan=True).encode()
    except (TypeError, ValueError) as exc:
        raise EndpointError(
            f"the payload is not JSON: {exc}",
            hint='send {"instances": [...]} made of numbers, strings, lists and dicts',
        ) from exc
    try:
        result = _request(ref, "POST", "/predict", content=body).json()
    except ValueError as exc:
        raise EndpointError(
            f"endpoint {ref.name} answered something that is not JSON",
            hint="is another server on this port? check `cloudnn endpoints list`",
        ) from exc
    if not isinstance(result, dict):
        raise EndpointError(
            f"endpoint {ref.name} answered {type(result).__name__}, not an object"
        )
    return result


def info_local_endpoint(provider: LocalProvider, ref: EndpointRef) -> dict[str, Any]:
    """The server's metadata (``GET /``): the model's inputs and classes, plus
    ``"server"``: batching, auth, request counts."""
    return dict(_request(ref, "GET", "/").json())
