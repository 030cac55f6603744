"""Faults (issue #7): a network partition between the agent and a broker that keeps running.

The test builds its own network namespace with two veth pairs (addresses 10.231.N.x/30,
local to the pairs): Mosquitto runs inside the namespace and listens on both; the agent
(in-process, root namespace) reaches it over pair A, the consumer over pair B. Pair A is
then cut (``ip link set ... down``) while the agent keeps detecting points from a local
source and raising alerts: nothing comes back over the dead TCP connection, so the
half-open watchdog must notice and force a reconnect, which fails until the link is
restored; then the agent reconnects by itself and the outbox delivers every alert raised
during the partition exactly once after de-duplication by ``msg_id``, in order.

Skipped, with the reason, only when ``ip netns add`` is not permitted (unprivileged CI).
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.runtime import load_effective
from tests.agent.mqtt_agent import live_agent, normal_then_spikes, point, root, wait, write_config
from tests.conftest import MOSQUITTO, Probe, wait_port

pytestmark = [
    pytest.mark.network,
    pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="iproute2 (ip) is not installed"),
]
KEEPALIVE, FACTOR = 5, 1.2
PORT = 1883  # inside the test's own namespace: no clash with anything else


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc


class Partition:
    """A namespace ``ns`` with a broker, reached over veth pair A (agent) and B (probe)."""

    def __init__(self, workdir: Path) -> None:
        tag = secrets.token_hex(3)
        self.ns = f"eapart-{tag}"
        self.a_root, self.a_ns = f"ea{tag}a", f"ea{tag}b"
        self.b_root, self.b_ns = f"ea{tag}c", f"ea{tag}d"
        net = 1 + secrets.randbelow(250)
        self.agent_host, self.probe_host = f"10.231.{net}.2", f"10.231.{net}.6"
        self._root_addr = {self.a_root: f"10.231.{net}.1/30", self.b_root: f"10.231.{net}.5/30"}
        self._ns_addr = {self.a_ns: f"{self.agent_host}/30", self.b_ns: f"{self.probe_host}/30"}
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def up(self) -> None:
        made = _ip("netns", "add", self.ns, check=False)
        if made.returncode != 0:
            if "not permitted" in made.stderr or "Permission denied" in made.stderr:
                pytest.skip(f"network namespaces are not permitted here: {made.stderr.strip()}")
            raise RuntimeError(f"ip netns add {self.ns}: {made.stderr.strip()}")
        _ip("-n", self.ns, "link", "set", "lo", "up")
        for r, n in ((self.a_root, self.a_ns), (self.b_root, self.b_ns)):
            _ip("link", "add", r, "type", "veth", "peer", "name", n, "netns", self.ns)
            _ip("addr", "add", self._root_addr[r], "dev", r)
            _ip("link", "set", r, "up")
            _ip("-n", self.ns, "addr", "add", self._ns_addr[n], "dev", n)
            _ip("-n", self.ns, "link", "set", n, "up")
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {PORT} {self.agent_host}\n"
            f"listener {PORT} {self.probe_host}\n"
            "allow_anonymous true\npersistence false\n"
            f"log_dest file {self.workdir / 'mosquitto.log'}\n"
            "log_type error\nlog_type warning\nlog_type notice\nmax_keepalive 3600\n",
            encoding="ascii")
        assert MOSQUITTO is not None
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns, MOSQUITTO, "-c", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_port(self.agent_host, PORT) and wait_port(self.probe_host, PORT), (
            (self.workdir / "mosquitto.log").read_text(errors="replace"))

    def cut(self) -> None:
        _ip("link", "set", self.a_root, "down")

    def restore(self) -> None:
        _ip("link", "set", self.a_root, "up")

    def down(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
        for r in (self.a_root, self.b_root):  # deleting one end deletes its peer
            _ip("link", "del", r, check=False)
        _ip("netns", "del", self.ns, check=False)


@pytest.fixture
def partition(tmp_path: Path) -> Iterator[Partition]:
    work = tmp_path / "nsbroker"
    work.mkdir()
    part = Partition(work)
    try:
        part.up()
        yield part
    finally:
        part.down()
        assert part.ns not in _ip("netns", "list").stdout  # nothing left behind


def _sent(path: Path) -> list[dict[str, Any]]:
    """What the agent raised (its JSON-lines sink), in order."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_partition_watchdog_reconnects_and_loses_nothing(tmp_path: Path,
                                                         partition: Partition) -> None:
    gw = "gw-partition"
    cfg = write_config(tmp_path, PORT, gw, sinks={"jsonl": "state/sent.jsonl"}, mqtt={
        "host": partition.agent_host, "keepalive_s": KEEPALIVE, "watchdog_factor": FACTOR,
        "reconnect_min_s": 0.5, "reconnect_max_s": 1.5})
    assert load_effective(cfg)[2].mqtt.host == partition.agent_host
    sent_file = tmp_path / "state" / "sent.jsonl"
    topic = f"sensors/{gw}/line1"
    series = normal_then_spikes(110, spikes=(30, 45, 80, 95))
    probe = Probe(partition.probe_host, PORT, [f"{root(gw)}/alert/#"])
    try:
        with live_agent(cfg) as agent:
            for ts, values in series[:25]:
                agent.ingest.put_data(topic, point(ts, **values))
            assert wait(lambda: agent.engine.points_in == 25)
            assert agent.transport.connected
            before = agent.transport.counts["watchdog_reconnects"]

            partition.cut()
            t_cut = time.monotonic()
            # alerts raised right after the cut go into the dead connection (never acked)
            for ts, values in series[25:60]:
                agent.ingest.put_data(topic, point(ts, **values))
            assert wait(lambda: agent.transport.counts["watchdog_reconnects"] > before, 20)
            noticed = time.monotonic() - t_cut
            assert noticed <= KEEPALIVE * FACTOR + 3.0, noticed
            assert wait(lambda: not agent.transport.connected, 5)
            # alerts raised while disconnected are held in the outbox
            for ts, values in series[60:]:
                agent.ingest.put_data(topic, point(ts, **values))
            assert wait(lambda: agent.engine.points_in == len(series))
            time.sleep(2.0)  # reconnect attempts fail while the link is down
            assert not agent.transport.connected
            held = agent.store.backlog()
            assert held >= 6, held  # 4 raises + clears, none acknowledged
            assert agent.transport.counts["connect_failures"] >= 1

            partition.restore()
            assert wait(lambda: agent.transport.connected and agent.store.backlog() == 0, 30)
            want = _sent(sent_file)
            assert [a["ts"] for a in want if a["event"] == "raise"] == [
                1030.0, 1045.0, 1080.0, 1095.0]
            assert probe.wait_for(lambda: len({a["msg_id"] for a in probe.json("/alert/")})
                                  >= len(want), 15), probe.json("/alert/")
            st = agent.stats()
            assert st["mqtt"]["watchdog_reconnects"] == before + 1
            assert agent.failed is None
    finally:
        probe.close()

    got = probe.json("/alert/")
    first: dict[str, dict[str, Any]] = {}
    for a in got:
        first.setdefault(a["msg_id"], a)
    assert len(first) == len(want)  # exactly once after de-duplication, nothing extra
    assert [(a["seq"], a["event"], a["ts"]) for a in first.values()] == [
        (a["seq"], a["event"], a["ts"]) for a in want]  # in order
    assert all(a.get("replayed") for a in first.values())  # all were held or re-sent
