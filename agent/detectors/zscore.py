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

Plain-Python lane (at most ``PY_MAX_COLUMNS`` columns, direction ``both``, method ``both``,
every value finite): the same two paths on Python floats, bit for bit the same arithmetic
as the numpy ones, since a dozen numpy calls on a few values cost more than a loop. It
covers the short path *and* the flagged one: the guard (quarantine, streak, re-baseline),
partially filled columns (warm-up, after a re-baseline: a column below ``min_points``
scores 0, learnt values grow its ring) and the refresh of such columns (``sorted()`` of
their values; numpy's pairwise sums reproduced by :func:`_pairwise_sum`, the sums of
squares taken from numpy). An anomaly storm, when most points are flagged and columns
re-baseline often, must not slow a gateway down. Missing values and other directions take
the numpy paths.

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
from functools import partial, reduce
from math import sqrt
from operator import add, lt, sub
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


_positive = partial(lt, 0.0)


def _pairwise_sum(a: list[float]) -> float:
    """``np.add.reduce`` of a 1-D float64 array, bit for bit: numpy sums blocks of up to 128
    values with 8 interleaved accumulators and halves longer runs (pairwise summation)."""
    n = len(a)
    if n < 8:
        return reduce(add, a, 0.0)
    if n <= 128:
        m = n - n % 8
        r = [reduce(add, a[j:m:8]) for j in range(8)]
        return reduce(add, a[m:], ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7])))
    h = n // 2
    h -= h % 8
    return _pairwise_sum(a[:h]) + _pairwise_sum(a[h:])


def _median_sorted(srt: Any) -> Any:
    """Median of sorted values (a list, or the columns of a 2-D array sorted along axis 0),
    as ``np.median`` (the mean of the middle two if even)."""
    h = len(srt) // 2
    return srt[h] if len(srt) % 2 else (srt[h - 1] + srt[h]) * 0.5


def _pairwise_sum0(a: np.ndarray) -> np.ndarray:
    """Column sums of a 2-D array, each bit for bit ``a[:, j].sum()`` (:func:`_pairwise_sum`
    over the columns at once; numpy adds a 2-D array's rows one after the other)."""
    n = len(a)
    if n < 8:
        return np.add.reduce(a, axis=0)
    if n <= 128:
        m = n - n % 8
        r = np.add.reduce(a[:m].reshape(m // 8, 8, -1), axis=0)  # r[i]: rows i, i + 8, ...
        r = r[0::2] + r[1::2]  # r0 + r1, r2 + r3, ...
        r = r[0::2] + r[1::2]
        out = r[0] + r[1]
        for row in a[m:]:
            out += row
        return out
    h = n // 2
    h -= h % 8
    return _pairwise_sum0(a[:h]) + _pairwise_sum0(a[h:])


def _steps(srt: list[float]) -> tuple[float, float]:
    """Smallest step between distinct sorted values (0: none) and the share of distinct
    values."""
    pos = list(filter(_positive, map(sub, srt[1:], srt)))  # b - a of neighbours, if > 0
    return (min(pos) if pos else 0.0), (len(pos) + 1) / len(srt)


def _spread(vals: list[float], srt: list[float]) -> tuple[float, float, list[float]]:
    """Median and MAD of values (``srt``: the same sorted) and their absolute deviations
    from the median, in the values' order."""
    med = _median_sorted(srt)
    dev = [abs(v - med) for v in vals]
    return med, _median_sorted(sorted(dev)), dev


def _median0(a: np.ndarray) -> np.ndarray:
    """``np.median(a, axis=0)`` of a 2-D array without its generic-reduction overhead."""
    h = len(a) // 2
    if len(a) % 2:
        return np.partition(a, h, axis=0)[h]
    part = np.partition(a, (h - 1, h), axis=0)
    return (part[h - 1] + part[h]) * 0.5


class LazyRatios:
    """``last_ratios`` as an array, kept as the plain-Python lane's list (``_ratios``)
    until someone reads it: most points are never asked."""

    _ratios: list[float] | np.ndarray

    @property
    def last_ratios(self) -> np.ndarray:
        """Per column (StatGate) or channel (Stage1Gate): threshold ratios of the last
        score."""
        r = self._ratios
        if isinstance(r, list):
            r = self._ratios = np.array(r, dtype=float)
        return r

    @last_ratios.setter
    def last_ratios(self, r: np.ndarray) -> None:
        self._ratios = r


class StatGate(LazyRatios):
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
        # Plain-Python lane (few columns). While ``_py_live`` the lists ``_l_sum``,
        # ``_l_sumsq``, ``_l_head`` and ``_l_streak`` are the truth and the arrays are stale
        # until ``_sync``; the ring and the counts are written to both (``_l_ring[j]`` is
        # column j of ``_buf``), the quarantine only to its array.
        self._py = self._short and c <= PY_MAX_COLUMNS
        self._py_live = False
        self._ring_ok = False
        self._l_sum: list[float] = []
        self._l_sumsq: list[float] = []
        self._l_head: list[int] = []
        self._l_streak: list[int] = []
        self._l_count: list[int] = []
        self._l_ring: list[list[float]] = []
        self._l_flags: list[bool] | None = None  # the lane's last flags (None: none)
        self._idx = np.zeros(c, dtype=np.int64)
        self._centre = np.zeros((2, c))  # rows: rolling mean, median
        self._scale = np.zeros((2, c))  # rows: 1 / (rolling std x threshold), _kmad
        self._streak_clear = True  # no channel has a flagged streak
        self._recount()
        self._derive()

    def _sync(self) -> None:
        """Leave the Python lane: write its running sums and heads back to the arrays."""
        if self._py_live:
            self._sum[:] = self._l_sum
            self._sumsq[:] = self._l_sumsq
            self._head[:] = self._l_head
            self._streak[:] = self._l_streak
            self._n = np.array(self._l_n)
            self._py_live = False

    def _ring(self) -> list[list[float]]:
        """The Python lane's copy of the ring (built when stale)."""
        if not self._ring_ok:
            self._l_ring = self._buf.T.tolist()
            self._ring_ok = True
        return self._l_ring

    def _py_enter(self) -> None:
        self._ring()
        self._l_sum = self._sum.tolist()
        self._l_sumsq = self._sumsq.tolist()
        self._l_head = self._head.tolist()
        self._l_streak = self._streak.tolist()
        self._l_count = self._count.tolist()
        self._py_live = True

    def _recount(self) -> None:
        """Cache what only changes with the per-channel counts (warm-up, re-baselines)."""
        count = self._count
        self._n = np.maximum(count, 1).astype(float)
        self._l_n = self._n.tolist()
        self._ready_all = bool((count >= self.config.min_points).all())
        self._ready_any = bool((count >= self.config.min_points).any())
        self._full_all = bool((count >= self.config.window).all())

    def _recount_py(self) -> None:
        """:meth:`_recount` from the Python lane's counts (``_l_n`` is kept by the lane,
        ``_n`` at ``_sync``)."""
        counts, cfg = self._l_count, self.config
        low = min(counts)
        self._ready_all = low >= cfg.min_points
        self._ready_any = max(counts) >= cfg.min_points
        self._full_all = low >= cfg.window

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
        self._l_floor = self._floor.tolist()
        self._l_not_flat = self._not_flat.tolist()
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
        if finite and self._py:
            return self._score_py(xl) if self._ready_all else self._score_py_partial(xl)
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
        return self._py_verdict(ratios)

    def _score_py_partial(self, xl: list[float]) -> float:
        """The general path of :meth:`score_array` on Python floats, same arithmetic, when
        some column is not ready (it scores 0)."""
        if not self._py_live:
            self._py_enter()
        tol, min_points = self._l_tol, self.config.min_points
        ratios: list[float] = []
        for v, s, q, n, count, floor, med, k, inv_thr in zip(
                xl, self._l_sum, self._l_sumsq, self._l_n, self._l_count, self._l_floor,
                self._l_median, self._l_kmad, self._l_inv_thr, strict=True):
            if count < min_points:
                ratios.append(0.0)
                continue
            m = s / n
            var = q / n - m * m
            std = sqrt(var) if var > 0.0 else 0.0
            if not std >= floor:
                std = floor
            eps = _EPS * (1.0 + abs(m))
            t = 0.0 if tol is None else tol[len(ratios)]  # a deviation within it counts 0
            d = abs(v - m) if abs(v - m) > t else 0.0
            e = abs(v - med) * k if abs(v - med) > t else 0.0
            r = d / (std if std >= eps else eps) * inv_thr
            ratios.append(e if e > r else r)
        return self._py_verdict(ratios)

    def _py_verdict(self, ratios: list[float]) -> float:
        """Keep a Python-lane score's ratios and flags; the stage score."""
        self._ratios = ratios
        peak = max(ratios)
        flags = None
        if peak >= 1.0:  # flagged: reached the threshold, baseline with some spread
            flags = [r >= 1.0 and nf for r, nf in zip(ratios, self._l_not_flat, strict=True)]
            if True not in flags:
                flags = None
        self._l_flags = flags
        self._flagged = self._no_flags if flags is None else np.array(flags)
        return peak / (1.0 + peak)

    def learn_list(self, xl: list[float], finite: bool) -> None:
        """:meth:`learn_one` (flags of the last score) of a list of floats; ``finite`` as in
        :meth:`score_list`."""
        if self._py_live and finite:  # the last score took the lane too
            if self._full_all and self._l_flags is None:
                self._learn_py(xl)
            else:
                self._learn_py_general(xl, self._l_flags)
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
            self._l_streak = [0] * len(xl)
            self._streak_clear = True
        self._since += 1

    def _learn_py_general(self, xl: list[float], flags: list[bool] | None) -> None:
        """The general branch of :meth:`learn_array` on Python floats, same arithmetic:
        the guard holds flagged values, columns still filling grow."""
        cfg = self.config
        cols: Sequence[int] = range(len(xl))
        if flags is not None and cfg.guard:
            self._hold_py(xl, flags)
            cols = [j for j, f in enumerate(flags) if not f]
            if not cols:
                return
        self._since += 1
        w = cfg.window
        buf, ring, heads, counts = self._buf, self._l_ring, self._l_head, self._l_count
        sums, sumsq, streak, ns = self._l_sum, self._l_sumsq, self._l_streak, self._l_n
        grew = False
        for j in cols:
            v, h, k = xl[j], heads[j], counts[j]
            streak[j] = 0
            if k >= w:
                old = ring[j][h]
                sums[j] += v - old
                sumsq[j] += v * v - old * old
            else:  # (the array path subtracts an old value of 0.0: the same sums)
                sums[j] += v
                sumsq[j] += v * v
                counts[j] = self._count[j] = k + 1
                ns[j] = float(k + 1)
                grew = True
            ring[j][h] = v
            buf[h, j] = v
            heads[j] = h + 1 if h + 1 < w else 0
        if grew:
            if any(counts[j] == cfg.min_points for j in cols):
                self._robust_ok = False  # a channel just became ready: fresh statistics
            self._recount_py()

    def _hold_py(self, xl: list[float], flags: list[bool]) -> None:
        """:meth:`_hold` on the Python lane."""
        p, quarantine, streak = self.config.rebaseline_after, self._quarantine, self._l_streak
        over = []
        for j, f in enumerate(flags):
            if f:
                k = streak[j]
                quarantine[k % p, j] = xl[j]
                streak[j] = k = k + 1
                if k >= p:
                    over.append(j)
        self._streak_clear = False
        if over:
            for j in over:
                self._rebaseline(j)  # (leaves the lane)
            self._py_enter()

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
        if not self._full_all and self._py:
            self._refresh_partial_py()
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
        """:meth:`_refresh` of full columns from the Python lane's ring (same arithmetic:
        numpy sums a 2-D array along axis 0 one row after the other, a single column
        pairwise; the re-sums are numpy's own)."""
        w = self.config.window
        self._refreshes += 1
        resolution = self._refreshes % _RESOLUTION_EVERY == 1 or not self._resolution_ok
        total = _pairwise_sum if self.n_channels == 1 else partial(reduce, add)
        steps = self._step.tolist()
        distinct = []
        meds, mads, meanads = [], [], []
        for j, col in enumerate(self._l_ring):
            srt = sorted(col)
            if resolution:
                steps[j], d = _steps(srt)
                distinct.append(d)
            med, mad, dev = _spread(col, srt)
            meds.append(med)
            mads.append(mad)
            meanads.append(total(dev) / w)
        if resolution:
            self._step = np.array(steps)
            self.distinct = np.array(distinct)
            vals = self._buf  # (the ring's other copy) exact re-sums stop rounding drift
            self._sum = vals.sum(axis=0)
            self._sumsq = np.einsum("ij,ij->j", vals, vals)
            self._resolution_ok = True
        self._set_robust(meds, mads, meanads, steps)

    def _refresh_partial_py(self) -> None:
        """The warm-up / re-baseline branch of :meth:`_refresh` on the Python lane, same
        arithmetic: the full columns at once in numpy, the others (a column's first
        ``count`` values) one by one on the lane's ring. numpy sums a column pairwise
        (:func:`_pairwise_sum`, :func:`_pairwise_sum0`); the sums of squares are numpy's."""
        self._resolution_ok = False
        ring, buf, n = self._ring(), self._buf, self.n_channels
        w = len(buf)
        counts = self._count.tolist()
        steps, meds, mads, meanads = [0.0] * n, [0.0] * n, [0.0] * n, [0.0] * n
        full = [j for j, k in enumerate(counts) if k >= w]
        if full:
            vals = buf[:, full]
            srt = np.sort(vals, axis=0)
            diffs = np.diff(srt, axis=0)
            pos = diffs > 0
            self.distinct[full] = (pos.sum(axis=0) + 1) / w
            step = np.where(pos, diffs, np.inf).min(axis=0)
            med = _median_sorted(srt)
            absdev = np.abs(vals - med)
            mad = _median_sorted(np.sort(absdev, axis=0))
            sums = _pairwise_sum0(np.hstack((vals, absdev)))
            self._sum[full] = sums[: len(full)]
            meanad = sums[len(full) :] / w
            for j, st, md, ma, mn in zip(full, step.tolist(), med.tolist(), mad.tolist(),
                                         meanad.tolist(), strict=True):
                col = buf[:, j]
                self._sumsq[j] = col @ col
                steps[j] = st if st < np.inf else 0.0
                meds[j], mads[j], meanads[j] = md, ma, mn
        for j, k in enumerate(counts):
            if 0 < k < w:  # (a column without values keeps zeros)
                vals_j = ring[j][:k]
                srt_j = sorted(vals_j)
                steps[j], self.distinct[j] = _steps(srt_j)
                meds[j], mads[j], dev = _spread(vals_j, srt_j)
                meanads[j] = _pairwise_sum(dev) / k
                col = buf[:k, j]
                self._sum[j] = _pairwise_sum(vals_j)
                self._sumsq[j] = col @ col
        self._set_robust(meds, mads, meanads, steps)

    def _set_robust(self, meds: list[float], mads: list[float], meanads: list[float],
                    steps: list[float]) -> None:
        """End of a Python-lane refresh (as the numpy one): flatness, resolution floor,
        robust scale and tolerance of every column from its median, MAD, mean absolute
        deviation and smallest step (0: none)."""
        kmads, tols, flats = [], [], []
        for med, mad, meanad, step, a_tol, r_tol, rth in zip(
                meds, mads, meanads, steps, self._abs_tol.tolist(), self._rel_tol.tolist(),
                self._l_rth, strict=True):
            eps = _EPS * (1.0 + abs(med))
            flats.append(meanad <= eps)
            if not mad > 0:
                mad = 1.2533 * 0.6745 * meanad
            mad = max(mad, 0.6745 * step, eps)
            kmads.append(0.6745 / (mad * rth))
            tols.append(max(a_tol, r_tol * abs(med)))
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
