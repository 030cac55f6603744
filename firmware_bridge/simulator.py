"""A simulated device: synthetic or CSV samples, framed for real, written to a pseudo-terminal.

:class:`DeviceSimulator` is pure (rows in, wire bytes out); :class:`PtyDevice` is the only
part that touches the OS. Tests and ``edge-bridge simulate`` use both.

>>> sim = DeviceSimulator(channels=("a", "b"), rate_hz=10.0, samples_per_frame=2)
>>> from firmware_bridge.framing import FrameDecoder
>>> frames = FrameDecoder().feed(sim.hello() + sim.data([(1.0, 2.0), (3.0, 4.0)]))
>>> [f.type.name for f in frames], frames[1].timestamp_ms, frames[1].message.period_us
(['HELLO', 'DATA'], 0, 100000)
"""

from __future__ import annotations

import csv
import io
import math
import os
import random
import tty
from collections.abc import Iterator, Sequence
from pathlib import Path

from firmware_bridge.framing import Frame, encode_frame
from firmware_bridge.messages import Channel, Data, Heartbeat, Hello


class DeviceSimulator:
    """Produces the wire bytes of one device: HELLO, DATA and HEARTBEAT with a running seq.

    The device clock advances by ``1 / rate_hz`` per sample. With ``corrupt_rate`` > 0 each
    frame has that probability of one flipped bit (``corrupted`` counts them).
    """

    def __init__(
        self,
        device_id: int = 1,
        channels: Sequence[str] = ("ch0", "ch1"),
        units: Sequence[str] = (),
        rate_hz: float = 10.0,
        samples_per_frame: int = 1,
        firmware: str = "sim-1.0",
        corrupt_rate: float = 0.0,
        seed: int = 0,
    ) -> None:
        if rate_hz <= 0:
            raise ValueError(f"rate_hz: must be > 0, got {rate_hz}")
        if not 0 <= corrupt_rate <= 1:
            raise ValueError(f"corrupt_rate: must be in [0, 1], got {corrupt_rate}")
        self.device_id = device_id
        self.channels = tuple(channels)
        self.rate_hz = rate_hz
        self.samples_per_frame = samples_per_frame
        self.corrupt_rate = corrupt_rate
        units = tuple(units) or ("",) * len(self.channels)
        self.hello_message = Hello(
            tuple(Channel(n, u) for n, u in zip(self.channels, units, strict=True)),
            rate_hz,
            firmware,
        )
        self.seq = 0
        self.samples_sent = 0
        self.corrupted = 0
        self._rng = random.Random(seed)

    @property
    def now_ms(self) -> int:
        """The device clock: milliseconds since boot (wraps like a u32)."""
        return round(self.samples_sent * 1000.0 / self.rate_hz) & 0xFFFFFFFF

    def _frame(self, message: Hello | Data | Heartbeat, ts_ms: int) -> bytes:
        wire = encode_frame(Frame(self.device_id, self.seq, ts_ms, message))
        self.seq = (self.seq + 1) & 0xFFFF
        if self.corrupt_rate and self._rng.random() < self.corrupt_rate:
            self.corrupted += 1
            buf = bytearray(wire)
            bit = self._rng.randrange(len(buf) * 8)
            buf[bit // 8] ^= 1 << (bit % 8)
            wire = bytes(buf)
        return wire

    def hello(self) -> bytes:
        return self._frame(self.hello_message, self.now_ms)

    def heartbeat(self) -> bytes:
        return self._frame(Heartbeat(0), self.now_ms)

    def data(self, rows: Sequence[Sequence[float]]) -> bytes:
        """One DATA frame holding ``rows`` (each one value per channel)."""
        ts = self.now_ms
        period_us = round(1e6 / self.rate_hz) if len(rows) > 1 else 0
        wire = self._frame(Data.from_rows(rows, period_us=period_us), ts)
        self.samples_sent += len(rows)
        return wire


def synthetic_rows(n_channels: int, rate_hz: float, seed: int = 0) -> Iterator[tuple[float, ...]]:
    """Endless sin/cos rows with a little noise; channel ``i`` has period ``5 + i`` seconds."""
    rng = random.Random(seed)
    i = 0
    while True:
        t = i / rate_hz
        yield tuple(
            (math.sin if c % 2 == 0 else math.cos)(2 * math.pi * t / (5 + c)) + rng.gauss(0.0, 0.05)
            for c in range(n_channels)
        )
        i += 1


def _number(text: str) -> float | None:
    try:
        return float(text.strip())
    except ValueError:
        return None


def read_csv(path: str | Path) -> tuple[tuple[str, ...], list[tuple[float, ...]]]:
    """Numeric columns of a CSV file (``,`` or ``;``, detected): names and rows.

    A first row that is not all numbers is the header; a column is kept if every value in it
    is a number.

    Raises:
        ValueError: the file has no numeric column or no data row.
    """
    text = Path(path).read_text(encoding="utf-8-sig")
    first = text.splitlines()[0] if text.strip() else ""
    sep = ";" if first.count(";") > first.count(",") else ","
    table = [row for row in csv.reader(io.StringIO(text), delimiter=sep) if row]
    if not table:
        raise ValueError(f"{path}: empty CSV")
    header: list[str] | None = None
    if any(_number(cell) is None for cell in table[0]):
        header, table = table[0], table[1:]
    width = len(header) if header else len(table[0]) if table else 0
    keep = [
        c
        for c in range(width)
        if table and all(len(r) > c and _number(r[c]) is not None for r in table)
    ]
    if not keep:
        raise ValueError(f"{path}: no numeric column with data")
    names = tuple((header[c].strip() or f"ch{c}") if header else f"ch{c}" for c in keep)
    rows = [tuple(float(r[c]) for c in keep) for r in table]
    return names, rows


class PtyDevice:
    """A pseudo-terminal whose master end plays the device; :attr:`path` is the port.

    With ``link`` a symlink at that path points at the slave, so a test can make the device
    disappear (:meth:`close`) and come back (a new :class:`PtyDevice` with the same link).
    Writes never block: bytes that do not fit the pty buffer are dropped and counted, as a
    UART does when nobody listens.
    """

    def __init__(self, link: str | Path | None = None) -> None:
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no line editing, no XON/XOFF on binary data
        os.set_blocking(self.master, False)
        self.slave_name = os.ttyname(self._slave)
        self.link = Path(link) if link is not None else None
        if self.link is not None:
            tmp = self.link.with_name(self.link.name + ".tmp")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(self.slave_name)
            tmp.replace(self.link)
        self.bytes_dropped = 0
        self.closed = False

    @property
    def path(self) -> str:
        return str(self.link) if self.link is not None else self.slave_name

    def write(self, data: bytes) -> int:
        """Write what fits; return the number of bytes written."""
        try:
            written = os.write(self.master, data)
        except (BlockingIOError, InterruptedError):
            written = 0
        self.bytes_dropped += len(data) - written
        return written

    def close(self, unlink: bool = True) -> None:
        """The device goes away: close both ends and (by default) remove the symlink."""
        if self.closed:
            return
        self.closed = True
        if unlink and self.link is not None:
            self.link.unlink(missing_ok=True)
        os.close(self.master)
        os.close(self._slave)

    def __enter__(self) -> PtyDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
