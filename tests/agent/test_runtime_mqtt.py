"""The live agent against a real Mosquitto (started by tests/conftest.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from firmware_bridge.batch import encode_batch
from tests.agent.mqtt_agent import (
    command,
    live_agent,
    normal_then_spikes,
    point,
    root,
    wait,
    write_config,
)

pytestmark = pytest.mark.network


def test_ingest_every_payload_format(tmp_path: Path, broker: Any, probe: Any) -> None:
    gw = "gw-ingest"
    with live_agent(write_config(tmp_path, broker.port, gw)) as agent:
        p = probe([f"reply/{gw}", f"{root(gw)}/#"])
        p.publish(f"sensors/{gw}/line1", point(1000.0, temp=20.0, vib=1.0))
        p.publish(f"sensors/{gw}/line1", json.dumps(
            [{"ts": 1001 + i, "values": {"temp": 20.0, "vib": 1.0}} for i in range(3)]))
        p.publish(f"sensors/{gw}/csv/line1", b"1004,20.1,1.0\n1005000,20.2,1.1")
        p.publish(f"sensors/{gw}/pump", encode_batch("pump", ["t", "rpm"],
                                                     [(1.0, [1.0, 2.0]), (2.0, [1.1, 2.1])]))
        p.publish(f"sensors/{gw}/line1", json.dumps(
            {"ts": "2024-01-01T00:00:00Z", "values": {"temp": 20.0, "vib": 1.0}}))
        p.publish(f"sensors/{gw}/line1", json.dumps({"values": {"temp": 20.0, "vib": 1.0}}))
        assert wait(lambda: agent.engine.points_in == 10), agent.engine.stats()
        stats = command(p, gw, "stats_now")["result"]
        assert stats["points_in"] == 10 and stats["points_rejected"] == 0, stats
        assert stats["ts_defaulted"] == 1 and stats["messages_in"] == 6
        assert stats["latency_ms"]["p99"] is not None


def test_bad_payloads_counted_and_agent_keeps_going(tmp_path: Path, broker: Any,
                                                    probe: Any) -> None:
    gw = "gw-bad"
    cfg = write_config(tmp_path, broker.port, gw, mqtt={"max_payload_bytes": 4096})
    with live_agent(cfg) as agent:
        p = probe([f"{root(gw)}/stats", f"reply/{gw}"])
        t = f"sensors/{gw}/line1"
        for bad in (b"{not json", b'{"ts": 1, "values": "x"}', b'{"ts": true, "values": {"a": 1}}',
                    b"\xff\xfe", b"[" + b"1," * 5000 + b"1]"):
            p.publish(t, bad)
        p.publish(t, b'{"ts": 5, "values": {"temp": NaN, "vib": "high"}}')
        p.publish(f"sensors/{gw}/nosuchstream", point(1.0, a=1.0))
        p.publish(t, point(10.0, temp=20.0, vib=1.0))
        assert wait(lambda: agent.messages_in == 8)
        rejected = command(p, gw, "stats_now")["result"]["rejected"]
        for reason in ("invalid_json", "bad_shape", "bad_timestamp", "bad_encoding",
                       "too_large", "non_finite", "non_numeric", "unknown_stream"):
            assert rejected.get(reason, 0) >= 1, (reason, rejected)
        assert agent.engine.stats()["streams"]["line1"]["warming_up"]
        assert p.wait_for(lambda: any(s["rejected"].get("too_large") for s in p.json("/stats")))
        assert agent.failed is None


def test_birth_and_status_are_retained(tmp_path: Path, broker: Any, probe: Any) -> None:
    gw = "gw-birth"
    with live_agent(write_config(tmp_path, broker.port, gw)) as agent:
        assert wait(lambda: agent.transport.counts["connects"] == 1)
        late = probe([f"{root(gw)}/status", f"{root(gw)}/birth"])
        assert late.wait_for(lambda: len(late.messages) >= 2)
        retained = {t.rsplit("/", 1)[-1]: (json.loads(pl), r) for t, pl, r, _ in late.messages}
        status, birth = retained["status"], retained["birth"]
        assert status[1] and status[0]["state"] == "online" and status[0]["session"] >= 1
        assert birth[1] and birth[0]["streams"] == {"line1": ["temp", "vib"], "pump": ["t", "rpm"]}
        assert birth[0]["detectors"]["stage1"] == ["zscore:both"] and "agent_version" in birth[0]
        assert birth[0]["model"] is None and birth[0]["config_version"] == "1"
    after = probe([f"{root(gw)}/status"])
    assert after.wait_for(lambda: bool(after.json("/status")))
    assert after.json("/status")[-1]["state"] == "offline"
    assert after.json("/status")[-1]["reason"] == "shutdown"


def test_config_desired_valid_invalid_partial(tmp_path: Path, broker: Any, probe: Any) -> None:
    gw = "gw-config"
    path = write_config(tmp_path, broker.port, gw)
    reported_t = f"{root(gw)}/config/reported"
    p = probe([reported_t, f"{root(gw)}/birth"])
    with live_agent(path) as agent:
        for i in range(30):
            p.publish(f"sensors/{gw}/line1", point(1000.0 + i, temp=20.0 + (i % 3) * 0.1, vib=1.0))
        p.publish(f"{root(gw)}/config/desired",
                  json.dumps({"version": "2", "alerts": {"threshold": 0.7, "clear_threshold": 0.6},
                              "agent": {"stats_interval_s": 2.0}}), retain=True)
        assert p.wait_for(lambda: any(r["version"] == "2" for r in p.json("/config/reported")))
        assert p.json("/config/reported")[-1] == {"version": "2", "code": 200, "error": None}
        assert agent.cfg.alerts.threshold == 0.7 and agent.cfg.agent.stats_interval_s == 2.0
        # control goes before queued data, but no point is dropped and counters carry over
        assert wait(lambda: agent.engine.points_in == 30)
        assert p.wait_for(lambda: any(b["config_version"] == "2" for b in p.json("/birth")))
        p.publish(f"{root(gw)}/config/desired",
                  json.dumps({"version": "3", "alerts": {"k": 99}}), retain=True)
        assert p.wait_for(lambda: any(r["version"] == "3" for r in p.json("/config/reported")))
        bad = p.json("/config/reported")[-1]
        assert bad["code"] == 400 and "alerts.k" in bad["error"]
        assert agent.cfg.version == "2" and agent.cfg.alerts.threshold == 0.7
        p.publish(f"{root(gw)}/config/desired", b"", retain=True)  # clear the retained one
    assert json.loads((tmp_path / "state" / "desired.json").read_text())["version"] == "2"
    with live_agent(path) as again:  # the accepted config survives a restart
        assert again.cfg.version == "2" and again.cfg.alerts.threshold == 0.7


def test_every_command(tmp_path: Path, broker: Any, probe: Any) -> None:
    gw = "gw-cmd"
    with live_agent(write_config(tmp_path, broker.port, gw)) as agent:
        p = probe([f"reply/{gw}", f"{root(gw)}/birth", f"{root(gw)}/cmd/+/res"])
        for ts, values in normal_then_spikes(30, spikes=()):
            p.publish(f"sensors/{gw}/line1", point(ts, **values))
        assert wait(lambda: agent.engine.points_in == 30)
        pong = command(p, gw, "ping", {"id": 42})
        assert pong["code"] == 200 and pong["id"] == 42 and pong["result"]["pong"]
        births = len(p.json("/birth"))
        assert command(p, gw, "rebirth")["code"] == 200
        assert p.wait_for(lambda: len(p.json("/birth")) > births)
        assert command(p, gw, "rebaseline", {"args": {"stream": "line1"}})["result"] == {
            "streams": ["line1"]}
        assert command(p, gw, "rebaseline")["result"]["streams"] == ["line1", "pump"]
        assert command(p, gw, "rebaseline", {"args": {"stream": "zzz"}})["code"] == 404
        assert command(p, gw, "reload")["code"] == 200
        assert command(p, gw, "set_log_level", {"args": {"level": "debug"}})["code"] == 200
        assert command(p, gw, "set_log_level", {"args": {"level": "chatty"}})["code"] == 400
        assert command(p, gw, "flush", {"args": {"timeout_s": 5}})["result"] == {"backlog": 0}
        assert command(p, gw, "stats_now")["result"]["points_in"] == 30
        ck = command(p, gw, "checkpoint")
        assert ck["code"] == 200 and ck["result"]["bytes"] > 0
        assert Path(ck["result"]["path"]).exists()
        unknown = command(p, gw, "self_destruct")
        assert unknown["code"] == 404 and "unknown command" in unknown["error"]
        # MQTT 3.1.1 style: no response topic -> cmd/{name}/res
        p.publish(f"{root(gw)}/cmd/ping", b'{"id": "v311"}')
        assert p.wait_for(lambda: any(r.get("id") == "v311" for r in p.json("/cmd/ping/res")))
        assert agent.failed is None


def test_alerts_are_published_with_stable_ids(tmp_path: Path, broker: Any, probe: Any) -> None:
    gw = "gw-alert"
    with live_agent(write_config(tmp_path, broker.port, gw)) as agent:
        p = probe([f"{root(gw)}/alert/#"])
        for ts, values in normal_then_spikes(40, spikes=(25,)):
            p.publish(f"sensors/{gw}/line1", point(ts, **values))
        assert p.wait_for(lambda: len(p.json("/alert/line1")) >= 2)
        raise_, clear = p.json("/alert/line1")[:2]
        assert raise_["event"] == "raise" and clear["event"] == "clear"
        assert raise_["alert_id"] == clear["alert_id"] and clear["seq"] > raise_["seq"]
        assert raise_["ts"] == 1025.0 and raise_["severity"] in ("medium", "high", "critical")
        assert raise_["msg_id"] != clear["msg_id"] and "replayed" not in raise_
        assert wait(lambda: agent.store.backlog() == 0)


def test_broker_restart_mid_stream_loses_no_alert(tmp_path: Path, broker: Any,
                                                  probe: Any) -> None:
    gw = "gw-outage"
    cfg = write_config(tmp_path, broker.port, gw,
                       mqtt={"reconnect_min_s": 1.0, "reconnect_max_s": 1.5})
    with live_agent(cfg) as agent:
        p = probe([f"{root(gw)}/alert/#"])
        series = normal_then_spikes(120, spikes=(30, 60, 90))
        for ts, values in series[:25]:
            p.publish(f"sensors/{gw}/line1", point(ts, **values))
        assert wait(lambda: agent.engine.points_in == 25)
        broker.stop()
        assert wait(lambda: not agent.transport.connected)
        for ts, values in series[25:]:  # a local source keeps feeding during the outage
            agent.ingest.put_data(f"sensors/{gw}/line1", point(ts, **values))
        assert wait(lambda: agent.engine.points_in == 120)
        held = agent.store.backlog()
        assert held >= 6, held  # 3 raises + 3 clears wait on disk
        broker.start()
        late = probe([f"{root(gw)}/alert/#"])
        assert late.wait_for(lambda: len(late.json("/alert/")) >= held, 20)
        got = late.json("/alert/")
        assert [a["ts"] for a in got if a["event"] == "raise"] == [1030.0, 1060.0, 1090.0]
        assert all(a["replayed"] for a in got)
        assert len({a["msg_id"] for a in got}) == len(got)
        assert wait(lambda: agent.store.backlog() == 0)
        assert not math.isnan(agent.stats()["store"]["published"])
