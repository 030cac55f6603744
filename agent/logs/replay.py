"""``edge-agent replay --kind logs``: log files through the template miner and event cascade.

Input: a text file of log lines (any layout :mod:`agent.logs.parse` knows, or the
configured ``events.logs.line_format``), or a directory: every ``*.log`` file under it
is replayed with a fresh event engine (the templates are shared, as on a gateway) and
its scores are written to the same relative path under ``--scores``. The source is
``--stream`` if given, else the log source named like the file (``pump.log`` ->
``pump``), else the first ``kind: logs`` source.

Output: one row per input line, the replay contract ``timestamp,score,stage,alert``
followed by ``source,event,template`` like ``--kind events`` (``event`` is the template
id). ``timestamp`` is the line's own timestamp text, else the epoch seconds used.
Lines that are not scored (continuations, rejects, warm-up) get score 0 and stage 0.
With ``events.logs.state_path`` the templates are loaded before and saved after.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.config import AgentConfig
from agent.errors import InputError
from agent.events.cascade import EventEngine
from agent.events.replay import load_sequence_model
from agent.events.sequence import NextEventModel
from agent.logs.stream import LogOutcome, LogStream, TemplateSink, miner_from_config
from agent.sinks import AlertSink

Row = tuple[str, float, int, int, str, str, str]


@dataclass
class LogReplayResult:
    rows: list[Row] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def input_log_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.log") if p.is_file())
        if not files:
            raise InputError(f"{path}: no *.log files found")
        return files
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    return [path]


def read_lines(path: Path) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace", newline="") as fh:
            return [line.rstrip("\r\n") for line in fh]
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc}") from exc


def source_for(cfg: AgentConfig, file: Path, stream: str | None) -> str:
    logs = [s.id for s in cfg.events.sources if s.kind == "logs"]
    if not logs:
        raise InputError("the configuration has no events.sources of kind logs")
    if stream is not None:
        if stream not in logs:
            raise InputError(f"--stream {stream!r} is not a logs source (have {logs})")
        return stream
    return file.stem if file.stem in logs else logs[0]


def _row(o: LogOutcome) -> Row:
    ts = o.ts_text or (f"{o.ts:.3f}" if o.ts else "")
    return (ts, o.score, o.stage, int(o.alert), o.source, o.template_id, o.template)


def replay_lines(stream: LogStream, source: str, lines: list[str],
                 warmup: int = 0) -> LogReplayResult:
    res = LogReplayResult()
    t0 = time.perf_counter()
    for i, line in enumerate(lines):
        if i < warmup:
            o = stream.learn_line(source, line)
            res.rows.append((_row(o)[0], 0.0, 0, 0, source, o.template_id, o.template))
            continue
        res.rows.append(_row(stream.process_line(source, line)))
    res.seconds = time.perf_counter() - t0
    res.stats = {**stream.engine.stats(), "logs": stream.stats()}
    return res


def write_log_scores(path: Path, result: LogReplayResult) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["timestamp", "score", "stage", "alert", "source", "event", "template"])
        for ts, s, st, a, src, ev, tpl in result.rows:
            w.writerow([ts, f"{s:.6f}", st, a, src, ev, tpl])
    tmp.replace(path)


def replay_logs_cli(cfg: AgentConfig, input_path: str, scores: str, alerts: str | None,
                    stream_id: str | None = None, warmup_rows: int = 0) -> int:
    """The ``--kind logs`` branch of ``edge-agent replay``."""
    from agent.sinks import JsonlSink

    in_root, out_root = Path(input_path), Path(scores)
    files = input_log_files(in_root)
    if in_root.is_dir() and out_root.exists() and not out_root.is_dir():
        raise InputError(f"--scores {out_root}: must be a directory when --input is one")
    sources = [source_for(cfg, f, stream_id) for f in files]
    model: NextEventModel | None = load_sequence_model(cfg)
    lc = cfg.events.logs
    state = cfg.resolve_path(lc.state_path) if lc.state_path else None
    miner = miner_from_config(cfg.events)
    sinks: list[AlertSink] = [JsonlSink(alerts)] if alerts else []
    totals: dict[str, Any] = {"files": len(files), "lines": 0, "scored": 0, "rejected": 0,
                              "continuation": 0, "alerts": 0}
    seconds = 0.0
    stream: LogStream | None = None
    try:
        for f, source in zip(files, sources, strict=True):
            engine = EventEngine(cfg.events, model=model, sinks=[TemplateSink(miner, sinks)],
                                 agent_id=cfg.agent.id)
            stream = LogStream(cfg.events, engine, miner=miner,
                               state_path=state if stream is None else None)
            stream.state_path = state
            res = replay_lines(stream, source, read_lines(f), warmup_rows)
            out = out_root / f.relative_to(in_root) if in_root.is_dir() else out_root
            write_log_scores(out.with_suffix(".csv") if in_root.is_dir() else out, res)
            st = res.stats
            totals["lines"] += len(res.rows)
            totals["scored"] += sum(1 for r in res.rows if r[2] > 0)
            totals["rejected"] += st["events_rejected"]
            totals["continuation"] += st["logs"].get("continuation", 0)
            totals["alerts"] += sum(st["alerts"].values())
            seconds += res.seconds
            if len(files) == 1:
                totals["escalation_rate"] = round(st["escalation_rate"], 4)
                totals["rejected_by_reason"] = st["rejected"]
    finally:
        if stream is not None:
            stream.close()
        for s in sinks:
            s.close()
    totals["templates"] = len(miner.clusters)
    totals["lines_per_s"] = round(totals["lines"] / seconds, 1) if seconds else None
    print(json.dumps({"summary": totals}), file=sys.stderr)
    return 0
