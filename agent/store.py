"""Store-and-forward: a disk-backed FIFO of outgoing messages (SQLite, WAL mode).

Everything that must reach the broker (alert events, clear events, stats snapshots if
configured) is written here first and deleted only when the broker acknowledged it
(QoS 1 PUBACK). It survives broker outages, agent restarts and ``kill -9``: every put is
committed before :meth:`Store.put` returns (``synchronous=NORMAL`` in WAL mode keeps the
database consistent on a crash; a power loss may lose the last commits, never corrupt).

Bounded in bytes and in age: when full, the *oldest* messages are dropped and counted
(``dropped_full`` / ``dropped_age``, persisted), so an outage of any length cannot fill
the disk. Each message gets a stable ``msg_id`` at put time (``{boot}-{row}``) so
consumers can de-duplicate the at-least-once deliveries.

>>> s = Store(":memory:", max_bytes=1000, boot="b1")
>>> m = s.put("t/a", {"x": 1}, now=10.0)
>>> [(r.topic, r.payload["x"], r.msg_id) for r in s.pending()]
[('t/a', 1, 'b1-1')]
>>> s.ack([m]); s.backlog()
0
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    created REAL NOT NULL,
    boot TEXT NOT NULL,
    held INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    size INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class Stored:
    """One message waiting for its PUBACK."""

    id: int
    topic: str
    payload: dict[str, Any]
    qos: int
    retain: bool
    created: float
    msg_id: str
    replayed: bool

    def encode(self) -> bytes:
        body = dict(self.payload, msg_id=self.msg_id)
        if self.replayed:
            body["replayed"] = True
        return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()


class Store:
    """A bounded, durable, ordered outbox. Thread-safe (one connection behind a lock)."""

    def __init__(
        self,
        path: str | Path,
        *,
        max_bytes: int = 64 * 1024 * 1024,
        max_age_s: float = 7 * 86400.0,
        boot: str = "0",
    ) -> None:
        self.path = str(path)
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.boot = boot
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._bytes = int(self._db.execute("SELECT COALESCE(SUM(size), 0) FROM outbox")
                          .fetchone()[0])

    # ----------------------------------------------------------------- counters
    def _bump(self, key: str, n: int) -> None:
        self._db.execute(
            "INSERT INTO meta(key, value) VALUES(?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = value + excluded.value", (key, n))

    def counter(self, key: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def next_session(self) -> int:
        """Increment and return the persisted agent session counter."""
        with self._lock:
            self._bump("session", 1)
        return self.counter("session")

    # ----------------------------------------------------------------- queue
    def put(
        self,
        topic: str,
        payload: dict[str, Any],
        *,
        now: float,
        qos: int = 1,
        retain: bool = False,
        held: bool = False,
    ) -> int:
        """Append a message (committed on return); return its row id.

        ``held`` marks a message enqueued while the broker was unreachable: it is
        delivered with ``replayed: true``.
        """
        blob = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._db.execute(
                    "INSERT INTO outbox(topic, payload, qos, retain, created, boot, held, size)"
                    " VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
                    (topic, blob, qos, int(retain), now, self.boot, int(held), len(blob)),
                )
                row = int(cur.lastrowid or 0)
                self._bytes += len(blob)
                self._evict(now)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return row

    def _evict(self, now: float) -> None:
        cur = self._db.execute(
            "DELETE FROM outbox WHERE created < ? RETURNING size", (now - self.max_age_s,))
        aged = [r[0] for r in cur.fetchall()]
        if aged:
            self._bytes -= sum(aged)
            self._bump("dropped_age", len(aged))
        dropped = 0
        while self._bytes > self.max_bytes:
            row = self._db.execute(
                "DELETE FROM outbox WHERE id = (SELECT MIN(id) FROM outbox) RETURNING size"
            ).fetchone()
            if row is None:
                break
            self._bytes -= row[0]
            dropped += 1
        if dropped:
            self._bump("dropped_full", dropped)

    def pending(self, after: int = 0, limit: int = 100) -> list[Stored]:
        """Messages with id > ``after``, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, payload, qos, retain, created, boot, held, attempts"
                " FROM outbox WHERE id > ? ORDER BY id LIMIT ?", (after, limit)).fetchall()
        out = []
        for rid, topic, blob, qos, retain, created, boot, held, attempts in rows:
            out.append(Stored(
                id=rid, topic=topic, payload=json.loads(blob), qos=qos, retain=bool(retain),
                created=created, msg_id=f"{boot}-{rid}",
                replayed=bool(held) or attempts > 0 or boot != self.boot,
            ))
        return out

    def mark_sent(self, ids: Iterable[int]) -> None:
        """Count a send attempt (an unacknowledged resend is delivered as replayed)."""
        ids = list(ids)
        if ids:
            with self._lock:
                self._db.executemany(
                    "UPDATE outbox SET attempts = attempts + 1 WHERE id = ?", [(i,) for i in ids])

    def ack(self, ids: Iterable[int]) -> None:
        """Delete acknowledged messages."""
        ids = list(ids)
        if not ids:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for i in ids:
                    row = self._db.execute(
                        "DELETE FROM outbox WHERE id = ? RETURNING size", (i,)).fetchone()
                    if row is not None:
                        self._bytes -= row[0]
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def backlog(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def stats(self) -> dict[str, int]:
        return {
            "backlog": self.backlog(),
            "backlog_bytes": self._bytes,
            "dropped_full": self.counter("dropped_full"),
            "dropped_age": self.counter("dropped_age"),
        }

    def close(self) -> None:
        with self._lock:
            self._db.close()
