"""Stage 1: a per-channel statistical gate (rolling z-score and robust modified z-score).

Every channel keeps a ring of its last ``window`` *accepted* values (one column of a
``(window, channels)`` array, each channel with its own head). From it the gate keeps the
rolling mean / standard deviation (running sums, O(1) per point) and the median / MAD
(recomputed for all channels at once every ``robust_refresh`` points, so their cost is
amortised and the robust baseline is at most that many points old). Memory is
O(window x channels), fixed. Per point the work is a fixed number of numpy operations on
vectors of channel values (no Python loop over channels, no work that grows with history).

Rules (MISSION.md item 3):

* modified z = 0.6745 (x - median) / MAD; when MAD is 0 (quantised or flat signals) the
  scale falls back to 1.2533 x mean absolute deviation, then to a tiny epsilon;
* a deviation smaller than ``max(abs_tolerance, rel_tolerance * |centre|)`` is no
  anomaly, however small the spread of the baseline is;
* direction per channel: ``up`` ignores drops, ``down`` ignores rises;
* resolution floor: the spread is never taken below the smallest step between distinct
  baseline values, so a quantised signal moving by one step is not an anomaly; a
  baseline with no spread at all (a constant so far) learns every value, so the first
  new level flags once and then becomes part of the baseline;
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

from collections.abc import Sequence
from typing import Any

import numpy as np

from agent.config import ChannelConfig, ZScoreConfig

_DIRECTIONS = {"both": 0, "up": 1, "down": -1}
_EPS = 1e-12
_RESOLUTION_EVERY = 8  # refreshes between re-computations of the resolution floor
_STATE = ("_buf", "_head", "_count", "_sum", "_sumsq", "_median", "_kmad", "_tol", "_floor",
          "_flat", "distinct", "_step", "_refreshes", "_resolution_ok", "_since", "_robust_ok",
          "_quarantine", "_streak", "rebaselines")


class StatGate:
    """Rolling + robust z-score over every channel of one stream."""

    def __init__(
        self,
        config: ZScoreConfig,
        n_channels: int,
        channels: Sequence[ChannelConfig] | None = None,
    ) -> None:
        self.config = config
        self.n_channels = c = n_channels
        chans: list[ChannelConfig | None] = list(channels) if channels is not None else [None] * c
        if len(chans) != c:
            raise ValueError(f"{len(chans)} channel configs for {c} channels")

        def pick(attr: str, default: Any) -> list[Any]:
            return [getattr(ch, attr) if ch and getattr(ch, attr) is not None else default
                    for ch in chans]

        self._dir = np.array([_DIRECTIONS[d] for d in pick("direction", config.direction)])
        self._both = bool((self._dir == 0).all())
        self._abs_tol = np.array(pick("abs_tolerance", config.abs_tolerance), dtype=float)
        self._rel_tol = np.array(pick("rel_tolerance", config.rel_tolerance), dtype=float)
        self._rolling = config.method in ("rolling", "both")
        self._robust = config.method in ("robust", "both")
        self._inv_thr = 1.0 / config.threshold
        w, p = config.window, config.rebaseline_after
        self._cols = np.arange(c)
        self._buf = np.zeros((w, c))
        self._head = np.zeros(c, dtype=np.int64)
        self._count = np.zeros(c, dtype=np.int64)
        self._sum = np.zeros(c)
        self._sumsq = np.zeros(c)
        self._median = np.zeros(c)
        self._kmad = np.zeros(c)  # 0.6745 / (MAD * robust_threshold)
        self._tol = np.array(self._abs_tol)
        self._floor = np.zeros(c)  # smallest step between distinct baseline values
        self._flat = np.ones(c, dtype=bool)  # baseline without spread
        self.distinct = np.zeros(c)  # share of distinct values in the baseline
        self._step = np.zeros(c)
        self._refreshes = 0
        self._resolution_ok = False
        self._since = 0
        self._robust_ok = False
        self._quarantine = np.zeros((p, c))
        self._streak = np.zeros(c, dtype=np.int64)
        # Outputs of the last score_one, reused by learn_one (score-then-learn).
        self.last_ratios = np.zeros(c)
        self._flagged = np.zeros(c, dtype=bool)
        self.rebaselines = 0

    # ------------------------------------------------------------------ state queries
    @property
    def ready(self) -> np.ndarray:
        """Per channel: has the baseline enough points to score?"""
        return self._count >= self.config.min_points

    @property
    def warming_up(self) -> bool:
        return not bool((self._count >= self.config.min_points).any())

    def center(self) -> np.ndarray:
        """Current baseline centre per channel (median when robust, else mean)."""
        if self._robust and self._robust_ok:
            return self._median.copy()
        return self._sum / np.maximum(self._count, 1)

    # ------------------------------------------------------------------ scoring
    def score_one(self, x: Sequence[float] | np.ndarray) -> float:
        """Score one vector of channel values (NaN = missing); higher is more anomalous."""
        x = np.asarray(x, dtype=float)
        cfg = self.config
        count = self._count
        if self._since >= cfg.robust_refresh or not self._robust_ok:
            self._refresh()
        usable = count >= cfg.min_points
        finite = np.isfinite(x)
        if not finite.all():
            usable &= finite
            x = np.where(finite, x, 0.0)
        r = None
        if self._rolling:
            n = np.maximum(count, 1)
            mean = self._sum / n
            var = self._sumsq / n - mean * mean
            dev = self._deviation(x - mean)
            std = np.maximum(np.sqrt(np.maximum(var, 0.0)), self._floor)
            r = dev / np.maximum(std, _EPS * (1.0 + np.abs(mean)))
            r *= self._inv_thr
        if self._robust:
            rr = self._deviation(x - self._median) * self._kmad
            r = rr if r is None else np.maximum(r, rr)
        assert r is not None
        r = np.where(usable, r, 0.0)
        self.last_ratios = r
        # A baseline without any spread cannot tell noise from anomaly: its channel is
        # scored (a never-seen value flags at once) but the value is learnt all the same.
        self._flagged = (r >= 1.0) & ~self._flat
        peak = max(r.tolist())
        return peak / (1.0 + peak)

    def _deviation(self, dev: np.ndarray) -> np.ndarray:
        d = np.abs(dev) if self._both else np.maximum(np.where(self._dir == 0, np.abs(dev),
                                                               dev * self._dir), 0.0)
        return np.where(d > self._tol, d, 0.0)

    def _refresh(self) -> None:
        """Median, MAD and tolerance of every channel from its current baseline."""
        count = self._count
        if bool((count >= self.config.window).all()):
            vals = self._buf
            self._refreshes += 1
            if self._refreshes % _RESOLUTION_EVERY == 1 or not self._resolution_ok:
                # The sort is the dearest part; a signal's resolution changes slowly.
                steps = np.diff(np.sort(vals, axis=0), axis=0)
                step = np.where(steps > 0, steps, np.inf).min(axis=0)
                self._step = np.where(np.isfinite(step), step, 0.0)  # 0: no distinct step
                self.distinct = ((steps > 0).sum(axis=0) + 1) / len(vals)
                self._resolution_ok = True
            step = self._step
            med = np.median(vals, axis=0)
            absdev = np.abs(vals - med)
            mad = np.median(absdev, axis=0)
            meanad = absdev.mean(axis=0)
            self._sum = vals.sum(axis=0)  # exact re-sums stop rounding drift
            self._sumsq = np.einsum("ij,ij->j", vals, vals)
        else:  # warm-up or just re-baselined: columns hold different numbers of values
            self._resolution_ok = False
            med = np.zeros(self.n_channels)
            mad = np.zeros(self.n_channels)
            meanad = np.zeros(self.n_channels)
            step = np.full(self.n_channels, np.inf)
            for c in np.flatnonzero(count > 0):
                col = self._buf[: count[c], c]
                diffs = np.diff(np.sort(col))
                self.distinct[c] = ((diffs > 0).sum() + 1) / len(col)
                if (diffs > 0).any():
                    step[c] = diffs[diffs > 0].min()
                med[c] = np.median(col)
                dev = np.abs(col - med[c])
                mad[c], meanad[c] = np.median(dev), dev.mean()
                self._sum[c], self._sumsq[c] = col.sum(), col @ col
        self._flat = meanad <= _EPS * (1.0 + np.abs(med))
        # Resolution floor: on a quantised signal one step is never more than one sigma.
        self._floor = np.where(np.isfinite(step), step, 0.0)
        mad = np.where(mad > 0, mad, 1.2533 * 0.6745 * meanad)
        mad = np.maximum(mad, np.maximum(0.6745 * self._floor, _EPS * (1.0 + np.abs(med))))
        self._median = med
        self._kmad = 0.6745 / (mad * self.config.robust_threshold)
        self._tol = np.maximum(self._abs_tol, self._rel_tol * np.abs(med))
        self._since = 0
        self._robust_ok = True

    # ------------------------------------------------------------------ learning
    def learn_one(
        self, x: Sequence[float] | np.ndarray, flagged: Sequence[bool] | np.ndarray | None = None
    ) -> None:
        """Add the values the gate accepts to the baseline; quarantine the flagged ones."""
        x = np.asarray(x, dtype=float)
        flags = self._flagged if flagged is None else np.asarray(flagged, dtype=bool)
        finite = np.isfinite(x)
        if self.config.guard and flags.any():
            accept = finite & ~flags
            self._hold(np.flatnonzero(finite & flags), x)
        else:
            accept = finite
        if accept.all():
            cols = self._cols
        else:
            cols = np.flatnonzero(accept)
            if not cols.size:
                return
            x = x[cols]
        self._since += 1
        self._streak[cols] = 0
        w = self.config.window
        head = self._head[cols]
        old = self._buf[head, cols]
        full = self._count[cols] >= w
        old = np.where(full, old, 0.0)
        self._buf[head, cols] = x
        self._sum[cols] += x - old
        self._sumsq[cols] += x * x - old * old
        self._head[cols] = (head + 1) % w
        if not full.all():
            self._count[cols] += ~full
            if (self._count[cols] == self.config.min_points).any():
                self._robust_ok = False  # a channel just became ready: fresh statistics

    def _hold(self, cols: np.ndarray, x: np.ndarray) -> None:
        p = self.config.rebaseline_after
        self._quarantine[self._streak[cols] % p, cols] = x[cols]
        self._streak[cols] += 1
        for c in cols[self._streak[cols] >= p]:
            self._rebaseline(int(c))

    def _rebaseline(self, c: int) -> None:
        """Accept a persistent level shift: restart channel ``c`` from its quarantine."""
        p, w = self.config.rebaseline_after, self.config.window
        start = int(self._streak[c] % p)  # the oldest quarantined value
        vals = np.r_[self._quarantine[start:, c], self._quarantine[:start, c]][-w:]
        k = len(vals)
        self._buf[:k, c] = vals
        self._count[c] = k
        self._head[c] = k % w
        self._sum[c] = vals.sum()
        self._sumsq[c] = vals @ vals
        self._streak[c] = 0
        self._robust_ok = False  # refresh the robust baseline before the next score
        self.rebaselines += 1

    def rebaseline_all(self) -> None:
        """Forget the baseline of every channel (operator command); warm-up restarts."""
        self._count[:] = 0
        self._head[:] = 0
        self._sum[:] = 0.0
        self._sumsq[:] = 0.0
        self._streak[:] = 0
        self._flagged[:] = False
        self._robust_ok = False

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, Any]:
        return {k: (v.copy() if isinstance(v, np.ndarray) else v)
                for k, v in ((k, getattr(self, k)) for k in _STATE)}

    def load_state(self, state: dict[str, Any]) -> None:
        for k in _STATE:
            cur, new = getattr(self, k), state[k]
            if isinstance(cur, np.ndarray) and (
                not isinstance(new, np.ndarray) or new.shape != cur.shape
            ):
                raise ValueError(f"stat gate state {k}: shape differs from the configuration")
        for k in _STATE:
            v = state[k]
            setattr(self, k, v.copy() if isinstance(v, np.ndarray) else v)
