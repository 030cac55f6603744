"""Model updates end to end: edge-export push over a real Mosquitto to a live agent."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from agent.live import LiveAgent
from export.cli import main as export_main
from export.push import push
from tests.agent.model_update_helpers import (
    bad_golden_blob,
    keypair,
    manifest,
    model_blob,
    signal_row,
    storm_blob,
    write_model,
)
from tests.agent.mqtt_agent import command, live_agent, root, wait, write_config

pytestmark = pytest.mark.network

HEALTH = {"window_s": 1.0, "max_alert_rate_per_min": 30.0, "max_errors": 0}


def setup(tmp_path: Path, port: int, gw: str, **models: Any) -> tuple[Path, Any]:
    """Agent config with model A (1.0.0) configured, updates on, one trusted key."""
    key, pub = keypair(tmp_path)
    (tmp_path / "a.onnx").write_bytes(model_blob("1.0.0"))
    cfg = write_config(
        tmp_path, port, gw,
        detectors={"onnx": {"enabled": True, "model": "a.onnx", "providers": ["cpu"]}},
        escalation={"sample_every": 1},
        alerts={"k": 4, "n": 4, "clear_after": 2},
        models={"dir": "models", "public_keys": [pub.name], "stall_s": 0.5,
                "watch_interval_s": 0.2, "health": HEALTH, **models},
    )
    return cfg, key


class Feeder:
    """Feeds the normal signal into the agent's ingest queue; records every decision."""

    def __init__(self, agent: LiveAgent, gw: str) -> None:
        self.agent, self.topic = agent, f"sensors/{gw}/line1"
        self.sent = 0
        self.decided: Counter[float] = Counter()
        self.by_model: Counter[str] = Counter()
        agent.on_decision = self._on_decision
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _on_decision(self, d: Any) -> None:  # detection thread
        self.decided[d.ts] += 1
        m = self.agent.engine.cascade("line1").model
        if d.escalated[1]:  # stage 3 scored this point
            self.by_model[m.sha256 if m else "none"] += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            temp, vib = signal_row(self.sent)
            body = json.dumps({"ts": 1000.0 + self.sent, "values": {"temp": temp, "vib": vib}})
            self.agent.ingest.put_data(self.topic, body.encode())
            self.sent += 1
            time.sleep(0.002)

    def __enter__(self) -> Feeder:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        assert wait(lambda: sum(self.decided.values()) >= self.sent, 10)


@contextmanager
def running(cfg: Path, gw: str, probe: Any) -> Iterator[tuple[LiveAgent, Any, Feeder]]:
    with live_agent(cfg) as agent:
        p = probe([f"{root(gw)}/model/state", f"{root(gw)}/birth", f"reply/{gw}"])
        with Feeder(agent, gw) as feed:
            assert wait(lambda: feed.by_model, 10), "stage 3 never scored"
            yield agent, p, feed


def states(p: Any) -> list[dict[str, Any]]:
    return p.json("/model/state")


def wait_state(p: Any, state: str, timeout: float = 15.0, **match: Any) -> dict[str, Any]:
    def found() -> list[dict[str, Any]]:
        return [s for s in states(p) if s["state"] == state
                and all(s.get(k) == v for k, v in match.items())]

    assert p.wait_for(lambda: bool(found()), timeout), (state, match, states(p))
    return found()[-1]


def send(tmp_path: Path, broker: Any, gw: str, blob: bytes, man: dict[str, Any],
         name: str, **kw: Any) -> Any:
    path = write_model(tmp_path, name, blob, man)
    kw.setdefault("wait_s", 15.0)
    return push(path, manifest=path.with_name(path.name + ".manifest.json"),
                host=broker.host, port=broker.port, root=root(gw), chunk_size=512, **kw)


def test_push_activates_between_two_points(tmp_path: Path, broker: Any, probe: Any,
                                           capsys: Any) -> None:
    gw = "gw-push"
    cfg, key = setup(tmp_path, broker.port, gw)
    blob_b = model_blob("1.1.0")
    sha_a, sha_b = model_blob("1.0.0"), None
    with running(cfg, gw, probe) as (agent, p, feed):
        sha_a = agent.model.sha256
        path = write_model(tmp_path, "b.onnx", blob_b, manifest(blob_b, key))
        rc = export_main(["push", str(path), "--broker", broker.host, "--port",
                          str(broker.port), "--gateway-topic", root(gw), "--chunk-size", "400"])
        assert rc == 0, capsys.readouterr()
        active = wait_state(p, "active", version="1.1.0")
        sha_b = active["sha256"]
        assert agent.model.sha256 == sha_b != sha_a and active["provider"]
        seen = [s["state"] for s in states(p)]
        assert seen[-4:] == ["receiving", "received", "verified", "active"], seen
        n_a = feed.by_model[sha_a]
        assert wait(lambda: feed.by_model[sha_b] >= 20)
        assert feed.by_model[sha_a] == n_a  # nothing scored by A after the swap
        assert p.wait_for(lambda: any((b.get("model") or {}).get("sha256") == sha_b
                                      for b in p.json("/birth")))
        st = command(p, gw, "stats_now")["result"]
        assert st["model"]["sha256"] == sha_b and st["provider"] == "CPUExecutionProvider"
        mu = st["model_update"]
        assert mu["activations"] == 1 and mu["swap_ms"] is not None
        assert wait(lambda: agent.models.first_window_ms is not None)  # type: ignore[union-attr]
        print(f"\nswap: verified->swap {mu['swap_ms']:.2f} ms, verified->first window "
              f"{agent.models.first_window_ms:.2f} ms")  # type: ignore[union-attr]
    # no point lost or scored twice across the swap
    assert sorted(feed.decided) == [1000.0 + i for i in range(feed.sent)]
    assert set(feed.decided.values()) == {1}


def test_bad_models_are_refused_and_the_old_one_keeps_scoring(tmp_path: Path, broker: Any,
                                                              probe: Any) -> None:
    gw = "gw-refuse"
    cfg, key = setup(tmp_path, broker.port, gw)
    stranger, _ = keypair(tmp_path, "stranger")
    blob = model_blob("1.2.0")
    tampered = bytearray(blob)
    tampered[len(blob) // 3] ^= 0x01
    foreign = model_blob("1.3.0", features=("a", "b"))
    golden = bad_golden_blob("1.4.0")
    cases = [
        ("tampered", bytes(tampered), manifest(blob, key), "sha256_mismatch"),
        ("stranger", blob, manifest(blob, stranger), "unknown_key"),
        ("forged", blob, dict(manifest(blob, key), targets=["line1"]), "bad_signature"),
        ("unsigned", blob, manifest(blob, None), "unsigned"),
        ("features", foreign, manifest(foreign, key), "features_mismatch"),
        ("golden", golden, manifest(golden, key), "golden_mismatch"),
    ]
    with running(cfg, gw, probe) as (agent, _p, feed):
        sha_a = agent.model.sha256
        for name, data, man, reason in cases:
            res = send(tmp_path, broker, gw, data, man, f"{name}.onnx")
            assert res.state is not None and res.state["state"] == "failed", (name, res)
            assert res.state["reason"] == reason, (name, res.state)
            before = feed.by_model[sha_a]
            assert wait(lambda b=before: feed.by_model[sha_a] > b + 5), name  # A still scores
            assert agent.model.sha256 == sha_a
        # truncated push: chunk 0 never sent -> missing_chunks after stall_s, then resumed
        res = send(tmp_path, broker, gw, blob, manifest(blob, key), "trunc.onnx",
                   from_chunk=1, wait_s=5.0)
        assert res.state["state"] == "failed" and res.state["reason"] == "missing_chunks"
        assert res.state["missing"] == [[0, 0]] and agent.model.sha256 == sha_a
        res = send(tmp_path, broker, gw, blob, manifest(blob, key), "trunc.onnx", resume=True)
        assert res.sent == 1 and res.state["state"] == "active"
        assert agent.model.sha256 == res.state["sha256"]
        failures = agent.stats()["model_update"]["failures"]
        assert set(failures) == {r for *_x, r in cases} | {"missing_chunks"}


def test_rollback_by_command_and_on_an_alert_storm(tmp_path: Path, broker: Any,
                                                   probe: Any) -> None:
    gw = "gw-rollback"
    cfg, key = setup(tmp_path, broker.port, gw)
    blob_b, blob_c = model_blob("1.1.0"), storm_blob("1.5.0")
    with running(cfg, gw, probe) as (agent, p, _feed):
        sha_a = agent.model.sha256
        assert command(p, gw, "model_rollback")["code"] == 409  # nothing to roll back to
        res = send(tmp_path, broker, gw, blob_b, manifest(blob_b, key), "b.onnx")
        assert res.state["state"] == "active"
        reply = command(p, gw, "model_rollback")
        assert reply["code"] == 200 and reply["result"] == {"rolling_back_to": "config",
                                                         "kind": "autoencoder"}
        back = wait_state(p, "rolled_back", origin="command")
        assert back["sha256"] == sha_a and back["rolled_back"]["version"] == "1.1.0"
        assert agent.model.sha256 == sha_a
        # a model that alerts on everything: rolled back by the health check
        res = send(tmp_path, broker, gw, blob_c, manifest(blob_c, key), "c.onnx")
        assert res.state["state"] == "active"
        auto = wait_state(p, "rolled_back", origin="health")
        assert auto["reason"] == "alert_storm" and auto["sha256"] == sha_a
        assert agent.model.sha256 == sha_a and agent.failed is None


def test_restart_resumes_the_last_active_model_dropped_in_the_watch_dir(
        tmp_path: Path, broker: Any, probe: Any) -> None:
    gw = "gw-restart"
    watch = tmp_path / "drop"
    watch.mkdir()
    cfg, key = setup(tmp_path, broker.port, gw, watch_dir="drop")
    blob_b = model_blob("1.1.0")
    with running(cfg, gw, probe) as (agent, p, _feed):
        staged = write_model(tmp_path, "b.onnx", blob_b, manifest(blob_b, key))
        shutil.copy(staged, watch / "b.onnx")  # model first, manifest second
        shutil.copy(staged.with_name("b.onnx.manifest.json"), watch / "b.onnx.manifest.json")
        active = wait_state(p, "active", origin="watch:b.onnx")
        assert agent.model.sha256 == active["sha256"]
        assert wait(lambda: (watch / "b.onnx.done").exists())
    with running(cfg, gw, probe) as (agent, p, feed):
        assert agent.model.sha256 == active["sha256"]
        assert feed.by_model[active["sha256"]] > 0
        assert wait_state(p, "active", origin="startup")["sha256"] == active["sha256"]
