"""The agent process reading a real pseudo-terminal: ``edge-bridge simulate --pty`` streams
a labelled CSV with spikes, ``python -m agent.cli run`` has a ``serial`` entry on the pty.

Without MQTT the alerts go to the JSONL sink and the stats to stderr; with MQTT, over the
broker. The device is unplugged (the simulator exits, the pty and its symlink vanish) and
plugged back in (a new simulator on the same path), as a USB adapter would.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.cli import main
from tests.agent.mqtt_agent import root, wait

pytestmark = pytest.mark.serial
ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))
RATE = 200  # samples/s on the simulated UART


def labelled_csv(path: Path, n: int, spikes: tuple[int, ...], seed: int) -> Path:
    """``temp,vib`` rows: gaussian noise with a 3-sample spike at each index in ``spikes``.

    Noise, not a periodic pattern: frames lost to bit flips must not look anomalous.
    """
    rng = random.Random(seed)
    lines = ["temp,vib"]
    hot = {i + k for i in spikes for k in range(3)}
    for i in range(n):
        temp = 90.0 if i in hot else rng.gauss(20.0, 0.3)
        lines.append(f"{temp:.4f},{rng.gauss(1.0, 0.05):.4f}")
    path.write_text("\n".join(lines) + "\n", encoding="ascii")
    return path


def agent_config(tmp_path: Path, link: Path, **extra: Any) -> Path:
    doc: dict[str, Any] = {
        "agent": {"id": "gw-serial", "stats_interval_s": 0.5},
        "streams": [{"id": "line1", "channels": ["temp", "vib"]}],
        "detectors": {"zscore": {"window": 50, "min_points": 10, "threshold": 4.5,
                                 "robust_threshold": 5.0}, "river": {"enabled": False}},
        "alerts": {"k": 1, "n": 1, "clear_after": 2},
        "sinks": {"jsonl": "alerts.jsonl"},
        "serial": [{"port": str(link), "stream": "line1", "reconnect_initial": 0.05,
                    "reconnect_max": 0.3}],
        **extra,
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


class Procs:
    """Child processes of one test, all killed at the end."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.all: list[subprocess.Popen[bytes]] = []

    def agent(self, cfg: Path) -> subprocess.Popen[bytes]:
        with open(self.tmp_path / "agent.err", "ab") as err:
            p = subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "--config", str(cfg)],
                                 cwd=ROOT, env=ENV, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=err)
        self.all.append(p)
        return p

    def device(self, link: Path, csv: Path, seed: int) -> subprocess.Popen[bytes]:
        """``edge-bridge simulate --pty``: prints the port path, then streams the CSV."""
        p = subprocess.Popen(
            [sys.executable, "-m", "firmware_bridge", "simulate", "--pty", "--link", str(link),
             "--csv", str(csv), "--rate", str(RATE), "--corrupt-rate", "0.02",
             "--hello-every", "0.25",  # the agent flushes what was sent before it opened
             "--seed", str(seed), "--linger", "60"],
            cwd=ROOT, env=ENV, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL)
        self.all.append(p)
        assert p.stdout is not None
        assert p.stdout.readline().decode().strip() == str(link)
        return p

    def log(self) -> str:
        path = self.tmp_path / "agent.err"
        return path.read_text(errors="replace") if path.exists() else ""

    def stats(self) -> list[dict[str, Any]]:
        return [json.loads(line)["stats"] for line in self.log().splitlines()
                if line.startswith('{"stats"')]

    def kill_all(self) -> None:
        for p in self.all:
            if p.poll() is None:
                p.kill()
            p.wait(10)
            if p.stdout is not None:
                p.stdout.close()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    made = Procs(tmp_path)
    yield made
    made.kill_all()


def raises(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [e for e in events if e["event"] == "raise"]


def serial_stats(procs: Procs, link: Path) -> dict[str, int]:
    stats = procs.stats()
    return stats[-1]["serial"].get(str(link), {}) if stats else {}


def test_pty_device_to_jsonl_alerts_and_stats_survives_unplug(tmp_path: Path,
                                                              procs: Procs) -> None:
    link = tmp_path / "ttyEDGE0"
    alerts_file = tmp_path / "alerts.jsonl"
    agent = procs.agent(agent_config(tmp_path, link))
    # the agent starts before the device exists: it keeps retrying the port
    assert wait(lambda: "serial: reading" in procs.log(), 30), procs.log()
    # 600 samples (3 s): the rows before the agent opens the port (its retry interval
    # after the device appears) are flushed, and >300 must still arrive
    device = procs.device(link, labelled_csv(tmp_path / "a.csv", 600, (250, 400), 1), seed=1)
    assert wait(lambda: len(raises(alerts_file)) == 2, 20), procs.log()[-3000:]
    assert all(a["stream"] == "line1" and a["channels"][0] == "temp"
               for a in raises(alerts_file))
    # the whole CSV went through; bit flips show up as decoder errors, not as points
    assert wait(lambda: serial_stats(procs, link).get("points", 0) >= 300, 10)
    first = serial_stats(procs, link)
    assert first["frames_ok"] > 300 and first["hellos"] >= 1 and first["bytes_read"] > 0
    assert first["crc_errors"] + first["framing_errors"] > 0 and first["bytes_discarded"] > 0
    assert procs.stats()[-1]["points_in"] >= first["points"] - 1

    device.send_signal(signal.SIGTERM)  # unplugged: the pty and its symlink disappear
    assert device.wait(10) == 0 and not link.exists()
    assert wait(lambda: serial_stats(procs, link).get("open_failures", 0)
                > first["open_failures"], 10)
    procs.device(link, labelled_csv(tmp_path / "b.csv", 300, (200,), 2), seed=2)  # plugged in
    assert wait(lambda: len(raises(alerts_file)) == 3, 20), procs.log()[-3000:]
    assert wait(lambda: serial_stats(procs, link).get("reconnects", 0) >= 1, 5)
    again = serial_stats(procs, link)
    assert again["read_errors"] >= 1 and again["points"] > first["points"]
    assert agent.poll() is None

    agent.send_signal(signal.SIGTERM)
    assert agent.wait(20) == 0
    final = procs.stats()[-1]
    assert final["serial"][str(link)]["points"] >= again["points"]
    assert final["mqtt"] == {"enabled": False} and "shutdown complete" in procs.log()


@pytest.mark.network
def test_pty_device_alerts_over_mqtt(tmp_path: Path, procs: Procs, broker: Any,
                                     probe: Any) -> None:
    gw = "gw-serial-mqtt"
    link = tmp_path / "ttyEDGE1"
    p = probe([f"{root(gw)}/alert/#", f"{root(gw)}/stats"])
    cfg = agent_config(tmp_path, link, agent={"id": gw, "stats_interval_s": 0.5},
                       sinks={"jsonl": None},
                       mqtt={"enabled": True, "port": broker.port, "site": "test",
                             "keepalive_s": 5})
    agent = procs.agent(cfg)
    assert wait(lambda: "serial: reading" in procs.log(), 30), procs.log()
    # 600 samples: up to one HELLO period of data before the agent's first HELLO is
    # dropped (by design), and 2 % of the bytes are corrupted on the wire.
    procs.device(link, labelled_csv(tmp_path / "a.csv", 600, (150,), 3), seed=3)
    assert p.wait_for(lambda: any(a["event"] == "raise" for a in p.json("/alert/line1")), 20)
    raise_ = next(a for a in p.json("/alert/line1") if a["event"] == "raise")
    assert raise_["stream"] == "line1" and raise_["channels"][0] == "temp"
    assert p.wait_for(lambda: any(s["serial"].get(str(link), {}).get("points", 0) > 200
                                  for s in p.json("/stats")), 20)
    st = [s for s in p.json("/stats") if s["serial"].get(str(link), {}).get("points", 0) > 200]
    counters = st[-1]["serial"][str(link)]
    assert counters["frames_ok"] > 200 and counters["opens"] == 1
    assert st[-1]["mqtt"]["connected"] is True and st[-1]["points_in"] > 200
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(20) == 0


def test_run_without_any_source_exits_2(tmp_path: Path,
                                        caplog: pytest.LogCaptureFixture) -> None:
    cfg = tmp_path / "nothing.yaml"
    cfg.write_text("streams:\n  - id: s\n    channels: [a]\n", encoding="utf-8")
    assert main(["run", "--config", str(cfg)]) == 2
    msg = caplog.text
    assert "nothing to read" in msg and "mqtt.enabled" in msg and "serial" in msg
    assert "--input" in msg and str(cfg) in msg
