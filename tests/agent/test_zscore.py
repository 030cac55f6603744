"""Stage 1: StatGate (rolling / robust z-score per channel) on real numbers."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

from agent.config import ChannelConfig, ZScoreConfig
from agent.detectors.zscore import StatGate
from tests.agent.helpers import noisy, numbers, score_learn, shape_of

METHODS = ("rolling", "robust", "both")


def _gate(method: str = "both", n_channels: int = 1, channels=None, **kw) -> StatGate:
    kw.setdefault("window", 50)
    kw.setdefault("min_points", 10)
    return StatGate(ZScoreConfig(method=method, **kw), n_channels, channels)


_HELD = ("streak", "quarantine", "flag", "since")  # not baseline: quarantine, bookkeeping


def _strip(obj: object) -> object:
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if not any(h in str(k) for h in _HELD)}
    if isinstance(obj, list | tuple):
        return [_strip(v) for v in obj]
    return obj


def _baseline(gate: StatGate) -> list[float]:
    """Every number of the gate's baseline (the state minus the quarantine)."""
    return numbers(_strip(copy.deepcopy(gate.state_dict())))


def _state_numbers(gate: StatGate) -> list[float]:
    return numbers(gate.state_dict())


def _warm(gate: StatGate, n: int = 200, seed: int = 0, level: float = 10.0, sd: float = 1.0
          ) -> None:
    score_learn(gate, noisy(n, seed, level, sd, gate.n_channels))


def _s(gate: StatGate, *values: float) -> float:
    return gate.score_one([float(v) for v in values])


def _l(gate: StatGate, *values: float) -> None:
    gate.learn_one([float(v) for v in values])


# --------------------------------------------------------------------------- warm-up


@pytest.mark.parametrize("method", METHODS)
def test_warm_up_is_explicit_then_scoring_starts(method: str) -> None:
    gate = _gate(method, min_points=10)
    for v in noisy(10, seed=1)[:, 0]:
        assert gate.warming_up
        assert not any(gate.ready)
        # While warming up nothing is scored, even an absurd value.
        assert _s(gate, 1e6) == 0.0
        _l(gate, v)
    assert not gate.warming_up
    assert list(gate.ready) == [True]
    assert _s(gate, 1e6) > 0.99


def test_ready_is_per_channel() -> None:
    gate = _gate(n_channels=2, min_points=5)
    for v in noisy(5, seed=2)[:, 0]:
        _s(gate, v, np.nan)
        _l(gate, v, np.nan)
    assert list(gate.ready) == [True, False]
    assert not gate.warming_up  # one ready channel is enough to score
    assert _s(gate, 10.0, 1e9) < 0.5
    assert gate.last_ratios[1] == 0.0  # the unready channel never contributes


# --------------------------------------------------------------------------- spikes & guard


@pytest.mark.parametrize("method", METHODS)
def test_spike_on_stable_noisy_signal_is_flagged(method: str) -> None:
    gate = _gate(method)
    scores = score_learn(gate, noisy(300, seed=3))
    # Normal noise rarely crosses the threshold...
    assert np.mean(np.asarray(scores[20:]) >= 0.5) < 0.05
    assert _s(gate, 10.3) < 0.5
    # ...an 8-sigma spike always does, in both directions.
    assert _s(gate, 18.0) >= 0.5
    assert _s(gate, 2.0) >= 0.5


@pytest.mark.parametrize("method", METHODS)
def test_flagged_point_does_not_move_the_baseline(method: str) -> None:
    gate = _gate(method)
    _warm(gate)
    assert _s(gate, 25.0) >= 0.5
    base, centre = _baseline(gate), list(gate.center())
    _l(gate, 25.0)
    assert list(gate.center()) == centre
    assert _baseline(gate) == base
    # An accepted point does change the baseline (so the check above can fail).
    assert _s(gate, 10.4) < 0.5
    base = _baseline(gate)
    _l(gate, 10.4)
    assert _baseline(gate) != base


def test_flagged_points_keep_the_baseline_for_a_whole_streak() -> None:
    gate = _gate("both", rebaseline_after=30)
    _warm(gate)
    _s(gate, 10.0)
    base = _baseline(gate)
    for _ in range(29):  # one short of a rebaseline
        assert _s(gate, 30.0) >= 0.5
        _l(gate, 30.0)
    assert gate.rebaselines == 0
    assert _baseline(gate) == base


def test_without_guard_flagged_points_enter_the_baseline() -> None:
    gate = _gate("rolling", guard=False)
    _warm(gate)
    assert _s(gate, 25.0) >= 0.5
    base = _baseline(gate)
    _l(gate, 25.0)
    assert _baseline(gate) != base


def test_explicit_flags_override_the_last_score() -> None:
    gate = _gate()
    _warm(gate)
    assert _s(gate, 25.0) >= 0.5
    base = _baseline(gate)
    gate.learn_one([25.0], flagged=[False])  # warm-up rows: the caller accepts everything
    assert _baseline(gate) != base


# --------------------------------------------------------------------------- level shift


@pytest.mark.parametrize("method", METHODS)
def test_level_shift_rebaselines_after_exactly_rebaseline_after_points(method: str) -> None:
    p = 8
    gate = _gate(method, rebaseline_after=p, min_points=5)
    _warm(gate, 100, sd=0.5)
    shifted = noisy(300, seed=9, level=20.0, sd=0.5)[:, 0]
    for i in range(p):
        assert gate.rebaselines == 0
        assert _s(gate, shifted[i]) >= 0.5, f"shift point {i} not flagged"
        _l(gate, shifted[i])
    assert gate.rebaselines == 1
    # The new baseline is the quarantined level shift...
    assert gate.center()[0] == pytest.approx(20.0, abs=0.5)
    # ...and the channel stops alarming at the new level: never stuck in alarm.
    rest = np.asarray(score_learn(gate, shifted[p:, None]))
    assert rest[0] < 0.5
    assert np.mean(rest >= 0.5) < 0.05
    assert gate.rebaselines <= 2


def test_rebaseline_after_longer_than_the_window() -> None:
    gate = _gate("both", window=10, min_points=5, rebaseline_after=15)
    _warm(gate, 50, sd=0.5)
    shifted = noisy(60, seed=10, level=20.0, sd=0.5)
    scores = np.asarray(score_learn(gate, shifted))
    assert gate.rebaselines == 1
    assert (scores[:15] >= 0.5).all()
    assert np.mean(scores[15:] >= 0.5) < 0.1
    assert gate.center()[0] == pytest.approx(20.0, abs=0.5)


def test_interrupted_streak_does_not_rebaseline() -> None:
    p = 5
    gate = _gate(rebaseline_after=p)
    _warm(gate, sd=0.5)
    for _ in range(3):
        for _ in range(p - 1):
            assert _s(gate, 30.0) >= 0.5
            _l(gate, 30.0)
        assert _s(gate, 10.0) < 0.5
        _l(gate, 10.0)
    assert gate.rebaselines == 0
    assert gate.center()[0] == pytest.approx(10.0, abs=0.3)


# --------------------------------------------------------------------------- tolerance floors


def _flat(gate: StatGate, value: float = 100.0, n: int = 30) -> None:
    for _ in range(n):
        gate.score_one([value] * gate.n_channels)
        gate.learn_one([value] * gate.n_channels)


@pytest.mark.parametrize("method", METHODS)
def test_tiny_shift_on_flat_signal_scores_high_without_a_floor(method: str) -> None:
    gate = _gate(method)
    _flat(gate)
    s = _s(gate, 100.01)
    assert np.isfinite(s)
    assert s > 0.99


@pytest.mark.parametrize(
    "method", ["rolling", "robust", "both"])
def test_rel_tolerance_floor_ignores_tiny_shift(method: str) -> None:
    gate = _gate(method, rel_tolerance=0.001)
    _flat(gate)
    assert _s(gate, 100.01) == 0.0
    assert _s(gate, 99.99) == 0.0
    assert _s(gate, 100.5) > 0.99  # beyond 0.1 % of 100: still an anomaly


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("floor", [{"abs_tolerance": 0.05}])
def test_tolerance_floor_ignores_tiny_shift(method: str, floor: dict[str, float]) -> None:
    gate = _gate(method, **floor)
    _flat(gate)
    assert _s(gate, 100.01) == 0.0
    assert _s(gate, 99.99) == 0.0
    # A shift beyond the floor (0.05 absolute, 0.1 relative) is still an anomaly.
    assert _s(gate, 100.5) > 0.99


def test_channel_tolerance_overrides_the_stream_default() -> None:
    chans = [ChannelConfig("a", abs_tolerance=0.05), ChannelConfig("b"),
             ChannelConfig("c", rel_tolerance=0.01)]
    gate = _gate(n_channels=3, channels=chans, abs_tolerance=0.0)
    _flat(gate)
    _s(gate, 100.01, 100.01, 100.5)
    assert gate.last_ratios[0] == 0.0
    assert gate.last_ratios[1] > 1.0
    assert gate.last_ratios[2] == 0.0  # 0.5 < 1 % of 100


def test_stream_tolerance_applies_to_channels_without_override() -> None:
    chans = [ChannelConfig("a"), ChannelConfig("b", abs_tolerance=0.0)]
    gate = _gate(n_channels=2, channels=chans, abs_tolerance=0.05)
    _flat(gate)
    _s(gate, 100.01, 100.01)
    assert gate.last_ratios[0] == 0.0
    assert gate.last_ratios[1] > 1.0


# --------------------------------------------------------------------------- direction


def test_direction_per_channel() -> None:
    chans = [ChannelConfig("up", direction="up"), ChannelConfig("down", direction="down"),
             ChannelConfig("both")]
    gate = _gate(n_channels=3, channels=chans)
    _warm(gate)
    _s(gate, 25.0, 25.0, 25.0)
    rise = list(gate.last_ratios)
    _s(gate, -5.0, -5.0, -5.0)
    drop = list(gate.last_ratios)
    assert rise[0] > 1 and drop[0] == 0.0
    assert rise[1] == 0.0 and drop[1] > 1
    assert rise[2] > 1 and drop[2] > 1


@pytest.mark.parametrize("direction", ["up", "down"])
def test_stream_direction_applies_to_channels_without_override(direction: str) -> None:
    chans = [ChannelConfig("a"), ChannelConfig("b", direction="both")]
    gate = _gate(n_channels=2, channels=chans, direction=direction)
    _warm(gate)
    spike = 25.0 if direction == "down" else -5.0  # the ignored direction
    _s(gate, spike, 10.0)
    assert gate.last_ratios[0] == 0.0
    _s(gate, 10.0, spike)
    assert gate.last_ratios[1] > 1.0


# --------------------------------------------------------------------------- methods


def test_both_is_the_max_of_rolling_and_robust() -> None:
    rows = noisy(400, seed=4)
    rows[::37] += 12.0  # some outliers; guard off so all three learn the same values
    ratios = {}
    for m in METHODS:
        gate = _gate(m, guard=False)
        out = []
        for r in rows:
            gate.score_one([float(r[0])])
            out.append(gate.last_ratios[0])
            gate.learn_one([float(r[0])])
        ratios[m] = np.asarray(out)
    np.testing.assert_allclose(ratios["both"], np.maximum(ratios["rolling"], ratios["robust"]),
                               rtol=1e-9, atol=1e-12)
    assert not np.allclose(ratios["rolling"], ratios["robust"])


def test_robust_resists_outliers_in_the_baseline_rolling_does_not() -> None:
    rows = noisy(50, seed=5)
    rows[::10] = 60.0  # 5 huge outliers inside the window inflate the std, not the MAD
    gates = {m: _gate(m, guard=False) for m in METHODS}
    for g in gates.values():
        score_learn(g, rows)
    assert _s(gates["rolling"], 17.0) < 0.5  # 7 sigma of the clean noise
    assert _s(gates["robust"], 17.0) >= 0.5
    assert _s(gates["both"], 17.0) >= 0.5


def test_robust_centre_is_the_median_rolling_centre_is_the_mean() -> None:
    rows = np.array([[1.0], [2.0], [3.0], [4.0], [100.0]] * 4)  # median 3, mean 22
    rob, rol = _gate("robust", guard=False), _gate("rolling", guard=False)
    for g in (rob, rol):
        score_learn(g, rows)
    assert _s(rob, 3.0) == 0.0 and _s(rob, 22.0) > 0.5
    assert _s(rol, 22.0) == 0.0 and _s(rol, 3.0) > 0.0


# --------------------------------------------------------------------------- bad values


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("method", [
    "rolling",
    "robust",
    "both",
])
def test_non_finite_values_never_poison_state(method: str, bad: float) -> None:
    rows = noisy(300, seed=6)[:, 0]
    rows[150:155] += 30.0  # a flagged burst too
    clean, dirty = _gate(method), _gate(method)
    clean_scores, dirty_scores = [], []
    for i, v in enumerate(rows):
        if i % 7 == 3:  # a bad reading between two good ones
            assert _s(dirty, bad) == 0.0
            _l(dirty, bad)
        clean_scores.append(_s(clean, v))
        _l(clean, v)
        dirty_scores.append(_s(dirty, v))
        _l(dirty, v)
    assert dirty_scores == clean_scores
    assert all(np.isfinite(_state_numbers(dirty)))
    assert _baseline(dirty) == _baseline(clean)


def test_one_bad_channel_does_not_hide_the_others() -> None:
    gate = _gate(n_channels=2)
    _warm(gate)
    assert _s(gate, np.nan, 30.0) >= 0.5
    assert gate.last_ratios[0] == 0.0
    centre = list(gate.center())
    _l(gate, np.inf, 30.0)
    assert list(gate.center()) == centre  # inf skipped, 30 quarantined
    assert all(np.isfinite(_state_numbers(gate)))
    assert _s(gate, 10.0, 10.0) < 0.5


# --------------------------------------------------------------------------- memory & state


def test_memory_is_fixed() -> None:
    gate = _gate("both", n_channels=3, window=100, robust_refresh=100, rebaseline_after=20)
    _warm(gate, 150)
    shape = shape_of(gate.state_dict())
    size = len(pickle.dumps(gate.state_dict()))
    rng = np.random.default_rng(7)
    x = rng.normal(10.0, 1.0, (20_000, 3))
    x[5000:5100, 1] += 50.0  # a level shift (quarantine + rebaseline)
    x[::997, 2] = np.nan
    for row in x.tolist():
        gate.score_one(row)
        gate.learn_one(row)
    assert gate.rebaselines >= 1
    assert shape_of(gate.state_dict()) == shape
    assert len(pickle.dumps(gate.state_dict())) <= size * 1.05


@pytest.mark.parametrize("method", METHODS)
def test_state_round_trip_continues_identically(method: str) -> None:
    rows = noisy(600, seed=8)
    rows[350:400] += 15.0  # a level shift straddling the save point
    a = _gate(method, rebaseline_after=10)
    score_learn(a, rows[:370])
    blob = pickle.dumps(a.state_dict())
    b = _gate(method, rebaseline_after=10)
    b.load_state(pickle.loads(blob))
    assert score_learn(a, rows[370:]) == score_learn(b, rows[370:])
    assert a.rebaselines == b.rebaselines >= 1


def test_pickle_of_the_gate_continues_identically() -> None:
    rows = noisy(300, seed=14)
    a = _gate()
    score_learn(a, rows[:150])
    b = pickle.loads(pickle.dumps(a))
    assert score_learn(a, rows[150:]) == score_learn(b, rows[150:])


def test_load_state_rejects_a_different_window_or_channel_count() -> None:
    a = _gate(window=50)
    _warm(a)
    with pytest.raises(ValueError):
        _gate(window=60).load_state(a.state_dict())
    with pytest.raises(ValueError):
        _gate(n_channels=2).load_state(a.state_dict())


def test_state_copied_from_a_live_gate_gives_two_independent_gates() -> None:
    a = _gate()
    _warm(a)
    ref = pickle.loads(pickle.dumps(a))  # an independent copy to compare with
    b = _gate()
    b.load_state(a.state_dict())  # in-memory hand-over (Engine.adopt does this)
    rows = noisy(40, seed=12)
    expected = score_learn(ref, rows)
    assert score_learn(a, rows) == expected
    assert score_learn(b, rows) == expected


# --------------------------------------------------------------------------- MAD = 0


@pytest.mark.parametrize("method", ["robust", "both"])
def test_zero_mad_gives_finite_scores(method: str) -> None:
    rng = np.random.default_rng(13)
    # Quantised: mostly 3, sometimes 4 -> median 3, MAD 0 (mean absolute deviation > 0).
    quantised = np.where(rng.random(300) < 0.1, 4.0, 3.0)[:, None]
    gate = _gate(method)
    scores = np.asarray(score_learn(gate, quantised))
    assert np.isfinite(scores).all() and (scores <= 1.0).all()
    assert all(np.isfinite(_state_numbers(gate)))
    # Perfectly constant: MAD and mean deviation 0 -> epsilon scale, still finite.
    flat = _gate(method)
    _flat(flat, 3.0)
    s = _s(flat, 3.5)
    assert np.isfinite(s) and 0.99 < s <= 1.0
    assert np.isfinite(flat.last_ratios).all()
    assert _s(flat, 3.0) == 0.0


def test_quantised_two_level_signal_does_not_alarm_for_ever() -> None:
    rng = np.random.default_rng(0)
    vals = np.where(rng.random(2000) < 0.2, 4.0, 3.0)[:, None]  # 20 % of readings are 4
    gate = _gate("both", window=100)
    scores = np.asarray(score_learn(gate, vals))
    # A value seen in a fifth of all readings is not a 10^11-sigma event.
    assert scores[500:].max() < 0.99
