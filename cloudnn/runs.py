"""The run registry: every run, job and endpoint, in SQLite under ``CLOUDNN_HOME``.

Records are written before and after each side effect, so a crashed CLI can be
re-run and find (resume or adopt) what it had started.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloudnn.errors import NotFoundError, SpecError

__all__ = [
    "EndpointRecord",
    "RunRecord",
    "RunRegistry",
    "cloudnn_home",
]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id      TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    provider    TEXT NOT NULL,
    spec_hash   TEXT NOT NULL,
    spec_json   TEXT NOT NULL,
    spec_path   TEXT NOT NULL DEFAULT '',
    state       TEXT NOT NULL,
    job_id      TEXT NOT NULL DEFAULT '',
    run_dir     TEXT NOT NULL DEFAULT '',
    model_uri   TEXT NOT NULL DEFAULT '',
    output_uri  TEXT NOT NULL DEFAULT '',
    message     TEXT NOT NULL DEFAULT '',
    metrics     TEXT NOT NULL DEFAULT '{}',
    extra       TEXT NOT NULL DEFAULT '{}',
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS endpoints (
    name        TEXT PRIMARY KEY,
    provider    TEXT NOT NULL,
    run_id      TEXT NOT NULL DEFAULT '',
    url         TEXT NOT NULL DEFAULT '',
    state       TEXT NOT NULL,
    extra       TEXT NOT NULL DEFAULT '{}',
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
);
"""


# columns added after the first release: ALTERed into older registry files
_ADDED_COLUMNS = (
    ("runs", "model_uri", "TEXT NOT NULL DEFAULT ''"),
    ("runs", "output_uri", "TEXT NOT NULL DEFAULT ''"),
)


def cloudnn_home() -> Path:
    """``$CLOUDNN_HOME`` or ``~/.cloudnn``."""
    return Path(os.environ.get("CLOUDNN_HOME") or Path.home() / ".cloudnn")


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    name: str
    provider: str
    spec_hash: str
    spec_json: str
    spec_path: str
    state: str
    job_id: str
    run_dir: str
    model_uri: str
    output_uri: str
    message: str
    metrics: dict[str, Any]
    extra: dict[str, Any]
    created_at: float
    updated_at: float

    @property
    def spec(self) -> dict[str, Any]:
        return json.loads(self.spec_json)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class EndpointRecord:
    name: str
    provider: str
    run_id: str
    url: str
    state: str
    extra: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0


_JSON_COLUMNS = ("metrics", "extra")


class RunRegistry:
    """SQLite-backed registry; safe for several CLI processes at once.

    Only :class:`cloudnn.Client` writes it; providers keep their own state.
    """

    def __init__(self, home: str | os.PathLike[str] | None = None) -> None:
        self.home = Path(home) if home is not None else cloudnn_home()
        self.path = self.home / "registry.db"
        self._ready = False  # created on first use: planning touches no disk

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    def _prepare(self) -> None:
        """Create the home folder; refuse one that is not a usable folder."""
        if self.home.exists() and not self.home.is_dir():
            raise SpecError(
                f"CLOUDNN_HOME={self.home}",
                "is a file, not a folder",
                hint="point CLOUDNN_HOME at a folder (or unset it for ~/.cloudnn)",
            )
        try:
            self.home.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SpecError(
                f"CLOUDNN_HOME={self.home}",
                f"cannot create it: {exc.strerror}",
                hint="point CLOUDNN_HOME at a folder you can write",
            ) from exc
        if not os.access(self.home, os.W_OK | os.X_OK):
            raise SpecError(
                f"CLOUDNN_HOME={self.home}",
                "is not writable",
                hint="point CLOUDNN_HOME at a folder you can write",
            )

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        if not self._ready:
            self._prepare()
        try:
            db = sqlite3.connect(self.path, timeout=30)
        except sqlite3.Error as exc:
            raise self._broken(exc) from exc
        try:
            if not self._ready:
                with db:
                    db.executescript(_SCHEMA)
                    have = {
                        (table, row[1])
                        for table in ("runs",)
                        for row in db.execute(f"PRAGMA table_info({table})")
                    }
                    for table, column, decl in _ADDED_COLUMNS:
                        if (table, column) not in have:
                            db.execute(
                                f"ALTER TABLE {table} ADD COLUMN {column} {decl}"
                            )
                self._ready = True
            db.row_factory = sqlite3.Row
            with db:
                yield db
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise
            raise self._broken(exc) from exc
        finally:
            db.close()

    def _broken(self, exc: sqlite3.Error) -> SpecError:
        return SpecError(
            str(self.path),
            f"the run registry cannot be read ({exc})",
            hint=f"move {self.path} aside (runs and endpoints recorded in it are "
            "forgotten, their files stay), or point CLOUDNN_HOME elsewhere",
        )

    # -- runs ------------------------------------------------------------

    def create_run(
        self,
        *,
        run_id: str,
        name: str,
        provider: str,
        spec_hash: str,
        spec_json: str,
        spec_path: str = "",
        model_uri: str = "",
        output_uri: str = "",
        state: str = "PLANNED",
    ) -> RunRecord:
        now = time.time()
        with self._connect() as db:
            db.execute(
                "INSERT OR IGNORE INTO runs (run_id, name, provider, spec_hash, "
                "spec_json, spec_path, state, model_uri, output_uri, created_at, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    name,
                    provider,
                    spec_hash,
                    spec_json,
                    spec_path,
                    state,
                    model_uri,
                    output_uri,
                    now,
                    now,
                ),
            )
        return self.get_run(run_id)

    def update_run(self, run_id: str, **fields: Any) -> RunRecord:
        if fields:
            cols = []
            values: list[Any] = []
            for key, value in fields.items():
                cols.append(f"{key} = ?")
                values.append(json.dumps(value) if key in _JSON_COLUMNS else value)
            cols.append("updated_at = ?")
            values.append(time.time())
            with self._connect() as db:
                db.execute(
                    f"UPDATE runs SET {', '.join(cols)} WHERE run_id = ?",
                    (*values, run_id),
                )
        return self.get_run(run_id)

    def get_run(self, run_id: str) -> RunRecord:
        """Find a run by id, unique id prefix, or ``latest``."""
        with self._connect() as db:
            if run_id == "latest":
                rows = db.execute(
                    "SELECT * FROM runs ORDER BY created_at DESC LIMIT 1"
                ).fetchall()
            else:
                rows = (
                    db.execute(
                        "SELECT * FROM runs WHERE run_id = ?", (run_id,)
                    ).fetchall()
                    or db.execute(
                        "SELECT * FROM runs WHERE run_id LIKE ? ORDER BY created_at DESC",
                        (run_id.replace("%", "") + "%",),
                    ).fetchall()
                )
        if not rows:
            raise NotFoundError(
                f"no run {run_id!r} in {self.path}",
                hint="list runs with `cloudnn runs list` (or set CLOUDNN_HOME)",
            )
        if len(rows) > 1:
            ids = ", ".join(r["run_id"] for r in rows[:5])
            raise NotFoundError(
                f"run id prefix {run_id!r} is ambiguous: {ids}",
                hint="give more characters of the run id",
            )
        return _run(rows[0])

    def list_runs(self, *, limit: int = 50) -> list[RunRecord]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT * FROM runs ORDER BY created_at DESC LIMIT ?", (limit,)
            ).fetchall()
        return [_run(r) for r in rows]

    # -- endpoints ---------------------------------------------------------

    def upsert_endpoint(
        self,
        *,
        name: str,
        provider: str,
        state: str,
        run_id: str = "",
        url: str = "",
        extra: dict[str, Any] | None = None,
    ) -> EndpointRecord:
        now = time.time()
        with self._connect() as db:
            db.execute(
                "INSERT INTO endpoints (name, provider, run_id, url, state, extra, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET provider=excluded.provider, "
                "run_id=excluded.run_id, url=excluded.url, state=excluded.state, "
                "extra=excluded.extra, updated_at=excluded.updated_at",
                (name, provider, run_id, url, state, json.dumps(extra or {}), now, now),
            )
        return self.get_endpoint(name)

    def get_endpoint(self, name: str) -> EndpointRecord:
        with self._connect() as db:
            row = db.execute(
                "SELECT * FROM endpoints WHERE name = ?", (name,)
            ).fetchone()
        if row is None:
            raise NotFoundError(
                f"no endpoint {name!r}",
                hint="list endpoints with `cloudnn endpoints list`",
            )
        return _endpoint(row)

    def list_endpoints(self) -> list[EndpointRecord]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT * FROM endpoints ORDER BY created_at DESC"
            ).fetchall()
        return [_endpoint(r) for r in rows]

    def remove_endpoint(self, name: str) -> None:
        with self._connect() as db:
            db.execute("DELETE FROM endpoints WHERE name = ?", (name,))


def _run(row: sqlite3.Row) -> RunRecord:
    data = dict(row)
    for key in _JSON_COLUMNS:
        data[key] = json.loads(data[key] or "{}")
    return RunRecord(**data)


def _endpoint(row: sqlite3.Row) -> EndpointRecord:
    data = dict(row)
    data["extra"] = json.loads(data["extra"] or "{}")
    return EndpointRecord(**data)
