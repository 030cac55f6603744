"""Stage 1, second view: the z-score of the *change* from the previous accepted value.

A spike riding on a seasonal or trending signal can sit well inside the level's spread
(a +15 spike on a sine of amplitude 10 and noise 2 is a z of ~2 on the level) while the
step it makes is far outside the spread of normal steps (z ~5). The delta gate keeps a
:class:`~agent.detectors.zscore.StatGate` over ``x - previous``, where ``previous`` is the
last value stage 1 accepted, so the point after a spike is compared with the value
before the spike (its return is no second anomaly). A channel flagged more than
``hold`` points in a row moves ``previous`` on anyway: a level shift is then judged by
the level gate alone (and its own re-baseline rule), not flagged twice for ever.

>>> from agent.config import ZScoreConfig
>>> import math
>>> g = DeltaGate(ZScoreConfig(window=20, min_points=10), 1)
>>> for i in range(40):
...     v = math.sin(i / 3) * 10 + 0.1 * ((i * 7) % 3)
...     _ = g.score_one([v]); g.learn_one([v], g.flagged)
>>> g.score_one([math.sin(40 / 3) * 10 + 6.0]) > 0.5
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from agent.config import ChannelConfig, ZScoreConfig
from agent.detectors.zscore import StatGate


class DeltaGate:
    """Rolling + robust z-score of first differences against the last accepted value."""

    def __init__(
        self,
        config: ZScoreConfig,
        n_channels: int,
        channels: Sequence[ChannelConfig] | None = None,
        hold: int = 3,
    ) -> None:
        self.config = config
        self.hold = hold
        self.gate = StatGate(config, n_channels, channels)
        self._prev = np.full(n_channels, np.nan)
        self._held = np.zeros(n_channels, dtype=np.int64)
        self._d = np.full(n_channels, np.nan)

    @property
    def warming_up(self) -> bool:
        return self.gate.warming_up

    @property
    def last_ratios(self) -> np.ndarray:
        return self.gate.last_ratios

    @property
    def flagged(self) -> np.ndarray:
        return self.gate.last_ratios >= 1.0

    def score_one(self, x: Sequence[float] | np.ndarray) -> float:
        self._d = np.asarray(x, dtype=float) - self._prev
        return self.gate.score_one(self._d)

    def learn_one(
        self, x: Sequence[float] | np.ndarray, flagged: Sequence[bool] | np.ndarray
    ) -> None:
        """Learn the step just scored; ``flagged``: stage 1's verdict per channel."""
        xv = np.asarray(x, dtype=float)
        self.gate.learn_one(self._d)
        flags = np.asarray(flagged, dtype=bool)
        finite = np.isfinite(xv)
        take = finite & (~flags | (self._held >= self.hold))
        self._prev = np.where(take, xv, self._prev)
        self._held = np.where(take, 0, self._held + (finite & flags))

    def learn_only(self, x: Sequence[float] | np.ndarray) -> None:
        """Warm-up: learn the step from the previous value without scoring."""
        xv = np.asarray(x, dtype=float)
        self.gate.learn_one(xv - self._prev, np.zeros(len(xv), dtype=bool))
        self._prev = np.where(np.isfinite(xv), xv, self._prev)
        self._held[:] = 0

    def rebaseline_all(self) -> None:
        self.gate.rebaseline_all()
        self._prev[:] = np.nan
        self._held[:] = 0

    @property
    def rebaselines(self) -> int:
        return self.gate.rebaselines

    def state_dict(self) -> dict[str, Any]:
        return {"gate": self.gate.state_dict(), "prev": self._prev.copy(),
                "held": self._held.copy()}

    def load_state(self, state: dict[str, Any]) -> None:
        if state["prev"].shape != self._prev.shape:
            raise ValueError("delta gate state has another number of channels")
        self.gate.load_state(state["gate"])
        self._prev = state["prev"].copy()
        self._held = state["held"].copy()
