"""Stage 2's one-walk score + learn of River's HalfSpaceTrees (agent/detectors/hst_walk.py)
against River's own ``score_one`` / ``learn_one`` on real models, and RiverStage's use of it
(``score_one(learn_next=True)``) against the plain path, inside the real cascade."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from agent.cascade import StreamCascade
from agent.config import EscalationConfig, RiverConfig, RiverModelConfig
from agent.detectors import hst_walk
from agent.detectors.river_models import RiverStage
from agent.river_import import anomaly_classes
from agent.synthetic import multisensor
from tests.agent.helpers import MULTI_CHANNELS, agent_config, river_config

FEATURES = ("a", "b", "c")


def _hst(**kw: int) -> object:
    kw = {"n_trees": 5, "height": 6, "window_size": 60, "seed": 3, **kw}
    return anomaly_classes().HalfSpaceTrees(**kw)


def _points(n: int, seed: int = 0) -> list[dict[str, float]]:
    """Mostly a tight cluster, some far points (short score walks), some out of [0, 1]."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.5, 0.05, (n, len(FEATURES)))
    far = rng.random(n) < 0.1
    x[far] = rng.uniform(-0.2, 1.2, (int(far.sum()), len(FEATURES)))
    return [dict(zip(FEATURES, row.tolist(), strict=True)) for row in x]


def _masses(model: object) -> list[tuple[int, int]]:
    return [(n.l_mass, n.r_mass) for nodes in model._tree_nodes for n in nodes]  # type: ignore[attr-defined]


def test_supports_only_built_half_space_trees() -> None:
    hst = _hst()
    assert not hst_walk.supports(hst)  # no trees before the first learn_one
    hst.learn_one(_points(1)[0])  # type: ignore[attr-defined]
    assert hst_walk.supports(hst)
    assert not hst_walk.supports(anomaly_classes().LODA(seed=1))


def test_one_walk_equals_river_score_then_learn_bit_for_bit() -> None:
    """Across the first window (score 0), several pivots and scores that stop early."""
    ours, river = _hst(), _hst()
    pts = _points(400)
    ours.learn_one(pts[0])  # type: ignore[attr-defined]  (builds the trees: River's job)
    river.learn_one(pts[0])  # type: ignore[attr-defined]
    got, want = [], []
    for x in pts[1:]:
        got.append(hst_walk.score_learn(ours, x))
        want.append(river.score_one(x))  # type: ignore[attr-defined]
        river.learn_one(x)  # type: ignore[attr-defined]
    assert got == want
    assert want[0] == 0 and len(set(want[100:])) > 20  # both phases were exercised
    assert _masses(ours) == _masses(river)
    assert (ours.counter, ours._first_window) == (river.counter, river._first_window)  # type: ignore[attr-defined]


def test_a_started_learning_taken_back_leaves_the_model_as_it_was() -> None:
    hst = _hst()
    pts = _points(200, seed=1)
    for x in pts[:150]:
        hst.learn_one(x)  # type: ignore[attr-defined]
    before = _masses(hst)
    for x in pts[150:]:
        s = hst_walk.score_walk(hst, x, True)
        assert s == hst.score_one(x)  # type: ignore[attr-defined]  (unchanged by the walk)
        assert _masses(hst) != before  # it did start learning
        hst_walk.unwalk(hst, x)
        assert _masses(hst) == before


def _stream(n: int = 1500, seed: int = 4) -> np.ndarray:
    return multisensor(n=n, seed=seed, warmup=300).values


def test_stage_scores_the_same_whether_or_not_score_one_starts_learning() -> None:
    """learn_next=True, then learn_one / a second score_one / a checkpoint: always the
    same scores and the same model as River's own calls (the reference stage)."""
    cfg = river_config(warmup=100)
    ref, ours = RiverStage(cfg, MULTI_CHANNELS), RiverStage(cfg, MULTI_CHANNELS)
    ref._one_walk = [False]  # River's score_one / learn_one only
    rows = _stream()
    for i, row in enumerate(rows.tolist()):
        a, b = ref.score_one(row), ours.score_one(row, learn_next=True)
        assert a == b, i
        if i % 7 == 3:  # not learnt after all: the next call takes the learning back
            assert ref.score_one(row) == ours.score_one(row)
            continue
        if i % 97 == 5:  # a checkpoint between scoring and learning
            ours = pickle.loads(pickle.dumps(ours))
        scored = i % 5 != 0  # False: learnt as a later point with the same values
        ref.learn_one(row, scored=scored)
        ours.learn_one(row, scored=scored)
    assert ours._one_walk == [True]
    assert _masses(ours._models[0]) == _masses(ref._models[0])
    assert pickle.dumps(ref.state_dict()["calib"]) == pickle.dumps(ours.state_dict()["calib"])


@pytest.mark.parametrize("river_at", [0.0, 0.4])
def test_cascade_outcomes_equal_those_of_river_own_calls(river_at: float) -> None:
    """The cascade (guard on: points it does not learn, a level shift it relearns) gives
    the same outcomes as with stage 2 on River's score_one / learn_one only."""
    river = RiverConfig(models=(RiverModelConfig(kind="half_space_trees", n_trees=10,
                                                 height=6, window_size=100),),
                        warmup=100, calibration_window=100, relearn_after=40)
    cfg = agent_config(MULTI_CHANNELS, river=river,
                       escalation=EscalationConfig(river_at=river_at))
    ref = StreamCascade(cfg.streams[0], cfg)
    ours = StreamCascade(cfg.streams[0], cfg)
    assert ref.river is not None and ours.river is not None
    ref.river._one_walk = [False]
    rows = _stream(2000, seed=5)
    rows[1200:] += 6.0 * rows[300:1100].std(axis=0)  # a lasting shift: held, then relearnt
    a = [ref.process(r, 0.5) for r in rows.tolist()]
    b = [ours.process(r, 0.5) for r in rows.tolist()]
    assert [(o.score, o.stage_scores) for o in a] == [(o.score, o.stage_scores) for o in b]
    assert ours.river._one_walk == [True]
    assert sum(o.stage_scores[1] is not None for o in b) > 300
    assert sum(o.score >= 0.5 for o in b) > 10  # some points were held out of stage 2
    assert _masses(ours.river._models[0]) == _masses(ref.river._models[0])


def test_prebuilt_trees_are_the_ones_the_first_point_builds() -> None:
    """Trees built at set-up: the same split features, thresholds and masses as River's own
    lazy build at the first learn_one, and the same scores and state over a stream."""
    pts = _points(400, seed=7)
    lazy, early = _hst(), hst_walk.prebuilt(_hst(), FEATURES)
    assert early.trees and not lazy.trees  # type: ignore[attr-defined]
    assert all(n.l_mass == 0 and n.r_mass == 0 for nodes in early._tree_nodes for n in nodes)  # type: ignore[attr-defined]
    assert early.counter == 0  # type: ignore[attr-defined]
    for x in pts:
        assert early.score_one(x) == lazy.score_one(x)  # type: ignore[attr-defined]
        lazy.learn_one(x)  # type: ignore[attr-defined]
        early.learn_one(x)  # type: ignore[attr-defined]

    def layout(m: object) -> list[tuple[object, object]]:
        return [(getattr(n, "feature", None), getattr(n, "threshold", None))
                for nodes in m._tree_nodes for n in nodes]  # type: ignore[attr-defined]

    assert layout(early) == layout(lazy) and _masses(early) == _masses(lazy)
    # a model already fed, or not a HalfSpaceTrees, is left alone
    assert hst_walk.prebuilt(lazy, FEATURES) is lazy
    loda = anomaly_classes().LODA(n_bins=5, n_random_cuts=5, seed=1)
    assert hst_walk.prebuilt(loda, FEATURES) is loda


def test_river_stage_builds_its_trees_at_set_up() -> None:
    stage = RiverStage(river_config(), MULTI_CHANNELS)
    hsts = [m for m in stage._models if hasattr(m, "trees")]
    assert hsts and all(m.trees for m in hsts)
