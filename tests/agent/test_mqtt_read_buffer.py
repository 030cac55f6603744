"""The transport's chunked socket reads against a real Mosquitto: every message of a burst
arrives whole, in order and promptly, across chunk boundaries and for messages larger
than one chunk (``agent/transports/mqtt.py``, ``_ReadBufferedClient``)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from agent.config_live import MqttConfig
from agent.transports.mqtt import MqttTransport

pytestmark = pytest.mark.network


def _body(i: int) -> bytes:
    size = 200_000 if i % 997 == 500 else 1 + (i * 37) % 400  # a few bodies > one 64 KiB read
    return (f"{i}:".encode() + bytes((i + k) % 251 for k in range(size)))


def test_burst_arrives_whole_in_order_and_promptly(broker: Any, probe: Any) -> None:
    got: list[tuple[str, bytes]] = []
    done = threading.Event()
    n = 3000

    def on_message(topic: str, payload: bytes, _props: Any) -> None:
        got.append((topic, payload))
        if len(got) == n:
            done.set()

    cfg = MqttConfig(enabled=True, host=broker.host, port=broker.port, keepalive_s=60)
    t = MqttTransport(cfg, "read-buffer-test", None, on_message, lambda: [("rb/#", 0)])
    t.start()
    try:
        assert t.wait_ready(10)
        pub = probe([])
        sent = [(f"rb/{i % 7}", _body(i)) for i in range(n)]
        for topic, body in sent:
            pub.publish(topic, body, qos=0)
        t_sent = time.monotonic()
        # a message left in the read buffer would wait for the next keepalive (60 s)
        assert done.wait(15), f"{len(got)} of {n} messages arrived"
        assert time.monotonic() - t_sent < 15
        assert got == sent
        assert t.connected and t.counts["disconnects"] == 0
    finally:
        t.stop()
