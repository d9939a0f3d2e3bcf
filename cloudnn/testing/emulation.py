"""Provider-neutral building blocks for local cloud emulators.

A cloud emulator (``cloudnn_aws.testing``, ``cloudnn_gcp.testing``, ...)
answers its vendor's API and *really runs* what it is asked to: it unpacks
the uploaded training bundle into a job folder, starts the bundle's entry
point once per host/replica under the platform's environment, captures the
output as the platform's logs, stops jobs with SIGTERM (then SIGKILL), and
serves a serving bundle's adapter as a local HTTP server. This module holds
the parts that do not depend on any vendor, so each emulator writes only the
vendor's API surface. Standard library only (imported by emulators that must
start fast), and nothing here names a cloud.

Pieces, in the order an emulator usually uses them::

    free_port()                      a free TCP port on 127.0.0.1
    unpack_archive(src, dest)        a (.tar.gz) bundle into a job folder, safely
    pack_directory(src)              a folder as .tar.gz bytes (model archives)
    LogStore                         thread-safe per-stream log lines with cursors
    ManagedProcess                   one process in its own group, output -> LogStore
    ReplicaSet                       one process per host/replica of a job; a
                                     failed replica stops the others; restartable
    ServerProcess                    a serving adapter as an HTTP server, ready-waited
    FaultInjector                    throttling fraction, failure of the Nth create,
                                     one-shot triggers (e.g. spot interruption)

Example (what an emulator does for a two-host training job)::

    logs = LogStore()
    job_dir = workdir / "jobs" / name
    unpack_archive(bundle_bytes, job_dir / "code")
    replicas = ReplicaSet(
        [
            ProcessSpec(
                argv=[sys.executable, "cloudnn_entry.py"],
                cwd=job_dir / "code",
                env={**base_env, "HOST": host},
                stream=f"{name}/{host}",
            )
            for host in ("algo-1", "algo-2")
        ],
        logs,
    )
    replicas.start()
    codes = replicas.wait()          # [0, 0] on success
    events, cursor = logs.read(f"{name}/algo-1", cursor=0)

Processes inherit this process's environment unless ``inherit_env=False``;
they run in their own process group (a signal reaches the job and every
worker it spawned) and never read a terminal (stdin is /dev/null).
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import signal
import socket
import subprocess
import tarfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "FaultInjector",
    "LogEvent",
    "LogStore",
    "ManagedProcess",
    "ProcessSpec",
    "ReplicaSet",
    "ServerProcess",
    "free_port",
    "pack_directory",
    "unpack_archive",
    "wait_until",
]

#: seconds between SIGTERM and SIGKILL when stopping a process (managed
#: platforms give a container about two minutes; tests want less)
DEFAULT_GRACE_S = 30.0


# ------------------------------------------------------------------ helpers


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_until(
    predicate: Callable[[], bool], *, timeout: float, interval: float = 0.05
) -> bool:
    """Poll ``predicate`` until it is true (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def _inside(root: Path, target: Path) -> bool:
    try:
        target.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def unpack_archive(
    source: bytes | str | os.PathLike[str], dest: str | os.PathLike[str]
) -> Path:
    """Unpack a tar archive (gzip or plain; bytes or a file) into ``dest``.

    Members that would land outside ``dest`` (absolute paths, ``..``, links
    pointing out), device files and the like are refused, as a cloud
    platform unpacking a user's upload must. Returns ``dest``.
    """
    root = Path(dest)
    root.mkdir(parents=True, exist_ok=True)
    fileobj = (
        io.BytesIO(source)
        if isinstance(source, bytes | bytearray)
        else open(source, "rb")  # noqa: SIM115 - closed below
    )
    try:
        with tarfile.open(fileobj=fileobj, mode="r:*") as tar:
            members = tar.getmembers()
            for member in members:
                target = root / member.name
                if member.name.startswith("/") or not _inside(root, target):
                    raise ValueError(f"archive member {member.name!r} escapes {root}")
                if not (member.isfile() or member.isdir() or member.issym()):
                    raise ValueError(f"archive member {member.name!r} is not a file")
                if member.issym():
                    link = (target.parent / member.linkname).resolve()
                    if not _inside(root, link):
                        raise ValueError(
                            f"archive link {member.name!r} points outside {root}"
                        )
            if hasattr(tarfile, "data_filter"):
                tar.extractall(root, members=members, filter="data")
            else:  # pragma: no cover - Python < 3.11.4: checked above
                tar.extractall(root, members=members)
    finally:
        fileobj.close()
    return root


def pack_directory(source: str | os.PathLike[str], *, prefix: str = "") -> bytes:
    """``source``'s files as ``.tar.gz`` bytes, member names relative to it.

    Members are sorted and their times zeroed, so the same files give the
    same bytes (an uploaded archive is content-addressable). ``prefix`` is
    put in front of every member name (``"model/"``).
    """
    import gzip

    root = Path(source)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(root.rglob("*")):
            if not path.is_file() or path.is_symlink():
                continue
            info = tarfile.TarInfo(prefix + path.relative_to(root).as_posix())
            data = path.read_bytes()
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, filename="") as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


# ---------------------------------------------------------------------- logs


@dataclass(frozen=True)
class LogEvent:
    """One captured line: wall-clock ``timestamp`` (s), text without newline."""

    timestamp: float
    text: str
    #: position in its stream (0, 1, ...): the cursor that follows it is seq + 1
    seq: int


class LogStore:
    """Thread-safe log lines per named stream, read with integer cursors.

    A stream is what the platform calls one (a CloudWatch log stream, a
    Cloud Logging replica); a cursor is the number of lines already read, so
    it is JSON-ready and reading is repeatable. Listeners (``add_listener``)
    see every line as it is appended -- an emulator forwards lines to its
    vendor's log service from there.
    """

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._streams: dict[str, list[LogEvent]] = {}
        self._listeners: list[Callable[[str, LogEvent], None]] = []

    def add_listener(self, listener: Callable[[str, LogEvent], None]) -> None:
        """Call ``listener(stream, event)`` for every line appended from now on."""
        with self._lock:
            self._listeners.append(listener)

    def create(self, stream: str) -> None:
        """Make ``stream`` exist (empty) before its first line."""
        with self._lock:
            self._streams.setdefault(stream, [])

    def append(
        self, stream: str, text: str, timestamp: float | None = None
    ) -> LogEvent:
        """Add one line (trailing newline dropped) and tell the listeners."""
        with self._lock:
            lines = self._streams.setdefault(stream, [])
            event = LogEvent(
                timestamp=time.time() if timestamp is None else timestamp,
                text=text.rstrip("\r\n"),
                seq=len(lines),
            )
            lines.append(event)
            listeners = list(self._listeners)
            self._lock.notify_all()
        for listener in listeners:
            # a broken listener must not kill the process's output pump
            with contextlib.suppress(Exception):
                listener(stream, event)
        return event

    def streams(self, prefix: str = "") -> list[str]:
        """Stream names starting with ``prefix``, sorted."""
        with self._lock:
            return sorted(s for s in self._streams if s.startswith(prefix))

    def read(
        self, stream: str, cursor: int = 0, limit: int | None = None
    ) -> tuple[list[LogEvent], int]:
        """Lines of ``stream`` from ``cursor`` on (at most ``limit``), and the next cursor."""
        with self._lock:
            lines = self._streams.get(stream, [])
            end = len(lines) if limit is None else min(len(lines), cursor + limit)
            return list(lines[cursor:end]), max(cursor, end)

    def text(self, stream: str) -> str:
        """The whole stream as one string (for failure messages and tests)."""
        events, _ = self.read(stream)
        return "\n".join(e.text for e in events)

    def wait_for(
        self,
        predicate: Callable[[str, LogEvent], bool],
        *,
        timeout: float,
        prefix: str = "",
    ) -> LogEvent | None:
        """Block until a line in a stream under ``prefix`` satisfies ``predicate``.

        Lines already stored count. Returns the first match, or None after
        ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        seen: dict[str, int] = {}
        with self._lock:
            while True:
                for name, lines in self._streams.items():
                    if not name.startswith(prefix):
                        continue
                    for event in lines[seen.get(name, 0) :]:
                        if predicate(name, event):
                            return event
                    seen[name] = len(lines)
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._lock.wait(left)


# ----------------------------------------------------------------- processes


@dataclass(frozen=True)
class ProcessSpec:
    """How to start one process of a job (one host, one replica)."""

    argv: Sequence[str]
    cwd: str | os.PathLike[str]
    env: Mapping[str, str] = field(default_factory=dict)
    #: the LogStore stream its output goes to
    stream: str = "main"
    #: start from this process's environment, with ``env`` on top
    inherit_env: bool = True


class ManagedProcess:
    """One process in its own process group, its output captured line by line.

    stdout and stderr are merged (as container logs are) and appended to
    ``logs`` under ``spec.stream`` with the time each line was read.
    """

    def __init__(self, spec: ProcessSpec, logs: LogStore) -> None:
        self.spec = spec
        self.logs = logs
        self._proc: subprocess.Popen[bytes] | None = None
        self._pump: threading.Thread | None = None
        self._lock = threading.Lock()
        #: the signal this side sent last (None: it ended by itself)
        self.stopped_by: int | None = None

    def __repr__(self) -> str:
        return f"ManagedProcess(stream={self.spec.stream!r}, pid={self.pid})"

    def start(self) -> ManagedProcess:
        """Start it (once); returns self."""
        with self._lock:
            if self._proc is not None:
                raise RuntimeError(f"{self!r} was started already")
            env = dict(os.environ) if self.spec.inherit_env else {}
            env.update(self.spec.env)
            self.logs.create(self.spec.stream)
            self._proc = subprocess.Popen(
                list(self.spec.argv),
                cwd=os.fspath(self.spec.cwd),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                # its own group: SIGTERM reaches the job and the workers it forks
                start_new_session=True,
            )
            self._pump = threading.Thread(
                target=self._copy_output,
                name=f"log-pump-{self.spec.stream}",
                daemon=True,
            )
            self._pump.start()
        return self

    def _copy_output(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        with self._proc.stdout as out:
            for raw in out:
                self.logs.append(self.spec.stream, raw.decode("utf-8", "replace"))

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def started(self) -> bool:
        return self._proc is not None

    def poll(self) -> int | None:
        """Exit code once it ended (output fully captured), else None."""
        if self._proc is None or self._proc.poll() is None:
            return None
        if self._pump is not None:
            self._pump.join()  # the pipe closes right after exit
        return self._proc.returncode

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the exit code (None if still running after ``timeout``)."""
        if self._proc is None:
            raise RuntimeError(f"{self!r} was never started")
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.poll()

    def send_signal(self, signum: int) -> None:
        """Signal the whole process group (quiet if it is gone)."""
        if self._proc is None or self._proc.poll() is not None:
            return
        self.stopped_by = signum
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signum)

    def terminate(self, grace: float = DEFAULT_GRACE_S) -> int | None:
        """SIGTERM the group, SIGKILL it after ``grace`` seconds; the exit code."""
        if self._proc is None:
            return None
        self.send_signal(signal.SIGTERM)
        code = self.wait(grace)
        if code is None:
            self.send_signal(signal.SIGKILL)
            code = self.wait()
        # workers that outlived their parent (ignored SIGTERM) go too
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        return code


class ReplicaSet:
    """The processes of one job, one per host/replica, started together.

    Like a managed training platform, a replica that fails (non-zero exit)
    brings the others down (SIGTERM, then SIGKILL after ``grace``): a
    distributed job cannot continue without one of its members. ``restart``
    starts the same specs again -- the job folder, and so its checkpoints,
    stay as they are (what a spot restart or a worker restart does).
    """

    def __init__(
        self,
        specs: Sequence[ProcessSpec],
        logs: LogStore,
        *,
        grace: float = DEFAULT_GRACE_S,
    ) -> None:
        if not specs:
            raise ValueError("a replica set needs at least one process spec")
        self.specs = list(specs)
        self.logs = logs
        self.grace = grace
        self.attempt = 0
        self.processes: list[ManagedProcess] = []

    def start(self) -> ReplicaSet:
        """Start every replica (a new attempt); returns self."""
        self.attempt += 1
        self.processes = [ManagedProcess(s, self.logs) for s in self.specs]
        try:
            for proc in self.processes:
                proc.start()
        except BaseException:
            self.terminate(grace=0)
            raise
        return self

    def restart(self, specs: Sequence[ProcessSpec] | None = None) -> ReplicaSet:
        """Stop what still runs and start (``specs`` or the same specs) again."""
        self.terminate()
        if specs is not None:
            self.specs = list(specs)
        return self.start()

    def poll(self) -> list[int | None]:
        """Each replica's exit code (None while it runs)."""
        return [p.poll() for p in self.processes]

    @property
    def running(self) -> bool:
        return any(p.running for p in self.processes)

    def wait(self, timeout: float | None = None) -> list[int] | None:
        """Wait until every replica ended; exit codes, or None after ``timeout``.

        A failing replica stops the rest, so this never hangs on a partner
        waiting for a peer that died.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            codes = self.poll()
            if all(c is not None for c in codes):
                return [int(c) for c in codes if c is not None]
            if any(c not in (None, 0) for c in codes):
                for proc in self.processes:
                    if proc.running:
                        proc.terminate(self.grace)
                continue
            if deadline is not None and time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

    def send_signal(self, signum: int) -> None:
        for proc in self.processes:
            proc.send_signal(signum)

    def terminate(self, grace: float | None = None) -> list[int | None]:
        """SIGTERM every replica at once, SIGKILL stragglers after ``grace``."""
        wait_s = self.grace if grace is None else grace
        self.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + wait_s
        codes: list[int | None] = []
        for proc in self.processes:
            if not proc.started:
                codes.append(None)
                continue
            code = proc.wait(max(0.0, deadline - time.monotonic()))
            if code is None:
                code = proc.terminate(grace=0)
            codes.append(code)
        return codes


class ServerProcess(ManagedProcess):
    """A serving adapter run as a local HTTP server process.

    ``url`` is where it listens (``http://127.0.0.1:PORT``); :meth:`wait_ready`
    polls ``health_path`` until it answers 200, and fails early with the
    server's last log lines when the process dies first.
    """

    def __init__(
        self,
        spec: ProcessSpec,
        logs: LogStore,
        *,
        port: int,
        host: str = "127.0.0.1",
        health_path: str = "/ping",
    ) -> None:
        super().__init__(spec, logs)
        self.host = host
        self.port = port
        self.health_path = health_path

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def healthy(self, timeout: float = 2.0) -> bool:
        """True when the health route answers 200 now."""
        try:
            with urllib.request.urlopen(  # noqa: S310 - loopback URL we built
                self.url + self.health_path, timeout=timeout
            ) as resp:
                return int(resp.status) == 200
        except (OSError, urllib.error.URLError, ValueError):
            return False

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Block until healthy; RuntimeError naming the cause if it dies or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.poll()
            if code is not None:
                tail = self.logs.text(self.spec.stream).splitlines()[-15:]
                raise RuntimeError(
                    f"server exited with status {code} before answering "
                    f"{self.health_path}:\n" + "\n".join(tail)
                )
            if self.healthy(timeout=1.0):
                return
            time.sleep(0.1)
        raise RuntimeError(
            f"server at {self.url} did not answer {self.health_path} "
            f"within {timeout:.0f} s"
        )


# ------------------------------------------------------------------- faults


class FaultInjector:
    """Decides, thread-safely, which API calls an emulator should fail.

    Settings (all off by default; :meth:`configure` takes them as keywords
    or from a JSON body, :meth:`reset` turns everything off):

    ``throttle_fraction``
        share (0..1) of calls to answer with the vendor's throttling error;
        ``throttle_operations`` limits it to those operation names (default:
        every operation passed to :meth:`throttle`).
    ``fail_create``
        ``{operation: n}``: the n-th call (1-based, counted from configure) of
        that create operation fails with a capacity error, once.
    ``triggers``
        named one-shot flags an emulator polls (``"spot_interruption"``):
        :meth:`arm` sets one, :meth:`take` consumes it.
    ``seed``
        seeds the random source, so a test's sequence of faults repeats.
    """

    def __init__(self, seed: int | None = 0) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self.throttle_fraction = 0.0
        self.throttle_operations: frozenset[str] | None = None
        self._fail_create: dict[str, int] = {}
        self._counts: dict[str, int] = {}
        self._triggers: dict[str, Any] = {}
        #: what was injected: (kind, operation) pairs, for tests to read
        self.injected: list[tuple[str, str]] = []

    def reset(self) -> None:
        with self._lock:
            self.throttle_fraction = 0.0
            self.throttle_operations = None
            self._fail_create.clear()
            self._counts.clear()
            self._triggers.clear()
            self.injected.clear()

    def configure(
        self,
        *,
        throttle_fraction: float | None = None,
        throttle_operations: Iterable[str] | None = None,
        fail_create: Mapping[str, int] | None = None,
        triggers: Mapping[str, Any] | None = None,
        seed: int | None = None,
    ) -> None:
        """Change some settings; the others stay as they are."""
        with self._lock:
            if throttle_fraction is not None:
                if not 0.0 <= float(throttle_fraction) <= 1.0:
                    raise ValueError("throttle_fraction must be within 0..1")
                self.throttle_fraction = float(throttle_fraction)
            if throttle_operations is not None:
                ops = frozenset(throttle_operations)
                self.throttle_operations = ops or None
            if fail_create is not None:
                self._fail_create = {str(k): int(v) for k, v in fail_create.items()}
                self._counts = {}
            if triggers is not None:
                self._triggers.update(triggers)
            if seed is not None:
                self._rng = random.Random(seed)

    def settings(self) -> dict[str, Any]:
        """The current settings, JSON-ready."""
        with self._lock:
            return {
                "throttle_fraction": self.throttle_fraction,
                "throttle_operations": sorted(self.throttle_operations or ()),
                "fail_create": dict(self._fail_create),
                "triggers": dict(self._triggers),
                "injected": [list(i) for i in self.injected],
            }

    def throttle(self, operation: str) -> bool:
        """True when this call of ``operation`` should be throttled."""
        with self._lock:
            if self.throttle_fraction <= 0.0:
                return False
            if (
                self.throttle_operations is not None
                and operation not in self.throttle_operations
            ):
                return False
            hit = self._rng.random() < self.throttle_fraction
            if hit:
                self.injected.append(("throttle", operation))
            return hit

    def fail_create(self, operation: str) -> bool:
        """Count a call of create ``operation``; True when it is the one to fail."""
        with self._lock:
            if operation not in self._fail_create:
                return False
            self._counts[operation] = self._counts.get(operation, 0) + 1
            hit = self._counts[operation] == self._fail_create[operation]
            if hit:
                self.injected.append(("capacity", operation))
            return hit

    def arm(self, trigger: str, value: Any = True) -> None:
        """Set a one-shot trigger (``value`` may say more, e.g. a job name)."""
        with self._lock:
            self._triggers[trigger] = value

    def take(self, trigger: str, match: Callable[[Any], bool] | None = None) -> Any:
        """Consume a trigger if set (and ``match(value)``); its value, else None."""
        with self._lock:
            if trigger not in self._triggers:
                return None
            value = self._triggers[trigger]
            if match is not None and not match(value):
                return None
            del self._triggers[trigger]
            self.injected.append((trigger, str(value)))
            return value
