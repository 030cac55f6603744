"""Store-and-forward outbox: order, acks, bounds, durability across reopen and kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from agent.store import Store


def test_fifo_ack_and_stable_ids(tmp_path: Path) -> None:
    s = Store(tmp_path / "o.db", boot="b1")
    ids = [s.put("t", {"n": i}, now=100.0 + i) for i in range(5)]
    rows = s.pending(limit=10)
    assert [r.payload["n"] for r in rows] == [0, 1, 2, 3, 4]
    assert [r.msg_id for r in rows] == [f"b1-{i}" for i in ids]
    assert not any(r.replayed for r in rows)
    s.ack(ids[:2])
    assert [r.payload["n"] for r in s.pending()] == [2, 3, 4]
    assert [r.payload["n"] for r in s.pending(after=ids[3])] == [4]


def test_replayed_when_held_resent_or_from_earlier_boot(tmp_path: Path) -> None:
    s = Store(tmp_path / "o.db", boot="b1")
    a = s.put("t", {"k": "live"}, now=1.0)
    s.put("t", {"k": "held"}, now=1.0, held=True)
    s.mark_sent([a])
    flags = {r.payload["k"]: r.replayed for r in s.pending()}
    assert flags == {"live": True, "held": True}
    s.close()
    s2 = Store(tmp_path / "o.db", boot="b2")
    rows = s2.pending()
    assert all(r.replayed for r in rows)
    body = json.loads(rows[0].encode())
    assert body["replayed"] is True and body["msg_id"] == f"b1-{a}"


def test_bounded_in_bytes_drops_oldest_counted(tmp_path: Path) -> None:
    s = Store(tmp_path / "o.db", max_bytes=4096, boot="b")
    for i in range(200):
        s.put("t", {"n": i, "pad": "x" * 40}, now=1.0)
    st = s.stats()
    assert st["backlog_bytes"] <= 4096 and st["dropped_full"] > 0
    assert st["dropped_full"] + st["backlog"] == 200
    left = [r.payload["n"] for r in s.pending(limit=1000)]
    assert left == list(range(200 - len(left), 200))


def test_bounded_in_age(tmp_path: Path) -> None:
    s = Store(tmp_path / "o.db", max_age_s=10.0, boot="b")
    s.put("t", {"n": 0}, now=0.0)
    s.put("t", {"n": 1}, now=5.0)
    s.put("t", {"n": 2}, now=12.0)
    assert [r.payload["n"] for r in s.pending()] == [1, 2]
    assert s.counter("dropped_age") == 1


def test_counters_survive_reopen(tmp_path: Path) -> None:
    s = Store(tmp_path / "o.db")
    assert s.next_session() == 1
    s.close()
    assert Store(tmp_path / "o.db").next_session() == 2


def test_survives_kill_9_mid_write(tmp_path: Path) -> None:
    db = tmp_path / "o.db"
    code = (
        "import sys, os\n"
        "from agent.store import Store\n"
        f"s = Store({str(db)!r}, boot='k')\n"
        "i = 0\n"
        "while True:\n"
        "    s.put('t', {'n': i, 'pad': 'y' * 100}, now=1.0)\n"
        "    if i == 50: print('ready', flush=True)\n"
        "    i += 1\n"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    proc.stdout.close()
    s = Store(db, boot="after")
    rows = s.pending(limit=1_000_000)
    assert len(rows) > 50
    assert [r.payload["n"] for r in rows] == list(range(len(rows)))
    assert all(r.replayed for r in rows)
