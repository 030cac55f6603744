"""The JSON-lines alert sink: appends, and never glues a record onto a line a crash tore."""

from __future__ import annotations

import json
from pathlib import Path

from agent.sinks import JsonlSink
from agent.types import Alert, AlertEvent, Severity, Stage


def _alert(i: int) -> Alert:
    return Alert(alert_id=f"a{i}", event=AlertEvent.RAISE, seq=i, stream="s",
                 severity=Severity.HIGH, score=0.9, peak_score=0.9, threshold=0.5,
                 stage=Stage.STATISTICAL, channels=("x",), start=1000.0 + i, end=None,
                 ts=1000.0 + i)


def test_appends_one_record_per_line(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    for i in range(2):
        sink = JsonlSink(path)
        sink.emit(_alert(i))
        sink.close()
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert [r["ts"] for r in rows] == [1000.0, 1001.0]


def test_torn_last_line_is_ended_before_the_next_record(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    sink = JsonlSink(path)
    sink.emit(_alert(0))
    sink.close()
    with open(path, "ab") as fh:  # a kill -9 in the middle of a write
        fh.write(b'{"stream":"s","ts":10')
    sink = JsonlSink(path)
    sink.emit(_alert(2))
    sink.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 3
    assert lines[1] == '{"stream":"s","ts":10'
    assert json.loads(lines[2])["ts"] == 1002.0


def test_empty_file_gets_no_blank_line(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.touch()
    sink = JsonlSink(path)
    sink.emit(_alert(0))
    sink.close()
    assert path.read_text().count("\n") == 1
