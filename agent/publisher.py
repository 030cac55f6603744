"""Draining the store-and-forward outbox to the broker, in order, deleting on PUBACK.

:class:`Publisher` runs one thread. While the transport is connected it keeps up to
``window`` messages in flight (sent, not yet acknowledged), oldest first; a PUBACK deletes
the row. When the connection drops, everything in flight is forgotten and re-sent from
the oldest pending row on the next connection (at-least-once; the stable ``msg_id``
lets consumers drop duplicates). :class:`StoreSink` is the alert sink that feeds it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from agent.store import Store
from agent.types import Alert

log = logging.getLogger(__name__)


class Link(Protocol):
    """The part of a transport the publisher needs (see :mod:`agent.transports.mqtt`)."""

    @property
    def connected(self) -> bool: ...
    generation: int

    def publish(self, topic: str, payload: bytes, qos: int = 0,
                retain: bool = False) -> int | None: ...


class Publisher:
    """Moves rows from a :class:`Store` to a :class:`Link`, in order, acknowledged."""

    def __init__(self, store: Store, link: Link, window: int = 20) -> None:
        self.store = store
        self.link = link
        self.window = window
        self.published = 0
        self._acks: deque[tuple[int, int]] = deque()
        self._inflight: dict[int, int] = {}
        self._gen = -1
        self._cursor = 0
        self._spill_sent: set[int] = set()  # in-memory rows (negative ids) in flight
        self._lock = threading.Lock()  # one drain step at a time (outbox or detection thread)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="outbox", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5.0)

    def notify(self) -> None:
        """Something changed (a new row, a connection): look again."""
        self._wake.set()

    def send_now(self) -> None:
        """A row was just committed: publish it from the calling thread, not after a hop to
        the outbox thread (which, while detection keeps the GIL busy, costs milliseconds).
        If the outbox thread is mid-step, it is woken to look again instead."""
        if not self._lock.acquire(blocking=False):
            self._wake.set()
            return
        try:
            self._step()
        except Exception:  # the caller is detection: never let the outbox stop it
            log.exception("outbox: immediate send failed (the outbox thread retries)")
            self._wake.set()
        finally:
            self._lock.release()

    def on_ack(self, generation: int, mid: int) -> None:
        """PUBACK callback; runs on the network thread, so it only records."""
        self._acks.append((generation, mid))
        self._wake.set()

    def wait_empty(self, timeout: float) -> bool:
        """Block until the outbox is empty (everything acknowledged) or ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.store.backlog() > 0:
            if time.monotonic() > deadline:
                return False
            self._wake.set()
            time.sleep(0.02)
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            try:
                with self._lock:
                    self._step()
            except Exception:  # supervisor loop of this thread: log, keep draining
                log.exception("outbox: drain step failed")
                time.sleep(0.5)

    def _step(self) -> None:
        self.store.retry()  # degraded store (disk full, read-only): try a write now and then
        if not self.link.connected:
            self._inflight.clear()
            self._gen = -1
            return
        gen = self.link.generation
        if gen != self._gen:  # a new connection: resend everything not acknowledged
            self._inflight.clear()
            self._spill_sent.clear()
            self._cursor = 0
            self._gen = gen
        done = []
        while self._acks:
            g, mid = self._acks.popleft()
            row = self._inflight.pop(mid, None) if g == gen else None
            if row is not None:
                done.append(row)
                self._spill_sent.discard(row)
        self.store.ack(done)
        self.published += len(done)
        while len(self._inflight) < self.window:
            room = self.window - len(self._inflight)
            rows = (self.store.pending(after=self._cursor, limit=room)
                    or self.store.spilled(self._spill_sent, limit=room))
            if not rows:
                return
            for r in rows:
                mid = self.link.publish(r.topic, r.encode(), qos=r.qos, retain=r.retain)
                if mid is None:
                    return
                self.store.mark_sent([r.id])
                if r.id > 0:
                    self._cursor = r.id
                else:
                    self._spill_sent.add(r.id)
                if r.qos == 0:
                    self.store.ack([r.id])
                else:
                    self._inflight[mid] = r.id


class StoreSink:
    """Alert sink: every alert event goes into the outbox first (durable), then upstream."""

    def __init__(self, store: Store, publisher: Publisher | None,
                 topic_for: Callable[[str], str], connected: Callable[[], bool],
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.publisher = publisher
        self.topic_for = topic_for
        self.connected = connected
        self.clock = clock
        self.emitted = 0

    def emit(self, alert: Alert) -> None:
        self.store.put(self.topic_for(alert.stream), alert.to_dict(), now=self.clock(), qos=1,
                       held=not self.connected())
        self.emitted += 1
        if self.publisher is not None:
            self.publisher.send_now()

    def close(self) -> None:
        pass


class LatencyWindow:
    """The last ``size`` latencies (seconds), for p50/p99 in stats."""

    def __init__(self, size: int = 10_000) -> None:
        self._buf = np.zeros(size)
        self._n = 0

    def add(self, seconds: float) -> None:
        self._buf[self._n % len(self._buf)] = seconds
        self._n += 1

    def summary_ms(self) -> dict[str, Any]:
        n = min(self._n, len(self._buf))
        if n == 0:
            return {"p50": None, "p99": None, "max": None, "n": 0}
        p50, p99 = np.percentile(self._buf[:n], [50, 99]) * 1000.0
        return {"p50": round(float(p50), 3), "p99": round(float(p99), 3),
                "max": round(float(self._buf[:n].max() * 1000.0), 3), "n": self._n}
