"""Stage 2: RiverStage (real River detectors behind our scaler and calibrator)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from agent.config import RiverConfig, RiverModelConfig
from agent.detectors.river_models import RiverStage, _Calibrator
from agent.synthetic import iot
from tests.agent.helpers import IOT_CHANNELS, RIVER_KW, auc, river_config, score_learn

KINDS = ("half_space_trees", "loda")


def _stage(kind: str = "half_space_trees", warmup: int = 100) -> RiverStage:
    return RiverStage(river_config(kind, warmup=warmup), IOT_CHANNELS)


def _stream(n: int = 800, seed: int = 1):
    return iot(n=n, seed=seed, warmup=150)


@pytest.mark.parametrize("kind", KINDS)
def test_warm_up_then_scores_in_unit_interval(kind: str) -> None:
    stage = _stage(kind, warmup=60)
    rows = _stream(500).values
    n = 0
    while stage.warming_up:
        assert stage.score_one(rows[n]) == 0.0
        assert list(stage.last_ratios) == [0.0]
        stage.learn_one(rows[n])
        n += 1
        assert n < 300, "never leaves warm-up"
    assert n >= 60  # at least `warmup` points
    scores = np.asarray(score_learn(stage, rows[n:]))
    assert ((scores >= 0.0) & (scores < 1.0)).all()
    assert scores.max() > 0.0  # it does score, not a constant 0


def test_warm_up_waits_for_the_calibrator() -> None:
    # warmup=2: the models have learnt enough, but the calibrator needs 20 scores first.
    stage = RiverStage(RiverConfig(models=(RiverModelConfig(kind="half_space_trees"),),
                                   warmup=2), IOT_CHANNELS)
    rows = _stream(600).values
    n = 0
    while stage.warming_up:
        assert stage.score_one(rows[n]) == 0.0
        stage.learn_one(rows[n])
        n += 1
        assert n < 600
    assert n >= 20
    assert all(k.ready for k in stage._calib)
    assert 0.0 <= stage.score_one(rows[n]) < 1.0


@pytest.mark.parametrize("kind", ["half_space_trees", "loda"])
def test_outliers_score_higher_than_normal_points(kind: str) -> None:
    s = _stream(900)
    stage = _stage(kind)
    scores = np.asarray(score_learn(stage, s.values))
    lab = s.labels[150:]
    sc = scores[150:]
    assert sc[lab].mean() > sc[~lab].mean()
    assert auc(lab, sc) > 0.7


def test_features_map_the_learnt_range_to_the_middle_half_and_clip() -> None:
    stage = _stage()
    stage.learn_one(np.array([0.0, 10.0, 100.0]))
    stage.learn_one(np.array([10.0, 20.0, 200.0]))
    f = stage._features([5.0, 1e9, -1e9])
    assert f == {"temperature": 0.5, "humidity": 1.0, "pressure": 0.0}
    g = stage._features([0.0, 20.0, 300.0])  # range ends -> 0.25 / 0.75; beyond, room
    assert g == {"temperature": 0.25, "humidity": 0.75, "pressure": 1.0}


def test_calibrator_median_and_quantile() -> None:
    cal = _Calibrator(window=200, quantile=0.9)
    assert not cal.ready and cal.ratio(10.0) == 0.0
    # The first refresh comes after 20 scores, then every 50: 70 scores = one refresh on all.
    for v in np.linspace(0.0, 1.0, 70):
        cal.add(float(v))
    assert cal.ready
    assert cal.ratio(0.5) == pytest.approx(0.0, abs=1e-9)
    assert cal.ratio(0.9) == pytest.approx(1.0, rel=1e-6)
    assert cal.ratio(0.0) == 0.0  # never negative
    assert cal.ratio(1.3) == pytest.approx(2.0, rel=1e-6)


def test_calibrator_is_not_ready_while_scores_have_no_spread() -> None:
    """A model that scores everything alike (HalfSpaceTrees before its first reference
    window) must not be calibrated on it: any later score would look infinitely odd."""
    cal = _Calibrator(window=100, quantile=0.99)
    for _ in range(60):
        cal.add(0.25)
    assert not cal.ready and cal.ratio(0.3) == 0.0
    for v in np.linspace(0.2, 0.4, 60):
        cal.add(float(v))
    assert cal.ready
    assert np.isfinite(cal.ratio(0.5)) and cal.ratio(0.5) > 1.0


@pytest.mark.parametrize("kind", KINDS)
def test_state_round_trip_via_state_dict_gives_identical_scores(kind: str) -> None:
    rows = _stream(500).values
    a = _stage(kind)
    score_learn(a, rows[:250])
    b = _stage(kind)
    b.load_state(pickle.loads(pickle.dumps(a.state_dict())))
    assert score_learn(a, rows[250:]) == score_learn(b, rows[250:])


@pytest.mark.parametrize("kind", KINDS)
def test_pickle_of_the_stage_gives_identical_scores(kind: str) -> None:
    rows = _stream(400).values
    a = _stage(kind)
    score_learn(a, rows[:200])
    b = pickle.loads(pickle.dumps(a))
    sa, sb = score_learn(a, rows[200:]), score_learn(b, rows[200:])
    assert sa == sb
    assert max(sa) > 0


def test_load_state_rejects_other_models_or_channels() -> None:
    a = _stage()
    two = RiverStage(
        RiverConfig(models=(RiverModelConfig(kind="loda"), RiverModelConfig(kind="loda"))),
        IOT_CHANNELS,
    )
    with pytest.raises(ValueError, match="does not match"):
        two.load_state(a.state_dict())
    with pytest.raises(ValueError, match="does not match"):
        RiverStage(river_config(), ("a", "b")).load_state(a.state_dict())


def test_several_models_report_one_ratio_each_and_the_max_wins() -> None:
    models = tuple(RiverModelConfig(kind=k, **RIVER_KW[k]) for k in KINDS)
    stage = RiverStage(RiverConfig(models=models, warmup=100, calibration_window=100),
                       IOT_CHANNELS)
    rows = _stream(400).values
    score_learn(stage, rows[:200])
    for row in rows[200:260]:
        s = stage.score_one(row)
        assert len(stage.last_ratios) == len(KINDS)
        r = max(stage.last_ratios)
        assert s == pytest.approx(r / (1 + r))
        stage.learn_one(row)


@pytest.mark.parametrize(
    "kind",
    [
        "half_space_trees",
        "loda",
    ],
)
def test_far_outliers_on_either_side_score_higher_than_a_typical_point(kind: str) -> None:
    rng = np.random.default_rng(0)
    stage = RiverStage(river_config(kind, warmup=100), ("a", "b", "c"))
    for row in rng.normal(0.5, 0.05, (600, 3)):
        stage.learn_one(row.tolist())
    typical = stage.score_one([0.5, 0.5, 0.5])
    assert stage.score_one([5.0, 5.0, 5.0]) > typical
    assert stage.score_one([-5.0, -5.0, -5.0]) > typical
