"""Helpers for the broker tests: agent configs and an in-process live agent."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.control import merge
from agent.live import LiveAgent
from agent.runtime import load_effective


def write_config(tmp_path: Path, port: int, gateway: str, **over: Any) -> Path:
    doc: dict[str, Any] = {
        "version": "1",
        "agent": {"id": gateway, "stats_interval_s": 0.5},
        "streams": [{"id": "line1", "channels": ["temp", "vib"]},
                    {"id": "pump", "channels": ["t", "rpm"]}],
        "detectors": {"zscore": {"window": 20, "min_points": 10}, "river": {"enabled": False}},
        "alerts": {"k": 1, "n": 1, "clear_after": 2},
        "checkpoint": {"path": "state/ckpt.bin"},
        "sinks": {"jsonl": None},
        "mqtt": {"enabled": True, "port": port, "site": "test", "keepalive_s": 5,
                 "reconnect_min_s": 0.1, "reconnect_max_s": 1.0,
                 "ingest": [{"topic": f"sensors/{gateway}/csv/line1", "stream": "line1",
                             "format": "csv"},
                            {"topic": f"sensors/{gateway}/+"}]},
        "store": {"path": "state/outbox.sqlite"},
        "control": {"desired_path": "state/desired.json"},
    }
    doc = merge(doc, over)
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def root(gateway: str) -> str:
    return f"edge/v1/test/{gateway}"


@contextmanager
def live_agent(path: Path, boot: str = "t") -> Iterator[LiveAgent]:
    base, overlay, cfg = load_effective(path)
    agent = LiveAgent(str(path), base, overlay, cfg, boot=boot)
    agent.start()
    try:
        assert agent.transport.wait_ready(10), "agent did not connect and subscribe"
        yield agent
    finally:
        agent.shutdown(flush_timeout=2.0)


def point(ts: float, **values: float) -> bytes:
    return json.dumps({"ts": ts, "values": values}).encode()


def normal_then_spikes(n: int = 40, spikes: tuple[int, ...] = (25,), t0: float = 1000.0
                       ) -> list[tuple[float, dict[str, float]]]:
    """A quiet 2-channel signal with big spikes at the given indices."""
    out = []
    for i in range(n):
        temp = 20.0 + 0.05 * ((i * 7) % 5 - 2)
        if i in spikes:
            temp = 90.0
        out.append((t0 + i, {"temp": temp, "vib": 1.0 + 0.01 * ((i * 3) % 4)}))
    return out


def wait(pred: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return False


def command(probe: Any, gw: str, name: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """Send a command as an MQTT 5 request (response topic + correlation data); its reply."""
    corr = f"c-{name}-{len(probe.messages)}".encode()
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = f"reply/{gw}"
    props.CorrelationData = corr
    probe.publish(f"{root(gw)}/cmd/{name}", json.dumps(body or {}), properties=props)

    def answered() -> list[Any]:
        return [m for m in probe.messages if m[0] == f"reply/{gw}"
                and getattr(m[3], "CorrelationData", None) == corr]

    assert probe.wait_for(lambda: bool(answered()), 10), f"no reply to {name}"
    reply: dict[str, Any] = json.loads(answered()[0][1])
    return reply
