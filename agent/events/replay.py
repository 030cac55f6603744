"""``edge-agent replay --kind events``: an event CSV through the event cascade.

Input: CSV ``timestamp,source,event[,session]`` (a header line is optional; ``timestamp``
is epoch seconds or ISO-8601; a non-empty ``session``, a workflow instance / batch id,
becomes ``attrs["session"]``: the sequence stage keeps one history per session).
Output: one row per input row, the replay contract ``timestamp,score,stage,alert``
followed by ``source,event``. Rows that cannot be used
(bad timestamp, unknown source, ...) get score 0, stage 0 and are counted.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.config import AgentConfig
from agent.errors import InputError, ModelLoadError
from agent.events.cascade import EventEngine
from agent.events.sequence import NextEventModel
from agent.events.types import EventPoint
from agent.payloads import _Reject, parse_timestamp
from agent.sinks import AlertSink


@dataclass
class EventReplayResult:
    rows: list[tuple[str, float, int, int, str, str]]
    stats: dict[str, Any]
    seconds: float


def load_sequence_model(cfg: AgentConfig) -> NextEventModel | None:
    sc = cfg.events.sequence
    if not sc.enabled or not sc.model:
        return None
    model = NextEventModel.from_path(cfg.resolve_path(sc.model), providers=sc.providers,
                                     intra_op_threads=sc.intra_op_threads,
                                     verify_golden=sc.verify_golden, top_k=sc.top_k,
                                     min_prob=sc.min_prob)
    if sc.history is not None and sc.history != model.history:
        raise ModelLoadError(f"events.sequence.history is {sc.history}, the model's is "
                             f"{model.history}")
    return model


def read_event_rows(path: str | Path) -> list[list[str]]:
    p = Path(path)
    try:
        with open(p, newline="", encoding="utf-8") as fh:
            rows = [r for r in csv.reader(fh) if r]
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: cannot read: {exc}") from exc
    if rows and rows[0][0].strip().lower() in ("timestamp", "ts", "time"):
        rows = rows[1:]
    return rows


def replay_events(cfg: AgentConfig, rows: list[list[str]], model: NextEventModel | None = None,
                  sinks: list[AlertSink] | None = None) -> EventReplayResult:
    engine = EventEngine(cfg.events, model=model, sinks=sinks or [], agent_id=cfg.agent.id)
    out = []
    t0 = time.perf_counter()
    for row in rows:
        raw_ts = row[0]
        if len(row) not in (3, 4):
            engine.rejects.reject("bad_csv", f"{len(row)} fields, expected 3 or 4")
            out.append((raw_ts, 0.0, 0, 0, "", ""))
            continue
        try:
            ts, _ = parse_timestamp(raw_ts, 0.0)
        except _Reject as exc:
            engine.rejects.reject(exc.reason, exc.detail)
            out.append((raw_ts, 0.0, 0, 0, row[1], row[2]))
            continue
        session = row[3].strip() if len(row) == 4 else ""
        d = engine.process(EventPoint(ts, row[1].strip(), row[2].strip(),
                                      {"session": session} if session else {}))
        out.append((raw_ts, d.score, int(d.stage), int(d.alert), d.source, d.event))
    return EventReplayResult(out, engine.stats(), time.perf_counter() - t0)


def write_event_scores(path: str | Path, result: EventReplayResult) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["timestamp", "score", "stage", "alert", "source", "event"])
        for ts, s, st, a, src, ev in result.rows:
            w.writerow([ts, f"{s:.6f}", st, a, src, ev])
    tmp.replace(p)


def replay_cli(cfg: AgentConfig, input_path: str, scores: str, alerts: str | None) -> int:
    """The ``--kind events`` branch of ``edge-agent replay`` (single file)."""
    from agent.sinks import JsonlSink

    if not cfg.events.sources:
        raise InputError("the configuration has no events.sources")
    model = load_sequence_model(cfg)
    sinks: list[AlertSink] = [JsonlSink(alerts)] if alerts else []
    try:
        res = replay_events(cfg, read_event_rows(input_path), model, sinks)
    finally:
        for s in sinks:
            s.close()
    write_event_scores(scores, res)
    st = res.stats
    summary = {"events": len(res.rows), "rejected": st["events_rejected"],
               "escalation_rate": round(st["escalation_rate"], 4),
               "alerts": sum(st["alerts"].values()),
               "events_per_s": round(len(res.rows) / res.seconds, 1) if res.seconds else None}
    print(json.dumps({"summary": summary}), file=sys.stderr)
    return 0
