"""The event cascade: per-source stage 1 (rarity) on every event, the sequence model when
needed, fused into the agent's :class:`~agent.policy.AlertPolicy`.

Per source and event, score-then-learn:

1. **stage 1** (:mod:`agent.events.rarity`): a never-seen or rare event, a share that
   jumped (a burst); for log sources also a rare level or component;
2. **escalation**: the next-event model runs when the transition ``previous -> event``
   is unusual for this source (``escalate: transition``: decayed bigram counts, the
   cheap check that keeps the model off the common path), when stage 1 flagged the
   event (so its alert carries the model's expectation), or on every event
   (``escalate: always``);
3. **stage 3** (:mod:`agent.events.sequence`): outside the top k of the model's
   prediction from the last ``history`` events (of the event's session when it carries
   ``attrs[sequence.session_key]``, a batch / job id: one history per session, least
   recently used evicted beyond ``max_sessions``; events without one share the source's
   history; a session's first event is gated on ``<start> -> event``) -- unless the
   model gives the event at least ``max_lift`` times its long-run share (stage 1's
   counts): such an event is as likely in this context as anywhere (a heartbeat, a rare
   but normal warning), so its low rank says nothing about order.

Fusion is ``max``: stage 1 sees *what* happens and how often, stage 3 *in which order*,
so neither can clear the other. Alerts carry ``unexpected_event`` (not ``event``, which
is the alert record's raise/update/clear), ``reason``, ``expected_top_k``
(the model's top k when it ran) and, for logs, ``template``, ``level``, ``component``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable
from typing import Any

from agent.counters import RejectCounter
from agent.events.config import EventsConfig, EventSourceConfig
from agent.events.rarity import CategoryRarity, TransitionGate
from agent.events.sequence import NextEventModel, NextEventScore
from agent.events.types import EventDecision, EventPoint
from agent.policy import AlertPolicy
from agent.sinks import AlertSink
from agent.types import Alert, AlertEvent, Stage

log = logging.getLogger(__name__)
MAX_HISTORY = 1000
SESSION_HISTORY = 100  # events kept per session history
MAX_SESSION_CHARS = 256  # longer session ids are cut (memory stays bounded)
SESSION_START = "<start>"  # the gate's previous event for a session's first event


def calibrate(ratio: float) -> float:
    return ratio / (ratio + 1.0) if ratio > 0 else 0.0


def _rarity(cfg: EventsConfig) -> CategoryRarity:
    r = cfg.rarity
    return CategoryRarity(half_life=r.half_life, short_half_life=r.short_half_life,
                          min_events=r.min_events, rare_share=r.rare_share,
                          share_shift=r.share_shift, share_z=r.share_z,
                          share_ratio=r.share_ratio, direction=r.direction,
                          relearn_after=r.relearn_after, max_values=r.max_values)


@dataclasses.dataclass(frozen=True)
class EventOutcome:
    score: float
    stage: Stage
    flagged: bool
    reason: str
    escalated: bool
    seq: NextEventScore | None


class EventCascade:
    """Detector state of one event/log source."""

    def __init__(self, source: EventSourceConfig, config: EventsConfig,
                 model: NextEventModel | None = None) -> None:
        self.source = source
        self.config = config
        self.rarity = _rarity(config)
        self.levels = _rarity(config) if source.kind == "logs" else None
        self.components = _rarity(config) if source.kind == "logs" else None
        sc = config.sequence
        self.gate = TransitionGate(below=sc.escalate_below, min_row=sc.escalate_min_row)
        self.model: NextEventModel | None = None
        self._history: deque[str] = deque(maxlen=MAX_HISTORY)
        self._sessions: OrderedDict[str, deque[str]] = OrderedDict()
        self.counts: Counter[str] = Counter()
        self.set_model(model)

    def set_model(self, model: NextEventModel | None) -> None:
        self.model = model if self.source.sequence else None

    @property
    def warming_up(self) -> bool:
        return self.rarity.warming_up

    def _stage1(self, ev: EventPoint) -> tuple[float, str]:
        if not self.config.rarity.enabled:
            return 0.0, ""
        best, why = self.rarity.score_one(ev.event)
        for tracker, attr in ((self.levels, "level"), (self.components, "component")):
            value = ev.attrs.get(attr)
            if tracker is None or value is None:
                continue
            if not getattr(self.config.logs, f"{attr}_rarity"):
                continue
            r, w = tracker.score_one(value)
            if r > best:
                best, why = r, f"{attr}_{w}"
        r, w, _value = self.rarity.drop_check()
        if r > best:
            best, why = r, w
        return best, why

    def _history_ids(self, model: NextEventModel, hist: deque[str] | None = None) -> list[int]:
        h = model.history
        hist = self._history if hist is None else hist
        names = list(hist)[-h:] if len(hist) > h else list(hist)
        ids = model.vocab.ids(names)
        return [0] * (h - len(ids)) + ids

    def _session(self, ev: EventPoint) -> tuple[deque[str], str | None]:
        """The history this event continues and the gate's previous event."""
        key = self.config.sequence.session_key
        sid = ev.attrs.get(key) if key else None
        if not sid:
            return self._history, self._history[-1] if self._history else None
        sid = str(sid)[:MAX_SESSION_CHARS]
        hist = self._sessions.get(sid)
        if hist is None:
            hist = self._sessions[sid] = deque(maxlen=SESSION_HISTORY)
            while len(self._sessions) > self.config.sequence.max_sessions:
                self._sessions.popitem(last=False)
        else:
            self._sessions.move_to_end(sid)
        return hist, hist[-1] if hist else SESSION_START

    def process(self, ev: EventPoint) -> EventOutcome:
        """Score then learn one event."""
        self.counts["events"] += 1
        r1, why = self._stage1(ev)
        hist, prev = self._session(ev)
        model, seq = self.model, None
        escalate = model is not None and prev is not None and (
            self.config.sequence.escalate == "always" or r1 >= 1.0
            or self.gate.unusual(prev, ev.event))
        if escalate:
            assert model is not None
            self.counts["escalated"] += 1
            seq = model.score_one(self._history_ids(model, hist), model.vocab.id_of(ev.event))
            lift = self.config.sequence.max_lift
            share = self.rarity.share(ev.event)
            if (seq.flagged and lift > 0 and share > 0 and seq.prob >= lift * share
                    and hist is self._history):
                # as likely here as anywhere: a context-free event (a heartbeat, a rare
                # warning), not an event out of order; never inside a session, whose
                # events are all steps of one instance
                raw = min(seq.raw, 0.999)
                seq = dataclasses.replace(seq, flagged=False, raw=raw, score=calibrate(raw))
        r3 = seq.raw if seq is not None else 0.0
        flagged1, flagged3 = r1 >= 1.0, seq is not None and seq.flagged
        if flagged3 and (not flagged1 or r3 > r1):
            why = "sequence"
        ratio = max(r1, r3 if seq is None or seq.flagged else min(r3, 0.999))
        flagged = flagged1 or flagged3
        stage = Stage.ONNX if seq is not None else (
            Stage.NONE if self.warming_up else Stage.STATISTICAL)
        self._learn(ev, flagged1, flagged, prev, hist)
        if flagged:
            self.counts[f"flag_{why}"] += 1
        return EventOutcome(calibrate(ratio), stage, flagged, why if flagged else "", escalate,
                            seq)

    def _learn(self, ev: EventPoint, flagged1: bool, flagged: bool, prev: str | None,
               hist: deque[str] | None = None) -> None:
        self.rarity.learn_one(ev.event, flagged1)
        for tracker, attr in ((self.levels, "level"), (self.components, "component")):
            value = ev.attrs.get(attr)
            if tracker is not None and value is not None:
                tracker.learn_one(value, False)
        if not flagged:
            self.gate.learn_one(prev, ev.event)
        (self._history if hist is None else hist).append(ev.event)

    def learn_only(self, ev: EventPoint) -> None:
        hist, prev = self._session(ev)
        self._learn(ev, False, False, prev, hist)

    def state_dict(self) -> dict[str, Any]:
        return {
            "rarity": self.rarity.state_dict(),
            "levels": self.levels.state_dict() if self.levels else None,
            "components": self.components.state_dict() if self.components else None,
            "gate": self.gate.state_dict(),
            "history": list(self._history),
            "sessions": {k: list(v) for k, v in self._sessions.items()},
            "counts": dict(self.counts),
        }

    def load_state(self, s: dict[str, Any]) -> None:
        self.rarity.load_state(s["rarity"])
        if self.levels is not None and s.get("levels"):
            self.levels.load_state(s["levels"])
        if self.components is not None and s.get("components"):
            self.components.load_state(s["components"])
        self.gate.load_state(s["gate"])
        self._history = deque((str(e) for e in s["history"]), maxlen=MAX_HISTORY)
        self._sessions = OrderedDict(
            (str(k), deque((str(e) for e in v), maxlen=SESSION_HISTORY))
            for k, v in list(s.get("sessions", {}).items())[-self.config.sequence.max_sessions:])
        self.counts = Counter({str(k): int(v) for k, v in s["counts"].items()})


class EventEngine:
    """Every configured event/log source through its cascade and alert policy. No I/O."""

    def __init__(self, config: EventsConfig, model: NextEventModel | None = None,
                 sinks: Iterable[AlertSink] = (), agent_id: str = "edge-agent",
                 next_seq: Callable[[], int] | None = None) -> None:
        self.config = config
        self.sinks = list(sinks)
        self.rejects = RejectCounter()
        self.events_in = 0
        self.alert_counts: Counter[str] = Counter()
        self._model = model
        self._seq = 0
        self._next_seq = next_seq or self._local_seq
        alert_cfg = config.alerts.to_alert_config()
        self._cascades = {s.id: EventCascade(s, config, model) for s in config.sources}
        self._policies = {s.id: AlertPolicy(alert_cfg, s.id, ("event",), agent_id,
                                            self._next_seq) for s in config.sources}
        self._last_ts: dict[str, float] = {}

    def _local_seq(self) -> int:
        self._seq += 1
        return self._seq

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(self._cascades)

    @property
    def model(self) -> NextEventModel | None:
        return self._model

    def cascade(self, source: str) -> EventCascade:
        return self._cascades[source]

    def set_model(self, model: NextEventModel | None) -> list[str]:
        """Swap the next-event model between two events; return the sources using it."""
        self._model = model
        for cas in self._cascades.values():
            cas.set_model(model)
        return [sid for sid, c in self._cascades.items() if c.model is not None]

    def _valid(self, ev: EventPoint) -> bool:
        sid = ev.source
        if sid not in self._cascades:
            self.rejects.reject("unknown_source", f"event source {sid!r} is not configured")
            return False
        if not isinstance(ev.ts, float | int) or not math.isfinite(ev.ts):
            self.rejects.reject("bad_timestamp", f"source {sid!r}: timestamp {ev.ts!r}")
            return False
        last = self._last_ts.get(sid)
        if last is not None and ev.ts < last:  # equal stamps are normal for events
            self.rejects.reject("out_of_order", f"source {sid!r}: ts {ev.ts} after {last}")
            return False
        if not isinstance(ev.event, str) or not ev.event.strip():
            self.rejects.reject("empty_event", f"source {sid!r}: empty event")
            return False
        if len(ev.event) > self.config.max_event_chars:
            self.rejects.reject("event_too_long", f"source {sid!r}: {len(ev.event)} chars")
            return False
        self._last_ts[sid] = float(ev.ts)
        return True

    def process(self, ev: EventPoint) -> EventDecision:
        """Score one event (score-then-learn), apply the alert policy, emit alerts."""
        self.events_in += 1
        if not self._valid(ev):
            pol = self._policies.get(ev.source)
            return EventDecision(ev.ts, ev.source, str(ev.event), 0.0, Stage.NONE,
                                 bool(pol and pol.active))
        cas, policy = self._cascades[ev.source], self._policies[ev.source]
        out = cas.process(ev)
        expected: tuple[str, ...] = ()
        if out.seq is not None and cas.model is not None:
            expected = tuple(cas.model.vocab.name_of(i) for i in out.seq.top_ids)
        extra: dict[str, Any] = {"kind": cas.source.kind, "unexpected_event": ev.event,
                                 "reason": out.reason, "expected_top_k": list(expected)}
        if out.seq is not None:
            extra |= {"rank": out.seq.rank, "probability": round(out.seq.prob, 6)}
            if cas.model is not None:
                extra |= {"expected_probabilities": [round(float(p), 6) for p in
                                                     out.seq.top_probs],
                          "model": {"name": cas.model.meta.name,
                                    "version": cas.model.meta.version}}
        for key in ("template", "level", "component"):
            if key in ev.attrs:
                extra[key] = ev.attrs[key]
        if out.stage == Stage.NONE:
            return EventDecision(ev.ts, ev.source, ev.event, 0.0, Stage.NONE, policy.active)
        active, alerts = policy.update(ev.ts, out.score, int(out.stage), None)
        for a in alerts:
            self._emit(dataclasses.replace(a, extra=extra) if a.event is not AlertEvent.CLEAR
                       else a)
        return EventDecision(ev.ts, ev.source, ev.event, out.score, out.stage, active,
                             out.flagged, out.reason, out.escalated, expected, extra)

    def learn_only(self, ev: EventPoint) -> None:
        self.events_in += 1
        if self._valid(ev):
            self._cascades[ev.source].learn_only(ev)

    def _emit(self, alert: Alert) -> None:
        if alert.event is AlertEvent.RAISE:
            self.alert_counts[alert.severity.label] += 1
        for sink in self.sinks:
            try:
                sink.emit(alert)
            except Exception:  # a broken sink must not stop detection
                log.exception("alert sink %r failed", sink)

    def stats(self) -> dict[str, Any]:
        sources = {}
        escalated = events = 0
        for sid, cas in self._cascades.items():
            c = cas.counts
            events += c["events"]
            escalated += c["escalated"]
            sources[sid] = {"kind": cas.source.kind, "events": c["events"],
                            "escalated": c["escalated"], "warming_up": cas.warming_up,
                            "sequence_model": cas.model is not None,
                            "flags": {k[5:]: v for k, v in sorted(c.items())
                                      if k.startswith("flag_")},
                            "alert_active": self._policies[sid].active}
        return {
            "events_in": self.events_in,
            "events_rejected": self.rejects.total(),
            "rejected": self.rejects.as_dict(),
            "escalation_rate": escalated / events if events else 0.0,
            "alerts": dict(sorted(self.alert_counts.items())),
            "model": self._model.describe() if self._model is not None else None,
            "sources": sources,
        }

    def state_dict(self) -> dict[str, Any]:
        return {"cascades": {s: c.state_dict() for s, c in self._cascades.items()},
                "policies": {s: p.state_dict() for s, p in self._policies.items()},
                "last_ts": dict(self._last_ts)}

    def load_state(self, state: dict[str, Any]) -> None:
        for sid, cas in self._cascades.items():
            if sid in state["cascades"]:
                cas.load_state(state["cascades"][sid])
                self._policies[sid].load_state(state["policies"][sid])
        self._last_ts = {k: float(v) for k, v in state["last_ts"].items()
                         if k in self._cascades}
