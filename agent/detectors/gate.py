"""Stage 1 as the cascade runs it: the level of each channel and, optionally, its step.

With ``delta: true`` every channel is watched twice by one
:class:`~agent.detectors.zscore.StatGate` of width ``2 x channels``: columns ``[0, C)``
hold the values, columns ``[C, 2C)`` the change of each value from the last value
stage 1 accepted. One gate means one set of vector operations per point for both views.

With ``stuck_after: N`` (> 0) a channel of a *continuous* signal (at least half of its
baseline values distinct) that repeats exactly the same value N times in a row is
flagged too: a stuck or dropped-out sensor (reads 0, holds its last value) is one of the
commonest field faults, and no z-score sees it when the stuck value lies inside the
normal range. Quantised channels (a flow meter reading 31/32/33) repeat values all the
time and are left to the z-scores.

Why the step: a spike riding on a seasonal or trending signal can sit well inside the
level's spread (+15 on a sine of amplitude 10 with noise 2 is a z of ~2) while the step
it makes is far outside the spread of normal steps (z ~5). ``previous`` is the last
*accepted* value, so the point after a spike is compared with the value before the spike
(its return is no second anomaly); after ``hold`` flagged points in a row ``previous``
follows the new level, so a lasting shift is judged by the level view (and its
re-baseline rule) alone.

>>> import math
>>> from agent.config import ZScoreConfig
>>> g = Stage1Gate(ZScoreConfig(window=20, min_points=10), 1)
>>> for i in range(40):
...     v = math.sin(i / 3) * 10 + 0.1 * ((i * 7) % 3)
...     _ = g.score_one([v]); g.learn_one([v])
>>> g.score_one([math.sin(40 / 3) * 10 + 6.0]) > 0.5   # inside the level's spread
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from agent.config import ChannelConfig, ZScoreConfig
from agent.detectors.zscore import StatGate

HOLD = 3


class Stage1Gate:
    """Level (+ step) z-scores of every channel of one stream."""

    def __init__(
        self,
        config: ZScoreConfig,
        n_channels: int,
        channels: Sequence[ChannelConfig] | None = None,
    ) -> None:
        self.config = config
        self.n_channels = c = n_channels
        self.delta = config.delta
        chans = list(channels) if channels is not None else None
        if self.delta:
            step_chans = (
                [ChannelConfig(ch.name, ch.direction, ch.abs_tolerance, None) for ch in chans]
                if chans is not None else None
            )
            both = chans + step_chans if chans is not None and step_chans else None
            self.gate = StatGate(config, 2 * c, both)
        else:
            self.gate = StatGate(config, c, chans)
        self._prev = np.full(c, np.nan)
        self._held = np.zeros(c, dtype=np.int64)
        self._ext = np.full(2 * c if self.delta else c, np.nan)
        self._last_raw = np.full(c, np.nan)
        self._run = np.zeros(c, dtype=np.int64)  # identical values in a row, current included
        self._run_now = np.zeros(c, dtype=np.int64)
        self.last_ratios = np.zeros(c)
        self.flagged = np.zeros(c, dtype=bool)

    @property
    def ready(self) -> np.ndarray:
        """Per channel: is the level baseline ready to score?"""
        return self.gate.ready[: self.n_channels]

    @property
    def warming_up(self) -> bool:
        return not bool(self.gate.ready[: self.n_channels].any())

    @property
    def rebaselines(self) -> int:
        return self.gate.rebaselines

    def center(self) -> np.ndarray:
        return self.gate.center()[: self.n_channels]

    def _extend(self, x: np.ndarray) -> np.ndarray:
        if not self.delta:
            return x
        ext = self._ext
        ext[: self.n_channels] = x
        ext[self.n_channels :] = x - self._prev
        return ext

    def score_one(self, x: Sequence[float] | np.ndarray) -> float:
        """Largest level or step ratio over the channels, as ``r / (1 + r)``."""
        xv = np.asarray(x, dtype=float)
        s = self.gate.score_one(self._extend(xv))
        r = self.gate.last_ratios
        c = self.n_channels
        ratios = np.maximum(r[:c], r[c:]) if self.delta else r
        self._run_now = np.where(xv == self._last_raw, self._run + 1, 1)
        n = self.config.stuck_after
        if n:
            continuous = self.gate.distinct[:c] >= 0.5
            stuck = np.where(continuous & (self._run_now >= n), self._run_now / n, 0.0)
            if stuck.any():
                ratios = np.maximum(ratios, stuck)
                peak = float(ratios.max())
                s = max(s, peak / (1.0 + peak))
        self.last_ratios = ratios
        self.flagged = ratios >= 1.0
        return s

    def learn_one(self, x: Sequence[float] | np.ndarray) -> None:
        """Learn the point just scored (each view keeps its own flagged values out)."""
        xv = np.asarray(x, dtype=float)
        self.gate.learn_one(self._extend(xv))
        self._follow(xv, self.flagged)
        finite = np.isfinite(xv)
        self._run = np.where(finite, self._run_now, self._run)
        self._last_raw = np.where(finite, xv, self._last_raw)

    def learn_only(self, x: Sequence[float] | np.ndarray) -> None:
        """Warm-up: learn without scoring (everything finite is accepted)."""
        xv = np.asarray(x, dtype=float)
        ext = self._extend(xv)
        self.gate.learn_one(ext, np.zeros(len(ext), dtype=bool))
        self._follow(xv, np.zeros(self.n_channels, dtype=bool))
        finite = np.isfinite(xv)
        run = np.where(xv == self._last_raw, self._run + 1, 1)
        self._run = np.where(finite, run, self._run)
        self._last_raw = np.where(finite, xv, self._last_raw)

    def _follow(self, x: np.ndarray, flags: np.ndarray) -> None:
        if not self.delta:
            return
        finite = np.isfinite(x)
        take = finite & (~flags | (self._held >= HOLD))
        self._prev = np.where(take, x, self._prev)
        self._held = np.where(take, 0, self._held + (finite & flags))

    def rebaseline_all(self) -> None:
        self.gate.rebaseline_all()
        self._prev[:] = np.nan
        self._held[:] = 0

    def state_dict(self) -> dict[str, Any]:
        return {"gate": self.gate.state_dict(), "prev": self._prev.copy(),
                "held": self._held.copy(), "delta": self.delta,
                "stuck": (self._last_raw.copy(), self._run.copy())}

    def load_state(self, state: dict[str, Any]) -> None:
        if state["delta"] != self.delta or state["prev"].shape != self._prev.shape:
            raise ValueError("stage-1 state does not match the configuration")
        self.gate.load_state(state["gate"])
        self._prev = state["prev"].copy()
        self._held = state["held"].copy()
        self._last_raw, self._run = (a.copy() for a in state["stuck"])
