"""Shared fixtures: a real Mosquitto broker on a free loopback port, per test session.

The broker is started from its own config in a temp directory (``listener PORT 127.0.0.1``,
``allow_anonymous true``, no persistence) and killed at the end. :meth:`Broker.restart`
brings it back on the same port (tests of outages). Tests needing it are marked
``network``; they are skipped, with the reason, only when ``mosquitto`` is not installed.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(host: str, port: int, timeout: float = 10.0, up: bool = True) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                if up:
                    return True
        except OSError:
            if not up:
                return True
        time.sleep(0.05)
    return False


class Broker:
    """A Mosquitto process on ``host:port``; unpacks as ``(host, port)``."""

    def __init__(self, workdir: Path, port: int) -> None:
        self.host = "127.0.0.1"
        self.port = port
        self.workdir = workdir
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence false\n"
            f"log_dest file {workdir / 'mosquitto.log'}\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
            "max_keepalive 3600\n",
            encoding="ascii",
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def __iter__(self) -> Iterator[object]:
        return iter((self.host, self.port))

    def start(self) -> None:
        assert MOSQUITTO is not None
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_port(self.host, self.port):
            self.stop()
            raise RuntimeError(f"mosquitto did not listen on {self.port}: "
                               f"{(self.workdir / 'mosquitto.log').read_text(errors='replace')}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None
        wait_port(self.host, self.port, timeout=5.0, up=False)

    def restart(self, down_s: float = 0.0) -> None:
        """Kill the broker (no clean shutdown) and start it again on the same port."""
        self.stop()
        time.sleep(down_s)
        self.start()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The soak run (minutes) is deselected unless ``-m`` names it (CI: ``pytest -m soak``)."""
    if "soak" in (config.option.markexpr or ""):
        return
    soak = [it for it in items if it.get_closest_marker("soak") is not None]
    if soak:
        config.hook.pytest_deselected(items=soak)
        items[:] = [it for it in items if it.get_closest_marker("soak") is None]


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    broker = Broker(tmp_path_factory.mktemp("mosquitto"), free_port())
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Broker]:
    """A Mosquitto of the test's own, for tests that kill, freeze or restart it."""
    work = tmp_path / "broker"
    work.mkdir()
    broker = Broker(work, free_port())
    broker.start()
    try:
        yield broker
    finally:
        if broker.proc is not None:  # a test may have frozen it with SIGSTOP
            broker.proc.send_signal(signal.SIGCONT)
        broker.stop()


@pytest.fixture
def broker(mosquitto: Broker) -> Broker:
    """The session broker, started again if a previous test left it down."""
    if mosquitto.proc is None or mosquitto.proc.poll() is not None:
        mosquitto.start()
    return mosquitto


class Probe:
    """A test-side MQTT client that records every message it receives."""

    def __init__(self, host: str, port: int, topics: list[str], v5: bool = True) -> None:
        import threading

        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

        self.messages: list[tuple[str, bytes, bool, object]] = []
        self._cond = threading.Condition()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"probe-{free_port()}",
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311)
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect(host, port, 30)
        self.client.loop_start()
        if topics:
            self.client.subscribe([(t, 1) for t in topics])
            assert subscribed.wait(5), "probe: no SUBACK"

    def _on_message(self, _c: object, _u: object, msg: object) -> None:
        with self._cond:
            self.messages.append((msg.topic, msg.payload, bool(msg.retain),  # type: ignore[attr-defined]
                                  getattr(msg, "properties", None)))
            self._cond.notify_all()

    def json(self, topic_part: str) -> list[dict]:  # type: ignore[type-arg]
        import json

        with self._cond:
            return [json.loads(p) for t, p, _r, _pr in self.messages if topic_part in t and p]

    def wait_for(self, pred, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        with self._cond:
            while not pred():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.2))
        return True

    def publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False,
                properties: object = None) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=retain,
                                   properties=properties)  # type: ignore[arg-type]
        if qos:
            info.wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def probe(broker: Broker) -> Iterator[object]:
    """``probe(topics)`` opens a recording client on the test broker; all are closed after."""
    made: list[Probe] = []

    def make(topics: list[str], v5: bool = True) -> Probe:
        p = Probe(broker.host, broker.port, topics, v5)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()
