"""Raw log lines -> events of the event cascade (transport-agnostic).

:class:`LogStream` owns the line parser and the template miner (one miner for every log
source of the agent: template ids are global, rarity is per source) and feeds an
:class:`~agent.events.cascade.EventEngine`: the event is the template id, with
``template``, ``level``, ``component`` (for their rarity) and ``session`` (the sequence
model's history key) in its attributes. Call :meth:`LogStream.process_line` with one
raw line from anywhere (a file, an MQTT payload, a serial port).

Score-then-learn holds for templates too: a line is matched against the templates known
*before* it; a line that creates a template is a never-seen event for stage 1.

Robustness: lines too long or with too many tokens are rejected (counted in the engine's
``rejected`` by reason, logged once); continuation lines (stack traces) are counted and
not scored; a line without a readable timestamp takes the caller's ``now`` or the
source's previous timestamp, and a timestamp before the source's previous one is
clamped to it (counted: ``ts_clamped``) -- log lines of several threads are rarely in
strict order. The miner's state is saved to ``logs.state_path`` (JSON, atomic) every
``save_every`` lines and on :meth:`close`, and loaded at start; a damaged file is
refused, counted (``state_rejected``), logged once, and the miner starts fresh.

Alerts carry ``expected_templates`` (the templates of the model's top-k ids) next to
``expected_top_k``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from agent.errors import CheckpointError
from agent.events.cascade import EventEngine
from agent.events.config import EventsConfig
from agent.events.types import EventDecision, EventPoint
from agent.logs.miner import LineRejected, TemplateMiner
from agent.logs.parse import LineParser
from agent.logs.state import load_miner, save_miner
from agent.sinks import AlertSink
from agent.types import Alert, Stage

log = logging.getLogger(__name__)
MAX_LINE_ATTR = 512  # characters of the raw line kept in an event's attributes


@dataclasses.dataclass(frozen=True, slots=True)
class LogOutcome:
    """What happened to one line: its template and the cascade's decision (or why not)."""

    ts: float
    ts_text: str
    source: str
    template_id: str
    template: str
    decision: EventDecision | None
    skipped: str = ""  # reason the line was not scored ("continuation", a reject reason)

    @property
    def score(self) -> float:
        return self.decision.score if self.decision is not None else 0.0

    @property
    def stage(self) -> int:
        return int(self.decision.stage) if self.decision is not None else int(Stage.NONE)

    @property
    def alert(self) -> bool:
        return bool(self.decision.alert) if self.decision is not None else False


class TemplateSink:
    """Adds ``expected_templates`` to alerts before they reach the real sinks."""

    def __init__(self, miner: TemplateMiner, sinks: Iterable[AlertSink]) -> None:
        self.miner = miner
        self.sinks = list(sinks)

    def emit(self, alert: Alert) -> None:
        ids = alert.extra.get("expected_top_k") if alert.extra else None
        if ids:
            extra = dict(alert.extra)
            extra["expected_templates"] = [self.miner.template_of(i) for i in ids]
            alert = dataclasses.replace(alert, extra=extra)
        for s in self.sinks:
            s.emit(alert)

    def close(self) -> None:
        for s in self.sinks:
            s.close()


def miner_from_config(cfg: EventsConfig) -> TemplateMiner:
    lc = cfg.logs
    return TemplateMiner(depth=lc.depth, similarity=lc.similarity,
                         max_children=lc.max_children, max_clusters=lc.max_clusters,
                         max_tokens=lc.max_tokens, max_chars=lc.max_line_chars)


class LogStream:
    """Log lines of the configured ``kind: logs`` sources through an event engine."""

    def __init__(self, config: EventsConfig, engine: EventEngine | None = None, *,
                 sinks: Iterable[AlertSink] = (), state_path: str | Path | None = None,
                 miner: TemplateMiner | None = None, **engine_kw: Any) -> None:
        self.config = config
        self.miner = miner or miner_from_config(config)
        if engine is None:
            engine = EventEngine(config, sinks=[TemplateSink(self.miner, sinks)], **engine_kw)
        self.engine = engine
        self.parser = LineParser(config.logs.line_format, config.logs.session_pattern)
        self.counts: Counter[str] = Counter()
        self._sources = frozenset(s.id for s in config.sources if s.kind == "logs")
        self._last_ts: dict[str, float] = {}  # per configured source: bounded
        self._since_save = 0
        self.state_path = Path(state_path) if state_path else None
        if self.state_path is not None and self.state_path.exists():
            self.load_state()

    @property
    def log_sources(self) -> tuple[str, ...]:
        return tuple(sorted(self._sources))

    # ------------------------------------------------------------------ one line
    def _prepare(self, source: str, line: str, now: float | None
                 ) -> tuple[LogOutcome, EventPoint | None]:
        self.counts["lines"] += 1
        if source not in self._sources:
            return self._reject(source, "unknown_source",
                                "not a configured kind: logs source", now), None
        if not isinstance(line, str):
            line = str(line)
        if len(line) > self.config.logs.max_line_chars:
            return self._reject(source, "line_too_long",
                                f"{len(line)} chars > {self.config.logs.max_line_chars}",
                                now), None
        p = self.parser.parse(line)
        if p.continuation:
            self.counts["continuation"] += 1
            return LogOutcome(now or self._last_ts.get(source, 0.0), "", source, "", "", None,
                              "continuation"), None
        if not p.layout:
            self.counts["unformatted"] += 1
        ts = p.ts if p.ts is not None else now
        last = self._last_ts.get(source)
        if ts is None:
            self.counts["no_timestamp"] += 1
            ts = last if last is not None else 0.0
        elif last is not None and ts < last:
            self.counts["ts_clamped"] += 1
            ts = last
        try:
            res = self.miner.add(p.message)
        except LineRejected as exc:
            return self._reject(source, exc.reason, str(exc), ts), None
        self._last_ts[source] = ts
        if res.created:
            self.counts["templates_created"] += 1
        attrs = {"template": res.template, "line": line[:MAX_LINE_ATTR]}
        if p.level is not None:
            attrs["level"] = p.level
        if p.component is not None:
            attrs["component"] = p.component
        if p.session is not None:
            attrs["session"] = p.session
        ev = EventPoint(ts, source, res.cluster_id, attrs)
        self._maybe_save()
        return LogOutcome(ts, p.ts_text, source, res.cluster_id, res.template, None), ev

    def _reject(self, source: str, reason: str, detail: str, ts: float | None) -> LogOutcome:
        self.engine.rejects.reject(reason, f"log source {source[:64]!r}: {detail}")
        return LogOutcome(ts if ts is not None else self._last_ts.get(source, 0.0), "",
                          source[:64], "", "", None, reason)

    def process_line(self, source: str, line: str, now: float | None = None) -> LogOutcome:
        """Parse, mine and score one raw line of ``source`` (score-then-learn)."""
        out, ev = self._prepare(source, line, now)
        if ev is None:
            return out
        return LogOutcome(out.ts, out.ts_text, source, out.template_id, out.template,
                          self.engine.process(ev))

    def learn_line(self, source: str, line: str, now: float | None = None) -> LogOutcome:
        """Mine and learn one line without scoring it (warm-up)."""
        out, ev = self._prepare(source, line, now)
        if ev is not None:
            self.engine.learn_only(ev)
        return out

    # ------------------------------------------------------------------ state
    def _maybe_save(self) -> None:
        every = self.config.logs.save_every
        if self.state_path is None or every <= 0:
            return
        self._since_save += 1
        if self._since_save >= every:
            self.save_state()

    def save_state(self) -> None:
        if self.state_path is None:
            return
        self._since_save = 0
        try:
            save_miner(self.state_path, self.miner)
        except OSError as exc:
            self.engine.rejects.reject("state_save_failed", f"{self.state_path}: {exc}")

    def load_state(self) -> bool:
        """Load the saved templates; on a bad file start fresh (counted, logged once)."""
        assert self.state_path is not None
        try:
            load_miner(self.state_path, self.miner)
        except CheckpointError as exc:
            self.engine.rejects.reject("state_rejected", f"{exc}; starting with no templates")
            return False
        log.info("log templates: %d loaded from %s", len(self.miner.clusters), self.state_path)
        return True

    def close(self) -> None:
        self.save_state()

    def stats(self) -> dict[str, Any]:
        return {"lines": self.counts["lines"], "templates": len(self.miner.clusters),
                "templates_evicted": self.miner.evicted,
                **{k: v for k, v in sorted(self.counts.items()) if k != "lines"}}
