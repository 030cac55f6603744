"""The agent as a real process (``python -m agent.cli run``): LWT, kill -9, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.agent.mqtt_agent import normal_then_spikes, root, wait, write_config

pytestmark = pytest.mark.network
ROOT = Path(__file__).resolve().parents[2]


def spawn(cfg: Path, *extra: str, stdin: Any = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with open(cfg.parent / "agent.log", "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run", "--config", str(cfg), *extra],
            cwd=ROOT, env=env, stdin=stdin, stdout=subprocess.DEVNULL, stderr=log,
        )


def outbox_rows(db: Path) -> list[tuple[int, bytes]]:
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute("SELECT id, payload FROM outbox ORDER BY id").fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


def test_last_will_on_kill_9(tmp_path: Path, broker: Any, probe: Any) -> None:
    gw = "gw-lwt"
    p = probe([f"{root(gw)}/status"])
    proc = spawn(write_config(tmp_path, broker.port, gw))
    try:
        assert p.wait_for(lambda: any(s["state"] == "online" for s in p.json("/status")), 20)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert p.wait_for(lambda: p.json("/status")[-1]["state"] == "offline", 10)
        assert p.json("/status")[-1]["reason"] == "lwt"
    finally:
        proc.kill()
        proc.wait(10)


def test_kill_9_with_full_store_then_restart_delivers_everything(
        tmp_path: Path, broker: Any, probe: Any) -> None:
    gw = "gw-crash"
    cfg = write_config(tmp_path, broker.port, gw)
    db = tmp_path / "state" / "outbox.sqlite"
    broker.stop()  # no broker: every alert has to wait on disk
    proc = spawn(cfg, "--input", "-", stdin=subprocess.PIPE)
    assert proc.stdin is not None
    series = normal_then_spikes(200, spikes=(40, 80, 120, 160))
    for ts, values in series:
        proc.stdin.write(json.dumps({"stream": "line1", "ts": ts, "values": values}).encode()
                         + b"\n")
    proc.stdin.flush()
    try:
        assert wait(lambda: len(outbox_rows(db)) >= 8, 20), outbox_rows(db)
        before = {rid: json.loads(blob) for rid, blob in outbox_rows(db)}
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
        proc.wait(10)
        proc.stdin.close()
    broker.start()
    p = probe([f"{root(gw)}/alert/#", f"{root(gw)}/status"])
    proc2 = spawn(cfg)
    try:
        assert p.wait_for(lambda: len(p.json("/alert/")) >= len(before), 30)
        got = p.json("/alert/")
        by_seq = {a["seq"]: a for a in got}
        assert len(by_seq) == len(before)  # none lost, no unexpected extra
        for stored in before.values():  # none corrupted: same content, original timestamps
            sent = by_seq[stored["seq"]]
            assert sent["replayed"] is True
            assert {k: sent[k] for k in stored} == stored
        assert sorted(a["ts"] for a in got if a["event"] == "raise") == [1040.0, 1080.0,
                                                                          1120.0, 1160.0]
        assert wait(lambda: outbox_rows(db) == [], 10)
        proc2.send_signal(signal.SIGTERM)
        assert proc2.wait(20) == 0
        assert p.wait_for(lambda: p.json("/status")[-1].get("reason") == "shutdown", 10)
    finally:
        proc2.kill()
        proc2.wait(10)
