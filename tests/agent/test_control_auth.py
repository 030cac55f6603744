"""Signed control (issue #7, "Signed control"): HMAC-SHA256 and Ed25519 over the topic and
body, with a timestamp and a nonce; replays, stale and tampered messages are refused and
counted. Unit tests on :class:`ControlGuard`, then the live agent on the in-memory twin."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.config import config_from_dict
from agent.control_auth import ControlGuard, sign_message
from agent.errors import ConfigError
from agent.keyfiles import audit_secrets, read_secret
from agent.signing import key_id
from agent.transports.memory import MemoryTransport
from tests.agent.mqtt_agent import root, wait
from tests.agent.test_runtime_memory import GW, memory_agent

SECRET = b"s3cr3t-hmac-key-for-tests-0123456789"
TOPIC = "edge/v1/s/g/cmd/ping"
_nonce = iter(range(10**9))


def nonce() -> str:
    return f"nonce-{next(_nonce):08d}"


def hmac_msg(body: dict[str, Any], topic: str = TOPIC, now: float = 1000.0,
             n: str | None = None, secret: bytes = SECRET, kid: str = "ops") -> bytes:
    return sign_message(topic, body, key_id=kid, secret=secret, now=now, nonce=n or nonce())


def test_hmac_and_ed25519_accepted_and_auth_stripped() -> None:
    priv = Ed25519PrivateKey.generate()
    kid = key_id(priv.public_key())
    g = ControlGuard(hmac_keys={"ops": SECRET}, public_keys=[priv.public_key()],
                     require_signed=True)
    v = g.check(TOPIC, hmac_msg({"id": 1, "args": {"x": 1}}), now=1000.0)
    assert v.ok and json.loads(v.payload) == {"id": 1, "args": {"x": 1}}
    msg = sign_message(TOPIC, {"id": 2}, key_id=kid, private_key=priv, now=1000.0,
                       nonce=nonce())
    v = g.check(TOPIC, msg, now=1010.0)
    assert v.ok and json.loads(v.payload) == {"id": 2}
    assert g.stats() == {"require_signed": True, "auth_accepted": 2, "auth_rejected": {}}


def test_every_refusal_has_its_code_and_counted_reason() -> None:
    other = Ed25519PrivateKey.generate()
    g = ControlGuard(hmac_keys={"ops": SECRET}, require_signed=True, max_skew_s=60,
                     nonce_cache=100)
    good = hmac_msg({"id": 1})
    cases = [
        (b'{"id": 1}', 401, "unsigned"),
        (b"", 401, "unsigned"),
        (b"not json", 401, "unsigned"),
        (json.dumps({"id": 1, "auth": {"alg": "hmac-sha256"}}).encode(), 401, "bad_auth"),
        (json.dumps({"id": 1, "auth": "x"}).encode(), 401, "bad_auth"),
        (hmac_msg({"id": 1}, kid="nobody"), 401, "unknown_key"),
        (hmac_msg({"id": 1}, secret=b"wrong-secret-wrong-secret"), 401, "bad_signature"),
        (good.replace(b'"id":1', b'"id":2'), 401, "bad_signature"),  # body tampered
        (sign_message(TOPIC, {"id": 1}, key_id=key_id(other.public_key()), private_key=other,
                      now=1000.0, nonce=nonce()), 401, "unknown_key"),
        (hmac_msg({"id": 1}, now=1000.0 - 61), 403, "stale"),
        (hmac_msg({"id": 1}, now=1000.0 + 61), 403, "stale"),  # from the future
    ]
    for payload, code, reason in cases:
        v = g.check(TOPIC, payload, now=1000.0)
        assert (v.code, v.reason) == (code, reason), (payload, v)
        assert v.detail
    assert g.check(TOPIC, good, now=1000.0).ok
    v = g.check(TOPIC, good, now=1001.0)  # the same message again
    assert (v.code, v.reason) == (403, "replay")
    v = g.check("edge/v1/s/other-gw/cmd/ping", good, now=1001.0)  # other gateway
    assert v.reason == "bad_signature"
    assert g.stats()["auth_rejected"] == {"bad_auth": 2, "bad_signature": 3, "replay": 1,
                                          "stale": 2, "unknown_key": 2, "unsigned": 3}


def test_nonce_cache_is_bounded_and_never_forgets_a_live_nonce() -> None:
    g = ControlGuard(hmac_keys={"ops": SECRET}, max_skew_s=10, nonce_cache=100)
    first = hmac_msg({"id": 0}, now=1000.0)
    assert g.check(TOPIC, first, now=1000.0).ok
    for i in range(99):
        assert g.check(TOPIC, hmac_msg({"id": i}, now=1000.0), now=1000.0).ok
    v = g.check(TOPIC, hmac_msg({"id": "x"}, now=1000.0), now=1000.0)
    assert v.reason == "nonce_cache_full"  # refused, rather than forgetting `first`
    assert g.check(TOPIC, first, now=1005.0).reason == "replay"
    # once the window has passed the old nonces go, and the old message is stale anyway
    assert g.check(TOPIC, hmac_msg({"id": "y"}, now=1020.0), now=1020.0).ok
    assert len(g._nonces) == 1
    assert g.check(TOPIC, first, now=1020.0).reason == "stale"


def test_unsigned_allowed_by_default_but_a_bad_signature_never() -> None:
    g = ControlGuard(hmac_keys={"ops": SECRET})
    assert g.check(TOPIC, b'{"id": 1}', now=0.0).ok
    assert g.check(TOPIC, hmac_msg({"id": 1}, secret=b"x" * 20), now=1000.0).code == 401


def test_config_defaults_are_secure_and_checked(tmp_path: Path) -> None:
    cfg = config_from_dict({})
    assert cfg.models.require_signed is True
    assert cfg.control.require_signed is False and cfg.control.max_skew_s == 300
    with pytest.raises(ConfigError, match=r"control\.require_signed"):
        config_from_dict({"control": {"require_signed": True}})
    with pytest.raises(ConfigError, match=r"models\.public_keys"):
        config_from_dict({"models": {"dir": "m"}})


def test_key_files_loose_permissions_are_warned_never_logged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    key = tmp_path / "ops.hmac"
    key.write_bytes(SECRET + b"\n")
    key.chmod(0o600)
    with caplog.at_level(logging.WARNING):
        assert read_secret(key, "k") == SECRET
    assert not caplog.records
    key.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        read_secret(key, "k")
    assert "readable by others (mode 0644)" in caplog.text
    assert SECRET.decode() not in caplog.text
    (tmp_path / "short").write_bytes(b"abc")
    with pytest.raises(ConfigError, match=r"16\.\.4096 bytes"):
        read_secret(tmp_path / "short", "k")
    cfg_file = tmp_path / "agent.yaml"
    cfg_file.write_text("x")
    os.chmod(cfg_file, 0o644)
    cfg = config_from_dict({"mqtt": {"username": "gw", "password": "hunter2-secret"}},
                           str(cfg_file))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert audit_secrets(cfg, cfg_file) == [str(cfg_file)]
    assert "hunter2-secret" not in caplog.text and "mode 0644" in caplog.text


# --------------------------------------------------------------------------- live agent


def _signed_agent(tmp_path: Path, t: MemoryTransport) -> Any:
    key = tmp_path / "ops.hmac"
    key.write_bytes(SECRET)
    key.chmod(0o600)
    return memory_agent(tmp_path, t, control={
        "desired_path": "state/desired.json", "require_signed": True,
        "hmac_keys": [{"id": "ops", "file": str(key)}], "max_skew_s": 30})


def test_live_agent_requires_signed_commands_and_desired(tmp_path: Path) -> None:
    t = MemoryTransport()
    r = root(GW)
    with _signed_agent(tmp_path, t) as agent:
        def replies() -> list[dict[str, Any]]:
            return [json.loads(m.payload) for m in t.messages("/cmd/ping/res")]

        t.deliver(f"{r}/cmd/ping", b'{"id": "u"}')  # unsigned
        ok = hmac_msg({"id": "s"}, topic=f"{r}/cmd/ping", now=time.time())
        t.deliver(f"{r}/cmd/ping", ok)
        t.deliver(f"{r}/cmd/ping", ok)  # replayed
        assert wait(lambda: len(replies()) == 3)
        assert [(x["id"], x["code"]) for x in replies()] == [("u", 401), ("s", 200),
                                                            ("s", 403)]
        assert replies()[1]["result"]["pong"] is True

        def reported() -> list[dict[str, Any]]:
            return [json.loads(m.payload) for m in t.messages("/config/reported")]

        t.deliver(f"{r}/config/desired", b'{"version": "9", "alerts": {"clear_after": 3}}')
        assert wait(lambda: len(reported()) == 1)
        assert reported()[0]["code"] == 401 and agent.cfg.alerts.clear_after == 2
        signed = hmac_msg({"version": "2", "alerts": {"clear_after": 3}},
                          topic=f"{r}/config/desired", now=time.time())
        t.deliver(f"{r}/config/desired", signed)
        assert wait(lambda: len(reported()) == 2)
        assert reported()[1] == {"version": "2", "code": 200, "error": None}
        assert agent.cfg.alerts.clear_after == 3
        persisted = json.loads((tmp_path / "state" / "desired.json").read_text())
        assert "auth" not in persisted  # the overlay is the config, not the envelope
        t.deliver(f"{r}/config/desired", signed)  # replay of an old signed config
        assert wait(lambda: len(reported()) == 3)
        assert reported()[2]["code"] == 403
        st = agent.stats()["control"]
        assert st["auth_accepted"] == 2
        assert st["auth_rejected"] == {"replay": 2, "unsigned": 2}
