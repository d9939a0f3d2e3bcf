"""Malformed specs through `cloudnn validate`: exact field path, reason, fix hint.

Each case is a valid spec with one thing broken, written to a YAML file and
run through the real CLI. The contract: exit 2, stderr's first line is
``error: <field path>: <reason>``, the second ``To fix: ...``, no traceback.
"""

from __future__ import annotations

import copy
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from conftest import PYTHON, cli_env

from cloudnn.cli.main import cli

Mutation = Callable[[dict[str, Any]], None]


def _runner() -> CliRunner:
    try:  # click < 8.2 mixes stderr into stdout unless told not to
        return CliRunner(mix_stderr=False)  # type: ignore[call-arg]
    except TypeError:
        return CliRunner()


def invoke(*args: str) -> Result:
    return _runner().invoke(cli, list(args), catch_exceptions=False)


def base_spec(data: Path) -> dict[str, Any]:
    return {
        "name": "demo",
        "task": "classification",
        "model": {"type": "mlp", "hidden_sizes": [16], "dropout": 0.1},
        "data": {"train": str(data), "target": "label"},
        "train": {"epochs": 3, "batch_size": 8, "optimizer": {"name": "adam"}},
    }


def set_(path: str, value: Any) -> Mutation:
    """Set a dotted path, creating mappings on the way."""

    def mutate(spec: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = spec
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value

    return mutate


def drop(path: str) -> Mutation:
    def mutate(spec: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = spec
        for key in parents:
            node = node[key]
        del node[last]

    return mutate


def both(*mutations: Mutation) -> Mutation:
    def mutate(spec: dict[str, Any]) -> None:
        for m in mutations:
            m(spec)

    return mutate


@dataclass(frozen=True)
class Case:
    id: str
    field: str  # exact path on the first stderr line
    reason: str  # a substring of what follows "<field>: "
    mutate: Mutation | None = None
    text: str | None = None  # raw file content instead of a mutated spec
    hint: str = ""  # a substring of the "To fix:" line


CASES = [
    # wrong types
    Case("epochs-str", "train.epochs", "valid integer", set_("train.epochs", "ten")),
    Case(
        "batch-size-float",
        "train.batch_size",
        "fractional part",
        set_("train.batch_size", 1.5),
        hint="whole number",
    ),
    Case("dropout-str", "model.dropout", "valid number", set_("model.dropout", "x")),
    Case(
        "data-is-a-string",
        "data",
        "expected a mapping, got str",
        set_("data", "train.csv"),
    ),
    # unknown keys at several depths, and typos
    Case(
        "unknown-top-level",
        "colour",
        "unknown key 'colour'",
        set_("colour", "blue"),
        hint="allowed keys here: data, deploy",
    ),
    Case(
        "unknown-model-key",
        "model.widht",
        "unknown key 'widht'",
        set_("model.widht", 3),
        hint="hidden_sizes",
    ),
    Case(
        "unknown-optimizer-key",
        "train.optimizer.betas",
        "unknown key 'betas'",
        set_("train.optimizer.betas", [0.9, 0.99]),
    ),
    Case(
        "unknown-aws-key",
        "providers.aws.regoin",
        "unknown key 'regoin'",
        set_("providers.aws.regoin", "us-east-1"),
        hint="rename it to `region`",
    ),
    Case(
        "typo-optimzer",
        "train.optimzer",
        "unknown key 'optimzer'",
        set_("train.optimzer", {"lr": 0.01}),
        hint="rename it to `optimizer`",
    ),
    Case(
        "unknown-provider",
        "providers.oracle",
        "unknown key 'oracle'",
        set_("providers.oracle", {}),
        hint="aws, azure, gcp, local",
    ),
    # ranges
    Case(
        "negative-epochs",
        "train.epochs",
        "greater than 0",
        set_("train.epochs", -3),
        hint="greater than 0",
    ),
    Case("zero-epochs", "train.epochs", "greater than 0", set_("train.epochs", 0)),
    Case(
        "lr-zero",
        "train.optimizer.lr",
        "greater than 0",
        set_("train.optimizer.lr", 0),
    ),
    Case(
        "dropout-too-big",
        "model.dropout",
        "less than 1",
        set_("model.dropout", 1.5),
    ),
    Case(
        "port-too-big",
        "deploy.port",
        "less than or equal to 65535",
        set_("deploy.port", 70000),
        hint="at most 65535",
    ),
    Case(
        "autoscaling-max-below-min",
        "deploy.autoscaling.max_replicas",
        "must be >= min_replicas",
        set_("deploy.autoscaling", {"min_replicas": 3, "max_replicas": 1}),
        hint="at least 3",
    ),
    # model
    Case(
        "unknown-model-type",
        "model.type",
        "unknown model type 'resnet'",
        set_("model", {"type": "resnet"}),
        hint="mlp, cnn, rnn, transformer",
    ),
    Case(
        "model-without-type",
        "model",
        "needs one of `type`, `module` or `script`",
        set_("model", {"hidden_sizes": [8]}),
    ),
    Case(
        "bad-module-path",
        "model.module",
        "not of the form 'package.module:factory'",
        set_("model", {"module": "mynets.build"}),
        hint="mynets.mlp:build",
    ),
    Case(
        "transformer-without-text",
        "data.text",
        "needs data.text",
        set_("model", {"type": "transformer"}),
        hint="text: {column:",
    ),
    Case(
        "nhead-does-not-divide",
        "model.nhead",
        "divisible by nhead (3)",
        both(
            set_("model", {"type": "transformer", "d_model": 10, "nhead": 3}),
            set_("data.text", {"column": "label"}),
        ),
        hint="1, 2, 5, 10",
    ),
    # resources and deploy
    Case(
        "unknown-accelerator",
        "resources.accelerator",
        "unknown accelerator 'Z100'",
        set_("resources.accelerator", "Z100:1"),
        hint="'T4:1'",
    ),
    Case(
        "unknown-deploy-accelerator",
        "deploy.accelerator",
        "unknown accelerator 'T5' (did you mean T4?)",
        set_("deploy.accelerator", "T5"),
    ),
    Case(
        "accelerator-count-zero",
        "resources.accelerator",
        "count '0' must be a positive integer",
        set_("resources.accelerator", "T4:0"),
        hint="T4:1",
    ),
    Case(
        "max-runtime-soon",
        "resources.max_runtime",
        "'soon' is not a duration",
        set_("resources.max_runtime", "soon"),
        hint="'2h'",
    ),
    Case(
        "spot-without-checkpoint",
        "resources.spot",
        "needs train.checkpoint.enabled",
        both(
            set_("resources.spot", True),
            set_("train.checkpoint", {"enabled": False}),
        ),
        hint="train.checkpoint.enabled: true",
    ),
    Case(
        "unknown-scheduler",
        "train.scheduler.name",
        "'cosine'",
        set_("train.scheduler", {"name": "cosin"}),
        hint="did you mean 'cosine'?",
    ),
    # providers
    Case(
        "bad-aws-region",
        "providers.aws.region",
        "'useast1' does not match",
        set_("providers.aws", {"region": "useast1"}),
        hint="us-east-1",
    ),
    Case(
        "bad-role-arn",
        "providers.aws.role_arn",
        "does not match",
        set_("providers.aws", {"role_arn": "arn:aws:iam::123:role/x"}),
        hint="12-digit account id",
    ),
    Case(
        "bad-bucket",
        "providers.aws.bucket",
        "'My_Bucket' does not match",
        set_("providers.aws", {"bucket": "My_Bucket"}),
        hint="S3 bucket name",
    ),
    # top-level fields
    Case(
        "missing-data-file",
        "data.train",
        "no such file or directory",
        set_("data.train", "nope.csv"),
        hint="spec file's folder",
    ),
    Case("missing-name", "name", "required field is missing", drop("name")),
    Case(
        "name-uppercase",
        "name",
        "'Demo' does not match",
        set_("name", "Demo"),
        hint="use 'demo'",
    ),
    Case(
        "name-underscore",
        "name",
        "'my_model' does not match",
        set_("name", "my_model"),
        hint="use 'my-model'",
    ),
    Case("missing-task", "task", "required field is missing", drop("task")),
    Case(
        "wrong-task",
        "task",
        "'classification' or 'regression'",
        set_("task", "clustering"),
    ),
    Case(
        "version-2",
        "version",
        "unsupported spec version 2",
        set_("version", 2),
        hint="version: 1",
    ),
    Case(
        "label-smoothing-regression",
        "train.label_smoothing",
        "classification only",
        both(set_("task", "regression"), set_("train.label_smoothing", 0.1)),
    ),
    # values that validate in YAML but cannot run
    Case(
        "lr-infinite",
        "train.optimizer.lr",
        "must be a finite number",
        set_("train.optimizer.lr", float("inf")),
        hint=".inf",
    ),
    Case(
        "max-wait-nan",
        "deploy.batching.max_wait_ms",
        "must be a finite number",
        set_("deploy.batching", {"max_wait_ms": float("nan")}),
    ),
    Case(
        "loss-does-not-suit-task",
        "train.loss",
        "'cross_entropy' is a classification loss",
        both(set_("task", "regression"), set_("train.loss", "cross_entropy")),
        hint="mse, mae or huber",
    ),
    Case(
        "target-in-features",
        "data.features",
        "lists the target column 'label'",
        set_("data.features", ["a", "label"]),
        hint="remove 'label'",
    ),
    Case(
        "processes-not-a-number",
        "resources.processes_per_node",
        "valid integer",
        set_("resources.processes_per_node", "many"),
    ),
    # not a spec at all
    Case(
        "duplicate-key",
        "spec.yaml:2:1",
        "duplicate key 'name' (first at line 1)",
        text="name: demo\nname: other\n",
        hint="remove one of the two",
    ),
    Case(
        "yaml-tab",
        "spec.yaml:3:1",
        "invalid YAML",
        text="name: demo\nmodel:\n\ttype: mlp\n",
        hint="spaces",
    ),
    Case(
        "yaml-bad-indent",
        "spec.yaml:4:3",
        "invalid YAML",
        text="name: demo\nmodel:\n    type: mlp\n  hidden_sizes: [4]\n",
    ),
    Case(
        "top-level-list",
        "<spec>",
        "expected a mapping at the top level, got list",
        text="- name: demo\n- task: regression\n",
    ),
    Case(
        "empty-file",
        "<spec>",
        "got an empty file",
        text="",
    ),
]


@pytest.fixture
def train_csv(tmp_path: Path) -> Path:
    path = tmp_path / "train.csv"
    path.write_text("a,b,label\n1,2,0\n3,4,1\n")
    return path


def write_case(case: Case, folder: Path, data: Path) -> Path:
    path = folder / "spec.yaml"
    if case.text is not None:
        path.write_text(case.text)
        return path
    assert case.mutate is not None
    spec = copy.deepcopy(base_spec(data))
    case.mutate(spec)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_enough_cases() -> None:
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_malformed_spec(case: Case, tmp_path: Path, train_csv: Path) -> None:
    spec = write_case(case, tmp_path, train_csv)
    result = invoke("validate", str(spec))

    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) >= 2, result.stderr
    prefix = f"error: {case.field}: "
    assert lines[0].startswith(prefix), lines[0]
    assert case.reason in lines[0][len(prefix) :], lines[0]
    assert lines[1].startswith("To fix: "), lines[1]
    assert len(lines[1]) > len("To fix: ") + 5
    assert case.hint in lines[1], lines[1]
    assert "Traceback" not in result.output
    assert "ok:" not in result.stdout


def test_the_valid_base_spec_passes(tmp_path: Path, train_csv: Path) -> None:
    """Guards the cases above: each fails for its own reason, not the base's."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(base_spec(train_csv)))
    result = invoke("validate", str(spec))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"ok: {spec} (demo, classification, mlp)\n"


def test_first_error_stops_validate(tmp_path: Path, train_csv: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(base_spec(train_csv)))
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**base_spec(train_csv), "task": "clustering"}))
    result = invoke("validate", str(good), str(bad), str(good))
    assert result.exit_code == 2
    assert result.stdout.count("ok:") == 1
    assert result.stderr.startswith("error: task: ")


def test_missing_spec_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = invoke("validate", str(missing))
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == f"error: {missing}: no such spec file"


def test_debug_shows_traceback_and_every_error(tmp_path: Path, train_csv: Path) -> None:
    spec = base_spec(train_csv)
    spec["train"].update(epochs=0, batch_size=1.5)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))

    plain = invoke("validate", str(path))
    assert plain.exit_code == 2
    assert "Traceback" not in plain.output
    assert "(+1 more; --debug lists all)" in plain.stderr

    debug = invoke("--debug", "validate", str(path))
    assert debug.exit_code == 2
    assert "Traceback (most recent call last)" in debug.stderr
    assert "  - train.epochs: " in debug.stderr
    assert "  - train.batch_size: " in debug.stderr
    # the one-line error still ends the output, where the eye lands
    assert debug.stderr.splitlines()[-2].startswith("error: train.epochs: ")
    assert debug.stderr.splitlines()[-1].startswith("To fix: ")


def test_debug_env_var(
    tmp_path: Path, train_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**base_spec(train_csv), "version": 2}))
    monkeypatch.setenv("CLOUDNN_DEBUG", "1")
    result = invoke("validate", str(path))
    assert result.exit_code == 2
    assert "Traceback" in result.stderr


@pytest.mark.parametrize("case_id", ["typo-optimzer", "yaml-tab"])
def test_malformed_spec_subprocess(
    case_id: str, tmp_path: Path, train_csv: Path, cloudnn_home: Path
) -> None:
    """The real entry point: stderr and exit code as a shell sees them."""
    case = next(c for c in CASES if c.id == case_id)
    spec = write_case(case, tmp_path, train_csv)
    proc = subprocess.run(
        [PYTHON, "-m", "cloudnn.cli.main", "validate", str(spec)],
        capture_output=True,
        text=True,
        env=cli_env(cloudnn_home),
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0].startswith(f"error: {case.field}: ")
    assert lines[1].startswith("To fix: ")
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
