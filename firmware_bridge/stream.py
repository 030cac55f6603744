"""Bytes from a port in, points out: the pure core shared by the serial source and the bridge.

>>> from firmware_bridge.framing import Frame, encode_frame
>>> from firmware_bridge.messages import Channel, Data, Hello
>>> stream = SampleStream(mode="auto")
>>> wire = encode_frame(Frame(1, 0, 0, Hello((Channel("v"),))))
>>> wire += encode_frame(Frame(1, 1, 100, Data.from_rows([(3.5,)])))
>>> [p.values for p in stream.feed(wire, now=50.0)]
[{'v': 3.5}]
>>> stream.stats()["mode"] == Mode.BINARY
True
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from agent.types import Point
from firmware_bridge import framing
from firmware_bridge.ascii_lines import AsciiLineParser, AsciiSample
from firmware_bridge.framing import FrameDecoder
from firmware_bridge.samples import DeviceClock, SampleConverter, TimeSource

ASCII_LINES_TO_DECIDE = 3


class Mode(enum.IntEnum):
    """Wire mode; ``AUTO`` decides on the first valid frame or after 3 good lines."""

    AUTO = 0
    BINARY = 1
    ASCII = 2

    @classmethod
    def parse(cls, text: str | Mode) -> Mode:
        if isinstance(text, Mode):
            return text
        try:
            return cls[text.upper()]
        except KeyError:
            raise ValueError(f"mode: must be binary, ascii or auto, got {text!r}") from None


class SampleStream:
    """Decodes a byte stream in ``binary``, ``ascii`` or ``auto`` mode into points.

    Args:
        mode: wire mode (see :class:`Mode`).
        stream: stream id; default ``dev{device_id}`` (binary) or ``serial`` (ascii).
        channels: channel names for ASCII CSV lines, and for DATA before any HELLO.
        time_source: ``device`` or ``gateway`` (see ``docs/serial-protocol.md`` section 5).
        max_skew: seconds a device clock may lag before its offset is re-anchored.
    """

    def __init__(
        self,
        mode: Mode | str = Mode.BINARY,
        stream: str | None = None,
        channels: Sequence[str] = (),
        time_source: TimeSource | str = TimeSource.DEVICE,
        max_skew: float = 2.0,
    ) -> None:
        self.mode = Mode.parse(mode)
        self.stream = stream
        self.channels = tuple(channels)
        self.time_source = TimeSource(time_source)
        self.max_skew = max_skew
        self._decided = self.mode
        self._frames = FrameDecoder()
        self._lines = AsciiLineParser(self.channels)
        self._converter = SampleConverter(stream, self.channels, self.time_source, max_skew)
        self._ascii_clock = DeviceClock(max_skew, wrap_ms=None)
        self._pending: list[AsciiSample] = []

    @property
    def decided(self) -> Mode:
        """The mode in use (``AUTO`` while still undecided)."""
        return self._decided

    def reset(self) -> None:
        """The port was reopened: drop partial frames/lines and decide the mode again."""
        self._frames.reset()
        self._lines.reset()
        self._decided = self.mode
        self._pending.clear()

    def stats(self) -> dict[str, int]:
        """Frame decoder, line parser and converter counters, plus ``mode``."""
        counts = self._frames.stats()
        for key, value in self._lines.stats().items():
            if key not in counts or self._decided is Mode.ASCII:
                counts[key] = value
        counts.update(self._converter.stats())
        counts["mode"] = int(self._decided)
        return counts

    def feed(self, data: bytes, now: float) -> list[Point]:
        """Decode ``data`` received at ``now`` (epoch seconds)."""
        if self._decided is Mode.BINARY:
            return self._binary(self._frames.feed(data), now)
        if self._decided is Mode.ASCII:
            return self._ascii(self._lines.feed(data), now)
        frames = self._frames.feed(data)
        if frames:
            self._decided = Mode.BINARY
            self._pending.clear()
            return self._binary(frames, now)
        self._pending.extend(self._lines.feed(data))
        if len(self._pending) >= ASCII_LINES_TO_DECIDE:
            self._decided = Mode.ASCII
            pending, self._pending = self._pending, []
            return self._ascii(pending, now)
        return []

    def _binary(self, frames: list[framing.Frame], now: float) -> list[Point]:
        points: list[Point] = []
        for frame in frames:
            points.extend(self._converter.convert(frame, now))
        return points

    def _ascii(self, lines: list[AsciiSample], now: float) -> list[Point]:
        stream = self.stream or "serial"
        clock = self._ascii_clock
        out: list[Point] = []
        for line in lines:
            values = {k: v for k, v in line.values.items() if v == v}
            if not values:
                continue
            if line.device_ms is None or self.time_source is TimeSource.GATEWAY:
                ts = round(now, 6)
            else:
                device_ms = clock.unwrap(line.device_ms)
                clock.observe(device_ms, now)
                ts = clock.to_epoch(device_ms)
            out.append(Point(ts=ts, stream=stream, values=values))
        return out
