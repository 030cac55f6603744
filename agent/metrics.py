"""Optional Prometheus ``/metrics`` endpoint with the figures of the ``stats`` topic.

Off by default (``metrics.enabled``). The collector reads the latest stats snapshot that
the runtime hands to :meth:`MetricsServer.update`, so the endpoint costs nothing between
scrapes and shows exactly what was published upstream.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector


class _StatsCollector(Collector):
    def __init__(self) -> None:
        self.snapshot: dict[str, Any] = {}

    def collect(self) -> Iterator[Any]:
        st = self.snapshot
        if not st:
            return
        yield CounterMetricFamily("edge_points", "points ingested", value=st["points_in"])
        rej = CounterMetricFamily("edge_points_rejected", "rejected input by reason",
                                  labels=["reason"])
        for reason, n in st["rejected"].items():
            rej.add_metric([reason], n)
        yield rej
        al = CounterMetricFamily("edge_alerts", "alert events by kind", labels=["kind"])
        for kind, n in st["alerts"].items():
            al.add_metric([kind], n)
        yield al
        esc = GaugeMetricFamily("edge_escalation_rate", "share of points scored by a stage",
                                labels=["stage"])
        for stage, v in st["escalation_rate"].items():
            esc.add_metric([stage], v)
        yield esc
        lat = GaugeMetricFamily("edge_latency_ms", "ingest -> decision latency",
                                labels=["quantile"])
        for q in ("p50", "p99"):
            if st["latency_ms"].get(q) is not None:
                lat.add_metric([q], st["latency_ms"][q])
        yield lat
        yield GaugeMetricFamily("edge_queue_depth", "ingest queue depth",
                                value=st["queue"]["depth"])
        yield CounterMetricFamily("edge_queue_dropped", "ingest messages dropped (overflow)",
                                  value=st["queue"]["dropped"])
        yield CounterMetricFamily("edge_queue_bursts", "backlogs of two or more queued "
                                  "messages scored in one engine call",
                                  value=st["queue"]["bursts"])
        yield GaugeMetricFamily("edge_store_backlog", "store-and-forward backlog",
                                value=st["store"]["backlog"])
        sto = st.get("storage")
        if sto:
            yield GaugeMetricFamily("edge_storage_ok", "1 while store and checkpoint accept "
                                    "writes", value=int(bool(sto["ok"] and
                                                             sto["checkpoint"]["ok"])))
            yield CounterMetricFamily("edge_storage_write_errors", "writes the disk refused",
                                      value=sto["write_errors"] + sto["checkpoint"]["failures"])
        yield GaugeMetricFamily("edge_rss_bytes", "resident memory", value=st["rss_bytes"])
        yield GaugeMetricFamily("edge_uptime_seconds", "agent uptime", value=st["uptime_s"])
        yield CounterMetricFamily("edge_store_published", "outbox messages acknowledged",
                                  value=st["store"].get("published", 0))
        mq = st.get("mqtt", {})
        if "connected" in mq:
            yield GaugeMetricFamily("edge_mqtt_connected", "1 while connected to the broker",
                                    value=int(bool(mq["connected"])))
            ev = CounterMetricFamily("edge_mqtt_events", "connection events by kind",
                                     labels=["event"])
            for name, n in mq.items():
                if name not in ("connected", "protocol", "enabled"):
                    ev.add_metric([name], n)
            yield ev
        yield from _serial_families(st.get("serial", {}))


def _serial_families(ports: dict[str, dict[str, int]]) -> Iterator[Any]:
    """One family per serial counter (``edge_serial_crc_errors{port=...}``...)."""
    names = sorted({k for counts in ports.values() for k in counts if k != "mode"})
    for name in names:
        fam = CounterMetricFamily(f"edge_serial_{name}", f"serial source counter {name}",
                                  labels=["port"])
        for port, counts in ports.items():
            fam.add_metric([port], counts.get(name, 0))
        yield fam


class MetricsServer:
    """Serves ``/metrics`` on ``host:port`` (port 0 = any free port, see :attr:`port`)."""

    def __init__(self, host: str, port: int) -> None:
        self._collector = _StatsCollector()
        registry = CollectorRegistry()
        registry.register(self._collector)
        self._server, self._thread = start_http_server(port, addr=host, registry=registry)
        self.port = int(self._server.server_port)

    def update(self, stats: dict[str, Any]) -> None:
        self._collector.snapshot = stats

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
