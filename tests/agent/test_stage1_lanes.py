"""Stage 1's fast lanes (issue #9) give the same verdicts as its general array path.

``Stage1Gate.score_learn`` (the cascade's call) takes a plain-Python lane for few
channels and a short numpy path for many; ``score_one`` + ``learn_one`` on arrays take
the general path for anything unusual. Fed the same rows, every lane must give the same
scores, ratios and flags, through spikes, missing values, stuck and quantised channels,
flat baselines and re-baselines, and across checkpoints taken mid-stream.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from agent.cascade import StreamCascade
from agent.config import (
    AgentConfig,
    ChannelConfig,
    DetectorsConfig,
    RiverConfig,
    StreamConfig,
    ZScoreConfig,
)
from agent.detectors.gate import Stage1Gate
from agent.detectors.zscore import PY_MAX_COLUMNS


def rough_stream(n_channels: int, n: int = 1500, seed: int = 0) -> np.ndarray:
    """Noise on a sine with spikes, a level shift, a stuck run, NaNs and a flat stretch."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, n_channels)) + 10.0
    x[:, 0] += 5 * np.sin(np.arange(n) / 20)
    if n_channels > 1:
        x[:, 1] = np.round(x[:, 1] * 2) / 2  # quantised
    for k in rng.integers(150, n, 25):
        x[k, rng.integers(n_channels)] += rng.choice([-9.0, 9.0])
    x[n // 2 :, -1] += 20.0  # lasting level shift -> re-baseline
    x[n // 2 + 150 : n // 2 + 170, 0] = x[n // 2 + 149, 0]  # stuck sensor
    for k in rng.integers(60, n, 30):
        x[k, rng.integers(n_channels)] = np.nan
    if n_channels > 2:
        x[n - 400 : n - 200, 2] = 3.0  # flat stretch
    return x


def _general(gate: Stage1Gate, row: list[float]) -> tuple[float, list[float], list[bool]]:
    s = gate.score_one(np.array(row))  # arrays: the general path of both classes
    out = (s, gate.last_ratios.tolist(), gate.flagged.tolist())
    gate.learn_one(np.array(row))
    return out


def _fast(gate: Stage1Gate, row: list[float]) -> tuple[float, list[float], list[bool]]:
    s = gate.score_learn(row)
    return s, gate.last_ratios.tolist(), gate.flagged.tolist()


def _same(a: tuple[float, list[float], list[bool]], b: tuple[float, list[float], list[bool]]
          ) -> bool:
    close = np.allclose([a[0], *a[1]], [b[0], *b[1]], rtol=1e-9, atol=1e-12)
    return bool(close and a[2] == b[2])


CONFIGS = {
    "default": {},
    "tolerances": {"rel_tolerance": 0.01, "abs_tolerance": 0.1},
    "no_delta": {"delta": False, "stuck_after": 0},
    "small_window": {"window": 20, "min_points": 5, "robust_refresh": 3, "rebaseline_after": 5},
    # The EWMA view: a third set of columns (5 channels x 3 views still fit the Python lane).
    "ewma": {"ewma_lambda": 0.2},
    "ewma_own_threshold": {"ewma_lambda": 0.3, "ewma_threshold": 2.5, "rel_tolerance": 0.01},
    "ewma_no_delta": {"ewma_lambda": 0.1, "delta": False, "stuck_after": 0},
}


@pytest.mark.parametrize("n_channels", [1, 3, 8, PY_MAX_COLUMNS + 4])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_fast_lanes_match_the_general_path(name: str, n_channels: int) -> None:
    cfg = ZScoreConfig(**CONFIGS[name])
    general, fast = Stage1Gate(cfg, n_channels), Stage1Gate(cfg, n_channels)
    flagged = 0
    for row in rough_stream(n_channels, seed=n_channels).tolist():
        if general.warming_up:
            assert fast.warming_up
            general.learn_only(row)
            fast.learn_only(row)
            continue
        a, b = _general(general, row), _fast(fast, row)
        assert _same(a, b), (row, a, b)
        flagged += any(a[2])
    assert flagged > 10  # the stream really exercised the guard
    assert general.rebaselines == fast.rebaselines >= 1
    np.testing.assert_allclose(general.center(), fast.center(), rtol=1e-9)


def test_the_python_lane_is_taken_for_few_channels_only() -> None:
    rows = np.random.default_rng(1).normal(size=(300, PY_MAX_COLUMNS)).tolist()
    few, many = Stage1Gate(ZScoreConfig(), 2), Stage1Gate(ZScoreConfig(), PY_MAX_COLUMNS)
    for r in rows:
        for g, row in ((few, r[:2]), (many, r)):
            if g.warming_up:
                g.learn_only(row)
            else:
                g.score_learn(row)
    assert few._py_live and few.gate._py_live  # 2 channels = 4 columns: Python floats
    assert not many.gate._py  # 16 channels = 32 columns: numpy


def test_the_ewma_columns_go_through_the_same_lanes() -> None:
    cfg = ZScoreConfig(ewma_lambda=0.2)
    rows = np.random.default_rng(2).normal(size=(300, 6)).tolist()
    five, six = Stage1Gate(cfg, 5), Stage1Gate(cfg, 6)
    for r in rows:
        for g, row in ((five, r[:5]), (six, r)):
            if g.warming_up:
                g.learn_only(row)
            else:
                g.score_learn(row)
    assert five.gate.n_channels == 15 and five._py_live and five.gate._py_live
    assert six.gate.n_channels == 18 and not six.gate._py


@pytest.mark.parametrize("ewma", [0.0, 0.2])
@pytest.mark.parametrize("n_channels", [1, 8])
def test_checkpoint_taken_inside_the_python_lane_continues_identically(
        n_channels: int, ewma: float) -> None:
    rows = rough_stream(n_channels, seed=7).tolist()
    a = Stage1Gate(ZScoreConfig(ewma_lambda=ewma), n_channels)
    for row in rows[:700]:
        if a.warming_up:
            a.learn_only(row)
        else:
            a.score_learn(row)
    copied = pickle.loads(pickle.dumps(a))  # the whole object, lane state included
    b = Stage1Gate(ZScoreConfig(ewma_lambda=ewma), n_channels)
    b.load_state(pickle.loads(pickle.dumps(a.state_dict())))  # what checkpoints store
    for row in rows[700:]:
        ra = _fast(a, row)
        assert _same(ra, _fast(b, row))
        assert _same(ra, _fast(copied, row))


def _cascade(n_channels: int) -> StreamCascade:
    stream = StreamConfig("s", tuple(ChannelConfig(f"c{i}") for i in range(n_channels)))
    cfg = AgentConfig(streams=(stream,), detectors=DetectorsConfig(river=RiverConfig(warmup=50)))
    return StreamCascade(stream, cfg)


def test_process_many_is_point_by_point_process() -> None:
    rows = rough_stream(3, n=600, seed=3).tolist()
    one, many = _cascade(3), _cascade(3)
    singles = [one.process(r, 0.5) for r in rows]
    batched = many.process_many(rows[:250], 0.5) + many.process_many(rows[250:], 0.5)
    assert batched == singles
    assert one.counts == many.counts
    assert any(o.channel_evidence for o in singles)  # hits carry stage-1 evidence
