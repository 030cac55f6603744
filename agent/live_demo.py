"""``edge-agent demo`` (default): the whole live path on one machine.

A broker on a free loopback port (Mosquitto when installed, else the pure-Python
``amqtt`` broker when importable, in a subprocess: ``pip install 'edge-agent[demo]'``;
with neither, the offline demo runs instead, saying why), a simulated device publishing
MISSION.md item 1's labelled synthetic stream as JSON batches, the real live runtime
(:class:`~agent.live.LiveAgent`: ingest queue, cascade, store-and-forward, control plane),
and a console view of the alerts and stats arriving *over MQTT*. Ends with a summary
(points, alerts, precision/recall against the labels, ingest -> decision p99) and the same
PNG as the offline demo (``edge-agent demo --offline``).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from agent.demo import default_config_path, episode_recall, plot, run_demo
from agent.errors import AgentError
from agent.runtime import read_doc
from agent.synthetic import multisensor
from agent.types import Decision


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def find_mosquitto() -> str | None:
    """The Mosquitto executable: on PATH, else where Debian puts it (not on a user's PATH)."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return next((p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
                 if Path(p).is_file()), None)


def amqtt_available() -> bool:
    return importlib.util.find_spec("amqtt") is not None


class DemoBroker:
    """A throwaway broker process on a free loopback port (``name``: mosquitto or amqtt)."""

    def __init__(self, name: str, workdir: Path) -> None:
        self.name = name
        self.port = _free_port()
        self.log = workdir / f"{name}.log"
        if name == "mosquitto":
            exe = find_mosquitto()
            assert exe is not None
            conf = workdir / "mosquitto.conf"
            conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                            "persistence false\n", encoding="ascii")
            argv = [exe, "-c", str(conf)]
        else:  # amqtt speaks MQTT 3.1.1 only: the agent falls back to it (mqtt.protocol auto)
            conf = workdir / "amqtt.yaml"
            conf.write_text(yaml.safe_dump({
                "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
                "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin":
                            {"allow_anonymous": True}},
            }), encoding="utf-8")
            argv = [sys.executable, "-m", "amqtt.scripts.broker_script", "-c", str(conf)]
        with open(self.log, "wb") as fh:
            self.proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        if not _wait_port(self.port, 20.0):
            self.close()
            tail = self.log.read_text(errors="replace")[-500:]
            raise AgentError(f"{name} did not start on 127.0.0.1:{self.port}: {tail}")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def start_broker(workdir: Path) -> DemoBroker | None:
    """Mosquitto if installed, else amqtt if importable, else None (after saying why)."""
    names = (["mosquitto"] if find_mosquitto() else []) + (["amqtt"] if amqtt_available()
                                                          else [])
    for name in names:
        try:
            return DemoBroker(name, workdir)
        except (AgentError, OSError) as exc:
            print(f"edge-agent demo: {name} failed to start ({exc})", flush=True)
    if not names:
        print("edge-agent demo: no MQTT broker here: Mosquitto is not installed "
              "(apt-get install mosquitto) and the embedded amqtt broker is not importable "
              "(pip install 'edge-agent[demo]').", flush=True)
    print("edge-agent demo: running the offline demo instead (the same cascade, no broker)",
          flush=True)
    return None


def _console(port: int, root: str) -> tuple[paho.Client, list[dict[str, Any]]]:
    alerts: list[dict[str, Any]] = []
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="demo-console")

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        body = json.loads(msg.payload) if msg.payload else {}
        if "/alert/" in msg.topic:
            alerts.append(body)
            if body["event"] == "raise":
                print(f"  ALERT  {body['severity']:<8} {body['stream']} t={body['start']:.0f} "
                      f"score={body['score']:.2f} stage={body['stage_name']} "
                      f"channels={','.join(body['channels']) or '-'}")
        elif msg.topic.endswith("/stats"):
            lat = body["latency_ms"]
            print(f"  stats  points={body['points_in']} alerts={body['alerts']} "
                  f"queue={body['queue']['depth']} p99={lat['p99']} ms")
        elif msg.topic.endswith("/status"):
            print(f"  status {body.get('state')} (session {body.get('session')})")

    c.on_message = on_message
    c.connect("127.0.0.1", port)
    c.subscribe(f"{root}/#", 1)
    c.loop_start()
    return c, alerts


def run_live_demo(config_path: str | None, points: int, seed: int, out: Path,
                  rate: float = 500.0) -> int:
    from agent.live import LiveAgent
    from agent.runtime import load_effective

    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="edge-demo-"))
    src = Path(config_path) if config_path else default_config_path()
    doc = read_doc(src)
    stream = doc["streams"][0]["id"]
    broker = start_broker(work)
    if broker is None:
        shutil.rmtree(work, ignore_errors=True)
        return run_demo(config_path, points, seed, out)
    # keepalive 5 s: a short CONNACK wait, so the MQTT 5 -> 3.1.1 fallback against amqtt
    # (which never answers an MQTT 5 CONNECT carrying a Last Will) takes seconds, not 30
    doc["mqtt"] = {"enabled": True, "port": broker.port, "site": "demo", "keepalive_s": 5,
                   "ingest": [{"topic": f"devices/sim/{stream}", "stream": stream}]}
    doc["store"] = {"path": str(out / "outbox.sqlite")}
    doc.setdefault("agent", {})["stats_interval_s"] = 1.0
    doc["sinks"] = {"jsonl": str((out / "alerts.jsonl").resolve())}
    onnx = doc.get("detectors", {}).get("onnx", {})
    if onnx.get("model"):  # the config moves to a temp dir: keep its model path valid
        onnx["model"] = str((src.parent / onnx["model"]).resolve())
    cfg_path = work / "live-demo.yaml"
    cfg_path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    data = multisensor(n=points, seed=seed)
    decisions: dict[float, Decision] = {}
    try:
        base, overlay, cfg = load_effective(cfg_path)
        logging.getLogger().setLevel(cfg.agent.log_level.upper())
        agent = LiveAgent(str(cfg_path), base, overlay, cfg, boot="demo")
        agent.on_decision = lambda d: decisions.__setitem__(d.ts, d)
        root = agent.tree.root
        console, alerts = _console(broker.port, root)
        print(f"edge-agent live demo: {broker.name} on 127.0.0.1:{broker.port}, topics under "
              f"{root}/; device publishes {points} points at {rate:.0f}/s")
        agent.start()
        if not agent.transport.wait_ready(30):
            raise AgentError("agent did not connect to the demo broker")
        _device(broker.port, f"devices/sim/{stream}", data, rate)
        deadline = time.monotonic() + 60 + points / 500
        while agent.engine.points_in < points and time.monotonic() < deadline:
            time.sleep(0.05)
        agent.publisher.wait_empty(5.0)
        stats = agent.stats()
        agent.shutdown()
        time.sleep(0.3)
        console.disconnect()
        console.loop_stop()
    finally:
        broker.close()
        shutil.rmtree(work, ignore_errors=True)
    scores = np.array([decisions[t].score if t in decisions else 0.0 for t in data.ts])
    flagged = np.array([decisions[t].alert if t in decisions else False for t in data.ts])
    scored = slice(points - stats["scored"]["stage1"], None)
    y, a = data.labels[scored], flagged[scored]
    tp, fp, fn = int((y & a).sum()), int((~y & a).sum()), int((y & ~a).sum())
    hit, episodes = episode_recall(y, a)
    raised = sum(1 for x in alerts if x["event"] == "raise")
    rows = [("broker", f"{broker.name} (MQTT {stats['mqtt']['protocol']})"),
            ("points ingested", stats["points_in"]), ("messages", stats["messages_in"]),
            ("alerts over MQTT", f"{raised} raised, {len(alerts)} events"),
            ("point precision", f"{tp / max(tp + fp, 1):.2f}"),
            ("point recall", f"{tp / max(tp + fn, 1):.2f}"),
            ("episodes detected", f"{hit}/{episodes}"),
            ("ingest->decision p99", f"{stats['latency_ms']['p99']} ms"),
            ("queue drops", stats["queue"]["dropped"]),
            ("outbox backlog", stats["store"]["backlog"])]
    print("\n".join(f"  {k:<22} {v}" for k, v in rows))
    png = out / "demo.png"
    plot(data, scores, flagged, cfg.alerts.threshold, png)
    print(f"plot: {png}\nalerts: {out / 'alerts.jsonl'}")
    return 0


def _device(port: int, topic: str, data: Any, rate: float, batch: int = 50) -> None:
    """The simulated device: the labelled stream as JSON batches, paced at ``rate``."""
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="demo-device")
    c.connect("127.0.0.1", port)
    c.loop_start()
    start = time.perf_counter()
    rows = list(zip(data.ts.tolist(), data.values.tolist(), strict=True))
    for i in range(0, len(rows), batch):
        body = [{"ts": t, "values": dict(zip(data.channels, v, strict=True))}
                for t, v in rows[i:i + batch]]
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        c.publish(topic, json.dumps(body), qos=1).wait_for_publish(5)
    c.disconnect()
    c.loop_stop()


__all__ = ["run_live_demo"]
