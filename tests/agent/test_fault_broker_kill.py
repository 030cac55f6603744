"""Faults (issue #7): the broker is SIGKILLed and restarted several times during a stream.

A real agent process reads a two-stream series on stdin (``--input -``) while the broker
goes down and comes back; it reconnects by itself. Every alert and clear event the agent
raised (its JSON-lines sink is the record of what was *sent*) must arrive at a consumer
exactly once after de-duplication by ``msg_id``, in order per stream. Alerts are not
retained, so the consumer must be subscribed again before the agent reconnects: the agent
process is paused (SIGSTOP) while the broker restarts and the consumer re-subscribes,
then resumed (its reconnect timer could otherwise fire in the milliseconds between the
broker's start and the consumer's SUBACK, and the test would lose what the agent then
delivered; that happened once in a loaded CI run).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.agent.mqtt_agent import normal_then_spikes, root, wait, write_config
from tests.agent.test_agent_process import spawn
from tests.conftest import MOSQUITTO, Broker, Probe

pytestmark = [
    pytest.mark.network,
    pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed"),
]
RESTARTS = 4
FIGURES: dict[str, Any] = {}


def _lines(stream: str, t0: float, n: int, spikes: tuple[int, ...]) -> list[bytes]:
    out = []
    for ts, values in normal_then_spikes(n, spikes=spikes, t0=t0):
        if stream == "pump":
            values = {"t": values["temp"], "rpm": values["vib"] * 1000}
        out.append(json.dumps({"stream": stream, "ts": ts, "values": values}).encode() + b"\n")
    return out


def _segment(i: int) -> list[bytes]:
    """Both streams interleaved, 60 points each, two spikes each (raise + clear)."""
    t0 = 1000.0 + 100 * i
    a = _lines("line1", t0, 60, (25, 45))
    b = _lines("pump", t0, 60, (30, 50))
    return [x for pair in zip(a, b, strict=True) for x in pair]


def test_broker_sigkill_restarts_lose_and_duplicate_nothing(
        tmp_path: Path, own_broker: Broker) -> None:
    gw = "gw-bkill"
    cfg = write_config(tmp_path, own_broker.port, gw, sinks={"jsonl": "state/sent.jsonl"},
                       mqtt={"reconnect_min_s": 1.0, "reconnect_max_s": 1.5})
    sent_file = tmp_path / "state" / "sent.jsonl"
    topics = [f"{root(gw)}/alert/#"]
    probes = [Probe(own_broker.host, own_broker.port, topics)]
    proc = spawn(cfg, "--input", "-", stdin=subprocess.PIPE)
    assert proc.stdin is not None

    def sent() -> list[dict[str, Any]]:
        if not sent_file.exists():
            return []
        return [json.loads(x) for x in sent_file.read_text().splitlines() if x.strip()]

    def received() -> list[dict[str, Any]]:
        return [a for p in probes for a in p.json("/alert/")]

    def settled() -> bool:
        return len({a["msg_id"] for a in received()}) == len(sent())

    try:
        assert wait(lambda: probes[0].wait_for(lambda: True, 0.1) and proc.poll() is None, 5)
        for i in range(RESTARTS + 1):
            proc.stdin.writelines(_segment(i))  # while the broker is up
            proc.stdin.flush()
            assert wait(lambda i=i: len(sent()) >= 8 * (i + 1) - 4, 30), sent()
            assert wait(settled, 30), (len(sent()), len(received()))
            if i == RESTARTS:
                break
            own_broker.stop()  # SIGKILL
            proc.stdin.writelines(_segment(100 + i))  # alerts raised during the outage
            proc.stdin.flush()
            assert wait(lambda i=i: len(sent()) >= 8 * (i + 1) + 4, 30), sent()
            time.sleep(0.3)
            proc.send_signal(signal.SIGSTOP)  # no reconnect before the consumer is back
            try:
                own_broker.start()
                probes.append(Probe(own_broker.host, own_broker.port, topics))  # (SUBACKed)
            finally:
                proc.send_signal(signal.SIGCONT)
        proc.stdin.close()
        assert proc.wait(30) == 0  # end of input: graceful shutdown
    finally:
        proc.kill()
        proc.wait(10)
        if not proc.stdin.closed:  # (a failure above left it open)
            proc.stdin.close()
        for p in probes:
            p.close()
    got = received()
    first: dict[str, dict[str, Any]] = {}
    for a in got:
        first.setdefault(a["msg_id"], a)
    by_seq = {a["seq"]: a for a in first.values()}
    want = sent()
    assert len(by_seq) == len(first) == len(want)  # exactly once after de-duplication
    assert sorted(by_seq) == sorted(a["seq"] for a in want)
    for a in want:
        assert {k: by_seq[a["seq"]][k] for k in ("stream", "event", "ts")} == {
            k: a[k] for k in ("stream", "event", "ts")}
    for stream in ("line1", "pump"):  # per-stream order of first arrival
        seqs = [a["seq"] for a in first.values() if a["stream"] == stream]
        assert seqs == sorted(seqs) and seqs
    replayed = sum(1 for a in first.values() if a.get("replayed"))
    assert replayed >= 4 * RESTARTS  # every outage's events were held and then delivered
    FIGURES.update(restarts=RESTARTS, sent=len(want), received=len(got),
                   unique=len(first), replayed=replayed)
    print(f"\nbroker SIGKILL figures: {FIGURES}")
