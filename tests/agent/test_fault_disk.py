"""Faults (issue #7): the disk of the store and checkpoint directory fills up (or is
read-only), then comes back.

The state directory of a real agent process is a small tmpfs mounted by the test. While a
filler file keeps it full, detection and live publishing go on (alerts arrive with
in-memory ``msg_id`` s ``{boot}-m{n}``), ``stats.storage`` says ``ok: false`` with the
ENOSPC error and the checkpoint failures, and /metrics has ``edge_storage_ok 0``. When
the filler goes the stats say the store recovered and checkpoints are written again. A
second time the disk is full while the broker is frozen, so alerts wait in memory; once
space returns they move to disk with their ``msg_id`` s and survive a ``kill -9``; the next
run delivers them. Every alert the agent raised (its JSON-lines sink, kept outside the
tmpfs, is the record) arrives exactly once after de-duplication by ``msg_id``. A second
test starts the agent on a filesystem remounted read-only, and a third checks the store's
degraded mode directly.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from agent.checkpoint import load_checkpoint
from tests.agent.fault_helpers import (
    fingerprint,
    first_by_msg_id,
    jsonl,
    key,
    mount_tmpfs,
    save_figures,
    segment,
    umount,
)
from tests.agent.mqtt_agent import root, wait, write_config
from tests.agent.test_agent_process import outbox_rows, spawn
from tests.conftest import MOSQUITTO, Broker, Probe, free_port

pytestmark = [
    pytest.mark.network,
    pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed"),
]


class Filler:
    """Keeps a filesystem full: a thread appends to a file whenever space appears (what
    the agent frees on a failed write would otherwise let its next write through)."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "filler"
        self.bytes = 0
        self._stop = threading.Event()
        self._fh = open(self.path, "wb", buffering=0)  # noqa: SIM115 - closed in free()
        self._top_up()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _top_up(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                self.bytes += self._fh.write(b"\0" * 4096)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self._top_up()

    def free(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._fh.close()
        self.path.unlink(missing_ok=True)


def _metrics(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            return str(r.read().decode())
    except OSError:
        return ""


def test_disk_full_keeps_detecting_reports_and_recovers(
        tmp_path: Path, own_broker: Broker) -> None:
    state = tmp_path / "state"
    why = mount_tmpfs(state, "512k")
    if why is not None:
        pytest.skip(why)
    gw = "gw-disk"
    port = free_port()
    cfg = write_config(tmp_path, own_broker.port, gw, sinks={"jsonl": "sent.jsonl"},
                       checkpoint={"interval_s": 0.3},
                       store={"retry_s": 0.3, "memory_max_bytes": 1 << 20},
                       mqtt={"keepalive_s": 30}, metrics={"enabled": True, "port": port})
    sent_file = tmp_path / "sent.jsonl"
    probe = Probe(own_broker.host, own_broker.port, [f"{root(gw)}/alert/#",
                                                      f"{root(gw)}/stats"])
    proc = spawn(cfg, "--input", "-", stdin=subprocess.PIPE)
    proc2: subprocess.Popen[bytes] | None = None
    filler: Filler | None = None
    assert proc.stdin is not None
    figures: dict[str, Any] = {}

    def received() -> list[dict[str, Any]]:
        return probe.json("/alert/")

    def stats() -> dict[str, Any]:
        s = probe.json("/stats")
        return s[-1] if s else {}

    def feed(t0: float) -> None:
        assert proc.stdin is not None
        proc.stdin.writelines(segment(t0))
        proc.stdin.flush()

    try:
        # 1. healthy: alerts delivered, storage ok, a checkpoint on the tmpfs
        feed(1000.0)
        assert wait(lambda: len(jsonl(sent_file)) == 8, 30), jsonl(sent_file)
        assert wait(lambda: len(first_by_msg_id(received())) == 8, 20)
        assert wait(lambda: (state / "ckpt.bin").exists(), 10)
        assert wait(lambda: "storage" in stats(), 10)
        assert stats()["storage"]["ok"] is True
        # 2. the disk is full: live publishing goes on, the condition is in the stats
        filler = Filler(state)
        t_full = time.monotonic()
        feed(2000.0)
        assert wait(lambda: len(jsonl(sent_file)) == 16, 30), "detection stopped"
        assert wait(lambda: stats().get("storage", {}).get("ok") is False
                    and stats()["storage"]["checkpoint"]["ok"] is False, 20), stats().get("storage")
        st = stats()["storage"]
        assert "full" in st["error"] and st["since"] is not None and st["write_errors"] >= 1
        assert wait(lambda: "No space left" in (stats()["storage"]["checkpoint"]["error"] or ""),
                    10), stats()["storage"]
        assert wait(lambda: "edge_storage_ok 0.0" in _metrics(port), 10)
        assert wait(lambda: any("-m" in a["msg_id"] for a in received()), 20)
        assert wait(lambda: len(first_by_msg_id(received())) >= 16, 20)  # published live
        assert proc.poll() is None
        # 3. space returns: the stats say so, the checkpoint is written again
        filler.free()
        assert wait(lambda: stats()["storage"]["ok"] is True
                    and stats()["storage"]["checkpoint"]["ok"] is True, 15), stats()["storage"]
        st = stats()["storage"]
        assert st["recoveries"] >= 1 and st["memory_backlog"] == 0 and st["since"] is None
        assert wait(lambda: "edge_storage_ok 1.0" in _metrics(port), 10)
        figures.update(store_write_errors=st["write_errors"],
                       checkpoint_failures=st["checkpoint"]["failures"],
                       degraded_s=round(time.monotonic() - t_full, 2))
        # 4. full again with the broker frozen: alerts raised now wait in memory
        filler = Filler(state)
        assert own_broker.proc is not None
        own_broker.proc.send_signal(signal.SIGSTOP)
        feed(3000.0)
        assert wait(lambda: len(jsonl(sent_file)) == 24, 30)
        db = state / "outbox.sqlite"
        on_disk = len(outbox_rows(db))
        # 5. space returns: the memory backlog moves to disk, keeping its msg_ids, and
        # survives a kill -9 (the broker is still frozen, nothing was acknowledged)
        filler.free()
        assert wait(lambda: len(outbox_rows(db)) >= on_disk + 8, 20), "backlog not on disk"
        moved = [json.loads(b) for _i, b in outbox_rows(db)]
        assert sum(1 for m in moved if "-m" in str(m.get("msg_id", ""))) >= 8
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        rows = len(outbox_rows(db))
        own_broker.proc.send_signal(signal.SIGCONT)
        proc2 = spawn(cfg)
        assert wait(lambda: outbox_rows(db) == [] and len(first_by_msg_id(received())) >= 24,
                    30), (len(outbox_rows(db)), len(first_by_msg_id(received())))
        assert wait(lambda: stats().get("session", 0) >= 2, 10)
        st = stats()["storage"]
        assert st["ok"] is True and st["checkpoint"]["ok"] is True
        load_checkpoint(state / "ckpt.bin", fingerprint(cfg))  # a good checkpoint is there
    finally:
        for p in (proc, proc2):
            if p is not None:
                p.kill()
                p.wait(10)
                if p.stdin is not None:
                    with contextlib.suppress(OSError):
                        p.stdin.close()
        if own_broker.proc is not None:
            own_broker.proc.send_signal(signal.SIGCONT)
        probe.close()
        if filler is not None:
            filler.free()
        umount(state)
    want = jsonl(sent_file)
    got = received()
    first = first_by_msg_id(got)
    keys = [key(a) for a in first.values()]
    assert len(keys) == len(set(keys))  # no alert twice under two msg_ids
    assert sorted(keys) == sorted(key(a) for a in want)  # none lost
    spilled = [m for m in first if "-m" in m]
    assert len(spilled) >= 16  # phases 2 and 3 went through memory
    figures.update(disk_bytes=512 * 1024, filler_bytes=filler.bytes, alerts_sent=len(want),
                   alerts_received=len(got), alerts_unique=len(first),
                   via_memory=len(spilled), on_disk_at_kill=rows)
    save_figures("disk", figures)


def test_store_spills_to_memory_when_full_and_moves_back_keeping_msg_ids(
        tmp_path: Path) -> None:
    from agent.store import Store

    state = tmp_path / "small"
    why = mount_tmpfs(state, "256k")
    if why is not None:
        pytest.skip(why)
    store: Store | None = None
    filler: Filler | None = None
    try:
        store = Store(state / "s.sqlite", boot="b", memory_max_bytes=8192, retry_s=3600.0)
        now = time.time()
        first = store.put("t/a", {"n": 0}, now=now)
        filler = Filler(state)
        ids = [store.put("t/a", {"n": i, "pad": "x" * 400}, now=now) for i in range(1, 40)]
        h = store.health()
        assert h["ok"] is False and "full" in (h["error"] or "") and h["since"] is not None
        assert all(i < 0 for i in ids[-5:])  # in memory, bounded: the oldest were dropped
        assert h["memory_dropped"] > 0 and h["memory_bytes"] <= 8192
        assert store.backlog() == 1 + h["memory_backlog"]
        mem = store.spilled(set(), limit=1000)
        assert [m.msg_id for m in mem] == [f"b-m{-i}" for i in ids[-len(mem):]]
        store.ack([mem[0].id])  # delivered live while degraded
        assert store.retry() is False  # not before retry_s, even with space back
        filler.free()
        assert store.retry(force=True) is True and store.health()["ok"] is True
        assert store.health()["recoveries"] == 1 and store.spilled(set()) == []
        on_disk = store.pending(after=first)
        assert [r.msg_id for r in on_disk] == [m.msg_id for m in mem[1:]]  # ids kept
        assert all("msg_id" not in r.payload for r in on_disk)
        store.ack([mem[1].id])  # a late PUBACK of a message sent from memory, now on disk
        assert [r.msg_id for r in store.pending(after=first)] == [m.msg_id for m in mem[2:]]
        assert store.put("t/a", {"n": 99}, now=now) > 0  # on disk again
    finally:
        if store is not None:
            store.close()
        if filler is not None:
            filler.free()
        umount(state)


def _remount(path: Path, mode: str) -> None:
    r = subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], capture_output=True,
                       text=True, check=False)
    assert r.returncode == 0, r.stderr


def test_read_only_state_dir_at_start_keeps_detecting_and_recovers(
        tmp_path: Path, own_broker: Broker) -> None:
    """The gateway boots with its state filesystem read-only (as after a filesystem error):
    the agent runs from memory, says so, and takes its store back once it is writable,
    delivering what the previous run left in it."""
    state = tmp_path / "state"
    why = mount_tmpfs(state, "1m")
    if why is not None:
        pytest.skip(why)
    gw = "gw-ro"
    cfg = write_config(tmp_path, own_broker.port, gw, sinks={"jsonl": "sent.jsonl"},
                       checkpoint={"interval_s": 0.3}, store={"retry_s": 0.3},
                       mqtt={"keepalive_s": 30})
    sent_file, db = tmp_path / "sent.jsonl", state / "outbox.sqlite"
    probe = Probe(own_broker.host, own_broker.port, [f"{root(gw)}/alert/#",
                                                      f"{root(gw)}/stats"])
    procs: list[subprocess.Popen[bytes]] = []
    figures: dict[str, Any] = {}
    leftovers: set[tuple[str, str, float]] = set()

    def run() -> subprocess.Popen[bytes]:
        procs.append(spawn(cfg, "--input", "-", stdin=subprocess.PIPE))
        return procs[-1]

    def feed(p: subprocess.Popen[bytes], t0: float) -> None:
        assert p.stdin is not None
        p.stdin.writelines(segment(t0))
        p.stdin.flush()

    def stats() -> dict[str, Any]:
        s = probe.json("/stats")
        return s[-1] if s else {}

    try:
        # a first run leaves undelivered alerts behind (broker frozen, then kill -9)
        p1 = run()
        feed(p1, 1000.0)
        assert wait(lambda: len(first_by_msg_id(probe.json("/alert/"))) == 8, 30)
        assert wait(lambda: (state / "ckpt.bin").exists(), 10)
        assert own_broker.proc is not None
        own_broker.proc.send_signal(signal.SIGSTOP)
        feed(p1, 2000.0)
        assert wait(lambda: len(outbox_rows(db)) >= 8, 20)
        p1.send_signal(signal.SIGKILL)
        p1.wait(10)
        leftovers = {key(json.loads(b)) for _i, b in outbox_rows(db)}
        left = len(leftovers)
        own_broker.proc.send_signal(signal.SIGCONT)
        _remount(state, "ro")
        # the next run starts on the read-only filesystem
        n1 = len(jsonl(sent_file))
        p2 = run()
        feed(p2, 3000.0)
        assert wait(lambda: len(jsonl(sent_file)) >= n1 + 8, 30), (
            "detection stopped", n1, len(jsonl(sent_file)), p2.poll(), stats().get("points_in"))
        assert wait(lambda: stats().get("storage", {}).get("checkpoint", {}).get("failures", 0)
                    >= 1, 20), sorted(stats())
        st = stats()["storage"]
        assert st["ok"] is False and st["since"] is not None
        assert "readonly" in st["error"] or "unable to open" in st["error"], st["error"]
        assert "Read-only" in st["checkpoint"]["error"]
        live = [a for a in probe.json("/alert/") if "-m" in a["msg_id"]]
        assert wait(lambda: len([a for a in probe.json("/alert/") if "-m" in a["msg_id"]])
                    >= 8, 20), live  # published live from memory
        assert p2.poll() is None
        # writable again: the store is opened, the leftovers delivered, checkpoints resume
        _remount(state, "rw")
        assert wait(lambda: stats()["storage"]["ok"] is True
                    and stats()["storage"]["checkpoint"]["ok"] is True, 15), stats()["storage"]
        assert wait(lambda: outbox_rows(db) == [], 20)
        st = stats()["storage"]
        figures.update(ro_store_write_errors=st["write_errors"],
                       ro_checkpoint_failures=st["checkpoint"]["failures"],
                       ro_recoveries=st["recoveries"], ro_leftovers_delivered=left)
        assert p2.stdin is not None
        p2.stdin.close()
        assert p2.wait(30) == 0
    finally:
        for p in procs:
            p.kill()
            p.wait(10)
            if p.stdin is not None:
                with contextlib.suppress(OSError):
                    p.stdin.close()
        if own_broker.proc is not None:
            own_broker.proc.send_signal(signal.SIGCONT)
        probe.close()
        umount(state)
    got = probe.json("/alert/")
    first = first_by_msg_id(got)
    keys = [key(a) for a in first.values()]
    assert len(keys) == len(set(keys))
    # accepted: what the sink recorded, and what the killed run left in its store (it may
    # die between the two)
    assert set(keys) == {key(a) for a in jsonl(sent_file)} | leftovers
    figures.update(ro_alerts_sent=len(jsonl(sent_file)), ro_alerts_unique=len(first),
                   ro_alerts_received=len(got))
    save_figures("readonly", figures)
