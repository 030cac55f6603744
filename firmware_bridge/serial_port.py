"""A serial port reader that survives the device going away: reopen with jittered backoff.

The only module here that touches a port. :class:`PortReader` runs a loop (in a thread of
its own via :meth:`start`, or in the caller's via :meth:`run`) that opens the port, hands
every chunk read to ``on_bytes`` and, when the port disappears or a read fails, closes it and
tries again after :func:`backoff_delay`.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

import serial

from firmware_bridge.errors import PortError

log = logging.getLogger(__name__)

PARITIES: Final = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD,
                   "M": serial.PARITY_MARK, "S": serial.PARITY_SPACE}  # fmt: skip
BYTESIZES: Final = (5, 6, 7, 8)
STOPBITS: Final = (1, 1.5, 2)


class SerialLike(Protocol):
    """What the reader needs of a port (``serial.Serial`` has it)."""

    in_waiting: int

    def read(self, size: int = 1) -> bytes: ...
    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class PortSettings:
    """How to open the port and how to retry.

    >>> PortSettings("/dev/ttyUSB0", parity="X")
    Traceback (most recent call last):
    ...
    ValueError: parity: must be one of N, E, O, M, S, got 'X'
    """

    port: str
    baudrate: int = 115200
    bytesize: int = 8
    parity: str = "N"
    stopbits: float = 1
    read_timeout: float = 0.05
    backoff_initial: float = 0.1
    backoff_max: float = 5.0

    def __post_init__(self) -> None:
        if not self.port:
            raise ValueError("port: must not be empty")
        if self.baudrate <= 0:
            raise ValueError(f"baudrate: must be > 0, got {self.baudrate}")
        if self.bytesize not in BYTESIZES:
            raise ValueError(f"bytesize: must be one of {BYTESIZES}, got {self.bytesize}")
        if self.parity not in PARITIES:
            raise ValueError(f"parity: must be one of {', '.join(PARITIES)}, got {self.parity!r}")
        if self.stopbits not in STOPBITS:
            raise ValueError(f"stopbits: must be one of {STOPBITS}, got {self.stopbits}")
        if not 0 < self.read_timeout <= 5:
            raise ValueError(f"read_timeout: must be in (0, 5] s, got {self.read_timeout}")
        if not 0 < self.backoff_initial <= self.backoff_max:
            raise ValueError("backoff: need 0 < backoff_initial <= backoff_max")


def backoff_delay(attempt: int, initial: float, maximum: float, rng: random.Random) -> float:
    """Delay before retry ``attempt`` (0-based): exponential, capped, "equal jitter".

    Half the capped delay is fixed, half random, so retries of many gateways spread out
    but never hammer the port.

    >>> rng = random.Random(1)
    >>> [0.05 <= backoff_delay(0, 0.1, 5.0, rng) <= 0.1, backoff_delay(30, 0.1, 5.0, rng) <= 5.0]
    [True, True]
    """
    capped = min(maximum, initial * 2.0 ** min(attempt, 32))
    return capped / 2 + rng.random() * capped / 2


def open_serial(settings: PortSettings) -> SerialLike:
    """Open and configure the port with pyserial.

    Raises:
        PortError: the port is missing, busy or refuses the settings.
    """
    try:
        port: SerialLike = serial.Serial(
            port=settings.port,
            baudrate=settings.baudrate,
            bytesize=settings.bytesize,
            parity=PARITIES[settings.parity],
            stopbits=settings.stopbits,
            timeout=settings.read_timeout,
        )
        return port
    except (serial.SerialException, OSError, ValueError) as exc:
        raise PortError(f"cannot open {settings.port}: {exc}") from exc


class PortReader:
    """Reads a port forever (until :meth:`stop`), reopening it whenever it fails.

    Counters: ``opens``, ``reconnects`` (opens after the first), ``open_failures``,
    ``read_errors``, ``bytes_read``. ``on_reopen`` is called after every reopen, so a
    decoder can drop its partial frame.
    """

    def __init__(
        self,
        settings: PortSettings,
        on_bytes: Callable[[bytes], None],
        *,
        on_reopen: Callable[[], None] | None = None,
        opener: Callable[[PortSettings], SerialLike] = open_serial,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.on_bytes = on_bytes
        self.on_reopen = on_reopen
        self.opener = opener
        self._rng = rng or random.Random()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._port: SerialLike | None = None
        self._counts = dict.fromkeys(
            ("opens", "reconnects", "open_failures", "read_errors", "bytes_read"), 0
        )
        self.connected = threading.Event()

    def stats(self) -> dict[str, int]:
        return dict(self._counts)

    def start(self) -> None:
        """Run :meth:`run` in a daemon thread."""
        if self._thread is not None:
            raise RuntimeError("PortReader already started")
        self._thread = threading.Thread(
            target=self.run, name=f"serial:{self.settings.port}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Ask the loop to end and wait for it (a read returns within ``read_timeout``)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def run(self) -> None:
        """Open, read, reopen... until :meth:`stop`."""
        attempt = 0
        while not self._stop.is_set():
            try:
                port = self.opener(self.settings)
            except PortError as exc:
                self._counts["open_failures"] += 1
                delay = backoff_delay(
                    attempt, self.settings.backoff_initial, self.settings.backoff_max, self._rng
                )
                attempt += 1
                log.debug("%s; retry in %.2f s", exc, delay)
                self._stop.wait(delay)
                continue
            attempt = 0
            self._counts["opens"] += 1
            if self._counts["opens"] > 1:
                self._counts["reconnects"] += 1
                log.info("serial port %s reopened", self.settings.port)
                if self.on_reopen is not None:
                    self.on_reopen()
            self._read_until_failure(port)
        self.connected.clear()

    def _read_until_failure(self, port: SerialLike) -> None:
        self._port = port
        self.connected.set()
        try:
            while not self._stop.is_set():
                try:
                    waiting = port.in_waiting
                    data = port.read(max(1, min(waiting, 65536)))
                except (serial.SerialException, OSError, TypeError) as exc:
                    # pyserial raises TypeError when the fd was closed under it.
                    self._counts["read_errors"] += 1
                    log.warning("serial port %s failed: %s", self.settings.port, exc)
                    return
                if data:
                    self._counts["bytes_read"] += len(data)
                    self.on_bytes(data)
        finally:
            self.connected.clear()
            self._port = None
            _close_quietly(port)
            if not self._stop.is_set():
                self._stop.wait(self.settings.backoff_initial / 2)


def _close_quietly(port: Any) -> None:
    try:
        port.close()
    except (serial.SerialException, OSError):
        log.debug("closing a failed port raised", exc_info=True)
