"""Engine: validation and reject counting, sinks, stats, checkpoint save/restore."""

from __future__ import annotations

import functools
import json
import logging
import math
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import checkpoint as ckpt
from agent.config import AlertConfig, ZScoreConfig
from agent.engine import Engine
from agent.sinks import CallbackSink, MemorySink
from agent.synthetic import iot
from agent.types import AlertEvent, Point, Stage
from tests.agent.helpers import IOT_CHANNELS, agent_config, numbers, pca_model, points

REASONS = (
    "unknown_stream", "bad_timestamp", "out_of_order", "duplicate_timestamp",
    "unknown_channel", "non_numeric", "non_finite", "out_of_range", "no_valid_values",
    "missing_channel",
)
GOOD = {"temperature": 20.0, "humidity": 50.0, "pressure": 1013.0}
ALERTS = AlertConfig(k=1, n=1, clear_after=2)  # every hit raises: alerts in short streams


def _engine(model=None, sinks=(), **kw) -> Engine:
    return Engine(agent_config(**kw), model, sinks)


def _rows(n: int = 500, seed: int = 4) -> np.ndarray:
    return iot(n=n, seed=seed, warmup=120).values


def _reject_log(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "agent.input"]


# --------------------------------------------------------------------------- rejects


def _bad_points(t0: float = 0.0) -> list[tuple[tuple[str, ...], Point]]:
    """Points and the reasons each is counted under, in an order where each is unambiguous."""
    return [
        (("unknown_stream",), Point(t0 + 1.0, "nope", dict(GOOD))),
        (("bad_timestamp",), Point(math.nan, "s", dict(GOOD))),
        (("bad_timestamp",), Point(math.inf, "s", dict(GOOD))),
        (("bad_timestamp",), Point("12:00", "s", dict(GOOD))),  # type: ignore[arg-type]
        (("bad_timestamp",), Point(True, "s", dict(GOOD))),
        (("bad_timestamp",), Point(None, "s", dict(GOOD))),  # type: ignore[arg-type]
        ((), Point(t0 + 100.0, "s", dict(GOOD))),  # a valid point: sets the last timestamp
        (("out_of_order",), Point(t0 + 50.0, "s", dict(GOOD))),
        (("duplicate_timestamp",), Point(t0 + 100.0, "s", dict(GOOD))),
        (("unknown_channel",), Point(t0 + 101.0, "s", {**GOOD, "bogus": 1.0})),
        (("non_numeric",), Point(t0 + 102.0, "s", {**GOOD, "pressure": "1013"})),
        (("non_numeric",), Point(t0 + 103.0, "s", {**GOOD, "pressure": None})),
        (("non_numeric",), Point(t0 + 104.0, "s", {**GOOD, "pressure": True})),
        (("non_finite",), Point(t0 + 105.0, "s", {**GOOD, "pressure": math.nan})),
        (("non_finite",), Point(t0 + 106.0, "s", {**GOOD, "pressure": -math.inf})),
        (("out_of_range",), Point(t0 + 106.5, "s", {**GOOD, "pressure": -1e200})),
        (("out_of_range",), Point(t0 + 106.7, "s", {**GOOD, "pressure": 10**120})),
        (("non_finite", "no_valid_values"), Point(t0 + 107.0, "s", {"temperature": math.nan})),
        (("no_valid_values",), Point(t0 + 108.0, "s", {})),
        (("missing_channel",), Point(t0 + 109.0, "s", {"temperature": 20.0})),
    ]


def test_every_reject_reason_is_counted_logged_once_and_never_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    eng = _engine()
    expected: dict[str, int] = dict.fromkeys(REASONS, 0)
    with caplog.at_level(logging.WARNING, logger="agent.input"):
        for t0 in (0.0, 1000.0, 2000.0):  # every reason three times
            for reasons, p in _bad_points(t0):
                d = eng.process(p)
                if reasons:
                    assert d.stage == Stage.NONE or "missing_channel" in reasons or (
                        set(reasons) <= {"unknown_channel", "non_numeric", "non_finite",
                                         "out_of_range"})
                for r in reasons:
                    expected[r] += 1
    stats = eng.stats()
    assert stats["rejected"] == expected
    assert stats["points_rejected"] == sum(expected.values())
    assert stats["points_in"] == 3 * len(_bad_points())
    log = _reject_log(caplog)
    for reason in REASONS:
        assert sum(f"({reason})" in m for m in log) == 1, reason
    assert len(log) == len(REASONS)


def test_points_with_some_bad_channels_are_still_scored() -> None:
    eng = _engine()
    for p in points(_rows(60), IOT_CHANNELS):
        eng.process(p)
    d = eng.process(Point(5000.0, "s", {"temperature": 20.0, "humidity": "x", "pressure": 1e3,
                                       "bogus": 1.0}))
    assert d.stage != Stage.NONE
    assert eng.cascade("s").counts["imputed"] == 1
    # the timestamp was accepted
    assert eng.process(Point(5000.0, "s", dict(GOOD))).stage == Stage.NONE
    assert eng.stats()["rejected"]["duplicate_timestamp"] == 1


def test_missing_channel_is_counted_even_with_an_unknown_key() -> None:
    eng = _engine()
    eng.process(Point(1.0, "s", {"temperature": 20.0, "humidity": 50.0, "bogus": 1.0}))
    assert eng.stats()["rejected"] == {"unknown_channel": 1, "missing_channel": 1}


@pytest.mark.parametrize("where", ["value", "timestamp"])
def test_huge_integers_are_rejected_not_raised(where: str) -> None:
    eng = _engine()
    huge = 10**400
    p = (Point(1.0, "s", {**GOOD, "pressure": huge}) if where == "value"
         else Point(huge, "s", dict(GOOD)))  # type: ignore[arg-type]
    eng.process(p)
    assert eng.stats()["points_rejected"] >= 1


def test_huge_finite_values_do_not_break_the_engine() -> None:
    eng = _engine(zscore=ZScoreConfig(window=50, min_points=10, rebaseline_after=5))
    for p in points(_rows(100), IOT_CHANNELS):
        eng.process(p)
    for i in range(6):  # a glitching sensor: a level "shift" to 1e308
        eng.process(Point(2000.0 + i, "s", {**GOOD, "pressure": 1e308}))
    for p in points(_rows(50, seed=9), IOT_CHANNELS, t0=3000.0):
        d = eng.process(p)
        assert math.isfinite(d.score)
    assert all(math.isfinite(v) for v in numbers(eng.cascade("s").stat.state_dict()))


def test_numpy_scalars_are_numbers() -> None:
    eng = _engine()
    eng.process(Point(np.int64(1), "s", {k: np.float32(v) for k, v in GOOD.items()}))
    assert eng.stats()["rejected"] == {}


# --------------------------------------------------------------------------- hypothesis


@functools.lru_cache(maxsize=1)
def _warm_engine_bytes() -> bytes:
    eng = _engine(river=None)
    for p in points(_rows(400, seed=5), IOT_CHANNELS):
        eng.process(p)
    assert not eng.cascade("s").river.warming_up
    return pickle.dumps(eng)


_junk_value = st.one_of(
    st.floats(min_value=-1e6, max_value=1e6),
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0]),
    st.integers(min_value=-10**9, max_value=10**9),
    st.text(max_size=4), st.none(), st.booleans(), st.binary(max_size=3),
    st.lists(st.floats(), max_size=2),
)
_ts = st.one_of(
    st.floats(min_value=-1e9, max_value=1.9e9),
    st.sampled_from([math.nan, math.inf, -math.inf]),
    st.integers(min_value=-10**9, max_value=1_900_000_000),
    st.text(max_size=3), st.none(), st.booleans(),
)
_name = st.one_of(st.sampled_from(IOT_CHANNELS), st.text(max_size=6), st.integers(0, 3))
_point = st.builds(
    Point,
    ts=_ts,
    stream=st.one_of(st.just("s"), st.text(max_size=3)),
    values=st.dictionaries(_name, _junk_value, max_size=5),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(junk=st.lists(_point, max_size=20))
def test_arbitrary_input_never_raises_nor_poisons_later_scores(junk: list[Point]) -> None:
    eng: Engine = pickle.loads(_warm_engine_bytes())
    logging.getLogger("agent.input").disabled = True
    try:
        for p in junk:
            eng.process(p)
            eng.learn_only(p)
    finally:
        logging.getLogger("agent.input").disabled = False
    stats = eng.stats()
    assert stats["points_in"] >= 2 * len(junk)
    for p in points(_rows(10, seed=6), IOT_CHANNELS, t0=2e9):
        d = eng.process(p)
        assert d.stage != Stage.NONE
        assert math.isfinite(d.score) and 0.0 <= d.score <= 1.0
    cas = eng.cascade("s")
    assert all(math.isfinite(v) for v in numbers(cas.stat.state_dict()))
    assert all(math.isfinite(v) for v in numbers(cas._last))


# --------------------------------------------------------------------------- sinks & stats


def test_alerts_go_to_sinks_and_a_raising_sink_does_not_stop_processing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = []

    def broken(alert) -> None:
        calls.append(alert)
        raise RuntimeError("sink down")

    mem = MemorySink()
    eng = _engine(sinks=[CallbackSink(broken), mem], alerts=ALERTS)
    rows = _rows()
    with caplog.at_level(logging.ERROR, logger="agent.engine"):
        decisions = [eng.process(p) for p in points(rows, IOT_CHANNELS)]
    raises = [a for a in mem.alerts if a.event is AlertEvent.RAISE]
    assert len(raises) >= 5
    assert len(calls) == len(mem.alerts)  # the broken sink was called for every alert too
    assert [a.seq for a in mem.alerts] == list(range(1, len(mem.alerts) + 1))
    assert sum(d.alert for d in decisions) >= len(raises)
    errors = [r for r in caplog.records if "alert sink" in r.getMessage()]
    assert len(errors) == len(mem.alerts)
    assert eng.stats()["alerts"]["medium"] + eng.stats()["alerts"].get("high", 0) + eng.stats()[
        "alerts"].get("critical", 0) == len(raises)


def test_stats_reports_stage_counts_and_warm_up() -> None:
    eng = _engine(model=pca_model())
    s0 = eng.stats()
    assert s0["streams"]["s"]["warming_up"] is True
    assert s0["provider"] == "CPUExecutionProvider"
    for p in points(_rows(300), IOT_CHANNELS):
        eng.process(p)
    s = eng.stats()
    assert s["points_in"] == 300 and s["points_rejected"] == 0
    assert s["streams"]["s"]["warming_up"] is False
    assert s["streams"]["s"]["stage3_model"] is True
    cas = eng.cascade("s")
    assert s["scored"] == {"stage1": cas.counts["scored"][0], "stage2": cas.counts["scored"][1],
                           "stage3": cas.counts["scored"][2]}
    assert s["scored"]["stage1"] == 300 - 10  # min_points = 10
    assert 0 <= s["escalation_rate"]["stage2"] <= 1
    json.dumps(s)  # stats are JSON-serialisable


def test_model_only_attaches_to_streams_it_fits() -> None:
    eng = _engine(model=pca_model(), channels=("temperature", "pressure"))
    assert eng.cascade("s").model is None
    assert eng.set_model(pca_model()) == []


# --------------------------------------------------------------------------- checkpoint


def _run(eng: Engine, pts: list[Point]) -> list[tuple]:
    return [(d.ts, d.score, d.stage, d.alert, d.escalated) for d in map(eng.process, pts)]


def test_checkpoint_save_restore_continues_identically(tmp_path: Path) -> None:
    model = pca_model()
    pts = points(_rows(600), IOT_CHANNELS)
    kw = {"escalation": None, "alerts": ALERTS}
    mem_a, mem_b = MemorySink(), MemorySink()
    a = _engine(model=model, sinks=[mem_a], **kw)
    _run(a, pts[:300])
    path = tmp_path / "state" / "agent.ckpt"
    assert a.save(path) == path.stat().st_size
    n_before = len(mem_a.alerts)

    b = _engine(model=pca_model(), sinks=[mem_b], **kw)
    assert b.restore(path) is True
    ra, rb = _run(a, pts[300:]), _run(b, pts[300:])
    assert ra == rb
    after = [x.to_dict() for x in mem_a.alerts[n_before:]]
    assert after and after == [x.to_dict() for x in mem_b.alerts]
    assert any(r[2] == Stage.ONNX for r in rb)  # stage 3 ran after the restore


def test_restore_of_a_missing_file_is_false_without_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        assert _engine().restore(tmp_path / "none.ckpt") is False
    assert not caplog.records


def _rewrite_header(path: Path, **changes: object) -> None:
    blob = path.read_bytes()
    n = len(ckpt.MAGIC)
    (hlen,) = struct.unpack(">I", blob[n : n + 4])
    header = json.loads(blob[n + 4 : n + 4 + hlen])
    header.update(changes)
    new = json.dumps(header, sort_keys=True).encode()
    path.write_bytes(ckpt.MAGIC + struct.pack(">I", len(new)) + new + blob[n + 4 + hlen :])


def _corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_corrupt, "payload corrupt"),
        (lambda p: p.write_bytes(b"garbage" * 10), "bad magic"),
        (lambda p: p.write_bytes(p.read_bytes()[:100]), "corrupt"),
        (lambda p: _rewrite_header(p, agent_version="0.0.0-other"), "written by agent"),
        (lambda p: _rewrite_header(p, fingerprint="0" * 64), "configuration changed"),
    ],
    ids=["flipped-byte", "garbage", "truncated", "other-version", "other-config"],
)
def test_bad_checkpoint_is_rejected_with_a_warning_and_fresh_state(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage, reason: str
) -> None:
    pts = points(_rows(300), IOT_CHANNELS)
    a = _engine()
    _run(a, pts[:200])
    path = tmp_path / "agent.ckpt"
    a.save(path)
    damage(path)

    b = _engine()
    _run(b, pts[:50])  # some state to lose
    with caplog.at_level(logging.WARNING, logger="agent.engine"):
        assert b.restore(path) is False
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and reason in warnings[0].getMessage()
    # Fresh state: behaves exactly like a brand-new engine.
    fresh = _engine()
    assert b.stats()["streams"] == fresh.stats()["streams"]
    assert _run(b, pts[200:]) == _run(fresh, pts[200:])


def test_checkpoint_from_a_changed_config_is_rejected(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a = _engine()
    _run(a, points(_rows(100), IOT_CHANNELS))
    path = tmp_path / "agent.ckpt"
    a.save(path)
    b = _engine(zscore=ZScoreConfig(window=50, min_points=10, threshold=3.5))
    with caplog.at_level(logging.WARNING, logger="agent.engine"):
        assert b.restore(path) is False
    assert "configuration changed" in caplog.records[-1].getMessage()
    assert b.cascade("s").stat.warming_up


def test_checkpoint_from_another_agent_version_is_rejected(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = _engine()
    _run(a, points(_rows(100), IOT_CHANNELS))
    path = tmp_path / "agent.ckpt"
    monkeypatch.setattr(ckpt, "__version__", "99.0.0")  # written by a newer agent
    a.save(path)
    monkeypatch.undo()
    b = _engine()
    with caplog.at_level(logging.WARNING, logger="agent.engine"):
        assert b.restore(path) is False
    assert "99.0.0" in caplog.records[-1].getMessage()
    assert b.cascade("s").stat.warming_up
