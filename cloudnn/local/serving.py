"""Local endpoints: ``cloudnn.local.server`` processes and the state the provider keeps.

An endpoint is one background server process (its own session and process
group, so it outlives the CLI that started it and can be stopped whole) plus
a folder the local provider owns::

    $CLOUDNN_HOME/endpoints/<name>/endpoint.json  pid, host, port, url, settings
    $CLOUDNN_HOME/endpoints/<name>/token          bearer token, mode 0600
    $CLOUDNN_HOME/endpoints/<name>/server.log     the server's output

The state an endpoint is in is never stored: it is read from the process
(alive? holding its port? answering ``/ping`` as itself?), so a server that
came up after its deploy was killed reads ``InService``, and one whose master
died reads ``Failed`` even while orphaned workers still hold the port.
The registry row is the Client's; this module never touches the registry.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import re
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

from cloudnn.errors import EndpointError, NotFoundError, SpecError
from cloudnn.provider import (
    EndpointPlan,
    EndpointRef,
    EndpointState,
    EndpointStatus,
)

if TYPE_CHECKING:
    import httpx

    from cloudnn.spec import Spec

__all__ = ["START_TIMEOUT_S", "LocalEndpoints", "endpoint_name"]

_SERVER_MODULE = "cloudnn.local.server"
_PORT_PLACEHOLDER = "{port}"
_STATE_FILE = "endpoint.json"
#: torch import + model load; generous for a cold disk cache
START_TIMEOUT_S = 120.0
#: uvicorn finishes in-flight requests within 5 s of SIGTERM (server.py)
STOP_GRACE_S = 10.0
#: Azure ML endpoint names are the tightest: 3-32 chars, letters, digits, '-'
_NAME_MAX = 32
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)

_children: dict[int, subprocess.Popen[bytes]] = {}
#: (name, pid, port) -> when the server was last seen holding its port
_verified: dict[tuple[str, int, int], float] = {}
#: re-check that long after: /proc scans cost more than a prediction
_VERIFY_EVERY_S = 2.0
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


def _check_host(host: str) -> None:
    """A bind address: an IP address or a hostname (no spaces, no scheme)."""
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(host)
        return
    if not _HOSTNAME.match(host):
        raise SpecError(
            "deploy.host",
            f"{host!r} is not an IP address or host name",
            hint="use 127.0.0.1 (this machine only), 0.0.0.0 (every interface) "
            "or an address of this machine",
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


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``."""
    if not Path("/proc").is_dir():  # pragma: no cover - no /proc
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    members = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat is not None and stat[1] == pgid and stat[0] not in ("Z", "X"):
                members.append(int(entry.name))
    return members


def _socket_inodes(port: int) -> set[str]:
    """Inodes of the sockets listening on ``port`` (TCP, v4 and v6)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    inodes.add(inode)
    return inodes


def _holds_port(pids: list[int], port: int) -> bool | None:
    """Does one of ``pids`` hold the listening socket of ``port``? None: unknown."""
    if not Path("/proc/net/tcp").exists():  # pragma: no cover - no /proc
        return None
    wanted = {f"socket:[{inode}]" for inode in _socket_inodes(port)}
    if not wanted:
        return False
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.scandir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(fd.path) in wanted:
                        return True
    return False


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
            if not _group_members(pid):
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


def _read_token(extra: Mapping[str, Any]) -> str | None:
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
        from cloudnn.errors import MissingDependencyError

        raise MissingDependencyError(
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


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("error"):
        return str(body["error"])
    text = " ".join(response.text.split())
    return text[:200] or response.reason_phrase


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


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


class LocalEndpoints:
    """The local provider's endpoints: plan, start, inspect, call, stop.

    State lives in ``<home>/endpoints/<name>/``; see the module docstring.
    """

    def __init__(self, home: Path, provider: str = "local") -> None:
        self.home = home
        self.provider = provider

    def folder(self, name: str) -> Path:
        return self.home / "endpoints" / name

    def _state(self, name: str) -> dict[str, Any] | None:
        try:
            data = json.loads((self.folder(name) / _STATE_FILE).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _save(self, name: str, state: Mapping[str, Any]) -> None:
        folder = self.folder(name)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = folder / f".{_STATE_FILE}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(dict(state), indent=2))
        os.replace(tmp, folder / _STATE_FILE)

    def _ref(self, state: Mapping[str, Any]) -> EndpointRef:
        return EndpointRef(
            provider=self.provider,
            name=str(state["name"]),
            url=str(state.get("url", "")),
            extra=dict(state),
        )

    # ------------------------------------------------------------- planning

    def plan(self, spec: Spec, model_uri: str) -> EndpointPlan:
        """Pure: the exact server command line and settings for ``spec.deploy``."""
        dep = spec.deploy
        if spec.model.type == "script":
            raise SpecError(
                "model.script",
                "a script run's model is in the script's own format, which the "
                "cloudnn server cannot load",
                hint="serve it with your own code, or train a built-in model or "
                "model.module to deploy it with cloudnn",
            )
        _check_host(dep.host)
        run_id = _run_id_of(model_uri)
        name = endpoint_name(spec.name, run_id)
        ep_dir = self.folder(name)
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
                f"deploy.host {dep.host}: the endpoint is reachable from other "
                "machines"
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
            provider=self.provider,
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

    # ------------------------------------------------------------- creation

    def create(self, plan: EndpointPlan) -> EndpointRef:
        """Start the server for ``plan``, or adopt the live one; does not wait."""
        name = plan.endpoint_name
        details = dict(plan.details)
        run_id = str(details["run_id"])
        settings = dict(details["settings"])
        existing = self._state(name)
        if existing is not None:
            if existing.get("run_id") and existing["run_id"] != run_id:
                raise EndpointError(
                    f"endpoint {name!r} serves run {existing['run_id']}, not {run_id}",
                    hint=f"delete it first: cloudnn delete {name}",
                )
            pid = existing.get("pid")
            if _is_server(pid):
                diffs = _settings_conflict(existing, settings)
                if diffs:
                    raise EndpointError(
                        f"endpoint {name!r} is already running with other settings "
                        f"({'; '.join(diffs)})",
                        hint=f"delete it first (cloudnn delete {name}), then deploy "
                        "again",
                    )
                return self._ref(existing)
            if pid and _group_members(int(pid)):
                _stop_group(int(pid))  # orphaned workers of a dead master
            self._cleanup(existing)
        return self._start(plan)

    def _start(self, plan: EndpointPlan) -> EndpointRef:
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
        token_file = details.get("token_file")
        if token_file:
            _write_token(Path(token_file))
        command = [
            str(port) if a == _PORT_PLACEHOLDER else a
            for a in plan.requests[0]["command"]
        ]
        state: dict[str, Any] = {
            "name": name,
            "run_id": str(details["run_id"]),
            "pid": None,
            "host": host,
            "port": int(port),
            "url": _url(host, int(port)),
            "token_file": token_file,
            "model_dir": details["model_dir"],
            "log": str(log_path),
            "endpoint_dir": str(ep_dir),
            "command": command,
            "settings": settings,
            "started_at": time.time(),
        }
        self._save(name, state)  # before the side effect: a crash leaves a trace
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
        state["pid"] = proc.pid
        self._save(name, state)
        return self._ref(state)

    # ---------------------------------------------------------------- state

    def status(self, ref: EndpointRef) -> EndpointStatus:
        """The endpoint's state, read from its process and its answers."""
        state = self._state(ref.name)
        if state is None:
            raise NotFoundError(
                f"no local endpoint {ref.name!r}",
                hint="list endpoints with `cloudnn endpoints list`",
            )
        url = str(state.get("url", ""))
        pid = state.get("pid")
        log = Path(str(state.get("log", "")))
        if not pid:
            return EndpointStatus(EndpointState.CREATING, "starting", "starting", url)
        if _is_server(int(pid)):
            if self._answers_as_itself(state):
                return EndpointStatus(EndpointState.IN_SERVICE, "", "serving", url)
            age = time.time() - float(state.get("started_at", 0))
            if age > START_TIMEOUT_S:
                last = _last_log_line(log)
                return EndpointStatus(
                    EndpointState.FAILED,
                    f"server process {pid} did not answer {url}/ping within "
                    f"{START_TIMEOUT_S:.0f} s"
                    + (f"; last log line: {last}" if last else ""),
                    "unresponsive",
                    url,
                )
            return EndpointStatus(EndpointState.CREATING, "", "starting", url)
        _reap(int(pid))
        orphans = _group_members(int(pid))
        if orphans:
            return EndpointStatus(
                EndpointState.FAILED,
                f"server process {pid} died; {len(orphans)} worker process(es) of "
                f"its group still run (delete the endpoint to stop them)",
                "orphaned",
                url,
            )
        last = _last_log_line(log) if log.name else ""
        if "Finished server process" in last:  # uvicorn's last words after SIGTERM
            return EndpointStatus(
                EndpointState.STOPPED,
                f"server process {pid} was stopped",
                "stopped",
                url,
            )
        return EndpointStatus(
            EndpointState.FAILED,
            f"server process {pid} exited" + (f": {last}" if last else ""),
            "exited",
            url,
        )

    def _answers_as_itself(self, state: Mapping[str, Any]) -> bool:
        """Does the server answer ``/ping``, and ``GET /`` with its own name?"""
        httpx = _httpx()
        url = str(state["url"])
        headers = {}
        token = _read_token(state)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            with httpx.Client(timeout=2.0, trust_env=False) as http:
                if http.get(url + "/ping").status_code != 200:
                    return False
                if not self._holds_port(state):
                    return False  # someone else answers on that port
                r = http.get(url + "/", headers=headers)
                server = r.json().get("server") if r.status_code == 200 else None
        except (httpx.TransportError, ValueError):
            return False
        return isinstance(server, dict) and server.get("name") == state["name"]

    @staticmethod
    def _holds_port(state: Mapping[str, Any]) -> bool:
        pid, port = state.get("pid"), state.get("port")
        if not pid or not port:
            return False
        held = _holds_port(_group_members(int(pid)) or [int(pid)], int(port))
        return held is not False

    def _live(self, ref: EndpointRef) -> dict[str, Any]:
        """The state of a running endpoint whose server holds its port, or an error.

        Checked before every call: the token must never go to whatever else
        listens on a dead endpoint's port now.
        """
        state = self._state(ref.name) or dict(ref.extra)
        if not state.get("url") and ref.url:
            state["url"] = ref.url
        pid = state.get("pid")
        key = (ref.name, int(pid or 0), int(state.get("port") or 0))
        if time.monotonic() - _verified.get(key, -_VERIFY_EVERY_S) < _VERIFY_EVERY_S:
            return state
        if not pid or not _is_server(int(pid)) or not self._holds_port(state):
            status = self.status(ref) if self._state(ref.name) else None
            why = (
                status.message
                if status is not None and status.message
                else ("its server is not running")
            )
            raise EndpointError(
                f"endpoint {ref.name} is not answering: {why}",
                hint=f"deploy it again: `cloudnn delete {ref.name}` then "
                "`cloudnn deploy RUN`",
            )
        _verified[key] = time.monotonic()
        return state

    # -------------------------------------------------------------- calling

    def _request(
        self,
        ref: EndpointRef,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
    ) -> httpx.Response:
        httpx = _httpx()
        state = self._live(ref)
        headers = {"Content-Type": "application/json"} if content is not None else {}
        token = _read_token(state)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        url = str(state["url"]) + path
        log = state.get("log", "its server.log")
        try:
            response = _http().request(method, url, content=content, headers=headers)
        except httpx.TimeoutException as exc:
            raise EndpointError(
                f"endpoint {ref.name} did not answer {url} in time "
                f"({type(exc).__name__})",
                hint=f"send fewer instances per request, or read the server log: {log}",
            ) from exc
        except httpx.TransportError as exc:
            raise EndpointError(
                f"endpoint {ref.name} is not answering at {state['url']} "
                f"({exc or type(exc).__name__})",
                hint="check it with `cloudnn endpoints list`; deploy it again with "
                "`cloudnn deploy RUN`",
            ) from exc
        if response.status_code == 200:
            return response
        message = _error_text(response)
        status = response.status_code
        if status == 401:
            hint = (
                f"the token in {state.get('token_file')} is not the server's; "
                "delete and deploy the endpoint again"
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
        else:
            hint = f"read the server log: {log}"
        error = EndpointError(
            f"endpoint {ref.name} answered HTTP {status}: {message}", hint=hint
        )
        if status in (400, 401, 413, 415, 422):
            error.exit_code = 2  # the request must change, not the endpoint
        raise error

    def invoke(self, ref: EndpointRef, payload: Mapping[str, Any]) -> dict[str, Any]:
        """POST ``{"instances": [...]}`` to ``/predict``; ``{"predictions": [...]}`` back."""
        try:
            body = json.dumps(payload, default=_json_default, allow_nan=True).encode()
        except (TypeError, ValueError) as exc:
            raise EndpointError(
                f"the payload is not JSON: {exc}",
                hint='send {"instances": [...]} made of numbers, strings, lists and '
                "dicts",
            ) from exc
        try:
            result = self._request(ref, "POST", "/predict", content=body).json()
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

    def info(self, ref: EndpointRef) -> dict[str, Any]:
        """The server's metadata (``GET /``): inputs, classes, and ``"server"``."""
        return dict(self._request(ref, "GET", "/").json())

    def token(self, ref: EndpointRef) -> str | None:
        state = self._state(ref.name) or dict(ref.extra)
        return _read_token(state)

    # ------------------------------------------------------------- deletion

    @staticmethod
    def _cleanup(state: Mapping[str, Any]) -> None:
        token = state.get("token_file")
        if token:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(token)
        ep_dir = state.get("endpoint_dir")
        if ep_dir:
            shutil.rmtree(ep_dir, ignore_errors=True)

    def delete(self, ref: EndpointRef) -> None:
        """Stop the server's whole process group, free its port, remove its folder.

        Workers left behind by a dead master are stopped too. A name with no
        state (deleted already, or never created) is quiet.
        """
        state = {**ref.extra, **(self._state(ref.name) or {})}
        pid = state.get("pid")
        for key in [k for k in _verified if k[0] == ref.name]:
            del _verified[key]
        if pid and _group_members(int(pid)):
            _stop_group(int(pid))
            if _group_members(int(pid)):
                raise EndpointError(
                    f"endpoint {ref.name}: processes of group {pid} survived SIGKILL",
                    hint=f"check them with `ps -g {pid}`",
                )
        elif pid:
            _reap(int(pid))
        host, port = state.get("host"), state.get("port")
        if host and port and pid:
            # the listening socket closes with the process; wait until it has
            deadline = time.monotonic() + 5.0
            while _port_in_use(str(host), int(port)) and time.monotonic() < deadline:
                time.sleep(0.02)
        if state.get("endpoint_dir") or self._state(ref.name) is not None:
            self._cleanup({**state, "endpoint_dir": str(self.folder(ref.name))})
