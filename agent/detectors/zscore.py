"""Stage 1: a per-channel statistical gate (rolling z-score and robust modified z-score).

Every channel of a stream keeps a ring buffer of its last ``window`` *accepted* values.
From it the gate derives the rolling mean / standard deviation (running sums, O(1) per
point) and the median / MAD (recomputed every ``robust_refresh`` accepted points, so the
amortised cost is O(window / robust_refresh)). Memory is O(window x channels), fixed.

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

>>> import numpy as np
>>> from agent.config import ZScoreConfig
>>> gate = StatGate(ZScoreConfig(window=20, min_points=10), n_channels=1)
>>> for v in [10.0, 10.2, 9.9, 10.1, 10.0, 9.8, 10.1, 10.0, 9.9, 10.2, 10.0]:
...     _ = gate.score_one(np.array([v])); gate.learn_one(np.array([v]))
>>> round(gate.score_one(np.array([10.05])), 2) < 0.5
True
>>> gate.score_one(np.array([14.0])) > 0.9
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from agent.config import ChannelConfig, ZScoreConfig

_DIRECTIONS = {"both": 0, "up": 1, "down": -1}
_EPS = 1e-12


class StatGate:
    """Rolling + robust z-score over every channel of one stream (vectorised over channels)."""

    def __init__(
        self,
        config: ZScoreConfig,
        n_channels: int,
        channels: Sequence[ChannelConfig] | None = None,
    ) -> None:
        self.config = config
        self.n_channels = n_channels
        w, c = config.window, n_channels
        chans = list(channels) if channels is not None else []
        self._direction = np.array(
            [_DIRECTIONS[(ch.direction or config.direction)] for ch in chans]
            if chans
            else [_DIRECTIONS[config.direction]] * c,
            dtype=np.int8,
        )
        self._abs_tol = np.array(
            [ch.abs_tolerance if ch.abs_tolerance is not None else config.abs_tolerance
             for ch in chans] if chans else [config.abs_tolerance] * c
        )
        self._rel_tol = np.array(
            [ch.rel_tolerance if ch.rel_tolerance is not None else config.rel_tolerance
             for ch in chans] if chans else [config.rel_tolerance] * c
        )
        self._use_rolling = config.method in ("rolling", "both")
        self._use_robust = config.method in ("robust", "both")
        self._buf = np.zeros((w, c))
        self._count = np.zeros(c, dtype=np.int64)
        self._head = np.zeros(c, dtype=np.int64)
        self._sum = np.zeros(c)
        self._sumsq = np.zeros(c)
        self._median = np.zeros(c)
        self._robust_scale = np.ones(c)
        self._since_refresh = np.zeros(c, dtype=np.int64)
        self._robust_valid = np.zeros(c, dtype=bool)
        p = config.rebaseline_after
        self._quarantine = np.zeros((p, c))
        self._streak = np.zeros(c, dtype=np.int64)
        self._cols = np.arange(c)
        # Outputs of the last score_one, reused by learn_one (score-then-learn).
        self.last_ratios = np.zeros(c)
        self._last_flagged = np.zeros(c, dtype=bool)
        self.rebaselines = 0

    # ------------------------------------------------------------------ state queries
    @property
    def ready(self) -> np.ndarray:
        """Per channel: has the baseline enough points to score?"""
        return self._count >= self.config.min_points

    @property
    def warming_up(self) -> bool:
        return not bool(self.ready.any())

    def center(self) -> np.ndarray:
        """Current baseline centre per channel (median if robust, else mean)."""
        n = np.maximum(self._count, 1)
        return np.where(self._robust_valid, self._median, self._sum / n)

    # ------------------------------------------------------------------ scoring
    def score_one(self, x: np.ndarray) -> float:
        """Score one vector of channel values (NaN = missing); higher is more anomalous."""
        cfg = self.config
        finite = np.isfinite(x)
        ready = (self._count >= cfg.min_points) & finite
        ratios = np.zeros(self.n_channels)
        if ready.any():
            xv = np.where(finite, x, 0.0)
            n = np.maximum(self._count, 1)
            mean = self._sum / n
            if self._use_robust:
                self._maybe_refresh()
            center = self._median if self._use_robust else mean
            tol = np.maximum(self._abs_tol, self._rel_tol * np.abs(center))
            if self._use_rolling:
                var = np.maximum(self._sumsq / n - mean * mean, 0.0)
                std = np.maximum(np.sqrt(var), _EPS * (1.0 + np.abs(mean)))
                ratios = self._directional(xv - mean, tol) / std / cfg.threshold
            if self._use_robust:
                dev = self._directional(xv - self._median, tol)
                r = 0.6745 * dev / self._robust_scale / cfg.robust_threshold
                ratios = np.maximum(ratios, r) if self._use_rolling else r
            ratios = np.where(ready, ratios, 0.0)
        self.last_ratios = ratios
        self._last_flagged = ratios >= 1.0
        peak = float(ratios.max()) if ratios.size else 0.0
        return peak / (1.0 + peak)

    def _directional(self, dev: np.ndarray, tol: np.ndarray) -> np.ndarray:
        d = self._direction
        signed = np.where(d == 0, np.abs(dev), dev * d)
        signed = np.maximum(signed, 0.0)
        return np.where(signed <= tol, 0.0, signed)

    def _maybe_refresh(self) -> None:
        stale = (self._since_refresh >= self.config.robust_refresh) | ~self._robust_valid
        stale &= self._count >= self.config.min_points
        if stale.any():
            self._refresh(np.flatnonzero(stale))

    def _refresh(self, cols: np.ndarray) -> None:
        w = self.config.window
        for c in cols:
            vals = self._buf[: min(int(self._count[c]), w), c]
            med = float(np.median(vals))
            absdev = np.abs(vals - med)
            mad = float(np.median(absdev))
            scale = mad if mad > 0 else 1.2533 * float(absdev.mean()) * 0.6745
            self._median[c] = med
            self._robust_scale[c] = max(scale, _EPS * (1.0 + abs(med)))
            # Re-sum exactly here so rounding drift of the running sums stays bounded.
            self._sum[c] = float(vals.sum())
            self._sumsq[c] = float((vals * vals).sum())
            self._since_refresh[c] = 0
            self._robust_valid[c] = True

    # ------------------------------------------------------------------ learning
    def learn_one(self, x: np.ndarray, flagged: np.ndarray | None = None) -> None:
        """Add the values the gate accepts to the baseline; quarantine the flagged ones."""
        finite = np.isfinite(x)
        if flagged is None:
            flagged = self._last_flagged
        if not self.config.guard:
            flagged = np.zeros(self.n_channels, dtype=bool)
        accept = finite & ~flagged
        hold = finite & flagged
        if accept.any():
            self._push(np.flatnonzero(accept), x)
            self._streak[accept] = 0
        if hold.any():
            p = self.config.rebaseline_after
            cols = np.flatnonzero(hold)
            self._quarantine[self._streak[cols] % p, cols] = x[cols]
            self._streak[cols] += 1
            shifted = cols[self._streak[cols] >= p]
            if shifted.size:
                self._rebaseline(shifted)

    def _push(self, cols: np.ndarray, x: np.ndarray) -> None:
        w = self.config.window
        head = self._head[cols]
        full = self._count[cols] >= w
        old = np.where(full, self._buf[head, cols], 0.0)
        v = x[cols]
        self._buf[head, cols] = v
        self._sum[cols] += v - old
        self._sumsq[cols] += v * v - old * old
        self._head[cols] = (head + 1) % w
        self._count[cols] = np.minimum(self._count[cols] + 1, w)
        self._since_refresh[cols] += 1

    def _rebaseline(self, cols: np.ndarray) -> None:
        """Accept a persistent level shift: restart these channels from the quarantine."""
        p = self.config.rebaseline_after
        w = self.config.window
        for c in cols:
            vals = self._quarantine[:, c][:p][-w:]
            k = len(vals)
            self._buf[:k, c] = vals
            self._count[c] = k
            self._head[c] = k % w
            self._sum[c] = float(vals.sum())
            self._sumsq[c] = float((vals * vals).sum())
            self._robust_valid[c] = False
            self._since_refresh[c] = 0
            self._streak[c] = 0
            self.rebaselines += 1
        if self.config.method != "rolling":
            ready = cols[self._count[cols] >= self.config.min_points]
            if ready.size:
                self._refresh(ready)

    def rebaseline_all(self) -> None:
        """Forget the baseline of every channel (operator command); warm-up restarts."""
        self._count[:] = 0
        self._head[:] = 0
        self._sum[:] = 0.0
        self._sumsq[:] = 0.0
        self._robust_valid[:] = False
        self._streak[:] = 0

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, Any]:
        return {k: (v.copy() if isinstance(v, np.ndarray) else v)
                for k, v in vars(self).items() if k.startswith("_") or k == "rebaselines"}

    def load_state(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            cur = getattr(self, k, None)
            if isinstance(cur, np.ndarray) and (not isinstance(v, np.ndarray) or v.shape != cur.shape):
                raise ValueError(f"state {k}: shape mismatch")
            setattr(self, k, v)
