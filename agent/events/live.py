"""Event and log streams in the live agent: MQTT topics in, the event cascade, checkpoints.

Every configured source has a topic under the gateway's root (``docs/mqtt.md``):
``{root}/events/{source}`` for ``kind: events`` and ``{root}/logs/{source}`` for
``kind: logs``, or the source's own ``topic`` filter. Messages on those topics take the
same path as sensor points: paho's thread puts them into the agent's bounded ingest queue
(drop-oldest, counted), the detection worker parses them here and runs
:class:`~agent.events.cascade.EventEngine`; its alerts go through the agent's sinks (the
store-and-forward outbox first), on ``{root}/alert/{source}``.

Payloads (``docs/schemas/event.json``): one event ``{"ts": 1700000000.5, "event":
"VALVE_OPEN"}`` (``event`` a name or an integer id; ``ts`` epoch s/ms or ISO-8601,
missing = time of receipt, counted in ``ts_defaulted``; optional string ``level``,
``component``, ``template``) or a batch ``{"events": [event, ...]}``. A bad item of a
batch is rejected alone (counted by reason, logged once); the others are scored.
Log sources take raw lines (UTF-8, one or more per message): :mod:`agent.logs` parses
and mines each into a template (the event), with its level and component; their alerts
also carry ``expected_templates``. The miner's templates are saved to
``events.logs.state_path`` with every checkpoint.

Checkpoints use :mod:`agent.checkpoint` (atomic, versioned, checksummed) in a file of
their own next to the detector checkpoint (``{checkpoint.path}.events``): per source the
rarity counts and shares (the values seen), the transition counts, the history the
next-event model reads, and the alert-policy state. A checkpoint that does not load is
logged once and counted (``checkpoint.rejected``), and the sources start fresh.

>>> p = parse_event_payload(b'{"events": [{"ts": 1, "event": "A"}, {"ts": 2}]}', now=9.0)
>>> [(e.ts, e.event) for e in p.events], p.rejects[0][0]
([(1.0, 'A')], 'missing_event')
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agent.checkpoint import restore_into, save_checkpoint
from agent.counters import RejectCounter
from agent.events.cascade import EventEngine
from agent.events.config import EventsConfig, EventSourceConfig
from agent.events.sequence import NextEventModel
from agent.events.types import EventDecision, EventPoint
from agent.jsonsafe import loads as loads_json
from agent.payloads import _Reject, parse_timestamp
from agent.sinks import AlertSink
from agent.topics import TopicTree, matches
from agent.types import Alert

log = logging.getLogger(__name__)

ATTRS = ("level", "component", "template")
CHECKPOINT_SUFFIX = ".events"


class _LogTemplates:
    """Adds ``expected_templates`` (the templates of the model's top-k ids) to the alerts
    of log sources on their way to the agent's sinks."""

    def __init__(self, miner: Any, sinks: Iterable[AlertSink]) -> None:
        self.miner = miner
        self.sinks = list(sinks)

    def emit(self, alert: Alert) -> None:
        ids = alert.extra.get("expected_top_k") if alert.extra else None
        if ids and alert.extra.get("kind") == "logs":
            alert = dataclasses.replace(alert, extra=dict(alert.extra) | {
                "expected_templates": [self.miner.template_of(i) for i in ids]})
        for s in self.sinks:
            s.emit(alert)

    def close(self) -> None:
        pass  # the agent closes its own sinks


@dataclass(slots=True)
class ParsedEvents:
    events: list[EventPoint] = field(default_factory=list)
    rejects: list[tuple[str, str]] = field(default_factory=list)
    ts_defaulted: int = 0


def _one(item: Any, source: str, now: float, out: ParsedEvents, keys: tuple[str, ...]
         ) -> None:
    if not isinstance(item, dict):
        out.rejects.append(("bad_shape", f"an event must be a JSON object, got "
                                         f"{type(item).__name__}"))
        return
    name = item.get("event")
    if name is None:
        out.rejects.append(("missing_event", "no 'event' field"))
        return
    if isinstance(name, bool) or not isinstance(name, str | int):
        out.rejects.append(("bad_event", f"'event' must be a string or an integer id, got "
                                         f"{type(name).__name__}"))
        return
    try:
        ts, defaulted = parse_timestamp(item.get("ts"), now)
    except _Reject as exc:
        out.rejects.append((exc.reason, exc.detail))
        return
    attrs = {k: item[k] for k in keys if isinstance(item.get(k), str)}
    out.ts_defaulted += defaulted
    out.events.append(EventPoint(ts, source, str(name), attrs))


def parse_event_payload(payload: bytes, *, now: float, source: str = "",
                        max_bytes: int = 262_144, max_batch: int = 1000,
                        session_key: str | None = None) -> ParsedEvents:
    """One event or a batch ``{"events": [...]}``; structural problems become rejects.

    String fields ``level``, ``component``, ``template`` and ``session_key`` (the
    sequence model's session, ``events.sequence.session_key``) become attributes.

    Empty or over-long event names are left to the engine (``empty_event``,
    ``event_too_long``), which knows the configured limit.
    """
    out = ParsedEvents()
    if len(payload) > max_bytes:
        out.rejects.append(("too_large", f"{len(payload)} bytes > {max_bytes}"))
        return out
    try:
        body = loads_json(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        out.rejects.append(("invalid_json", str(exc)[:200]))
        return out
    if not isinstance(body, dict):
        out.rejects.append(("bad_shape", f"expected a JSON object, got "
                                         f"{type(body).__name__}"))
        return out
    keys = (*ATTRS, session_key) if session_key else ATTRS
    if "events" not in body:
        _one(body, source, now, out, keys)
        return out
    items = body["events"]
    if not isinstance(items, list):
        out.rejects.append(("bad_batch", "'events' must be a list"))
        return out
    if len(items) > max_batch:
        out.rejects.append(("batch_too_large", f"{len(items)} events > {max_batch}"))
        return out
    for item in items:
        _one(item, source, now, out, keys)
    return out


def source_topic(tree: TopicTree, source: EventSourceConfig) -> str:
    """The topic (filter) a source is read from: its own, else ``{root}/{kind}/{id}``."""
    return source.topic or f"{tree.root}/{source.kind}/{source.id}"


def events_checkpoint_path(detector_checkpoint: Path) -> Path:
    return detector_checkpoint.with_name(detector_checkpoint.name + CHECKPOINT_SUFFIX)


class EventLive:
    """The event sources of one live agent (detection thread only, like the engine)."""

    def __init__(self, config: EventsConfig, tree: TopicTree, *, agent_id: str,
                 sinks: Iterable[AlertSink] = (), model: NextEventModel | None = None,
                 next_seq: Callable[[], int] | None = None, max_bytes: int = 262_144,
                 miner: Any = None, log_state: Path | None = None) -> None:
        self.config = config
        self.tree = tree
        self.max_bytes = max_bytes
        sinks = [_LogTemplates(miner, sinks)] if miner is not None else list(sinks)
        self._engine_args = {"sinks": sinks, "agent_id": agent_id, "next_seq": next_seq}
        self.engine = EventEngine(config, model=model, **self._engine_args)  # type: ignore[arg-type]
        self.logs: Any = None  # agent.logs.stream.LogStream of the kind: logs sources
        if miner is not None:
            from agent.logs.stream import LogStream

            self.logs = LogStream(config, self.engine, miner=miner, state_path=log_state)
        self.routes: tuple[tuple[str, EventSourceConfig], ...] = tuple(
            (source_topic(tree, s), s) for s in config.sources)
        self.messages_in = 0
        self.ts_defaulted = 0
        self.checkpoint: dict[str, Any] = {"restored": False, "rejected": 0, "saved": 0}

    # ----------------------------------------------------------------- wiring
    @property
    def rejects(self) -> RejectCounter:
        return self.engine.rejects

    @property
    def model(self) -> NextEventModel | None:
        return self.engine.model

    def set_model(self, model: NextEventModel | None) -> list[str]:
        """Swap the next-event model between two events (detection thread)."""
        return self.engine.set_model(model)

    def subscriptions(self, qos: int) -> list[tuple[str, int]]:
        return [(topic, qos) for topic in dict.fromkeys(t for t, _ in self.routes)]

    def topics(self) -> list[str]:
        return [t for t, _ in self.subscriptions(0)]

    def source_for(self, topic: str) -> EventSourceConfig | None:
        for flt, src in self.routes:
            if matches(flt, topic):
                return src
        return None

    # ----------------------------------------------------------------- ingest
    def handle(self, topic: str, payload: bytes, now: float) -> list[EventDecision]:
        """Parse one message of an event/log topic and score its events."""
        src = self.source_for(topic)
        if src is None:
            self.rejects.reject("unknown_topic", f"no event source for {topic!r}")
            return []
        self.messages_in += 1
        if src.kind == "logs":
            return self._lines(src, payload, now)
        parsed = parse_event_payload(payload, now=now, source=src.id, max_bytes=self.max_bytes,
                                     max_batch=self.config.max_batch,
                                     session_key=self.config.sequence.session_key)
        self.ts_defaulted += parsed.ts_defaulted
        for reason, detail in parsed.rejects:
            self.rejects.reject(reason, f"{topic}: {detail}")
        return [self.engine.process(ev) for ev in parsed.events]

    def _lines(self, src: EventSourceConfig, payload: bytes, now: float) -> list[EventDecision]:
        if self.logs is None:
            self.rejects.reject("logs_unsupported", f"source {src.id!r}: no log-line miner "
                                                    "in this agent")
            return []
        if len(payload) > self.max_bytes:
            self.rejects.reject("too_large", f"{len(payload)} bytes > {self.max_bytes}")
            return []
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            self.rejects.reject("bad_encoding", f"source {src.id!r}: {exc}")
            return []
        out = []
        for line in text.splitlines():
            if line.strip():
                d = self.logs.process_line(src.id, line, now).decision
                if d is not None:
                    out.append(d)
        return out

    def birth(self) -> dict[str, Any]:
        """The ``events`` part of the birth message: sources, their topics, the model."""
        m = self.model
        return {"sources": {s.id: {"kind": s.kind, "topic": t, "sequence": s.sequence}
                            for t, s in self.routes},
                "model": ({"name": m.meta.name, "version": m.meta.version, "sha256": m.sha256}
                          if m is not None else None)}

    def stats(self) -> dict[str, Any]:
        out = {"messages_in": self.messages_in, "ts_defaulted": self.ts_defaulted,
               "topics": {src.id: t for t, src in self.routes},
               "checkpoint": dict(self.checkpoint), **self.engine.stats()}
        if self.logs is not None:
            out["logs"] = self.logs.stats()
        return out

    # ----------------------------------------------------------------- checkpoints
    def fingerprint(self) -> str:
        """What the saved state depends on: the sources, stage 1 and the alert policy
        (not the model: histories are event names, valid for any model)."""
        c = self.config
        det = {"sources": [(s.id, s.kind) for s in c.sources], "rarity": asdict(c.rarity),
               "alerts": asdict(c.alerts), "max_event_chars": c.max_event_chars,
               "gate": (c.sequence.escalate_below, c.sequence.escalate_min_row)}
        return hashlib.sha256(json.dumps(det, sort_keys=True).encode()).hexdigest()

    def save(self, path: str | Path) -> int:
        state = {"engine": self.engine.state_dict(), "events_in": self.engine.events_in}
        size = save_checkpoint(path, state, self.fingerprint())
        self.checkpoint["saved"] += 1
        if self.logs is not None:
            self.logs.save_state()  # the templates (events.logs.state_path), atomic
        return size

    def restore(self, path: str | Path) -> bool:
        """Load the saved state; on any problem log it once, count it, start fresh."""

        def apply(state: dict[str, Any]) -> None:
            self.engine.load_state(state["engine"])
            self.engine.events_in = int(state["events_in"])

        def fresh(exc: Exception) -> None:
            log.warning("event checkpoint %s not used, the sources start fresh: %s", path, exc)
            self.checkpoint["rejected"] += 1
            self.checkpoint["error"] = str(exc)[:300]
            self.engine = EventEngine(self.config, model=self.engine.model,
                                      **self._engine_args)  # type: ignore[arg-type]
            if self.logs is not None:
                self.logs.engine = self.engine

        state = restore_into(path, self.fingerprint(), apply, fresh)
        if state is None:
            return False
        self.checkpoint["restored"] = True
        log.info("restored event-source state from %s (sources %s)", path,
                 sorted(state["engine"]["cascades"]))
        return True


def for_agent(agent: Any) -> EventLive | None:
    """The event sources of a :class:`~agent.live.LiveAgent` (None without any, or with
    ``events.live: false``): alerts through the agent's sinks, alert sequence numbers
    from its engine, the next-event model last pushed (else the configured one), the
    state of the last checkpoint."""
    cfg = agent.cfg
    if not cfg.events.sources or not cfg.events.live:
        return None
    from agent.events.replay import load_sequence_model

    model = agent.models.startup_event_model() if agent.models is not None else None
    if model is None:
        model = load_sequence_model(cfg)
    ev = EventLive(cfg.events, agent.tree, agent_id=cfg.agent.id, sinks=agent.engine.sinks,
                   model=model, next_seq=lambda: agent.engine._next_seq(),
                   max_bytes=cfg.mqtt.max_payload_bytes, **_log_miner(cfg))
    if agent._ckpt is not None:
        ev.restore(events_checkpoint_path(agent._ckpt))
    log.info("events: %d source(s) on %s; next-event model %s", len(cfg.events.sources),
             ev.topics(), model.describe()["version"] if model is not None else None)
    return ev


def _log_miner(cfg: Any) -> dict[str, Any]:
    """The template miner (and where its state lives) when a source is ``kind: logs``."""
    if not any(s.kind == "logs" for s in cfg.events.sources):
        return {}
    from agent.logs.stream import miner_from_config

    lc = cfg.events.logs
    return {"miner": miner_from_config(cfg.events),
            "log_state": cfg.resolve_path(lc.state_path) if lc.state_path else None}
