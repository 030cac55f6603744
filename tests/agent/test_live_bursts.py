"""The live worker scores a backlog of queued messages in bursts (one engine call each),
deciding exactly as one message at a time would; against a real Mosquitto."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from agent import live
from agent.engine import Engine
from agent.live import LiveAgent
from agent.types import Decision, Point
from tests.agent.mqtt_agent import live_agent, normal_then_spikes, root, wait, write_config

pytestmark = pytest.mark.network

Sent = dict[bytes, list[Point]]  # each published payload -> the points it carries


@contextmanager
def held(agent: LiveAgent) -> Iterator[None]:
    """Keep the worker busy in a control callable, so that published messages pile up in
    the queue; on exit it goes back to the queue and finds the backlog."""
    release, holding = threading.Event(), threading.Event()

    def hold() -> None:
        holding.set()
        release.wait(10.0)

    agent.ingest.put_control(hold)
    assert holding.wait(5.0), "the worker did not run the control callable"
    try:
        yield
    finally:
        release.set()


def body(points: list[Point]) -> bytes:
    """One JSON message: a point object, or a list of them for several."""
    docs = [{"ts": p.ts, "values": p.values} for p in points]
    return json.dumps(docs[0] if len(docs) == 1 else docs).encode()


def publish(p: Any, topic: str, points: list[Point], sent: Sent) -> None:
    payload = body(points)
    sent[payload] = points
    p.publish(topic, payload)


def backlog(agent: LiveAgent, n: int) -> list[tuple[str, bytes | Point, float]]:
    """The queue, once ``n`` messages are in it (its order is what the worker must keep;
    the broker's delivery order is not what is checked here)."""
    assert wait(lambda: len(agent.ingest.data) >= n), len(agent.ingest.data)
    queue = list(agent.ingest.data)
    assert len(queue) == n
    return queue


def points_of(queue: list[tuple[str, bytes | Point, float]], sent: Sent) -> list[Point]:
    """The sensor points of queued messages, in queue order."""
    out: list[Point] = []
    for _topic, payload, _t in queue:
        out += [payload] if isinstance(payload, Point) else sent.get(payload, [])
    return out


def one_by_one(agent: LiveAgent, points: list[Point]) -> list[Decision]:
    """The reference: a fresh engine of the same configuration, ``process`` per point."""
    engine = Engine(agent.cfg)
    return [engine.process(pt) for pt in points]


def collect(agent: LiveAgent) -> list[Decision]:
    got: list[Decision] = []
    agent.on_decision = got.append
    return got


def test_queued_single_point_messages_are_scored_in_bursts_as_one_by_one(
        tmp_path: Path, broker: Any, probe: Any) -> None:
    gw = "gw-burst"
    with live_agent(write_config(tmp_path, broker.port, gw)) as agent:
        p = probe([])
        got = collect(agent)
        sent: Sent = {}
        topic = f"sensors/{gw}/line1"
        series = normal_then_spikes(300, spikes=(120, 121, 122, 240))
        with held(agent):
            for i, (ts, values) in enumerate(series):
                publish(p, topic, [Point(ts, "line1", values)], sent)
                if i == 50:
                    p.publish(topic, b"{not json")
                if i == 150:
                    p.publish(topic, b'{"ts": true, "values": {"temp": 1.0, "vib": 1.0}}')
                if i == 200:  # routed by its topic, to a stream the config does not know
                    publish(p, f"sensors/{gw}/nosuchstream",
                            [Point(ts, "nosuchstream", {"a": 1.0})], sent)
            agent.ingest.put_data(f"sensors/{gw}/not/routed", b'{"ts": 1, "values": {}}')
            n_msgs = len(series) + 4
            points = points_of(backlog(agent, n_msgs), sent)
        assert len(points) == len(series) + 1
        assert wait(lambda: len(got) == len(points) and not agent.ingest.data), len(got)
        assert got == one_by_one(agent, points)
        assert any(d.alert for d in got)  # the spikes raised alerts inside bursts
        st = agent.stats()
        assert st["messages_in"] == n_msgs and st["points_in"] == len(points)
        for reason in ("invalid_json", "bad_timestamp", "unknown_stream", "unknown_topic"):
            assert st["rejected"].get(reason) == 1, (reason, st["rejected"])
        # the whole backlog in bursts of at most BURST_MAX_MESSAGES, nothing point by point
        assert st["queue"]["burst_max"] == live.BURST_MAX_MESSAGES
        assert st["queue"]["bursts"] == math.ceil(n_msgs / live.BURST_MAX_MESSAGES)
        assert st["latency_ms"]["n"] == len(series) + 1  # one sample per message with points
        assert agent.failed is None


def test_interleaved_streams_and_serial_points_keep_queue_order(
        tmp_path: Path, broker: Any, probe: Any) -> None:
    gw = "gw-burst-mix"
    with live_agent(write_config(tmp_path, broker.port, gw)) as agent:
        p = probe([])
        got = collect(agent)
        sent: Sent = {}
        line1 = [Point(ts, "line1", v) for ts, v in normal_then_spikes(260, spikes=(90, 200))]
        pump = [Point(ts, "pump", {"t": v["temp"] * 2.0, "rpm": 1500.0 + 10 * v["vib"]})
                for ts, v in normal_then_spikes(260, spikes=(60, 61, 150), t0=5000.0)]
        n_msgs = serial = 0
        with held(agent):
            i = j = k = 0
            while i < len(line1) or j < len(pump):
                k += 1
                if i < len(line1) and k % 3:  # irregular runs; some 20-point messages
                    size = 20 if k % 17 == 0 else 1
                    publish(p, f"sensors/{gw}/line1", line1[i:i + size], sent)
                    i += size
                elif j < len(pump):
                    size = 20 if k % 11 == 0 else 1
                    publish(p, f"sensors/{gw}/pump", pump[j:j + size], sent)
                    j += size
                n_msgs += 1
                if k % 97 == 0:  # a serial reader's decoded point joins the same queue
                    assert wait(lambda n=n_msgs: len(agent.ingest.data) == n)
                    ts = pump[j - 1].ts + 0.5 if j else 4999.5
                    agent.ingest.put_point(Point(ts, "pump", {"t": 40.0, "rpm": 1.0}))
                    n_msgs += 1
                    serial += 1
            points = points_of(backlog(agent, n_msgs), sent)
        assert serial and len(points) == len(line1) + len(pump) + serial
        assert wait(lambda: len(got) == len(points) and not agent.ingest.data), len(got)
        assert got == one_by_one(agent, points)
        assert {d.stream for d in got if d.alert} == {"line1", "pump"}
        st = agent.stats()["queue"]
        assert 1 < st["burst_max"] <= live.BURST_MAX_MESSAGES and st["bursts"] >= 2
        assert agent.failed is None


def test_an_event_message_inside_a_burst_keeps_its_place(
        tmp_path: Path, broker: Any, probe: Any) -> None:
    gw = "gw-burst-ev"
    cfg = write_config(tmp_path, broker.port, gw,
                       events={"sources": [{"id": "plc1", "sequence": False}]})
    with live_agent(cfg) as agent:
        events = agent.events
        assert events is not None
        p = probe([])
        seen: list[tuple[float, int]] = []  # (point ts, event messages handled by then)
        agent.on_decision = lambda d: seen.append((d.ts, events.messages_in))
        sent: Sent = {}
        series = [Point(ts, "line1", v) for ts, v in normal_then_spikes(40, spikes=())]
        with held(agent):
            for pt in series[:20]:
                publish(p, f"sensors/{gw}/line1", [pt], sent)
            p.publish(f"{root(gw)}/events/plc1", json.dumps({"ts": 1019.5, "event": "START"}))
            for pt in series[20:]:
                publish(p, f"sensors/{gw}/line1", [pt], sent)
            queue = backlog(agent, len(series) + 1)
        ev_at = [t for t, _pl, _t in queue].index(f"{root(gw)}/events/plc1")
        before, after = points_of(queue[:ev_at], sent), points_of(queue[ev_at + 1:], sent)
        assert before and after  # the broker delivered the event between sensor messages
        assert wait(lambda: len(seen) == len(series)), len(seen)
        # the points queued before the event were scored before it was handled, the rest after
        assert seen == [(pt.ts, 0) for pt in before] + [(pt.ts, 1) for pt in after]
        assert events.messages_in == 1 and events.engine.events_in == 1
        st = agent.stats()
        assert st["queue"]["burst_max"] == len(series) + 1 and st["queue"]["bursts"] == 1
        assert st["latency_ms"]["n"] == len(series) + 1  # the event message counts too
        assert agent.failed is None


def test_a_command_waits_for_one_burst_not_for_the_backlog(
        tmp_path: Path, broker: Any, probe: Any) -> None:
    gw = "gw-burst-ctl"
    with live_agent(write_config(tmp_path, broker.port, gw)) as agent:
        p = probe([])
        got: list[Decision] = []
        ran_at: list[int] = []  # decisions delivered when the command ran

        def on_decision(d: Decision) -> None:
            if not got:  # a command arrives while the first burst is being delivered
                agent.ingest.put_control(lambda: ran_at.append(len(got)))
            got.append(d)

        agent.on_decision = on_decision
        sent: Sent = {}
        n = live.BURST_MAX_MESSAGES + 60
        with held(agent):
            for ts, values in normal_then_spikes(n, spikes=()):
                publish(p, f"sensors/{gw}/line1", [Point(ts, "line1", values)], sent)
            backlog(agent, n)
        assert wait(lambda: len(got) == n and bool(ran_at))
        # after the whole first burst, before the rest of the backlog
        assert ran_at == [live.BURST_MAX_MESSAGES]
