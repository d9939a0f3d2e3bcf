"""Local endpoints end to end: deploy, predict over HTTP, hostile input, batching, delete.

Every server here binds 127.0.0.1 and is stopped by a finalizer, whatever
the test outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import serving_fixtures as sf
from conftest import PYTHON, REPO, cli_env

import cloudnn
from cloudnn.endpoints import Endpoint
from cloudnn.errors import EndpointError, NotFoundError
from cloudnn.runs import RunRegistry
from cloudnn.runtime.serve import Handler
from cloudnn.spec import Spec

# pytest finds fixtures by module-level name
digits_split_csvs = sf.digits_split_csvs
mlp_model_dir = sf.mlp_model_dir

pytestmark = pytest.mark.slow

#: the server's body limit in these tests (small, so oversized bodies are cheap)
LIMIT = 256 * 1024


# ------------------------------------------------------------------ helpers


def register_run(home: Path, model_dir: Path) -> str:
    """Record the fixture's trained model as a SUCCEEDED run in ``home``."""
    spec_json = (model_dir / "spec.json").read_text()
    spec = Spec.model_validate_json(spec_json)
    run_id = json.loads((model_dir / "cloudnn_model.json").read_text())["run_id"]
    registry = RunRegistry(home)
    registry.create_run(
        run_id=run_id,
        name=spec.name,
        provider="local",
        spec_hash=spec.spec_hash(),
        spec_json=spec_json,
        model_uri=str(model_dir),
        output_uri=str(model_dir.parent / "output"),
    )
    registry.update_run(run_id, state="SUCCEEDED", metrics=sf.run_metrics(model_dir))
    return str(run_id)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError, IndexError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    return True


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def get(url: str, **kwargs: Any) -> httpx.Response:
    # trust_env=False: loopback only, whatever HTTP(S)_PROXY says
    return httpx.get(url, trust_env=False, **{"timeout": 30, **kwargs})


def post(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(url, trust_env=False, **{"timeout": 30, **kwargs})


def kill_group(pid: int | None) -> None:
    """Last-resort cleanup for a finalizer: SIGKILL the server's process group."""
    if pid:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def kill_endpoints(home: Path) -> None:
    """Finalizer: SIGKILL every server the registry in ``home`` knows of."""
    with contextlib.suppress(Exception):
        for record in RunRegistry(home).list_endpoints():
            kill_group(record.extra.get("pid"))


def labels(predictions: list[dict[str, Any]]) -> list[Any]:
    return [p["label"] for p in predictions]


def accuracy(predicted: list[Any], truth: list[Any]) -> float:
    return sum(p == t for p, t in zip(predicted, truth, strict=True)) / len(truth)


def cli(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `cloudnn ARGS` in a new process, as a user would."""
    proc = subprocess.run(
        [PYTHON, "-m", "cloudnn.cli.main", *args],
        env=cli_env(home),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"cloudnn {' '.join(args)} failed:\n{proc.stderr}")
    return proc


# ----------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def _no_stray_servers(cloudnn_home: Path) -> Iterator[None]:
    """Whatever a test leaves running in its registry is killed, pass or fail."""
    yield
    kill_endpoints(cloudnn_home)


@pytest.fixture(scope="module")
def handler(mlp_model_dir: Path) -> Handler:
    return Handler.from_model_dir(mlp_model_dir)


@pytest.fixture(scope="module")
def served(
    mlp_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Endpoint, Path]]:
    """The digits MLP deployed with `cloudnn.Client().deploy(run_id)`, batching on."""
    home = tmp_path_factory.mktemp("endpoint-home")
    run_id = register_run(home, mlp_model_dir)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLOUDNN_HOME", str(home))
        client = cloudnn.Client(quiet=True)
        ep = client.deploy(
            run_id,
            batching={"max_batch_size": 32, "max_wait_ms": 2},
            max_request_bytes=LIMIT,
        )
        try:
            yield ep, home
        finally:
            try:
                client.endpoint(ep.name).delete()
            finally:
                kill_endpoints(home)


@pytest.fixture(scope="module")
def plain_server(
    mlp_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """`python -m cloudnn.local.server` started directly: batching off, no token."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [PYTHON, "-m", "cloudnn.local.server", "--model-dir", str(mlp_model_dir)]
        + ["--port", str(port), "--log-level", "warning"],
        env=cli_env(tmp_path_factory.mktemp("plain-home")),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()  # type: ignore[union-attr]
            with contextlib.suppress(httpx.TransportError):
                if get(url + "/ping", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, "plain server did not start"
            time.sleep(0.05)
        yield url
    finally:
        kill_group(proc.pid)
        proc.wait(timeout=10)


# -------------------------------------------------------------------- tests


def test_deploy_predicts_test_split_exactly(served, handler: Handler, mlp_model_dir):
    ep, _ = served
    assert ep.state == "InService"
    assert ep.url.startswith("http://127.0.0.1:")
    rows, truth = sf.digits_test_split()
    predictions = ep.predict(rows)  # one HTTP request with every test row
    in_process = handler.predict(rows)
    assert labels(predictions) == labels(in_process)
    assert predictions == in_process  # same floats: same batch, same code path
    http_acc = accuracy(labels(predictions), truth)
    assert http_acc == sf.run_metrics(mlp_model_dir)["test"]["accuracy"]
    # numpy input, and the SageMaker/Vertex routes, answer the same
    import numpy as np

    assert labels(ep.predict(np.asarray(rows[:7]))) == labels(in_process[:7])
    headers = {"Authorization": f"Bearer {ep.token}"}
    csv_body = "\n".join(",".join(map(str, r)) for r in rows[:5])
    r = post(
        ep.url + "/invocations",
        content=csv_body,
        headers={**headers, "Content-Type": "text/csv"},
    )
    assert r.status_code == 200
    assert labels(r.json()["predictions"]) == labels(in_process[:5])
    r = post(
        f"{ep.url}/v1/models/{ep.name}:predict",
        json={"instances": rows[:3]},
        headers=headers,
    )
    assert labels(r.json()["predictions"]) == labels(in_process[:3])
    info = ep.info()
    assert info["task"] == "classification"
    assert info["features"] == sf.FEATURES
    assert info["server"]["name"] == info["endpoint"]["name"] == ep.name
    assert info["server"]["batching"]["max_batch_size"] == 32
    assert info["server"]["batching"]["max_wait_ms"] == 2.0


def test_token_auth(served) -> None:
    ep, home = served
    body = {"instances": sf.digits_test_split()[0][:1]}
    token_file = Path(ep.record.extra["token_file"])
    assert token_file.parent == home / "endpoints" / ep.name
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert len(ep.token or "") >= 40
    # the registry never holds the token itself
    assert ep.token not in (home / "registry.db").read_bytes().decode("latin-1")
    for headers in (
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Basic {ep.token}"},
        {"Authorization": f"Bearer {ep.token}x"},
    ):
        r = post(ep.url + "/predict", json=body, headers=headers)
        assert r.status_code == 401, headers
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        assert set(r.json()) == {"error"}
        assert get(ep.url + "/", headers=headers).status_code == 401
    # health checks stay open; the token (any scheme case) works
    assert get(ep.url + "/ping").status_code == 200
    assert get(ep.url + "/health").json() == {"status": "ok"}
    r = post(
        ep.url + "/predict", json=body, headers={"authorization": f"bearer {ep.token}"}
    )
    assert r.status_code == 200


def _malformed_requests(rng: random.Random, limit: int) -> Iterator[dict[str, Any]]:
    """1,000 requests that must each get a 4xx: bad JSON, shapes, types, sizes..."""
    row = [0] * 64
    json_type = {"Content-Type": "application/json"}

    def js(text: str | bytes) -> dict[str, Any]:
        return {"content": text, "headers": json_type}

    one_row = b"[" + b"1," * 63 + b"1],"
    huge = b'{"instances": [' + one_row * (limit // len(one_row) + 10) + b"[0]]}"
    assert len(huge) > limit

    def chunked() -> Iterator[bytes]:  # no Content-Length: the server caps the read
        yield b'{"instances": ['
        for _ in range(limit // 4096 + 2):
            yield b"[" + b"1," * 2046 + b"1],"

    def deep() -> dict[str, Any]:
        depth = rng.randrange(5, 50_000)
        return js("[" * depth + "]" * depth)

    makers = [
        lambda: js(b'{"instances": [1, 2'),
        lambda: js(b"{'instances': [[1]]}"),
        lambda: js(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 80)))),
        lambda: js(b"\xff\xfe\x00garbage"),
        lambda: js(json.dumps(row)[: rng.randrange(1, 60)]),
        lambda: js(
            json.dumps({"instances": [[1.5] * rng.choice([1, 10, 63, 65, 200])]})
        ),
        lambda: js(json.dumps([row, [1] * rng.randrange(1, 64)])),
        lambda: js(json.dumps([row, row[:-1]])),
        lambda: js(json.dumps([[[[[[1]]]]]])),
        lambda: js(json.dumps({"instances": "abc"})),
        lambda: js(json.dumps({"instances": rng.randrange(100)})),
        lambda: js(json.dumps({"instances": {"p0": 1}})),
        lambda: js(json.dumps([["abc"] * 64])),
        # null features are blanks, imputed as in training: not malformed; an
        # instance nested unlike the model's input is, however many numbers
        lambda: js(json.dumps([[[0] * 32, [0] * 32]])),
        lambda: js(json.dumps([[True] * 64])),
        lambda: js(json.dumps([[{}] * 64])),
        lambda: js(json.dumps([{"p0": {"x": [1, 2]}}])),
        lambda: js(json.dumps([None])),
        lambda: js(b""),
        lambda: js(b"[]"),
        lambda: js(b'{"instances": []}'),
        lambda: js(b"{}"),
        lambda: js(b"null"),
        lambda: js("[[" + ",".join(["NaN"] * 64) + "]]"),
        lambda: js("[[" + ",".join(["1"] * 63 + ["Infinity"]) + "]]"),
        lambda: js("[[" + ",".join(["1"] * 63 + ["-1e999"]) + "]]"),
        lambda: js(json.dumps([["NaN"] * 64])),
        lambda: js(json.dumps([["nan"] * 63 + ["inf"]])),
        lambda: js(json.dumps([[1e39] * 64])),
        lambda: js(json.dumps([[10**40] * 64])),
        deep,
        lambda: {"content": huge, "headers": json_type},
        lambda: {"content": chunked(), "headers": json_type},
        lambda: {"content": b"<x/>", "headers": {"Content-Type": "application/xml"}},
        lambda: {"content": b"\x89PNG", "headers": {"Content-Type": "image/png"}},
        lambda: {"content": b"a=1", "headers": {"Content-Type": "multipart/form-data"}},
        lambda: {"content": b"1,2,3\n", "headers": {"Content-Type": "text/csv"}},
        lambda: {
            "content": b"1," * 63 + b"abc\n",
            "headers": {"Content-Type": "text/csv"},
        },
        lambda: {"content": b"1,2\x00,3", "headers": {"Content-Type": "text/csv"}},
        lambda: {"content": b"\n\n", "headers": {"Content-Type": "text/csv"}},
    ]
    for i in range(1000):
        request = makers[i % len(makers)]() if i < len(makers) else rng.choice(makers)()
        request["path"] = rng.choice(
            ["/predict", "/invocations", "/v1/models/x:predict"]
        )
        yield request


def test_malformed_and_oversized_requests_get_4xx(served, handler: Handler) -> None:
    ep, _ = served
    rows, _ = sf.digits_test_split()
    expected = labels(handler.predict(rows[:20]))
    auth = {"Authorization": f"Bearer {ep.token}"}
    statuses: dict[int, int] = {}
    rng = random.Random(7)
    with httpx.Client(base_url=ep.url, timeout=30, trust_env=False) as http:
        for n, req in enumerate(_malformed_requests(rng, LIMIT)):
            path = req["path"].replace("/x:", f"/{ep.name}:")
            r = http.post(
                path, content=req["content"], headers={**auth, **req["headers"]}
            )
            assert 400 <= r.status_code < 500, (n, r.status_code, r.text[:200])
            error = r.json()["error"]
            assert error and "\n" not in error
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        assert sum(statuses.values()) == 1000
        assert {400, 413, 415, 422} <= set(statuses), statuses
        # the endpoint is still up and still right
        r = http.post("/predict", json={"instances": rows[:20]}, headers=auth)
        assert r.status_code == 200
        assert labels(r.json()["predictions"]) == expected
    assert ep.refresh().state == "InService"


def test_batching_matches_unbatched_under_concurrency(
    served, plain_server: str, handler: Handler
) -> None:
    ep, _ = served
    rows, _ = sf.digits_test_split()
    # 64 requests of 1-5 rows each, 32 at a time
    sizes = [1 + i % 5 for i in range(64)]
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    bodies = [
        {"instances": rows[s : s + n]} for s, n in zip(starts, sizes, strict=True)
    ]

    async def fire(url: str, headers: dict[str, str]) -> list[list[dict[str, Any]]]:
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(base_url=url, limits=limits, trust_env=False) as c:
            sem = asyncio.Semaphore(32)

            async def one(body: dict[str, Any]) -> list[dict[str, Any]]:
                async with sem:
                    r = await c.post("/predict", json=body, headers=headers, timeout=30)
                    assert r.status_code == 200, r.text
                    return r.json()["predictions"]  # type: ignore[no-any-return]

            return await asyncio.gather(*(one(b) for b in bodies))

    before = ep.info()["server"]["batching"]
    batched = asyncio.run(fire(ep.url, {"Authorization": f"Bearer {ep.token}"}))
    after = ep.info()["server"]["batching"]
    # the 64 requests did share forward passes
    assert after["requests"] - before["requests"] == len(bodies)
    assert after["batches"] - before["batches"] < len(bodies)
    unbatched = asyncio.run(fire(plain_server, {}))
    assert [labels(p) for p in batched] == [labels(p) for p in unbatched]
    # probabilities agree to float32 rounding: BLAS kernels differ with the
    # number of rows in a forward pass, so the last bits may too
    for got, want in zip(batched, unbatched, strict=True):
        for g, w in zip(got, want, strict=True):
            assert g["probabilities"].keys() == w["probabilities"].keys()
            for k, v in w["probabilities"].items():
                assert math.isclose(
                    g["probabilities"][k], v, rel_tol=1e-5, abs_tol=1e-6
                )


def test_cli_deploy_list_predict_delete_from_new_processes(
    mlp_model_dir: Path, handler: Handler, cloudnn_home: Path, tmp_path: Path
) -> None:
    run_id = register_run(cloudnn_home, mlp_model_dir)
    pid = None
    try:
        out = cli(cloudnn_home, "deploy", run_id, "--json")
        deployed = json.loads(out.stdout)
        name, url = deployed["name"], deployed["url"]
        assert "token" not in deployed  # only with --show-token
        record = RunRegistry(cloudnn_home).get_endpoint(name)
        pid, port = record.extra["pid"], record.extra["port"]
        token_file = Path(record.extra["token_file"])
        assert pid_alive(pid)
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600

        # deploying again adopts the running server
        again = json.loads(cli(cloudnn_home, "deploy", run_id, "--json").stdout)
        assert again["url"] == url
        assert RunRegistry(cloudnn_home).get_endpoint(name).extra["pid"] == pid

        listed = json.loads(cli(cloudnn_home, "endpoints", "list", "--json").stdout)
        assert [(e["name"], e["state"], e["url"]) for e in listed] == [
            (name, "InService", url)
        ]

        rows, _ = sf.digits_test_split()
        data = tmp_path / "rows.csv"
        data.write_text(
            ",".join(sf.FEATURES)
            + "\n"
            + "\n".join(",".join(map(str, r)) for r in rows)
        )
        out = cli(cloudnn_home, "predict", name, "--data", str(data))
        predicted = [json.loads(line) for line in out.stdout.splitlines()]
        assert labels(predicted) == labels(handler.predict(rows))
        out = cli(cloudnn_home, "predict", name, "--data", "-", "--json", check=False)
        assert out.returncode != 0  # empty stdin: a clear error, not a traceback
        assert "Traceback" not in out.stderr

        out = cli(cloudnn_home, "delete", name, "--yes")
        assert name in out.stdout
        assert not pid_alive(pid)
        assert port_free(port)
        assert not token_file.exists()
        with pytest.raises(NotFoundError):
            RunRegistry(cloudnn_home).get_endpoint(name)
        listed = json.loads(cli(cloudnn_home, "endpoints", "list", "--json").stdout)
        assert listed == []
    finally:
        if pid and pid_alive(pid):
            kill_group(pid)


def test_dead_endpoint_shows_failed_and_deletes_quietly(
    mlp_model_dir: Path, cloudnn_home: Path
) -> None:
    run_id = register_run(cloudnn_home, mlp_model_dir)
    client = cloudnn.Client(quiet=True)
    ep = client.deploy(run_id, auth="none")
    pid = ep.record.extra["pid"]
    try:
        assert ep.token is None
        assert (
            post(ep.url + "/predict", json={"instances": [[0] * 64]}).status_code == 200
        )
        kill_group(pid)
        deadline = time.monotonic() + 10
        while client.endpoint(ep.name).state == "InService":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert client.endpoint(ep.name).state == "Failed"
        with pytest.raises(EndpointError) as info:
            client.endpoint(ep.name).predict([[0] * 64])
        assert "not answering" in str(info.value)
        client.endpoint(ep.name).delete()
        assert client.endpoints() == []
        assert not (cloudnn_home / "endpoints" / ep.name).exists()
    finally:
        kill_group(pid)


def test_deploy_by_spec_needs_a_trained_run(
    mlp_model_dir: Path, cloudnn_home: Path
) -> None:
    spec = Spec.model_validate_json((mlp_model_dir / "spec.json").read_text())
    client = cloudnn.Client(quiet=True)
    with pytest.raises(NotFoundError) as info:
        client.deploy(spec)
    assert "cloudnn train" in (info.value.hint or "")
    run_id = register_run(cloudnn_home, mlp_model_dir)
    plan = client.provider("local").plan_endpoint(spec, str(mlp_model_dir))
    assert (
        plan.endpoint_name
        == client.provider("local")
        .plan_endpoint(spec, str(mlp_model_dir))
        .endpoint_name
    )  # deterministic
    assert len(plan.endpoint_name) <= 32 and plan.endpoint_name.startswith(spec.name)
    assert plan.details["run_id"] == run_id
    command = plan.requests[0]["command"]
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert "--token-file" in command
    # by spec: its newest SUCCEEDED run; deleting while it starts leaves nothing
    ep = client.deploy(spec, wait=False)
    pid = ep.record.extra["pid"]
    try:
        assert (ep.name, ep.run_id, ep.state) == (
            plan.endpoint_name,
            run_id,
            "Creating",
        )
        ep.delete()
        assert not pid_alive(pid)
        assert client.endpoints() == []
        assert not (cloudnn_home / "endpoints" / ep.name).exists()
    finally:
        kill_group(pid)


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                    members.append(int(entry.name))
    return members


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_multi_worker_endpoint_stops_whole_process_group(
    mlp_model_dir: Path, cloudnn_home: Path, handler: Handler
) -> None:
    run_id = register_run(cloudnn_home, mlp_model_dir)
    client = cloudnn.Client(quiet=True)
    ep = client.deploy(run_id, workers=2)
    pid = ep.record.extra["pid"]
    try:
        assert len(_group_members(pid)) >= 3  # supervisor + 2 workers
        rows, _ = sf.digits_test_split()
        assert labels(ep.predict(rows[:10])) == labels(handler.predict(rows[:10]))
        ep.delete()
        assert _group_members(pid) == []
        assert port_free(ep.record.extra["port"])
    finally:
        kill_group(pid)
