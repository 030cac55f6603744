"""Stage 1: a per-channel statistical gate (rolling z-score and robust modified z-score).

Every channel of a stream keeps a ring of its last ``window`` *accepted* values plus the
same values in sorted order. From them the gate reads the rolling mean / standard
deviation (running sums, O(1) per point), the median (O(1) from the sorted list, kept
sorted with O(log window) search and an O(window) memmove in C) and the MAD (recomputed
every ``robust_refresh`` accepted points, so its cost is amortised). Memory is
O(window x channels) and fixed. Per-point work is plain Python over the channels: for
the handful of channels a stream has, that is several times cheaper than numpy's
per-call overhead (measured in benchmarks/bench_core.py).

Rules (MISSION.md item 3):

* modified z = 0.6745 (x - median) / MAD; when MAD is 0 (quantised or flat signals) the
  scale falls back to 1.2533 x mean absolute deviation, then to a tiny epsilon;
* a deviation smaller than ``max(abs_tolerance, rel_tolerance * |centre|)`` is no
  anomaly, however small the spread of the baseline is;
* direction per channel: ``up`` ignores drops, ``down`` ignores rises;
* guard: values the gate flags do not enter the baseline, but they are kept in a small
  quarantine; when a channel has been flagged ``rebaseline_after`` points in a row the
  level shift is accepted as the new normal and the baseline restarts from the
  quarantined values, so a stream can never stay in alarm for ever.

Scores are *threshold ratios*: ``|z| / threshold`` per channel, so 1.0 means "at the
threshold"; the stage score is the largest ratio mapped to [0, 1) as ``r / (1 + r)``.

>>> from agent.config import ZScoreConfig
>>> gate = StatGate(ZScoreConfig(window=20, min_points=10), n_channels=1)
>>> for v in [10.0, 10.2, 9.9, 10.1, 10.0, 9.8, 10.1, 10.0, 9.9, 10.2, 10.0]:
...     _ = gate.score_one([v]); gate.learn_one([v])
>>> gate.score_one([10.05]) < 0.5
True
>>> gate.score_one([14.0]) > 0.9
True
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections.abc import Sequence
from typing import Any

import numpy as np

from agent.config import ChannelConfig, ZScoreConfig

_DIRECTIONS = {"both": 0, "up": 1, "down": -1}
_EPS = 1e-12


class _Channel:
    """Baseline of one channel: ring + sorted copy + running sums + quarantine."""

    __slots__ = (
        "abs_tol", "count", "direction", "head", "mad_scale", "median_ok", "quarantine",
        "rel_tol", "ring", "since_refresh", "sorted", "streak", "sum", "sumsq",
    )

    def __init__(self, window: int, persistence: int, direction: int, abs_tol: float,
                 rel_tol: float) -> None:
        self.ring = [0.0] * window
        self.sorted: list[float] = []
        self.head = 0
        self.count = 0
        self.sum = 0.0
        self.sumsq = 0.0
        self.mad_scale = 1.0
        self.median_ok = False
        self.since_refresh = 0
        self.quarantine = [0.0] * persistence
        self.streak = 0
        self.direction = direction
        self.abs_tol = abs_tol
        self.rel_tol = rel_tol

    def median(self) -> float:
        s, n = self.sorted, len(self.sorted)
        mid = n >> 1
        return s[mid] if n & 1 else 0.5 * (s[mid - 1] + s[mid])

    def refresh(self) -> None:
        """Recompute the MAD (and the exact sums, to stop rounding drift)."""
        med = self.median()
        vals = np.asarray(self.sorted)
        dev = np.abs(vals - med)
        mad = float(np.median(dev))
        if mad <= 0:
            mad = 1.2533 * 0.6745 * float(dev.mean())
        self.mad_scale = max(mad, _EPS * (1.0 + abs(med)))
        self.sum = float(vals.sum())
        self.sumsq = float(vals @ vals)
        self.since_refresh = 0
        self.median_ok = True

    def push(self, v: float, window: int) -> None:
        if self.count >= window:
            old = self.ring[self.head]
            del self.sorted[bisect_left(self.sorted, old)]
            self.sum -= old
            self.sumsq -= old * old
        else:
            self.count += 1
        self.ring[self.head] = v
        self.head = (self.head + 1) % window
        insort(self.sorted, v)
        self.sum += v
        self.sumsq += v * v
        self.since_refresh += 1

    def reset(self, values: Sequence[float], window: int) -> None:
        vals = list(values)[-window:]
        self.ring = vals + [0.0] * (window - len(vals))
        self.sorted = sorted(vals)
        self.count = len(vals)
        self.head = self.count % window
        self.sum = math.fsum(vals)
        self.sumsq = math.fsum(v * v for v in vals)
        self.median_ok = False
        self.since_refresh = 0
        self.streak = 0


class StatGate:
    """Rolling + robust z-score over every channel of one stream."""

    def __init__(
        self,
        config: ZScoreConfig,
        n_channels: int,
        channels: Sequence[ChannelConfig] | None = None,
    ) -> None:
        self.config = config
        self.n_channels = n_channels
        chans = list(channels) if channels is not None else [None] * n_channels
        if len(chans) != n_channels:
            raise ValueError(f"{len(chans)} channel configs for {n_channels} channels")
        self._ch = [
            _Channel(
                config.window,
                config.rebaseline_after,
                _DIRECTIONS[(c.direction if c and c.direction else config.direction)],
                c.abs_tolerance if c and c.abs_tolerance is not None else config.abs_tolerance,
                c.rel_tolerance if c and c.rel_tolerance is not None else config.rel_tolerance,
            )
            for c in chans
        ]
        self._rolling = config.method in ("rolling", "both")
        self._robust = config.method in ("robust", "both")
        # Outputs of the last score_one, reused by learn_one (score-then-learn).
        self.last_ratios = [0.0] * n_channels
        self._flagged = [False] * n_channels
        self.rebaselines = 0

    # ------------------------------------------------------------------ state queries
    @property
    def ready(self) -> list[bool]:
        """Per channel: has the baseline enough points to score?"""
        m = self.config.min_points
        return [c.count >= m for c in self._ch]

    @property
    def warming_up(self) -> bool:
        m = self.config.min_points
        return not any(c.count >= m for c in self._ch)

    def center(self) -> list[float]:
        """Current baseline centre per channel (median; 0.0 for an empty baseline)."""
        return [c.median() if c.count else 0.0 for c in self._ch]

    # ------------------------------------------------------------------ scoring
    def score_one(self, x: Sequence[float]) -> float:
        """Score one vector of channel values (NaN = missing); higher is more anomalous."""
        cfg = self.config
        m = cfg.min_points
        thr, rthr = cfg.threshold, cfg.robust_threshold
        ratios = self.last_ratios
        flagged = self._flagged
        peak = 0.0
        for i, ch in enumerate(self._ch):
            v = x[i]
            n = ch.count
            if n < m or v != v or v in (math.inf, -math.inf):
                ratios[i] = 0.0
                flagged[i] = False
                continue
            r = 0.0
            if self._robust:
                if not ch.median_ok or ch.since_refresh >= cfg.robust_refresh:
                    ch.refresh()
                center = ch.median()
            else:
                center = ch.sum / n
            tol = max(ch.abs_tol, ch.rel_tol * abs(center))
            d = ch.direction
            if self._rolling:
                mean = ch.sum / n
                dev = v - mean
                dev = abs(dev) if d == 0 else max(dev * d, 0.0)
                if dev > tol:
                    var = ch.sumsq / n - mean * mean
                    std = math.sqrt(var) if var > 0 else 0.0
                    r = dev / max(std, _EPS * (1.0 + abs(mean))) / thr
            if self._robust:
                dev = v - center
                dev = abs(dev) if d == 0 else max(dev * d, 0.0)
                if dev > tol:
                    rr = 0.6745 * dev / ch.mad_scale / rthr
                    r = max(r, rr)
            ratios[i] = r
            flagged[i] = r >= 1.0
            if r > peak:
                peak = r
        return peak / (1.0 + peak)

    # ------------------------------------------------------------------ learning
    def learn_one(self, x: Sequence[float], flagged: Sequence[bool] | None = None) -> None:
        """Add the values the gate accepts to the baseline; quarantine the flagged ones."""
        guard = self.config.guard
        flags = self._flagged if flagged is None else flagged
        w, p = self.config.window, self.config.rebaseline_after
        for i, ch in enumerate(self._ch):
            v = x[i]
            if v != v or v in (math.inf, -math.inf):
                continue
            if guard and flags[i]:
                ch.quarantine[ch.streak % p] = v
                ch.streak += 1
                if ch.streak >= p:
                    self._rebaseline(ch)
            else:
                ch.push(v, w)
                ch.streak = 0

    def _rebaseline(self, ch: _Channel) -> None:
        """Accept a persistent level shift: restart this channel from its quarantine."""
        p = self.config.rebaseline_after
        q = ch.quarantine
        start = ch.streak % p  # oldest quarantined value (the ring wrapped exactly here)
        ch.reset(q[start:] + q[:start], self.config.window)
        self.rebaselines += 1

    def rebaseline_all(self) -> None:
        """Forget the baseline of every channel (operator command); warm-up restarts."""
        for ch in self._ch:
            ch.reset([], self.config.window)

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, Any]:
        return {
            "channels": [{k: getattr(c, k) for k in _Channel.__slots__} for c in self._ch],
            "rebaselines": self.rebaselines,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        chans = state["channels"]
        if len(chans) != self.n_channels:
            raise ValueError(f"state has {len(chans)} channels, gate has {self.n_channels}")
        for ch, st in zip(self._ch, chans, strict=True):
            if len(st["ring"]) != self.config.window:
                raise ValueError("state window size differs from the configuration")
            for k in _Channel.__slots__:
                setattr(ch, k, st[k])
        self.rebaselines = int(state["rebaselines"])
