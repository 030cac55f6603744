"""The transport contract: what the live runtime needs of a broker connection.

Modelled on httpx's ``BaseTransport``: a small base class whose few methods are the whole
contract, usable as a context manager. Implementations:

* :class:`~agent.transports.mqtt.MqttTransport`: a real broker (paho-mqtt), reconnecting;
* :class:`~agent.transports.memory.MemoryTransport`: in memory, built from a plain function,
  so runtime and control-plane logic is testable without a broker;
* :class:`NullTransport`: no broker at all (``mqtt.enabled: false``): never connected.

Callbacks (``on_message``, ``on_connected``, ``on_ack``) run on the transport's own thread
and must only enqueue or publish, never run detection. The runtime attaches them with
:meth:`Transport.bind` before :meth:`Transport.start`.

>>> t = NullTransport()
>>> with t:
...     t.connected, t.publish("a/b", b"x", 1)
(False, None)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

#: ``(topic, payload, properties)``; properties are None for a message that carries none
#: (MQTT 3.1.1, or a plain MQTT 5 QoS-0 message, which the MQTT transport decodes itself)
MessageHandler = Callable[[str, bytes, Any], None]
Subscriptions = Callable[[], Sequence[tuple[str, int]]]


@dataclass(frozen=True, slots=True)
class Will:
    """The Last Will: what the broker publishes when the connection dies uncleanly."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


def _no_message(_topic: str, _payload: bytes, _props: Any) -> None:
    return None


def _no_subscriptions() -> Sequence[tuple[str, int]]:
    return ()


class Transport:
    """Base class of every transport. Subclasses implement the methods that raise here."""

    v5: bool = False
    generation: int = 0
    counts: dict[str, int]
    will: Will | None = None
    on_message: MessageHandler = staticmethod(_no_message)
    subscriptions: Subscriptions = staticmethod(_no_subscriptions)
    on_connected: Callable[[int], None] | None = None
    on_ack: Callable[[int, int], None] | None = None

    def bind(self, will: Will | None, on_message: MessageHandler, subscriptions: Subscriptions,
             on_connected: Callable[[int], None] | None = None) -> None:
        """Attach the runtime's callbacks (before :meth:`start`)."""
        self.will = will
        self.on_message = on_message
        self.subscriptions = subscriptions
        self.on_connected = on_connected

    @property
    def connected(self) -> bool:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def stop(self, timeout: float = 5.0) -> None:
        raise NotImplementedError

    def wait_connected(self, timeout: float) -> bool:
        raise NotImplementedError

    def wait_ready(self, timeout: float) -> bool:
        """Connected and the subscriptions acknowledged."""
        raise NotImplementedError

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False,
                properties: Any = None) -> int | None:
        """Queue a message on the live connection; its message id, or None when offline."""
        raise NotImplementedError

    def publish_wait(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False,
                     timeout: float = 2.0) -> bool:
        """Publish and wait until the broker acknowledged it."""
        raise NotImplementedError

    def subscribe(self, filters: Sequence[tuple[str, int]]) -> None:
        raise NotImplementedError

    def unsubscribe(self, filters: Sequence[str]) -> None:
        raise NotImplementedError

    def __enter__(self) -> Transport:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class NullTransport(Transport):
    """No broker (``mqtt.enabled: false``): never connected, publishes nothing."""

    def __init__(self) -> None:
        self.counts = {}

    @property
    def connected(self) -> bool:
        return False

    def start(self) -> None:
        return None

    def stop(self, timeout: float = 5.0) -> None:
        return None

    def wait_connected(self, timeout: float) -> bool:
        return False

    def wait_ready(self, timeout: float) -> bool:
        return False

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False,
                properties: Any = None) -> int | None:
        return None

    def publish_wait(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False,
                     timeout: float = 2.0) -> bool:
        return False

    def subscribe(self, filters: Sequence[tuple[str, int]]) -> None:
        return None

    def unsubscribe(self, filters: Sequence[str]) -> None:
        return None
