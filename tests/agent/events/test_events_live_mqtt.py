"""Event streams in the live agent over a real Mosquitto: ingest, alerts with the model's
top k, bad payloads, next-event model pushes (swap, rollback) and checkpoint restarts."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from agent.events.live import events_checkpoint_path
from agent.live import LiveAgent
from agent.model_kind import peek_kind
from agent.synthetic_events import generate_events, write_events_csv
from export.cli import main as export_main
from export.config import config_from_dict
from export.train import train_run
from tests.agent.helpers import meta_of, with_meta
from tests.agent.model_update_helpers import keypair, manifest, write_model
from tests.agent.mqtt_agent import command, live_agent, root, wait, write_config
from tests.conftest import Probe

pytestmark = pytest.mark.network

UNKNOWN = "ALM_NEVER_SEEN"
SCHEMAS = Path(__file__).resolve().parents[3] / "docs" / "schemas"


def schema(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    return doc


@pytest.fixture(scope="module")
def ne_blob(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A tiny next-event model (version 1.0.0, top_k 5), trained and exported for real."""
    d = tmp_path_factory.mktemp("ne_live")
    write_events_csv(str(d / "train.csv"), [generate_events(2000, seed=11)])
    cfg = config_from_dict({
        "name": "ne-live", "version": "1.0.0", "architecture": "next_event",
        "data": {"window": 6},
        "training": {"epochs": 2, "batch_size": 128, "learning_rate": 0.01, "threads": 1},
        "model": {"embedding": 8, "hidden": 16, "top_k": 5},
    })
    return train_run(cfg, d / "train.csv", d / "run", progress=False).model_path.read_bytes()


def events_cfg(tmp_path: Path, port: int, gw: str, **over: Any) -> Path:
    ev: dict[str, Any] = {"sources": [{"id": "plc1"}, {"id": "plc2", "sequence": False}],
                          "rarity": {"min_events": 50}}
    return write_config(tmp_path, port, gw, events=ev | over.pop("events", {}),
                        mqtt={"ingest_qos": 1} | over.pop("mqtt", {}), **over)


class Events:
    """Publishes a synthetic workflow on a source's topic, in batches, in time order."""

    def __init__(self, p: Any, gw: str, source: str = "plc1", seed: int = 5) -> None:
        s = generate_events(4000, seed=seed, source=source)
        self.items = list(zip(s.ts, s.events, strict=True))
        self.p, self.topic, self.i = p, f"{root(gw)}/events/{source}", 0

    def send(self, n: int, batch: int = 50) -> None:
        while n > 0:
            chunk = self.items[self.i:self.i + min(batch, n)]
            body = {"events": [{"ts": t, "event": e} for t, e in chunk]}
            jsonschema.validate(body, schema("event.json"))
            self.p.publish(self.topic, json.dumps(body))
            self.i += len(chunk)
            n -= len(chunk)

    def one(self, event: str, **extra: Any) -> None:
        ts = self.items[self.i - 1][0] + 0.5
        self.p.publish(self.topic, json.dumps({"ts": ts, "event": event, **extra}))


def processed(agent: LiveAgent, n: int) -> bool:
    return agent.events is not None and agent.events.engine.events_in >= n


def unknown_event_alert(agent: LiveAgent, p: Any, feed: Events, gw: str) -> dict[str, Any]:
    """Warm up, wait for a quiet moment (no episode open), send an event never seen."""
    feed.send(300)
    assert wait(lambda: processed(agent, feed.i), 20)
    for _ in range(40):
        if not agent.events.engine.stats()["sources"]["plc1"]["alert_active"]:  # type: ignore[union-attr]
            break
        feed.send(10, batch=10)
        assert wait(lambda: processed(agent, feed.i), 10)
    feed.one(UNKNOWN)

    def found() -> list[dict[str, Any]]:
        return [a for a in p.json(f"{root(gw)}/alert/plc1")
                if a.get("unexpected_event") == UNKNOWN]

    assert p.wait_for(lambda: bool(found()), 15), p.json("/alert/")
    return found()[0]


@pytest.fixture
def probe_gw(probe: Any) -> Any:
    def make(gw: str) -> Any:
        return probe([f"{root(gw)}/alert/#", f"{root(gw)}/model/state", f"reply/{gw}",
                      f"{root(gw)}/birth"])
    return make


def test_live_events_alert_with_the_models_top_k(tmp_path: Path, broker: Any, probe_gw: Any,
                                                  ne_blob: bytes) -> None:
    gw = "gw-ev-live"
    (tmp_path / "ne.onnx").write_bytes(ne_blob)
    cfg = events_cfg(tmp_path, broker.port, gw,
                     events={"sequence": {"enabled": True, "model": "ne.onnx"}})
    p = probe_gw(gw)
    with live_agent(cfg) as agent:
        assert agent.events is not None
        assert (f"{root(gw)}/events/plc1", 1) in agent._subscriptions()
        assert (f"{root(gw)}/events/plc2", 1) in agent._subscriptions()
        rec = unknown_event_alert(agent, p, Events(p, gw), gw)
        assert rec["event"] == "raise" and rec["stream"] == "plc1" and rec["kind"] == "events"
        assert rec["stage"] == 3 and rec["reason"] in ("new_value", "sequence")
        assert len(rec["expected_top_k"]) == 5 and UNKNOWN not in rec["expected_top_k"]
        probs = rec["expected_probabilities"]
        assert len(probs) == 5 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1
        assert rec["model"] == {"name": "ne-live", "version": "1.0.0"}
        jsonschema.validate(rec, schema("alert.json"))
        st = agent.stats()["events"]
        jsonschema.validate(st, schema("stats.json")["properties"]["events"])
        assert st["events_in"] == agent.events.engine.events_in > 300
        assert st["sources"]["plc1"]["sequence_model"] and st["events_rejected"] == 0
        # the same outbox as sensor alerts: every event alert was stored, then published
        assert wait(lambda: agent.store.backlog() == 0, 10)


def test_bad_event_payloads_are_counted_and_logged_once(
        tmp_path: Path, broker: Any, probe_gw: Any, caplog: pytest.LogCaptureFixture) -> None:
    gw = "gw-ev-bad"
    cfg = events_cfg(tmp_path, broker.port, gw, events={"max_batch": 20})
    p = probe_gw(gw)
    topic = f"{root(gw)}/events/plc1"
    bad = [b"{oops", b"[1, 2]", b'{"ts": 100}', b'{"ts": 100, "event": [1]}',
           b'{"ts": "yesterday", "event": "A"}', b'{"ts": 100, "event": ""}',
           json.dumps({"events": [{"ts": i, "event": "A"} for i in range(21)]}).encode(),
           b'{"events": {"ts": 1}}', b"{oops again"]
    caplog.set_level(logging.WARNING, logger="agent.input")
    with live_agent(cfg) as agent:
        p.publish(topic, json.dumps({"events": [{"ts": 10, "event": "A"},
                                                {"ts": 11, "event": True},
                                                {"ts": 12, "event": 7}]}))
        for b in bad:
            p.publish(topic, b)
        p.publish(topic, b'{"ts": 9, "event": "B"}')  # older than the last one
        p.publish(topic, b'{"event": "C"}')  # no ts: time of receipt, counted
        assert wait(lambda: agent.messages_in >= 12, 10)
        st = agent.stats()["events"]
    assert st["rejected"] == {"bad_batch": 1, "bad_event": 2, "bad_timestamp": 1,
                              "batch_too_large": 1, "empty_event": 1, "invalid_json": 2,
                              "missing_event": 1, "bad_shape": 1, "out_of_order": 1}
    assert st["events_in"] == 5 and st["ts_defaulted"] == 1 and st["messages_in"] == 12
    assert st["sources"]["plc1"]["events"] == 3  # A, 7 and C were scored
    logged = [r.getMessage() for r in caplog.records if "invalid_json" in r.getMessage()]
    assert len(logged) == 1, logged


def _state(p: Any, state: str, version: str) -> dict[str, Any]:
    def found() -> list[dict[str, Any]]:
        return [s for s in p.json("/model/state") if s["state"] == state
                and s.get("version") == version]

    assert p.wait_for(lambda: bool(found()), 30), p.json("/model/state")
    return found()[-1]


def test_next_event_model_is_pushed_swapped_and_rolled_back(
        tmp_path: Path, broker: Any, probe_gw: Any, ne_blob: bytes, capsys: Any) -> None:
    gw = "gw-ev-push"
    key, pub = keypair(tmp_path)
    cfg = events_cfg(tmp_path, broker.port, gw,
                     models={"dir": "models", "public_keys": [pub.name],
                             "health": {"window_s": 0.5, "max_alert_rate_per_min": 1e6}})
    p = probe_gw(gw)
    blob2 = with_meta(ne_blob, version="1.1.0")

    def push(name: str, blob: bytes) -> None:
        path = write_model(tmp_path, name, blob, manifest(blob, key, targets=("plc1",)))
        rc = export_main(["push", str(path), "--broker", broker.host, "--port",
                          str(broker.port), "--gateway-topic", root(gw), "--chunk-size", "4096",
                          "--wait", "15"])
        assert rc == (0 if blob is not bad else 1), capsys.readouterr()

    assert peek_kind(ne_blob) == "next_event"
    meta = meta_of(ne_blob)
    bad = with_meta(ne_blob, version="0.9.0", golden=tuple(
        dataclasses.replace(g, raw_score=g.raw_score / 2) for g in meta.golden))
    with live_agent(cfg) as agent:
        assert agent.events is not None and agent.events.model is None and agent.model is None
        push("bad.onnx", bad)
        refused = _state(p, "failed", "0.9.0")
        assert refused["reason"] == "golden_mismatch", refused
        assert agent.events.model is None
        push("ne1.onnx", ne_blob)
        st = _state(p, "active", "1.0.0")
        assert st["kind"] == "next_event" and st["origin"] == "mqtt"
        jsonschema.validate(st, schema("model-state.json"))
        assert wait(lambda: agent.events.model is not None, 5)  # type: ignore[union-attr]
        assert agent.model is None  # the autoencoder slot is untouched
        rec = unknown_event_alert(agent, p, Events(p, gw), gw)
        assert rec["stage"] == 3 and rec["model"]["version"] == "1.0.0"
        assert len(rec["expected_top_k"]) == 5
        assert agent.stats()["events"]["model"]["version"] == "1.0.0"
        births = [b for b in p.json(f"{root(gw)}/birth") if "events" in b]
        assert births and births[-1]["events"]["model"]["version"] == "1.0.0"
        assert births[-1]["events"]["sources"]["plc1"] == {
            "kind": "events", "topic": f"{root(gw)}/events/plc1", "sequence": True}
        jsonschema.validate(births[-1], schema("birth.json"))
        assert not agent.events.engine.stats()["sources"]["plc2"]["sequence_model"]

        push("ne2.onnx", blob2)
        _state(p, "active", "1.1.0")
        assert wait(lambda: agent.events.model.meta.version == "1.1.0", 5)  # type: ignore[union-attr]
        ptr = json.loads((tmp_path / "models" / "next_event" / "active.json").read_text())
        assert len(ptr["history"]) == 2 and ptr["history"][1] == "config"
        assert not (tmp_path / "models" / "active.json").exists()

        # the autoencoder slot has no previous model; an unknown kind is a bad argument
        reply = command(p, gw, "model_rollback", {"args": {"kind": "autoencoder"}})
        assert reply["code"] == 409 and "autoencoder" in reply["error"], reply
        assert command(p, gw, "model_rollback", {"args": {"kind": "lstm"}})["code"] == 400
        reply = command(p, gw, "model_rollback", {"args": {"kind": "next_event"}})
        assert reply["code"] == 200 and reply["result"]["kind"] == "next_event", reply
        rolled = _state(p, "rolled_back", "1.0.0")
        assert rolled["kind"] == "next_event" and rolled["rolled_back"]["version"] == "1.1.0"
        assert wait(lambda: agent.events.model.meta.version == "1.0.0", 5)  # type: ignore[union-attr]
    # a restart comes back with the last active next-event model from the store
    base_cfg = cfg
    with live_agent(base_cfg, boot="t2") as agent:
        assert agent.events is not None and agent.events.model is not None
        assert agent.events.model.meta.version == "1.0.0"


def test_next_event_push_refused_without_a_sequence_source(
        tmp_path: Path, broker: Any, probe_gw: Any, ne_blob: bytes, capsys: Any) -> None:
    gw = "gw-ev-nofit"
    key, pub = keypair(tmp_path)
    cfg = write_config(tmp_path, broker.port, gw,
                       events={"sources": [{"id": "plc1", "sequence": False}]},
                       models={"dir": "models", "public_keys": [pub.name]})
    p = probe_gw(gw)
    with live_agent(cfg) as agent:
        path = write_model(tmp_path, "ne.onnx", ne_blob, manifest(ne_blob, key))
        export_main(["push", str(path), "--broker", broker.host, "--port", str(broker.port),
                     "--gateway-topic", root(gw), "--chunk-size", "4096", "--wait", "10"])
        st = _state(p, "failed", "1.0.0")
        assert st["reason"] == "features_mismatch" and "sequence: true" in st["detail"]
        assert agent.events is not None and agent.events.model is None


@pytest.fixture
def restartable(tmp_path: Path, broker: Any) -> Iterator[Path]:
    yield events_cfg(tmp_path, broker.port, "gw-ev-ckpt")


def test_event_state_survives_a_restart_and_a_corrupt_checkpoint_starts_fresh(
        tmp_path: Path, restartable: Path, probe_gw: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    gw = "gw-ev-ckpt"
    p = probe_gw(gw)
    feed = Events(p, gw)
    with live_agent(restartable) as agent:
        feed.send(400)
        assert wait(lambda: processed(agent, 400), 20)
        before = agent.events.engine.state_dict()  # type: ignore[union-attr]
        counted = agent.events.engine.cascade("plc1").counts["events"]  # type: ignore[union-attr]
    ckpt = events_checkpoint_path(tmp_path / "state" / "ckpt.bin")
    assert ckpt.exists()
    with live_agent(restartable, boot="t2") as agent:
        ev = agent.events
        assert ev is not None and ev.checkpoint["restored"]
        after = ev.engine.state_dict()
        assert after["cascades"]["plc1"]["history"] == before["cascades"]["plc1"]["history"]
        assert len(after["cascades"]["plc1"]["history"]) == 400
        assert after["cascades"]["plc1"]["rarity"] == before["cascades"]["plc1"]["rarity"]
        assert ev.engine.cascade("plc1").counts["events"] == counted
        assert not ev.engine.cascade("plc1").warming_up
        feed.send(10)  # the next events continue the restored state (ts order kept)
        assert wait(lambda: ev.engine.cascade("plc1").counts["events"] == counted + 10, 10)
        assert ev.engine.stats()["events_rejected"] == 0
    blob = bytearray(ckpt.read_bytes())
    blob[-5] ^= 0xFF
    ckpt.write_bytes(bytes(blob))
    caplog.set_level(logging.WARNING, logger="agent.events.live")
    with live_agent(restartable, boot="t3") as agent:
        ev = agent.events
        assert ev is not None and not ev.checkpoint["restored"]
        assert ev.checkpoint["rejected"] == 1 and "sha256" in ev.checkpoint["error"]
        assert agent.stats()["events"]["checkpoint"]["rejected"] == 1
        assert ev.engine.cascade("plc1").counts["events"] == 0 and ev.engine.cascade(
            "plc1").warming_up
    warned = [r for r in caplog.records if "event checkpoint" in r.getMessage()]
    assert len(warned) == 1


def test_live_log_lines_become_template_events(tmp_path: Path, broker: Any,
                                               probe_gw: Any) -> None:
    gw = "gw-ev-logs"
    cfg = events_cfg(tmp_path, broker.port, gw,
                     events={"sources": [{"id": "app", "kind": "logs"}],
                             "logs": {"state_path": "state/templates.json"}})
    p = probe_gw(gw)
    topic = f"{root(gw)}/logs/app"
    normal = [f"2024-01-01T00:{i // 60:02d}:{i % 60:02d}Z INFO pump: pressure ok value={i % 7}"
              for i in range(120)]
    with live_agent(cfg) as agent:
        assert (topic, 1) in agent._subscriptions()
        for k in range(0, 120, 40):
            p.publish(topic, "\n".join(normal[k:k + 40]))
        assert wait(lambda: processed(agent, 120), 10)
        p.publish(topic, "2024-01-01T01:00:00Z ERROR db: connection refused to 10.0.0.1")
        assert p.wait_for(lambda: bool(p.json(f"{root(gw)}/alert/app")), 10)
        rec = p.json(f"{root(gw)}/alert/app")[0]
        jsonschema.validate(rec, schema("alert.json"))
        st = agent.stats()["events"]
    assert rec["kind"] == "logs" and rec["level"] == "ERROR" and rec["component"] == "db"
    assert rec["template"] == "connection refused to <IP>" and rec["reason"] == "new_value"
    assert st["logs"]["lines"] == 121 and st["logs"]["templates"] == 2
    assert st["sources"]["app"]["events"] == 121 and st["events_rejected"] == 0
    assert (tmp_path / "state" / "templates.json").exists()  # saved with the checkpoint


def test_event_alerts_raised_during_a_broker_outage_are_delivered_after_it(
        tmp_path: Path, own_broker: Any) -> None:
    gw = "gw-ev-outage"
    cfg = events_cfg(tmp_path, own_broker.port, gw,
                     mqtt={"ingest_qos": 1, "reconnect_min_s": 1.0, "reconnect_max_s": 1.5})
    topic = f"{root(gw)}/events/plc1"
    before = Probe(own_broker.host, own_broker.port, [f"{root(gw)}/alert/#"])
    feed = Events(before, gw)
    try:
        with live_agent(cfg) as agent:
            feed.send(300)
            assert wait(lambda: processed(agent, 300), 20)
            own_broker.stop()  # SIGKILL
            assert wait(lambda: not agent.transport.connected, 10)
            ts = feed.items[feed.i][0]
            for n in range(3):  # queued events (as paho hands them over): 3 raise + 3 clear
                body = [{"ts": ts + 10 * n, "event": f"ALM_OUTAGE_{n}"}] + [
                    {"ts": ts + 10 * n + 1 + k, "event": e}
                    for k, (_t, e) in enumerate(feed.items[feed.i + 6 * n:feed.i + 6 * n + 6])]
                agent.ingest.put_data(topic, json.dumps({"events": body}).encode())
            assert wait(lambda: processed(agent, 321), 10)
            assert wait(lambda: agent.store.backlog() >= 3, 10)  # held in the outbox
            held = agent.store.backlog()
            own_broker.start()
            after = Probe(own_broker.host, own_broker.port, [f"{root(gw)}/alert/#"])
            try:
                assert after.wait_for(lambda: len({a["msg_id"] for a in after.json(
                    "/alert/plc1")}) >= held, 20), after.json("/alert/")
                got = after.json("/alert/plc1")
            finally:
                after.close()
    finally:
        before.close()
    raised = {a["unexpected_event"] for a in got if a["event"] == "raise"}
    assert {f"ALM_OUTAGE_{n}" for n in range(3)} <= raised
    assert all(a.get("replayed") for a in got if a.get("unexpected_event", "").startswith(
        "ALM_OUTAGE"))
