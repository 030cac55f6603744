"""Stage 1 over a batch of points (issue #9): ``batch_gate.score_learn_many`` must give
bit for bit what sequential ``Stage1Gate.score_learn`` calls give -- scores, per-channel
ratios, flags and the whole state -- and ``Engine.process_batch`` (which runs it) the
same decisions and alerts as ``Engine.process`` point by point. Replay goes through it.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from agent.config import AlertConfig, ChannelConfig, StreamConfig, ZScoreConfig
from agent.csvio import Table
from agent.detectors.batch_gate import score_learn_many
from agent.detectors.gate import Stage1Gate
from agent.engine import Engine
from agent.replay import replay_table
from agent.sinks import MemorySink
from agent.synthetic import iot
from agent.types import Point
from tests.agent.helpers import agent_config


def rough(n_channels: int, n: int, seed: int) -> np.ndarray:
    """Slow sines with noise, spikes, a level shift that re-baselines, a stuck run, NaNs,
    a quantised channel and a constant stretch."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None]
    x = rng.normal(size=(n, n_channels)) + 10 + 5 * np.sin(t / 40 + np.arange(n_channels))
    for k in rng.integers(0, n, n // 60):
        x[k, rng.integers(n_channels)] += rng.choice([-8.0, 8.0])
    if n_channels > 1:
        x[:, 1] = np.round(x[:, 1] * 2) / 2
    x[n // 2 :, -1] += 25.0
    x[n // 3 : n // 3 + 20, 0] = x[n // 3 - 1, 0]
    for k in rng.integers(0, n, n // 100):
        x[k, rng.integers(n_channels)] = np.nan
    if n_channels > 2:
        x[n - 300 : n - 100, 2] = 3.0
    return x


def _same_state(a: Any, b: Any, path: str = "") -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _same_state(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, tuple | list):
        assert len(a) == len(b), path
        for j, (u, v) in enumerate(zip(a, b, strict=True)):
            _same_state(u, v, f"{path}[{j}]")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True), path
    else:
        assert a == b or (a != a and b != b), (path, a, b)


CONFIGS = {
    "default": {},
    "ewma": {"ewma_lambda": 0.2},
    "no_delta": {"delta": False, "stuck_after": 0},
    # Refresh every 3 points, window 20: chunks cross many refreshes and wrap the rings.
    "small": {"window": 20, "min_points": 5, "robust_refresh": 3, "rebaseline_after": 5},
    "tolerances_ewma": {"rel_tolerance": 0.01, "abs_tolerance": 0.1, "ewma_lambda": 0.3,
                        "ewma_threshold": 2.5},
    "ewma_no_delta_odd_window": {"ewma_lambda": 0.1, "delta": False, "window": 31,
                                 "robust_refresh": 7},
}


@pytest.mark.parametrize("n_channels", [1, 3, 8, 32])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_batches_match_point_by_point_bit_for_bit(name: str, n_channels: int) -> None:
    cfg = ZScoreConfig(**CONFIGS[name])
    seed = sorted(CONFIGS).index(name) * 10 + n_channels
    x = rough(n_channels, 1200, seed)
    batched, single = Stage1Gate(cfg, n_channels), Stage1Gate(cfg, n_channels)
    rng = np.random.default_rng(seed)
    i = plain = 0
    while i < len(x):
        size = int(rng.integers(1, 251))
        block = x[i : i + size]
        if rng.random() < 0.2:  # per-point calls interleave with batches on one gate
            for row in block:
                batched.score_learn(row)
                single.score_learn(row)
        else:
            res = score_learn_many(batched, block)
            assert res.n == len(block)
            plain += res.plain
            for j, row in enumerate(block):
                s = single.score_learn(row)
                assert s == res.scores[j], (i + j, s, res.scores[j])
                assert np.array_equal(single.last_ratios, res.ratios[j]), i + j
                assert np.array_equal(single.flagged, res.flagged[j]), i + j
        _same_state(batched.state_dict(), single.state_dict())
        i += len(block)
    if n_channels == 1:  # (the vectorised pass did run: not only the per-point fallback)
        assert plain > 0


@pytest.mark.parametrize("kw", [{}, {"delta": False}, {"ewma_lambda": 0.25},
                                {"ewma_lambda": 0.25, "delta": False, "rel_tolerance": 0.02}])
@pytest.mark.parametrize("n_channels", [1, 3])
def test_long_plain_runs_cross_refreshes_and_wrap_the_rings(kw: dict[str, Any],
                                                             n_channels: int) -> None:
    """Rare flags (high thresholds): passes run over many refreshes (every 4 points) and
    longer than the window (25), so evictions come from the pass's own rows."""
    cfg = ZScoreConfig(window=25, min_points=5, robust_refresh=4, threshold=8.0,
                       robust_threshold=9.0, **kw)
    rng = np.random.default_rng(n_channels)
    t = np.arange(3000)[:, None]
    x = 10 + np.sin(t / 50) + 0.3 * rng.normal(size=(3000, n_channels))
    if n_channels > 1:
        x[:, 1] = np.round(x[:, 1] * 4) / 4  # quantised
    a, b = Stage1Gate(cfg, n_channels), Stage1Gate(cfg, n_channels)
    plain = 0
    for i in range(0, 3000, 300):
        res = score_learn_many(a, x[i : i + 300])
        plain += res.plain
        want = [b.score_learn(row) for row in x[i : i + 300]]
        assert res.scores.tolist() == want
        _same_state(a.state_dict(), b.state_dict())
    assert plain > 2000


def test_a_flagged_row_inside_a_batch_is_handled_as_per_point() -> None:
    """A spike in the middle of a plain stretch: the batch stops there, the spike is
    flagged and kept out of the baseline, and the stretch after it is plain again."""
    cfg = ZScoreConfig(window=50, min_points=10, threshold=6.0, robust_threshold=7.0)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 2)) + 5.0
    x[300, 1] += 40.0
    a, b = Stage1Gate(cfg, 2), Stage1Gate(cfg, 2)
    score_learn_many(a, x[:200])
    for row in x[:200]:
        b.score_learn(row)
    res = score_learn_many(a, x[200:])
    assert res.flagged[100, 1] and not res.flagged[100, 0]
    assert res.scores[100] > 0.8
    assert res.plain == 199  # every row but the spike
    ref = [b.score_learn(row) for row in x[200:]]
    assert res.scores.tolist() == ref
    _same_state(a.state_dict(), b.state_dict())


def test_stop_at_warm_up() -> None:
    g = Stage1Gate(ZScoreConfig(window=20, min_points=10), 1)
    assert g.warming_up
    res = score_learn_many(g, np.ones((5, 1)), stop_at_warm_up=True)
    assert res.n == 0 and res.scores.shape == (0,)
    with pytest.raises(ValueError, match="shape"):
        score_learn_many(g, np.ones((5, 2)))


# --------------------------------------------------------------------------- engine


def _stream_points(seed: int, n: int = 900) -> list[Point]:
    """Two interleaved streams: mostly runs of one stream, anomalies, missing channels,
    bad values, duplicate timestamps and a backward clock jump."""
    rng = np.random.default_rng(seed)
    rows = {"a": iot(n=n, seed=seed, warmup=120).values,
            "b": iot(n=n, seed=seed + 1, warmup=120).values}
    names = ("temperature", "humidity", "pressure")
    pos = {"a": 0, "b": 0}
    ts = {"a": 1000.0, "b": 5000.0}
    out: list[Point] = []
    sid = "a"
    while pos["a"] < n and pos["b"] < n:
        if rng.random() < 0.05:
            sid = "b" if sid == "a" else "a"
        row = rows[sid][pos[sid]].tolist()
        pos[sid] += 1
        ts[sid] += 1.0
        vals: dict[str, object] = dict(zip(names, row, strict=True))
        u = rng.random()
        if u < 0.01:
            del vals["humidity"]  # missing channel (imputed for stages 2-3)
        elif u < 0.015:
            vals["pressure"] = "bad"
        elif u < 0.02:
            out.append(Point(ts[sid] - 1.0, sid, dict(vals)))  # duplicate timestamp
        elif u < 0.022:
            ts[sid] -= 7200.0  # clock jump backward (shifts the alert policy's clock)
        out.append(Point(ts[sid], sid, vals))  # type: ignore[arg-type]
    return out


def _engine(sink: MemorySink) -> Engine:
    base = agent_config(stream_id="a", zscore=ZScoreConfig(window=50, min_points=10),
                        alerts=AlertConfig(k=2, n=3, clear_after=5))
    streams = (base.streams[0], StreamConfig(
        "b", tuple(ChannelConfig(c.name) for c in base.streams[0].channels)))
    return Engine(replace(base, streams=streams), None, [sink])


@pytest.mark.parametrize("seed", [1, 2])
def test_engine_batches_decide_as_point_by_point(seed: int) -> None:
    pts = _stream_points(seed)
    ref_sink, sink = MemorySink(), MemorySink()
    ref, eng = _engine(ref_sink), _engine(sink)
    want = [ref.process(p) for p in pts]
    rng = np.random.default_rng(seed)
    got = []
    i = 0
    while i < len(pts):
        size = int(rng.integers(1, 200))
        got += eng.process_batch(pts[i : i + size])
        i += size
    assert got == want
    assert sink.alerts == ref_sink.alerts
    assert len(ref_sink.alerts) > 0 and sum(d.stage.value >= 2 for d in want) > 0
    s_ref, s_got = ref.stats(), eng.stats()
    for k in ("scored", "alerts", "rejects", "points_in"):
        if k in s_ref:
            assert s_got[k] == s_ref[k], k
    for sid in ("a", "b"):
        _same_state(eng.cascade(sid).stat.state_dict(), ref.cascade(sid).stat.state_dict())  # type: ignore[union-attr]
        assert eng.cascade(sid).counts == ref.cascade(sid).counts


def test_replay_scores_as_point_by_point() -> None:
    syn = iot(n=3000, seed=9, warmup=120)
    values = syn.values.copy()
    values[1500, 1] = np.nan
    ts = np.arange(3000, dtype=float) + 1.7e9
    ts[700] = math.nan
    cols = ("temperature", "humidity", "pressure")
    table = Table("mem.csv", [str(t) for t in ts], ts, list(cols), values, np.isfinite(values))
    cfg = agent_config()
    res = replay_table(cfg, table, warmup_rows=100)
    eng = Engine(cfg, None, [])
    want = np.zeros(3000)
    for i in range(3000):
        if i == 700:
            continue
        p = Point(float(ts[i]), cfg.streams[0].id, {
            c: float(v) for c, v in zip(cols, values[i].tolist(), strict=True) if v == v})
        if i < 100:
            eng.learn_only(p)
        else:
            want[i] = eng.process(p).score
    assert res.scores.tolist() == want.tolist()
    assert res.scores[100:].max() > 0.5


def test_stage1_gate_method_delegates() -> None:
    x = rough(3, 600, 5)
    a, b = Stage1Gate(ZScoreConfig(), 3), Stage1Gate(ZScoreConfig(), 3)
    got = a.score_learn_many(x)
    assert got.tolist() == [b.score_learn(row) for row in x]
    assert np.array_equal(a.last_ratios, b.last_ratios)
    assert np.array_equal(a.flagged, b.flagged)
