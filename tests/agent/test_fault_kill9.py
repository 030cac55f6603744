"""Faults (issue #7): the agent is ``kill -9``-ed again and again, in every kind of moment.

A real agent process (real broker, real store, checkpoints, model updates from a watched
directory) is fed a continuous two-stream series on stdin and SIGKILLed 20 times, each
time in one of four phases, in a seeded random order and at seeded random offsets:

* ``detection``: at a random moment while points are being scored;
* ``flush``: the broker is frozen (SIGSTOP) until alerts queue up in the outbox, then
  resumed, and the agent is killed a few milliseconds into the store-and-forward flush;
* ``checkpoint``: as soon as a checkpoint's temporary file appears (the write is under
  way; after the kill the test sees whether the temporary file was left, i.e. the kill
  landed between open and rename);
* ``model_swap``: a new signed model is dropped into the watched directory, and the agent
  is killed as soon as it starts saving the verified model (save, pointer, swap).

After every kill: the SQLite store passes ``PRAGMA integrity_check``; the checkpoint, if
any, verifies (magic, sha256, fingerprint) and its sequence numbers and stream clocks never
go back; the model pointer names a stored model whose bytes match its sha256. After every
restart the agent says it restored the checkpoint and started with the pointer's model.
At the end every alert that was accepted (in the outbox or the agent's JSON-lines sink)
has arrived exactly once after de-duplication by ``msg_id``, and the last dropped model is
active. Set ``FAULT_SEED`` to replay a run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest

from agent.checkpoint import load_checkpoint
from tests.agent.fault_helpers import (
    fingerprint,
    first_by_msg_id,
    jsonl,
    key,
    save_figures,
    segment,
)
from tests.agent.model_update_helpers import keypair, manifest, model_blob, write_model
from tests.agent.mqtt_agent import root, wait, write_config
from tests.agent.test_agent_process import outbox_rows, spawn
from tests.conftest import MOSQUITTO, Broker, Probe

pytestmark = [
    pytest.mark.network,
    pytest.mark.slow,
    pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed"),
]
ITERATIONS = 20
PHASES = ("detection", "flush", "checkpoint", "model_swap")


class Feeder:
    """Writes a segment (60 points per stream, 8 alert events) to the agent's stdin every
    ``period`` seconds; timestamps keep increasing across restarts."""

    def __init__(self, period: float = 0.15) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.t0 = 1000.0
        self.period = period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            p = self.proc
            if p is None or p.stdin is None or p.poll() is not None:
                continue
            with contextlib.suppress(OSError, ValueError):  # the agent was just killed
                p.stdin.writelines(segment(self.t0))
                p.stdin.flush()
                self.t0 += 60.0

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def _integrity(db: Path) -> str:
    con = sqlite3.connect(db)
    try:
        con.execute("SELECT COUNT(*), MAX(id) FROM outbox").fetchone()
        return str(con.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        con.close()


def _pointer(models: Path) -> str | None:
    p = models / "active.json"
    return json.loads(p.read_bytes())["current"] if p.exists() else None


def test_kill_9_in_every_phase_loses_and_duplicates_nothing(
        tmp_path: Path, own_broker: Broker) -> None:
    seed = int(os.environ.get("FAULT_SEED", "20261128"))
    print(f"\nkill -9 loop: seed {seed}")
    rng = random.Random(seed)
    plan = [PHASES[i % len(PHASES)] for i in range(ITERATIONS)]
    rng.shuffle(plan)
    gw = "gw-kill9"
    key_, pub = keypair(tmp_path)
    (tmp_path / "a.onnx").write_bytes(model_blob("1.0.0"))
    drop = tmp_path / "drop"
    drop.mkdir()
    cfg = write_config(
        tmp_path, own_broker.port, gw, sinks={"jsonl": "state/sent.jsonl"},
        checkpoint={"interval_s": 0.3},
        detectors={"onnx": {"enabled": True, "model": "a.onnx", "providers": ["cpu"]}},
        models={"dir": "state/models", "public_keys": [pub.name], "watch_dir": "drop",
                "watch_interval_s": 0.1,
                "health": {"window_s": 1.0, "max_alert_rate_per_min": 1e6}},
        mqtt={"keepalive_s": 30})
    state = tmp_path / "state"
    db, ckpt, models = state / "outbox.sqlite", state / "ckpt.bin", state / "models"
    ckpt_tmp = ckpt.with_name(ckpt.name + ".tmp")
    sent_file, log_file = state / "sent.jsonl", tmp_path / "agent.log"
    fp = fingerprint(cfg)
    probe = Probe(own_broker.host, own_broker.port,
                  [f"{root(gw)}/alert/#", f"{root(gw)}/status", f"{root(gw)}/model/state"])
    feeder = Feeder()
    accepted: set[tuple[str, str, float]] = set()
    kills: dict[str, int] = dict.fromkeys(PHASES, 0)
    detail: dict[str, int] = {"checkpoint_tmp_left": 0, "flush_backlog_rows": 0,
                              "model_pointer_moved": 0, "model_killed_before_swap": 0,
                              "restored": 0, "sink_torn_lines": 0}
    dropped: list[str] = []  # sha256 of the models dropped, in order
    last_seq, last_ts = -1, {}
    expect_restore, expect_model = False, None
    proc: subprocess.Popen[bytes] | None = None

    def online(session: int) -> bool:
        return any(s.get("state") == "online" and s.get("session") == session
                   for s in probe.json("/status"))

    def start(session: int) -> str:
        """Spawn, wait until online; return what the new process logged."""
        nonlocal proc
        offset = log_file.stat().st_size if log_file.exists() else 0
        proc = spawn(cfg, "--input", "-", stdin=subprocess.PIPE)
        feeder.proc = proc
        assert wait(lambda: online(session), 30), f"session {session} not online"
        return log_file.read_bytes()[offset:].decode(errors="replace")

    def kill() -> None:
        assert proc is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert proc.stdin is not None
        with contextlib.suppress(OSError):
            proc.stdin.close()

    try:
        for i, phase in enumerate(plan):
            text = start(i + 1)
            # ---- the restart resumed from the last good checkpoint and the last model
            if expect_restore:
                assert f"restored detector state from {ckpt}" in text, text
                detail["restored"] += 1
            assert "checkpoint rejected" not in text, text
            if expect_model is not None:
                assert f"({expect_model[:16]}...)" in text, (expect_model, text)
            else:
                assert "stage 3: last active model" not in text, text
            # ---- kill in the planned phase
            time.sleep(rng.uniform(0.05, 0.2))
            if phase == "detection":
                time.sleep(rng.uniform(0.0, 0.6))
                kill()
            elif phase == "flush":
                assert own_broker.proc is not None
                own_broker.proc.send_signal(signal.SIGSTOP)
                n0 = len(outbox_rows(db))
                assert wait(lambda n0=n0: len(outbox_rows(db)) >= n0 + 8, 10)
                time.sleep(rng.uniform(0.1, 0.4))
                detail["flush_backlog_rows"] += len(outbox_rows(db))
                own_broker.proc.send_signal(signal.SIGCONT)
                time.sleep(rng.uniform(0.0, 0.03))
                kill()
            elif phase == "checkpoint":
                t_start = time.time_ns()
                deadline = time.monotonic() + 5.0
                while time.monotonic() < deadline:  # busy: the file lives for milliseconds
                    with contextlib.suppress(OSError):
                        if ckpt_tmp.stat().st_mtime_ns >= t_start:
                            break
                kill()
                detail["checkpoint_tmp_left"] += ckpt_tmp.exists()
            else:
                version = f"2.{i}.0"
                blob = model_blob(version)
                sha = hashlib.sha256(blob).hexdigest()
                before = _pointer(models)
                write_model(drop, f"m{i}.onnx", blob, manifest(blob, key_))
                dropped.append(sha)
                deadline = time.monotonic() + 10.0
                while time.monotonic() < deadline and not any(
                        sha in f.name for f in (models / "store").iterdir()):
                    time.sleep(0.0005)
                time.sleep(rng.uniform(0.0, 0.25))  # saving, pointer, swap, health check
                swapped = any(s.get("state") == "active" and s.get("sha256") == sha
                              for s in probe.json("/model/state"))
                kill()
                moved = _pointer(models) != before
                detail["model_pointer_moved"] += moved
                detail["model_killed_before_swap"] += moved and not swapped
            kills[phase] += 1
            # ---- after the kill: the files it left are usable
            assert _integrity(db) == "ok"
            accepted.update(key(json.loads(b)) for _i, b in outbox_rows(db))
            if sent_file.exists() and not sent_file.read_bytes().endswith(b"\n"):
                detail["sink_torn_lines"] += 1  # the restarted agent ends the torn line
            expect_restore = ckpt.exists()
            if expect_restore:
                st = load_checkpoint(ckpt, fp)  # raises if torn or corrupt
                assert st["seq"] >= last_seq
                assert all(st["last_ts"][s] >= t for s, t in last_ts.items())
                last_seq, last_ts = st["seq"], dict(st["last_ts"])
            expect_model = _pointer(models)
            if expect_model is not None:
                assert expect_model in dropped
                data = (models / "store" / f"{expect_model}.onnx").read_bytes()
                assert hashlib.sha256(data).hexdigest() == expect_model
        # ---- a last run: everything accepted arrives, the last dropped model is active
        text = start(ITERATIONS + 1)
        if expect_restore:
            assert f"restored detector state from {ckpt}" in text
        accepted.update(key(a) for a in jsonl(sent_file))
        assert wait(lambda: accepted <= {key(a) for a in probe.json("/alert/")}, 60), (
            len(accepted - {key(a) for a in probe.json("/alert/")}))
        feeder.stop()
        assert wait(lambda: _pointer(models) == dropped[-1], 20)
        assert wait(lambda: any(s.get("state") == "active" and s.get("sha256") == dropped[-1]
                                for s in probe.json("/model/state")), 20)
        assert proc is not None and proc.stdin is not None
        proc.stdin.close()  # end of input: graceful shutdown
        assert proc.wait(30) == 0
        assert outbox_rows(db) == []
    finally:
        feeder.stop()
        if proc is not None:
            proc.kill()
            proc.wait(10)
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
        if own_broker.proc is not None:
            own_broker.proc.send_signal(signal.SIGCONT)
        probe.close()
    got = probe.json("/alert/")
    first = first_by_msg_id(got)
    keys = [key(a) for a in first.values()]
    accepted.update(key(a) for a in jsonl(sent_file))
    assert len(keys) == len(set(keys)), "an alert arrived under two msg_ids"
    assert accepted <= set(keys)  # nothing accepted was lost
    extra = set(keys) - accepted
    assert len(extra) <= ITERATIONS  # at most the alert a kill interrupted, per kill
    leftovers = sorted(f.name for f in (models / "store").iterdir()
                       if f.name.split(".", 1)[0] not in {dropped[-1], *dropped[:-1]})
    assert leftovers == [], leftovers  # no orphaned partial model files
    assert not any((models / "staging").iterdir())
    save_figures("kill9", {
        "seed": seed, "iterations": ITERATIONS, "restarts_survived": ITERATIONS,
        "kills_per_phase": kills, **detail, "alerts_accepted": len(accepted),
        "alerts_received": len(got), "alerts_unique": len(first),
        "duplicates_removed": len(got) - len(first), "extra_not_in_records": len(extra),
        "models_dropped": len(dropped)})
