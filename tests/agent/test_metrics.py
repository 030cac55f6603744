"""Prometheus ``/metrics`` on a free loopback port shows the figures of the stats payload."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from agent.live import LiveAgent
from agent.runtime import load_effective
from agent.transports.memory import MemoryTransport
from tests.agent.mqtt_agent import normal_then_spikes, point, root, wait, write_config

GW = "gw-metrics"


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_metrics_endpoint_matches_the_stats_payload(tmp_path: Path) -> None:
    path = write_config(tmp_path, 1883, GW, metrics={"enabled": True, "port": 0},
                        agent={"stats_interval_s": 3600})
    base, overlay, cfg = load_effective(path)
    t = MemoryTransport()
    agent = LiveAgent(str(path), base, overlay, cfg, boot="m", transport=t)
    agent.start()
    try:
        for ts, values in normal_then_spikes(40, spikes=(25,)):
            t.deliver(f"sensors/{GW}/line1", point(ts, **values))
        t.deliver(f"sensors/{GW}/line1", b"{broken")
        t.deliver(f"sensors/{GW}/nostream", point(1.0, a=1.0))
        assert wait(lambda: agent.messages_in == 42)
        t.deliver(f"{root(GW)}/cmd/stats_now", b'{"id": 1}')
        assert wait(lambda: bool(t.messages("/cmd/stats_now/res")))
        st = json.loads(t.messages("/cmd/stats_now/res")[0].payload)["result"]
        m = scrape(agent.metrics.port)
        assert agent.metrics.port != 0
        assert m[("edge_points_total", ())] == st["points_in"] == 41  # + one unknown stream
        for reason, n in st["rejected"].items():
            assert m[("edge_points_rejected_total", (("reason", reason),))] == n
        assert {"invalid_json", "unknown_stream"} <= set(st["rejected"])
        for kind, n in st["alerts"].items():
            assert m[("edge_alerts_total", (("kind", kind),))] == n
        assert m[("edge_queue_dropped_total", ())] == st["queue"]["dropped"]
        assert m[("edge_queue_bursts_total", ())] == st["queue"]["bursts"]
        assert m[("edge_queue_depth", ())] == st["queue"]["depth"]
        assert m[("edge_store_backlog", ())] == st["store"]["backlog"]
        assert m[("edge_store_published_total", ())] == st["store"]["published"]
        assert m[("edge_uptime_seconds", ())] == st["uptime_s"]
        assert m[("edge_latency_ms", (("quantile", "p99"),))] == st["latency_ms"]["p99"]
        assert m[("edge_mqtt_connected", ())] == 1
        assert m[("edge_mqtt_events_total", (("event", "connects"),))] == 1
    finally:
        agent.shutdown(flush_timeout=1.0)
