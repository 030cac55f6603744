"""The MQTT transport under a frozen broker (half-open watchdog) and over TLS.

Each test runs its own Mosquitto (``tests.conftest.Broker``): freezing the session broker
with SIGSTOP, or giving it a TLS listener, would disturb the other tests.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.live import LiveAgent
from agent.runtime import load_effective
from tests.agent.mqtt_agent import live_agent, normal_then_spikes, point, root, wait, write_config
from tests.conftest import MOSQUITTO, Broker, Probe, free_port

pytestmark = [
    pytest.mark.network,
    pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed"),
]
KEEPALIVE, FACTOR = 5, 1.2


def raised_ts(p: Probe) -> list[float]:
    return sorted({a["ts"] for a in p.json("/alert/") if a["event"] == "raise"})


def freeze_until_watchdog(broker: Broker, agent: LiveAgent) -> float:
    """SIGSTOP the broker (TCP stays up, nothing comes back); seconds until the watchdog."""
    assert broker.proc is not None
    before = agent.transport.counts["watchdog_reconnects"]
    os.kill(broker.proc.pid, signal.SIGSTOP)
    t0 = time.monotonic()
    assert wait(lambda: agent.transport.counts["watchdog_reconnects"] > before, 30)
    return time.monotonic() - t0


def test_half_open_watchdog_reconnects_and_loses_nothing(tmp_path: Path,
                                                         own_broker: Broker) -> None:
    gw = "gw-halfopen"
    cfg = write_config(tmp_path, own_broker.port, gw, mqtt={
        "keepalive_s": KEEPALIVE, "watchdog_factor": FACTOR,
        "reconnect_min_s": 1.0, "reconnect_max_s": 1.5})
    topic = f"sensors/{gw}/line1"
    series = normal_then_spikes(120, spikes=(30, 60, 90))
    with live_agent(cfg) as agent:
        p = Probe(own_broker.host, own_broker.port, [f"{root(gw)}/alert/#"])
        try:
            for ts, values in series[:25]:
                agent.ingest.put_data(topic, point(ts, **values))
            assert wait(lambda: agent.engine.points_in == 25)

            # 1. frozen, then resumed (SIGCONT): the alerts sent into the void are re-sent
            assert agent.transport.connected
            for ts, values in series[25:70]:  # a local source keeps feeding
                agent.ingest.put_data(topic, point(ts, **values))
            took = freeze_until_watchdog(own_broker, agent)
            assert took <= KEEPALIVE * FACTOR + 2.0, took
            assert wait(lambda: not agent.transport.connected, 5)
            assert agent.store.backlog() >= 4  # 2 raises + 2 clears, none acknowledged
            assert own_broker.proc is not None
            os.kill(own_broker.proc.pid, signal.SIGCONT)
            assert p.wait_for(lambda: raised_ts(p) == [1030.0, 1060.0], 20), p.json("/alert/")
            assert wait(lambda: agent.store.backlog() == 0 and agent.transport.connected, 10)
            status = Probe(own_broker.host, own_broker.port, [f"{root(gw)}/status"])
            try:  # the stale connections' Last Wills did not overwrite the live "online"
                assert status.wait_for(lambda: bool(status.json("/status")), 5)
                time.sleep(0.5)
                assert status.json("/status")[-1]["state"] == "online", status.json("/status")
            finally:
                status.close()

            # 2. frozen, then killed and restarted: the outbox waits on disk, then drains
            for ts, values in series[70:]:
                agent.ingest.put_data(topic, point(ts, **values))
            took = freeze_until_watchdog(own_broker, agent)
            assert took <= KEEPALIVE * FACTOR + 2.0, took
            assert wait(lambda: agent.engine.points_in == 120)
            held = agent.store.backlog()
            assert held >= 2
            own_broker.restart()
            # subscribe before the agent's backoff ends (alerts are not retained)
            late = Probe(own_broker.host, own_broker.port, [f"{root(gw)}/alert/#",
                                                            f"{root(gw)}/status"])
        finally:
            p.close()
        try:
            assert late.wait_for(lambda: 1090.0 in raised_ts(late), 20), late.json("/alert/")
            assert wait(lambda: agent.store.backlog() == 0, 10)
            assert all(a["replayed"] for a in late.json("/alert/"))
            assert late.wait_for(lambda: late.json("/status")[-1]["state"] == "online", 5)
            assert agent.transport.counts["watchdog_reconnects"] == 2
            assert agent.failed is None
        finally:
            late.close()


# --------------------------------------------------------------------------- TLS


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, key: Any, issuer: str, issuer_key: Any, *, ca: bool = False,
          server: bool = False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                          crl_sign=True, content_commitment=False,
                                          key_encipherment=False, data_encipherment=False,
                                          key_agreement=False, encipher_only=False,
                                          decipher_only=False), critical=True)
    elif server:
        b = b.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False)
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                            critical=False)
    else:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                            critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate | None = None, key: Any = None) -> str:
    if cert is not None:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(path)


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, str]:
    """A throwaway CA, a server cert for 127.0.0.1 and a client cert; and a stranger CA."""
    d = tmp_path / "pki"
    d.mkdir()
    keys = {n: ec.generate_private_key(ec.SECP256R1()) for n in ("ca", "srv", "cli", "other")}
    ca = _cert("edge test CA", keys["ca"], "edge test CA", keys["ca"], ca=True)
    other = _cert("stranger CA", keys["other"], "stranger CA", keys["other"], ca=True)
    return {
        "ca": _write(d / "ca.pem", ca),
        "other_ca": _write(d / "other-ca.pem", other),
        "server_cert": _write(d / "server.pem", _cert("127.0.0.1", keys["srv"], "edge test CA",
                                                      keys["ca"], server=True)),
        "server_key": _write(d / "server.key", key=keys["srv"]),
        "client_cert": _write(d / "client.pem", _cert("gw-tls", keys["cli"], "edge test CA",
                                                      keys["ca"])),
        "client_key": _write(d / "client.key", key=keys["cli"]),
    }


@pytest.fixture
def tls_broker(tmp_path: Path, pki: dict[str, str]) -> Iterator[Broker]:
    """Mosquitto with only a TLS listener that requires a client certificate."""
    work = tmp_path / "tls-broker"
    work.mkdir()
    broker = Broker(work, free_port())
    broker.conf.write_text(
        f"listener {broker.port} 127.0.0.1\n"
        f"cafile {pki['ca']}\ncertfile {pki['server_cert']}\nkeyfile {pki['server_key']}\n"
        "require_certificate true\nallow_anonymous true\npersistence false\n"
        # as root Mosquitto drops to user "mosquitto", who cannot read pytest's tmp dirs
        + ("user root\n" if os.geteuid() == 0 else "") +
        f"log_dest file {work / 'mosquitto.log'}\n", encoding="ascii")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def _tls_agent(tmp_path: Path, port: int, ca: str, pki: dict[str, str]) -> Path:
    return write_config(tmp_path, port, "gw-tls", mqtt={
        "tls": {"enabled": True, "ca_file": ca, "cert_file": pki["client_cert"],
                "key_file": pki["client_key"], "verify": True},
        "reconnect_min_s": 0.2, "reconnect_max_s": 0.5})


def test_tls_with_client_certificate(tmp_path: Path, tls_broker: Broker,
                                     pki: dict[str, str]) -> None:
    gw = "gw-tls"
    with live_agent(_tls_agent(tmp_path, tls_broker.port, pki["ca"], pki)) as agent:
        for ts, values in normal_then_spikes(40, spikes=(25,)):
            agent.ingest.put_data(f"sensors/{gw}/line1", point(ts, **values))
        assert wait(lambda: agent.publisher.published >= 2)  # raise + clear acknowledged
        assert agent.store.backlog() == 0 and agent.transport.counts["connect_failures"] == 0
        assert agent.stats()["mqtt"]["connected"] is True


def test_tls_with_the_wrong_ca_is_refused_with_a_clear_log_line(
        tmp_path: Path, tls_broker: Broker, pki: dict[str, str],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="agent.transports.mqtt")
    base, overlay, cfg = load_effective(_tls_agent(tmp_path, tls_broker.port, pki["other_ca"],
                                                   pki))
    agent = LiveAgent(str(tmp_path / "agent.yaml"), base, overlay, cfg, boot="t")
    agent.start()
    try:
        assert wait(lambda: agent.transport.counts["connect_failures"] >= 2, 10)
        assert not agent.transport.connected and agent.transport.counts["connects"] == 0
    finally:
        agent.shutdown(flush_timeout=0.5)
    lines = [r.getMessage() for r in caplog.records if "TLS handshake" in r.getMessage()]
    assert lines, caplog.text
    assert f"127.0.0.1:{tls_broker.port}" in lines[0]
    assert "certificate verify failed" in lines[0] and "mqtt.tls.ca_file" in lines[0]
