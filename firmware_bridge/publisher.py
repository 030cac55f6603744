"""Points → batches → MQTT: the bridge's output side.

:class:`Batcher` is pure (points and ``now`` in, finished batches out); :class:`MqttPublisher`
is the thin paho adapter.

>>> from agent.types import Point
>>> b = Batcher(max_rows=2, max_age=1.0)
>>> b.add(Point(0.0, "s", {"a": 1.0}), now=0.0)
[]
>>> [(x.stream, x.channels, len(x.rows)) for x in b.add(Point(0.1, "s", {"a": 2.0}), now=0.1)]
[('s', ('a',), 2)]
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.types import Point
from firmware_bridge.batch import encode_batch, encode_batch_json

log = logging.getLogger(__name__)


@dataclass(slots=True)
class PendingBatch:
    """Rows of one stream with one channel set, collected since ``started``."""

    stream: str
    channels: tuple[str, ...]
    started: float
    rows: list[tuple[float, Sequence[float]]] = field(default_factory=list)

    def encode(self, fmt: Literal["binary", "json"] = "binary") -> bytes:
        if fmt == "json":
            return encode_batch_json(self.stream, self.channels, self.rows)
        return encode_batch(self.stream, self.channels, self.rows)


class Batcher:
    """Groups points per stream into batches of at most ``max_rows`` or ``max_age`` seconds.

    A point whose channels are a subset of the open batch's joins it (missing ones are NaN);
    any other channel set closes the batch and opens a new one.
    """

    def __init__(self, max_rows: int = 100, max_age: float = 1.0) -> None:
        if max_rows < 1 or max_age <= 0:
            raise ValueError("Batcher: need max_rows >= 1 and max_age > 0")
        self.max_rows = max_rows
        self.max_age = max_age
        self._open: dict[str, PendingBatch] = {}

    def add(self, point: Point, now: float) -> list[PendingBatch]:
        """Add one point; return the batches this closed."""
        done: list[PendingBatch] = []
        batch = self._open.get(point.stream)
        if batch is not None and not set(point.values) <= set(batch.channels):
            done.append(self._open.pop(point.stream))
            batch = None
        if batch is None:
            batch = PendingBatch(point.stream, tuple(point.values), now)
            self._open[point.stream] = batch
        batch.rows.append((point.ts, [point.values.get(c, math.nan) for c in batch.channels]))
        if len(batch.rows) >= self.max_rows:
            done.append(self._open.pop(point.stream))
        return done

    def due(self, now: float) -> list[PendingBatch]:
        """Close and return the batches older than ``max_age``."""
        old = [s for s, b in self._open.items() if now - b.started >= self.max_age]
        return [self._open.pop(s) for s in old]

    def flush(self) -> list[PendingBatch]:
        """Close and return every open batch."""
        done = list(self._open.values())
        self._open.clear()
        return done


class MqttPublisher:
    """Publishes batches with paho (QoS 1, queued while disconnected, reconnects itself)."""

    def __init__(
        self,
        host: str,
        port: int,
        topic: str,
        fmt: Literal["binary", "json"] = "binary",
        client_id: str = "",
        qos: int = 1,
    ) -> None:
        self.topic = topic
        self.fmt = fmt
        self.qos = qos
        self.published = 0
        self._inflight: list[mqtt.MQTTMessageInfo] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.enable_logger(log)
        self.client.connect_async(host, port)
        self.client.loop_start()

    def publish(self, batch: PendingBatch) -> None:
        topic = self.topic.replace("{stream}", batch.stream)
        info = self.client.publish(topic, batch.encode(self.fmt), qos=self.qos)
        self._inflight = [i for i in self._inflight if not i.is_published()]
        self._inflight.append(info)
        self.published += 1

    def close(self, timeout: float = 2.0) -> None:
        """Wait up to ``timeout`` seconds for unacknowledged messages, then disconnect."""
        deadline = time.monotonic() + timeout
        for info in self._inflight:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                info.wait_for_publish(remaining)
            except (ValueError, RuntimeError):  # never queued / no connection
                log.warning("MQTT message %s not delivered before shutdown", info.mid)
        self.client.disconnect()
        self.client.loop_stop()
