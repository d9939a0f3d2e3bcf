"""The `cloudnn` root command: lazy listing, version, error handling, and the
validate / schema / init commands, plus a guard that stays light on imports."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner, Result
from conftest import PYTHON, REPO, cli_env

import cloudnn
from cloudnn.cli.main import COMMANDS, cli
from cloudnn.errors import JobFailedError
from cloudnn.templates import (
    TEMPLATES_ENV,
    copy_init_template,
    list_init_templates,
    templates_root,
)

REQUIRED_COMMANDS = {
    "train",
    "plan",
    "validate",
    "schema",
    "init",
    "runs",
    "evaluate",
    "deploy",
    "endpoints",
    "predict",
    "delete",
    "export",
}
HEAVY = ("torch", "boto3", "botocore", "sagemaker", "azure.ai.ml")
HEAVY += ("google.cloud.aiplatform",)


def _runner() -> CliRunner:
    try:  # click < 8.2 mixes stderr into stdout unless told not to
        return CliRunner(mix_stderr=False)  # type: ignore[call-arg]
    except TypeError:
        return CliRunner()


def invoke(*args: str) -> Result:
    return _runner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    data = tmp_path / "train.csv"
    data.write_text("x,label\n1,0\n2,1\n")
    path = tmp_path / "spec.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "tiny",
                "task": "regression",
                "model": {"type": "mlp"},
                "data": {"train": "train.csv"},
            }
        )
    )
    return path


# ----------------------------------------------------------------- root group


def test_help_lists_every_command() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    assert set(COMMANDS) >= REQUIRED_COMMANDS
    listed = result.stdout.split("Commands:", 1)[1]
    for name, (_module, _attr, short) in COMMANDS.items():
        assert f"  {name} " in listed
        assert short in listed


def test_every_table_entry_resolves_to_a_click_command() -> None:
    import importlib

    for name, (module, attr, _short) in COMMANDS.items():
        command = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command), name
        assert command.name == name


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"cloudnn, version {cloudnn.__version__}"


def test_unknown_command_suggests_and_exits_2() -> None:
    result = invoke("valdate", "x.yaml")
    assert result.exit_code == 2
    assert "Did you mean 'validate'?" in result.stderr


def test_usage_error_keeps_click_exit_code() -> None:
    result = invoke("validate")  # FILE... is required
    assert result.exit_code == 2
    assert "Missing argument" in result.stderr


def _add(monkeypatch: pytest.MonkeyPatch, name: str, exc: BaseException) -> None:
    @click.command(name)
    def raiser() -> None:
        raise exc

    monkeypatch.setitem(cli.commands, name, raiser)


def test_provider_failure_exit_code(monkeypatch: pytest.MonkeyPatch) -> None:
    _add(monkeypatch, "fail", JobFailedError("job x FAILED", hint="read its log"))
    result = invoke("fail")
    assert result.exit_code == 1
    assert result.stderr == "error: job x FAILED\nTo fix: read its log\n"


def test_error_without_hint_prints_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    _add(monkeypatch, "fail", JobFailedError("job x FAILED"))
    result = invoke("fail")
    assert result.stderr == "error: job x FAILED\n"


def test_unexpected_exception_is_an_internal_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _add(monkeypatch, "boom", ZeroDivisionError("division by zero"))
    result = invoke("boom")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "error: internal error: ZeroDivisionError: division by zero",
        "To fix: re-run with --debug and report it",
    ]
    debug = invoke("--debug", "boom")
    assert debug.exit_code == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert "ZeroDivisionError" in debug.stderr


def test_keyboard_interrupt_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    _add(monkeypatch, "slow", KeyboardInterrupt())
    result = invoke("slow")
    assert result.exit_code == 130
    assert result.stderr == "error: interrupted\n"


# ------------------------------------------------------------ validate/schema


def test_validate_ok(spec_file: Path) -> None:
    result = invoke("validate", str(spec_file), str(spec_file))
    assert result.exit_code == 0, result.stderr
    line = f"ok: {spec_file} (tiny, regression, mlp)"
    assert result.stdout.splitlines() == [line, line]
    assert result.stderr == ""


def test_schema_is_json_schema() -> None:
    result = invoke("schema")
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert schema["title"].startswith("cloudnn spec")
    assert "model" in schema["properties"]
    assert {"name", "task", "model", "data"} <= set(schema["required"])


def test_schema_output_file(tmp_path: Path) -> None:
    out = tmp_path / "cloudnn.schema.json"
    result = invoke("schema", "--output", str(out))
    assert result.exit_code == 0
    assert result.stdout == ""
    assert "properties" in json.loads(out.read_text())


# ----------------------------------------------------------------------- init


@pytest.fixture
def fake_templates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "templates"
    starter = root / "init" / "mlp-tabular"
    (starter / "data").mkdir(parents=True)
    (starter / "README.md").write_text("# An MLP on a CSV table\n\nMore text.\n")
    (starter / "spec.yaml").write_text("name: starter\n")
    (starter / "model.py.tmpl").write_text("def build():\n    pass\n")
    (starter / "data" / "train.csv").write_text("x,y\n1,2\n")
    (starter / "__pycache__").mkdir()
    (starter / "__pycache__" / "junk.pyc").write_bytes(b"\0")
    other = root / "init" / "cnn-images"
    other.mkdir()
    (other / "README.md").write_text("\n## A CNN over image folders\n")
    (root / "serving").mkdir()
    monkeypatch.setenv(TEMPLATES_ENV, str(root))
    return root


def test_templates_root_honours_env(fake_templates: Path) -> None:
    assert templates_root() == fake_templates
    assert list_init_templates() == {
        "cnn-images": "A CNN over image folders",
        "mlp-tabular": "An MLP on a CSV table",
    }


def test_templates_root_defaults_to_the_checkout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(TEMPLATES_ENV, raising=False)
    packaged = Path(cloudnn.__file__).parent / "_templates"
    expected = packaged if packaged.is_dir() else REPO / "templates"
    assert templates_root() == expected.resolve()


def test_init_copies_default_template(fake_templates: Path, tmp_path: Path) -> None:
    dest = tmp_path / "proj"
    result = invoke("init", str(dest))
    assert result.exit_code == 0, result.stderr
    files = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*"))
    assert files == ["README.md", "data", "data/train.csv", "model.py", "spec.yaml"]
    assert (dest / "spec.yaml").read_text() == "name: starter\n"
    assert "mlp-tabular" in result.stdout
    assert f"cloudnn validate {dest / 'spec.yaml'}" in result.stdout


def test_init_refuses_to_overwrite(fake_templates: Path, tmp_path: Path) -> None:
    dest = tmp_path / "proj"
    dest.mkdir()
    (dest / "spec.yaml").write_text("mine\n")
    result = invoke("init", str(dest))
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert lines[0] == f"error: {dest}: would overwrite 1 existing file: spec.yaml"
    assert lines[1].startswith("To fix: pass --force")
    # nothing is half-copied
    assert sorted(p.name for p in dest.iterdir()) == ["spec.yaml"]
    assert (dest / "spec.yaml").read_text() == "mine\n"

    forced = invoke("init", str(dest), "--force")
    assert forced.exit_code == 0, forced.stderr
    assert (dest / "spec.yaml").read_text() == "name: starter\n"


def test_init_unknown_template_names_the_others(
    fake_templates: Path, tmp_path: Path
) -> None:
    result = invoke("init", str(tmp_path / "p"), "--template", "mlp-tabluar")
    assert result.exit_code == 2
    first = result.stderr.splitlines()[0]
    assert first.startswith("error: unknown template 'mlp-tabluar'")
    assert "did you mean 'mlp-tabular'?" in first
    assert "available: cnn-images, mlp-tabular" in first
    assert not (tmp_path / "p").exists()


def test_init_list(fake_templates: Path) -> None:
    result = invoke("init", "--list")
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        "cnn-images   A CNN over image folders",
        "mlp-tabular  An MLP on a CSV table (default)",
    ]


def test_init_needs_a_directory(fake_templates: Path) -> None:
    result = invoke("init")
    assert result.exit_code == 2
    assert "DIR" in result.stderr


def test_copy_init_template_api(fake_templates: Path, tmp_path: Path) -> None:
    written = copy_init_template("cnn-images", tmp_path / "c")
    assert written == [tmp_path / "c" / "README.md"]


def test_missing_templates_env_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TEMPLATES_ENV, str(tmp_path / "nowhere"))
    result = invoke("init", "--list")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {TEMPLATES_ENV}=")


# ------------------------------------------------------------ import weight

_PROBE = """
import json, sys
import cloudnn
if sys.argv[1:] != ["--import-only"]:
    from cloudnn.cli.main import main
    try:
        main(sys.argv[1:])
    except SystemExit:
        pass
heavy = {heavy!r}
print("PROBE " + json.dumps({{
    "heavy": sorted(m for m in sys.modules
                    if m in heavy or m.startswith(tuple(h + "." for h in heavy))),
    "pydantic": "pydantic" in sys.modules,
    "commands": sorted(m for m in sys.modules if m.startswith("cloudnn.cli.")
                       and m != "cloudnn.cli.main"),
}}))
"""


def _probe(args: list[str], home: Path) -> dict[str, object]:
    """Run the CLI in a fresh interpreter; report what it left in sys.modules."""
    proc = subprocess.run(
        [PYTHON, "-c", _PROBE.format(heavy=HEAVY), *args],
        capture_output=True,
        text=True,
        env=cli_env(home),
        timeout=120,
    )
    line = next((x for x in proc.stdout.splitlines() if x.startswith("PROBE ")), None)
    assert line is not None, proc.stdout + proc.stderr
    return dict(json.loads(line[len("PROBE ") :]))


def test_import_cloudnn_is_light(cloudnn_home: Path) -> None:
    found = _probe(["--import-only"], cloudnn_home)
    assert found["heavy"] == []


def test_help_is_light(cloudnn_home: Path) -> None:
    found = _probe(["--help"], cloudnn_home)
    assert found["heavy"] == []
    # listing commands imports none of them, nor pydantic
    assert found["commands"] == []
    assert found["pydantic"] is False


def test_validate_is_light(cloudnn_home: Path, spec_file: Path) -> None:
    found = _probe(["validate", str(spec_file)], cloudnn_home)
    assert found["heavy"] == []
    assert found["commands"] == ["cloudnn.cli.validate"]


def test_docs_spec_reference_is_current() -> None:
    """docs/spec.md is generated from the models; regenerate it when they change."""
    from cloudnn.spec import reference_markdown

    current = (REPO / "docs" / "spec.md").read_text(encoding="utf-8")
    assert current == reference_markdown(), (
        "docs/spec.md is stale: run `cloudnn schema --markdown -o docs/spec.md`"
    )


def test_debug_flag_also_works_after_the_command(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntask: classification\n")
    out = subprocess.run(
        [PYTHON, "-m", "cloudnn.cli.main", "validate", str(bad), "--debug"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert out.returncode == 2
    assert "Traceback" in out.stderr
    assert out.stderr.rstrip().splitlines()[-2].startswith("error: ")
