"""Stage 1 as the cascade runs it: the level of each channel and, optionally, its step
and its EWMA.

With ``delta: true`` every channel is watched twice by one
:class:`~agent.detectors.zscore.StatGate` of width ``2 x channels``: columns ``[0, C)``
hold the values, columns ``[C, 2C)`` the change of each value from the last value
stage 1 accepted. One gate means one set of vector operations per point for both views.

With ``ewma_lambda: L`` (> 0) a third set of columns (after the others) holds each
channel's exponentially weighted moving average ``e = L x + (1 - L) e_prev``, scored by the
same gate against the EWMA's own baseline (its own spread, autocorrelation and slow cycles
included), with the threshold ``ewma_threshold`` if set. The EWMA of white noise has a
spread ``sqrt(L / (2 - L))`` times the noise's, so a slow ramp that the level view sees
only near its end (and the step view not at all) moves the EWMA outside its baseline
while it is happening. The recursion takes the same *accepted* values as ``previous``
below (a spike never enters it); the EWMA columns' own flagged values are kept out of
their baseline by the gate's guard like any other column. A hit of the EWMA view is
evidence for its channel, as a step hit is (``last_ratios`` is the largest of the views).

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
from operator import eq
from typing import Any

import numpy as np

from agent.config import ChannelConfig, ZScoreConfig
from agent.detectors.zscore import LazyRatios, StatGate

HOLD = 3


def _all_finite(x: np.ndarray) -> bool:
    t = sum(x.tolist())  # NaN or inf anywhere makes the sum NaN (or inf: then t - t is NaN)
    return bool(t - t == 0.0)


class Stage1Gate(LazyRatios):
    """Level (+ step, + EWMA) z-scores of every channel of one stream. ``last_ratios``:
    per channel, the largest of its level, step, EWMA and stuck ratios at the last score
    (like a step-view hit, an EWMA-view hit is evidence for its channel)."""

    def __init__(
        self,
        config: ZScoreConfig,
        n_channels: int,
        channels: Sequence[ChannelConfig] | None = None,
    ) -> None:
        self.config = config
        self.n_channels = c = n_channels
        self.delta = config.delta
        self.lam = lam = config.ewma_lambda
        self.ewma = lam > 0.0
        self._om = 1.0 - lam
        self._e0 = c * (2 if self.delta else 1)  # first EWMA column
        views = 1 + self.delta + self.ewma
        chans = list(channels) if channels is not None else None
        cols: list[ChannelConfig] | None = None
        if chans is not None:
            cols = list(chans)
            if self.delta:
                cols += [ChannelConfig(ch.name, ch.direction, ch.abs_tolerance, None)
                         for ch in chans]
            if self.ewma:
                cols += chans  # the EWMA is in the channel's own units: same rules
        scale = None
        if self.ewma and config.ewma_threshold > 0.0:
            scale = [1.0] * self._e0 + [config.ewma_threshold / config.threshold] * c
        self.gate = StatGate(config, views * c, cols if cols else None, scale)
        self._prev = np.full(c, np.nan)
        self._prev_ok = not self.delta  # every _prev finite (the step view is defined)
        self._ewma = np.full(c, np.nan)  # EWMA of the accepted values (NaN: none yet)
        self._ewma_ok = not self.ewma  # every _ewma finite
        self._held = np.zeros(c, dtype=np.int64)
        self._ext = np.full(views * c, np.nan)
        self._last_raw = np.full(c, np.nan)
        self._run = np.zeros(c, dtype=np.int64)  # identical values in a row, current included
        self._run_now = np.zeros(c, dtype=np.int64)
        self._ratios: list[float] | np.ndarray = np.zeros(c)
        # Plain-Python lane (see StatGate): while ``_py_live`` these lists are the truth
        # for _prev / _ewma / _last_raw / _run / _held (replaced, never written in place).
        self._py_live = False
        self._l_prev: list[float] = []
        self._l_ewma: list[float] = []
        self._l_last: list[float] = []
        self._l_run: list[int] = []
        self._l_held: list[int] = []
        self._l_ones = [1] * c
        self._l_zeros = [0] * c
        self._no_flags = np.zeros(c, dtype=bool)  # shared "nothing flagged", never written
        self._ones = np.ones(c, dtype=np.int64)  # shared "every run restarts", never written
        self.flagged = np.zeros(c, dtype=bool)
        # Flags of the raw-value views only (level, step, stuck): what `previous` and the
        # EWMA recursion keep out. Without the EWMA view this is ``flagged`` itself.
        self._raw_flagged = self.flagged

    def _sync(self) -> None:
        """Leave the Python lane: write its state back to the arrays."""
        if self._py_live:
            if self.delta:
                self._prev[:] = self._l_prev
            if self.ewma:
                self._ewma[:] = self._l_ewma
            self._last_raw[:] = self._l_last
            self._run = np.array(self._l_run, dtype=np.int64)
            self._held = np.array(self._l_held, dtype=np.int64)
            self._py_live = False

    def _py_enter(self) -> None:
        self._l_prev = self._prev.tolist()
        self._l_ewma = self._ewma.tolist()
        self._l_last = self._last_raw.tolist()
        self._l_run = self._run.tolist()
        self._l_held = self._held.tolist()
        self._py_live = True

    @property
    def ready(self) -> np.ndarray:
        """Per channel: is the level baseline ready to score?"""
        return self.gate.ready[: self.n_channels]

    @property
    def warming_up(self) -> bool:
        gate = self.gate
        if gate._ready_all:  # cached by the gate: no array work in the steady state
            return False
        return not bool(gate.ready[: self.n_channels].any())

    @property
    def rebaselines(self) -> int:
        return self.gate.rebaselines

    def center(self) -> np.ndarray:
        return self.gate.center()[: self.n_channels]

    def _extend(self, x: np.ndarray) -> np.ndarray:
        if not self.delta and not self.ewma:
            return x
        ext, c = self._ext, self.n_channels
        ext[:c] = x
        if self.delta:
            np.subtract(x, self._prev, out=ext[c : 2 * c])
        if self.ewma:
            cand = self.lam * x + self._om * self._ewma
            if not self._ewma_ok:  # a channel's first value starts its EWMA
                cand = np.where(np.isfinite(self._ewma), cand, x)
            ext[self._e0 :] = cand
        return ext

    def _views(self, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per channel (largest raw-view ratio, largest ratio of every view) of the gate's
        column ratios."""
        c = self.n_channels
        raw = np.maximum(r[:c], r[c : 2 * c]) if self.delta else r[:c]
        return raw, (np.maximum(raw, r[self._e0 :]) if self.ewma else raw)

    def score_one(self, x: Sequence[float] | np.ndarray) -> float:
        """Largest level or step ratio over the channels, as ``r / (1 + r)``."""
        self._sync()
        xv = np.asarray(x, dtype=float)
        return self._score(xv, _all_finite(xv))

    def _score(self, xv: np.ndarray, finite: bool) -> float:
        gate = self.gate
        s = gate.score_array(self._extend(xv), finite and self._prev_ok)
        c = self.n_channels
        raw, ratios = self._views(gate.last_ratios)
        same = xv == self._last_raw
        if True in same.tolist():
            self._run_now = np.where(same, self._run + 1, 1)
            n = self.config.stuck_after
            if n:
                continuous = gate.distinct[:c] >= 0.5
                stuck = np.where(continuous & (self._run_now >= n), self._run_now / n, 0.0)
                if stuck.any():
                    ratios = np.maximum(ratios, stuck)
                    raw = np.maximum(raw, stuck)
                    peak = float(ratios.max())
                    s = max(s, peak / (1.0 + peak))
        else:  # the usual case: every value changed, every run restarts at 1
            self._run_now = self._ones
        self.last_ratios = ratios
        # s >= 0.5 exactly when some ratio (level, step or stuck) reached 1.
        self.flagged = ratios >= 1.0 if s >= 0.5 else self._no_flags
        self._raw_flagged = (raw >= 1.0 if s >= 0.5 else self._no_flags) if self.ewma \
            else self.flagged
        return s

    def score_learn(self, x: Sequence[float] | np.ndarray) -> float:
        """``score_one(x)`` then ``learn_one(x)`` (the cascade's per-point call), sharing
        the conversion and the step vector; returns the score. ``last_ratios`` and
        ``flagged`` describe the score, as after ``score_one``."""
        gate = self.gate
        if gate._py and self._prev_ok and self._ewma_ok:
            xl = x.tolist() if isinstance(x, np.ndarray) else [float(v) for v in x]
            t = sum(xl)
            if t - t == 0.0:  # every value finite
                return self._score_learn_py(xl)
        self._sync()
        xv = np.asarray(x, dtype=float)
        finite = _all_finite(xv)
        s = self._score(xv, finite)
        # (the vector just scored)
        self._learn(xv, finite, self._ext if self.delta or self.ewma else xv)
        return s

    def _score_learn_py(self, xl: list[float]) -> float:
        """score_learn on Python floats (few channels, all finite): the same arithmetic
        as the array path, without numpy's per-call overhead, flagged points included."""
        if not self._py_live:
            self._py_enter()
        gate, c = self.gate, self.n_channels
        ext = xl + [v - p for v, p in zip(xl, self._l_prev, strict=True)] if self.delta else xl
        if self.ewma:
            lam, om = self.lam, self._om
            cand = [lam * v + om * e for v, e in zip(xl, self._l_ewma, strict=True)]
            ext = ext + cand
        s = gate.score_list(ext, True)
        r = gate._ratios
        rl = r if isinstance(r, list) else r.tolist()
        raw = [a if a >= b else b for a, b in zip(rl[:c], rl[c : 2 * c], strict=True)] \
            if self.delta else rl[:c]
        ratios = [a if a >= b else b for a, b in zip(raw, rl[self._e0 :], strict=True)] \
            if self.ewma else raw
        last, run = self._l_last, self._l_run
        if True in map(eq, xl, last):  # some value repeats the last one
            run_now = [k + 1 if v == w else 1 for v, w, k in zip(xl, last, run, strict=True)]
            n = self.config.stuck_after
            if n:
                distinct = gate.distinct[:c].tolist()
                stuck = [k / n if d >= 0.5 and k >= n else 0.0
                         for k, d in zip(run_now, distinct, strict=True)]
                if any(stuck):
                    ratios = [a if a >= b else b for a, b in zip(ratios, stuck, strict=True)]
                    raw = [a if a >= b else b for a, b in zip(raw, stuck, strict=True)]
                    peak = max(ratios)
                    s = max(s, peak / (1.0 + peak))
        else:  # the usual case: every value changed, every run restarts at 1
            run_now = self._l_ones
        self._ratios = ratios
        if s < 0.5:  # no ratio reached 1: nothing flagged, learn everything
            self.flagged = self._no_flags
            gate.learn_list(ext, True)
            self._l_prev = xl  # (lists of the lane are replaced, never written in place)
            if self.ewma:
                self._l_ewma = cand
            self._l_held = self._l_zeros
            self._l_run = run_now
            self._l_last = xl
            return s
        # Something was flagged: the gate's guard keeps it out of the baselines and
        # `previous` / the EWMA take it only after HOLD flagged points in a row (_follow).
        flags = [r >= 1.0 for r in ratios]
        self.flagged = np.array(flags)
        gate.learn_list(ext, True)
        if self.delta or self.ewma:
            raw_flags = [r >= 1.0 for r in raw] if self.ewma else flags
            take = [not f or h >= HOLD for f, h in zip(raw_flags, self._l_held, strict=True)]
            if self.delta:
                self._l_prev = [v if t else p for v, p, t in zip(xl, self._l_prev, take,
                                                                  strict=True)]
            if self.ewma:
                self._l_ewma = [v if t else e for v, e, t in zip(cand, self._l_ewma, take,
                                                                  strict=True)]
            self._l_held = [0 if t else h + 1 for t, h in zip(take, self._l_held, strict=True)]
        self._l_run = run_now
        self._l_last = xl
        return s

    def score_learn_many(self, rows: np.ndarray) -> np.ndarray:
        """``score_learn`` every row of a ``(B, C)`` array in order, vectorised along time
        where it can (:mod:`agent.detectors.batch_gate`: the same scores and state, bit
        for bit); returns the scores. ``last_ratios`` and ``flagged`` describe the last."""
        from agent.detectors.batch_gate import score_learn_many

        return score_learn_many(self, rows).scores

    def learn_one(self, x: Sequence[float] | np.ndarray) -> None:
        """Learn the point just scored (each view keeps its own flagged values out)."""
        self._sync()
        xv = np.asarray(x, dtype=float)
        self._learn(xv, _all_finite(xv))

    def _learn(self, xv: np.ndarray, finite: bool, ext: np.ndarray | None = None) -> None:
        gate = self.gate
        ext = self._extend(xv) if ext is None else ext
        gate.learn_array(ext, gate._flagged, finite and self._prev_ok)
        if finite and self.flagged is self._no_flags:  # the usual case
            if self.delta:
                self._prev[:] = xv
                self._prev_ok = True
            if self.ewma:
                self._ewma[:] = ext[self._e0 :]
                self._ewma_ok = True
            self._held.fill(0)
            self._run = self._run_now  # may be the shared ones: never written in place
            self._last_raw[:] = xv
            return
        self._follow(xv, self._raw_flagged, ext)
        finite = np.isfinite(xv)
        self._run = np.where(finite, self._run_now, self._run)
        self._last_raw = np.where(finite, xv, self._last_raw)

    def learn_only(self, x: Sequence[float] | np.ndarray) -> None:
        """Warm-up: learn without scoring (everything finite is accepted)."""
        self._sync()
        xv = np.asarray(x, dtype=float)
        ext = self._extend(xv)
        self.gate.learn_one(ext, np.zeros(len(ext), dtype=bool))
        self._follow(xv, np.zeros(self.n_channels, dtype=bool), ext)
        finite = np.isfinite(xv)
        run = np.where(xv == self._last_raw, self._run + 1, 1)
        self._run = np.where(finite, run, self._run)
        self._last_raw = np.where(finite, xv, self._last_raw)

    def _follow(self, x: np.ndarray, flags: np.ndarray, ext: np.ndarray) -> None:
        """``previous`` and the EWMA take the accepted values: finite, not flagged by a
        raw-value view, or flagged ``HOLD`` points in a row (the new level is followed)."""
        if not self.delta and not self.ewma:
            return
        finite = np.isfinite(x)
        take = finite & (~flags | (self._held >= HOLD))
        if self.delta:
            self._prev = np.where(take, x, self._prev)
            self._prev_ok = bool(np.isfinite(self._prev).all())
        if self.ewma:
            self._ewma = np.where(take, ext[self._e0 :], self._ewma)
            self._ewma_ok = bool(np.isfinite(self._ewma).all())
        self._held = np.where(take, 0, self._held + (finite & flags))

    def rebaseline_all(self) -> None:
        self._sync()
        self.gate.rebaseline_all()
        self._prev[:] = np.nan
        self._ewma[:] = np.nan
        self._held[:] = 0
        self._prev_ok = not self.delta
        self._ewma_ok = not self.ewma

    def state_dict(self) -> dict[str, Any]:
        self._sync()
        return {"gate": self.gate.state_dict(), "prev": self._prev.copy(),
                "held": self._held.copy(), "delta": self.delta,
                "ewma": self._ewma.copy() if self.ewma else None,
                "stuck": (self._last_raw.copy(), self._run.copy())}

    def load_state(self, state: dict[str, Any]) -> None:
        if state["delta"] != self.delta or state["prev"].shape != self._prev.shape:
            raise ValueError("stage-1 state does not match the configuration")
        self._py_live = False  # the Python lane's copies are stale now
        self.gate.load_state(state["gate"])
        self._prev = state["prev"].copy()
        self._held = state["held"].copy()
        self._prev_ok = not self.delta or bool(np.isfinite(self._prev).all())
        ewma = state.get("ewma")  # absent from older checkpoints: the EWMA starts fresh
        if ewma is not None and ewma.shape != self._ewma.shape:
            raise ValueError("stage-1 EWMA state does not match the configuration")
        self._ewma = np.full(self.n_channels, np.nan) if ewma is None else ewma.copy()
        self._ewma_ok = not self.ewma or bool(np.isfinite(self._ewma).all())
        self._last_raw, self._run = (a.copy() for a in state["stuck"])
