"""LogStream on labelled synthetic logs, template state across restarts, replay --kind logs."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
from pathlib import Path

import pytest

from agent.cli import main
from agent.config import load_config
from agent.events.config import EventsConfig, EventSourceConfig, LogsConfig
from agent.logs.stream import LogStream
from agent.sinks import MemorySink
from agent.synthetic_logs import LOG_ANOMALY_TYPES, generate_logs
from agent.types import AlertEvent

ROOT = Path(__file__).resolve().parents[3]


def _cfg(**logs: object) -> EventsConfig:
    return EventsConfig(sources=(EventSourceConfig("plc1", kind="logs"),),
                        logs=LogsConfig(similarity=0.6, **logs))  # type: ignore[arg-type]


def _warm(stream: LogStream, n: int = 8000) -> None:
    for line in generate_logs(n, seed=100).lines:
        stream.learn_line("plc1", line)


def test_generator_labels_templates_and_determinism() -> None:
    s = generate_logs(3000, seed=5, anomalies=LOG_ANOMALY_TYPES)
    assert len(s.lines) == len(s.labels) == len(s.templates) == 3000
    assert set(s.labels) - {""} <= set(LOG_ANOMALY_TYPES)
    assert generate_logs(400, seed=5).lines == generate_logs(400, seed=5).lines
    assert all(" job=" in ln for ln, t in zip(s.lines, s.templates, strict=True)
               if t == "BATCH_START")


def test_unseen_templates_and_error_bursts_are_flagged_with_template_in_alert() -> None:
    sink = MemorySink()
    stream = LogStream(_cfg(), sinks=[sink])
    _warm(stream)
    test = generate_logs(6000, seed=1, anomalies=("unknown_event", "error_burst"))
    out = [stream.process_line("plc1", ln) for ln in test.lines]
    flags = [o.decision is not None and o.decision.flagged for o in out]
    unknown = [f for f, lab in zip(flags, test.labels, strict=True) if lab == "unknown_event"]
    burst = [f for f, lab in zip(flags, test.labels, strict=True) if lab == "error_burst"]
    assert len(unknown) >= 10 and all(unknown)
    assert len(burst) >= 20 and sum(burst) / len(burst) > 0.5
    normal = [f for f, lab in zip(flags, test.labels, strict=True) if not lab]
    assert sum(normal) / len(normal) < 0.02
    raised = [a for a in sink.alerts if a.event is AlertEvent.RAISE]
    rec = next(a.to_dict() for a in raised if a.extra.get("reason") == "new_value")
    assert rec["template"].startswith("Alarm <*> raised:") or "Alarm" in rec["template"]
    assert rec["unexpected_event"].startswith("T") and rec["level"] in ("ERROR", "WARN")
    assert stream.stats()["templates"] < 200


def test_timestamps_continuations_and_limits_are_counted() -> None:
    stream = LogStream(_cfg(max_line_chars=100, max_tokens=8))
    a = stream.process_line("plc1", "2024-05-01T12:00:10Z INFO a: first line")
    b = stream.process_line("plc1", "2024-05-01T12:00:05Z INFO a: earlier line")
    c = stream.process_line("plc1", "no timestamp here")
    d = stream.process_line("plc1", "\tat Foo.bar(Foo.java:1)")
    e = stream.process_line("plc1", "2024-05-01T12:00:11Z INFO a: " + "x" * 100)
    f = stream.process_line("plc1", "2024-05-01T12:00:12Z INFO a: 1 2 3 4 5 6 7 8 9")
    assert a.ts == b.ts == c.ts == 1714564810.0 and b.decision is not None
    assert d.skipped == "continuation" and d.decision is None
    assert (e.skipped, f.skipped) == ("line_too_long", "too_many_tokens")
    s = stream.stats()
    assert (s["ts_clamped"], s["no_timestamp"], s["continuation"], s["unformatted"]) == (
        1, 1, 1, 1)
    templates = stream.stats()["templates"]
    for i in range(50):  # unknown sources: rejected before mining, nothing kept per name
        assert stream.process_line(f"src{i}", "2024-05-01T12:00:13Z INFO a: new words "
                                   f"w{i}x").skipped == "unknown_source"
    assert len(stream._last_ts) == 1 and stream.stats()["templates"] == templates == 3
    assert stream.engine.stats()["rejected"] == {"line_too_long": 1, "too_many_tokens": 1,
                                                 "unknown_source": 50}


def test_templates_survive_a_restart_and_bad_state_starts_fresh(tmp_path: Path) -> None:
    state = tmp_path / "templates.json"
    first = LogStream(_cfg(save_every=0), state_path=state)
    lines = generate_logs(2000, seed=2).lines
    ids = [first.process_line("plc1", ln).template_id for ln in lines]
    first.close()
    assert json.loads(state.read_text())["format"] == "edge-agent/log-templates"
    again = LogStream(_cfg(save_every=0), state_path=state)
    assert again.stats()["templates"] == first.stats()["templates"]
    more = generate_logs(300, seed=3).lines
    assert [again.process_line("plc1", ln).template_id for ln in more] == [
        first.process_line("plc1", ln).template_id for ln in more]
    assert set(ids) >= {again.process_line("plc1", ln).template_id for ln in lines[:200]}

    good = state.read_bytes()
    doc = json.loads(good)
    bad_cluster = dict(doc, payload=dict(doc["payload"], clusters=[["T1", ["a b"], 1]]))
    bad_cluster["sha256"] = hashlib.sha256(json.dumps(
        bad_cluster["payload"], sort_keys=True, separators=(",", ":"),
        ensure_ascii=False).encode()).hexdigest()
    damaged = [good[: len(good) // 2], good.replace(b'"version":1', b'"version":9', 1),
               json.dumps(bad_cluster).encode(),
               good.replace(b"Batch", b"Botch", 1), b"\x00\xff garbage", b"[]",
               good.replace(b'"similarity":0.6', b'"similarity":0.7', 1)]
    for blob in damaged:
        state.write_bytes(blob)
        s = LogStream(_cfg(save_every=0), state_path=state)
        assert s.stats()["templates"] == 0
        assert s.engine.stats()["rejected"] == {"state_rejected": 1}
        out = s.process_line("plc1", lines[0])  # works from scratch
        assert out.decision is not None and out.template_id == ids[0]


def test_periodic_save(tmp_path: Path) -> None:
    state = tmp_path / "t.json"
    stream = LogStream(_cfg(save_every=50), state_path=state)
    for ln in generate_logs(49, seed=4).lines:
        stream.process_line("plc1", ln)
    assert not state.exists()
    stream.process_line("plc1", "2024-05-01T12:00:00Z INFO a: one more")
    assert state.exists() and not state.with_name("t.json.tmp").exists()


def _write_cfg(tmp_path: Path, extra: str = "") -> Path:
    cfg = tmp_path / "logs.yaml"
    cfg.write_text("events:\n  sources:\n    - id: plc1\n      kind: logs\n"
                   "    - id: pump\n      kind: logs\n"
                   f"  logs:\n    similarity: 0.6\n{extra}")
    return cfg


def test_replay_kind_logs_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "plc1.log"
    logs = generate_logs(3000, seed=6, anomalies=("unknown_event",))
    data.write_text("\n".join([*logs.lines, "\tat X.y(X.java:1)", "z" * 5000]) + "\n")
    state = tmp_path / "state" / "templates.json"
    cfg = _write_cfg(tmp_path, f"    state_path: {state}\n")
    out, alerts = tmp_path / "scores.csv", tmp_path / "alerts.jsonl"
    assert main(["replay", "--kind", "logs", "--config", str(cfg), "--input", str(data),
                 "--scores", str(out), "--alerts", str(alerts), "--warmup-rows", "500"]) == 0
    with out.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3002
    assert list(rows[0]) == ["timestamp", "score", "stage", "alert", "source", "event",
                             "template"]
    assert rows[0]["timestamp"] == logs.lines[0].split()[0] and rows[0]["stage"] == "0"
    assert all(r["stage"] == "0" for r in rows[:500]) and rows[0]["event"].startswith("T")
    scored = rows[500:3000]
    assert all(r["stage"] != "0" for r in scored[300:])
    hits = [r for r, lab in zip(scored, logs.labels[500:], strict=True) if lab]
    assert hits and all(float(r["score"]) >= 0.5 for r in hits)
    assert rows[-1]["stage"] == rows[-2]["stage"] == "0"
    recs = [json.loads(x) for x in alerts.read_text().splitlines()]
    assert any(r["event"] == "raise" and "template" in r and "level" in r for r in recs)
    summary = json.loads(capsys.readouterr().err.strip().splitlines()[-1])["summary"]
    assert summary["lines"] == 3002 and summary["continuation"] == 1
    assert summary["rejected_by_reason"] == {"line_too_long": 1}
    assert state.exists()
    assert json.loads(state.read_text())["payload"]["clusters"]


def test_replay_kind_logs_directory_and_errors(tmp_path: Path) -> None:
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    generate_logs(400, seed=7, source="pump").write(str(d / "sub" / "pump.log"))
    generate_logs(300, seed=8).write(str(d / "other.log"))
    cfg = _write_cfg(tmp_path)
    out = tmp_path / "out"
    assert main(["replay", "--kind", "logs", "--config", str(cfg), "--input", str(d),
                 "--scores", str(out)]) == 0
    with (out / "sub" / "pump.csv").open() as f1, (out / "other.csv").open() as f2:
        pump, other = list(csv.DictReader(f1)), list(csv.DictReader(f2))
    assert len(pump) == 400 and {r["source"] for r in pump} == {"pump"}
    assert len(other) == 300 and {r["source"] for r in other} == {"plc1"}
    events_cfg = ROOT / "configs" / "events.yaml"
    assert main(["replay", "--kind", "logs", "--config", str(events_cfg), "--input",
                 str(d / "other.log"), "--scores", str(tmp_path / "x.csv")]) == 2
    assert main(["replay", "--kind", "logs", "--config", str(cfg), "--input",
                 str(tmp_path / "missing.log"), "--scores", str(tmp_path / "x.csv")]) == 2
    assert main(["replay", "--kind", "logs", "--config", str(cfg), "--input", str(d),
                 "--scores", str(tmp_path / "x.csv"), "--stream", "nope"]) == 2


def test_shipped_logs_config_loads() -> None:
    cfg = load_config(ROOT / "configs" / "logs.yaml")
    assert cfg.events.sources[0].kind == "logs"
    assert cfg.events.logs.session_pattern == r"job=(\S+)"


def test_alerts_name_the_templates_the_model_expected() -> None:
    from agent.logs.miner import TemplateMiner
    from agent.logs.stream import TemplateSink
    from agent.types import Alert, Severity, Stage

    miner = TemplateMiner()
    a = miner.add("pump started at 1200 rpm").cluster_id
    b = miner.add("valve opened after 3ms").cluster_id
    inner = MemorySink()
    sink = TemplateSink(miner, [inner])
    base = Alert("id", AlertEvent.RAISE, 1, "plc1", Severity.HIGH, 0.8, 0.8, 0.5, Stage.ONNX,
                 (), 1.0, None, 1.0, {"expected_top_k": [a, b, "Tgone"]})
    sink.emit(base)
    sink.emit(dataclasses.replace(base, extra={}))
    assert inner.alerts[0].extra["expected_templates"] == [
        "pump started at <NUM> rpm", "valve opened after <DUR>", None]
    assert "expected_templates" not in inner.alerts[1].extra
