"""The event engine on labelled synthetic workflows (stage 1), config and replay CLI."""

from __future__ import annotations

import copy
import csv
from pathlib import Path

import pytest

from agent.cli import main
from agent.config import config_from_dict, load_config
from agent.errors import ConfigError
from agent.events.cascade import EventEngine
from agent.events.config import EventsConfig, EventSourceConfig
from agent.events.types import EventPoint
from agent.sinks import MemorySink
from agent.synthetic_events import ANOMALY_TYPES, accepts, generate_events, write_events_csv
from agent.types import AlertEvent

ROOT = Path(__file__).resolve().parents[3]


def test_generator_labels_and_validity() -> None:
    s = generate_events(4000, seed=3, anomalies=ANOMALY_TYPES)
    assert len(s.events) == len(s.labels) == 4000
    assert {lab for lab in s.labels} - {""} <= set(ANOMALY_TYPES)
    assert accepts("changeover", ["CHANGEOVER_START", "LINE_STOP", "GUARD_OPEN",
                                  "TOOL_CHANGE", "GUARD_CLOSE", "FORMAT_SELECT",
                                  "LINE_START", "CHANGEOVER_END"])
    assert not accepts("changeover", ["CHANGEOVER_START", "GUARD_OPEN"])
    assert generate_events(500, seed=3).events == generate_events(500, seed=3).events


def _engine(**kw: object) -> tuple[EventEngine, MemorySink]:
    sink = MemorySink()
    cfg = EventsConfig(sources=(EventSourceConfig("plc1"),))
    return EventEngine(cfg, sinks=[sink], **kw), sink  # type: ignore[arg-type]


def test_stage1_finds_unknown_events_and_alerts_carry_the_event() -> None:
    eng, sink = _engine()
    warm = generate_events(8000, seed=100)
    for t, e in zip(warm.ts, warm.events, strict=True):
        eng.learn_only(EventPoint(t - 1e6, "plc1", e))
    test = generate_events(6000, seed=1, anomalies=("unknown_event",))
    flagged = [eng.process(EventPoint(t, "plc1", e)).flagged
               for t, e in zip(test.ts, test.events, strict=True)]
    labels = [lab == "unknown_event" for lab in test.labels]
    assert sum(labels) > 10
    assert all(f for f, lab in zip(flagged, labels, strict=True) if lab)  # recall 1
    fp = sum(f and not lab for f, lab in zip(flagged, labels, strict=True))
    assert fp / len(flagged) < 0.01
    raised = [a for a in sink.alerts if a.event is AlertEvent.RAISE]
    assert raised and raised[0].extra["reason"] == "new_value"
    rec = raised[0].to_dict()
    assert rec["event"] == "raise" and rec["unexpected_event"].startswith("ALM_")
    assert "expected_top_k" in rec


def test_rejects_are_counted() -> None:
    eng, _ = _engine()
    eng.process(EventPoint(10.0, "plc1", "A"))
    eng.process(EventPoint(10.0, "plc1", "B"))  # equal stamps are fine for events
    eng.process(EventPoint(5.0, "plc1", "C"))
    eng.process(EventPoint(11.0, "nope", "C"))
    eng.process(EventPoint(12.0, "plc1", " "))
    eng.process(EventPoint(13.0, "plc1", "x" * 1000))
    assert eng.rejects.as_dict() == {"empty_event": 1, "event_too_long": 1,
                                     "out_of_order": 1, "unknown_source": 1}


def test_state_round_trip() -> None:
    eng, _ = _engine()
    s = generate_events(1000, seed=2)
    for t, e in zip(s.ts, s.events, strict=True):
        eng.process(EventPoint(t, "plc1", e))
    other, _ = _engine()
    other.load_state(copy.deepcopy(eng.state_dict()))
    p = EventPoint(s.ts[-1] + 1, "plc1", "NEVER_SEEN")
    assert other.process(p).score == eng.process(p).score


def test_config_section() -> None:
    cfg = load_config(ROOT / "configs" / "default.yaml")
    assert cfg.events.sources[0].id == "plc1"
    assert load_config(ROOT / "configs" / "events.yaml").events.sources
    with pytest.raises(ConfigError, match=r"events\.sequence\.top_k: must be >= 3"):
        config_from_dict({"events": {"sequence": {"top_k": 2}}})
    with pytest.raises(ConfigError, match=r"events\.alerts\.k"):
        config_from_dict({"events": {"alerts": {"k": 3, "n": 2}}})
    with pytest.raises(ConfigError, match=r"events\.sources\[0\]\.kind"):
        config_from_dict({"events": {"sources": [{"id": "a", "kind": "audio"}]}})


def test_replay_kind_events(tmp_path: Path) -> None:
    data = tmp_path / "ev.csv"
    write_events_csv(str(data), [generate_events(1500, seed=4, anomalies=("unknown_event",))])
    cfg = tmp_path / "c.yaml"
    cfg.write_text("events:\n  sources:\n    - id: plc1\n")
    out, alerts = tmp_path / "scores.csv", tmp_path / "alerts.jsonl"
    assert main(["replay", "--kind", "events", "--config", str(cfg), "--input", str(data),
                 "--scores", str(out), "--alerts", str(alerts)]) == 0
    with out.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 1500 and list(rows[0]) == ["timestamp", "score", "stage", "alert",
                                                   "source", "event"]
    assert any(r["alert"] == "1" for r in rows)
    assert "unexpected_event" in alerts.read_text()
    assert main(["replay", "--kind", "logs", "--config", str(cfg), "--input", str(data),
                 "--scores", str(out)]) == 2
