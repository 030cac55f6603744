"""The alert policy: turns fused scores into alert episodes (raise / update / clear).

* **raise** when at least ``k`` of the last ``n`` scores reached ``threshold`` (one
  outlier is noise; a recurring group is the anomaly) and no cooldown is running;
* **update** when the episode's severity goes up;
* **clear** after ``clear_after`` consecutive scores below ``clear_threshold``
  (hysteresis: ``clear_threshold <= threshold``), then ``cooldown_s`` seconds without a
  new raise on this stream.

Severity compares the score's odds ``s / (1 - s)`` with the threshold's odds: with the
calibration ``s = r / (1 + r)`` used by every stage, the odds *are* the multiple of the
stage threshold, so medium / high / critical at 1x / 1.5x / 2x the threshold mean what
the source material means by them, whatever the stage.

>>> from agent.config import AlertConfig
>>> pol = AlertPolicy(AlertConfig(k=2, n=3, clear_after=2), stream="s", channels=("a",))
>>> [pol.update(float(t), s, 1, None)[0] for t, s in enumerate([0.1, 0.7, 0.8, 0.2, 0.1, 0.1])]
[False, False, True, True, False, False]
"""

from __future__ import annotations

import math
import uuid
from collections import deque
from collections.abc import Callable, Sequence

from agent.config import AlertConfig
from agent.types import Alert, AlertEvent, Severity, Stage

_NAMESPACE = uuid.UUID("6f1c2b1e-5d0b-4c52-9a57-2f3b8f0f6a11")


def _odds(s: float) -> float:
    s = min(max(s, 0.0), 1.0 - 1e-12)
    return s / (1.0 - s)


class AlertPolicy:
    """k-of-n raise, hysteresis clear and cooldown for one stream."""

    def __init__(
        self,
        config: AlertConfig,
        stream: str,
        channels: Sequence[str],
        agent_id: str = "edge-agent",
        next_seq: Callable[[], int] | None = None,
    ) -> None:
        self.config = config
        self.stream = stream
        self.channels = tuple(channels)
        self.agent_id = agent_id
        self._seq = 0
        self._next_seq = next_seq or self._local_seq
        self._recent: deque[bool] = deque(maxlen=config.n)
        self._hits = 0
        self._active = False
        self._episodes = 0
        self._cooldown_until = -math.inf
        self._below = 0
        self._start = 0.0
        self._peak = 0.0
        self._peak_stage = Stage.NONE
        self._severity = Severity.MEDIUM
        self._evidence = [0.0] * len(self.channels)
        self._id = ""
        self._thr_odds = _odds(config.threshold)

    def _local_seq(self) -> int:
        self._seq += 1
        return self._seq

    @property
    def active(self) -> bool:
        return self._active

    def severity_of(self, score: float) -> Severity:
        ratio = _odds(score) / self._thr_odds
        sev = self.config.severity
        if ratio >= sev.critical:
            return Severity.CRITICAL
        if ratio >= sev.high:
            return Severity.HIGH
        return Severity.MEDIUM

    def _top_channels(self) -> tuple[str, ...]:
        ev = self._evidence
        order = sorted(range(len(ev)), key=lambda i: -ev[i])
        return tuple(self.channels[i] for i in order[: self.config.top_channels] if ev[i] > 0)

    def _merge(self, evidence: Sequence[float] | None) -> None:
        if evidence is not None:
            self._evidence = [
                max(a, b) if b == b else a for a, b in zip(self._evidence, evidence, strict=True)
            ]

    def _event(self, event: AlertEvent, ts: float, score: float) -> Alert:
        return Alert(
            alert_id=self._id,
            event=event,
            seq=self._next_seq(),
            stream=self.stream,
            severity=self._severity,
            score=score,
            peak_score=self._peak,
            threshold=self.config.threshold,
            stage=self._peak_stage,
            channels=self._top_channels(),
            start=self._start,
            end=ts if event is AlertEvent.CLEAR else None,
            ts=ts,
        )

    def update(
        self, ts: float, score: float, stage: int, evidence: Sequence[float] | None
    ) -> tuple[bool, list[Alert]]:
        """Feed one fused score; return (point is in an alert episode, events emitted)."""
        cfg = self.config
        hit = score >= cfg.threshold
        if len(self._recent) == self._recent.maxlen and self._recent[0]:
            self._hits -= 1
        self._recent.append(hit)
        self._hits += hit
        events: list[Alert] = []
        if not self._active:
            if self._hits >= cfg.k and ts >= self._cooldown_until:
                self._episodes += 1
                self._active = True
                self._start = ts
                self._peak = score
                self._peak_stage = Stage(stage)
                self._severity = self.severity_of(score)
                self._evidence = [0.0] * len(self.channels)
                self._below = 0
                self._merge(evidence)
                key = f"{self.agent_id}/{self.stream}/{ts!r}/{self._episodes}"
                self._id = str(uuid.uuid5(_NAMESPACE, key))
                events.append(self._event(AlertEvent.RAISE, ts, score))
            return self._active, events
        # active episode
        if hit:
            self._merge(evidence)
        if score > self._peak:
            self._peak, self._peak_stage = score, Stage(stage)
            sev = self.severity_of(score)
            if sev > self._severity:
                self._severity = sev
                events.append(self._event(AlertEvent.UPDATE, ts, score))
        self._below = self._below + 1 if score < cfg.clear_threshold else 0
        if self._below >= cfg.clear_after:
            events.append(self._event(AlertEvent.CLEAR, ts, score))
            self._active = False
            self._cooldown_until = ts + cfg.cooldown_s
            self._recent.clear()
            self._hits = 0
            return False, events
        return True, events

    def shift_time(self, delta: float) -> None:
        """The stream's data clock jumped by ``delta`` seconds: move the running cooldown
        with it, so a backward jump does not hold alerts back for the jump's length."""
        if math.isfinite(self._cooldown_until):
            self._cooldown_until += delta

    def state_dict(self) -> dict[str, object]:
        return dict(vars(self), _next_seq=None)

    def load_state(self, state: dict[str, object]) -> None:
        keep = self._next_seq
        for k, v in state.items():
            if k != "_next_seq":
                setattr(self, k, v)
        self._next_seq = keep
