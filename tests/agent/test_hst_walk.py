"""River's HalfSpaceTrees built at set-up and the layout check (agent/detectors/hst_walk.py),
on real River models."""

from __future__ import annotations

import numpy as np

from agent.detectors import hst_walk
from agent.detectors.river_models import RiverStage
from agent.river_import import anomaly_classes
from tests.agent.helpers import MULTI_CHANNELS, river_config

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
