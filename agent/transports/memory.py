"""An in-memory transport built from a plain function: the runtime without a broker.

Like httpx's ``MockTransport``: every message the agent publishes is handed to
``handler`` (a plain function, the "broker"), and the test plays the broker's other side
with :meth:`MemoryTransport.deliver` (a message for the agent), :meth:`connect` and
:meth:`disconnect` (an outage). QoS 1/2 publishes are acknowledged at once while
``ack`` is true, so the store-and-forward outbox drains as it would against a broker;
with ``ack = False`` messages stay in flight, as on a half-open connection.

>>> seen = []
>>> t = MemoryTransport(seen.append)
>>> t.start()                                   # connects at once (auto_connect)
>>> t.publish("edge/v1/s/g/status", b"online", 1, True)
1
>>> seen[0].topic, t.retained["edge/v1/s/g/status"].payload
('edge/v1/s/g/status', b'online')
>>> t.disconnect(); t.publish("x", b"", 1) is None
True
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from paho.mqtt.client import topic_matches_sub

from agent.transports.base import Transport


@dataclass(frozen=True, slots=True)
class Message:
    """One message the agent published."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    properties: Any = None


class MemoryTransport(Transport):
    """A broker connection in memory; ``handler`` sees every published :class:`Message`.

    Args:
        handler: called (on the publishing thread) with every message; may be None.
        ack: acknowledge QoS > 0 publishes at once (``on_ack``); settable at any time.
        v5: report MQTT 5 (response topics, correlation data) or 3.1.1.
        auto_connect: :meth:`start` connects; else the test calls :meth:`connect`.
    """

    def __init__(self, handler: Callable[[Message], None] | None = None, *, ack: bool = True,
                 v5: bool = True, auto_connect: bool = True) -> None:
        self.handler = handler
        self.ack = ack
        self.v5 = v5
        self.auto_connect = auto_connect
        self.generation = 0
        self.counts = {"connects": 0, "disconnects": 0}
        self.published: list[Message] = []
        self.retained: dict[str, Message] = {}
        self.subscribed: list[tuple[str, int]] = []
        self._lock = threading.Lock()
        self._mid = 0
        self._connected = threading.Event()

    # ------------------------------------------------------------ the test's side
    def connect(self) -> None:
        """The broker accepts the connection: subscriptions, then ``on_connected``."""
        with self._lock:
            self.generation += 1
            self.counts["connects"] += 1
            self.subscribed = list(self.subscriptions())
        self._connected.set()
        if self.on_connected is not None:
            self.on_connected(self.generation)

    def disconnect(self) -> None:
        """The connection drops (the Last Will would be published by a real broker)."""
        if self._connected.is_set():
            self.counts["disconnects"] += 1
            self._connected.clear()
            if self.will is not None:
                w = self.will
                self._record(Message(w.topic, w.payload, w.qos, w.retain))

    def deliver(self, topic: str, payload: bytes | str, properties: Any = None) -> bool:
        """A message from the broker; handed over only if a subscription matches."""
        if not self._connected.is_set():
            return False
        with self._lock:
            filters = [f for f, _q in self.subscribed]
        if not any(topic_matches_sub(f, topic) for f in filters):
            return False
        body = payload.encode() if isinstance(payload, str) else payload
        self.on_message(topic, body, properties)
        return True

    def messages(self, topic_part: str) -> list[Message]:
        """Published messages whose topic contains ``topic_part``."""
        with self._lock:
            return [m for m in self.published if topic_part in m.topic]

    # ------------------------------------------------------------ Transport
    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        if self.auto_connect:
            self.connect()

    def stop(self, timeout: float = 5.0) -> None:
        self._connected.clear()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def wait_ready(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False,
                properties: Any = None) -> int | None:
        if not self._connected.is_set():
            return None
        mid = self._record(Message(topic, payload, qos, retain, properties))
        if qos and self.ack and self.on_ack is not None:
            self.on_ack(self.generation, mid)
        return mid

    def publish_wait(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False,
                     timeout: float = 2.0) -> bool:
        return self.publish(topic, payload, qos, retain) is not None and (self.ack or not qos)

    def subscribe(self, filters: Sequence[tuple[str, int]]) -> None:
        with self._lock:
            self.subscribed += list(filters)

    def unsubscribe(self, filters: Sequence[str]) -> None:
        with self._lock:
            self.subscribed = [(f, q) for f, q in self.subscribed if f not in filters]

    def _record(self, msg: Message) -> int:
        with self._lock:
            self._mid = self._mid % 65535 + 1
            mid = self._mid
            self.published.append(msg)
            if msg.retain:
                if msg.payload:
                    self.retained[msg.topic] = msg
                else:
                    self.retained.pop(msg.topic, None)
        if self.handler is not None:
            self.handler(msg)
        return mid
