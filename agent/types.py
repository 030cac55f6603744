"""Value types shared by every stage: points in, stage results, alerts out.

The core never reads a clock: time arrives inside the :class:`Point`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Point:
    """One observation of a stream: a timestamp (epoch seconds), a stream id, channel values.

    >>> p = Point(ts=1.0, stream="pump", values={"temp": 21.5})
    >>> p.values["temp"]
    21.5
    """

    ts: float
    stream: str
    values: Mapping[str, float]


class Stage(enum.IntEnum):
    """The deepest stage that scored a point (0 = rejected or still warming up)."""

    NONE = 0
    STATISTICAL = 1
    RIVER = 2
    ONNX = 3


class Severity(enum.IntEnum):
    """Alert severity; the values order them."""

    MEDIUM = 1
    HIGH = 2
    CRITICAL = 3

    @property
    def label(self) -> str:
        return self.name.lower()


class AlertEvent(enum.StrEnum):
    RAISE = "raise"
    UPDATE = "update"
    CLEAR = "clear"


@dataclass(frozen=True, slots=True)
class Decision:
    """What the cascade and the policy said about one point."""

    ts: float
    stream: str
    score: float
    stage: Stage
    alert: bool
    escalated: tuple[bool, bool] = (False, False)


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert event (raise, update or clear) of one episode.

    ``seq`` counts events of this agent monotonically; ``alert_id`` is stable for the
    episode so a consumer can de-duplicate and join raise/update/clear.
    """

    alert_id: str
    event: AlertEvent
    seq: int
    stream: str
    severity: Severity
    score: float
    peak_score: float
    threshold: float
    stage: Stage
    channels: tuple[str, ...]
    start: float
    end: float | None
    ts: float
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id,
            "event": self.event.value,
            "seq": self.seq,
            "stream": self.stream,
            "severity": self.severity.label,
            "score": round(self.score, 6),
            "peak_score": round(self.peak_score, 6),
            "threshold": self.threshold,
            "stage": int(self.stage),
            "stage_name": self.stage.name.lower(),
            "channels": list(self.channels),
            "start": self.start,
            "end": self.end,
            "ts": self.ts,
            **dict(self.extra),
        }
