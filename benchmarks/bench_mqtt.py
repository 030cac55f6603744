"""Live-mode throughput and latency against a real Mosquitto on loopback.

    PYTHONPATH=. python benchmarks/bench_mqtt.py [--quick]

1. sustained ingest, single-point JSON messages (QoS 0), as fast as a separate publisher
   process can send them;
2. the same with 100-point JSON batches;
3. ingest -> alert latency at 1,000 points/s: a paced publisher (separate process) sends
   single points with a 5-point spike every 250 points; a subscriber times each alert against
   the send time of the point that raised it (same host, same clock).

The agent runs in-process with the default detectors (z-score + River half-space trees)
on one 4-channel stream. Results go to ``benchmarks/results/mqtt.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from agent.live import LiveAgent
from agent.runtime import load_effective

OUT = Path(__file__).parent / "results" / "mqtt.json"
CHANNELS = ("temperature", "vibration", "pressure", "noise")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _values(i: int, spike: bool) -> dict[str, float]:
    rng = np.random.default_rng(i)
    v = {c: float(np.sin(i / 50 + k) + rng.normal(0, 0.05)) for k, c in enumerate(CHANNELS)}
    if spike:
        v["temperature"] += 25.0
    return v


def _publisher(port: int, topic: str, n_msgs: int, batch: int, rate: float, t0: float,
               spike_every: int, out: Any) -> None:
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{port}-{batch}-{rate}")
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    sent: dict[float, float] = {}
    start = time.perf_counter()
    k = 0
    for m in range(n_msgs):
        pts = []
        for _ in range(batch):
            ts = t0 + k
            spike = spike_every > 0 and k > 500 and k % spike_every < 5
            pts.append({"ts": ts, "values": _values(k, spike)})
            k += 1
        if rate > 0:
            delay = start + m / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        body = json.dumps(pts[0] if batch == 1 else pts)
        c.publish(topic, body, qos=0)
        if spike_every:
            sent[pts[0]["ts"]] = time.time()  # single-point messages in this mode
    time.sleep(0.5)
    c.disconnect()
    c.loop_stop()
    out.put(sent)


def _agent(tmp: Path, port: int) -> LiveAgent:
    doc = {
        "version": "bench", "agent": {"id": "bench", "stats_interval_s": 5.0},
        "streams": [{"id": "line1", "channels": list(CHANNELS)}],
        "sinks": {"jsonl": None},
        "mqtt": {"enabled": True, "port": port, "queue_size": 1_000_000,
                 "ingest": [{"topic": "bench/line1", "stream": "line1"}]},
        "store": {"path": str(tmp / "outbox.sqlite")},
    }
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "bench.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    base, overlay, cfg = load_effective(path)
    agent = LiveAgent(str(path), base, overlay, cfg, boot="bench")
    agent.start()
    assert agent.transport.wait_ready(10)
    return agent


def _throughput(port: int, tmp: Path, n_points: int, batch: int) -> dict[str, Any]:
    agent = _agent(tmp / f"tp{batch}", port)
    try:
        q: Any = mp.Queue()
        proc = mp.Process(target=_publisher, args=(port, "bench/line1", n_points // batch, batch,
                                                   0.0, 1e9, 0, q))
        t_start = time.perf_counter()
        proc.start()
        deadline = time.monotonic() + 300
        while agent.engine.points_in < n_points and time.monotonic() < deadline:
            done = agent.engine.points_in + agent.ingest.dropped * batch >= n_points
            if not proc.is_alive() and not agent.ingest.data and done:
                break
            time.sleep(0.01)
        elapsed = time.perf_counter() - t_start
        q.get(timeout=30)
        proc.join(30)
        st = agent.stats()
        return {"points": st["points_in"], "messages": st["messages_in"], "batch": batch,
                "seconds": round(elapsed, 3), "points_per_s": round(st["points_in"] / elapsed),
                "queue_dropped": st["queue"]["dropped"],
                "ingest_to_decision_ms": st["latency_ms"]}
    finally:
        agent.shutdown(flush_timeout=2.0)


def _latency(port: int, tmp: Path, seconds: float, rate: float) -> dict[str, Any]:
    agent = _agent(tmp / "lat", port)
    arrivals: dict[float, float] = {}
    sub = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-sub")

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        a = json.loads(msg.payload)
        if a["event"] == "raise":
            arrivals[a["ts"]] = time.time()

    sub.on_message = on_message
    sub.connect("127.0.0.1", port)
    sub.subscribe("edge/v1/+/bench/alert/#", 1)
    sub.loop_start()
    time.sleep(0.3)
    try:
        q: Any = mp.Queue()
        n = int(seconds * rate)
        proc = mp.Process(target=_publisher, args=(port, "bench/line1", n, 1, rate, 2e9, 250, q))
        proc.start()
        sent = q.get(timeout=seconds + 60)
        proc.join(30)
        time.sleep(1.0)
        lat = [arrivals[ts] - sent[ts] for ts in arrivals if ts in sent]
        st = agent.stats()
        arr = np.array(lat) * 1000 if lat else np.array([np.nan])
        return {"rate_points_per_s": rate, "seconds": seconds, "points": st["points_in"],
                "alerts_raised": len(arrivals), "alerts_timed": len(lat),
                "ingest_to_alert_ms": {"p50": round(float(np.percentile(arr, 50)), 2),
                                       "p99": round(float(np.percentile(arr, 99)), 2),
                                       "max": round(float(arr.max()), 2)},
                "ingest_to_decision_ms": st["latency_ms"],
                "queue_dropped": st["queue"]["dropped"]}
    finally:
        sub.disconnect()
        sub.loop_stop()
        agent.shutdown(flush_timeout=2.0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small run (smoke test)")
    args = ap.parse_args()
    mosq = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    tmp = Path(tempfile.mkdtemp(prefix="bench-mqtt-"))
    port = _free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    "max_queued_messages 0\n", encoding="ascii")
    broker = subprocess.Popen([mosq, "-c", str(conf)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    try:
        n = 5_000 if args.quick else 60_000
        single = _throughput(port, tmp, n, 1)
        batched = _throughput(port, tmp, n * 2, 100)
        lat = _latency(port, tmp, 3.0 if args.quick else 20.0, 1000.0)
    finally:
        broker.kill()
        broker.wait()
    result = {"host": {"python": platform.python_version(), "machine": platform.machine(),
                       "cpus": mp.cpu_count()},
              "detectors": "zscore(both) + river half_space_trees, 1 stream x 4 channels",
              "single_point_messages": single, "batches_of_100": batched,
              "latency_at_1000_points_per_s": lat}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
