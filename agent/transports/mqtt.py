"""A thin paho-mqtt 2.x wrapper: connect, reconnect with jittered backoff, watchdog, LWT.

One supervisor thread owns the connection. Each attempt builds a fresh paho ``Client``
(callback API v2) so no state of a dead connection leaks into the next: unacknowledged
messages are the :mod:`agent.store`'s business, not paho's. MQTT 5 is tried first; with
``protocol: auto`` a broker that refuses it gets MQTT 3.1.1 from then on. A broker that
does not answer an MQTT 5 CONNECT at all (amqtt cannot parse one with a Last Will) before
the first connection gets one MQTT 3.1.1 attempt straight away: kept if it connects, else
back to MQTT 5. (After a first MQTT 5 connection silence means an outage, not a protocol.)

Reconnect delays grow as ``min * 2**n`` up to ``max`` with equal jitter (half fixed, half
random), so a fleet of gateways does not reconnect in lock-step after a broker restart.
The watchdog forces a reconnect when nothing (no message, no PUBACK, no PINGRESP) came
from the broker for ``watchdog_factor * keepalive`` seconds: a half-open TCP connection
otherwise looks healthy for as long as the kernel keeps it.

Callbacks (``on_message``, ``on_connected``, ``on_ack``) run on paho's network thread and
must only enqueue or publish, never run detection.
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.config_live import MqttConfig
from agent.errors import AgentError
from agent.transports.base import MessageHandler, Transport, Will

log = logging.getLogger(__name__)

_UNSUPPORTED_PROTOCOL = (1, 132)  # 3.1.1 CONNACK rc 1 / MQTT 5 reason 0x84


class TransportError(AgentError):
    """The MQTT transport cannot be set up (bad TLS files, bad settings)."""


def backoff_delay(attempt: int, low: float, high: float, rng: random.Random) -> float:
    """Equal-jitter exponential backoff: in ``[d/2, d]`` with ``d = min(high, low * 2**n)``.

    >>> rng = random.Random(1)
    >>> all(2.0 <= backoff_delay(2, 1.0, 60.0, rng) <= 4.0 for _ in range(100))
    True
    """
    d = min(high, low * (2 ** min(attempt, 30)))
    return d / 2 + rng.uniform(0, d / 2)


_WRITE_EVERY = 16  # packets drained from the read buffer between two write/keepalive turns


class _ReadBufferedClient(paho.Client):
    """paho's client, reading the socket in 64 KiB chunks.

    paho reads each packet with at least three ``recv`` calls (fixed header byte, length,
    body). Every ``recv`` releases the GIL, and while the detection worker is busy the
    network thread then waits up to a switch interval to get it back, so messages pile up
    in the kernel's socket buffer (the convoy effect). Reading in chunks costs one
    ``recv`` per burst of messages; :meth:`loop_read` then parses every buffered packet
    before paho goes back to ``select`` (which cannot see bytes held here).
    """

    #: QoS-0 PUBLISH without properties: ``(topic, payload)`` straight from the packet
    on_plain_message: Callable[[str, bytes], None] | None = None
    #: a PINGRESP came (the watchdog's sign of life; no ``on_log`` formatting needed)
    on_pingresp: Callable[[], None] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rbuf = b""
        self._rpos = 0

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._rpos >= len(self._rbuf):
            data = super()._sock_recv(65536)
            if not data:
                return data  # EOF: paho reports the lost connection
            self._rbuf, self._rpos = data, 0
        out = self._rbuf[self._rpos:self._rpos + bufsize]
        self._rpos += len(out)
        return out

    def _sock_close(self) -> None:
        self._rbuf, self._rpos = b"", 0
        super()._sock_close()

    def _handle_publish(self) -> MQTTErrorCode:
        """The common case, a QoS-0 PUBLISH without properties, decoded here: paho's own
        path builds a ``Properties`` object, an ``MQTTMessage`` and (with ``on_log``) a log
        line per message, about half the transport's CPU per single-point message. Anything
        else (QoS 1/2, properties such as a topic alias or response topic, a topic that is
        not UTF-8, a malformed packet) takes paho's path unchanged."""
        deliver = self.on_plain_message
        pkt = self._in_packet["packet"]
        if deliver is None or self._in_packet["command"] & 0x06 or len(pkt) < 3:
            return super()._handle_publish()
        end = 2 + ((pkt[0] << 8) | pkt[1])  # topic length prefix
        v5 = self._protocol == MQTTProtocolVersion.MQTTv5
        if end == 2 or end + v5 > len(pkt) or (v5 and pkt[end] != 0):
            return super()._handle_publish()
        try:
            topic = pkt[2:end].decode()
        except UnicodeDecodeError:
            return super()._handle_publish()
        deliver(topic, bytes(pkt[end + v5:]))
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _handle_pingresp(self) -> MQTTErrorCode:
        if self.on_pingresp is not None:
            self.on_pingresp()
        return super()._handle_pingresp()

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        rc = super().loop_read(max_packets)
        packets = 0
        while (rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self._rpos < len(self._rbuf)
               and self._sock is not None):
            rc = super().loop_read(max_packets)
            packets += 1
            # Under a flood the buffer never runs dry (a large packet spans chunks): keep
            # outgoing traffic (alerts, stats, PUBACKs, PINGREQ) moving from this thread too.
            if packets % _WRITE_EVERY == 0 and rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                if self.want_write():
                    rc = self.loop_write()
                if rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                    rc = self.loop_misc()
        return rc


# paho's private read hook; a paho without it gets the plain client
_Client = _ReadBufferedClient if hasattr(paho.Client, "_sock_recv") else paho.Client


class MqttTransport(Transport):
    """Keeps one MQTT connection alive in a background thread until :meth:`stop`."""

    def __init__(
        self,
        config: MqttConfig,
        client_id: str,
        will: Will | None,
        on_message: MessageHandler,
        subscriptions: Callable[[], Sequence[tuple[str, int]]],
        on_connected: Callable[[int], None] | None = None,
        on_ack: Callable[[int, int], None] | None = None,
        resolve_path: Callable[[str], str] = str,
    ) -> None:
        self.config = config
        self.client_id = client_id
        self.will = will
        self.on_message = on_message
        self.subscriptions = subscriptions
        self.on_connected = on_connected
        self.on_ack = on_ack
        self._resolve = resolve_path
        self.v5 = config.protocol != "3.1.1"
        self.generation = 0
        self.counts = {"connects": 0, "connect_failures": 0, "disconnects": 0,
                       "watchdog_reconnects": 0, "publish_refused": 0}
        self._client: paho.Client | None = None
        self._connected = threading.Event()
        self._ready = threading.Event()
        self._down = threading.Event()
        self._stop = threading.Event()
        self._last_rx = time.monotonic()
        self._refused_protocol = False
        self._answered = False  # a CONNACK came (accepting or refusing)
        self._probing = False  # on 3.1.1 only because MQTT 5 got no answer
        self._rng = random.Random()
        self._tls: _TlsContext | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ public
    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._supervise, name="mqtt-supervisor",
                                        daemon=True)
        self._thread.start()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def wait_ready(self, timeout: float) -> bool:
        """Connected and the broker acknowledged the subscriptions (SUBACK)."""
        return self._ready.wait(timeout)

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False,
                properties: Properties | None = None) -> int | None:
        """Queue a message on the live connection; its mid, or None when not connected."""
        client = self._client
        if client is None or not self._connected.is_set():
            return None
        info = client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        return info.mid if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS else None

    def publish_wait(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False,
                     timeout: float = 2.0) -> bool:
        """Publish and wait for the broker's acknowledgement (used for the last words)."""
        client = self._client
        if client is None or not self._connected.is_set():
            return False
        info = client.publish(topic, payload, qos=qos, retain=retain)
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError):
            return False
        return info.is_published()

    def subscribe(self, filters: Sequence[tuple[str, int]]) -> None:
        client = self._client
        if client is not None and self._connected.is_set() and filters:
            client.subscribe(list(filters))

    def unsubscribe(self, filters: Sequence[str]) -> None:
        client = self._client
        if client is not None and self._connected.is_set() and filters:
            client.unsubscribe(list(filters))

    def force_reconnect(self, reason: str) -> None:
        """Drop the current socket (the supervisor reconnects)."""
        client = self._client
        log.warning("mqtt: forcing a reconnect: %s", reason)
        sock = client.socket() if client is not None else None
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._down.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Disconnect cleanly (no Last Will) and stop the supervisor."""
        self._stop.set()
        self._down.set()
        if self._thread is not None:
            self._thread.join(timeout)

    # ------------------------------------------------------------------ paho client
    def _new_client(self) -> paho.Client:
        cfg = self.config
        proto = MQTTProtocolVersion.MQTTv5 if self.v5 else MQTTProtocolVersion.MQTTv311
        client = _Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=proto,
            clean_session=None if self.v5 else cfg.clean_start, reconnect_on_failure=False,
        )
        if cfg.username is not None:
            client.username_pw_set(cfg.username, cfg.password)
        if cfg.tls.enabled:
            t = cfg.tls
            ctx = _TlsContext(ssl.PROTOCOL_TLS_CLIENT)  # what paho's tls_set builds
            try:
                if t.cert_file and t.key_file:
                    ctx.load_cert_chain(self._resolve(t.cert_file), self._resolve(t.key_file))
                if not t.verify:
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
                if t.ca_file:
                    ctx.load_verify_locations(self._resolve(t.ca_file))
                else:
                    ctx.load_default_certs()
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise TransportError(f"mqtt.tls: {exc}") from exc
            client.tls_set_context(ctx)
            client.tls_insecure_set(not t.verify)
            self._tls = ctx
        if self.will is not None:
            w = self.will
            client.will_set(w.topic, w.payload, qos=w.qos, retain=w.retain)
        client.max_inflight_messages_set(max(cfg.inflight, 20))
        client.max_queued_messages_set(0)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_message = self._handle_message
        client.on_publish = self._handle_publish
        client.on_subscribe = self._touch_sub
        client.on_socket_open = _no_delay
        if isinstance(client, _ReadBufferedClient):
            client.on_plain_message = self._handle_plain_message
            client.on_pingresp = self._touch_rx
        else:  # paho's log line is the only sign of a PINGRESP it gives
            client.on_log = self._handle_log
        return client

    def _connect_props(self) -> Properties | None:
        # An absent Session Expiry Interval means 0; leaving it out keeps the CONNECT
        # parseable by 3.1.1-only brokers (amqtt), which then refuse it at once with a
        # CONNACK (-> fallback) instead of waiting for bytes that never come.
        if not self.v5 or self.config.session_expiry_s == 0:
            return None
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.config.session_expiry_s
        return props

    def _handle_connect(self, client: paho.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        self._last_rx = time.monotonic()
        self._answered = True
        if rc.is_failure:
            log.warning("mqtt: connection refused: %s", rc)
            if int(rc.value) in _UNSUPPORTED_PROTOCOL:
                self._refused_protocol = True
            self._down.set()
            return
        self.generation += 1
        self.counts["connects"] += 1
        log.info("mqtt: connected to %s:%d (MQTT %s)", self.config.host, self.config.port,
                 "5" if self.v5 else "3.1.1")
        subs = list(self.subscriptions())
        self._ready.clear()
        if subs:
            client.subscribe(subs)
        else:
            self._ready.set()
        self._connected.set()
        if self.on_connected is not None:
            try:
                self.on_connected(self.generation)
            except Exception:  # the supervisor must outlive a failing hook
                log.exception("mqtt: on_connected hook failed")

    def _handle_disconnect(self, _c: paho.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if self._connected.is_set():
            self.counts["disconnects"] += 1
            (log.info if self._stop.is_set() else log.warning)("mqtt: disconnected: %s", rc)
        self._connected.clear()
        self._ready.clear()
        self._down.set()

    def _handle_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        self._last_rx = time.monotonic()
        self.on_message(msg.topic, msg.payload, getattr(msg, "properties", None))

    def _handle_plain_message(self, topic: str, payload: bytes) -> None:
        self._last_rx = time.monotonic()
        self.on_message(topic, payload, None)

    def _touch_rx(self) -> None:
        self._last_rx = time.monotonic()

    def _handle_publish(self, _c: paho.Client, _u: Any, mid: int, rc: Any, _p: Any) -> None:
        self._last_rx = time.monotonic()
        if rc is not None and rc.is_failure:
            self.counts["publish_refused"] += 1
            log.warning("mqtt: broker refused publish %d: %s", mid, rc)
        if self.on_ack is not None:
            self.on_ack(self.generation, mid)

    def _touch_sub(self, *_args: Any) -> None:
        self._last_rx = time.monotonic()
        if self._connected.is_set():
            self._ready.set()

    def _handle_log(self, _c: paho.Client, _u: Any, _level: int, buf: str) -> None:
        if buf.startswith("Received PINGRESP"):
            self._last_rx = time.monotonic()

    # ------------------------------------------------------------------ supervisor
    def _supervise(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            self._down.clear()
            self._refused_protocol = False
            self._answered = False
            try:
                client = self._new_client()
            except TransportError:
                log.exception("mqtt: cannot set up the client")
                self._stop.wait(self.config.reconnect_max_s)
                continue
            self._client = client
            gen_before = self.generation
            try:
                client.connect(self.config.host, self.config.port, self.config.keepalive_s,
                               clean_start=self.config.clean_start if self.v5 else 3,
                               properties=self._connect_props())
            except ssl.SSLError as exc:
                if self._tls is not None:
                    self._tls.close_last()  # paho leaves the failed TLS socket open
                self.counts["connect_failures"] += 1
                log.error("mqtt: TLS handshake with %s:%d failed: %s (check mqtt.tls.ca_file, "
                          "cert_file, key_file and the broker's certificate)", self.config.host,
                          self.config.port, exc)
            except (OSError, ValueError) as exc:
                self.counts["connect_failures"] += 1
                log.warning("mqtt: cannot connect to %s:%d: %s", self.config.host,
                            self.config.port, exc)
                if self._probing:  # the broker is down, not 3.1.1-only
                    self.v5, self._probing = True, False
            else:
                client.loop_start()
                self._watch(client)
                if self._stop.is_set() and self._connected.is_set():
                    client.disconnect()
                    time.sleep(0.05)
                client.loop_stop()
                self._connected.clear()
                _close_socket(client)
                with_connack = self.generation > gen_before
                if not with_connack:
                    self.counts["connect_failures"] += 1
                # A 3.1.1-only broker refuses MQTT 5 with a CONNACK, or (some) never
                # answer or just close: then one 3.1.1 attempt at once decides.
                may_fall_back = self.v5 and self.config.protocol == "auto"
                silent = not self._answered and self.counts["connects"] == 0
                if may_fall_back and (self._refused_protocol or silent):
                    if self._refused_protocol:
                        log.warning("mqtt: broker refused MQTT 5, falling back to 3.1.1")
                    else:
                        log.warning("mqtt: no answer to an MQTT 5 CONNECT, trying 3.1.1")
                    self.v5, self._probing = False, not self._refused_protocol
                    continue
                if self._probing:
                    if with_connack:
                        self._probing = False  # a 3.1.1-only broker: stay on 3.1.1
                    elif not self._answered:
                        self.v5, self._probing = True, False  # silent either way: down
                if with_connack:
                    attempt = 0
            if self._stop.is_set():
                break
            delay = backoff_delay(attempt, self.config.reconnect_min_s,
                                  self.config.reconnect_max_s, self._rng)
            attempt += 1
            log.info("mqtt: reconnecting in %.1f s", delay)
            self._stop.wait(delay)
        self._client = None

    def _watch(self, client: paho.Client) -> None:
        limit = self.config.watchdog_factor * self.config.keepalive_s
        connect_deadline = time.monotonic() + min(10.0, self.config.keepalive_s)
        while not self._down.wait(0.25):
            now = time.monotonic()
            if not self._connected.is_set():
                if now > connect_deadline:
                    log.warning("mqtt: no CONNACK in time")
                    return
                continue
            if limit > 0 and now - self._last_rx > limit:
                self.counts["watchdog_reconnects"] += 1
                self.force_reconnect(f"nothing received for {now - self._last_rx:.1f} s")
                return


def _no_delay(_c: paho.Client, _u: Any, sock: Any) -> None:
    """paho's ``on_socket_open``: send small packets (alerts, acknowledgements) at once
    instead of letting Nagle's algorithm hold them until the broker acknowledges earlier
    bytes (paho does not set TCP_NODELAY itself)."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _close_socket(client: paho.Client) -> None:
    """Close an abandoned connection's socket now rather than whenever the client object
    is garbage-collected: no fd piles up while a frozen broker leaves attempts hanging."""
    sock = client.socket()
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()


class _TlsContext(ssl.SSLContext):
    """An SSL context that remembers its last socket, so a failed handshake's socket can
    be closed (paho 2.2 drops it without closing it: an fd leak per attempt)."""

    last: ssl.SSLSocket | None = None

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        sock = super().wrap_socket(*args, **kwargs)
        self.last = sock
        return sock

    def close_last(self) -> None:
        if self.last is not None:
            with contextlib.suppress(OSError):
                self.last.close()
            self.last = None
