"""Stage 1's EWMA view (``zscore.ewma_lambda``): a slow level change shows while it happens.

The EWMA of a channel has a much smaller spread than its raw points, so a ramp that stays
inside the level's spread and makes no unusual step still moves the EWMA far outside the
EWMA's own baseline. ``ewma_lambda: 0`` (the default) must leave stage 1 exactly as it was.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import yaml

from agent.config import ZScoreConfig, config_from_dict, load_config
from agent.detectors.gate import HOLD, Stage1Gate
from agent.detectors.zscore import StatGate
from agent.errors import ConfigError
from tests.agent.test_stage1_lanes import _fast, _same, rough_stream

ROOT = Path(__file__).resolve().parents[2]
START, LENGTH, RISE = 400, 20, 1.5  # the ramp: +1.5 over 20 points on noise of sd 0.3


def _ramp(seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(0.0, 0.3, size=(START + 60, 1))
    x[START : START + LENGTH, 0] += RISE * np.arange(1, LENGTH + 1) / LENGTH
    x[START + LENGTH :, 0] += RISE  # the drift lasts: no step back to give it away
    return x


def _run(gate: Stage1Gate, rows: np.ndarray) -> list[list[float]]:
    """Column ratios of the gate's StatGate at every point (warm-up: empty)."""
    out = []
    for row in rows.tolist():
        if gate.warming_up:
            gate.learn_only(row)
            out.append([])
        else:
            gate.score_learn(row)
            out.append(gate.gate.last_ratios.tolist())
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_slow_ramp_is_flagged_by_the_ewma_view_before_it_ends(seed: int) -> None:
    cfg = {"threshold": 4.5, "robust_threshold": 5.0, "min_points": 20}
    rows = _ramp(seed)
    on = _run(Stage1Gate(ZScoreConfig(**cfg, ewma_lambda=0.2), 1), rows)
    off = _run(Stage1Gate(ZScoreConfig(**cfg), 1), rows)
    assert all(len(r) == 3 for r in on[100:])  # columns: level, step, EWMA
    # Quiet on the noise before the ramp, with the view on and off.
    assert max(max(r) for r in on[100:START]) < 1.0
    assert max(max(r) for r in off[100:START]) < 1.0
    hits = [i for i in range(START, START + LENGTH) if on[i][2] >= 1.0]
    assert hits, "the EWMA view never flagged the ramp while it lasted"
    first = hits[0]
    assert first < START + LENGTH - 3
    # Neither the level nor the step view sees anything by then, with or without the EWMA.
    assert max(max(r[:2]) for r in on[START : first + 1]) < 1.0
    assert max(max(r) for r in off[START : first + 1]) < 1.0


def _reference(cfg: ZScoreConfig, rows: np.ndarray) -> list[tuple[float, list[float]]]:
    """Stage 1 as it was before the EWMA view: one StatGate over [values, steps from the
    last accepted value], that value following a flagged channel after HOLD points."""
    c = rows.shape[1]
    gate = StatGate(cfg, 2 * c)
    prev = np.full(c, np.nan)
    held = np.zeros(c, dtype=np.int64)
    out = []
    for x in rows:
        ext = np.r_[x, x - prev]
        if not gate.ready[:c].any():
            gate.learn_one(ext, np.zeros(2 * c, dtype=bool))
            flags = np.zeros(c, dtype=bool)
            out.append((0.0, []))
        else:
            s = gate.score_one(ext)
            r = gate.last_ratios
            ratios = np.maximum(r[:c], r[c:])
            flags = ratios >= 1.0
            gate.learn_one(ext)
            out.append((s, ratios.tolist()))
        finite = np.isfinite(x)
        take = finite & (~flags | (held >= HOLD))
        prev = np.where(take, x, prev)
        held = np.where(take, 0, held + (finite & flags))
    return out


@pytest.mark.parametrize("n_channels", [1, 3])
def test_lambda_zero_is_stage1_as_before_exactly(n_channels: int) -> None:
    cfg = ZScoreConfig(ewma_lambda=0.0, stuck_after=0)
    gate = Stage1Gate(cfg, n_channels)
    assert gate.gate.n_channels == 2 * n_channels  # no EWMA columns at all
    rows = rough_stream(n_channels, n=900, seed=5)
    got = []
    for row in rows:
        if gate.warming_up:
            gate.learn_only(row)
            got.append((0.0, []))
        else:
            s = gate.score_one(row)
            got.append((s, gate.last_ratios.tolist()))
            gate.learn_one(row)
    want = _reference(cfg, rows)
    assert got == want  # exactly: same floats, not merely close
    assert sum(s >= 0.5 for s, _ in got) > 10


@pytest.mark.parametrize(("key", "value"), [("ewma_lambda", 1.0), ("ewma_lambda", -0.1),
                                            ("ewma_lambda", "x"), ("ewma_threshold", -1.0)])
def test_config_errors_name_the_key_and_file(key: str, value: object) -> None:
    data = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())
    data["detectors"]["zscore"][key] = value
    with pytest.raises(ConfigError) as err:
        config_from_dict(data, "site.yaml")
    assert key in str(err.value) and "site.yaml" in str(err.value)


def test_shipped_configs_load_with_the_ewma_keys() -> None:
    demo = load_config(ROOT / "agent" / "resources" / "demo.yaml").detectors.zscore
    assert 0.0 < demo.ewma_lambda < 1.0
    assert load_config(ROOT / "configs" / "default.yaml").detectors.zscore.ewma_lambda == 0.0


def test_checkpoint_round_trip_continues_identically() -> None:
    cfg = ZScoreConfig(ewma_lambda=0.2, ewma_threshold=4.0)
    rows = rough_stream(3, seed=9).tolist()
    a = Stage1Gate(cfg, 3)
    for row in rows[:700]:
        if a.warming_up:
            a.learn_only(row)
        else:
            a.score_learn(row)
    state = pickle.loads(pickle.dumps(a.state_dict()))  # what checkpoints store
    assert np.isfinite(state["ewma"]).all()
    b = Stage1Gate(cfg, 3)
    b.load_state(state)
    flagged = 0
    for row in rows[700:]:
        ra = _fast(a, row)
        assert _same(ra, _fast(b, row))
        flagged += any(ra[2])
    assert flagged > 0


def test_a_checkpoint_from_before_the_ewma_view_loads_and_the_ewma_starts_fresh() -> None:
    cfg = ZScoreConfig(ewma_lambda=0.2)
    rows = rough_stream(2, seed=4).tolist()
    a = Stage1Gate(cfg, 2)
    for row in rows[:600]:
        if a.warming_up:
            a.learn_only(row)
        else:
            a.score_learn(row)
    old = a.state_dict()
    del old["ewma"]  # the state dict of an agent without the EWMA view
    b = Stage1Gate(cfg, 2)
    b.load_state(old)
    assert np.isnan(b.state_dict()["ewma"]).all()
    for row in rows[600:700]:
        b.score_learn(row)
    assert np.isfinite(b.state_dict()["ewma"]).all()  # started again from the next values
    wrong = a.state_dict()
    wrong["ewma"] = np.zeros(5)
    with pytest.raises(ValueError, match="EWMA"):
        Stage1Gate(cfg, 2).load_state(wrong)


def test_engine_checkpoints_follow_the_ewma_setting(tmp_path: Path) -> None:
    from agent.engine import Engine
    from agent.synthetic import multisensor

    def engine(lam: float) -> Engine:
        data = yaml.safe_load((ROOT / "agent" / "resources" / "demo.yaml").read_text())
        data["detectors"]["zscore"]["ewma_lambda"] = lam
        data["detectors"]["onnx"]["enabled"] = False
        return Engine(config_from_dict(data, "demo.yaml"))

    on = engine(0.4)
    for p in multisensor(n=500, seed=3).points(on.config.streams[0].id):
        on.process(p)
    on.save(tmp_path / "on.ckpt")
    assert engine(0.4).restore(tmp_path / "on.ckpt")
    assert not engine(0.0).restore(tmp_path / "on.ckpt")  # other columns: starts fresh
    engine(0.0).save(tmp_path / "off.ckpt")
    assert engine(0.0).restore(tmp_path / "off.ckpt")
    assert not engine(0.2).restore(tmp_path / "off.ckpt")
