"""The ``events:`` section: event and log sources, stage-1 rarity, the sequence model.

Same rules as :mod:`agent.config`: frozen dataclasses, a default for every field,
``__post_init__`` checks raising :class:`~agent.errors.ConfigError` with the key.
``configs/default.yaml`` documents every key.

>>> SequenceConfig(top_k=2)
Traceback (most recent call last):
...
agent.errors.ConfigError: top_k: must be >= 3, got 2
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from agent.errors import ConfigError
from agent.topics import validate_filter

if TYPE_CHECKING:
    from agent.config import AlertConfig

_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _check(ok: bool, key: str, reason: str) -> None:
    if not ok:
        raise ConfigError(key, reason)


@dataclass(frozen=True)
class EventSourceConfig:
    """One event or log source (a PLC's alarm channel, a service's log)."""

    id: str
    kind: Literal["events", "logs"] = "events"
    topic: str | None = None
    sequence: bool = True

    def __post_init__(self) -> None:
        _check(bool(_ID.match(self.id)), "id", f"must match [A-Za-z0-9_-]{{1,64}}, got {self.id!r}")
        if self.topic is not None:
            try:
                validate_filter(self.topic)
            except ValueError as exc:
                raise ConfigError("topic", str(exc)) from None


@dataclass(frozen=True)
class RarityConfig:
    enabled: bool = True
    min_events: int = 200
    half_life: float = 5000.0
    short_half_life: float = 50.0
    rare_share: float = 0.0
    share_shift: float = 0.02
    share_z: float = 4.0
    share_ratio: float = 8.0
    direction: Literal["up", "down", "both"] = "up"
    relearn_after: int = 20
    max_values: int = 1000

    def __post_init__(self) -> None:
        _check(self.min_events >= 1, "min_events", f"must be >= 1, got {self.min_events}")
        _check(self.half_life >= 10, "half_life", f"must be >= 10, got {self.half_life}")
        _check(2 <= self.short_half_life < self.half_life, "short_half_life",
               f"must be in [2, half_life={self.half_life}), got {self.short_half_life}")
        _check(0 <= self.rare_share < 1, "rare_share", f"must be in [0, 1), got {self.rare_share}")
        _check(0 < self.share_shift < 1, "share_shift",
               f"must be in (0, 1), got {self.share_shift}")
        _check(self.share_z > 0, "share_z", f"must be > 0, got {self.share_z}")
        _check(self.share_ratio >= 1, "share_ratio", f"must be >= 1, got {self.share_ratio}")
        _check(self.relearn_after >= 1, "relearn_after", "must be >= 1")
        _check(10 <= self.max_values <= 1_000_000, "max_values",
               f"must be in 10..1000000, got {self.max_values}")


@dataclass(frozen=True)
class SequenceConfig:
    enabled: bool = False
    model: str | None = None
    history: int | None = None
    top_k: int | None = None
    min_prob: float | None = None
    max_lift: float = 0.1
    escalate: Literal["transition", "always"] = "transition"
    escalate_below: float = 0.5
    escalate_min_row: float = 20.0
    session_key: str = "session"
    max_sessions: int = 1000
    providers: tuple[Literal["cuda", "tensorrt", "openvino", "cpu"], ...] = ("cpu",)
    intra_op_threads: int = 1
    verify_golden: bool = True

    def __post_init__(self) -> None:
        _check(not self.enabled or bool(self.model), "model", "is required when enabled")
        _check(self.history is None or 1 <= self.history <= 1000, "history",
               f"must be in 1..1000, got {self.history}")
        _check(self.top_k is None or self.top_k >= 3, "top_k", f"must be >= 3, got {self.top_k}")
        _check(self.min_prob is None or 0 <= self.min_prob < 1, "min_prob",
               f"must be null or in [0, 1), got {self.min_prob}")
        _check(0 <= self.max_lift < 1, "max_lift", f"must be in [0, 1), got {self.max_lift}")
        _check(0 < self.escalate_below <= 1, "escalate_below",
               f"must be in (0, 1], got {self.escalate_below}")
        _check(self.escalate_min_row >= 0, "escalate_min_row", "must be >= 0")
        _check(len(self.session_key) <= 64, "session_key", "must be at most 64 characters")
        _check(1 <= self.max_sessions <= 1_000_000, "max_sessions",
               f"must be in 1..1000000, got {self.max_sessions}")
        _check(len(self.providers) >= 1, "providers", "needs at least one provider")
        _check(self.intra_op_threads >= 0, "intra_op_threads", "must be >= 0")


@dataclass(frozen=True)
class LogsConfig:
    """Log sources (``kind: logs``): line format, template miner, level/component rarity.

    ``line_format`` is ``auto`` (a few common formats, :mod:`agent.logs.parse`) or a regex
    with named groups ``ts``, ``level``, ``component``, ``session`` and (required)
    ``message``. ``session_pattern`` finds a session id (job, block, batch) in the message:
    its first group, else the whole match.
    """

    line_format: str = "auto"
    depth: int = 4
    similarity: float = 0.5
    max_children: int = 100
    max_clusters: int = 2000
    max_line_chars: int = 4096
    max_tokens: int = 200
    session_pattern: str | None = None
    state_path: str | None = None
    save_every: int = 10_000
    level_rarity: bool = True
    component_rarity: bool = True

    def __post_init__(self) -> None:
        for key in ("line_format", "session_pattern"):
            value = getattr(self, key)
            if value is None or (key == "line_format" and value == "auto"):
                continue
            try:
                rx = re.compile(value)
            except re.error as exc:
                raise ConfigError(key, f"invalid regular expression: {exc}") from None
            _check(key != "line_format" or "message" in rx.groupindex, key,
                   "needs a (?P<message>...) group (or auto)")
        _check(16 <= self.max_line_chars <= 1_000_000, "max_line_chars",
               f"must be in 16..1000000, got {self.max_line_chars}")
        _check(1 <= self.max_tokens <= 10_000, "max_tokens",
               f"must be in 1..10000, got {self.max_tokens}")
        _check(self.save_every >= 0, "save_every", f"must be >= 0, got {self.save_every}")
        _check(3 <= self.depth <= 10, "depth", f"must be in 3..10, got {self.depth}")
        _check(0 < self.similarity <= 1, "similarity", f"must be in (0, 1], got {self.similarity}")
        _check(self.max_children >= 2, "max_children", "must be >= 2")
        _check(10 <= self.max_clusters <= 1_000_000, "max_clusters",
               f"must be in 10..1000000, got {self.max_clusters}")


@dataclass(frozen=True)
class EventAlertConfig:
    """The alert policy of event sources (see ``alerts:``); one event can raise."""

    threshold: float = 0.5
    k: int = 1
    n: int = 1
    clear_threshold: float = 0.4
    clear_after: int = 5
    cooldown_s: float = 0.0

    def __post_init__(self) -> None:
        self.to_alert_config()

    def to_alert_config(self) -> AlertConfig:
        from agent.config import AlertConfig

        return AlertConfig(threshold=self.threshold, k=self.k, n=self.n,
                           clear_threshold=self.clear_threshold, clear_after=self.clear_after,
                           cooldown_s=self.cooldown_s, top_channels=1)


@dataclass(frozen=True)
class EventsConfig:
    sources: tuple[EventSourceConfig, ...] = ()
    max_event_chars: int = 256
    live: bool = True
    max_batch: int = 1000
    rarity: RarityConfig = field(default_factory=RarityConfig)
    sequence: SequenceConfig = field(default_factory=SequenceConfig)
    logs: LogsConfig = field(default_factory=LogsConfig)
    alerts: EventAlertConfig = field(default_factory=EventAlertConfig)

    def __post_init__(self) -> None:
        ids = [s.id for s in self.sources]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        _check(not dup, "sources", f"duplicate source ids {dup}")
        _check(8 <= self.max_event_chars <= 10_000, "max_event_chars", "must be in 8..10000")
        _check(1 <= self.max_batch <= 100_000, "max_batch", "must be in 1..100000")

    def source(self, source_id: str) -> EventSourceConfig | None:
        for s in self.sources:
            if s.id == source_id:
                return s
        return None
