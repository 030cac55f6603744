"""Alerts leave the outbox straight after their durable insert, on the emitting thread
(``Publisher.send_now`` via ``StoreSink``), in order, and nothing accepted is lost when
the link is down (``agent/publisher.py``). Real SQLite store; in-memory transport."""

from __future__ import annotations

import json
import time
from pathlib import Path

from agent.publisher import Publisher, StoreSink
from agent.store import Store
from agent.transports.memory import MemoryTransport
from agent.types import Alert, AlertEvent, Severity, Stage


def _alert(seq: int) -> Alert:
    return Alert(alert_id=f"a{seq}", event=AlertEvent.RAISE, seq=seq, stream="s",
                 severity=Severity.HIGH, score=0.9, peak_score=0.9, threshold=0.5,
                 stage=Stage.STATISTICAL,
                 channels=("a",), start=float(seq), end=None, ts=float(seq))


def _setup(tmp_path: Path) -> tuple[Store, MemoryTransport, Publisher, StoreSink]:
    store = Store(tmp_path / "outbox.sqlite", boot="b")
    link = MemoryTransport()
    pub = Publisher(store, link, window=20)
    link.on_ack = pub.on_ack
    sink = StoreSink(store, pub, lambda s: f"alert/{s}", lambda: link.connected)
    return store, link, pub, sink


def test_alert_is_published_before_emit_returns(tmp_path: Path) -> None:
    store, link, _pub, sink = _setup(tmp_path)
    link.start()  # connected; the outbox thread is deliberately NOT started
    for seq in (1, 2, 3):
        sink.emit(_alert(seq))
        sent = link.messages("alert/s")
        assert [json.loads(m.payload)["seq"] for m in sent] == list(range(1, seq + 1))
        assert all(m.qos == 1 for m in sent)
    store.close()


def test_link_down_keeps_alerts_then_sends_them_in_order(tmp_path: Path) -> None:
    store, link, pub, sink = _setup(tmp_path)
    for seq in (1, 2):  # not connected: stored only
        sink.emit(_alert(seq))
    assert link.messages("alert/s") == [] and store.backlog() == 2
    link.start()
    sink.emit(_alert(3))  # the older rows go first, on this thread
    got = [json.loads(m.payload) for m in link.messages("alert/s")]
    assert [a["seq"] for a in got] == [1, 2, 3]
    assert [a.get("replayed", False) for a in got] == [True, True, False]
    pub.start()  # the outbox thread processes the PUBACKs: the outbox empties
    try:
        deadline = time.monotonic() + 5
        while store.backlog() and time.monotonic() < deadline:
            pub.notify()
            time.sleep(0.02)
        assert store.backlog() == 0 and pub.published == 3
    finally:
        pub.stop()
        store.close()


def test_unacknowledged_alert_is_resent_after_reconnect(tmp_path: Path) -> None:
    store, link, pub, sink = _setup(tmp_path)
    link.ack = False  # half-open: PUBACKs never come
    link.start()
    sink.emit(_alert(1))
    assert len(link.messages("alert/s")) == 1 and store.backlog() == 1
    link.disconnect()
    link.ack = True
    link.connect()
    pub.send_now()
    again = [json.loads(m.payload) for m in link.messages("alert/s")]
    assert [a["seq"] for a in again] == [1, 1] and again[1]["replayed"] is True
    pub.send_now()  # processes the PUBACK of the resend
    assert store.backlog() == 0
    store.close()
