"""Stage 1 for event streams: decayed category counts, shares, novelty and transitions.

:class:`CategoryRarity` follows MISSION.md item 3 for categorical values: counts decay
with a half-life (in events), each value's *share* is tracked on two time scales, and

* a value never seen in the baseline flags at once (``new_value``);
* a value whose long-run share is below ``rare_share`` flags (``rare``);
* a value whose recent share rose above its long-run share by more than ``share_shift``
  *and* by ``share_z`` standard errors *and* to at least ``share_ratio`` times its long-run
  share flags (``share_up``; a burst). The ratio test matters on workflow data: the
  events of one workflow cluster in time, so their shares swing far more than a
  binomial standard error says, but only by a small factor. With
  ``direction`` ``down``/``both``, one tracked value per event is also checked for a
  share that fell (``share_down``: a heartbeat that stopped).

Flagged values do not enter the long-run baseline (the guard), unless a value was
flagged ``relearn_after`` times: then it is learnt (a new normal). Memory is bounded by
``max_values`` per tracker (the value with the smallest decayed count is evicted).

:class:`TransitionGate` keeps decayed ``previous -> next`` counts and answers "is this
transition unusual?", which is how the cascade decides to run the sequence model.

Scores are ratios to the threshold (1.0 = at threshold), as everywhere in the agent.

>>> r = CategoryRarity(min_events=20)
>>> for _ in range(50):
...     for v in ("A", "B"):
...         _ = r.process(v)
>>> r.process("C")
(4.0, 'new_value')
>>> r.process("A")[0] < 1
True
"""

from __future__ import annotations

import math
from typing import Any, Literal

NEW_VALUE_RATIO = 4.0  # score 0.8: a brand-new value is a clear, medium/high alert
MAX_RATIO = 8.0


def _decay(half_life: float) -> float:
    return 0.5 ** (1.0 / half_life)


class _Decayed:
    """Decayed counts per value with a lazy per-value clock; bounded by ``max_values``."""

    def __init__(self, half_life: float, max_values: int) -> None:
        self.d = _decay(half_life)
        self.max_values = max_values
        self.n = 0  # events learnt (the clock)
        self.total = 0.0
        self.counts: dict[str, list[float]] = {}  # value -> [count, clock of last update]

    def count(self, v: str) -> float:
        c = self.counts.get(v)
        return 0.0 if c is None else c[0] * self.d ** (self.n - c[1])

    def share(self, v: str) -> float:
        return self.count(v) / self.total if self.total > 0 else 0.0

    def add(self, v: str) -> None:
        c = self.count(v)
        self.n += 1
        self.total = self.total * self.d + 1.0
        self.counts[v] = [c * self.d + 1.0, float(self.n)]
        if len(self.counts) > self.max_values:
            victim = min((k for k in self.counts if k != v), key=self.count)
            del self.counts[victim]

    def state_dict(self) -> dict[str, Any]:
        return {"n": self.n, "total": self.total, "counts": self.counts}

    def load_state(self, s: dict[str, Any]) -> None:
        self.n, self.total = int(s["n"]), float(s["total"])
        self.counts = {str(k): [float(a), float(b)] for k, (a, b) in s["counts"].items()}


class CategoryRarity:
    """Novelty, rarity and share shifts of one categorical attribute of one source."""

    def __init__(
        self,
        half_life: float = 5000.0,
        short_half_life: float = 50.0,
        min_events: int = 200,
        rare_share: float = 0.0,
        share_shift: float = 0.02,
        share_z: float = 4.0,
        share_ratio: float = 8.0,
        direction: Literal["up", "down", "both"] = "up",
        relearn_after: int = 20,
        max_values: int = 1000,
    ) -> None:
        self.half_life = half_life
        self.short_half_life = short_half_life
        self.min_events = min_events
        self.rare_share = rare_share
        self.share_shift = share_shift
        self.share_z = share_z
        self.share_ratio = share_ratio
        self.direction = direction
        self.relearn_after = relearn_after
        self.max_values = max_values
        self._long = _Decayed(half_life, max_values)
        self._short = _Decayed(short_half_life, max_values)
        self._flags: dict[str, int] = {}
        self._rr = 0
        # variance factor of an exponentially weighted share: sum w^2 / (sum w)^2
        d = self._short.d
        self._var_k = (1 - d) / (1 + d)

    @property
    def warming_up(self) -> bool:
        return self._long.n < self.min_events

    def score_one(self, value: str) -> tuple[float, str]:
        """(ratio to threshold, reason) for ``value``; learns nothing."""
        if self.warming_up:
            return 0.0, ""
        long_c = self._long.count(value)
        if long_c < 1e-9 and value not in self._long.counts:
            return NEW_VALUE_RATIO, "new_value"
        best, why = 0.0, ""
        p_long = long_c / self._long.total
        if self.rare_share > 0 and p_long < self.rare_share:
            best, why = min(self.rare_share / max(p_long, 1e-12), MAX_RATIO), "rare"
        if self.direction in ("up", "both"):
            s = self._short
            p_short = (s.count(value) * s.d + 1.0) / (s.total * s.d + 1.0)
            r = self._shift_ratio(p_short - p_long, p_long)
            if r > best:
                best, why = r, "share_up"
        return best, why

    def _shift_ratio(self, diff: float, p_long: float) -> float:
        if diff <= 0:
            return 0.0
        p = max(p_long, 1.0 / max(self._long.total, 1.0))
        z = diff / math.sqrt(p * (1 - p) * self._var_k + 1e-12)
        factor = (p + diff) / p / self.share_ratio
        return min(diff / self.share_shift, z / self.share_z, factor, MAX_RATIO)

    def drop_check(self) -> tuple[float, str, str]:
        """Round-robin check of one tracked value for a share that fell (O(1) per event)."""
        if self.direction == "up" or self.warming_up or not self._long.counts:
            return 0.0, "", ""
        keys = list(self._long.counts) if self._rr == 0 or self._rr >= len(self._long.counts) \
            else None
        if keys is not None:
            self._keys = keys
            self._rr = 0
        v = self._keys[self._rr % len(self._keys)]
        self._rr += 1
        p_long, p_short = self._long.share(v), self._short.share(v)
        r = self._shift_ratio(p_long - p_short, p_long)
        return (r, "share_down", v) if r >= 1.0 else (0.0, "", "")

    def learn_one(self, value: str, flagged: bool) -> None:
        self._short.add(value)
        if flagged and not self.warming_up:
            n = self._flags.get(value, 0) + 1
            if n < self.relearn_after:
                self._flags[value] = n
                if len(self._flags) > self.max_values:
                    self._flags.pop(next(iter(self._flags)))
                return
            self._flags.pop(value, None)
        self._long.add(value)

    def process(self, value: str) -> tuple[float, str]:
        """Score then learn (flagged = ratio >= 1)."""
        r, why = self.score_one(value)
        self.learn_one(value, r >= 1.0)
        return r, why

    def share(self, value: str) -> float:
        return self._long.share(value)

    def state_dict(self) -> dict[str, Any]:
        return {"long": self._long.state_dict(), "short": self._short.state_dict(),
                "flags": dict(self._flags)}

    def load_state(self, s: dict[str, Any]) -> None:
        self._long.load_state(s["long"])
        self._short.load_state(s["short"])
        self._flags = {str(k): int(v) for k, v in s["flags"].items()}
        self._rr = 0


class TransitionGate:
    """Decayed ``previous -> next`` counts; :meth:`unusual` says when to run the model.

    A transition is unusual when its previous event has fewer than ``min_row`` (decayed)
    observations or ``P(next | previous)`` is below ``below``. Rows are bounded to
    ``max_row`` successors and the table to ``max_rows`` previous events.

    >>> g = TransitionGate(below=0.1, min_row=5)
    >>> for _ in range(20):
    ...     g.learn_one("A", "B")
    >>> g.unusual("A", "B"), g.unusual("A", "C")
    (False, True)
    """

    def __init__(self, below: float = 0.05, min_row: float = 20.0, half_life: float = 2000.0,
                 max_rows: int = 1000, max_row: int = 64) -> None:
        self.below = below
        self.min_row = min_row
        self.half_life = half_life
        self.max_rows = max_rows
        self.max_row = max_row
        self._d = _decay(half_life)
        self._rows: dict[str, dict[str, float]] = {}
        self._totals: dict[str, float] = {}

    def probability(self, prev: str, nxt: str) -> tuple[float, float]:
        """(P(next | previous), decayed row total)."""
        row = self._rows.get(prev)
        if row is None:
            return 0.0, 0.0
        t = self._totals[prev]
        return row.get(nxt, 0.0) / t, t

    def unusual(self, prev: str | None, nxt: str) -> bool:
        if prev is None:
            return False
        p, total = self.probability(prev, nxt)
        return total < self.min_row or p < self.below

    def learn_one(self, prev: str | None, nxt: str) -> None:
        if prev is None:
            return
        row = self._rows.get(prev)
        if row is None:
            if len(self._rows) >= self.max_rows:
                victim = min(self._totals, key=self._totals.__getitem__)
                del self._rows[victim], self._totals[victim]
            row = self._rows[prev] = {}
            self._totals[prev] = 0.0
        d = self._d
        for k in row:
            row[k] *= d
        row[nxt] = row.get(nxt, 0.0) + 1.0
        self._totals[prev] = self._totals[prev] * d + 1.0
        if len(row) > self.max_row:
            victim = min((k for k in row if k != nxt), key=row.__getitem__)
            self._totals[prev] -= row.pop(victim)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self._rows, "totals": self._totals}

    def load_state(self, s: dict[str, Any]) -> None:
        self._rows = {str(k): {str(a): float(b) for a, b in v.items()}
                      for k, v in s["rows"].items()}
        self._totals = {str(k): float(v) for k, v in s["totals"].items()}
