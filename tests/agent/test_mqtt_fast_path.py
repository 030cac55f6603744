"""The transport's own decoding of plain QoS-0 PUBLISH packets, against a real Mosquitto
(``agent/transports/mqtt.py``, ``_ReadBufferedClient._handle_publish``; issue #9).

Plain messages (QoS 0, no properties) are decoded by the transport and reach the handler
with ``props=None``; everything else (QoS 1, MQTT 5 properties) keeps paho's path and its
properties. Both arrive whole and in order, on MQTT 5 and 3.1.1. The socket has
TCP_NODELAY, and an idle connection stays up on PINGRESPs alone (the watchdog's sign of
life no longer comes from paho's log lines)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.config_live import MqttConfig
from agent.transports.mqtt import MqttTransport

pytestmark = pytest.mark.network

Got = list[tuple[str, bytes, Any]]


def _transport(broker: Any, got: Got, n: int, done: threading.Event, protocol: str = "auto",
               keepalive_s: int = 60, watchdog_factor: float = 1.5) -> MqttTransport:
    def on_message(topic: str, payload: bytes, props: Any) -> None:
        got.append((topic, payload, props))
        if len(got) == n:
            done.set()

    cfg = MqttConfig(enabled=True, host=broker.host, port=broker.port, protocol=protocol,
                     keepalive_s=keepalive_s, watchdog_factor=watchdog_factor)
    return MqttTransport(cfg, f"fast-path-{time.time_ns()}", None, on_message,
                         lambda: [("fp/#", 1)])


def _plain(i: int) -> tuple[str, bytes]:
    topic = f"fp/{i % 5}/é{'x' * (i % 3)}"  # non-ASCII UTF-8 in the topic
    size = (0, 1, 30, 127, 128, 16_383, 16_384, 70_000)[i % 8]  # length-prefix boundaries
    return topic, bytes((i + k) % 256 for k in range(size))


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_plain_and_other_messages_arrive_whole_and_in_order(broker: Any, probe: Any,
                                                            protocol: str) -> None:
    got: Got = []
    done = threading.Event()
    n = 400
    t = _transport(broker, got, n, done, protocol)
    t.start()
    try:
        assert t.wait_ready(10)
        pub = probe([], v5=protocol == "5")
        sent: list[tuple[str, bytes, str]] = []  # topic, body, kind
        for i in range(n):
            topic, body = _plain(i)
            if i % 10 == 3:  # QoS 1: paho's path
                pub.publish(topic, body, qos=1)
                sent.append((topic, body, "qos1"))
            elif i % 10 == 7 and protocol == "5":  # QoS 0 with properties: paho's path
                props = Properties(PacketTypes.PUBLISH)
                props.ResponseTopic = f"fp/reply/{i}"
                props.CorrelationData = i.to_bytes(4, "big")
                pub.publish(topic, body, qos=0, properties=props)
                sent.append((topic, body, "props"))
            else:
                pub.publish(topic, body, qos=0)
                sent.append((topic, body, "plain"))
        assert done.wait(20), f"{len(got)} of {n} messages arrived"
        assert [(tp, b) for tp, b, _k in sent] == [(tp, b) for tp, b, _p in got]
        for i, ((_tp, _b, kind), (_t, _pl, props)) in enumerate(zip(sent, got, strict=True)):
            assert isinstance(got[i][1], bytes)
            if kind == "props":
                assert props.ResponseTopic == f"fp/reply/{i}"
                assert props.CorrelationData == i.to_bytes(4, "big")
            elif protocol == "5":
                # the transport's decoder hands on no properties; paho's gives an object
                assert (props is None) == (kind == "plain"), (i, kind, props)
        assert t.connected and t.counts["disconnects"] == 0
    finally:
        t.stop()


def test_socket_has_tcp_nodelay(broker: Any) -> None:
    got: Got = []
    t = _transport(broker, got, 1, threading.Event())
    t.start()
    try:
        assert t.wait_ready(10)
        client = t._client  # the live paho client: its socket is the one on the wire
        assert client is not None
        sock = client.socket()
        assert isinstance(sock, socket.socket)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        t.stop()


def test_idle_connection_lives_on_pingresps(broker: Any) -> None:
    """keepalive 5 s, watchdog after 1.2 x 5 = 6 s of silence: only a PINGRESP (about 5 s
    in) keeps the watchdog from dropping an idle connection before 8.5 s."""
    got: Got = []
    t = _transport(broker, got, 1, threading.Event(), keepalive_s=5, watchdog_factor=1.2)
    t.start()
    try:
        assert t.wait_ready(10)
        time.sleep(8.5)
        assert t.counts["watchdog_reconnects"] == 0
        assert t.counts["disconnects"] == 0 and t.counts["connects"] == 1
        assert t.connected
    finally:
        t.stop()
