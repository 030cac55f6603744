"""StreamCascade: escalation, fusion, the stage-3 window, model swaps (real stages)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from agent.cascade import Outcome, StreamCascade, _Window
from agent.config import EscalationConfig, ZScoreConfig
from agent.synthetic import iot
from agent.types import Stage
from tests.agent.helpers import IOT_CHANNELS, agent_config, pca_model

THR = 0.5
RIVER_WARMUP = 100  # helpers.river_config default


def _cascade(model=True, **esc) -> StreamCascade:
    cfg = agent_config(escalation=EscalationConfig(**esc))
    return StreamCascade(cfg.streams[0], cfg, pca_model() if model is True else model or None)


def _rows(n: int = 300, seed: int = 2) -> np.ndarray:
    return iot(n=n, seed=seed, warmup=120).values


def _run(cas: StreamCascade, rows: np.ndarray) -> list[Outcome]:
    return [cas.process(r.tolist(), THR) for r in rows]


def _same(a: Outcome, b: Outcome) -> bool:
    ev_same = (a.channel_evidence is None and b.channel_evidence is None) or np.array_equal(
        a.channel_evidence, b.channel_evidence)
    return (a.score, a.stage, a.stage_scores, a.sampled) == (
        b.score, b.stage, b.stage_scores, b.sampled) and ev_same


# --------------------------------------------------------------------------- escalation


def test_gates_at_one_never_run_stages_two_and_three() -> None:
    cas = _cascade(river_at=1.0, onnx_at=1.0)
    rows = _rows(900)
    _run(cas, rows[:600])  # stage 1 ready after 10 points, stage 2 well before 600
    before = [list(cas.counts["scored"]), list(cas.counts["escalated"])]
    out = _run(cas, rows[600:])
    assert not cas.river.warming_up  # stage 2 *could* run: the gate stops it
    assert all(o.stage == Stage.STATISTICAL for o in out)
    assert all(o.stage_scores[1:] == (None, None) for o in out)
    assert max(o.score for o in out) > THR  # stage 1 did see anomalies
    assert cas.counts["scored"] == [before[0][0] + len(out), before[0][1], before[0][2]]
    assert cas.counts["escalated"] == before[1]


def test_gates_at_zero_every_scored_point_reaches_every_stage() -> None:
    cas = _cascade(river_at=0.0, onnx_at=0.0)
    rows = _rows(800)
    i = 0
    while cas.river.warming_up:  # points that reach the alert threshold are not learnt
        cas.process(rows[i].tolist(), THR)
        i += 1
    before = [list(cas.counts["scored"]), list(cas.counts["escalated"])]
    out = _run(cas, rows[i:])
    assert len(out) > 200
    n = len(out)
    assert all(o.stage == Stage.ONNX for o in out)
    assert all(None not in o.stage_scores for o in out)
    assert [c - b for c, b in zip(cas.counts["scored"], before[0], strict=True)] == [n, n, n]
    assert [c - b for c, b in zip(cas.counts["escalated"], before[1], strict=True)] == [0, n, n]


def test_gates_between_escalate_only_suspicious_points() -> None:
    cas = _cascade(river_at=0.3, onnx_at=0.0)
    checked = 0
    for r in _rows(600):
        river_ready = not cas.river.warming_up
        o = cas.process(r.tolist(), THR)
        s1, s2, s3 = o.stage_scores
        if s1 is not None and river_ready:
            checked += 1
            assert (s2 is not None) == (s1 >= cas.river_at)
            assert s3 is not None  # onnx_at = 0: the last stage that ran always escalates
    assert checked > 100
    assert 0 < cas.counts["escalated"][1] < cas.counts["scored"][0]
    # 3 channels: river_at 0.3 is the one-channel gate, scaled up (agent/escalation.py)
    assert 0.3 < cas.river_at < 0.5


def test_sample_every_forces_deep_checks_at_that_cadence() -> None:
    cas = _cascade(river_at=1.0, onnx_at=1.0, sample_every=7)
    out, checked = [], 0
    for i, r in enumerate(_rows(900)):
        river_ready = not cas.river.warming_up
        o = cas.process(r.tolist(), THR)
        out.append(o)
        assert o.sampled == ((i + 1) % 7 == 0), i
        if river_ready:
            checked += o.sampled
            deep = o.stage_scores[1] is not None and o.stage_scores[2] is not None
            assert deep == o.sampled, i
    assert checked >= 10
    sampled_scored = sum(1 for o in out if o.sampled and o.stage != Stage.NONE)
    assert cas.counts["sampled"] == sampled_scored
    assert cas.counts["scored"][2] == sum(1 for o in out if o.stage_scores[2] is not None)


# --------------------------------------------------------------------------- fusion


def test_fusion_deepest_returns_the_deepest_stage_score() -> None:
    out = _run(_cascade(river_at=0.0, onnx_at=0.0, fusion="deepest"), _rows())
    differs = 0
    for o in out:
        present = [s for s in o.stage_scores if s is not None]
        if not present:
            assert o.score == 0.0 and o.stage == Stage.NONE
            continue
        assert o.score == present[-1]
        assert o.stage == Stage(max(i + 1 for i, s in enumerate(o.stage_scores) if s is not None))
        differs += o.score != max(present)
    assert differs > 0  # "deepest" is not secretly "max"


def test_fusion_max_returns_the_largest_stage_score() -> None:
    out = _run(_cascade(river_at=0.0, onnx_at=0.0, fusion="max"), _rows())
    differs = 0
    for o in out:
        present = [s for s in o.stage_scores if s is not None]
        assert o.score == (max(present) if present else 0.0)
        differs += bool(present) and o.score != present[-1]
    assert differs > 0


# --------------------------------------------------------------------------- window


def test_stage3_window_holds_the_last_w_raw_rows() -> None:
    cas = _cascade(river_at=0.0, onnx_at=0.0)
    rows = _rows(60)
    m = cas.model
    for i, r in enumerate(rows):
        o = cas.process(r.tolist(), THR)
        w = cas._window
        assert w.count == min(i + 1, 8)
        if i >= 7:
            np.testing.assert_array_equal(w.view(), rows[i - 7 : i + 1])
            if o.stage_scores[2] is not None:
                assert o.stage_scores[2] == m.score_window(rows[i - 7 : i + 1]).score


def test_missing_values_are_carried_forward_into_the_window() -> None:
    cas = _cascade()
    rows = _rows(40)
    _run(cas, rows[:20])
    x = rows[20].copy()
    x[1] = np.nan
    cas.process(x.tolist(), THR)
    expected = x.copy()
    expected[1] = rows[19][1]
    np.testing.assert_array_equal(cas._window.view()[-1], expected)
    assert cas.counts["imputed"] == 1
    assert np.isfinite(cas._window.view()).all()


def test_window_ring_and_resize() -> None:
    w = _Window(3, 1)
    for v in range(1, 6):
        w.push(np.array([float(v)]))
    assert w.view().ravel().tolist() == [3.0, 4.0, 5.0]
    big = w.resized(5)
    assert big.count == 3 and not big.full
    small = w.resized(2)
    assert small.view().ravel().tolist() == [4.0, 5.0]


# --------------------------------------------------------------------------- model swap


def test_set_model_between_two_points_keeps_history_and_uses_the_new_model() -> None:
    a = pca_model(seed=100)
    b = pca_model(seed=200)
    assert a.sha256 != b.sha256
    cas = _cascade(model=a, river_at=0.0, onnx_at=0.0)
    rows = _rows(200)
    _run(cas, rows[:150])
    view = cas._window.view().copy()
    cas.set_model(b)
    assert cas.model is b
    np.testing.assert_array_equal(cas._window.view(), view)
    o = cas.process(rows[150].tolist(), THR)
    win = rows[143:151]
    assert o.stage_scores[2] == b.score_window(win).score
    assert o.stage_scores[2] != a.score_window(win).score


def test_set_model_with_another_window_resizes_and_keeps_the_last_rows() -> None:
    cas = _cascade(model=pca_model(window=8), river_at=0.0, onnx_at=0.0)
    rows = _rows(200)
    _run(cas, rows[:150])
    wide = pca_model(window=12)
    cas.set_model(wide)
    assert cas._window.size == 12 and cas._window.count == 8
    out = _run(cas, rows[150:154])
    assert [o.stage_scores[2] is None for o in out] == [True, True, True, False]
    np.testing.assert_array_equal(cas._window.view(), rows[142:154])
    assert out[-1].stage_scores[2] == wide.score_window(rows[142:154]).score


def test_set_model_none_disables_stage_three() -> None:
    cas = _cascade(river_at=0.0, onnx_at=0.0)
    rows = _rows(150)
    _run(cas, rows[:120])
    cas.set_model(None)
    assert all(o.stage_scores[2] is None for o in _run(cas, rows[120:]))


# --------------------------------------------------------------------------- learning


def test_no_look_ahead_prefix_outcomes_are_identical() -> None:
    rows = _rows(360)
    short = _run(_cascade(river_at=0.2, onnx_at=0.3, sample_every=5), rows[:250])
    full = _run(_cascade(river_at=0.2, onnx_at=0.3, sample_every=5), rows)
    assert all(_same(a, b) for a, b in zip(short, full[:250], strict=True))


def test_river_does_not_learn_suspicious_points() -> None:
    """Not learnt: fused score at/above the alert threshold, or stage 1 at/above 0.5."""
    cas = _cascade(model=False, river_at=0.0)
    rows = _rows()
    learned = []
    for r in rows:
        before = cas.river._learned
        o = cas.process(r.tolist(), THR)
        s1 = o.stage_scores[0]
        suspicious = o.score >= THR or (s1 is not None and s1 >= 0.5)
        learned.append((suspicious, cas.river._learned - before))
    assert any(s for s, _ in learned) and any(not s for s, _ in learned)
    assert all(d == (0 if s else 1) for s, d in learned)


def test_learn_only_learns_without_scoring() -> None:
    cas = _cascade()
    rows = _rows(40)
    for r in rows:
        cas.learn_only(r.tolist())
    assert cas.counts["scored"] == [0, 0, 0]
    assert not cas.stat.warming_up
    assert all(cas.stat.ready) and cas.river._learned == 40
    np.testing.assert_array_equal(cas._window.view(), rows[-8:])


def test_state_round_trip_continues_identically() -> None:
    rows = _rows(400)
    model = pca_model()
    a = _cascade(model=model, river_at=0.2, onnx_at=0.3, sample_every=9)
    _run(a, rows[:200])
    b = _cascade(model=model, river_at=0.2, onnx_at=0.3, sample_every=9)
    b.load_state(pickle.loads(pickle.dumps(a.state_dict())))
    assert all(_same(x, y) for x, y in zip(_run(a, rows[200:]), _run(b, rows[200:]), strict=True))
    assert a.counts == b.counts


def test_load_state_rejects_other_channels_or_stages() -> None:
    a = _cascade()
    cfg = agent_config(("x", "y"))
    with pytest.raises(ValueError, match="channels"):
        StreamCascade(cfg.streams[0], cfg).load_state(a.state_dict())
    cfg = agent_config(zscore=ZScoreConfig(enabled=False))
    with pytest.raises(ValueError, match="stages"):
        StreamCascade(cfg.streams[0], cfg).load_state(a.state_dict())


def test_channels_follow_the_stream_config() -> None:
    assert _cascade().channels == IOT_CHANNELS
