"""Spec values that validate but cannot run, and how spec errors are named.

- non-finite numbers (YAML ``.inf``/``.nan``) anywhere in a spec are refused
  with the field named, instead of becoming ``null`` in spec.json;
- the loss must suit the task; data.features must not list the target;
- error paths never show pydantic internals (``constrained-int``, ``str``);
- duplicate YAML keys and spec files that are not UTF-8 are user errors;
- resources the machine cannot give are refused at plan time.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import PYTHON, cli_env, write_csv
from pydantic import ValidationError

from cloudnn.errors import SpecError
from cloudnn.spec import Spec, _loc_to_path, load_spec, spec_from_dict


def base(data: Path | str = "s3://bucket/train.csv") -> dict[str, Any]:
    return {
        "name": "values",
        "task": "classification",
        "model": {"type": "mlp", "hidden_sizes": [8]},
        "data": {"train": str(data), "target": "label"},
        "train": {"epochs": 1, "batch_size": 8},
    }


def with_(raw: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    *parents, last = path.split(".")
    node = raw
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return raw


@pytest.fixture
def train_csv(tmp_path: Path) -> Path:
    rows = [[i * 0.1, (i * 3) % 7, i % 2] for i in range(40)]
    return write_csv(tmp_path / "train.csv", ["a", "b", "label"], rows)


def cli(args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "cloudnn.cli.main", *args],
        capture_output=True,
        text=True,
        env=cli_env(home),
        timeout=300,
    )


def assert_user_error(
    proc: subprocess.CompletedProcess[str], field: str, reason: str
) -> None:
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert lines and lines[0].startswith(f"error: {field}: "), proc.stderr
    assert reason in lines[0], lines[0]
    assert len(lines) >= 2 and lines[1].startswith("To fix: "), proc.stderr


# ---------------------------------------------------------------- item 8


NON_FINITE = [
    ("train.optimizer.lr", float("inf")),
    ("train.optimizer.weight_decay", float("nan")),
    ("train.grad_clip", float("inf")),
    ("train.early_stopping.min_delta", float("inf")),
    ("deploy.batching.max_wait_ms", float("inf")),
    ("resources.max_cost_usd", float("inf")),
    ("resources.max_runtime", float("inf")),
    ("train.label_smoothing", float("nan")),
    ("model.dropout", float("nan")),
]


@pytest.mark.parametrize(("path", "value"), NON_FINITE, ids=[p for p, _ in NON_FINITE])
def test_non_finite_numbers_are_refused_with_the_field(path: str, value: float) -> None:
    with pytest.raises(SpecError) as info:
        spec_from_dict(with_(base(), path, value))
    assert info.value.field == path
    assert "finite" in info.value.reason
    assert ".inf" in (info.value.hint or "")


def test_non_finite_in_free_form_mappings() -> None:
    raw = base()
    raw["model"] = {"module": "nets:build", "params": {"scale": [1.0, float("inf")]}}
    with pytest.raises(SpecError) as info:
        spec_from_dict(raw)
    assert info.value.field == "model.params.scale[1]"
    raw["model"] = {"script": "train.py", "hyperparameters": {"lr": float("-inf")}}
    with pytest.raises(SpecError) as info:
        spec_from_dict(raw)
    assert info.value.field == "model.hyperparameters.lr"


def test_sub_models_refuse_non_finite_on_their_own() -> None:
    from cloudnn.spec import OptimizerSpec

    with pytest.raises(ValidationError):
        OptimizerSpec(lr=float("inf"))


def test_a_valid_spec_round_trips_through_json() -> None:
    spec = spec_from_dict(with_(base(), "train.grad_clip", 1.5))
    again = Spec.model_validate_json(spec.model_dump_json())
    assert again == spec and again.train.grad_clip == 1.5
    assert json.loads(spec.model_dump_json())["train"]["grad_clip"] == 1.5


@pytest.mark.parametrize(
    "text",
    ["lr: .inf", "lr: .nan", "lr: -.Inf", "lr: '1e999'"],
    ids=["inf", "nan", "minus-inf", "overflow-string"],
)
def test_yaml_infinity_through_validate(
    text: str, tmp_path: Path, train_csv: Path, cloudnn_home: Path
) -> None:
    raw = base(train_csv)
    spec = tmp_path / "spec.yaml"
    body = yaml.safe_dump(raw, sort_keys=False) + f"  optimizer:\n    {text}\n"
    spec.write_text(body)
    proc = cli(["validate", str(spec)], cloudnn_home)
    assert_user_error(proc, "train.optimizer.lr", "finite number")


def test_huge_durations_are_refused() -> None:
    with pytest.raises(SpecError) as info:
        spec_from_dict(with_(base(), "resources.max_runtime", 10**400))
    assert info.value.field == "resources.max_runtime"
    assert "not a usable duration" in info.value.reason
    assert len(str(info.value)) < 200


# ---------------------------------------------------------------- item 4


@pytest.mark.parametrize(
    ("task", "loss", "hint"),
    [
        ("regression", "cross_entropy", "mse, mae or huber"),
        ("classification", "mse", "cross_entropy"),
        ("classification", "mae", "cross_entropy"),
        ("classification", "huber", "cross_entropy"),
    ],
)
def test_loss_must_suit_the_task(task: str, loss: str, hint: str) -> None:
    raw = with_(with_(base(), "task", task), "train.loss", loss)
    with pytest.raises(SpecError) as info:
        spec_from_dict(raw)
    assert info.value.field == "train.loss"
    assert repr(loss) in info.value.reason and task in info.value.reason
    assert hint in (info.value.hint or "")


@pytest.mark.parametrize(
    ("task", "loss"),
    [
        ("classification", "auto"),
        ("classification", "cross_entropy"),
        ("regression", "auto"),
        ("regression", "mse"),
        ("regression", "mae"),
        ("regression", "huber"),
    ],
)
def test_matching_losses_pass(task: str, loss: str) -> None:
    spec_from_dict(with_(with_(base(), "task", task), "train.loss", loss))


def test_loss_mismatch_through_validate(
    tmp_path: Path, train_csv: Path, cloudnn_home: Path
) -> None:
    raw = with_(
        with_(base(train_csv), "task", "regression"), "train.loss", "cross_entropy"
    )
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert_user_error(
        cli(["validate", str(path)], cloudnn_home), "train.loss", "classification loss"
    )


# ---------------------------------------------------------------- item 2


def test_target_listed_in_features_is_refused_by_the_spec() -> None:
    raw = with_(base(), "data.features", ["a", "b", "label"])
    with pytest.raises(SpecError) as info:
        spec_from_dict(raw)
    assert info.value.field == "data.features"
    assert "'label'" in info.value.reason and "label it has to predict" in (
        info.value.reason
    )


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("data.features", ["a", "a"], "data.features"),
        ("data.group_column", "label", "data.group_column"),
        ("data.text", {"column": "label"}, "data.text.column"),
    ],
)
def test_columns_used_twice(path: str, value: Any, field: str) -> None:
    with pytest.raises(SpecError) as info:
        spec_from_dict(with_(base(), path, value))
    assert info.value.field == field


# ---------------------------------------------------------- field paths


@pytest.mark.parametrize(
    ("loc", "path"),
    [
        (("resources", "processes_per_node", "constrained-int"), "resources.processes_per_node"),
        (("resources", "processes_per_node", "literal['auto']"), "resources.processes_per_node"),
        (("model", "script", "hyperparameters", "a", "str"), "model.hyperparameters.a"),
        (("model", "script", "hyperparameters", "a", "int"), "model.hyperparameters.a"),
        (("model", "script", "hyperparameters", "a", "float"), "model.hyperparameters.a"),
        (("model", "script", "hyperparameters", "a", "bool"), "model.hyperparameters.a"),
        # a user's key named like a type tag is kept
        (("model", "script", "hyperparameters", "int", "str"), "model.hyperparameters.int"),
        (("model", "mlp", "hidden_sizes", 0), "model.hidden_sizes[0]"),
        (("model", "transformer", "function-after[_heads_divide(), TransformerModel]"), "model"),
        (("data", "image_size", 1), "data.image_size[1]"),
        (("train", "early_stopping", "patience"), "train.early_stopping.patience"),
        (("providers", "aws", "tags", "str"), "providers.aws.tags.str"),
        (("tags", "team"), "tags.team"),
        ((), "<spec>"),
    ],
)  # fmt: skip
def test_loc_to_path_drops_pydantic_internals(
    loc: tuple[int | str, ...], path: str
) -> None:
    assert _loc_to_path(loc) == path


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("resources.processes_per_node", "many", "resources.processes_per_node"),
        ("resources.processes_per_node", 0, "resources.processes_per_node"),
        ("model", {"script": "t.py", "hyperparameters": {"a": [1]}}, "model.hyperparameters.a"),
        ("model.hidden_sizes", [8, "x"], "model.hidden_sizes[1]"),
        ("data.image_size", [8, "x"], "data.image_size[1]"),
    ],
)  # fmt: skip
def test_reported_fields_are_the_users_own(path: str, value: Any, field: str) -> None:
    with pytest.raises(SpecError) as info:
        spec_from_dict(with_(base(), path, value))
    assert info.value.field == field
    for internal in ("constrained", "literal[", "function-", ".str", ".int"):
        assert internal not in info.value.field


def test_debug_lists_every_error_without_internals(
    tmp_path: Path, train_csv: Path, cloudnn_home: Path
) -> None:
    raw = with_(base(train_csv), "resources.processes_per_node", "many")
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    proc = cli(["--debug", "validate", str(path)], cloudnn_home)
    assert proc.returncode == 2
    listed = [ln for ln in proc.stderr.splitlines() if ln.startswith("  - ")]
    assert len(listed) == 2
    assert all(ln.startswith("  - resources.processes_per_node: ") for ln in listed)


# ------------------------------------------------------- duplicate keys


def test_duplicate_keys_are_refused(tmp_path: Path, cloudnn_home: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(
        "name: dup\ntask: classification\nmodel: {type: mlp}\n"
        "data: {train: s3://b/t.csv}\n"
        "train:\n  epochs: 5\n  batch_size: 8\n  epochs: 50\n"
    )
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert info.value.field == "spec.yaml:8:3"
    assert info.value.reason == "duplicate key 'epochs' (first at line 6)"
    proc = cli(["validate", str(path)], cloudnn_home)
    assert_user_error(proc, "spec.yaml:8:3", "duplicate key 'epochs'")


def test_duplicate_keys_in_flow_mappings_and_merges(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("name: a\nmodel: {type: mlp, type: cnn}\n")
    with pytest.raises(SpecError, match="duplicate key 'type'"):
        load_spec(path)
    # a merge key's values may be overridden: that is what merges are for
    path.write_text(
        "base: &b {epochs: 1, batch_size: 8}\n"
        "name: merged\ntask: classification\nmodel: {type: mlp}\n"
        "data: {train: s3://b/t.csv}\ntrain:\n  <<: *b\n  epochs: 3\n"
    )
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert info.value.field == "base"  # unknown key, not a duplicate


# ------------------------------------------------------------ not UTF-8


@pytest.mark.parametrize("command", ["validate", "plan"])
@pytest.mark.parametrize(
    ("content", "reason", "hint"),
    [
        ("name: demo\ntask: regression\n".encode("utf-16"), "UTF-16", "iconv"),
        (bytes(range(256)) * 4, "not a UTF-8 text file", "UTF-8"),
        (b"name: caf\xe9\n", "byte 0xe9 at offset 9", "UTF-8"),
    ],
    ids=["utf16", "binary", "latin1"],
)
def test_spec_file_not_utf8(
    command: str,
    content: bytes,
    reason: str,
    hint: str,
    tmp_path: Path,
    cloudnn_home: Path,
) -> None:
    path = tmp_path / "spec.yaml"
    path.write_bytes(content)
    proc = cli([command, str(path)], cloudnn_home)
    assert_user_error(proc, str(path), reason)
    assert hint in proc.stderr.splitlines()[1]
    assert "UnicodeDecodeError" not in proc.stderr


# ------------------------------------------------- machine-bound values


def _write(tmp_path: Path, raw: dict[str, Any]) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_processes_beyond_the_cores_are_refused_at_plan_time(
    tmp_path: Path, train_csv: Path, cloudnn_home: Path
) -> None:
    """Needs the local backend to call datacheck.check_local_resources."""
    raw = with_(base(train_csv), "resources.processes_per_node", 100000)
    spec = _write(tmp_path, raw)
    for args in (["plan", str(spec), "--provider", "local"], ["train", str(spec)]):
        proc = cli(args, cloudnn_home)
        assert_user_error(proc, "resources.processes_per_node", "CPU core")
    assert not (cloudnn_home / "runs").exists()


def test_a_model_beyond_memory_is_refused_at_plan_time(
    tmp_path: Path, train_csv: Path, cloudnn_home: Path
) -> None:
    """Needs the local backend to call datacheck.check_local_resources."""
    raw = with_(base(train_csv), "model.hidden_sizes", [100_000_000_000])
    spec = _write(tmp_path, raw)
    proc = cli(["train", str(spec)], cloudnn_home)
    assert_user_error(proc, "model.hidden_sizes", "parameters")
    assert not (cloudnn_home / "runs").exists()
