"""What a binding supplies to the contract suite, and the helpers the suite uses.

:class:`ProviderFixtures` declares every fixture the abstract tests take.
A binding subclasses it and overrides ``provider`` (required) plus whatever
differs for its backend; everything else has a working default. All of them
are class-scoped, so an override must be class-scoped too (or wider, e.g. a
module-level fixture returned from a class-scoped one, to share one trained
run between several test classes).
"""

from __future__ import annotations

import contextlib
import csv
import os
import random
import secrets
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cloudnn.provider import (
    Capability,
    EndpointRef,
    EndpointStatus,
    JobRef,
    JobStatus,
    LogLine,
    Phase,
    Provider,
    TrainingPlan,
)
from cloudnn.runtime.events import parse_event
from cloudnn.spec import Spec

__all__ = [
    "ENDPOINT_CAPABILITIES",
    "ContractJob",
    "ProviderFixtures",
    "assert_no_side_effects",
    "contract_instances_from_csv",
    "log_events",
    "make_contract_spec",
    "run_contract_job",
    "spec_requiring",
    "wait_for_endpoint",
    "wait_for_terminal",
    "write_contract_data",
]

#: capabilities that only ``plan_endpoint`` has to refuse (the rest: ``plan_training``)
ENDPOINT_CAPABILITIES = frozenset(c for c in Capability if c.phase is Phase.ENDPOINT)

#: 8 numeric features, 3 classes, 30 rows each: trains in well under a second
_FEATURES = 8
_CLASSES = 3
_ROWS_PER_CLASS = 30


# ------------------------------------------------------------------- data/spec


def write_contract_data(directory: Path, *, seed: int = 0) -> Path:
    """Write a tiny digits-like CSV (``f0..f7`` + ``label``) and return its path.

    Class ``k`` raises the features ``i`` with ``i % 3 == k``, so a one-epoch
    MLP learns something; the rows are a fixed function of ``seed``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    path = directory / "contract.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([f"f{i}" for i in range(_FEATURES)] + ["label"])
        for row in range(_CLASSES * _ROWS_PER_CLASS):
            label = row % _CLASSES
            features = [
                round(rng.gauss(2.0 if i % _CLASSES == label else 0.0, 1.0), 3)
                for i in range(_FEATURES)
            ]
            writer.writerow([*features, label])
    return path


def make_contract_spec(directory: Path, **overrides: Any) -> Spec:
    """A small valid classification spec over :func:`write_contract_data`.

    ``overrides`` replace top-level spec keys (``train={...}``, ``providers=...``).
    """
    data = write_contract_data(directory)
    raw: dict[str, Any] = {
        "name": "contract",
        "task": "classification",
        "model": {"type": "mlp", "hidden_sizes": [8], "dropout": 0.0},
        "data": {"train": str(data), "target": "label"},
        "train": {"epochs": 1, "batch_size": 16, "seed": 0},
    }
    raw.update(overrides)
    return Spec.model_validate(raw)


def contract_instances_from_csv(
    path: str | os.PathLike[str], target: str | None, n: int = 3
) -> list[list[float]]:
    """The first ``n`` feature rows of a CSV (target column dropped), as floats."""
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        drop = header.index(target) if target in header else len(header) - 1
        rows: list[list[float]] = []
        for row in reader:
            rows.append([float(v) for i, v in enumerate(row) if i != drop])
            if len(rows) == n:
                break
    return rows


_SCRIPT = '''"""Contract-suite training script (only planned, never run)."""
import os

open(os.path.join(os.environ["SM_MODEL_DIR"], "model.txt"), "w").write("ok")
'''

_MODULE = '''"""Contract-suite network factory (only planned, never run)."""


def build(input_dim, num_outputs):
    import torch

    return torch.nn.Linear(input_dim, num_outputs)
'''


def spec_requiring(
    spec: Spec,
    capability: Capability,
    workdir: Path,
    *,
    remote_data_uri: str = "s3://cloudnn-contract/data/contract.csv",
) -> Spec:
    """``spec`` changed just enough that it needs ``capability``.

    ``workdir`` receives the script/module files the custom-code capabilities
    point at. The result needs ``capability`` per
    :meth:`Provider.required_capabilities` (checked here).
    """
    raw = spec.model_dump(mode="json")
    resources = raw["resources"]
    deploy = raw["deploy"]
    if capability is Capability.GPU:
        resources["accelerator"] = "T4:1"
    elif capability is Capability.MULTI_NODE:
        resources["nodes"] = 2
    elif capability is Capability.MULTI_PROCESS:
        resources["processes_per_node"] = 2
    elif capability is Capability.SPOT:
        resources["spot"] = True
        raw["train"]["checkpoint"]["enabled"] = True
    elif capability is Capability.MAX_COST:
        resources["max_cost_usd"] = 5.0
    elif capability is Capability.CUSTOM_SCRIPT:
        workdir.mkdir(parents=True, exist_ok=True)
        script = workdir / "contract_train.py"
        script.write_text(_SCRIPT)
        raw["model"] = {"script": str(script), "hyperparameters": {"epochs": 1}}
    elif capability is Capability.CUSTOM_MODULE:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "contract_net.py").write_text(_MODULE)
        raw["model"] = {"module": "contract_net:build", "path": str(workdir)}
    elif capability is Capability.REMOTE_DATA:
        raw["data"] = {**raw["data"], "train": remote_data_uri}
        raw["data"]["validation"] = raw["data"]["test"] = None
    elif capability is Capability.AUTOSCALING:
        deploy["autoscaling"] = {"min_replicas": 1, "max_replicas": 2}
    elif capability is Capability.ENDPOINT_ACCELERATOR:
        deploy["accelerator"] = "T4:1"
    else:  # pragma: no cover - a new Capability needs a case here
        raise NotImplementedError(f"no contract spec for capability {capability}")
    out = Spec.model_validate(raw)
    assert capability in Provider.required_capabilities(out), capability
    return out


# ----------------------------------------------------------------- side effects


class NetworkAccessError(AssertionError):
    """Raised when code under :func:`assert_no_side_effects` opens a socket."""


def _snapshot(root: Path) -> dict[str, tuple[str, int, int]] | None:
    """Every entry under ``root``: relative path -> (kind, size, mtime_ns)."""
    if not root.exists():
        return None
    out: dict[str, tuple[str, int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            st = path.lstat()
            kind = "dir" if name in dirnames else "file"
            out[str(path.relative_to(root))] = (kind, st.st_size, st.st_mtime_ns)
    out["."] = ("dir", 0, root.stat().st_mtime_ns)
    return out


def _diff(
    before: dict[str, tuple[str, int, int]] | None,
    after: dict[str, tuple[str, int, int]] | None,
) -> list[str]:
    if before is None or after is None:
        return [] if before == after else ["(the directory itself was created)"]
    changed = [f"+ {p}" for p in sorted(set(after) - set(before))]
    changed += [f"- {p}" for p in sorted(set(before) - set(after))]
    changed += [
        f"~ {p}" for p in sorted(set(before) & set(after)) if before[p] != after[p]
    ]
    return changed


@contextlib.contextmanager
def _network_blocked(attempts: list[str]) -> Iterator[None]:
    """Refuse sockets and name lookups; record every attempt in ``attempts``."""
    real_socket = socket.socket
    saved = {
        name: getattr(socket, name)
        for name in ("socket", "create_connection", "getaddrinfo", "gethostbyname")
    }

    def refuse(what: str) -> NetworkAccessError:
        attempts.append(what)
        return NetworkAccessError(f"network access during a pure call: {what}")

    class _GuardedSocket(real_socket):  # type: ignore[misc,valid-type]
        def __new__(cls, *args: Any, **kwargs: Any) -> _GuardedSocket:
            raise refuse(f"socket.socket{args}")

    def _blocked(name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            raise refuse(f"socket.{name}{args}")

        return call

    socket.socket = _GuardedSocket  # type: ignore[misc]
    for name in ("create_connection", "getaddrinfo", "gethostbyname"):
        setattr(socket, name, _blocked(name))
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(socket, name, value)


@contextlib.contextmanager
def assert_no_side_effects(
    dirs: Iterable[Path], *, allow_network: bool = False
) -> Iterator[None]:
    """Fail if the block changes anything under ``dirs`` or touches the network.

    Sockets and name lookups raise :class:`NetworkAccessError` inside the block
    (and fail it even if the caller swallows that). ``allow_network=True`` lifts
    that, for :meth:`Provider.check`, which may ask its backend.
    """
    roots = [Path(d) for d in dict.fromkeys(os.fspath(d) for d in dirs)]
    before = {root: _snapshot(root) for root in roots}
    attempts: list[str] = []
    guard = contextlib.nullcontext() if allow_network else _network_blocked(attempts)
    with guard:
        yield
    assert not attempts, f"network access during a pure call: {attempts}"
    for root in roots:
        changed = _diff(before[root], _snapshot(root))
        assert not changed, f"files changed under {root}: {changed[:20]}"


# ---------------------------------------------------------------------- jobs


def log_events(lines: Iterable[LogLine | str]) -> list[dict[str, Any]]:
    """The runtime's structured events (``::cloudnn:: {...}``) among ``lines``."""
    events = []
    for line in lines:
        event = parse_event(line if isinstance(line, str) else line.text)
        if event is not None:
            events.append(event)
    return events


def _poll_interval(provider: Provider) -> float:
    # the contract suite polls at the provider's pace, but never slower than
    # once a second: a binding points it at a fast local emulator
    return min(1.0, float(provider.poll_interval))


def wait_for_endpoint(
    provider: Provider, ref: EndpointRef, *, timeout: float
) -> list[EndpointStatus]:
    """Poll ``get_endpoint`` until it settles; every status seen, in order."""
    deadline = time.monotonic() + timeout
    seen: list[EndpointStatus] = []
    while True:
        status = provider.get_endpoint(ref)
        seen.append(status)
        if status.state.settled:
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(
                f"endpoint {ref.name} still {status.state.value} after {timeout:.0f} s"
            )
        time.sleep(_poll_interval(provider))


def wait_for_terminal(
    provider: Provider, ref: JobRef, *, timeout: float
) -> list[JobStatus]:
    """Poll ``get_job`` until a terminal state; every status seen, in order."""
    deadline = time.monotonic() + timeout
    seen: list[JobStatus] = []
    while True:
        status = provider.get_job(ref)
        seen.append(status)
        if status.state.terminal:
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(
                f"job {ref.job_id} still {status.state.value} after {timeout:.0f} s"
            )
        time.sleep(_poll_interval(provider))


@dataclass(frozen=True)
class ContractJob:
    """One contract training job, run to its end by :func:`run_contract_job`."""

    plan: TrainingPlan
    ref: JobRef
    #: what submitting the same plan again, right after the first submit, returned
    second_ref: JobRef
    #: every status polled while it ran, in order; the last one is terminal
    statuses: tuple[JobStatus, ...]
    #: log lines read while it ran, each read resuming from the last cursor
    lines: tuple[LogLine, ...]

    @property
    def final(self) -> JobStatus:
        return self.statuses[-1]


def run_contract_job(
    provider: Provider,
    spec: Spec,
    *,
    run_id: str | None = None,
    timeout: float = 300.0,
) -> ContractJob:
    """Plan, submit twice (the second must adopt), follow states and logs to the end.

    On timeout the job is cancelled and an AssertionError carries its last lines.
    """
    run_id = run_id or f"{spec.name}-contract-{secrets.token_hex(3)}"
    plan = provider.plan_training(spec, run_id=run_id)
    ref = provider.submit_training(plan)
    second = provider.submit_training(plan)
    deadline = time.monotonic() + timeout
    statuses: list[JobStatus] = []
    lines: list[LogLine] = []
    cursor: Any = None
    while True:
        status = provider.get_job(ref)
        statuses.append(status)
        for line in provider.stream_logs(ref, since=cursor):
            lines.append(line)
            cursor = line.cursor
        if status.state.terminal:
            break
        if time.monotonic() > deadline:
            provider.cancel_job(ref)
            tail = "\n".join(line.text for line in lines[-20:])
            raise AssertionError(
                f"contract job {ref.job_id} still {status.state.value} after "
                f"{timeout:.0f} s; last log lines:\n{tail}"
            )
        time.sleep(_poll_interval(provider))
    for line in provider.stream_logs(ref, since=cursor):  # written at the very end
        lines.append(line)
    return ContractJob(plan, ref, second, tuple(statuses), tuple(lines))


# ------------------------------------------------------------------ fixtures


class ProviderFixtures:
    """What a binding supplies. Override ``provider``; the rest have defaults.

    Fixtures (all class-scoped):

    ``provider``
        A ready :class:`Provider` (required; point it at the loopback fake).
    ``contract_spec``
        A small valid :class:`Spec` the provider can plan and run (default:
        :func:`make_contract_spec` in a temporary folder). A cloud binding adds
        its ``providers:`` options here.
    ``capabilities``
        The :class:`Capability` values the provider supports (default: all but
        ``provider.unsupported``). Plans needing one of them must not be refused.
    ``can_run``
        Whether jobs and endpoints really run (default True); False skips the
        submit/endpoint tests, e.g. for a fake that only records requests.
    ``contract_job``
        The :class:`ContractJob` the job tests inspect (default:
        :func:`run_contract_job` on ``contract_spec``).
    ``trained_model_uri``
        A model the provider can serve (default: the ``contract_job``'s
        ``plan.model_uri``, or its final status's ``model_uri``).
    ``plan_model_uri``
        A model URI that is only planned, never served (default: an empty
        temporary folder; a cloud binding gives an ``s3://``/``gs://`` URI).
    ``contract_instances``
        Instances to send to the endpoint (default: 3 rows of the spec's CSV).
    ``remote_data_uri``
        A data URI of the provider's own storage, for the REMOTE_DATA capability.
    ``job_timeout``
        Seconds a contract job may take to end (default 300).
    ``known_failures``
        ``{test name: reason}``: tests expected to fail on this provider (strict
        xfail, so a fix is noticed). Name a reported bug in the reason.

    ``state_dirs`` (function-scoped) lists the folders the pure calls must not
    touch: ``$CLOUDNN_HOME`` and ``provider.home``.
    """

    @pytest.fixture(scope="class")
    @classmethod
    def provider(cls) -> Provider:
        raise NotImplementedError(
            "a contract binding must override the `provider` fixture"
        )

    @pytest.fixture(scope="class")
    @classmethod
    def contract_spec(cls, tmp_path_factory: pytest.TempPathFactory) -> Spec:
        return make_contract_spec(tmp_path_factory.mktemp("contract-data"))

    @pytest.fixture(scope="class")
    @classmethod
    def capabilities(cls, provider: Provider) -> frozenset[Capability]:
        return frozenset(Capability) - frozenset(provider.unsupported)

    @pytest.fixture(scope="class")
    @classmethod
    def can_run(cls) -> bool:
        return True

    @pytest.fixture(scope="class")
    @classmethod
    def job_timeout(cls) -> float:
        return 300.0

    @pytest.fixture(scope="class")
    @classmethod
    def contract_job(
        cls,
        provider: Provider,
        contract_spec: Spec,
        can_run: bool,
        job_timeout: float,
    ) -> ContractJob:
        if not can_run:
            pytest.skip("this binding cannot run jobs (can_run is False)")
        return run_contract_job(provider, contract_spec, timeout=job_timeout)

    @pytest.fixture(scope="class")
    @classmethod
    def trained_model_uri(cls, contract_job: ContractJob) -> str:
        return contract_job.final.model_uri or contract_job.plan.model_uri

    @pytest.fixture(scope="class")
    @classmethod
    def plan_model_uri(cls, tmp_path_factory: pytest.TempPathFactory) -> str:
        return str(tmp_path_factory.mktemp("contract-model"))

    @pytest.fixture(scope="class")
    @classmethod
    def contract_instances(cls, contract_spec: Spec) -> list[Any]:
        return list(
            contract_instances_from_csv(
                contract_spec.data.train, contract_spec.data.target
            )
        )

    @pytest.fixture(scope="class")
    @classmethod
    def remote_data_uri(cls) -> str:
        return "s3://cloudnn-contract/data/contract.csv"

    @pytest.fixture(scope="class")
    @classmethod
    def known_failures(cls) -> Mapping[str, str]:
        return {}

    @pytest.fixture
    def state_dirs(self, provider: Provider) -> list[Path]:
        from cloudnn.runs import cloudnn_home

        return [Path(cloudnn_home()), Path(provider.home)]

    @pytest.fixture(autouse=True)
    def _contract_known_failure(
        self, request: pytest.FixtureRequest, known_failures: Mapping[str, str]
    ) -> None:
        node = request.node
        reason = known_failures.get(node.name) or known_failures.get(
            getattr(node, "originalname", node.name)
        )
        if reason:
            node.add_marker(pytest.mark.xfail(reason=reason, strict=True))
