"""Control plane, pure parts: command parsing/dispatch and config/desired evaluation."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agent.config import config_from_dict
from agent.config_live import COMMANDS
from agent.control import Command, dispatch, evaluate_desired, merge, parse_command

BASE = {"version": "1", "streams": [{"id": "line1", "channels": ["a", "b"]}],
        "mqtt": {"enabled": True, "port": 1883}}


class FakeTarget:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("cmd_"):
            raise AttributeError(name)

        def call(*args: Any) -> dict[str, Any]:
            self.calls.append((name, args))
            if name == "cmd_checkpoint":
                raise RuntimeError("disk on fire")
            return {"ok": name}

        return call


def run(name: str, body: bytes = b"", allowed: tuple[str, ...] = COMMANDS) -> dict[str, Any]:
    return dispatch(FakeTarget(), parse_command(name, body), allowed, ("line1",))


@pytest.mark.parametrize("name", [c for c in COMMANDS if c != "checkpoint"])
def test_every_command_dispatches(name: str) -> None:
    body = {"set_log_level": b'{"args": {"level": "debug"}}'}.get(name, b'{"id": 7}')
    reply = run(name, body)
    assert reply["code"] == 200, reply
    assert reply["result"] == {"ok": f"cmd_{name}"}


def test_errors_are_replies() -> None:
    assert run("self_destruct")["code"] == 404
    assert run("ping", b"{nope")["code"] == 400
    assert run("ping", b"[1]")["code"] == 400
    assert run("ping", allowed=("flush",))["code"] == 403
    assert run("rebaseline", b'{"args": {"stream": "nope"}}')["code"] == 404
    assert run("set_log_level", b'{"args": {"level": "loud"}}')["code"] == 400
    assert run("flush", b'{"args": {"timeout_s": -1}}')["code"] == 400
    failed = run("checkpoint")
    assert failed["code"] == 500 and "disk on fire" in failed["error"]


def test_request_id_and_response_topic_kept() -> None:
    cmd = parse_command("ping", b'{"id": "abc"}', "reply/here", b"\x01")
    assert cmd == Command("ping", "abc", {}, "reply/here", b"\x01")
    assert dispatch(FakeTarget(), cmd, COMMANDS, ())["id"] == "abc"


def test_merge_is_deep_and_pure() -> None:
    base = {"a": {"b": 1}}
    out = merge(base, {"a": {"c": 2}})
    assert out == {"a": {"b": 1, "c": 2}} and base == {"a": {"b": 1}}


def current() -> Any:
    return config_from_dict(BASE)


def test_desired_valid_partial() -> None:
    out = evaluate_desired(BASE, {}, json.dumps(
        {"version": "2", "alerts": {"threshold": 0.6, "clear_threshold": 0.5}}).encode(),
        current())
    assert out.code == 200 and out.config is not None
    assert out.config.alerts.threshold == 0.6 and out.config.version == "2"
    assert out.config.streams == current().streams
    again = evaluate_desired(BASE, out.overlay or {}, b'{"version": "3", "agent": '
                             b'{"stats_interval_s": 5}}', out.config)
    assert again.code == 200 and again.config is not None
    assert again.config.alerts.threshold == 0.6 and again.config.agent.stats_interval_s == 5


@pytest.mark.parametrize(
    ("payload", "needle"),
    [(b"not json", "valid JSON"), (b"[]", "JSON object"), (b'{"alerts": {}}', "version"),
     (b'{"version": "2", "alerts": {"k": 0}}', "alerts.k"),
     (b'{"version": "2", "bogus": 1}', "bogus: unknown key"),
     (b'{"version": "2", "mqtt": {"port": 1884}}', "restart"),
     (b'{"version": "2", "store": {"path": "x.db"}}', "restart")],
)
def test_desired_invalid_never_applies(payload: bytes, needle: str) -> None:
    out = evaluate_desired(BASE, {}, payload, current())
    assert out.code == 400 and needle in str(out.error) and out.config is None
    assert out.reported()["code"] == 400


def test_desired_same_version_is_unchanged() -> None:
    out = evaluate_desired(BASE, {}, b'{"version": "1"}', current())
    assert out.code == 200 and out.unchanged


def test_desired_may_change_ingest_routes() -> None:
    out = evaluate_desired(BASE, {}, b'{"version": "2", "mqtt": {"ingest": '
                           b'[{"topic": "s/#", "stream": "line1"}]}}', current())
    assert out.code == 200 and out.config is not None
    assert out.config.mqtt.ingest[0].topic == "s/#"
