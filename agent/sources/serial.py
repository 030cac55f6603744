"""Serial source: a background thread reads a port and calls ``on_point`` for every sample.

Independent of the rest of the agent: it needs a :class:`SerialSourceConfig` and a callback.
Decoding is :class:`firmware_bridge.stream.SampleStream` (pure); the port handling, including
reconnecting with jittered backoff, is :class:`firmware_bridge.serial_port.PortReader`.

>>> cfg = SerialSourceConfig(port="/dev/ttyUSB0", mode="ascii", channels=("temp",))
>>> cfg.resolved_stream
'ttyUSB0'
>>> SerialSourceConfig(port="/dev/ttyUSB0", baud=0)
Traceback (most recent call last):
...
agent.errors.ConfigError: serial.baud: must be > 0, got 0
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from agent.errors import ConfigError
from agent.types import Point
from firmware_bridge.serial_port import (
    BYTESIZES,
    PARITIES,
    STOPBITS,
    PortReader,
    PortSettings,
    SerialLike,
    open_serial,
)
from firmware_bridge.stream import SampleStream

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SerialSourceConfig:
    """Settings of one serial source (YAML section ``serial``).

    Args:
        port: device path, e.g. ``/dev/ttyUSB0`` or a udev symlink.
        baud, parity (N/E/O/M/S), bytesize, stopbits: line settings.
        mode: ``binary`` (framed protocol), ``ascii`` (lines) or ``auto``.
        stream: stream id; default ``dev{device_id}`` (binary) or the port's basename (ascii).
        channels: names for ASCII CSV lines (and for binary DATA before any HELLO).
        time_source: ``device`` (device clock mapped to epoch) or ``gateway`` (receive time).
        max_skew: seconds a device clock may lag before it is re-anchored.
        reconnect_initial, reconnect_max: backoff bounds (seconds) when the port fails.
    """

    port: str
    baud: int = 115200
    parity: str = "N"
    bytesize: int = 8
    stopbits: float = 1
    mode: Literal["binary", "ascii", "auto"] = "binary"
    stream: str | None = None
    channels: tuple[str, ...] = ()
    time_source: Literal["device", "gateway"] = "device"
    max_skew: float = 2.0
    read_timeout: float = 0.05
    reconnect_initial: float = 0.1
    reconnect_max: float = 5.0

    def __post_init__(self) -> None:
        def bad(key: str, reason: str) -> ConfigError:
            return ConfigError(f"serial.{key}", reason)

        if not self.port:
            raise bad("port", "must not be empty")
        if self.baud <= 0:
            raise bad("baud", f"must be > 0, got {self.baud}")
        if self.parity not in PARITIES:
            raise bad("parity", f"must be one of {', '.join(PARITIES)}, got {self.parity!r}")
        if self.bytesize not in BYTESIZES:
            raise bad("bytesize", f"must be one of {BYTESIZES}, got {self.bytesize}")
        if self.stopbits not in STOPBITS:
            raise bad("stopbits", f"must be one of {STOPBITS}, got {self.stopbits}")
        if self.mode not in ("binary", "ascii", "auto"):
            raise bad("mode", f"must be binary, ascii or auto, got {self.mode!r}")
        if self.time_source not in ("device", "gateway"):
            raise bad("time_source", f"must be device or gateway, got {self.time_source!r}")
        if self.stream is not None and not self.stream:
            raise bad("stream", "must not be empty (leave it out for the default)")
        if len(set(self.channels)) != len(self.channels):
            raise bad("channels", f"names must be unique, got {list(self.channels)}")
        if self.max_skew <= 0:
            raise bad("max_skew", f"must be > 0, got {self.max_skew}")
        if not 0 < self.read_timeout <= 5:
            raise bad("read_timeout", f"must be in (0, 5], got {self.read_timeout}")
        if not 0 < self.reconnect_initial <= self.reconnect_max:
            raise bad("reconnect_initial", "need 0 < reconnect_initial <= reconnect_max")

    @property
    def resolved_stream(self) -> str | None:
        """The configured stream, or the ASCII default; ``None`` means ``dev{device_id}``."""
        if self.stream or self.mode == "binary":
            return self.stream
        return os.path.basename(self.port) or "serial"

    def port_settings(self) -> PortSettings:
        return PortSettings(
            port=self.port,
            baudrate=self.baud,
            bytesize=self.bytesize,
            parity=self.parity,
            stopbits=self.stopbits,
            read_timeout=self.read_timeout,
            backoff_initial=self.reconnect_initial,
            backoff_max=self.reconnect_max,
        )


class SerialSource:
    """Reads one port in a background thread and calls ``on_point`` for every sample.

    ``on_point`` runs in the reader thread: keep it short (enqueue). If it raises, the error
    is logged and counted (``callback_errors``) and reading goes on. Use as a context
    manager, or call :meth:`start` and :meth:`close`.

    Args:
        config: port and decoding settings.
        on_point: called with every decoded :class:`Point`.
        clock: epoch seconds of receipt (injectable for tests).
        opener: opens the port (injectable for tests); default pyserial.
    """

    def __init__(
        self,
        config: SerialSourceConfig,
        on_point: Callable[[Point], None],
        *,
        clock: Callable[[], float] = time.time,
        opener: Callable[[PortSettings], SerialLike] = open_serial,
    ) -> None:
        self.config = config
        self.on_point = on_point
        self.clock = clock
        self._lock = threading.Lock()
        self._callback_errors = 0
        self._decoder = SampleStream(
            mode=config.mode,
            stream=config.resolved_stream,
            channels=config.channels,
            time_source=config.time_source,
            max_skew=config.max_skew,
        )
        self._reader = PortReader(
            config.port_settings(), self._on_bytes, on_reopen=self._on_reopen, opener=opener
        )
        self._started = False

    def start(self) -> None:
        """Start the reader thread (the port is opened, and reopened, in it)."""
        if not self._started:
            self._started = True
            self._reader.start()

    def wait_connected(self, timeout: float) -> bool:
        """Block until the port is open (or ``timeout`` seconds pass)."""
        return self._reader.connected.wait(timeout)

    def stats(self) -> dict[str, int]:
        """Decoder counters, port counters (``reconnects``, ``read_errors``...), callback errors."""
        with self._lock:
            counts = self._decoder.stats()
        counts.update(self._reader.stats())
        counts["callback_errors"] = self._callback_errors
        return counts

    def close(self) -> None:
        """Stop the thread and close the port; safe to call twice."""
        self._reader.stop()

    def __enter__(self) -> SerialSource:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _on_reopen(self) -> None:
        with self._lock:
            self._decoder.reset()

    def _on_bytes(self, data: bytes) -> None:
        now = self.clock()
        with self._lock:
            points = self._decoder.feed(data, now)
        for point in points:
            try:
                self.on_point(point)
            except Exception:  # the reader thread is this source's supervisor loop
                self._callback_errors += 1
                log.exception("on_point callback failed for %s", point.stream)
