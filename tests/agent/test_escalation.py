"""Stage 2's gate scaled for the number of channels (agent/escalation.py), alone and in
the real cascade on Gaussian streams of 1, 8 and 32 channels."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from agent.cascade import StreamCascade
from agent.config import EscalationConfig, RiverConfig, ZScoreConfig, config_from_dict
from agent.escalation import FLAG_SCORE, river_gate
from tests.agent.helpers import agent_config


def test_one_channel_and_the_ends_keep_river_at() -> None:
    for at in (0.0, 0.2, 0.4, 0.5, 0.7, 1.0):
        assert river_gate(at, 1, 3.0) == at
    for c in (2, 8, 1000):
        assert river_gate(0.0, c, 3.0) == 0.0  # everything escalates, any channel count
        assert river_gate(0.5, c, 3.0) == 0.5
        assert river_gate(0.9, c, 3.0) == 0.9  # above the flag level: untouched


def test_gate_rises_with_the_channels_up_to_the_flag_score() -> None:
    gates = [river_gate(0.4, c, 3.0) for c in (1, 2, 4, 8, 16, 32, 1000)]
    assert gates == sorted(gates) and gates[1] > gates[0]
    assert all(0.4 <= g <= FLAG_SCORE for g in gates)
    assert gates[-1] == FLAG_SCORE


@pytest.mark.parametrize(("river_at", "channels", "z_threshold"),
                         [(0.4, 8, 3.0), (0.3, 8, 3.0), (0.4, 4, 4.5), (0.3, 3, 4.0)])
def test_many_gaussian_channels_escalate_as_often_as_one(
        river_at: float, channels: int, z_threshold: float) -> None:
    """The largest |z| / threshold of C independent normal channels reaches the scaled
    gate as often as one channel reaches river_at (Monte Carlo, 400,000 points)."""
    rng = np.random.default_rng(7)
    z = np.abs(rng.normal(size=(400_000, channels)))
    ratio = z / z_threshold
    one = np.mean(ratio[:, 0] / (1 + ratio[:, 0]) >= river_at)
    top = ratio.max(axis=1)
    scaled = np.mean(top / (1 + top) >= river_gate(river_at, channels, z_threshold))
    unscaled = np.mean(top / (1 + top) >= river_at)
    assert scaled == pytest.approx(one, rel=0.05)
    assert unscaled > 2 * one  # what the scaling is for


def _share_to_stage2(channels: int, scale: bool, n: int = 2500) -> float:
    rng = np.random.default_rng(channels)
    names = [f"c{i}" for i in range(channels)]
    cfg = agent_config(names, zscore=ZScoreConfig(), river=RiverConfig(warmup=50),
                       escalation=EscalationConfig(scale_river_at=scale))
    cas = StreamCascade(cfg.streams[0], cfg)
    for row in rng.normal(size=(n, channels)).tolist():
        cas.process(row, 0.5)
    scored = cas.counts["scored"]
    assert scored[0] > n // 2
    return scored[1] / scored[0]


def test_cascade_sends_a_share_to_stage2_that_does_not_grow_with_channels() -> None:
    one = _share_to_stage2(1, True)
    assert _share_to_stage2(1, False) == one  # nothing to scale with one channel
    eight, eight_unscaled = _share_to_stage2(8, True), _share_to_stage2(8, False)
    assert 0.02 < one < 0.2
    assert eight < 2 * one < eight_unscaled
    # 32 channels: the gate is the flag score; stage 2 still sees every flagged point
    assert _share_to_stage2(32, True) < 0.5 < _share_to_stage2(32, False)


def test_config_key_and_the_cascade_gate() -> None:
    cfg = config_from_dict({
        "streams": [{"id": "s", "channels": ["a", "b", "c", "d"]}],
        "escalation": {"river_at": 0.4, "scale_river_at": False},
    })
    assert cfg.escalation.scale_river_at is False
    assert StreamCascade(cfg.streams[0], cfg).river_at == 0.4
    on = agent_config(["a", "b", "c", "d"], zscore=ZScoreConfig(threshold=3.0))
    assert on.escalation.scale_river_at  # the default
    assert StreamCascade(on.streams[0], on).river_at == river_gate(0.4, 4, 3.0) > 0.4


def test_gate_follows_a_swapped_escalation_config() -> None:
    """benchmarks/skab.py's hold prototype swaps ``config.escalation`` between points."""
    cfg = agent_config(["a", "b", "c", "d"], zscore=ZScoreConfig(threshold=3.0))
    cas = StreamCascade(cfg.streams[0], cfg)
    assert cas.river_at > 0.4
    cas.config = dataclasses.replace(cfg, escalation=EscalationConfig(river_at=0.0))
    assert cas.river_at == 0.0
    cas.config = cfg
    assert cas.river_at == river_gate(0.4, 4, 3.0)
