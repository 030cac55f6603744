"""Data timestamps per stream: duplicates, out-of-order points and clock jumps (pure engine).

Duplicates and small steps back are rejected with a counted reason; a jump of more than
``agent.clock_jump_s`` either way is accepted, counted and becomes the new anchor, so a
device clock reset does not silence a stream until data time catches up again.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from agent.config import AgentSection, AlertConfig, RiverConfig, StreamConfig, ZScoreConfig
from agent.engine import Engine
from agent.sinks import MemorySink
from agent.types import AlertEvent, Point
from tests.agent.helpers import agent_config

YEAR = 365 * 86400.0
GOOD = {"temperature": 20.0, "humidity": 50.0, "pressure": 1013.0}


def _engine(clock_jump_s: float = 3600.0, cooldown_s: float = 0.0,
            sink: MemorySink | None = None) -> Engine:
    cfg = agent_config(zscore=ZScoreConfig(window=20, min_points=10),
                       river=RiverConfig(enabled=False),
                       alerts=AlertConfig(k=1, n=1, clear_after=2, cooldown_s=cooldown_s))
    cfg = dataclasses.replace(cfg, agent=AgentSection(clock_jump_s=clock_jump_s))
    return Engine(cfg, None, [sink] if sink is not None else [])


_NOISE = np.random.default_rng(7).normal(0.0, 0.3, size=(200, 3))


def _value(i: int) -> dict[str, float]:
    """A quiet Gaussian signal (fixed seed)."""
    n = _NOISE[i]
    return {"temperature": 20.0 + n[0], "humidity": 50.0 + n[1], "pressure": 1013.0 + n[2]}


def _spike(i: int) -> dict[str, float]:
    return dict(_value(i), temperature=90.0)


def test_duplicates_and_small_steps_back_are_rejected_by_reason() -> None:
    eng = _engine()
    assert eng.process(Point(1000.0, "s", dict(GOOD))) is not None
    eng.process(Point(1000.0, "s", dict(GOOD)))          # duplicate
    eng.process(Point(999.0, "s", dict(GOOD)))           # one second back
    eng.process(Point(1000.0 - 3600.0, "s", dict(GOOD)))  # exactly clock_jump_s back: still late
    eng.process(Point(1001.0, "s", dict(GOOD)))          # next in order: fine
    st = eng.stats()
    assert st["rejected"] == {"duplicate_timestamp": 1, "out_of_order": 2}
    assert st["clock_jumps"] == {"backward": 0, "forward": 0}
    assert eng.accepted["s"] == 2


def test_backward_jump_is_accepted_counted_and_reanchored() -> None:
    eng = _engine(clock_jump_s=600.0)
    for i in range(5):
        eng.process(Point(50_000.0 + i, "s", _value(i)))
    eng.process(Point(1000.0, "s", _value(5)))   # clock reset: 49,004 s back
    eng.process(Point(1001.0, "s", _value(6)))   # continues from the new anchor
    eng.process(Point(1000.5, "s", _value(7)))   # out of order relative to the new anchor
    eng.process(Point(50_005.0, "s", _value(8)))  # the old timeline again: a forward jump
    st = eng.stats()
    assert st["clock_jumps"] == {"backward": 1, "forward": 1}
    assert st["rejected"] == {"out_of_order": 1}
    assert eng.accepted["s"] == 8


def test_a_point_a_year_ahead_does_not_lock_the_stream_out() -> None:
    """A single bogus timestamp (+1 year) must not make every later, correct point late."""
    eng = _engine()
    for i in range(20):
        eng.process(Point(1000.0 + i, "s", _value(i)))
    eng.process(Point(1020.0 + YEAR, "s", _value(20)))
    for i in range(21, 40):
        eng.process(Point(1000.0 + i, "s", _value(i)))
    st = eng.stats()
    assert st["clock_jumps"] == {"backward": 1, "forward": 1}
    assert st["points_rejected"] == 0
    assert eng.accepted["s"] == 40


def test_jumps_are_per_stream() -> None:
    cfg = agent_config(river=RiverConfig(enabled=False))
    cfg = dataclasses.replace(cfg, streams=(*cfg.streams, StreamConfig(
        "t", cfg.streams[0].channels)))
    eng = Engine(cfg)
    eng.process(Point(10_000.0, "s", dict(GOOD)))
    eng.process(Point(10.0, "t", dict(GOOD)))     # another stream: its own anchor, no jump
    eng.process(Point(10_001.0, "s", dict(GOOD)))
    eng.process(Point(11.0, "t", dict(GOOD)))
    assert eng.stats()["clock_jumps"] == {"backward": 0, "forward": 0}
    assert eng.stats()["points_rejected"] == 0


def test_detection_and_cooldown_continue_after_a_backward_jump() -> None:
    """Alert, clear, then the clock goes back a day: the cooldown keeps its remaining
    length on the new timeline (not a day more) and the next spike after it alerts."""
    sink = MemorySink()
    eng = _engine(cooldown_s=600.0, sink=sink)
    t = 100_000.0
    for i in range(30):
        eng.process(Point(t + i, "s", _spike(i) if i == 25 else _value(i)))
    raised = [a.ts for a in sink.alerts if a.event is AlertEvent.RAISE]
    assert raised == [t + 25]
    cleared = [a.ts for a in sink.alerts if a.event is AlertEvent.CLEAR]
    assert cleared == [t + 27]  # cooldown runs until t + 627 (598 s after the last point)
    back = t + 29 - 86_400.0
    decisions = []
    for j in range(1, 15):  # points 100 s apart on the new timeline
        i = 30 + j
        spike = j in (3, 12)  # 300 s after the jump: in cooldown; 1200 s: after it
        d = eng.process(Point(back + 100.0 * j, "s", _spike(i) if spike else _value(i)))
        decisions.append(d)
    assert eng.stats()["clock_jumps"] == {"backward": 1, "forward": 0}
    raised = [a.ts for a in sink.alerts if a.event is AlertEvent.RAISE]
    assert raised == [t + 25, back + 1200.0], raised
    assert all(math.isfinite(d.score) and 0.0 <= d.score <= 1.0 for d in decisions)
    assert decisions[2].score >= 0.5  # the spike in cooldown was scored, only not raised


def test_jump_counters_survive_a_live_reconfiguration() -> None:
    eng = _engine(clock_jump_s=60.0)
    eng.process(Point(1000.0, "s", dict(GOOD)))
    eng.process(Point(10.0, "s", dict(GOOD)))
    new = _engine(clock_jump_s=60.0)
    new.adopt(eng)
    new.process(Point(5.0, "s", dict(GOOD)))  # the adopted anchor is 10: out of order
    assert new.stats()["clock_jumps"]["backward"] == 1
    assert new.stats()["rejected"] == {"out_of_order": 1}
