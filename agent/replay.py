"""``edge-agent replay``: stream CSV files through the full cascade as if they were live.

Contract (other tools rely on it): one output row per input row,
``timestamp,score,stage,alert`` -- the input's timestamp text, the fused score in [0, 1],
the deepest stage that scored the row (0 = not scored: warm-up or rejected), and 0/1
after the alert policy. Score-then-learn, no look-ahead: row t only ever sees rows <= t.
A directory input is walked for ``*.csv`` and mirrored into the output directory, with a
fresh engine (fresh detector state) per file.
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from agent.config import AgentConfig, ChannelConfig, StreamConfig
from agent.csvio import Table
from agent.engine import Engine
from agent.errors import InputError
from agent.onnx_scorer import OnnxModel
from agent.sinks import AlertSink
from agent.types import Point

log = logging.getLogger(__name__)


@dataclass
class ReplayResult:
    path: str
    points: int
    rejected: int
    scored: dict[str, int]
    alerts_raised: int
    seconds: float
    scores: np.ndarray
    stages: np.ndarray
    alerts: np.ndarray
    stats: dict[str, object]

    @property
    def points_per_s(self) -> float:
        return self.points / self.seconds if self.seconds > 0 else float("inf")


def stream_for(config: AgentConfig, table: Table, stream_id: str | None) -> StreamConfig:
    """The stream a table feeds: ``stream_id``, the config's first, or one built from the file."""
    if stream_id is not None:
        s = config.stream(stream_id)
        if s is None:
            raise InputError(f"stream {stream_id!r} is not in the configuration")
        return s
    if config.streams:
        return config.streams[0]
    return StreamConfig(id="replay", channels=tuple(ChannelConfig(c) for c in table.columns))


def config_for_table(config: AgentConfig, table: Table, stream_id: str | None) -> AgentConfig:
    stream = stream_for(config, table, stream_id)
    missing = [c for c in stream.channel_names if c not in table.columns]
    if missing:
        raise InputError(
            f"{table.path}: columns {missing} of stream {stream.id!r} are not in the file "
            f"(it has {table.columns})"
        )
    return replace(config, streams=(stream,))


def replay_table(
    config: AgentConfig,
    table: Table,
    *,
    model: OnnxModel | None = None,
    stream_id: str | None = None,
    warmup_rows: int = 0,
    sinks: list[AlertSink] | None = None,
    progress: Callable[[int], None] | None = None,
) -> ReplayResult:
    """Run one parsed table through a fresh engine; return per-row outputs and stats."""
    cfg = config_for_table(config, table, stream_id)
    stream = cfg.streams[0]
    engine = Engine(cfg, model=model, sinks=sinks or [])
    for reason, count in table.problems.items():
        engine.rejects.reject(reason, f"{table.path}: {table.first_problem[reason]}", count)
    cols = [table.columns.index(c) for c in stream.channel_names]
    values = table.values[:, cols]
    present = table.present[:, cols]
    names = stream.channel_names
    n = len(table.ts)
    scores = np.zeros(n)
    stages = np.zeros(n, dtype=np.int8)
    alerts = np.zeros(n, dtype=np.int8)
    t0 = time.perf_counter()
    # Scored rows go to the engine in blocks (stage 1 runs vectorised over a block's rows:
    # Engine.process_batch, the same decisions as point by point).
    block: list[Point] = []
    where: list[int] = []
    for i in range(n):
        t = table.ts[i]
        if np.isnan(t):  # already counted by the reader
            engine.points_in += 1
        else:
            row, ok = values[i].tolist(), present[i].tolist()
            point = Point(float(t), stream.id,
                          {k: v for k, v, o in zip(names, row, ok, strict=True) if o})
            if i < warmup_rows:
                engine.learn_only(point)
            else:
                block.append(point)
                where.append(i)
        if (i & 1023) == 1023 or i == n - 1:
            for j, d in zip(where, engine.process_batch(block), strict=True):
                scores[j], stages[j], alerts[j] = d.score, int(d.stage), int(d.alert)
            block.clear()
            where.clear()
            if progress is not None and (i & 1023) == 1023:
                progress(1024)
    if progress is not None:
        progress(n & 1023)
    seconds = time.perf_counter() - t0
    st = engine.stats()
    return ReplayResult(
        path=table.path,
        points=n,
        rejected=int(st["points_rejected"]),
        scored=dict(st["scored"]),
        alerts_raised=sum(v for k, v in st["alerts"].items() if not k.startswith("upgraded")),
        seconds=seconds,
        scores=scores,
        stages=stages,
        alerts=alerts,
        stats=st,
    )


def write_scores(path: str | Path, table: Table, result: ReplayResult) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["timestamp", "score", "stage", "alert"])
        for ts, s, st, a in zip(
            table.raw_ts, result.scores.tolist(), result.stages.tolist(), result.alerts.tolist(),
            strict=True,
        ):
            w.writerow([ts, f"{s:.6f}", st, a])
    tmp.replace(p)


def input_files(input_path: Path) -> list[Path]:
    if input_path.is_dir():
        files = sorted(p for p in input_path.rglob("*.csv") if p.is_file())
        if not files:
            raise InputError(f"{input_path}: no *.csv files found")
        return files
    if not input_path.exists():
        raise InputError(f"{input_path}: no such file or directory")
    return [input_path]


def output_for(input_root: Path, scores_root: Path, file: Path) -> Path:
    if input_root.is_dir():
        return scores_root / file.relative_to(input_root)
    return scores_root
