"""Stage 1: a per-channel statistical gate (rolling z-score and robust modified z-score).

Every channel keeps a ring of its last ``window`` *accepted* values (one column of a
``(window, channels)`` array, each channel with its own head). From it the gate keeps the
rolling mean / standard deviation (running sums, O(1) per point) and the median / MAD
(recomputed for all channels at once every ``robust_refresh`` points, so their cost is
amortised and the robust baseline is at most that many points old). Memory is
O(window x channels), fixed. Per point the work is a fixed number of numpy operations on
vectors of channel values (no Python loop over channels, no work that grows with history).
The common case (every channel ready and finite, direction ``both``) takes a short path of
about a dozen whole-vector operations for scoring and as many for learning; everything else
(warm-up, missing values, directions, flagged values) takes the general path. Both give the
same ratios, except that the short path folds the tiny-epsilon guard of a spread-less
rolling baseline into its floor using the median instead of the mean (it only matters when
the rolling spread is ~1e-12 of the level, where any new value is flagged either way).

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
from itertools import pairwise
from math import sqrt
from typing import Any

import numpy as np

from agent.config import ChannelConfig, ZScoreConfig

_DIRECTIONS = {"both": 0, "up": 1, "down": -1}
_EPS = 1e-12
_RESOLUTION_EVERY = 8  # refreshes between re-computations of the resolution floor
# Up to this many columns the short path runs on plain Python floats: below it a numpy call
# (~0.5-1 µs each, a dozen per point) costs more than a loop over the columns.
PY_MAX_COLUMNS = 16
PY_REFRESH_MAX_COLUMNS = 4  # the same for the refresh (two sorts of `window` values a column)
_STATE = ("_buf", "_head", "_count", "_sum", "_sumsq", "_median", "_kmad", "_tol", "_floor",
          "_flat", "distinct", "_step", "_refreshes", "_resolution_ok", "_since", "_robust_ok",
          "_quarantine", "_streak", "rebaselines")


def _median0(a: np.ndarray) -> np.ndarray:
    """``np.median(a, axis=0)`` of a 2-D array without its generic-reduction overhead."""
    h = len(a) // 2
    if len(a) % 2:
        return np.partition(a, h, axis=0)[h]
    part = np.partition(a, (h - 1, h), axis=0)
    return (part[h - 1] + part[h]) * 0.5


class StatGate:
    """Rolling + robust z-score over every channel of one stream."""

    def __init__(
        self,
        config: ZScoreConfig,
        n_channels: int,
        channels: Sequence[ChannelConfig] | None = None,
        threshold_scale: Sequence[float] | None = None,
    ) -> None:
        """``threshold_scale``: per column, a factor on both z thresholds (None: all 1)."""
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
        self._inv_thr: float | np.ndarray = 1.0 / config.threshold
        self._rth: float | np.ndarray = config.robust_threshold
        if threshold_scale is not None:
            ts = np.array(threshold_scale, dtype=float)
            if ts.shape != (c,) or not bool((ts > 0).all()):
                raise ValueError(f"threshold_scale needs {c} positive factors")
            self._inv_thr = 1.0 / (config.threshold * ts)
            self._rth = config.robust_threshold * ts
        self._l_inv_thr = (self._inv_thr.tolist() if isinstance(self._inv_thr, np.ndarray)
                           else [self._inv_thr] * c)
        self._l_rth = self._rth.tolist() if isinstance(self._rth, np.ndarray) else [self._rth] * c
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
        self._ratios: list[float] | np.ndarray = np.zeros(c)
        self._flagged = np.zeros(c, dtype=bool)
        self._no_flags = np.zeros(c, dtype=bool)  # never written to
        self.rebaselines = 0
        # Short path (see the module docstring) and the values it derives from the state.
        self._short = self._rolling and self._robust and self._both
        # Plain-Python lane of the short path (few columns). While ``_py_live`` the lists
        # ``_l_sum``/``_l_sumsq``/``_l_head`` are the truth and the arrays are stale until
        # ``_sync``; the ring is written to both (``_l_ring[j]`` is column j of ``_buf``).
        self._py = self._short and c <= PY_MAX_COLUMNS
        self._py_live = False
        self._ring_ok = False
        self._l_sum: list[float] = []
        self._l_sumsq: list[float] = []
        self._l_head: list[int] = []
        self._l_ring: list[list[float]] = []
        self._idx = np.zeros(c, dtype=np.int64)
        self._centre = np.zeros((2, c))  # rows: rolling mean, median
        self._scale = np.zeros((2, c))  # rows: 1 / (rolling std x threshold), _kmad
        self._streak_clear = True  # no channel has a flagged streak
        self._recount()
        self._derive()

    @property
    def last_ratios(self) -> np.ndarray:
        """Threshold ratio of every column at the last score."""
        r = self._ratios
        if isinstance(r, list):
            r = self._ratios = np.array(r)
        return r

    @last_ratios.setter
    def last_ratios(self, r: np.ndarray) -> None:
        self._ratios = r

    def _sync(self) -> None:
        """Leave the Python lane: write its running sums and heads back to the arrays."""
        if self._py_live:
            self._sum[:] = self._l_sum
            self._sumsq[:] = self._l_sumsq
            self._head[:] = self._l_head
            self._py_live = False

    def _py_enter(self) -> None:
        if not self._ring_ok:
            self._l_ring = self._buf.T.tolist()
            self._ring_ok = True
        self._l_sum = self._sum.tolist()
        self._l_sumsq = self._sumsq.tolist()
        self._l_head = self._head.tolist()
        self._py_live = True

    def _recount(self) -> None:
        """Cache what only changes with the per-channel counts (warm-up, re-baselines)."""
        count = self._count
        self._n = np.maximum(count, 1).astype(float)
        self._l_n = self._n.tolist()
        self._ready_all = bool((count >= self.config.min_points).all())
        self._ready_any = bool((count >= self.config.min_points).any())
        self._full_all = bool((count >= self.config.window).all())

    def _derive(self) -> None:
        """Cache what only changes at a refresh (or a checkpoint load)."""
        floor = np.maximum(self._floor, _EPS * (1.0 + np.abs(self._median)))
        self._floor2 = floor * floor
        self._not_flat = ~self._flat
        self._tol_any = bool((self._tol > 0).any())
        self._centre[1] = self._median
        self._scale[1] = self._kmad
        self._streak_clear = not bool(self._streak.any())
        self._l_floor2 = self._floor2.tolist()
        self._l_median = self._median.tolist()
        self._l_kmad = self._kmad.tolist()
        self._l_tol = self._tol.tolist() if self._tol_any else None

    # ------------------------------------------------------------------ state queries
    @property
    def ready(self) -> np.ndarray:
        """Per channel: has the baseline enough points to score?"""
        return self._count >= self.config.min_points

    @property
    def warming_up(self) -> bool:
        return not self._ready_any

    def center(self) -> np.ndarray:
        """Current baseline centre per channel (median when robust, else mean)."""
        self._sync()
        if self._robust and self._robust_ok:
            return self._median.copy()
        return self._sum / np.maximum(self._count, 1)

    # ------------------------------------------------------------------ scoring
    def score_one(self, x: Sequence[float] | np.ndarray) -> float:
        """Score one vector of channel values (NaN = missing); higher is more anomalous."""
        return self.score_array(np.asarray(x, dtype=float))

    def score_array(self, x: np.ndarray, finite: bool | None = None) -> float:
        """:meth:`score_one` of a float vector; ``finite``: whether the caller already knows
        every value is finite (None: check here)."""
        cfg = self.config
        if self._since >= cfg.robust_refresh or not self._robust_ok:
            self._refresh()
        self._sync()
        if self._short and self._ready_all:
            if finite is None:
                t = sum(x.tolist())
                finite = t - t == 0.0  # NaN or inf anywhere gives NaN
            if finite:
                return self._score_short(x)
        count = self._count
        usable = count >= cfg.min_points
        finite_v = np.isfinite(x)
        if not finite_v.all():
            usable &= finite_v
            x = np.where(finite_v, x, 0.0)
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

    def score_list(self, xl: list[float], finite: bool) -> float:
        """:meth:`score_one` of a list of floats; ``finite``: every value is finite. Few
        columns take the plain-Python lane, the rest :meth:`score_array`."""
        if self._since >= self.config.robust_refresh or not self._robust_ok:
            self._refresh()
        if finite and self._py and self._ready_all:
            return self._score_py(xl)
        return self.score_array(np.array(xl, dtype=float), finite)

    def _score_py(self, xl: list[float]) -> float:
        """The short path (see :meth:`_score_short`) on Python floats, same arithmetic."""
        if not self._py_live:
            self._py_enter()
        tol = self._l_tol
        ratios: list[float] = []
        for v, s, q, n, f2, med, k, inv_thr in zip(
                xl, self._l_sum, self._l_sumsq, self._l_n, self._l_floor2, self._l_median,
                self._l_kmad, self._l_inv_thr, strict=True):
            m = s / n
            var = q / n - m * m
            if not var >= f2:
                var = f2
            d = abs(v - m)
            e = abs(v - med)
            if tol is not None:
                t = tol[len(ratios)]
                if not d > t:
                    d = 0.0
                if not e > t:
                    e = 0.0
            r = d * (inv_thr / sqrt(var))
            e *= k
            ratios.append(e if e > r else r)
        self._ratios = ratios
        peak = max(ratios)
        if peak >= 1.0:
            self._flagged = (self.last_ratios >= 1.0) & self._not_flat
        else:
            self._flagged = self._no_flags
        return peak / (1.0 + peak)

    def learn_list(self, xl: list[float], finite: bool) -> None:
        """:meth:`learn_one` (flags of the last score) of a list of floats; ``finite`` as in
        :meth:`score_list`."""
        if self._py_live and finite and self._full_all and self._flagged is self._no_flags:
            self._learn_py(xl)
        else:
            self.learn_array(np.array(xl, dtype=float), self._flagged, finite)

    def _learn_py(self, xl: list[float]) -> None:
        """:meth:`_learn_short` on Python floats (the ring is written to both copies)."""
        w = self.config.window
        buf, ring, heads = self._buf, self._l_ring, self._l_head
        sums, sumsq = self._l_sum, self._l_sumsq
        for j, v in enumerate(xl):
            h = heads[j]
            col = ring[j]
            old = col[h]
            col[h] = v
            buf[h, j] = v
            d = v - old
            sums[j] += d
            sumsq[j] += (old + v) * d
            heads[j] = h + 1 if h + 1 < w else 0
        if not self._streak_clear:
            self._streak.fill(0)
            self._streak_clear = True
        self._since += 1

    def _score_short(self, x: np.ndarray) -> float:
        """score_one when every channel is ready, every value finite, direction ``both``."""
        n, centre, scale = self._n, self._centre, self._scale
        mean = np.divide(self._sum, n, out=centre[0])
        var = self._sumsq / n
        var -= mean * mean
        np.maximum(var, self._floor2, out=var)  # also clips rounding below 0
        np.sqrt(var, out=var)
        np.divide(self._inv_thr, var, out=scale[0])
        d = x - centre  # row 0: from the rolling mean, row 1: from the median
        np.abs(d, out=d)
        if self._tol_any:
            d *= d > self._tol
        d *= scale
        r = np.maximum(d[0], d[1])
        self.last_ratios = r
        peak = max(r.tolist())  # (numpy reductions cost more than this on short vectors)
        if peak >= 1.0:
            self._flagged = (r >= 1.0) & self._not_flat
        else:
            self._flagged = self._no_flags
        return peak / (1.0 + peak)

    def _deviation(self, dev: np.ndarray) -> np.ndarray:
        d = np.abs(dev) if self._both else np.maximum(np.where(self._dir == 0, np.abs(dev),
                                                               dev * self._dir), 0.0)
        return np.where(d > self._tol, d, 0.0)

    def _refresh(self) -> None:
        """Median, MAD and tolerance of every channel from its current baseline."""
        self._sync()
        count = self._count
        if self._full_all and self._ring_ok and self.n_channels <= PY_REFRESH_MAX_COLUMNS:
            self._refresh_py()
            return
        if self._full_all:
            vals = self._buf
            self._refreshes += 1
            if self._refreshes % _RESOLUTION_EVERY == 1 or not self._resolution_ok:
                # The sort is the dearest part; a signal's resolution changes slowly.
                steps = np.diff(np.sort(vals, axis=0), axis=0)
                step = np.where(steps > 0, steps, np.inf).min(axis=0)
                self._step = np.where(np.isfinite(step), step, 0.0)  # 0: no distinct step
                self.distinct = ((steps > 0).sum(axis=0) + 1) / len(vals)
                self._resolution_ok = True
                self._sum = vals.sum(axis=0)  # exact re-sums stop rounding drift
                self._sumsq = np.einsum("ij,ij->j", vals, vals)
            step = self._step
            med = _median0(vals)
            absdev = np.abs(vals - med)
            mad = _median0(absdev)
            meanad = np.add.reduce(absdev, axis=0) / len(vals)
        else:  # warm-up or just re-baselined: columns hold different numbers of values
            self._resolution_ok = False
            med = np.zeros(self.n_channels)
            mad = np.zeros(self.n_channels)
            meanad = np.zeros(self.n_channels)
            step = np.full(self.n_channels, np.inf)
            full = count >= len(self._buf)
            if full.sum() > 1:  # one re-baselining column must not put all on the slow path
                cols = np.flatnonzero(full)
                vals = self._buf[:, cols]
                diffs = np.diff(np.sort(vals, axis=0), axis=0)
                pos = diffs > 0
                self.distinct[cols] = (pos.sum(axis=0) + 1) / len(vals)
                step[cols] = np.where(pos, diffs, np.inf).min(axis=0)
                med[cols] = _median0(vals)
                absdev = np.abs(vals - med[cols])
                mad[cols] = _median0(absdev)
                for j, c in enumerate(cols):  # per column: the same sums as below, bit for bit
                    col = self._buf[:, c]
                    meanad[c] = absdev[:, j].mean()
                    self._sum[c], self._sumsq[c] = col.sum(), col @ col
                count = np.where(full, 0, count)
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
        self._kmad = 0.6745 / (mad * self._rth)
        self._tol = np.maximum(self._abs_tol, self._rel_tol * np.abs(med))
        self._since = 0
        self._robust_ok = True
        self._derive()

    def _refresh_py(self) -> None:
        """:meth:`_refresh` of full columns from the Python lane's ring (same arithmetic)."""
        w = self.config.window
        h, odd = w // 2, w % 2
        self._refreshes += 1
        resolution = self._refreshes % _RESOLUTION_EVERY == 1 or not self._resolution_ok
        steps = self._step.tolist()
        distinct, sums, sumsq = [], [], []
        meds, kmads, tols, flats = [], [], [], []
        for j, (col, a_tol, r_tol, rth) in enumerate(zip(
                self._l_ring, self._abs_tol.tolist(), self._rel_tol.tolist(), self._l_rth,
                strict=True)):
            srt = sorted(col)
            med = srt[h] if odd else (srt[h - 1] + srt[h]) * 0.5
            if resolution:
                pos = [b - a for a, b in pairwise(srt) if b - a > 0]
                steps[j] = min(pos) if pos else 0.0
                distinct.append((len(pos) + 1) / w)
                sums.append(sum(col))
                sumsq.append(sum([v * v for v in col]))
            dev = [abs(v - med) for v in col]
            meanad = sum(dev) / w
            dev.sort()
            mad = dev[h] if odd else (dev[h - 1] + dev[h]) * 0.5
            eps = _EPS * (1.0 + abs(med))
            flats.append(meanad <= eps)
            if not mad > 0:
                mad = 1.2533 * 0.6745 * meanad
            mad = max(mad, 0.6745 * steps[j], eps)
            meds.append(med)
            kmads.append(0.6745 / (mad * rth))
            tols.append(max(a_tol, r_tol * abs(med)))
        if resolution:
            self._step = np.array(steps)
            self.distinct = np.array(distinct)
            self._sum = np.array(sums)  # exact re-sums stop rounding drift
            self._sumsq = np.array(sumsq)
            self._resolution_ok = True
        self._floor = np.array(steps)
        self._flat = np.array(flats, dtype=bool)
        self._median = np.array(meds)
        self._kmad = np.array(kmads)
        self._tol = np.array(tols)
        self._since = 0
        self._robust_ok = True
        self._derive()

    # ------------------------------------------------------------------ learning
    def learn_one(
        self, x: Sequence[float] | np.ndarray, flagged: Sequence[bool] | np.ndarray | None = None
    ) -> None:
        """Add the values the gate accepts to the baseline; quarantine the flagged ones."""
        x = np.asarray(x, dtype=float)
        flags = self._flagged if flagged is None else np.asarray(flagged, dtype=bool)
        self.learn_array(x, flags)

    def learn_array(self, x: np.ndarray, flags: np.ndarray, finite: bool | None = None) -> None:
        """:meth:`learn_one` of a float vector and its flags; ``finite`` as in
        :meth:`score_array`."""
        self._sync()
        if self._full_all and (flags is self._no_flags or True not in flags.tolist()):
            if finite is None:
                t = sum(x.tolist())
                finite = t - t == 0.0
            if finite:
                self._learn_short(x)
                return
        finite_v = np.isfinite(x)
        if self.config.guard and flags.any():
            accept = finite_v & ~flags
            self._hold(np.flatnonzero(finite_v & flags), x)
        else:
            accept = finite_v
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
        if self._ring_ok:  # keep the Python lane's copy of the ring current
            ring = self._l_ring
            for j, h, v in zip(cols.tolist(), head.tolist(), x.tolist(), strict=True):
                ring[j][h] = v
        self._sum[cols] += x - old
        self._sumsq[cols] += x * x - old * old
        self._head[cols] = (head + 1) % w
        if not full.all():
            self._count[cols] += ~full
            if (self._count[cols] == self.config.min_points).any():
                self._robust_ok = False  # a channel just became ready: fresh statistics
            self._recount()

    def _learn_short(self, x: np.ndarray) -> None:
        """learn_one when every channel's ring is full and every value is accepted."""
        self._ring_ok = False
        idx = self._idx
        np.multiply(self._head, self.n_channels, out=idx)
        idx += self._cols
        flat = self._buf.reshape(-1)  # a view (not kept: a pickled view would be a copy)
        old = flat[idx]
        flat[idx] = x
        d = x - old
        self._sum += d
        old += x
        old *= d  # x*x - old*old as (x - old)(x + old); refreshes re-sum exactly
        self._sumsq += old
        head = self._head
        head += 1
        head %= self.config.window
        if not self._streak_clear:
            self._streak.fill(0)
            self._streak_clear = True
        self._since += 1

    def _hold(self, cols: np.ndarray, x: np.ndarray) -> None:
        p = self.config.rebaseline_after
        self._quarantine[self._streak[cols] % p, cols] = x[cols]
        self._streak[cols] += 1
        self._streak_clear = False
        for c in cols[self._streak[cols] >= p]:
            self._rebaseline(int(c))

    def _rebaseline(self, c: int) -> None:
        """Accept a persistent level shift: restart channel ``c`` from its quarantine."""
        p, w = self.config.rebaseline_after, self.config.window
        self._sync()
        start = int(self._streak[c] % p)  # the oldest quarantined value
        vals = np.r_[self._quarantine[start:, c], self._quarantine[:start, c]][-w:]
        k = len(vals)
        self._buf[:k, c] = vals
        if self._ring_ok:
            self._l_ring[c][:k] = vals.tolist()
        self._count[c] = k
        self._head[c] = k % w
        self._sum[c] = vals.sum()
        self._sumsq[c] = vals @ vals
        self._streak[c] = 0
        self._robust_ok = False  # refresh the robust baseline before the next score
        self.rebaselines += 1
        self._recount()

    def rebaseline_all(self) -> None:
        """Forget the baseline of every channel (operator command); warm-up restarts."""
        self._sync()
        self._ring_ok = False
        self._count[:] = 0
        self._head[:] = 0
        self._sum[:] = 0.0
        self._sumsq[:] = 0.0
        self._streak[:] = 0
        self._flagged = np.zeros(self.n_channels, dtype=bool)
        self._robust_ok = False
        self._recount()

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, Any]:
        self._sync()
        return {k: (v.copy() if isinstance(v, np.ndarray) else v)
                for k, v in ((k, getattr(self, k)) for k in _STATE)}

    def load_state(self, state: dict[str, Any]) -> None:
        for k in _STATE:
            cur, new = getattr(self, k), state[k]
            if isinstance(cur, np.ndarray) and (
                not isinstance(new, np.ndarray) or new.shape != cur.shape
            ):
                raise ValueError(f"stat gate state {k}: shape differs from the configuration")
        self._py_live = self._ring_ok = False  # the Python lane's copies are stale now
        for k in _STATE:
            v = state[k]
            setattr(self, k, v.copy() if isinstance(v, np.ndarray) else v)
        self._recount()
        self._derive()
