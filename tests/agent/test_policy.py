"""AlertPolicy: k-of-n raise, hysteresis clear, cooldown, severities, episode ids."""

from __future__ import annotations

import pickle
from collections.abc import Sequence

import pytest

from agent.config import AlertConfig, SeverityConfig
from agent.policy import AlertPolicy
from agent.types import Alert, AlertEvent, Severity, Stage

CHANNELS = ("a", "b", "c", "d")


def _policy(**kw) -> AlertPolicy:
    kw.setdefault("k", 3)
    kw.setdefault("n", 5)
    kw.setdefault("clear_after", 3)
    return AlertPolicy(AlertConfig(**kw), stream="pump", channels=CHANNELS, agent_id="gw-1")


def _feed(pol: AlertPolicy, scores: Sequence[float], t0: float = 0.0, stage: int = 1,
          evidence=None) -> tuple[list[bool], list[Alert]]:
    active, events = [], []
    for i, s in enumerate(scores):
        a, ev = pol.update(t0 + i, s, stage, evidence)
        active.append(a)
        events.extend(ev)
    return active, events


def _score_for(multiple: float, thr: float) -> float:
    """The score whose odds are ``multiple`` times the threshold's odds."""
    o = multiple * thr / (1.0 - thr)
    return o / (1.0 + o)


# --------------------------------------------------------------------------- raise


def test_k_of_n_raises_on_the_kth_hit_inside_n() -> None:
    pol = _policy(k=3, n=5)
    active, events = _feed(pol, [0.6, 0.1, 0.6, 0.1, 0.6])
    assert active == [False, False, False, False, True]
    assert [e.event for e in events] == [AlertEvent.RAISE]
    assert events[0].ts == 4.0 and events[0].start == 4.0 and events[0].end is None


def test_hits_spread_wider_than_n_never_raise() -> None:
    pol = _policy(k=3, n=5)
    active, events = _feed(pol, [0.9, 0.1, 0.1] * 20)  # at most 2 hits in any 5
    assert not any(active) and events == []


@pytest.mark.parametrize("k", [2, 3])
def test_a_lone_outlier_does_not_raise(k: int) -> None:
    pol = _policy(k=k, n=5)
    active, events = _feed(pol, [0.1] * 5 + [0.999] + [0.1] * 10)
    assert not any(active) and events == []


def test_with_k_1_a_lone_outlier_raises() -> None:
    pol = _policy(k=1, n=1)
    active, events = _feed(pol, [0.1, 0.1, 0.999])
    assert active == [False, False, True]
    assert len(events) == 1


def test_threshold_is_inclusive() -> None:
    pol = _policy(k=1, n=1, threshold=0.6, clear_threshold=0.5)
    assert pol.update(0.0, 0.5999999, 1, None) == (False, [])
    active, events = pol.update(1.0, 0.6, 1, None)
    assert active and events[0].event is AlertEvent.RAISE


# --------------------------------------------------------------------------- clear


def test_hysteresis_clear_after_clear_after_points_below_clear_threshold() -> None:
    pol = _policy(k=2, n=3, clear_after=3, threshold=0.5, clear_threshold=0.4)
    _feed(pol, [0.7, 0.7])
    assert pol.active
    # Between clear_threshold and threshold: the episode goes on (hysteresis).
    active, events = _feed(pol, [0.45] * 20, t0=10)
    assert all(active) and events == []
    # Two low points, one in the band (resets the count), then three low points.
    active, events = _feed(pol, [0.1, 0.1, 0.45, 0.1, 0.1, 0.1], t0=40)
    assert active == [True, True, True, True, True, False]
    assert [e.event for e in events] == [AlertEvent.CLEAR]
    assert events[0].ts == 45.0 and events[0].end == 45.0 and events[0].start == 1.0


def test_after_a_clear_k_new_hits_are_needed() -> None:
    pol = _policy(k=2, n=3, clear_after=1)
    _feed(pol, [0.7, 0.7, 0.1])
    assert not pol.active
    active, events = _feed(pol, [0.7, 0.1, 0.1, 0.7, 0.7], t0=10)
    assert active == [False, False, False, False, True]
    assert [e.event for e in events] == [AlertEvent.RAISE]


# --------------------------------------------------------------------------- cooldown


def test_cooldown_suppresses_a_raise_within_cooldown_s() -> None:
    pol = _policy(k=2, n=3, clear_after=1, cooldown_s=10.0)
    _, events = _feed(pol, [0.7, 0.7, 0.1])  # raise at 1, clear at 2
    assert events[-1].event is AlertEvent.CLEAR and events[-1].ts == 2.0
    # ts 3..11 are within 10 s of the clear: hits, but no raise.
    active, events = _feed(pol, [0.9] * 9, t0=3.0)
    assert not any(active) and events == []
    # ts 12 is the first at or after clear + cooldown_s.
    active, events = _feed(pol, [0.9], t0=12.0)
    assert active == [True]
    assert [e.event for e in events] == [AlertEvent.RAISE]
    assert events[0].start == 12.0


def test_zero_cooldown_allows_an_immediate_new_episode() -> None:
    pol = _policy(k=1, n=1, clear_after=1)
    _, events = _feed(pol, [0.9, 0.1, 0.9])
    assert [e.event for e in events] == [AlertEvent.RAISE, AlertEvent.CLEAR, AlertEvent.RAISE]
    assert events[0].alert_id != events[2].alert_id


# --------------------------------------------------------------------------- severity


@pytest.mark.parametrize("thr", [0.5, 0.3, 0.8])
@pytest.mark.parametrize(
    ("multiple", "expected"),
    [
        (1.0, Severity.MEDIUM),
        (1.45, Severity.MEDIUM),
        (1.55, Severity.HIGH),
        (1.95, Severity.HIGH),
        (2.05, Severity.CRITICAL),
        (50.0, Severity.CRITICAL),
    ],
)
def test_severity_in_odds_multiples_of_the_threshold(thr, multiple, expected) -> None:
    pol = _policy(k=1, n=1, threshold=thr, clear_threshold=thr / 2)
    s = _score_for(multiple, thr)
    assert s >= thr
    assert pol.severity_of(s) is expected
    _, events = _feed(pol, [s])
    assert events[0].severity is expected


def test_severity_levels_follow_the_config() -> None:
    pol = _policy(severity=SeverityConfig(medium=1.0, high=3.0, critical=10.0))
    assert pol.severity_of(_score_for(2.5, 0.5)) is Severity.MEDIUM
    assert pol.severity_of(_score_for(3.5, 0.5)) is Severity.HIGH
    assert pol.severity_of(_score_for(11.0, 0.5)) is Severity.CRITICAL


def test_update_event_when_severity_rises_only() -> None:
    thr = 0.5
    med, high, crit = (_score_for(m, thr) for m in (1.1, 1.7, 2.5))
    pol = _policy(k=2, n=3, clear_after=2)
    _, events = _feed(pol, [med, med, med, high, high, 0.45, crit, crit + 0.01, med, 0.1, 0.1],
                      stage=2)
    kinds = [(e.event, e.severity) for e in events]
    assert kinds == [
        (AlertEvent.RAISE, Severity.MEDIUM),
        (AlertEvent.UPDATE, Severity.HIGH),
        (AlertEvent.UPDATE, Severity.CRITICAL),
        (AlertEvent.CLEAR, Severity.CRITICAL),
    ]
    assert events[1].ts == 3.0 and events[2].ts == 6.0
    assert events[-1].peak_score == pytest.approx(crit + 0.01)


# --------------------------------------------------------------------------- ids & channels


def _episode_run() -> list[Alert]:
    pol = _policy(k=2, n=3, clear_after=2)
    _, events = _feed(pol, [0.6, 0.6, 0.95, 0.1, 0.1, 0.2, 0.7, 0.7, 0.1, 0.1], t0=1000.0)
    return events


def test_one_alert_id_per_episode_shared_by_raise_update_clear() -> None:
    events = _episode_run()
    kinds = [e.event for e in events]
    assert kinds == [AlertEvent.RAISE, AlertEvent.UPDATE, AlertEvent.CLEAR,
                     AlertEvent.RAISE, AlertEvent.CLEAR]
    first, second = events[:3], events[3:]
    assert len({e.alert_id for e in first}) == 1
    assert len({e.alert_id for e in second}) == 1
    assert first[0].alert_id != second[0].alert_id
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert all(e.stream == "pump" and e.threshold == 0.5 for e in events)


def test_alert_ids_are_deterministic_across_runs() -> None:
    a, b = _episode_run(), _episode_run()
    assert [e.alert_id for e in a] == [e.alert_id for e in b]
    assert [e.to_dict() for e in a] == [e.to_dict() for e in b]
    # ...and depend on the agent and the stream.
    other = AlertPolicy(AlertConfig(k=2, n=3, clear_after=2), "pump", CHANNELS, agent_id="gw-2")
    _, ev = _feed(other, [0.6, 0.6], t0=1000.0)
    assert ev[0].alert_id != a[0].alert_id


def test_top_channels_are_ordered_by_evidence() -> None:
    pol = _policy(k=1, n=1, clear_after=1, top_channels=3)
    _, events = _feed(pol, [0.9], evidence=[0.5, 3.0, 1.0, 0.0])
    assert events[0].channels == ("b", "c", "a")
    # Evidence of later hits is merged (max per channel) into the episode's.
    _, ev = _feed(pol, [0.95], t0=1, evidence=[0.0, 0.0, 0.0, 9.0])
    assert ev == []  # 0.9 was critical already: nothing to report yet
    _, ev = _feed(pol, [0.1], t0=2, evidence=[7.0, 0.0, 0.0, 0.0])  # not a hit: ignored
    assert ev[0].event is AlertEvent.CLEAR
    assert ev[0].channels == ("d", "b", "c")


def test_top_channels_skip_zero_and_nan_evidence() -> None:
    pol = _policy(k=1, n=1, top_channels=4)
    _, events = _feed(pol, [0.9], evidence=[0.0, float("nan"), 2.0, 0.0])
    assert events[0].channels == ("c",)


def test_peak_stage_is_reported() -> None:
    pol = _policy(k=1, n=1, clear_after=1)
    pol.update(0.0, 0.6, int(Stage.STATISTICAL), None)
    pol.update(1.0, 0.9, int(Stage.ONNX), None)
    _, ev = pol.update(2.0, 0.1, int(Stage.RIVER), None)
    assert ev[0].stage is Stage.ONNX and ev[0].peak_score == 0.9


def test_state_round_trip_continues_identically() -> None:
    scores = [0.6, 0.1, 0.6, 0.7, 0.45, 0.2, 0.1, 0.1, 0.8, 0.8, 0.9, 0.1, 0.1, 0.1]
    a = _policy(k=2, n=3, clear_after=3)
    _feed(a, scores[:5])
    b = _policy(k=2, n=3, clear_after=3)
    b.load_state(pickle.loads(pickle.dumps(a.state_dict())))
    b._seq = a._seq
    ra, rb = _feed(a, scores[5:], t0=5), _feed(b, scores[5:], t0=5)
    assert ra[0] == rb[0]
    assert [e.to_dict() for e in ra[1]] == [e.to_dict() for e in rb[1]]
    assert ra[1]  # something happened after the save
