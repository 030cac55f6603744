"""The detection engine: validated points in, decisions and alerts out. No I/O, no clock.

The engine owns one :class:`~agent.cascade.StreamCascade` and one
:class:`~agent.policy.AlertPolicy` per configured stream, the input counters and the
alert sinks. ``replay``, the live runtime and the benchmarks all drive this same object,
so what is measured offline is what runs on the gateway.

Timestamps, per stream (data time only; the engine never reads a clock):

* a point at or before the stream's last accepted timestamp, by at most
  ``agent.clock_jump_s``, is rejected: ``duplicate_timestamp`` (equal) or
  ``out_of_order`` (earlier);
* a point more than ``agent.clock_jump_s`` away from the last accepted one, backwards or
  forwards, is a **clock jump** (a device clock reset, an NTP step, a year typed wrong, or
  a stream silent that long): it is accepted, counted (``clock_jumps.backward`` /
  ``forward``, the first of each logged) and becomes the new anchor, so detection
  continues instead of rejecting every point until data time catches up. A backward jump
  also moves the stream's alert cooldown by the same amount.

No detector uses time differences (stage 1 and 2 work on the sequence of values, the
alert policy on counts of points), so no jump can make a negative or huge ``dt`` reach
a computation; data timestamps only label alerts and bound the cooldown.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import numbers
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from agent.cascade import Outcome, StreamCascade
from agent.checkpoint import restore_into, save_checkpoint
from agent.config import AgentConfig, StreamConfig
from agent.counters import RejectCounter
from agent.errors import CheckpointError
from agent.onnx_scorer import OnnxModel
from agent.policy import AlertPolicy
from agent.sinks import AlertSink
from agent.types import Alert, AlertEvent, Decision, Point, Stage

log = logging.getLogger(__name__)

# Larger magnitudes are no sensor reading, and their squares would overflow the
# running sums of stage 1 (1e154 ** 2 is inf).
MAX_ABS_VALUE = 1e100


def as_number(value: object) -> float | None:
    """``value`` as a float if it is a real number (numpy scalars included, bools not)."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        return None
    try:
        return float(value)
    except (OverflowError, TypeError, ValueError):
        return math.inf  # e.g. 10**400: a number, but not a finite float


def _detection(s: StreamConfig | None) -> StreamConfig | None:
    """The part of a stream's config its detection state depends on (not stale_after_s)."""
    return None if s is None else dataclasses.replace(s, stale_after_s=None)


class Engine:
    """Runs every configured stream through its cascade and alert policy."""

    def __init__(
        self,
        config: AgentConfig,
        model: OnnxModel | None = None,
        sinks: Iterable[AlertSink] = (),
    ) -> None:
        self.config = config
        self.sinks = list(sinks)
        self.rejects = RejectCounter()
        self.points_in = 0
        self.points_learn_only = 0
        self.alert_counts: Counter[str] = Counter()
        self.clock_jumps: Counter[str] = Counter()
        self.accepted: Counter[str] = Counter()  # points accepted, per stream
        self._seq = 0
        self._model = model
        self._cascades: dict[str, StreamCascade] = {}
        self._policies: dict[str, AlertPolicy] = {}
        self._last_ts: dict[str, float] = {}
        self._index: dict[str, dict[str, int]] = {}
        for s in config.streams:
            self._add_stream(s)

    # ------------------------------------------------------------------ setup
    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _add_stream(self, s: StreamConfig) -> None:
        model = self._model if self._fits(self._model, s) else None
        self._cascades[s.id] = StreamCascade(s, self.config, model)
        self._policies[s.id] = AlertPolicy(
            self.config.alerts, s.id, s.channel_names, self.config.agent.id, self._next_seq
        )
        self._index[s.id] = {name: i for i, name in enumerate(s.channel_names)}

    @staticmethod
    def _fits(model: OnnxModel | None, s: StreamConfig) -> bool:
        return model is not None and set(model.features) <= set(s.channel_names)

    @property
    def model(self) -> OnnxModel | None:
        return self._model

    def set_model(self, model: OnnxModel | None) -> list[str]:
        """Swap the stage-3 model for every stream it fits; return those streams."""
        self._model = model
        used = []
        for sid, cas in self._cascades.items():
            fits = self._fits(model, cas.stream)
            cas.set_model(model if fits else None)
            if fits:
                used.append(sid)
        return used

    def cascade(self, stream: str) -> StreamCascade:
        return self._cascades[stream]

    @property
    def streams(self) -> tuple[str, ...]:
        return tuple(self._cascades)

    # ------------------------------------------------------------------ validation
    def _vector(self, point: Point) -> list[float] | None:
        """Channel vector of a point, NaN where missing/bad; None when the point is unusable."""
        sid = point.stream
        index = self._index.get(sid)
        if index is None:
            self.rejects.reject("unknown_stream", f"stream {sid!r} is not configured")
            return None
        ts = point.ts if type(point.ts) is float else as_number(point.ts)
        if ts is None or not math.isfinite(ts):
            self.rejects.reject("bad_timestamp", f"stream {sid!r}: timestamp {point.ts!r}")
            return None
        last = self._last_ts.get(sid)
        jump = self.config.agent.clock_jump_s
        if last is not None and ts <= last and last - ts <= jump:
            reason = "duplicate_timestamp" if ts == last else "out_of_order"
            self.rejects.reject(reason, f"stream {sid!r}: ts {ts} after {last}")
            return None
        x = [math.nan] * len(index)
        present = 0
        for name, value in point.values.items():
            i = index.get(name)
            if i is None:
                self.rejects.reject("unknown_channel", f"stream {sid!r} has no channel {name!r}")
                continue
            if type(value) is float and -MAX_ABS_VALUE <= value <= MAX_ABS_VALUE:
                v = value  # the usual case (a JSON number with a fraction): nothing to check
            else:
                v = as_number(value)
                if v is None:
                    self.rejects.reject("non_numeric",
                                        f"stream {sid!r} channel {name!r}: {value!r}")
                    continue
                if not math.isfinite(v):
                    self.rejects.reject("non_finite", f"stream {sid!r} channel {name!r}: {value}")
                    continue
                if abs(v) > MAX_ABS_VALUE:
                    self.rejects.reject("out_of_range", f"stream {sid!r} channel {name!r}: "
                                                        f"|{v:g}| > {MAX_ABS_VALUE:g}")
                    continue
            if x[i] != x[i]:
                present += 1
            x[i] = v
        if not present:
            self.rejects.reject("no_valid_values", f"stream {sid!r}: no usable channel value")
            return None
        if present < len(index) and any(name not in point.values for name in index):
            self.rejects.reject("missing_channel", f"stream {sid!r}: channels missing")
        if last is not None and abs(ts - last) > jump:
            self._clock_jump(sid, last, ts)
        self._last_ts[sid] = ts
        self.accepted[sid] += 1
        return x

    def _clock_jump(self, sid: str, last: float, ts: float) -> None:
        """Accept ``ts`` as the stream's new anchor (see the module docstring)."""
        way = "backward" if ts < last else "forward"
        if way not in self.clock_jumps:
            log.warning("stream %r: timestamp jumped %s by %.0f s (%s -> %s); accepted as the "
                        "new anchor (agent.clock_jump_s %g); further jumps are only counted",
                        sid, way, abs(ts - last), last, ts, self.config.agent.clock_jump_s)
        self.clock_jumps[way] += 1
        if way == "backward":
            self._policies[sid].shift_time(ts - last)

    # ------------------------------------------------------------------ processing
    def process(self, point: Point) -> Decision:
        """Score one point (score-then-learn), apply the alert policy, emit alerts."""
        self.points_in += 1
        x = self._vector(point)
        policy = self._policies.get(point.stream)
        if x is None:
            return Decision(point.ts, point.stream, 0.0, Stage.NONE, bool(policy and policy.active))
        cas = self._cascades[point.stream]
        assert policy is not None
        return self._decide(point, policy, cas.process(x, self.config.alerts.threshold))

    def _decide(self, point: Point, policy: AlertPolicy, out: Outcome) -> Decision:
        """Apply the alert policy to the cascade's outcome on a point; emit alerts."""
        if out.stage == Stage.NONE:
            return Decision(point.ts, point.stream, 0.0, Stage.NONE, policy.active)
        active, events = policy.update(point.ts, out.score, int(out.stage), out.channel_evidence)
        for ev in events:
            self._emit(ev)
        _s1, s2, s3 = out.stage_scores
        return Decision(
            point.ts, point.stream, out.score, out.stage, active, (s2 is not None, s3 is not None)
        )

    def process_batch(self, points: Iterable[Point]) -> list[Decision]:
        """Score a batch of points (e.g. every point of one MQTT message) in order.

        Exactly ``[self.process(p) for p in points]`` (the same decisions, alerts, counts
        and state): each point is scored with state from strictly earlier points,
        including earlier points of the same batch (no look-ahead), then learnt, and
        alerts are emitted in order. Consecutive usable points of one stream go through
        :meth:`StreamCascade.process_batch <agent.cascade.StreamCascade.process_batch>`
        (stage 1 vectorised over them), then the alert policy point by point. A run ends
        at a point of another stream, a rejected point (its decision reads the policy)
        and before a timestamp jump (it shifts the policy's clock).
        """
        out: list[Decision] = []
        run: list[tuple[Point, list[float]]] = []
        for p in points:
            if run and (p.stream != run[0][0].stream or self._jumps(p)):
                self._flush(run, out)
            self.points_in += 1
            x = self._vector(p)
            if x is None:
                self._flush(run, out)
                policy = self._policies.get(p.stream)
                out.append(Decision(p.ts, p.stream, 0.0, Stage.NONE,
                                    bool(policy and policy.active)))
            else:
                run.append((p, x))
        self._flush(run, out)
        return out

    def _jumps(self, point: Point) -> bool:
        """Would ``point``'s timestamp count as a clock jump of its stream?"""
        ts, last = as_number(point.ts), self._last_ts.get(point.stream)
        return (ts is not None and last is not None and math.isfinite(ts)
                and abs(ts - last) > self.config.agent.clock_jump_s)

    def _flush(self, run: list[tuple[Point, list[float]]], out: list[Decision]) -> None:
        """Score a run of validated points of one stream; append their decisions."""
        if not run:
            return
        sid = run[0][0].stream
        cas, policy, thr = self._cascades[sid], self._policies[sid], self.config.alerts.threshold
        if len(run) == 1:
            outs = [cas.process(run[0][1], thr)]
        else:
            outs = cas.process_batch([x for _, x in run], thr)
        decide = self._decide
        out.extend(decide(p, policy, o) for (p, _), o in zip(run, outs, strict=True))
        run.clear()

    def learn_only(self, point: Point) -> None:
        """Warm-up: learn a point without scoring it (replay's ``--warmup-rows``)."""
        self.points_in += 1
        self.points_learn_only += 1
        x = self._vector(point)
        if x is not None:
            self._cascades[point.stream].learn_only(x)

    def _emit(self, alert: Alert) -> None:
        if alert.event is AlertEvent.RAISE:
            self.alert_counts[alert.severity.label] += 1
        elif alert.event is AlertEvent.UPDATE:
            self.alert_counts[f"upgraded_to_{alert.severity.label}"] += 1
        for sink in self.sinks:
            try:
                sink.emit(alert)
            except Exception:  # a broken sink must not stop detection
                log.exception("alert sink %r failed", sink)

    def adopt(self, old: Engine) -> list[str]:
        """Live reconfiguration hook: take over ``old``'s counters, alert sequence and the
        detector/alert state of every stream whose configuration did not change (a stream
        whose channels, detectors, escalation or alert settings changed starts fresh).
        Returns the streams whose state was kept."""
        self.points_in, self.points_learn_only = old.points_in, old.points_learn_only
        self.rejects, self.alert_counts, self._seq = old.rejects, old.alert_counts, old._seq
        self.clock_jumps, self.accepted = old.clock_jumps, old.accepted
        same = (old.config.detectors, old.config.escalation, old.config.alerts) == (
            self.config.detectors, self.config.escalation, self.config.alerts)
        kept = []
        for sid, cas in self._cascades.items():
            if sid in old._last_ts:
                self._last_ts[sid] = old._last_ts[sid]
            if same and sid in old._cascades and (_detection(old.config.stream(sid))
                                                  == _detection(self.config.stream(sid))):
                cas.load_state(old._cascades[sid].state_dict())
                self._policies[sid].load_state(old._policies[sid].state_dict())
                kept.append(sid)
        return kept

    def rebaseline(self, stream: str | None = None) -> list[str]:
        targets = [stream] if stream is not None else list(self._cascades)
        done = []
        for sid in targets:
            if sid in self._cascades:
                self._cascades[sid].rebaseline()
                done.append(sid)
        return done

    # ------------------------------------------------------------------ stats
    def stats(self) -> dict[str, Any]:
        scored = [0, 0, 0]
        escalated = [0, 0, 0]
        sampled = imputed = 0
        streams: dict[str, Any] = {}
        for sid, cas in self._cascades.items():
            c = cas.counts
            for i in range(3):
                scored[i] += c["scored"][i]
                escalated[i] += c["escalated"][i]
            sampled += c["sampled"]
            imputed += c["imputed"]
            streams[sid] = {
                "warming_up": cas.warming_up,
                "stage1_warming_up": cas.stat.warming_up if cas.stat is not None else None,
                "stage2_warming_up": cas.river.warming_up if cas.river is not None else None,
                "stage3_model": cas.model is not None,
                "rebaselines": cas.stat.rebaselines if cas.stat is not None else 0,
                "alert_active": self._policies[sid].active,
            }
        total = max(scored[0] or scored[1] or scored[2], 1)
        model = self._model
        return {
            "points_in": self.points_in,
            "points_learn_only": self.points_learn_only,
            "points_rejected": self.rejects.total(),
            "rejected": self.rejects.as_dict(),
            "scored": {"stage1": scored[0], "stage2": scored[1], "stage3": scored[2]},
            "escalated": {"to_stage2": escalated[1], "to_stage3": escalated[2],
                          "sampled": sampled},
            "escalation_rate": {"stage2": scored[1] / total, "stage3": scored[2] / total},
            "imputed": imputed,
            "alerts": dict(sorted(self.alert_counts.items())),
            "clock_jumps": {"backward": self.clock_jumps["backward"],
                            "forward": self.clock_jumps["forward"]},
            "model": model.describe() if model is not None else None,
            "provider": model.provider if model is not None else None,
            "streams": streams,
        }

    # ------------------------------------------------------------------ checkpoint
    def fingerprint(self) -> str:
        zscore = asdict(self.config.detectors.zscore)
        if not zscore["ewma_lambda"]:  # EWMA view off: checkpoints from before it still fit
            del zscore["ewma_lambda"], zscore["ewma_threshold"]
        det = {
            "detectors": zscore | {"river": asdict(self.config.detectors.river)},
            "streams": [{k: v for k, v in asdict(s).items() if k != "stale_after_s"}
                        for s in self.config.streams],
            "alerts": asdict(self.config.alerts),
        }
        return hashlib.sha256(json.dumps(det, sort_keys=True, default=str).encode()).hexdigest()

    def save(self, path: str | Path) -> int:
        state = {
            "cascades": {sid: c.state_dict() for sid, c in self._cascades.items()},
            "policies": {sid: p.state_dict() for sid, p in self._policies.items()},
            "last_ts": dict(self._last_ts),
            "seq": self._seq,
        }
        return save_checkpoint(path, state, self.fingerprint())

    def restore(self, path: str | Path) -> bool:
        """Restore from a checkpoint; on any problem log why, keep fresh state, return False."""

        def apply(state: dict[str, Any]) -> None:
            if set(state["cascades"]) != set(self._cascades):
                raise CheckpointError(f"{path}: streams differ from the configuration")
            for sid, cas in self._cascades.items():
                cas.load_state(state["cascades"][sid])
                self._policies[sid].load_state(state["policies"][sid])
            self._last_ts = dict(state["last_ts"])
            self._seq = int(state["seq"])

        def fresh(exc: Exception) -> None:
            log.warning("checkpoint rejected, starting fresh: %s", exc)
            new = Engine(self.config, self._model, self.sinks)
            self.__dict__.update({k: v for k, v in new.__dict__.items()
                                  if k not in ("rejects", "points_in")})

        if restore_into(path, self.fingerprint(), apply, fresh) is None:
            return False
        log.info("restored detector state from %s", path)
        return True

