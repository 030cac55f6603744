"""Stage 1 over a batch of points, vectorised along time (issue #9).

:func:`score_learn_many` gives, for a ``(B, C)`` block of rows, exactly what ``B``
sequential :meth:`Stage1Gate.score_learn <agent.detectors.gate.Stage1Gate.score_learn>`
calls give -- the same scores, per-channel ratios and flags, bit for bit, and the gate
left in the same state -- at a fraction of the per-point cost when most points are
plain.

A *plain* point is one the per-point code would score and learn on its short paths:
every column's ring full, every value finite, the step/EWMA views defined, method and
direction ``both``, nothing flagged (no ratio reaches 1, no stuck channel). A run of plain
points is done in one pass:

* the views: the step is the difference from the previous row (the last accepted value
  before the first row), the EWMA a short loop over the rows (same operations in the
  same order as the per-point recursion);
* the running sums before each row are ``np.cumsum`` over ``[sum, x_0 - old_0, ...]``
  (sequential additions, so bit for bit the per-point ``+=``); row ``t`` evicts the
  ring's ``t``-th oldest value, or the pass's own row ``t - window``;
* the robust refreshes due inside the run (every ``robust_refresh`` learnt points) are
  computed from the rings' contents at that row, in ring order as the gate's refresh
  reads them (the mean absolute deviation is an order-dependent sum: row after row, or
  pairwise for a single column, as numpy sums it); the periodic refresh that also
  re-sums the running sums and re-measures the resolution (every ``_RESOLUTION_EVERY``
  refreshes) is left to the gate's own code: it ends the pass, and the next one starts
  by calling it where the per-point score would;
* the ratios of every row with the per-point formula and operation order.

The first row that is not plain (flagged, non-finite, stuck, ...) ends the pass: the
rows before it are committed to the gate's arrays (ring, sums, heads, refresh results
and counters; previous value, EWMA, runs), the row itself goes through the per-point
``score_learn`` (which handles everything), and the next pass starts after it. So do
rows met while the gate is not in a plain state (warm-up, a re-baselined column
refilling, a missing previous value, other methods or directions). A pass costs a few
dozen numpy calls whatever its length: when plain runs are short (an anomaly storm, or
many columns on noisy data, where some column is flagged every few points) the rows go
point by point for a while (pacing; it changes the speed, never the results).

The gate is always left in its array state (the plain-Python lane re-enters from the
arrays), so batch and per-point calls interleave freely.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

import numpy as np

from agent.detectors.zscore import _EPS, _RESOLUTION_EVERY, StatGate

if TYPE_CHECKING:
    from agent.detectors.gate import Stage1Gate

# Up to this many channels the EWMA recursion runs on Python floats (a numpy call per row
# costs more than a loop over a few values); same arithmetic either way.
_EWMA_PY_MAX = 8
MAX_CHUNK = 512  # rows per vectorised pass (bounds its scratch memory)
# A pass computes every row it is given, and a row that is not plain ends it: see the
# pacing in score_learn_many (when most rows are flagged, per point is cheaper).
_FIRST_SPAN, _MIN_SPAN, _SHORT_RUN, _SKIP, _MAX_SKIP = 128, 32, 32, 32, 512
_PACE: WeakKeyDictionary[Stage1Gate, list[int]] = WeakKeyDictionary()


@dataclass(frozen=True, slots=True)
class BatchResult:
    """Stage 1's verdicts on the first ``n`` rows of a batch (``n`` < rows only when the
    caller asked to stop at warm-up)."""

    n: int
    scores: np.ndarray  # (n,) stage scores, as score_learn returns
    ratios: np.ndarray  # (n, C) last_ratios after each row
    flagged: np.ndarray  # (n, C) flagged after each row
    plain: int  # rows done by the vectorised chunks (the rest went point by point)


def score_learn_many(s1: Stage1Gate, rows: np.ndarray,
                     stop_at_warm_up: bool = False) -> BatchResult:
    """``score_learn`` every row of ``rows`` (shape ``(B, C)``, NaN = missing) in order.

    ``stop_at_warm_up``: stop before a row met while ``s1.warming_up`` (the cascade does
    not score such rows: it learns them with ``learn_only``); the result says how many
    rows were done."""
    x = np.asarray(rows, dtype=float)
    if x.ndim != 2 or x.shape[1] != s1.n_channels:
        raise ValueError(f"rows must have shape (B, {s1.n_channels}), got {x.shape}")
    b, c = x.shape
    scores = np.empty(b)
    ratios = np.empty((b, c))
    flagged = np.zeros((b, c), dtype=bool)
    i = plain = 0
    # Pacing (speed only, never results): the rows a pass is given follow the plain runs
    # seen; after a short run the next rows go point by point, for longer each time.
    pace = _PACE.get(s1)
    if pace is None:
        pace = _PACE[s1] = [_FIRST_SPAN, _SKIP, 0]
    span, backoff, skip = pace
    one: list[int] = []  # rows that went point by point, their ratios and flags
    one_r: list[Any] = []
    one_f: list[np.ndarray] = []
    while i < b:
        if stop_at_warm_up and s1.warming_up:
            break
        if not skip:
            k, blocked = _chunk(s1, x, i, min(span, b - i), scores, ratios)
            i += k
            plain += k
            if blocked is None:  # (the gate's state, not the rows: no pacing change)
                pass
            elif not blocked:  # (ended at the span or at a refresh that re-sums)
                span = min(2 * span, MAX_CHUNK) if k >= span else span
                backoff = _SKIP
                continue
            else:
                # Row i is not plain: it goes point by point, and so do the next rows when
                # the plain run was short (a pass would cost more than it saves).
                span = max(2 * k, _MIN_SPAN)
                if k < _SHORT_RUN:
                    skip, backoff = backoff, min(2 * backoff, _MAX_SKIP)
                else:
                    backoff = _SKIP
            if stop_at_warm_up and s1.warming_up:
                break
        else:
            skip -= 1
        scores[i] = s1.score_learn(x[i])
        one.append(i)
        one_r.append(s1._ratios)  # (a list on the plain-Python lane: converted at the end)
        one_f.append(s1.flagged)
        i += 1
    pace[:] = span, backoff, skip
    if one:
        ratios[one] = np.array(one_r, dtype=float)
        flagged[one] = np.array(one_f, dtype=bool)
    return BatchResult(i, scores[:i], ratios[:i], flagged[:i], plain)


def _first_false(ok: np.ndarray) -> int:
    """Index of the first False of a 1-D bool array (its length if none)."""
    bad = np.flatnonzero(~ok)
    return int(bad[0]) if bad.size else len(ok)


def _chunk(s1: Stage1Gate, x: np.ndarray, i: int, span: int, scores: np.ndarray,
           ratios: np.ndarray) -> tuple[int, bool | None]:
    """Score and learn the plain rows among the ``span`` rows from ``i`` on, up to the end
    of the chunk: the number done, and whether the row after them must go point by point
    (True: it is not plain; None: the gate is not in a plain state: warm-up, re-baselined
    columns, a channel without a previous value, another method or direction)."""
    gate, cfg = s1.gate, s1.config
    # (Checked before leaving the plain-Python lanes: the lanes keep these flags current,
    # and a gate that is re-baselining must not pay for leaving and re-entering a lane
    # at every row.)
    if not (gate._short and s1._prev_ok and s1._ewma_ok and gate._ready_all
            and gate._full_all):
        return 0, None
    s1._sync()
    gate._sync()
    if gate._since >= cfg.robust_refresh or not gate._robust_ok:
        if gate._py and gate._full_all:
            gate._ring()  # the per-point lane refreshes from its copy of the ring
        gate._refresh()  # (as the per-point score would, before scoring row i)
    if not (gate._ready_all and gate._full_all):
        return 0, None
    xs = x[i : i + span]
    n = _first_false(np.isfinite(xs).all(axis=1))
    blocked = n < len(xs)  # by a row with a missing value
    # Refreshes inside the chunk (before scoring row b): done here from the rings' contents
    # at that row, except the periodic one that also re-sums (it ends the chunk).
    w, every = cfg.window, cfg.robust_refresh
    bounds: list[int] = []
    b, done = every - gate._since, gate._refreshes
    while b < n:
        done += 1
        if done % _RESOLUTION_EVERY == 1 or not gate._resolution_ok:
            n, blocked = b, False
            break
        bounds.append(b)
        b += every
    if not n:
        return 0, True
    xs = xs[:n]
    c = s1.n_channels
    parts = [xs]
    if s1.delta:
        prev = np.vstack((s1._prev, xs[:-1]))
        parts.append(xs - prev)
    ew = None
    if s1.ewma:
        ew = _ewma_rows(s1.lam * xs, s1._om, s1._ewma)
        parts.append(ew)
    ext = np.hstack(parts) if len(parts) > 1 else xs  # (n, K): the gate's columns

    # Row t evicts the ring's t-th oldest value (t < window), later rows the chunk's own.
    cols, head = gate._cols, gate._head
    pos = (head + np.arange(min(n, w))[:, None]) % w
    old = gate._buf[pos, cols]
    if n > w:
        old = np.vstack((old, ext[: n - w]))
    d = ext - old
    sums = np.cumsum(np.vstack((gate._sum, d)), axis=0)
    old += ext
    old *= d  # x*x - old*old as (x - old)(x + old), as the per-point learning
    sumsq = np.cumsum(np.vstack((gate._sumsq, old)), axis=0)

    # Ratios of the rows before the first refresh, with the gate's robust baseline; the
    # refreshes are computed only if none of those rows ends the pass.
    first = bounds[0] if bounds else n
    r = _ratios(gate, ext[:first], sums[:first], sumsq[:first], gate._median, gate._kmad,
                gate._tol, gate._floor2)
    robust = None
    if bounds and bool((r.max(axis=1) < 1.0).all()):
        bq = np.array(bounds)
        ring = gate._buf[(head + np.arange(w)[:, None]) % w, cols]  # oldest first
        robust = _refreshes(gate, np.vstack((ring, ext)), bq, w)
        seg = np.searchsorted(bq, np.arange(first, n), side="right") - 1
        rest = _ratios(gate, ext[first:], sums[first:n], sumsq[first:n], *(
            a[seg] for a in robust[:4]))
        r = np.vstack((r, rest))
    elif bounds:  # (a row before the first refresh ends the pass)
        n, bounds = first, []
        xs, ext = xs[:n], ext[:n]
    peak = r.max(axis=1)
    s = peak / (1.0 + peak)
    raw = np.maximum(r[:, :c], r[:, c : 2 * c]) if s1.delta else r[:, :c]
    view = np.maximum(raw, r[:, s1._e0 :]) if s1.ewma else raw
    ok = s < 0.5  # no ratio reached 1: nothing flagged

    # Runs of identical values (the stuck-sensor rule).
    last = np.vstack((s1._last_raw, xs[:-1]))
    same = xs == last
    run = None
    if same.any():
        idx = np.arange(1, n + 1)[:, None]
        reset = np.maximum.accumulate(np.where(same, 0, idx), axis=0)
        run = np.where(reset > 0, idx - reset + 1, s1._run + idx)
        stuck_n = cfg.stuck_after
        if stuck_n:
            continuous = gate.distinct[:c] >= 0.5
            ok &= ~(continuous & (run >= stuck_n)).any(axis=1)
    k = _first_false(ok)
    blocked |= k < n
    n = k
    if not n:
        return 0, True

    # Commit the first n rows, as n per-point calls would leave the state.
    first = max(n - w, 0)  # (earlier rows are overwritten by later ones)
    gate._buf[(head + np.arange(first, n)[:, None]) % w, cols] = ext[first:n]
    gate._sum[:] = sums[n]
    gate._sumsq[:] = sumsq[n]
    gate._head[:] = (head + n) % w
    if not gate._streak_clear:
        gate._streak.fill(0)
        gate._streak_clear = True
    k = int(np.searchsorted(bq, n)) if robust is not None else 0  # refreshes done
    if k:
        assert robust is not None
        gate._median, gate._kmad, gate._tol = (a[k - 1].copy() for a in robust[:3])
        gate._flat = robust[4][k - 1].copy()
        gate._floor = gate._step.copy()
        gate._refreshes += k
        gate._since = n - bounds[k - 1]
        gate._derive()
    else:
        gate._since += n
    gate._ring_ok = False
    gate._ratios = r[n - 1].copy()
    gate._flagged = gate._no_flags
    gate._l_flags = None
    last_x = xs[n - 1]
    if s1.delta:
        s1._prev[:] = last_x
    if s1.ewma and ew is not None:
        s1._ewma[:] = ew[n - 1]
    if s1._held.any():
        s1._held = np.zeros(c, dtype=np.int64)
    s1._run = s1._run_now = s1._ones if run is None else run[n - 1].astype(np.int64)
    s1._last_raw[:] = last_x
    s1.flagged = s1._raw_flagged = s1._no_flags
    s1._ratios = view[n - 1].copy()
    scores[i : i + n] = s[:n]
    ratios[i : i + n] = view[:n]
    return n, blocked


def _ratios(gate: StatGate, ext: np.ndarray, sums: np.ndarray, sumsq: np.ndarray,
            med: np.ndarray, kmad: np.ndarray, tol: np.ndarray, floor2: np.ndarray
            ) -> np.ndarray:
    """Column ratios of rows of the gate's columns, from the running sums before each
    row and the robust baseline (per column, or per row and column): the short path's
    formula and operation order (``StatGate._score_short``)."""
    nn = gate._n
    mean = sums / nn
    var = sumsq / nn
    var -= mean * mean
    np.maximum(var, floor2, out=var)
    np.sqrt(var, out=var)
    scale = np.divide(gate._inv_thr, var)
    d0 = ext - mean
    np.abs(d0, out=d0)
    d1 = ext - med
    np.abs(d1, out=d1)
    d0 *= d0 > tol  # (a tolerance of 0 changes nothing: every deviation is >= 0)
    d1 *= d1 > tol
    d0 *= scale
    d1 *= kmad
    return np.maximum(d0, d1)


def _refreshes(gate: StatGate, hist: np.ndarray, bq: np.ndarray, w: int
               ) -> tuple[np.ndarray, ...]:
    """The robust baseline the gate's refresh (full columns, no re-sum) computes before
    row ``b`` of a chunk, for every ``b`` of ``bq``: rows of median, ``_kmad``, tolerance,
    squared floor and flatness. The ring at row ``b`` holds ``hist[b : b + w]``; in ring
    order (head first) as the refresh reads it, since the mean absolute deviation is a
    sum in that order (numpy: row after row, a single column pairwise)."""
    head, p = gate._head, np.arange(w)
    at = bq[:, None, None]
    vals = hist[at + (p - head[:, None] - at) % w, gate._cols[:, None]]  # (refreshes, K, w)
    med = _median_last(vals)
    absdev = np.abs(vals - med[:, :, None])
    mad = _median_last(absdev)
    if absdev.shape[1] == 1:  # numpy sums a single column pairwise, as it sums a row here
        total = np.add.reduce(absdev, axis=2)
    else:  # and several columns row after row
        total = np.cumsum(absdev, axis=2)[:, :, -1]
    meanad = total / w
    eps = _EPS * (1.0 + np.abs(med))
    flat = meanad <= eps
    floor = gate._step
    mad = np.where(mad > 0, mad, 1.2533 * 0.6745 * meanad)
    mad = np.maximum(mad, np.maximum(0.6745 * floor, eps))
    kmad = 0.6745 / (mad * gate._rth)
    tol = np.maximum(gate._abs_tol, gate._rel_tol * np.abs(med))
    fl = np.maximum(floor, eps)
    return med, kmad, tol, fl * fl, flat


def _median_last(a: np.ndarray) -> np.ndarray:
    """Median along the last axis (as ``np.median``: the mean of the middle two if even)."""
    h = a.shape[-1] // 2
    if a.shape[-1] % 2:
        return np.partition(a, h, axis=-1)[..., h]
    part = np.partition(a, (h - 1, h), axis=-1)
    return (part[..., h - 1] + part[..., h]) * 0.5


def _ewma_rows(lx: np.ndarray, om: float, e: np.ndarray) -> np.ndarray:
    """Rows of the EWMA recursion ``e = L x + (1 - L) e`` from ``e`` (``lx``: ``L x``)."""
    n, c = lx.shape
    if c <= _EWMA_PY_MAX:
        cols = []
        for col, prev in zip(lx.T.tolist(), e.tolist(), strict=True):
            out = []
            for v in col:
                prev = v + om * prev
                out.append(prev)
            cols.append(out)
        return np.array(cols).T
    out = np.empty_like(lx)
    cur = e
    for j in range(n):
        cur = out[j] = lx[j] + om * cur
    return out
