"""Payloads of the serial protocol's message types (pure, no framing).

Each message is a frozen dataclass that checks its own limits, turns itself into payload bytes
(:meth:`to_payload`) and is parsed back by :func:`parse_payload`, which raises
:class:`~firmware_bridge.errors.BadFrame` of kind ``payload`` on anything malformed.

>>> hello = Hello(channels=(Channel("temp", "degC"),), sample_rate_hz=10.0, firmware="1.2.0")
>>> parse_payload(MessageType.HELLO, hello.to_payload()) == hello
True
>>> data = Data.from_rows([(1.5, 2.0), (3.0, 4.0)], period_us=100_000)
>>> data.rows()
[(1.5, 2.0), (3.0, 4.0)]
"""

from __future__ import annotations

import enum
import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Final

from firmware_bridge.errors import BadFrame

MAX_CHANNELS: Final = 64
MAX_SAMPLES_PER_FRAME: Final = 255
MAX_NAME_BYTES: Final = 32
MAX_UNIT_BYTES: Final = 16
MAX_FIRMWARE_BYTES: Final = 32
INT16_MISSING: Final = -32768

_F32 = struct.Struct("<f")
_DATA_HEAD = struct.Struct("<BBBI")
_HELLO_HEAD = struct.Struct("<fB")


class MessageType(enum.IntEnum):
    """Frame types; the values are the ``type`` byte on the wire."""

    HELLO = 0x01
    DATA = 0x02
    HEARTBEAT = 0x03
    TIME = 0x10
    ACK = 0x11


class SampleEncoding(enum.IntEnum):
    """How DATA values are stored."""

    FLOAT32 = 0
    INT16 = 1  # value = raw * scale; raw -32768 = no value


def to_f32(x: float) -> float:
    """Round a float to the nearest float32, as it will be on the wire."""
    return float(_F32.unpack(_F32.pack(x))[0])


def _str8(what: str, text: str, lo: int, hi: int) -> bytes:
    raw = text.encode("utf-8")
    if not lo <= len(raw) <= hi:
        raise ValueError(f"{what} {text!r}: must be {lo}..{hi} UTF-8 bytes, got {len(raw)}")
    return bytes([len(raw)]) + raw


@dataclass(frozen=True, slots=True)
class Channel:
    """One channel announced in HELLO."""

    name: str
    unit: str = ""


@dataclass(frozen=True, slots=True)
class Hello:
    """Who the device is and what it measures (sent at boot and every <= 10 s)."""

    TYPE: ClassVar[MessageType] = MessageType.HELLO

    channels: tuple[Channel, ...]
    sample_rate_hz: float = 0.0
    firmware: str = ""

    def __post_init__(self) -> None:
        if not 1 <= len(self.channels) <= MAX_CHANNELS:
            raise ValueError(f"channels: need 1..{MAX_CHANNELS}, got {len(self.channels)}")
        names = [c.name for c in self.channels]
        if len(set(names)) != len(names):
            raise ValueError(f"channels: names must be unique, got {names}")
        if not math.isfinite(self.sample_rate_hz) or self.sample_rate_hz < 0:
            raise ValueError(f"sample_rate_hz: must be finite and >= 0, got {self.sample_rate_hz}")
        self.to_payload()  # checks every string limit

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.channels)

    def to_payload(self) -> bytes:
        parts = [_HELLO_HEAD.pack(self.sample_rate_hz, len(self.channels))]
        parts.append(_str8("firmware", self.firmware, 0, MAX_FIRMWARE_BYTES))
        for c in self.channels:
            parts.append(_str8("channel name", c.name, 1, MAX_NAME_BYTES))
            parts.append(_str8("unit", c.unit, 0, MAX_UNIT_BYTES))
        return b"".join(parts)

    @classmethod
    def from_payload(cls, payload: bytes) -> Hello:
        rate, n = _HELLO_HEAD.unpack_from(payload)
        pos = _HELLO_HEAD.size
        strings: list[str] = []
        for _ in range(1 + 2 * n):
            size = payload[pos]
            text = payload[pos + 1 : pos + 1 + size]
            if len(text) != size:
                raise ValueError("truncated string")
            strings.append(text.decode("utf-8"))
            pos += 1 + size
        if pos != len(payload):
            raise ValueError(f"{len(payload) - pos} trailing bytes")
        pairs = zip(strings[1::2], strings[2::2], strict=True)
        return cls(tuple(Channel(a, b) for a, b in pairs), rate, strings[0])


@dataclass(frozen=True, slots=True)
class Data:
    """Samples of every channel: ``values`` is flat, sample-major, NaN = no value.

    ``period_us`` is the spacing of samples within the frame; the frame timestamp is the
    first sample's. With ``encoding=INT16`` values are quantised to ``raw * scale``.
    """

    TYPE: ClassVar[MessageType] = MessageType.DATA

    n_channels: int
    values: tuple[float, ...]
    period_us: int = 0
    encoding: SampleEncoding = SampleEncoding.FLOAT32
    scale: float = 1.0

    def __post_init__(self) -> None:
        if not 1 <= self.n_channels <= MAX_CHANNELS:
            raise ValueError(f"n_channels: need 1..{MAX_CHANNELS}, got {self.n_channels}")
        n, rest = divmod(len(self.values), self.n_channels)
        if rest or not 1 <= n <= MAX_SAMPLES_PER_FRAME:
            raise ValueError(
                f"values: need 1..{MAX_SAMPLES_PER_FRAME} samples of {self.n_channels} "
                f"channels, got {len(self.values)} values"
            )
        if not 0 <= self.period_us <= 0xFFFFFFFF:
            raise ValueError(f"period_us: must fit a u32, got {self.period_us}")
        if self.encoding is SampleEncoding.INT16 and not (
            math.isfinite(self.scale) and self.scale > 0
        ):
            raise ValueError(f"scale: must be finite and > 0, got {self.scale}")

    @classmethod
    def from_rows(
        cls,
        rows: Iterable[Sequence[float]],
        period_us: int = 0,
        encoding: SampleEncoding = SampleEncoding.FLOAT32,
        scale: float = 1.0,
    ) -> Data:
        rows = [tuple(r) for r in rows]
        width = len(rows[0]) if rows else 0
        if any(len(r) != width for r in rows):
            raise ValueError("rows: every sample needs the same number of channels")
        flat = tuple(v for r in rows for v in r)
        return cls(width, flat, period_us, encoding, scale)

    @property
    def n_samples(self) -> int:
        return len(self.values) // self.n_channels

    def rows(self) -> list[tuple[float, ...]]:
        n = self.n_channels
        return [self.values[i : i + n] for i in range(0, len(self.values), n)]

    def to_payload(self) -> bytes:
        head = _DATA_HEAD.pack(self.encoding, self.n_channels, self.n_samples, self.period_us)
        count = len(self.values)
        if self.encoding is SampleEncoding.FLOAT32:
            return head + struct.pack(f"<{count}f", *self.values)
        scale = to_f32(self.scale)
        raw = []
        for v in self.values:
            if v != v:
                raw.append(INT16_MISSING)
                continue
            q = round(v / scale)
            if not -32767 <= q <= 32767:
                raise ValueError(f"value {v} does not fit int16 with scale {scale}")
            raw.append(q)
        return head + _F32.pack(scale) + struct.pack(f"<{count}h", *raw)

    @classmethod
    def from_payload(cls, payload: bytes) -> Data:
        encoding, n_channels, n_samples, period_us = _DATA_HEAD.unpack_from(payload)
        count = n_channels * n_samples
        pos = _DATA_HEAD.size
        if encoding == SampleEncoding.FLOAT32:
            if len(payload) != pos + 4 * count:
                raise ValueError(f"{count} float32 values need {pos + 4 * count} bytes")
            values = struct.unpack_from(f"<{count}f", payload, pos)
            return cls(n_channels, values, period_us)
        if encoding == SampleEncoding.INT16:
            if len(payload) != pos + 4 + 2 * count:
                raise ValueError(f"{count} int16 values need {pos + 4 + 2 * count} bytes")
            (scale,) = _F32.unpack_from(payload, pos)
            raw = struct.unpack_from(f"<{count}h", payload, pos + 4)
            values = tuple(math.nan if r == INT16_MISSING else r * scale for r in raw)
            return cls(n_channels, values, period_us, SampleEncoding.INT16, scale)
        raise ValueError(f"unknown sample encoding {encoding}")


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """I am alive; ``tx_dropped`` counts samples the device itself dropped since boot."""

    TYPE: ClassVar[MessageType] = MessageType.HEARTBEAT
    _S: ClassVar[struct.Struct] = struct.Struct("<I")

    tx_dropped: int = 0

    def to_payload(self) -> bytes:
        return self._S.pack(self.tx_dropped)

    @classmethod
    def from_payload(cls, payload: bytes) -> Heartbeat:
        if len(payload) != cls._S.size:
            raise ValueError(f"needs {cls._S.size} bytes")
        return cls(*cls._S.unpack(payload))


@dataclass(frozen=True, slots=True)
class TimeSync:
    """Gateway → device: the gateway's wall clock in Unix milliseconds."""

    TYPE: ClassVar[MessageType] = MessageType.TIME
    _S: ClassVar[struct.Struct] = struct.Struct("<Q")

    unix_ms: int

    def to_payload(self) -> bytes:
        return self._S.pack(self.unix_ms)

    @classmethod
    def from_payload(cls, payload: bytes) -> TimeSync:
        if len(payload) != cls._S.size:
            raise ValueError(f"needs {cls._S.size} bytes")
        return cls(*cls._S.unpack(payload))


@dataclass(frozen=True, slots=True)
class Ack:
    """Gateway → device: acknowledges the frame ``acked_seq`` of type ``acked_type``."""

    TYPE: ClassVar[MessageType] = MessageType.ACK
    _S: ClassVar[struct.Struct] = struct.Struct("<HB")

    acked_seq: int
    acked_type: int = MessageType.HELLO

    def to_payload(self) -> bytes:
        return self._S.pack(self.acked_seq, self.acked_type)

    @classmethod
    def from_payload(cls, payload: bytes) -> Ack:
        if len(payload) != cls._S.size:
            raise ValueError(f"needs {cls._S.size} bytes")
        return cls(*cls._S.unpack(payload))


Message = Hello | Data | Heartbeat | TimeSync | Ack

_BY_TYPE: Final[dict[int, type[Hello | Data | Heartbeat | TimeSync | Ack]]] = {
    cls.TYPE: cls for cls in (Hello, Data, Heartbeat, TimeSync, Ack)
}


def parse_payload(msg_type: int, payload: bytes) -> Message:
    """Parse the payload of a frame of type ``msg_type``.

    Raises:
        BadFrame: kind ``type`` for an unknown type, ``payload`` for a malformed payload.
    """
    cls = _BY_TYPE.get(msg_type)
    if cls is None:
        raise BadFrame("type", f"unknown message type 0x{msg_type:02x}")
    try:
        return cls.from_payload(payload)
    except (ValueError, IndexError, struct.error) as exc:  # UnicodeDecodeError is a ValueError
        raise BadFrame("payload", f"{MessageType(msg_type).name}: {exc}") from exc
