"""Stream time, live (issue #7): ``stale`` / ``fresh`` events on a real broker, and a data
clock that jumps back a day in the middle of a stream sent over MQTT."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.agent.mqtt_agent import live_agent, normal_then_spikes, point, root, wait, write_config
from tests.conftest import MOSQUITTO, Broker, Probe

pytestmark = [
    pytest.mark.network,
    pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed"),
]
SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas"
STREAMS = [{"id": "line1", "channels": ["temp", "vib"], "stale_after_s": 1.0},
           {"id": "pump", "channels": ["t", "rpm"]}]  # pump: agent.stale_after_s


def _state_events(p: Probe) -> list[dict[str, Any]]:
    return [a for a in p.json("/alert/") if a["event"] in ("stale", "fresh")]


def test_stale_once_then_fresh_on_arrival_time(tmp_path: Path, broker: Broker) -> None:
    gw = "gw-stale"
    cfg = write_config(tmp_path, broker.port, gw, streams=STREAMS,
                       agent={"id": gw, "stats_interval_s": 0.5, "stale_after_s": 1.5})
    topic = f"sensors/{gw}/line1"
    schema = json.loads((SCHEMAS / "stream-state.json").read_text())
    p = Probe(broker.host, broker.port, [f"{root(gw)}/alert/#"])
    try:
        with live_agent(cfg) as agent:
            # line1 sends every 0.1 s for 2.5 s, with data timestamps from 1970: only the
            # arrival time counts. pump never sends: stale after 1.5 s, last_seen null.
            for i in range(25):
                p.publish(topic, point(1000.0 + i, temp=20.0, vib=1.0), qos=0)
                time.sleep(0.1)
            assert wait(lambda: agent.engine.accepted["line1"] == 25)
            assert [(e["event"], e["stream"]) for e in _state_events(p)] == [("stale", "pump")]
            pump = _state_events(p)[0]
            assert pump["last_seen"] is None and pump["stale_after_s"] == 1.5
            assert 1.5 <= pump["silent_s"] <= 2.5 and pump["ts"] <= time.time()
            t_last = time.time()

            # line1 goes silent: one stale event after ~1 s, and only one
            assert p.wait_for(lambda: len(_state_events(p)) == 2, 5)
            line1 = _state_events(p)[1]
            assert (line1["event"], line1["stream"]) == ("stale", "line1")
            assert 1.0 <= line1["silent_s"] <= 1.6
            assert t_last - 0.5 <= line1["last_seen"] <= t_last + 0.4
            time.sleep(1.5)
            assert len(_state_events(p)) == 2
            assert agent.stats()["freshness"] == {"stale": ["line1", "pump"],
                                                  "stale_events": 2, "fresh_events": 0}

            # a rejected point (duplicate timestamp) is no sign of life; an accepted one is
            p.publish(topic, point(1024.0, temp=20.0, vib=1.0))
            assert wait(lambda: agent.engine.rejects.counts["duplicate_timestamp"] == 1)
            time.sleep(0.6)
            assert len(_state_events(p)) == 2
            p.publish(topic, point(1025.0, temp=20.0, vib=1.0))
            assert p.wait_for(lambda: len(_state_events(p)) == 3, 5)
            fresh = _state_events(p)[2]
            assert (fresh["event"], fresh["stream"]) == ("fresh", "line1")
            assert fresh["silent_s"] >= 2.5
            assert agent.stats()["freshness"] == {"stale": ["pump"], "stale_events": 2,
                                                  "fresh_events": 1}
    finally:
        p.close()
    for ev in _state_events(p):
        jsonschema.validate(ev, schema)


def test_clock_jump_back_a_day_over_mqtt(tmp_path: Path, broker: Broker) -> None:
    """Points before and after a device clock reset: the late-but-close point is rejected,
    the jump is accepted and counted, and the spike after it still raises an alert."""
    gw = "gw-clock"
    cfg = write_config(tmp_path, broker.port, gw, agent={
        "id": gw, "stats_interval_s": 0.5, "clock_jump_s": 600.0})
    topic = f"sensors/{gw}/line1"
    before = normal_then_spikes(30, spikes=(25,), t0=100_000.0)
    after = normal_then_spikes(30, spikes=(20,), t0=100_000.0 - 86_400.0)
    p = Probe(broker.host, broker.port, [f"{root(gw)}/alert/#", f"{root(gw)}/stats"])
    try:
        with live_agent(cfg) as agent:
            for ts, values in before:
                p.publish(topic, point(ts, **values))
            p.publish(topic, point(100_000.0 + 29 - 300.0, temp=20.0, vib=1.0))  # 5 min late
            for ts, values in after:
                p.publish(topic, point(ts, **values))
            assert wait(lambda: agent.engine.points_in == 61)

            def raised() -> list[float]:
                return [a["ts"] for a in p.json("/alert/") if a["event"] == "raise"]

            assert p.wait_for(lambda: len(raised()) == 2, 10), p.json("/alert/")
            assert raised() == [100_025.0, 100_000.0 - 86_400.0 + 20]
            assert p.wait_for(lambda: any(s["clock_jumps"]["backward"] == 1
                                          for s in p.json("/stats")), 5)
            st = agent.stats()
            assert st["clock_jumps"] == {"backward": 1, "forward": 0}
            assert st["rejected"] == {"out_of_order": 1}
            assert agent.engine.accepted["line1"] == 60
    finally:
        p.close()
