"""Event streams live over a real Mosquitto on loopback (issue #8).

    PYTHONPATH=. python benchmarks/bench_events_live.py [--quick]

One run: a tiny next-event model is trained (``export.train``, a few seconds), a
:class:`~agent.live.LiveAgent` runs in this process with one event source (stage 1 +
the model, ``escalate: transition``), a Mosquitto of its own on a free loopback port:

1. **throughput**: synthetic workflow events (``agent.synthetic_events``) published as
   fast as a paho client can at QoS 1, in ``{"events": [...]}`` batches of 100 and as
   single events; events/s = events / (first publish -> last event decided);
2. **latency** of paced single events (200/s): ingest-queue -> decision
   (``stats.latency_ms``, the agent's own window);
3. **model push**: the same model re-versioned, signed and pushed with ``edge-export
   push`` (chunked, QoS 1); ``verified -> swapped`` and push wall time.

Writes ``benchmarks/results/events_live.json`` and the ``events_live`` section of
``benchmarks/README.md``. Numbers depend on the machine (2 shared cores here).
"""

from __future__ import annotations

import argparse
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

import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import machine, now_utc, save_json, update_readme, versions  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
GW = "bench-ev"
ROOT_TOPIC = f"edge/v1/bench/{GW}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(pred: Any, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.005)
    return False


def train(tmp: Path) -> tuple[Path, float]:
    from agent.synthetic_events import generate_events, write_events_csv
    from export.config import config_from_dict
    from export.train import train_run

    write_events_csv(str(tmp / "train.csv"), [generate_events(4000, seed=1)])
    cfg = config_from_dict({
        "name": "ne-bench", "version": "1.0.0", "architecture": "next_event",
        "data": {"window": 10},
        "training": {"epochs": 4, "batch_size": 128, "learning_rate": 0.01, "threads": 1},
        "model": {"embedding": 16, "hidden": 32, "top_k": 5},
    })
    t0 = time.perf_counter()
    res = train_run(cfg, tmp / "train.csv", tmp / "run", progress=False)
    return res.model_path, time.perf_counter() - t0


def keys(tmp: Path) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    (tmp / "ops.pub.pem").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return key


def config(tmp: Path, port: int, model: Path) -> Path:
    doc = {
        "version": "1", "agent": {"id": GW, "stats_interval_s": 3600},
        "streams": [{"id": "line1", "channels": ["t"]}],
        "events": {"sources": [{"id": "plc1"}], "rarity": {"min_events": 200},
                   "sequence": {"enabled": True, "model": str(model)}},
        "checkpoint": {"path": "state/ckpt.bin"},
        "mqtt": {"enabled": True, "port": port, "site": "bench", "ingest_qos": 1,
                 "queue_size": 200_000},
        "store": {"path": "state/outbox.sqlite"},
        "models": {"dir": "models", "public_keys": ["ops.pub.pem"],
                   "health": {"window_s": 1.0, "max_alert_rate_per_min": 1e6}},
    }
    p = tmp / "agent.yaml"
    p.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return p


def publisher(port: int) -> paho.Client:
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{port}")
    c.max_queued_messages_set(0)
    c.max_inflight_messages_set(100)
    c.connect("127.0.0.1", port, 30)
    c.loop_start()
    return c


def throughput(agent: Any, pub: paho.Client, items: list[tuple[float, str]], batch: int
               ) -> dict[str, Any]:
    topic = f"{ROOT_TOPIC}/events/plc1"
    ev = agent.events
    start_n = ev.engine.events_in
    t0 = time.perf_counter()
    infos = []
    for k in range(0, len(items), batch):
        chunk = items[k:k + batch]
        body = ({"events": [{"ts": t, "event": e} for t, e in chunk]} if batch > 1
                else {"ts": chunk[0][0], "event": chunk[0][1]})
        infos.append(pub.publish(topic, json.dumps(body), qos=1))
    assert _wait(lambda: ev.engine.events_in - start_n >= len(items), 300), "not all decided"
    secs = time.perf_counter() - t0
    return {"batch": batch, "events": len(items), "seconds": round(secs, 3),
            "events_per_s": round(len(items) / secs, 1),
            "escalation_rate": round(ev.engine.stats()["escalation_rate"], 4)}


def latency(agent: Any, pub: paho.Client, items: list[tuple[float, str]], rate: float
            ) -> dict[str, Any]:
    topic = f"{ROOT_TOPIC}/events/plc1"
    from agent.publisher import LatencyWindow

    agent.latency = LatencyWindow()  # a fresh window for this phase only
    start_n = agent.events.engine.events_in
    t0 = time.perf_counter()
    for k, (t, e) in enumerate(items):
        due = t0 + k / rate
        while time.perf_counter() < due:
            time.sleep(0.0005)
        pub.publish(topic, json.dumps({"ts": t, "event": e}), qos=1)
    assert _wait(lambda: agent.events.engine.events_in - start_n >= len(items), 60)
    return {"rate_per_s": rate, "events": len(items), **agent.latency.summary_ms()}


def push(tmp: Path, port: int, model: Path, key: Any, agent: Any) -> dict[str, Any]:
    from export.cli import main as export_main
    from export.signing import build_manifest, sign_manifest
    from tests.agent.helpers import meta_of, with_meta

    blob = with_meta(model.read_bytes(), version="1.1.0")
    meta = meta_of(blob)
    golden = [{"window": [list(r) for r in g.window], "raw_score": g.raw_score}
              for g in meta.golden]
    man = sign_manifest(build_manifest(blob, name=meta.name, version=meta.version,
                                       file="ne2.onnx", golden=golden, targets=["plc1"]), key)
    path = tmp / "ne2.onnx"
    path.write_bytes(blob)
    path.with_name(path.name + ".manifest.json").write_text(json.dumps(man), encoding="utf-8")
    t0 = time.perf_counter()
    rc = export_main(["push", str(path), "--broker", "127.0.0.1", "--port", str(port),
                      "--gateway-topic", ROOT_TOPIC, "--chunk-size", "8192"])
    wall = time.perf_counter() - t0
    assert rc == 0 and _wait(lambda: agent.events.model.meta.version == "1.1.0", 10)
    st = agent.models.stats()
    return {"model_bytes": len(blob), "push_wall_s": round(wall, 3),
            "verified_to_swap_ms": round(st["swap_ms"], 2) if st["swap_ms"] else None}


def readme(res: dict[str, Any]) -> str:
    rows = "\n".join(f"| {'batches of ' + str(r['batch']) if r['batch'] > 1 else 'single events'}"
                     f" | {r['events']} | {r['events_per_s']:,.0f} | {r['escalation_rate']} |"
                     for r in res["throughput"])
    lat, pu = res["latency"], res["push"]
    return (
        f"Events live over Mosquitto, `python benchmarks/bench_events_live.py"
        f"{' --quick' if res['quick'] else ''}` ({res['when']}, "
        f"{res['machine'].get('cpu', '?')}, "
        f"{res['machine'].get('cpus', '?')} CPUs shared). One source, stage 1 + a next-event "
        f"LSTM (history 10, {res['vocab']} ids, top-5), `escalate: transition`, QoS 1, the "
        f"agent in the publisher's process.\n\n"
        "| input | events | events/s | share escalated to the model (cumulative) |\n"
        "|---|---|---|---|\n"
        f"{rows}\n\n"
        f"Paced single events at {lat['rate_per_s']:g}/s: ingest queue -> decision p50 "
        f"{lat.get('p50')} ms, p99 {lat.get('p99')} ms. Pushing a next-event model "
        f"({pu['model_bytes']} bytes, signed, `edge-export push`): {pu['push_wall_s']} s "
        f"wall, verified -> swapped into the cascade {pu['verified_to_swap_ms']} ms.\n"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer events (a smoke run)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    mosq = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    n = 5_000 if args.quick else 30_000
    from agent.live import LiveAgent
    from agent.runtime import load_effective
    from agent.synthetic_events import generate_events

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        port = _free_port()
        (tmp / "mosq.conf").write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                                       "max_queued_messages 1000000\n")
        broker = subprocess.Popen([mosq, "-c", str(tmp / "mosq.conf")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            model, train_s = train(tmp)
            key = keys(tmp)
            cfg_path = config(tmp, port, model)
            base, overlay, cfg = load_effective(cfg_path)
            agent = LiveAgent(str(cfg_path), base, overlay, cfg, boot="bench")
            agent.start()
            assert agent.transport.wait_ready(10)
            pub = publisher(port)
            s = generate_events(n * 2 + 2000, seed=3)
            items = list(zip(s.ts, s.events, strict=True))
            res: dict[str, Any] = {
                "when": now_utc(), "machine": machine(), "quick": args.quick,
                "versions": versions("onnxruntime", "paho-mqtt", "numpy"),
                "train_s": round(train_s, 2), "vocab": len(agent.events.model.vocab),
                "throughput": [throughput(agent, pub, items[:n], 100),
                               throughput(agent, pub, items[n:n + n // 5], 1)],
            }
            k = n + n // 5
            res["latency"] = latency(agent, pub, items[k:k + (500 if args.quick else 2000)],
                                     200.0)
            res["push"] = push(tmp, port, model, key, agent)
            res["stats"] = {k2: v for k2, v in agent.stats()["events"].items()
                            if k2 in ("events_in", "events_rejected", "alerts",
                                      "escalation_rate", "model")}
            pub.loop_stop()
            agent.shutdown(flush_timeout=5.0)
        finally:
            broker.terminate()
            broker.wait(10)
    print(json.dumps(res, indent=2, default=str))
    save_json(RESULTS / "events_live.json", res)
    update_readme("events_live", readme(res))


if __name__ == "__main__":
    main()
