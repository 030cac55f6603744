"""The live agent keeps its long-lived objects out of the cyclic GC (``agent/live.py``,
``freeze_heap``; issue #9: full collections were tens-of-ms pauses on the detection
thread), and memory stays bounded: an engine replaced by ``config/desired`` is collected
even though it was frozen with the rest of the heap."""

from __future__ import annotations

import gc
import json
import warnings
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.live import LiveAgent
from agent.runtime import load_effective
from agent.transports.memory import MemoryTransport
from tests.agent.mqtt_agent import normal_then_spikes, point, root, wait, write_config

GW = "gw-heap"
SENSOR = f"sensors/{GW}/line1"


@pytest.fixture
def agent_and_transport(tmp_path: Path) -> Iterator[tuple[LiveAgent, MemoryTransport]]:
    path = write_config(tmp_path, 1883, GW)
    base, overlay, cfg = load_effective(path)
    t = MemoryTransport()
    agent = LiveAgent(str(path), base, overlay, cfg, boot="heap", transport=t)
    agent.start()
    try:
        yield agent, t
    finally:
        agent.shutdown(flush_timeout=1.0)
    assert gc.get_freeze_count() == 0  # shutdown hands the collector back


def _full_collection() -> None:
    """What the interpreter runs now and then by itself (earlier tests' leftovers that it
    finalises here are not this test's business)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def _frozen(obj: object) -> bool:
    return not any(o is obj for o in gc.get_objects())  # frozen objects are not listed


def test_heap_frozen_and_replaced_engine_collected(
        agent_and_transport: tuple[LiveAgent, MemoryTransport]) -> None:
    agent, t = agent_and_transport
    assert gc.get_freeze_count() > 0  # frozen at start
    frozen = _frozen(agent.engine)
    assert frozen  # later full collections skip it
    old = weakref.ref(agent.engine)  # held in reference cycles: only a collection frees it
    for ts, values in normal_then_spikes(30, spikes=(25,)):
        assert t.deliver(SENSOR, point(ts, **values))
    assert wait(lambda: agent.engine.points_in == 30)
    t.deliver(f"{root(GW)}/config/desired", b'{"version": "2", "alerts": {"clear_after": 3}}')
    assert wait(lambda: len(t.messages("/config/reported")) == 1)
    assert json.loads(t.messages("/config/reported")[0].payload)["code"] == 200
    assert agent.cfg.version == "2"

    def old_engine_freed() -> bool:
        _full_collection()
        return old() is None

    assert wait(old_engine_freed, timeout=5.0), "the replaced engine was never freed"
    new = agent.engine
    frozen = _frozen(new)
    assert frozen  # the new engine is frozen in its turn (after that full collection)
    before = new.points_in
    for ts, values in normal_then_spikes(10, t0=2000.0):  # detection goes on
        assert t.deliver(SENSOR, point(ts, **values))
    assert wait(lambda: new.points_in == before + 10)
