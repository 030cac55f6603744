"""Signed control across restarts (issue #7): the nonces seen within ``control.max_skew_s``
are kept in ``control.nonce_file`` (bounded, written atomically), so a signed message
replayed right after a restart is still refused. Unit tests on :class:`ControlGuard`, then
a real agent restart against a real broker."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from agent.control_auth import ControlGuard, sign_message
from tests.agent.mqtt_agent import live_agent, root, write_config
from tests.conftest import MOSQUITTO, Broker, Probe

SECRET = b"nonce-store-test-secret-0123456789"
TOPIC = "edge/v1/s/g/cmd/ping"


def _msg(i: int, now: float, topic: str = TOPIC) -> bytes:
    return sign_message(topic, {"id": i}, key_id="ops", secret=SECRET, now=now,
                        nonce=f"nonce-{i:08d}")


def _guard(path: Path, now: float, **kw: Any) -> ControlGuard:
    kw.setdefault("max_skew_s", 60.0)
    return ControlGuard(hmac_keys={"ops": SECRET}, require_signed=True, nonce_file=path,
                        now=now, **kw)


def test_nonces_survive_a_new_guard_and_expire_with_the_window(tmp_path: Path) -> None:
    path = tmp_path / "state" / "nonces.json"
    g = _guard(path, 1000.0)
    assert g.check(TOPIC, _msg(1, 1000.0), 1000.0).ok
    assert g.check(TOPIC, _msg(2, 1030.0), 1030.0).ok
    assert not list(path.parent.glob("*.tmp"))  # written via a temporary file + rename
    assert set(json.loads(path.read_text())["nonces"]) == {"nonce-00000001", "nonce-00000002"}

    again = _guard(path, 1040.0)  # "restart" 10 s later
    v = again.check(TOPIC, _msg(1, 1000.0), 1040.0)
    assert (v.code, v.reason) == (403, "replay")
    assert again.check(TOPIC, _msg(3, 1040.0), 1040.0).ok

    late = _guard(path, 1075.0)  # nonce 1 (ts 1000) is out of the 60 s window: not loaded
    assert len(late._nonces) == 2  # 2 and 3
    assert late.check(TOPIC, _msg(1, 1000.0), 1075.0).reason == "stale"


def test_nonce_file_is_bounded_by_nonce_cache(tmp_path: Path) -> None:
    path = tmp_path / "nonces.json"
    g = _guard(path, 1000.0, nonce_cache=100)
    for i in range(100):
        assert g.check(TOPIC, _msg(i, 1000.0), 1000.0).ok
    assert g.check(TOPIC, _msg(100, 1000.0), 1000.0).reason == "nonce_cache_full"
    assert len(json.loads(path.read_text())["nonces"]) == 100
    # a file stuffed beyond what nonce_cache entries can take is not trusted
    big = {f"n{i:010d}": 1000.0 for i in range(5000)}
    path.write_text(json.dumps({"v": 1, "nonces": big}))
    g2 = _guard(path, 1001.0, nonce_cache=100)
    assert g2.check(TOPIC, _msg(7, 1000.5), 1001.0).reason == "replay"


@pytest.mark.parametrize("content", [b"{not json", b'{"v": 1}', b'{"nonces": {"a": "x"}}',
                                     b"[" * 100_000])
def test_unreadable_nonce_file_fails_closed(tmp_path: Path, content: bytes) -> None:
    """Everything signed before the (broken) load is refused; newer messages are fine."""
    path = tmp_path / "nonces.json"
    path.write_bytes(content)
    g = _guard(path, 2000.0)
    v = g.check(TOPIC, _msg(1, 1990.0), 2000.0)
    assert (v.code, v.reason) == (403, "replay")
    assert g.check(TOPIC, _msg(2, 2001.0), 2001.0).ok
    assert "nonce-00000002" in json.loads(path.read_text())["nonces"]  # rewritten, valid


def test_nonce_file_that_cannot_be_written_refuses_the_message(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("a file where a directory should be")
    g = _guard(tmp_path / "blocker" / "nonces.json", 1000.0)
    v = g.check(TOPIC, _msg(1, 1000.0), 1000.0)
    assert (v.code, v.reason) == (503, "nonce_store_failed")
    assert g.check(TOPIC, _msg(1, 1000.0), 1000.0).reason == "replay"  # still remembered
    assert g.stats()["auth_rejected"] == {"nonce_store_failed": 1, "replay": 1}


# --------------------------------------------------------------------------- real restart


@pytest.mark.network
@pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed")
@pytest.mark.parametrize("persist", [True, False], ids=["nonce_file", "memory_only"])
def test_replay_right_after_a_restart(tmp_path: Path, broker: Broker, persist: bool) -> None:
    """With ``control.nonce_file`` the replay after a restart is refused (403); without it
    the same replay is accepted: the file is what closes the gap."""
    gw = f"gw-nonce-{int(persist)}"
    key = tmp_path / "ops.hmac"
    key.write_bytes(SECRET)
    key.chmod(0o600)
    cfg = write_config(tmp_path, broker.port, gw, control={
        "require_signed": True, "hmac_keys": [{"id": "ops", "file": str(key)}],
        "max_skew_s": 120, "nonce_file": "state/nonces.json" if persist else None})
    topic = f"{root(gw)}/cmd/ping"
    probe = Probe(broker.host, broker.port, [f"{topic}/res"])

    def replies() -> list[tuple[Any, int]]:
        return [(r["id"], r["code"]) for r in probe.json("/cmd/ping/res")]

    try:
        signed = _msg(1, time.time(), topic)
        with live_agent(cfg, boot="a"):
            probe.publish(topic, signed)
            assert probe.wait_for(lambda: len(replies()) == 1), replies()
        assert (tmp_path / "state" / "nonces.json").exists() is persist
        with live_agent(cfg, boot="b") as agent:  # a new process state, same files
            probe.publish(topic, signed)
            probe.publish(topic, _msg(2, time.time(), topic))
            assert probe.wait_for(lambda: len(replies()) == 3), replies()
            rejected = agent.stats()["control"]["auth_rejected"]
    finally:
        probe.close()
    if persist:
        assert replies() == [(1, 200), (1, 403), (2, 200)]
        assert rejected == {"replay": 1}
    else:
        assert replies() == [(1, 200), (1, 200), (2, 200)]
