"""Decoded frames → :class:`agent.types.Point`, with device time mapped to epoch seconds.

The time rule (``docs/serial-protocol.md`` section 5): unwrap the u32 millisecond counter,
anchor ``offset = now - device_s`` on the first frame, lower the offset whenever a frame
arrives with less delay, and re-anchor when it lags by more than ``max_skew``.

>>> from firmware_bridge.framing import Frame
>>> from firmware_bridge.messages import Channel, Data, Hello
>>> conv = SampleConverter()
>>> conv.convert(Frame(7, 0, 1000, Hello((Channel("temp"),))), now=100.0)
[]
>>> data = Data.from_rows([(20.0,), (21.0,)], period_us=500_000)
>>> [(p.ts, p.stream, p.values) for p in conv.convert(Frame(7, 1, 2000, data), now=101.5)]
[(101.0, 'dev7', {'temp': 20.0}), (101.5, 'dev7', {'temp': 21.0})]
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from agent.types import Point
from firmware_bridge.framing import Frame
from firmware_bridge.messages import Data, Heartbeat, Hello

_WRAP_MS: Final = 1 << 32


class TimeSource(enum.StrEnum):
    DEVICE = "device"  # device clock, mapped by DeviceClock
    GATEWAY = "gateway"  # receive time; earlier samples of a frame back-dated by period


class DeviceClock:
    """Maps one device's millisecond counter to epoch seconds; the caller passes ``now``.

    >>> clock = DeviceClock()
    >>> clock.observe(clock.unwrap(5000), now=1000.2)  # anchor: 0.2 s of delay
    >>> clock.observe(clock.unwrap(6000), now=1001.05)  # less delay: better offset
    >>> clock.to_epoch(clock.unwrap(7000))
    1002.05
    """

    def __init__(
        self, max_skew: float = 2.0, wrap_ms: int | None = _WRAP_MS, reset_ms: float = 1000.0
    ) -> None:
        self.max_skew = max_skew
        self.wrap_ms = wrap_ms
        self.reset_ms = reset_ms
        self.resets = 0
        self.resyncs = 0
        self._offset: float | None = None
        self._last_raw: float | None = None
        self._base_ms = 0

    def unwrap(self, raw_ms: float) -> float:
        """Absolute device milliseconds; detects wraps and device resets."""
        last = self._last_raw
        self._last_raw = raw_ms
        if last is not None and raw_ms < last:
            if self.wrap_ms is not None and last - raw_ms > self.wrap_ms // 2:
                self._base_ms += self.wrap_ms
            elif last - raw_ms > self.reset_ms:
                self.resets += 1
                self._base_ms = 0
                self._offset = None
        return self._base_ms + raw_ms

    def observe(self, device_ms: float, now: float) -> None:
        """Refine the offset with a sample taken at ``device_ms`` that arrived at ``now``."""
        candidate = now - device_ms / 1000.0
        if self._offset is None or candidate < self._offset:
            self._offset = candidate
        elif candidate - self._offset > self.max_skew:
            self._offset = candidate
            self.resyncs += 1

    def to_epoch(self, device_ms: float) -> float:
        if self._offset is None:
            raise RuntimeError("DeviceClock.to_epoch before the first observe()")
        return round(self._offset + device_ms / 1000.0, 6)


@dataclass(slots=True)
class _Device:
    names: tuple[str, ...]
    clock: DeviceClock
    stream: str
    hello: Hello | None = None


COUNTERS: Final = (
    "points",
    "hellos",
    "heartbeats",
    "no_hello",
    "channel_mismatch",
    "missing_values",
    "empty_samples",
    "clock_resets",
    "clock_resyncs",
    "device_tx_dropped",
)


class SampleConverter:
    """Turns HELLO/DATA/HEARTBEAT frames of any number of devices into points.

    Args:
        stream: stream id for every point; default ``dev{device_id}``.
        channels: names to use before (or without) a HELLO; default: drop such DATA.
        time_source: ``device`` (mapped device clock) or ``gateway`` (receive time).
        max_skew: seconds a device clock may lag before the offset is re-anchored.
    """

    def __init__(
        self,
        stream: str | None = None,
        channels: Sequence[str] = (),
        time_source: TimeSource | str = TimeSource.DEVICE,
        max_skew: float = 2.0,
    ) -> None:
        self.stream = stream
        self.channels = tuple(channels)
        self.time_source = TimeSource(time_source)
        self.max_skew = max_skew
        self._devices: dict[int, _Device] = {}
        self._counts = dict.fromkeys(COUNTERS, 0)

    def stats(self) -> dict[str, int]:
        counts = dict(self._counts)
        counts["clock_resets"] = sum(d.clock.resets for d in self._devices.values())
        counts["clock_resyncs"] = sum(d.clock.resyncs for d in self._devices.values())
        return counts

    def hello(self, device_id: int) -> Hello | None:
        """The last HELLO seen from ``device_id``."""
        dev = self._devices.get(device_id)
        return dev.hello if dev else None

    def _device(self, device_id: int) -> _Device:
        dev = self._devices.get(device_id)
        if dev is None:
            stream = self.stream or f"dev{device_id}"
            dev = _Device(self.channels, DeviceClock(self.max_skew), stream)
            self._devices[device_id] = dev
        return dev

    def convert(self, frame: Frame, now: float) -> list[Point]:
        """Points of one frame (empty for anything but DATA)."""
        dev = self._device(frame.device_id)
        msg = frame.message
        if isinstance(msg, Data):
            return self._data(dev, frame.timestamp_ms, msg, now)
        if isinstance(msg, Hello):
            self._counts["hellos"] += 1
            dev.hello = msg
            dev.names = msg.names
        elif isinstance(msg, Heartbeat):
            self._counts["heartbeats"] += 1
            self._counts["device_tx_dropped"] = max(
                self._counts["device_tx_dropped"], msg.tx_dropped
            )
        dev.clock.observe(dev.clock.unwrap(frame.timestamp_ms), now)
        return []

    def _data(self, dev: _Device, raw_ms: int, msg: Data, now: float) -> list[Point]:
        counts = self._counts
        names = dev.names
        if not names:
            counts["no_hello"] += 1
            return []
        if len(names) != msg.n_channels:
            counts["channel_mismatch"] += 1
            return []
        n = msg.n_samples
        period_ms = msg.period_us / 1000.0
        first_ms = dev.clock.unwrap(raw_ms)
        if self.time_source is TimeSource.DEVICE:
            dev.clock.observe(first_ms + (n - 1) * period_ms, now)
            stamps = [dev.clock.to_epoch(first_ms + i * period_ms) for i in range(n)]
        else:
            stamps = [round(now - (n - 1 - i) * period_ms / 1000.0, 6) for i in range(n)]
        points: list[Point] = []
        values = msg.values
        width = msg.n_channels
        stream = dev.stream
        for i, ts in enumerate(stamps):
            row = values[i * width : (i + 1) * width]
            mapping = {k: v for k, v in zip(names, row, strict=True) if v == v}
            if len(mapping) != width:
                counts["missing_values"] += width - len(mapping)
                if not mapping:
                    counts["empty_samples"] += 1
                    continue
            points.append(Point(ts=ts, stream=stream, values=mapping))
        counts["points"] += len(points)
        return points
