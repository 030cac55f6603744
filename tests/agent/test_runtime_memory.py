"""The live runtime on the in-memory transport twin: no broker, real everything else.

:class:`~agent.transports.memory.MemoryTransport` plays the broker from plain functions
(STYLE.md section 4), so store-and-forward, outages, half-open connections, the control
plane and the overflow policy are checked in milliseconds. The same behaviours are
checked against a real Mosquitto in ``test_runtime_mqtt.py`` and ``test_mqtt_resilience.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.live import LiveAgent
from agent.runtime import load_effective
from agent.transports.base import NullTransport
from agent.transports.memory import MemoryTransport, Message
from agent.types import Point
from tests.agent.mqtt_agent import normal_then_spikes, point, root, wait, write_config

GW = "gw-mem"
SENSOR = f"sensors/{GW}/line1"


@contextmanager
def memory_agent(tmp_path: Path, transport: MemoryTransport, start: bool = True,
                 **over: Any) -> Iterator[LiveAgent]:
    path = write_config(tmp_path, 1883, GW, **over)
    base, overlay, cfg = load_effective(path)
    agent = LiveAgent(str(path), base, overlay, cfg, boot="mem", transport=transport)
    if start:
        agent.start()
    try:
        yield agent
    finally:
        agent.shutdown(flush_timeout=1.0)


def alerts(t: MemoryTransport) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in t.messages("/alert/")]


def test_transport_contract_and_twin_basics() -> None:
    seen: list[Message] = []
    acks: list[tuple[int, int]] = []
    t = MemoryTransport(seen.append, auto_connect=False)
    t.on_ack = lambda gen, mid: acks.append((gen, mid))
    t.bind(None, lambda *a: None, lambda: [("sensors/#", 0)])
    with t:
        assert not t.connected and t.publish("a", b"x", 1) is None
        t.connect()
        assert t.publish("a", b"x", 1) == 1 and acks == [(1, 1)]
        assert t.publish("b", b"y", 0) == 2 and acks == [(1, 1)]  # QoS 0: no PUBACK
        assert t.deliver("sensors/x", b"1") and not t.deliver("other/x", b"1")
    assert [m.topic for m in seen] == ["a", "b"] and not t.connected
    null = NullTransport()
    assert not null.wait_ready(0.01) and null.publish("a", b"x", 1) is None


def test_alerts_status_and_birth_flow_without_a_broker(tmp_path: Path) -> None:
    t = MemoryTransport()
    with memory_agent(tmp_path, t) as agent:
        for ts, values in normal_then_spikes(40, spikes=(25,)):
            assert t.deliver(SENSOR, point(ts, **values))
        assert wait(lambda: len(alerts(t)) >= 2)
        raise_, clear = alerts(t)[:2]
        assert (raise_["event"], clear["event"], raise_["ts"]) == ("raise", "clear", 1025.0)
        assert wait(lambda: agent.store.backlog() == 0)  # acknowledged -> deleted
        status = json.loads(t.retained[f"{root(GW)}/status"].payload)
        birth = json.loads(t.retained[f"{root(GW)}/birth"].payload)
        assert status["state"] == "online" and birth["protocol"] == "5"
        assert (f"{root(GW)}/cmd/+", 1) in t.subscribed
    assert json.loads(t.retained[f"{root(GW)}/status"].payload)["reason"] == "shutdown"


def test_outage_holds_alerts_and_replays_them_in_order(tmp_path: Path) -> None:
    t = MemoryTransport()
    with memory_agent(tmp_path, t) as agent:
        t.disconnect()
        # the Last Will a real broker would publish
        assert json.loads(t.retained[f"{root(GW)}/status"].payload)["reason"] == "lwt"
        for ts, values in normal_then_spikes(80, spikes=(30, 60)):
            agent.ingest.put_data(SENSOR, point(ts, **values))  # a local source keeps going
        assert wait(lambda: agent.engine.points_in == 80)
        assert agent.store.backlog() == 4 and alerts(t) == []
        t.connect()
        assert wait(lambda: len(alerts(t)) == 4)
        got = alerts(t)
        assert [a["event"] for a in got] == ["raise", "clear", "raise", "clear"]
        assert [a["ts"] for a in got if a["event"] == "raise"] == [1030.0, 1060.0]
        assert all(a["replayed"] for a in got)
        assert json.loads(t.retained[f"{root(GW)}/status"].payload)["state"] == "online"
        assert wait(lambda: agent.store.backlog() == 0)


def test_unacknowledged_alerts_survive_a_half_open_connection(tmp_path: Path) -> None:
    """Sent but never acknowledged (what a frozen broker does): re-sent after reconnect."""
    t = MemoryTransport(ack=False)
    with memory_agent(tmp_path, t) as agent:
        for ts, values in normal_then_spikes(40, spikes=(25,)):
            agent.ingest.put_data(SENSOR, point(ts, **values))
        assert wait(lambda: len(alerts(t)) == 2)
        assert agent.store.backlog() == 2  # in flight, kept until a PUBACK
        first = alerts(t)
        t.disconnect()  # what the watchdog does
        t.ack = True
        t.connect()
        assert wait(lambda: agent.store.backlog() == 0)
        again = alerts(t)[2:]
        assert [a["msg_id"] for a in again] == [a["msg_id"] for a in first]
        assert all(a["replayed"] for a in again)


def test_commands_and_config_desired_on_the_twin(tmp_path: Path) -> None:
    t = MemoryTransport()
    with memory_agent(tmp_path, t) as agent:
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = "reply/me"
        props.CorrelationData = b"c1"
        assert t.deliver(f"{root(GW)}/cmd/ping", b'{"id": 7}', props)
        assert wait(lambda: bool(t.messages("reply/me")))
        reply = t.messages("reply/me")[0]
        assert json.loads(reply.payload)["code"] == 200
        assert reply.properties.CorrelationData == b"c1"
        t.deliver(f"{root(GW)}/config/desired", b'{"version": "2", "alerts": {"k": 99}}')
        t.deliver(f"{root(GW)}/config/desired", b'{"version": "3", "serial": []}')
        t.deliver(f"{root(GW)}/config/desired",
                  b'{"version": "4", "alerts": {"threshold": 0.7, "clear_threshold": 0.6}}')
        assert wait(lambda: len(t.messages("/config/reported")) == 3)
        reported = [json.loads(m.payload) for m in t.messages("/config/reported")]
        assert [r["code"] for r in reported] == [400, 200, 200]
        assert "alerts.k" in reported[0]["error"]
        assert agent.cfg.version == "4" and agent.cfg.alerts.threshold == 0.7
        t.deliver(f"{root(GW)}/config/desired",
                  b'{"version": "5", "serial": [{"port": "/dev/ttyX", "stream": "line1"}]}')
        assert wait(lambda: len(t.messages("/config/reported")) == 4)
        refused = json.loads(t.messages("/config/reported")[-1].payload)
        assert refused["code"] == 400 and "serial" in refused["error"]
        assert "restart" in refused["error"] and agent.serial == []


def test_queue_overflow_drops_the_oldest_and_counts(tmp_path: Path) -> None:
    t = MemoryTransport()
    with memory_agent(tmp_path, t, start=False, mqtt={"queue_size": 10}) as agent:
        for i in range(15):  # the worker is not running yet: the queue fills up
            agent.ingest.put_data(SENSOR, point(1000.0 + i, temp=20.0, vib=1.0))
        for i in range(3):  # serial points share the queue and the policy
            agent.ingest.put_point(Point(1015.0 + i, "line1", {"temp": 20.0, "vib": 1.0}))
        assert agent.ingest.dropped == 8 and len(agent.ingest.data) == 10
        seen: list[float] = []
        agent.on_decision = lambda d: seen.append(d.ts)
        agent.start()
        assert wait(lambda: agent.engine.points_in == 10)
        st = agent.stats()
        assert st["queue"]["dropped"] == 8 and st["points_rejected"] == 0
        assert seen == [1000.0 + i for i in range(8, 18)]  # the freshest ten
