"""Stage 1's plain-Python lane covers flagged points too (issue #9, speed).

While channels are flagged (guard, quarantine, re-baselines), partially filled after a
re-baseline or still warming up, the lane must give *bit for bit* what the numpy path
gives: scores, ratios, flags, re-baselines and the checkpointed state. The reference is
the same gate with its Python lane switched off (``gate._py = False``), fed the same rows.
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pytest

from agent.config import ZScoreConfig
from agent.detectors.gate import Stage1Gate
from agent.detectors.zscore import _pairwise_sum, _pairwise_sum0


def storm(n_channels: int, n: int, seed: int, nans: bool) -> np.ndarray:
    """Slow sines (the rolling z flags near their peaks), spike bursts, level shifts long
    enough to re-baseline, a quantised channel, stuck and flat stretches, optional NaNs."""
    rng = np.random.default_rng(seed)
    k = np.arange(n)
    x = np.empty((n, n_channels))
    for c in range(n_channels):
        x[:, c] = (rng.uniform(0.5, 3.0) * np.sin(k / rng.uniform(30.0, 80.0) + c)
                   + rng.normal(0.0, 0.05, n) + 10.0 * c)
    if n_channels > 1:
        x[:, 1] = np.round(x[:, 1] * 4.0) / 4.0  # quantised
    for start in range(200, n, 250):  # bursts of 5 spikes, as in the MQTT benchmark
        x[start : start + 5, 0] += 25.0
    for t in rng.integers(100, n, 20):
        x[t, rng.integers(n_channels)] += rng.choice([-12.0, 12.0])
    for _ in range(4):  # lasting shifts and their return
        c, t0, length = rng.integers(n_channels), rng.integers(150, n - 50), rng.integers(15, 140)
        x[t0 : t0 + length, c] += rng.choice([-6.0, 8.0])
    c, t0 = rng.integers(n_channels), rng.integers(300, n - 60)
    x[t0 : t0 + 25, c] = x[t0, c]  # stuck sensor
    if n > 900:
        x[700:880, -1] = 4.25  # flat for longer than a window
    if nans:
        for t in rng.integers(50, n, 12):
            x[t, rng.integers(n_channels)] = np.nan
    return x


CONFIGS: dict[str, dict[str, Any]] = {
    "default": {},
    "no_delta": {"delta": False, "stuck_after": 0},
    "ewma": {"ewma_lambda": 0.2},
    "ewma_no_delta": {"ewma_lambda": 0.1, "delta": False},
    "ewma_threshold_tolerances": {"ewma_lambda": 0.3, "ewma_threshold": 2.5,
                                  "rel_tolerance": 0.01, "abs_tolerance": 0.05},
    "small": {"window": 20, "min_points": 5, "robust_refresh": 3, "rebaseline_after": 5},
    # re-baselined columns start below min_points: some columns score 0 for a while
    "rebaseline_below_ready": {"window": 60, "min_points": 12, "rebaseline_after": 4},
    "long_window": {"window": 150, "min_points": 40, "rebaseline_after": 45},  # > 128 values
    "no_guard": {"guard": False, "window": 40},
    "ready_when_full": {"window": 30, "min_points": 30, "rebaseline_after": 10},
}


def _same(a: Any, b: Any) -> bool:
    """Exact equality of nested states (arrays: same dtype and values, NaN equal to NaN)."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, tuple | list):
        return len(a) == len(b) and all(_same(u, v) for u, v in zip(a, b, strict=True))
    if isinstance(a, np.ndarray):
        return (isinstance(b, np.ndarray) and a.dtype == b.dtype
                and np.array_equal(a, b, equal_nan=True))
    return bool(a == b or (a != a and b != b))


def _pair(cfg: ZScoreConfig, n_channels: int) -> tuple[Stage1Gate, Stage1Gate]:
    lane, numpy_only = Stage1Gate(cfg, n_channels), Stage1Gate(cfg, n_channels)
    assert lane.gate._py, "the configuration must fit the Python lane"
    numpy_only.gate._py = False  # the reference: every point on the numpy paths
    return lane, numpy_only


def _step(g: Stage1Gate, row: list[float], warm: bool) -> tuple[float, list[float], list[bool]]:
    if warm:
        g.learn_only(row)
        return 0.0, [], []
    s = g.score_learn(row)
    return s, g.last_ratios.tolist(), g.flagged.tolist()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_the_lane_is_the_numpy_path_bit_for_bit(name: str, seed: int) -> None:
    cfg = ZScoreConfig(**CONFIGS[name])
    n_channels = (1, 3, 5)[seed]  # 5 channels x 3 views = 15 columns: still the lane
    lane, ref = _pair(cfg, n_channels)
    rows = storm(n_channels, 1500, seed, nans=seed == 1).tolist()
    warm_rows = 0 if seed == 2 else cfg.min_points  # seed 2 scores from the first point
    flagged = partial = 0
    for t, row in enumerate(rows):
        a, b = _step(lane, row, t < warm_rows), _step(ref, row, t < warm_rows)
        assert a == b, (t, row, a, b)
        assert lane.rebaselines == ref.rebaselines, t
        if any(a[2]) and all(v == v for v in row):  # flagged, finite: stayed in the lane
            assert lane.gate._py_live and lane._py_live, t
            flagged += 1
            partial += not lane.gate._full_all
        if t % 97 == 0 or t == len(rows) - 1:
            assert _same(lane.state_dict(), ref.state_dict()), t
    assert not ref.gate._py_live and not ref._py_live
    assert flagged > 100  # the flagged path was used
    if cfg.guard:  # and re-baselines, with columns partly filled afterwards
        assert lane.rebaselines >= 3 and partial > 10


def test_checkpoints_taken_during_a_flagged_stretch_continue_identically() -> None:
    cfg = ZScoreConfig(ewma_lambda=0.2, window=50, rebaseline_after=20)
    rows = storm(4, 1500, 5, nans=False).tolist()
    lane, ref = _pair(cfg, 4)
    restored: list[Stage1Gate] = []
    for t, row in enumerate(rows):
        expect = _step(ref, row, t < cfg.min_points)
        for g in (lane, *restored):
            assert _step(g, row, t < cfg.min_points) == expect, t
        streak = lane.gate._l_streak if lane.gate._py_live else lane.gate._streak.tolist()
        if t > 300 and t % 7 == 0 and len(restored) < 6 and any(streak) \
                and not lane.gate._full_all:
            # mid-streak, a column re-filling: a checkpoint and a pickled copy go on from here
            again = Stage1Gate(cfg, 4)
            again.load_state(pickle.loads(pickle.dumps(lane.state_dict())))
            restored += [again, pickle.loads(pickle.dumps(lane))]
    assert len(restored) == 6
    for g in restored:
        assert _same(g.state_dict(), ref.state_dict())


@pytest.mark.parametrize("n", [*range(1, 40), 64, 127, 128, 129, 136, 250, 400, 1000, 4099])
def test_pairwise_sums_are_numpy_sums(n: int) -> None:
    rng = np.random.default_rng(n)
    a = rng.normal(size=(n, 5)) * 10.0 ** rng.uniform(-6, 6, size=(n, 5))
    expect = [a[:, j].sum() for j in range(5)]
    assert [_pairwise_sum(a[:, j].tolist()) for j in range(5)] == expect
    for cols in ([0], [1, 3], [0, 2, 4]):  # (a copy: the lane passes fancy-indexed columns)
        assert _pairwise_sum0(a[:, cols]).tolist() == [expect[j] for j in cols]
    wide = np.hstack([a] * 7)  # as many columns as the lane's widest refresh (2 x 16)
    assert _pairwise_sum0(wide).tolist() == expect * 7
