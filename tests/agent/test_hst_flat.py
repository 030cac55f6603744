"""River's HalfSpaceTrees mirrored in arrays (agent/detectors/hst_flat.py) against River's
own ``score_one`` / ``learn_one`` on real models, bit for bit; and stage 2 / the cascade
with the mirror against the same with River's calls only (``RiverStage(flat=False)``)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from agent.cascade import StreamCascade
from agent.config import EscalationConfig, RiverConfig, RiverModelConfig
from agent.detectors import hst_walk
from agent.detectors.hst_flat import FlatHST, supports
from agent.detectors.river_models import RiverStage
from agent.river_import import anomaly_classes
from agent.synthetic import multisensor
from tests.agent.helpers import MULTI_CHANNELS, agent_config, river_config

FEATURES = ("a", "b", "c")


def _hst(**kw: int) -> object:
    kw = {"n_trees": 5, "height": 6, "window_size": 60, "seed": 3, **kw}
    return hst_walk.prebuilt(anomaly_classes().HalfSpaceTrees(**kw), FEATURES)


def _points(n: int, seed: int = 0) -> np.ndarray:
    """Mostly a tight cluster, some far points (short score walks), some out of [0, 1]."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.5, 0.05, (n, len(FEATURES)))
    far = rng.random(n) < 0.1
    x[far] = rng.uniform(-0.2, 1.2, (int(far.sum()), len(FEATURES)))
    return x


def _d(row: np.ndarray) -> dict[str, float]:
    return dict(zip(FEATURES, row.tolist(), strict=True))


def _masses(model: object) -> list[tuple[int, int]]:
    return [(n.l_mass, n.r_mass) for nodes in model._tree_nodes for n in nodes]  # type: ignore[attr-defined]


def test_supports_built_trees_over_known_features_only() -> None:
    assert supports(_hst(), FEATURES)
    assert not supports(_hst(), ("a", "b"))  # splits on a feature it was not told of
    assert not supports(anomaly_classes().HalfSpaceTrees(seed=1), FEATURES)  # not built
    assert not supports(anomaly_classes().LODA(seed=1), FEATURES)
    with pytest.raises(ValueError, match="not a built"):
        FlatHST(anomaly_classes().LODA(seed=1), FEATURES)


@pytest.mark.parametrize("window", [60, 37])  # 37: 0.1 * window is not an integer
@pytest.mark.parametrize("batch", [1, 7, 60])
def test_scores_and_masses_equal_river_bit_for_bit(window: int, batch: int) -> None:
    """Across the first window (score 0), several pivots and scores that stop early: one
    point, a few or a whole window learnt at a time."""
    river, flat = _hst(window_size=window), FlatHST(_hst(window_size=window), FEATURES)
    pts = _points(500)
    want, one, many = [], [], []
    i = 0
    while i < len(pts):
        b = min(batch, flat.window - flat.counter, len(pts) - i)
        rows = pts[i : i + b]
        many += flat.score_many(rows).tolist()
        for row in rows:
            one.append(flat.score(row.tolist()))
            want.append(river.score_one(_d(row)))  # type: ignore[attr-defined]
            river.learn_one(_d(row))  # type: ignore[attr-defined]
        flat.learn_many(rows)
        i += b
    assert one == want and many == want
    assert want[0] == 0 and len(set(want[100:])) > 20  # both phases were exercised
    assert _masses(flat.to_river()) == _masses(river)
    assert (flat.model.counter, flat.model._first_window) == (river.counter, river._first_window)  # type: ignore[attr-defined]


def test_rows_past_the_window_are_refused() -> None:
    flat = FlatHST(_hst(), FEATURES)
    flat.learn_many(_points(50))
    with pytest.raises(ValueError, match="past the window"):
        flat.learn_many(_points(11))
    flat.learn_many(_points(10))  # exactly to the end: the pivot
    assert (flat.counter, flat.first_window) == (0, False)


def test_a_mirror_of_a_model_mid_window_carries_on_as_river() -> None:
    river = _hst()
    for row in _points(90, seed=2):  # one and a half windows
        river.learn_one(_d(row))  # type: ignore[attr-defined]
    ref = pickle.loads(pickle.dumps(river))
    flat = FlatHST(river, FEATURES)
    for row in _points(100, seed=3):
        assert flat.score(row.tolist()) == ref.score_one(_d(row))  # type: ignore[attr-defined]
        ref.learn_one(_d(row))  # type: ignore[attr-defined]
        flat.learn_many(row[None, :])
    assert _masses(flat.to_river()) == _masses(ref)


def _stream(n: int = 1500, seed: int = 4) -> np.ndarray:
    return multisensor(n=n, seed=seed, warmup=300).values


def test_stage_with_the_mirror_equals_river_calls() -> None:
    """Scores, calibrators and models equal those of River's own calls, with a
    checkpoint (state_dict / pickle) taken between points."""
    cfg = river_config(warmup=100)
    ref, ours = RiverStage(cfg, MULTI_CHANNELS, flat=False), RiverStage(cfg, MULTI_CHANNELS)
    assert ref._flat == [None] and ours._flat[0] is not None
    rows = _stream()
    rows[700:720] *= 3.0  # the learnt range moves while points wait in the buffer
    for i, row in enumerate(rows.tolist()):
        if i % 3:
            assert ref.score_one(row) == ours.score_one(row), i
        if i % 97 == 5:
            ours = pickle.loads(pickle.dumps(ours))
        if i % 211 == 7:
            ours.state_dict()
        scored = i % 3 != 0 and i % 5 != 0  # False: learnt without (or after another) score
        ref.learn_one(row, scored=scored)
        ours.learn_one(row, scored=scored)
    assert ours._flat[0] is not None
    a, b = ref.state_dict(), ours.state_dict()
    assert _masses(b["models"][0]) == _masses(a["models"][0])
    assert pickle.dumps(a["calib"]) == pickle.dumps(b["calib"])
    assert (a["lo"], a["hi"], a["learned"]) == (b["lo"], b["hi"], b["learned"])


def test_mixed_models_and_a_restored_stage_equal_river_calls() -> None:
    cfg = RiverConfig(models=(
        RiverModelConfig(kind="half_space_trees", n_trees=5, height=5, window_size=50),
        RiverModelConfig(kind="loda", n_bins=10, n_random_cuts=10),
        RiverModelConfig(kind="half_space_trees", n_trees=4, height=6, window_size=80, seed=9),
    ), warmup=60, calibration_window=80)
    ref, ours = RiverStage(cfg, MULTI_CHANNELS, flat=False), RiverStage(cfg, MULTI_CHANNELS)
    assert [f is not None for f in ours._flat] == [True, False, True]
    rows = _stream(900, seed=6).tolist()
    for i, row in enumerate(rows):
        assert ref.score_one(row) == ours.score_one(row), i
        assert ref.last_ratios == ours.last_ratios
        if i == 450:  # restored from a checkpoint into a fresh stage
            fresh = RiverStage(cfg, MULTI_CHANNELS)
            fresh.load_state(pickle.loads(pickle.dumps(ours.state_dict())))
            ours = fresh
        ref.learn_one(row, scored=True)
        ours.learn_one(row, scored=True)
    for m_ref, m_ours in zip(ref.state_dict()["models"], ours.state_dict()["models"], strict=True):
        if hasattr(m_ref, "trees"):
            assert _masses(m_ours) == _masses(m_ref)


@pytest.mark.parametrize("river_at", [0.0, 0.4])
def test_cascade_outcomes_equal_those_of_river_own_calls(river_at: float) -> None:
    """The cascade (guard on: points it does not learn, a level shift it relearns) gives
    the same outcomes with the mirror as with stage 2 on River's calls only."""
    river = RiverConfig(models=(RiverModelConfig(kind="half_space_trees", n_trees=10,
                                                 height=6, window_size=100),),
                        warmup=100, calibration_window=100, relearn_after=40)
    cfg = agent_config(MULTI_CHANNELS, river=river,
                       escalation=EscalationConfig(river_at=river_at))
    ref = StreamCascade(cfg.streams[0], cfg)
    ours = StreamCascade(cfg.streams[0], cfg)
    assert ref.river is not None and ours.river is not None
    ref.river = RiverStage(river, ref.channels, flat=False)
    rows = _stream(2000, seed=5)
    rows[1200:] += 6.0 * rows[300:1100].std(axis=0)  # a lasting shift: held, then relearnt
    a = [ref.process(r, 0.5) for r in rows.tolist()]
    b = [ours.process(r, 0.5) for r in rows.tolist()]
    assert [(o.score, o.stage_scores) for o in a] == [(o.score, o.stage_scores) for o in b]
    assert ours.river._flat[0] is not None
    assert sum(o.stage_scores[1] is not None for o in b) > 300
    assert sum(o.score >= 0.5 for o in b) > 10  # some points were held out of stage 2
    assert _masses(ours.river.state_dict()["models"][0]) == _masses(
        ref.river.state_dict()["models"][0])


def test_the_buffer_holds_at_most_one_window() -> None:
    cfg = river_config(warmup=50)
    stage = RiverStage(cfg, MULTI_CHANNELS)
    window = cfg.models[0].window_size
    most = 0
    for row in _stream(3 * window + 50, seed=8).tolist():
        stage.score_one(row)
        stage.learn_one(row, scored=True)
        most = max(most, len(stage._buf))
    assert 0 < most < window
