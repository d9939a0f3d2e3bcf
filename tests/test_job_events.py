"""The job-event protocol and one-line failure messages, whatever the exception."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import serving_fixtures as sf

from cloudnn.runtime.events import EVENT_PREFIX, emit, first_line, parse_event

digits_split_csvs = sf.digits_split_csvs


def test_events_round_trip(capsys: pytest.CaptureFixture[str]) -> None:
    emit("epoch", epoch=3, train_loss=0.25)
    line = capsys.readouterr().out.strip()
    assert line.startswith(EVENT_PREFIX)
    assert parse_event("2026-12-01T00:00:00Z algo-1 " + line) == {
        "event": "epoch",
        "epoch": 3,
        "train_loss": 0.25,
    }
    assert parse_event("plain text") is None
    assert parse_event(EVENT_PREFIX + "{broken") is None
    assert parse_event(EVENT_PREFIX + "[1, 2]") is None


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (RuntimeError(), "RuntimeError"),
        (ValueError(""), "ValueError"),
        (ValueError("  \n  "), "ValueError"),
        (KeyError("x"), "KeyError: 'x'"),
        (OSError("first\nsecond"), "OSError: first"),
    ],
)
def test_first_line_never_fails(exc: BaseException, expected: str) -> None:
    assert first_line(exc) == expected


def test_a_model_that_cannot_script_with_no_message_still_finishes(
    tmp_path: Path,
    digits_split_csvs: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import cloudnn.runtime.models as models

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError()  # an exception with an empty message

    monkeypatch.setattr(models, "to_torchscript", refuse)
    spec = sf.digits_spec_dict(
        *digits_split_csvs, {"type": "mlp", "hidden_sizes": [8]}, epochs=1
    )
    model_dir = sf.train_model_dir(tmp_path, spec)
    meta = json.loads((model_dir / "cloudnn_model.json").read_text())
    assert "model.ts" not in meta["artifacts"]
    assert (model_dir / "model.pt").is_file()
    assert json.loads((tmp_path / "output" / "metrics.json").read_text())["headline"]
