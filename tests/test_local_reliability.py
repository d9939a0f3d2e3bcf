"""The local backend under abuse: bad places, stale state, orphans, slow clients.

Each test here once failed: the registry showed QUEUED after a job ended, a
killed CLI left its job running, a dead master's workers kept a port, a
bearer token went to whatever listened on a dead endpoint's port, a detached
deploy stayed "Creating", a slow client held a connection forever.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import serving_fixtures as sf
from conftest import PYTHON, REPO, cli_env, digits_spec
from test_local_endpoint import (
    _group_members,
    cli,
    kill_endpoints,
    kill_group,
    labels,
    port_free,
    register_run,
)

import cloudnn
from cloudnn.errors import EndpointError
from cloudnn.runtime.serve import Handler

mlp_model_dir = sf.mlp_model_dir
digits_split_csvs = sf.digits_split_csvs

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _no_stray_servers(cloudnn_home: Path) -> Iterator[None]:
    yield
    kill_endpoints(cloudnn_home)


def _wait(predicate: Any, timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _errors(proc: subprocess.CompletedProcess[str]) -> tuple[str, str]:
    lines = proc.stderr.splitlines()
    error = next((x for x in lines if x.startswith("error: ")), "")
    hint = next((x for x in lines if x.startswith("To fix: ")), "")
    return error, hint


# ------------------------------------------------------ bad places (item 9)


def test_cloudnn_home_that_is_a_file(tmp_path: Path, digits_csv: Path) -> None:
    home = tmp_path / "home-file"
    home.write_text("not a folder")
    spec = tmp_path / "spec.yaml"
    spec.write_text(json.dumps(digits_spec(digits_csv, train={"epochs": 1})))
    for args in (["runs", "list"], ["train", str(spec)]):
        proc = cli(home, *args, check=False)
        error, hint = _errors(proc)
        assert proc.returncode == 2, proc.stderr
        assert error == f"error: CLOUDNN_HOME={home}: is a file, not a folder"
        assert hint and "Traceback" not in proc.stderr
    check = cli(home, "check", "--provider", "local", check=False)
    assert check.returncode == 1 and "!! run directory writable" in check.stdout


def test_a_corrupt_registry_is_named(cloudnn_home: Path) -> None:
    (cloudnn_home / "registry.db").write_bytes(b"this is not sqlite" * 100)
    proc = cli(cloudnn_home, "runs", "list", check=False)
    error, hint = _errors(proc)
    assert proc.returncode == 2
    assert error.startswith(f"error: {cloudnn_home / 'registry.db'}: ")
    assert "move" in hint and "Traceback" not in proc.stderr


def test_an_old_registry_gains_the_new_columns(cloudnn_home: Path) -> None:
    db = sqlite3.connect(cloudnn_home / "registry.db")
    db.execute(
        "CREATE TABLE runs (run_id TEXT PRIMARY KEY, name TEXT NOT NULL, "
        "provider TEXT NOT NULL, spec_hash TEXT NOT NULL, spec_json TEXT NOT NULL, "
        "spec_path TEXT NOT NULL DEFAULT '', state TEXT NOT NULL, "
        "job_id TEXT NOT NULL DEFAULT '', run_dir TEXT NOT NULL DEFAULT '', "
        "message TEXT NOT NULL DEFAULT '', metrics TEXT NOT NULL DEFAULT '{}', "
        "extra TEXT NOT NULL DEFAULT '{}', created_at REAL NOT NULL, "
        "updated_at REAL NOT NULL)"
    )
    db.execute(
        "INSERT INTO runs (run_id, name, provider, spec_hash, spec_json, state, "
        "created_at, updated_at) VALUES ('old-1', 'old', 'local', 'h', '{}', "
        "'SUCCEEDED', 1, 1)"
    )
    db.commit()
    db.close()
    proc = cli(cloudnn_home, "runs", "list")
    assert "old-1" in proc.stdout


def test_bad_deploy_host_and_unwritable_outputs(
    tmp_path: Path, cloudnn_home: Path, mlp_model_dir: Path
) -> None:
    run_id = register_run(cloudnn_home, mlp_model_dir)
    proc = cli(cloudnn_home, "deploy", run_id, "--host", "bad host", check=False)
    error, hint = _errors(proc)
    assert proc.returncode == 2 and error.startswith("error: deploy.host: ")
    assert hint and cloudnn.Client(quiet=True).endpoints() == []
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for args in (
        ["export", run_id, "--format", "torchscript", "-o", str(blocker / "m.ts")],
        ["init", str(blocker / "project")],
    ):
        proc = cli(cloudnn_home, *args, check=False)
        error, hint = _errors(proc)
        assert proc.returncode == 2, (args, proc.stderr)
        assert str(blocker) in error and hint, proc.stderr
        assert "Traceback" not in proc.stderr


# ------------------------------------------- stale and orphaned jobs (10, 11)


def _long_spec(digits_csv: Path, folder: Path, epochs: int = 400) -> Path:
    spec = folder / "long.yaml"
    spec.write_text(
        json.dumps(
            digits_spec(
                digits_csv,
                train={"epochs": epochs, "checkpoint": {"every_epochs": 1}},
            )
        )
    )
    return spec


def test_a_detached_run_shows_its_real_state_everywhere(
    tmp_path: Path, cloudnn_home: Path, digits_csv: Path
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(json.dumps(digits_spec(digits_csv, train={"epochs": 2})))
    out = cli(cloudnn_home, "train", str(spec), "--detach")
    run_id = out.stdout.split()[1]
    _wait(
        lambda: (
            json.loads(
                (cloudnn_home / "runs" / run_id / "status.json").read_text()
            ).get("state")
            == "SUCCEEDED"
        ),
        what="the job",
    )
    listed = json.loads(cli(cloudnn_home, "runs", "list", "--json").stdout)
    assert [r["state"] for r in listed if r["run_id"] == run_id] == ["SUCCEEDED"]
    evaluated = cli(cloudnn_home, "evaluate", run_id, "--json")
    assert json.loads(evaluated.stdout)["test"]["accuracy"] > 0.5


def test_sigterm_to_the_cli_stops_its_job(
    tmp_path: Path, cloudnn_home: Path, digits_csv: Path
) -> None:
    spec = _long_spec(digits_csv, tmp_path)
    proc = subprocess.Popen(
        [PYTHON, "-m", "cloudnn.cli.main", "train", str(spec)],
        env=cli_env(cloudnn_home),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    client = cloudnn.Client(quiet=True)
    _wait(lambda: client.registry.list_runs(), what="the run")
    run_id = client.registry.list_runs()[0].run_id
    ckpts = cloudnn_home / "runs" / run_id / "checkpoints"
    _wait(lambda: ckpts.is_dir() and any(ckpts.iterdir()), what="a checkpoint")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted: stopping" in err
    run = client.run(run_id)
    assert run.state == "CANCELLED"
    status = json.loads((cloudnn_home / "runs" / run_id / "status.json").read_text())
    # it wrote CANCELLED on its way out; the process itself ends right after
    _wait(lambda: not _pid_alive(status["pid"]), timeout=15, what="the job's exit")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_cancel_and_logs_commands(
    tmp_path: Path, cloudnn_home: Path, digits_csv: Path
) -> None:
    spec = _long_spec(digits_csv, tmp_path)
    run_id = cli(cloudnn_home, "train", str(spec), "--detach").stdout.split()[1]
    _wait(
        lambda: '"event": "epoch"' in cli(cloudnn_home, "logs", run_id).stdout,
        what="an epoch in the log",
    )
    follower = subprocess.Popen(
        [PYTHON, "-m", "cloudnn.cli.main", "logs", run_id, "-f"],
        env=cli_env(cloudnn_home),
        stdout=subprocess.PIPE,
        text=True,
    )
    cancelled = cli(cloudnn_home, "cancel", run_id)
    assert f"{run_id}: CANCELLED" in cancelled.stdout
    assert f"--resume {run_id}" in cancelled.stdout
    followed, _ = follower.communicate(timeout=60)  # -f ends with the job
    assert '"event": "preempted"' in followed
    again = cli(cloudnn_home, "cancel", run_id)
    assert "already ended: CANCELLED" in again.stdout


# -------------------------------------------------- endpoints (12, 13, 14)


def test_workers_of_a_dead_master_are_stopped_by_delete(
    mlp_model_dir: Path, cloudnn_home: Path
) -> None:
    run_id = register_run(cloudnn_home, mlp_model_dir)
    client = cloudnn.Client(quiet=True)
    ep = client.deploy(run_id, workers=2)
    pid, port = ep.record.extra["pid"], ep.record.extra["port"]
    try:
        os.kill(pid, signal.SIGKILL)  # the master only: its workers live on
        _wait(lambda: client.endpoint(ep.name).state == "Failed", what="Failed")
        shown = client.endpoint(ep.name)
        assert "still run" in shown.message
        again = client.deploy(run_id, workers=2)  # replaces it, on one port only
        assert again.name == ep.name
        assert not _group_members(pid), "the orphaned workers were left running"
        client.endpoint(ep.name).delete()
        assert port_free(again.record.extra["port"]) and port_free(port)
    finally:
        kill_group(pid)


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[dict[str, str]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        _Recorder.seen.append(dict(self.headers))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b'{"predictions": []}')

    do_GET = do_POST  # noqa: N815

    def log_message(self, *args: Any) -> None:
        pass


def test_the_token_never_goes_to_another_server_on_the_port(
    mlp_model_dir: Path, cloudnn_home: Path, tmp_path: Path
) -> None:
    run_id = register_run(cloudnn_home, mlp_model_dir)
    client = cloudnn.Client(quiet=True)
    ep = client.deploy(run_id)
    port, token = ep.record.extra["port"], ep.token
    kill_group(ep.record.extra["pid"])
    _wait(lambda: port_free(port), what="the port")
    server = http.server.HTTPServer(("127.0.0.1", port), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(EndpointError, match="not answering"):
            client.endpoint(ep.name).predict([[0] * 64])
        rows = tmp_path / "rows.json"
        rows.write_text(json.dumps({"instances": [[0] * 64]}))
        proc = cli(cloudnn_home, "predict", ep.name, "--data", str(rows), check=False)
        assert proc.returncode != 0
        assert not any(token in json.dumps(headers) for headers in _Recorder.seen), (
            _Recorder.seen
        )
    finally:
        server.shutdown()


def test_a_detached_deploy_becomes_in_service(
    mlp_model_dir: Path, cloudnn_home: Path
) -> None:
    run_id = register_run(cloudnn_home, mlp_model_dir)
    out = cli(cloudnn_home, "deploy", run_id, "--detach", "--json")
    name = json.loads(out.stdout)["name"]
    assert json.loads(out.stdout)["state"] == "Creating"

    def listed_state() -> str:
        rows = json.loads(cli(cloudnn_home, "endpoints", "list", "--json").stdout)
        return str(rows[0]["state"])

    _wait(lambda: listed_state() == "InService", what="InService")
    cli(cloudnn_home, "delete", name, "--yes")


def test_open_bind_without_auth_is_warned_about_and_shown(
    mlp_model_dir: Path, cloudnn_home: Path
) -> None:
    run_id = register_run(cloudnn_home, mlp_model_dir)
    out = cli(cloudnn_home, "deploy", run_id, "--host", "0.0.0.0", "--auth", "none")
    assert "anyone can call it" in out.stderr
    assert "bound to  0.0.0.0:" in out.stdout
    name = out.stdout.split()[1]
    cli(cloudnn_home, "delete", name, "--yes")


# ------------------------------------------------------------ slow clients


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def slow_limits_server(
    mlp_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen(
        [
            PYTHON,
            "-m",
            "cloudnn.local.server",
            "--model-dir",
            str(mlp_model_dir),
            "--port",
            str(port),
            "--header-timeout",
            "1",
            "--body-timeout",
            "1",
        ],
        env=cli_env(tmp_path_factory.mktemp("slow-home")),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(url + "/ping", trust_env=False).status_code == 200
        except httpx.TransportError:
            return False

    try:
        _wait(up, what="the server")
        yield url
    finally:
        kill_group(proc.pid)
        proc.wait(timeout=30)


def test_slow_headers_are_cut_off(slow_limits_server: str) -> None:
    port = int(slow_limits_server.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
        s.settimeout(0.5)
        closed_at = None
        start = time.monotonic()
        while time.monotonic() - start < 10:
            try:
                s.sendall(b"X-Slow: 1\r\n")  # one header line at a time
                if s.recv(1024) == b"":
                    closed_at = time.monotonic() - start
                    break
            except TimeoutError:
                continue
            except OSError:
                closed_at = time.monotonic() - start
                break
        assert closed_at is not None, "a slowloris client kept its connection"


def test_slow_bodies_get_408(slow_limits_server: str) -> None:
    port = int(slow_limits_server.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"instances": '
        )
        s.settimeout(10)
        answer = s.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 408"), answer[:200]


def test_prompt_clients_are_unaffected(
    slow_limits_server: str, mlp_model_dir: Path
) -> None:
    rows = sf.digits_test_split()[0][:5]
    expected = labels(Handler.from_model_dir(mlp_model_dir).predict(rows))
    with httpx.Client(base_url=slow_limits_server, trust_env=False) as http_client:
        for _ in range(3):  # keep-alive across the header timer
            r = http_client.post("/predict", json={"instances": rows})
            assert labels(r.json()["predictions"]) == expected
            time.sleep(1.5)
