"""Broker-side access control (issue #7, "Security"): Mosquitto over TLS (server
verification + client certificates) with a password file and an ACL file that confine
each gateway's credentials to its own topic subtree. Another client, even with valid
credentials of its own, cannot publish commands or models that reach the agent; the
gateway's own credentials cannot reach another gateway; the password is never logged.

The ACL below is the one ``docs/security.md`` recommends.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from tests.agent.mqtt_agent import live_agent, root, wait, write_config
from tests.agent.test_mqtt_resilience import pki  # noqa: F401  (fixture)
from tests.conftest import MOSQUITTO, Broker, free_port

MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd")
pytestmark = [
    pytest.mark.network,
    pytest.mark.skipif(MOSQUITTO is None or MOSQUITTO_PASSWD is None,
                       reason="mosquitto / mosquitto_passwd are not installed"),
]
PASSWORDS = {"gw-acl": "gw-acl-Pa55-never-logged", "ops": "ops-Pa55", "intruder": "intr-Pa55",
             "gw-other": "other-Pa55"}
ACL = """\
# each gateway: its own subtree, and its own sensor topics (read)
pattern readwrite edge/v1/+/%u/#
pattern read sensors/%u/#
# the operator account: every gateway's control topics
user ops
topic readwrite edge/v1/#
# a client that only feeds sensors of gateway gw-acl
user intruder
topic write sensors/gw-acl/#
"""


@pytest.fixture
def acl_broker(tmp_path: Path, pki: dict[str, str]) -> Iterator[Broker]:  # noqa: F811
    work = tmp_path / "acl-broker"
    work.mkdir()
    pw = work / "passwd"
    pw.touch(mode=0o600)
    for user, password in PASSWORDS.items():
        assert MOSQUITTO_PASSWD is not None
        subprocess.run([MOSQUITTO_PASSWD, "-b", str(pw), user, password], check=True,
                       capture_output=True)
    (work / "acl").write_text(ACL)
    broker = Broker(work, free_port())
    broker.conf.write_text(
        f"listener {broker.port} 127.0.0.1\n"
        f"cafile {pki['ca']}\ncertfile {pki['server_cert']}\nkeyfile {pki['server_key']}\n"
        "require_certificate true\n"
        f"allow_anonymous false\npassword_file {pw}\nacl_file {work / 'acl'}\n"
        "persistence false\n" + ("user root\n" if os.geteuid() == 0 else "")
        + f"log_dest file {work / 'mosquitto.log'}\n", encoding="ascii")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


class Client:
    """A TLS client with a user name; records messages and the PUBACK reason codes."""

    def __init__(self, port: int, pki: dict[str, str], user: str | None,  # noqa: F811
                 password: str | None, topics: list[str] = ()) -> None:  # type: ignore[assignment]
        self.messages: list[tuple[str, bytes]] = []
        self.acks: dict[int, int] = {}
        self.rc: int | None = None
        self._connected = threading.Event()
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"c-{user}-{free_port()}",
                        protocol=MQTTProtocolVersion.MQTTv5)
        c.tls_set(ca_certs=pki["ca"], certfile=pki["client_cert"], keyfile=pki["client_key"])
        if user is not None:
            c.username_pw_set(user, password)
        c.on_connect = self._on_connect
        c.on_message = lambda _c, _u, m: self.messages.append((m.topic, m.payload))
        c.on_publish = lambda _c, _u, mid, rc, _p: self.acks.__setitem__(mid, rc.value)
        subscribed = threading.Event()
        c.on_subscribe = lambda *a: subscribed.set()
        self.client = c
        c.connect("127.0.0.1", port, 30)
        c.loop_start()
        assert self._connected.wait(10), "no CONNACK"
        if topics and self.rc == 0:
            c.subscribe([(t, 1) for t in topics])
            assert subscribed.wait(5)

    def _on_connect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        self.rc = rc.value
        self._connected.set()

    def publish(self, topic: str, payload: bytes) -> int:
        """PUBACK reason code: 0 accepted, 135 (0x87) not authorized."""
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(5)
        assert wait(lambda: info.mid in self.acks, 5)
        return self.acks[info.mid]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_acl_confines_credentials_to_their_subtree(
        tmp_path: Path, acl_broker: Broker, pki: dict[str, str],  # noqa: F811
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    gw = "gw-acl"
    r = root(gw)
    cfg = write_config(tmp_path, acl_broker.port, gw, mqtt={
        "username": gw, "password": PASSWORDS[gw], "client_id": gw,
        "tls": {"enabled": True, "ca_file": pki["ca"], "cert_file": pki["client_cert"],
                "key_file": pki["client_key"], "verify": True},
        "ingest": [{"topic": f"sensors/{gw}/+"}]})
    cfg.chmod(0o600)
    Path(pki["client_key"]).chmod(0o600)
    clients: list[Client] = []

    def client(user: str | None, topics: list[str] = ()) -> Client:  # type: ignore[assignment]
        c = Client(acl_broker.port, pki, user, PASSWORDS.get(user or ""), topics)
        clients.append(c)
        return c

    try:
        with live_agent(cfg) as agent:
            ops = client("ops", [f"{r}/cmd/+/res", f"{r}/model/state", f"{r}/status"])
            assert ops.rc == 0
            assert wait(lambda: any(t == f"{r}/status" for t, _ in ops.messages), 5)

            # the operator's command reaches the agent and is answered
            assert ops.publish(f"{r}/cmd/ping", b'{"id": "ops"}') == 0
            assert wait(lambda: any(t.endswith("/cmd/ping/res") for t, _ in ops.messages), 5)

            # anonymous: refused at CONNECT (5 = not authorized / 135 in MQTT 5)
            anon = client(None)
            assert anon.rc in (5, 135)
            # a wrong password: refused too
            bad = Client(acl_broker.port, pki, "ops", "wrong", [])
            clients.append(bad)
            assert bad.rc in (4, 5, 134, 135)

            # valid credentials of another client: its commands, configs and models are
            # refused by the broker (PUBACK 0x87) and never reach the agent
            intruder = client("intruder")
            assert intruder.rc == 0
            offer = json.dumps({"offer_id": "x", "manifest": {}, "chunks": 1,
                                "chunk_size": 1}).encode()
            for topic, body in ((f"{r}/cmd/rebaseline", b'{"id": "evil"}'),
                                (f"{r}/config/desired", b'{"version": "666"}'),
                                (f"{r}/model/offer", offer),
                                (f"{r}/model/chunk/9.9.9/0", b"\x08")):
                assert intruder.publish(topic, body) == 0x87, topic
            # but it may feed the sensors it was given
            assert intruder.publish(f"sensors/{gw}/line1",
                                    b'{"ts": 1, "values": {"temp": 1, "vib": 2}}') == 0
            assert wait(lambda: agent.engine.points_in == 1, 5)

            # the gateway's own credentials cannot reach another gateway's subtree
            other_gw = client("gw-acl")  # same user as the agent, another client id
            assert other_gw.publish(f"{root('gw-other')}/cmd/ping", b"{}") == 0x87
            assert other_gw.publish(f"{root('gw-other')}/model/offer", offer) == 0x87

            ops.messages.clear()
            assert ops.publish(f"{r}/cmd/stats_now", b'{"id": "check"}') == 0
            assert wait(lambda: any(t.endswith("/cmd/stats_now/res")
                                    for t, _ in ops.messages), 5)
            replies = [json.loads(p) for t, p in ops.messages if t.endswith("/res")]
            assert all(rep["id"] != "evil" for rep in replies)
            assert agent.cfg.version == "1"  # the intruder's config never arrived
            assert agent.stats()["model_update"] == {"enabled": False}
            assert agent.engine.rejects.total() == 0
    finally:
        for c in clients:
            c.close()
    for secret in PASSWORDS.values():
        assert secret not in caplog.text
    assert "readable by others" not in caplog.text  # the config and key files are 0600
