"""Value types of event and log streams: one event in, one decision out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.types import Stage


@dataclass(frozen=True, slots=True)
class EventPoint:
    """One discrete event of a source: a PLC alarm code, a state change, a log template.

    ``attrs`` carries what a log line adds (``level``, ``component``, ``template``,
    ``line``); a plain event has none.

    >>> EventPoint(ts=1.0, source="plc1", event="VALVE_OPEN").event
    'VALVE_OPEN'
    """

    ts: float
    source: str
    event: str
    attrs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EventDecision:
    """What the event cascade and the policy said about one event."""

    ts: float
    source: str
    event: str
    score: float
    stage: Stage
    alert: bool
    flagged: bool = False
    reason: str = ""
    escalated: bool = False
    expected_top_k: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)
