"""The compact binary batch: many samples of one stream in one MQTT payload.

Layout (little-endian, see ``docs/serial-protocol.md`` section "Compact binary batch")::

    magic "EB" | version u8 = 1 | flags u8 = 0 | n_channels u16 | n_rows u32
    | stream_len u8 | stream utf-8 | n_channels x (name_len u8 | name utf-8)
    | n_rows x (ts f64 epoch seconds | n_channels x value f32)

A NaN value means "no value for this channel in this row". Timestamps must be finite,
values must not be infinite. :func:`decode_batch` checks everything and raises
:class:`~firmware_bridge.errors.BadBatch` with the first problem it finds.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from agent.types import Point
from firmware_bridge.errors import BadBatch

MAGIC: Final = b"EB"
BATCH_VERSION: Final = 1
MAX_BATCH_BYTES: Final = 1_048_576
MAX_CHANNELS: Final = 256
MAX_ROWS: Final = 100_000
MAX_NAME_BYTES: Final = 64
MAX_STREAM_BYTES: Final = 128

_HEADER = struct.Struct("<2sBBHIB")
HEADER_SIZE: Final = _HEADER.size  # 11, before the stream name

Row = tuple[float, Sequence[float]]


@dataclass(frozen=True, slots=True)
class Batch:
    """A decoded batch: one stream, its channel names once, then rows of ``(ts, values)``.

    >>> data = encode_batch("pump", ["temp", "rpm"], [(10.0, [21.5, 1200.0])])
    >>> batch = decode_batch(data)
    >>> batch.stream, batch.channels, batch.rows
    ('pump', ('temp', 'rpm'), ((10.0, (21.5, 1200.0)),))
    >>> batch.points()[0].values["rpm"]
    1200.0
    """

    stream: str
    channels: tuple[str, ...]
    rows: tuple[tuple[float, tuple[float, ...]], ...]

    def points(self) -> list[Point]:
        """One :class:`Point` per row; NaN values are left out, all-NaN rows are skipped."""
        out: list[Point] = []
        for ts, values in self.rows:
            mapping = {c: v for c, v in zip(self.channels, values, strict=True) if v == v}
            if mapping:
                out.append(Point(ts=ts, stream=self.stream, values=mapping))
        return out


def _check_name(what: str, name: str, limit: int) -> bytes:
    if not isinstance(name, str):
        raise ValueError(f"{what}: must be a str, got {type(name).__name__}")
    raw = name.encode("utf-8")
    if not 1 <= len(raw) <= limit:
        raise ValueError(f"{what}: must be 1..{limit} UTF-8 bytes, got {len(raw)}")
    return raw


def encode_batch(stream: str, channels: Sequence[str], rows: Sequence[Row]) -> bytes:
    """Encode rows of ``(epoch_seconds, values)`` into one batch payload.

    Raises:
        ValueError: a name is empty/too long/duplicated, a row has the wrong number of values,
            a timestamp is not finite, a value does not fit a float32, or a limit is exceeded.
    """
    stream_raw = _check_name("stream", stream, MAX_STREAM_BYTES)
    if not 1 <= len(channels) <= MAX_CHANNELS:
        raise ValueError(f"channels: need 1..{MAX_CHANNELS}, got {len(channels)}")
    if len(set(channels)) != len(channels):
        raise ValueError("channels: names must be unique")
    if len(rows) > MAX_ROWS:
        raise ValueError(f"rows: at most {MAX_ROWS}, got {len(rows)}")
    parts = [_HEADER.pack(MAGIC, BATCH_VERSION, 0, len(channels), len(rows), len(stream_raw))]
    parts.append(stream_raw)
    for i, name in enumerate(channels):
        raw = _check_name(f"channels[{i}]", name, MAX_NAME_BYTES)
        parts.append(bytes([len(raw)]) + raw)
    row_struct = struct.Struct(f"<d{len(channels)}f")
    for i, (ts, values) in enumerate(rows):
        if len(values) != len(channels):
            raise ValueError(f"rows[{i}]: {len(values)} values for {len(channels)} channels")
        if not math.isfinite(ts):
            raise ValueError(f"rows[{i}]: timestamp {ts!r} is not finite")
        if any(math.isinf(v) for v in values):
            raise ValueError(f"rows[{i}]: infinite value (use NaN for a missing value)")
        try:
            parts.append(row_struct.pack(ts, *values))
        except (struct.error, OverflowError) as exc:
            raise ValueError(f"rows[{i}]: {exc}") from exc
    data = b"".join(parts)
    if len(data) > MAX_BATCH_BYTES:
        raise ValueError(f"batch is {len(data)} bytes, limit {MAX_BATCH_BYTES}: send fewer rows")
    return data


def _read_name(data: bytes, pos: int, what: str, limit: int) -> tuple[str, int]:
    if pos >= len(data):
        raise BadBatch(f"truncated: {what} length missing at byte {pos}")
    size = data[pos]
    if not 1 <= size <= limit:
        raise BadBatch(f"{what}: length {size} outside 1..{limit}")
    end = pos + 1 + size
    if end > len(data):
        raise BadBatch(f"truncated: {what} needs {size} bytes at byte {pos + 1}")
    try:
        return data[pos + 1 : end].decode("utf-8"), end
    except UnicodeDecodeError as exc:
        raise BadBatch(f"{what}: not valid UTF-8") from exc


def decode_batch(data: bytes) -> Batch:
    """Decode and fully validate one batch payload.

    Raises:
        BadBatch: wrong magic/version/flags, truncated or trailing bytes, bad or duplicated
            names, a limit exceeded, a non-finite timestamp or an infinite value.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise BadBatch(f"payload must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > MAX_BATCH_BYTES:
        raise BadBatch(f"payload is {len(data)} bytes, limit {MAX_BATCH_BYTES}")
    if len(data) < HEADER_SIZE:
        raise BadBatch(f"truncated: {len(data)} bytes, header needs {HEADER_SIZE}")
    magic, version, flags, n_channels, n_rows, _ = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise BadBatch(f"bad magic {magic!r}, expected {MAGIC!r}")
    if version != BATCH_VERSION:
        raise BadBatch(f"unsupported batch version {version}, expected {BATCH_VERSION}")
    if flags != 0:
        raise BadBatch(f"unknown flags 0x{flags:02x}")
    if not 1 <= n_channels <= MAX_CHANNELS:
        raise BadBatch(f"n_channels {n_channels} outside 1..{MAX_CHANNELS}")
    if n_rows > MAX_ROWS:
        raise BadBatch(f"n_rows {n_rows} above limit {MAX_ROWS}")
    stream, pos = _read_name(data, HEADER_SIZE - 1, "stream", MAX_STREAM_BYTES)
    channels: list[str] = []
    for i in range(n_channels):
        name, pos = _read_name(data, pos, f"channel {i} name", MAX_NAME_BYTES)
        channels.append(name)
    if len(set(channels)) != n_channels:
        raise BadBatch("channel names are not unique")
    row_size = 8 + 4 * n_channels
    expected = pos + n_rows * row_size
    if len(data) != expected:
        kind = "truncated" if len(data) < expected else "trailing bytes"
        raise BadBatch(f"{kind}: {n_rows} rows need {expected} bytes, got {len(data)}")
    dtype = np.dtype([("ts", "<f8"), ("v", "<f4", (n_channels,))])
    table = np.frombuffer(data, dtype=dtype, count=n_rows, offset=pos)
    bad_ts = ~np.isfinite(table["ts"])
    if bad_ts.any():
        raise BadBatch(f"row {int(np.argmax(bad_ts))}: timestamp is not finite")
    bad_v = np.isinf(table["v"]).any(axis=1)
    if bad_v.any():
        raise BadBatch(f"row {int(np.argmax(bad_v))}: infinite value")
    stamps = table["ts"].tolist()
    values = table["v"].astype(np.float64).tolist()
    rows = tuple(zip(stamps, map(tuple, values), strict=True))
    return Batch(stream=stream, channels=tuple(channels), rows=rows)


def encode_batch_json(stream: str, channels: Sequence[str], rows: Iterable[Row]) -> bytes:
    """The JSON twin of :func:`encode_batch` (``--format json``): NaN becomes ``null``.

    >>> encode_batch_json("pump", ["t"], [(1.5, [float("nan")])])
    b'{"v":1,"stream":"pump","channels":["t"],"rows":[[1.5,null]]}'
    """
    body = {
        "v": BATCH_VERSION,
        "stream": stream,
        "channels": list(channels),
        "rows": [[ts, *(None if v != v else v for v in values)] for ts, values in rows],
    }
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode("utf-8")
