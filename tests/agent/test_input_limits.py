"""Size limits on outsider-reachable input (issue #7): each limit is explicit, configurable,
checked before parsing where possible and counted by reason when exceeded.

Already covered elsewhere: ``mqtt.max_payload_bytes`` (test_payloads), ``models.max_bytes``
/ ``max_chunks`` / ``max_chunk_bytes`` on the offer (test_model_store), serial frame and
line lengths (firmware_bridge tests). Here: points per message, command and
``config/desired`` bodies, the model offer message, chunks queued unread, config files."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from agent.config import MAX_CONFIG_BYTES, load_config
from agent.control_auth import ControlGuard
from agent.errors import ConfigError
from agent.payloads import parse_payload
from agent.transports.memory import MemoryTransport
from firmware_bridge.batch import encode_batch
from tests.agent.mqtt_agent import point, root, wait
from tests.agent.test_runtime_memory import GW, memory_agent


def _json_list(n: int) -> bytes:
    return json.dumps([{"ts": 1000.0 + i, "values": {"a": 1.0}} for i in range(n)]).encode()


def _rows(n: int) -> bytes:
    return json.dumps({"v": 1, "stream": "s", "channels": ["a"],
                       "rows": [[1000.0 + i, 1.0] for i in range(n)]}).encode()


def _csv(n: int) -> bytes:
    return "\n".join(f"{1000 + i},1.0" for i in range(n)).encode()


def _binary(n: int) -> bytes:
    return encode_batch("s", ["a"], [(1000.0 + i, (1.0,)) for i in range(n)])


@pytest.mark.parametrize("build", [_json_list, _rows, _csv, _binary],
                         ids=["json_list", "json_rows", "csv", "binary"])
def test_points_per_message_limit_in_every_format(build: Any) -> None:
    ok = parse_payload(build(5), stream="s", now=0.0, channels=["a"], max_points=5)
    assert len(ok.points) == 5 and not ok.rejects
    big = parse_payload(build(6), stream="s", now=0.0, channels=["a"], max_points=5)
    assert big.points == []
    assert [r[0] for r in big.rejects] == ["too_large"] and "limit 5" in big.rejects[0][1]


def test_guard_refuses_an_oversized_body_before_parsing() -> None:
    g = ControlGuard()
    assert g.check("t", b'{"id": 1}', 0.0, limit=64).ok
    v = g.check("t", b"[" * 100, 0.0, limit=64)  # not even looked at
    assert (v.code, v.reason, v.payload) == (413, "too_large", b"")
    v = g.check("t", b"", 0.0, limit=64, size=10**9)  # the caller dropped the bytes
    assert (v.code, v.reason) == (413, "too_large")
    assert g.stats()["auth_rejected"] == {"too_large": 2}


def test_live_command_desired_and_batch_limits(tmp_path: Path) -> None:
    t = MemoryTransport()
    r = root(GW)
    with memory_agent(tmp_path, t, control={"max_command_bytes": 64, "max_desired_bytes": 128},
                      mqtt={"max_points": 5}) as agent:
        def replies() -> list[dict[str, Any]]:
            return [json.loads(m.payload) for m in t.messages("/cmd/ping/res")]

        def reported() -> list[dict[str, Any]]:
            return [json.loads(m.payload) for m in t.messages("/config/reported")]

        t.deliver(f"{r}/cmd/ping", json.dumps({"id": "x" * 80}).encode())
        t.deliver(f"{r}/cmd/ping", b'{"id": "ok"}')
        assert wait(lambda: len(replies()) == 2)
        assert [x["code"] for x in replies()] == [413, 200]
        assert "limit 64" in replies()[0]["error"]

        big = {"version": "2", "alerts": {"clear_after": 3}, "pad": "x" * 200}
        t.deliver(f"{r}/config/desired", json.dumps(big).encode())
        assert wait(lambda: len(reported()) == 1)
        assert reported()[0]["code"] == 413 and agent.cfg.alerts.clear_after == 2
        t.deliver(f"{r}/config/desired", b'{"version": "3", "alerts": {"clear_after": 3}}')
        assert wait(lambda: len(reported()) == 2)
        assert reported()[1]["code"] == 200 and agent.cfg.alerts.clear_after == 3

        topic = f"sensors/{GW}/line1"
        batch = [json.loads(point(1000.0 + i, temp=20.0, vib=1.0)) for i in range(6)]
        t.deliver(topic, json.dumps(batch).encode())
        t.deliver(topic, json.dumps(batch[:5]).encode())
        assert wait(lambda: agent.engine.points_in == 5)
        assert wait(lambda: agent.stats()["rejected"].get("too_large") == 1)
        assert agent.stats()["control"]["auth_rejected"] == {"too_large": 2}


def test_model_offer_and_chunks_over_their_limit_are_never_queued(tmp_path: Path) -> None:
    t = MemoryTransport()
    r = root(GW)
    with memory_agent(tmp_path, t, models={"dir": "state/models", "require_signed": False,
                                           "max_offer_bytes": 1024,
                                           "max_chunk_bytes": 512}) as agent:
        assert agent.models is not None
        t.deliver(f"{r}/model/offer", b"{" + b" " * 2000 + b"}")
        t.deliver(f"{r}/model/chunk/1.0.0/0", b"\x00" * 513)
        assert wait(lambda: agent.models is not None
                    and agent.models.stats().get("oversize") == 2)
        states = [json.loads(m.payload) for m in t.messages("/model/state")]
        assert [(s["state"], s["reason"]) for s in states] == [("failed", "too_large")]
        assert "max_offer_bytes" in states[0]["detail"]
        assert agent.models.stats().get("chunks", 0) == 0  # the chunk was not handled


def test_model_chunks_waiting_are_bounded_in_bytes(tmp_path: Path) -> None:
    """With the models thread busy, chunks queue up to models.max_queue_bytes; the network
    thread then waits (back-pressure) instead of holding more in memory."""
    t = MemoryTransport()
    kb = 1024
    with memory_agent(tmp_path, t, models={"dir": "state/models", "require_signed": False,
                                           "max_chunk_bytes": 256 * kb,
                                           "max_queue_bytes": 1024 * kb}) as agent:
        mu = agent.models
        assert mu is not None
        busy = threading.Event()
        mu._queue.put((busy.wait,))  # the models thread blocks on this item
        try:
            assert wait(lambda: mu._queue.qsize() == 0)
            chunk = f"{root(GW)}/model/chunk/9.9.9/%d"
            for i in range(4):  # 4 x 256 KiB = the budget: queued at once
                mu.on_message(chunk % i, b"\x01" * (256 * kb))
            assert mu._queued_bytes == 1024 * kb
            fifth = threading.Thread(target=mu.on_message, args=(chunk % 4, b"\x01" * 10))
            fifth.start()
            time.sleep(0.5)
            assert fifth.is_alive() and mu._queued_bytes == 1024 * kb  # waiting for room
        finally:
            busy.set()
        fifth.join(5.0)
        assert not fifth.is_alive()
        assert wait(lambda: mu._queued_bytes == 0 and mu.stats().get("chunks") == 5)
        assert mu.stats().get("dropped", 0) == 0


def test_config_file_size_is_limited(tmp_path: Path) -> None:
    p = tmp_path / "big.yaml"
    p.write_text("version: '1'\n" + "#" * MAX_CONFIG_BYTES + "\n")
    with pytest.raises(ConfigError, match=r"larger than 1048576 bytes") as exc:
        load_config(p)
    assert str(p) in str(exc.value)
