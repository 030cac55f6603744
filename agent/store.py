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

When the disk refuses writes (full, read-only, I/O error) the store degrades instead of
failing its callers: new messages are kept in a bounded in-memory *spill* (negative row
ids, ``msg_id`` ``{boot}-m{n}``; oldest dropped and counted beyond ``memory_max_bytes``)
that the publisher sends live, the condition is reported by :meth:`Store.health`, and a
write is retried at most every ``retry_s``; when it succeeds the spill moves to disk in
one transaction, keeping each message's ``msg_id``, and the store is healthy again.

>>> s = Store(":memory:", max_bytes=1000, boot="b1")
>>> m = s.put("t/a", {"x": 1}, now=10.0)
>>> [(r.topic, r.payload["x"], r.msg_id) for r in s.pending()]
[('t/a', 1, 'b1-1')]
>>> s.ack([m]); s.backlog()
0
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections import OrderedDict
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
# what a refused write raises: SQLITE_FULL / READONLY / IOERR are OperationalErrors
_DISK_ERRORS = (sqlite3.DatabaseError, OSError)
_MOVED_MAX = 10_000  # spilled ids remembered after their move to disk (for late PUBACKs)

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Spilled:
    """A message kept in memory while the disk refuses writes."""

    topic: str
    blob: bytes
    qos: int
    retain: bool
    created: float
    held: bool
    msg_id: str
    attempts: int = 0


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
        memory_max_bytes: int = 4 * 1024 * 1024,
        retry_s: float = 5.0,
    ) -> None:
        self.path = str(path)
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.boot = boot
        self.memory_max_bytes = memory_max_bytes
        self.retry_s = retry_s
        self._spill: OrderedDict[int, _Spilled] = OrderedDict()
        self._spill_bytes = 0
        self._spill_n = 0
        self._moved: OrderedDict[int, int] = OrderedDict()  # spilled id -> disk row id
        self._undeleted: set[int] = set()  # acknowledged rows whose DELETE was refused
        self._error: str | None = None
        self._since: float | None = None
        self._next_retry = 0.0
        self._counts = {"write_errors": 0, "recoveries": 0, "memory_dropped": 0}
        self._lock = threading.Lock()
        self._bytes = 0
        try:
            self._db = self._open(self.path)
            self._detached = False
        except _DISK_ERRORS as exc:  # read-only or broken disk: run from memory, retry
            self._db = self._open(":memory:")
            self._detached = True  # the database file is opened by a later retry
            self._failed(exc)
        self._recount()

    @staticmethod
    def _open(path: str) -> sqlite3.Connection:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
        except BaseException:
            db.close()
            raise
        return db

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
            try:
                self._bump("session", 1)
            except _DISK_ERRORS as exc:  # not persisted: the next start may repeat it
                self._failed(exc)
                row = self._db.execute("SELECT value FROM meta WHERE key = 'session'"
                                       ).fetchone()
                return (int(row[0]) if row else 0) + 1
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
            if (self._spill or self._error is not None) and not self._retry_locked():
                return self._spill_put(topic, blob, qos, retain, now, held)
            try:
                return self._insert([(topic, blob, qos, retain, now, held)], now)[0]
            except _DISK_ERRORS as exc:
                self._failed(exc)
                return self._spill_put(topic, blob, qos, retain, now, held)

    def _insert(self, rows: list[tuple[str, bytes, int, bool, float, bool]], now: float
                ) -> list[int]:
        """Insert rows in one transaction (caller holds the lock); raise if refused."""
        out = []
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for topic, blob, qos, retain, created, held in rows:
                cur = self._db.execute(
                    "INSERT INTO outbox(topic, payload, qos, retain, created, boot, held, size)"
                    " VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
                    (topic, blob, qos, int(retain), created, self.boot, int(held), len(blob)),
                )
                out.append(int(cur.lastrowid or 0))
                self._bytes += len(blob)
            self._evict(now)
            self._db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(*_DISK_ERRORS):
                self._db.execute("ROLLBACK")
            self._recount()
            raise
        return out

    def _recount(self) -> None:
        with contextlib.suppress(*_DISK_ERRORS):
            self._bytes = int(self._db.execute(
                "SELECT COALESCE(SUM(size), 0) FROM outbox").fetchone()[0])

    # ----------------------------------------------------------------- degraded mode
    def _failed(self, exc: BaseException) -> None:
        """A write was refused (caller holds the lock): report, retry later."""
        self._counts["write_errors"] += 1
        if self._error is None:
            self._since = time.time()
            log.error("store %s refuses writes, keeping messages in memory: %s",
                      self.path, exc)
        self._error = f"{type(exc).__name__}: {exc}"
        self._next_retry = time.monotonic() + self.retry_s

    def _spill_put(self, topic: str, blob: bytes, qos: int, retain: bool, now: float,
                   held: bool) -> int:
        self._spill_n += 1
        rid = -self._spill_n
        self._spill[rid] = _Spilled(topic, blob, qos, retain, now, held,
                                    f"{self.boot}-m{self._spill_n}")
        self._spill_bytes += len(blob)
        while self._spill_bytes > self.memory_max_bytes and len(self._spill) > 1:
            _, old = self._spill.popitem(last=False)
            self._spill_bytes -= len(old.blob)
            if self._counts["memory_dropped"] == 0:
                log.warning("store: in-memory backlog over %d bytes, dropping the oldest",
                            self.memory_max_bytes)
            self._counts["memory_dropped"] += 1
        return rid

    def retry(self, force: bool = False) -> bool:
        """While degraded, try a write (at most every ``retry_s``); True when healthy."""
        with self._lock:
            if self._error is None and not self._spill:
                return True
            return self._retry_locked(force)

    def _retry_locked(self, force: bool = False) -> bool:
        if not force and time.monotonic() < self._next_retry:
            return False
        self._next_retry = time.monotonic() + self.retry_s
        if self.path != ":memory:":
            # a fresh connection: one opened on a read-only filesystem stays read-only after
            # a remount, and SQLite shares the WAL index of a file between the connections
            # of a process, so the old one is closed first
            self._db.close()
            try:
                self._db, self._detached = self._open(self.path), False
            except _DISK_ERRORS as exc:
                self._db, self._detached = self._open(":memory:"), True
                self._failed(exc)
                return False
            self._recount()
        spilled = list(self._spill.items())
        rows = []
        for _rid, m in spilled:  # the msg_id travels inside the payload (see pending)
            body = json.loads(m.blob)
            body["msg_id"] = m.msg_id
            rows.append((m.topic, json.dumps(body, separators=(",", ":")).encode(), m.qos,
                         m.retain, m.created, m.held or m.attempts > 0))
        ids: list[int] = []
        try:
            if rows:
                ids = self._insert(rows, time.time())
            else:
                self._db.execute("BEGIN IMMEDIATE")
                self._bump("write_probes", 1)
                self._db.execute("COMMIT")
        except _DISK_ERRORS as exc:
            with contextlib.suppress(*_DISK_ERRORS):
                self._db.execute("ROLLBACK")
            self._failed(exc)
            return False
        with contextlib.suppress(*_DISK_ERRORS):
            for i in sorted(self._undeleted):
                self._db.execute("DELETE FROM outbox WHERE id = ?", (i,))
            self._undeleted.clear()
        self._recount()
        for (rid, _m), disk_id in zip(spilled, ids, strict=True):
            self._moved[rid] = disk_id
        while len(self._moved) > _MOVED_MAX:
            self._moved.popitem(last=False)
        self._spill.clear()
        self._spill_bytes = 0
        self._counts["recoveries"] += 1
        log.info("store %s writable again after %.1f s; %d messages moved from memory to disk",
                 self.path, time.time() - (self._since or time.time()), len(rows))
        self._error = self._since = None
        return True

    def health(self) -> dict[str, Any]:
        """``ok``, the last ``error`` and ``since`` (epoch s) while degraded, counters."""
        return {"ok": self._error is None, "error": self._error, "since": self._since,
                **self._counts, "memory_backlog": len(self._spill),
                "memory_bytes": self._spill_bytes}

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
            payload = json.loads(blob)
            mid = payload.pop("msg_id", None)  # set by a move from memory (see retry)
            out.append(Stored(
                id=rid, topic=topic, payload=payload, qos=qos, retain=bool(retain),
                created=created, msg_id=str(mid) if mid else f"{boot}-{rid}",
                replayed=bool(held) or attempts > 0 or boot != self.boot,
            ))
        return out

    def spilled(self, skip: set[int], limit: int = 100) -> list[Stored]:
        """Messages kept in memory (negative ids) not in ``skip``, oldest first."""
        out = []
        with self._lock:
            for rid, m in self._spill.items():
                if len(out) >= limit:
                    break
                if rid not in skip:
                    out.append(Stored(
                        id=rid, topic=m.topic, payload=json.loads(m.blob), qos=m.qos,
                        retain=m.retain, created=m.created, msg_id=m.msg_id,
                        replayed=m.held or m.attempts > 0))
        return out

    def mark_sent(self, ids: Iterable[int]) -> None:
        """Count a send attempt (an unacknowledged resend is delivered as replayed)."""
        ids = list(ids)
        if not ids:
            return
        with self._lock:
            for i in ids:
                if i < 0 and i in self._spill:
                    self._spill[i].attempts += 1
            try:
                self._db.executemany("UPDATE outbox SET attempts = attempts + 1 WHERE id = ?",
                                     [(i,) for i in ids if i > 0])
            except _DISK_ERRORS as exc:  # only the replayed flag is lost
                self._failed(exc)

    def ack(self, ids: Iterable[int]) -> None:
        """Delete acknowledged messages."""
        ids = list(ids)
        if not ids:
            return
        with self._lock:
            disk = []
            for i in ids:
                if i > 0:
                    disk.append(i)
                elif i in self._spill:
                    self._spill_bytes -= len(self._spill.pop(i).blob)
                elif i in self._moved:
                    disk.append(self._moved.pop(i))
            if not disk:
                return
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for i in disk:
                    row = self._db.execute(
                        "DELETE FROM outbox WHERE id = ? RETURNING size", (i,)).fetchone()
                    if row is not None:
                        self._bytes -= row[0]
                self._db.execute("COMMIT")
            except _DISK_ERRORS as exc:  # deleted on recovery; a reconnect may resend them
                with contextlib.suppress(*_DISK_ERRORS):
                    self._db.execute("ROLLBACK")
                self._recount()
                self._undeleted.update(disk)
                self._failed(exc)

    def backlog(self) -> int:
        with self._lock:
            n = int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
            return n - len(self._undeleted) + len(self._spill)

    def stats(self) -> dict[str, int]:
        return {
            "backlog": self.backlog(),
            "backlog_bytes": self._bytes + self._spill_bytes,
            "dropped_full": self.counter("dropped_full"),
            "dropped_age": self.counter("dropped_age"),
        }

    def close(self) -> None:
        with self._lock:
            self._db.close()
