"""Pure payload parsers: MQTT message bytes -> points, plus the reasons for what was rejected.

Accepted formats (``docs/mqtt.md``, ``docs/schemas/``):

* JSON point: ``{"ts": 1700000000.5, "values": {"temp": 21.3}}`` (optional ``"stream"``);
* JSON batch: a list of JSON points, or the serial bridge's JSON twin
  ``{"v": 1, "stream": "s", "channels": ["a"], "rows": [[ts, a], ...]}``;
* CSV: one or more lines ``ts,v1,v2,...`` in the stream's channel order, or with a header
  line ``ts,name1,name2`` first;
* binary: the compact batch of :mod:`firmware_bridge.batch` (magic ``EB``).

Timestamps are epoch seconds, epoch milliseconds (any number above 1e11) or ISO-8601
strings (naive means UTC). A missing timestamp becomes the receive time ``now`` and is
counted in ``ts_defaulted``. Structural problems become ``(reason, detail)`` rejects; value
problems (NaN, strings, unknown channels) are left to the engine, which counts them.

>>> r = parse_payload(b'{"ts": 1700000000000, "values": {"t": 1.5}}', stream="s", now=0.0)
>>> r.points[0].ts, r.points[0].values, r.rejects
(1700000000.0, {'t': 1.5}, [])
>>> parse_payload(b"{oops", stream="s", now=0.0).rejects[0][0]
'invalid_json'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agent.jsonsafe import loads as loads_json
from agent.types import Point
from firmware_bridge.batch import MAGIC as BATCH_MAGIC
from firmware_bridge.batch import decode_batch
from firmware_bridge.errors import BadBatch

MAX_PAYLOAD_BYTES = 262_144
MAX_POINTS = 100_000
_MS_ABOVE = 1e11


@dataclass(slots=True)
class Parsed:
    points: list[Point] = field(default_factory=list)
    rejects: list[tuple[str, str]] = field(default_factory=list)
    ts_defaulted: int = 0


class _Reject(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def parse_timestamp(value: Any, now: float) -> tuple[float, bool]:
    """Epoch seconds from a payload timestamp; ``(now, True)`` when it is missing.

    >>> parse_timestamp("2024-01-01T00:00:00Z", 0.0)
    (1704067200.0, False)
    """
    if value is None or value == "":
        return now, True
    if isinstance(value, bool):
        raise _Reject("bad_timestamp", f"timestamp {value!r}")
    if isinstance(value, int | float):
        try:
            ts = float(value)
        except OverflowError:  # a JSON integer of hundreds of digits
            raise _Reject("bad_timestamp", f"timestamp of {len(str(value))} digits") from None
        if not math.isfinite(ts) or ts < 0:
            raise _Reject("bad_timestamp", f"timestamp {value!r}")
        return (ts / 1000.0 if ts > _MS_ABOVE else ts), False
    if isinstance(value, str):
        text = value.strip()
        try:
            return parse_timestamp(float(text), now)
        except ValueError:
            pass
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise _Reject("bad_timestamp", f"timestamp {value[:40]!r}") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return dt.timestamp(), False
    raise _Reject("bad_timestamp", f"timestamp of type {type(value).__name__}")


def _json_point(
    obj: Any, stream: str | None, now: float, out: Parsed, default: str | None = None
) -> None:
    if not isinstance(obj, dict):
        raise _Reject("bad_shape", f"expected a JSON object, got {type(obj).__name__}")
    values = obj.get("values")
    if not isinstance(values, dict) or not values:
        raise _Reject("bad_shape", "'values' must be a non-empty object")
    sid = stream or obj.get("stream") or default
    if not isinstance(sid, str) or not sid:
        raise _Reject("no_stream", "no stream for this payload (topic route or 'stream' key)")
    ts, defaulted = parse_timestamp(obj.get("ts"), now)
    out.ts_defaulted += defaulted
    clean = {str(k): v for k, v in values.items() if v is not None}
    if not clean:
        raise _Reject("bad_shape", "'values' holds only nulls")
    out.points.append(Point(ts=ts, stream=sid, values=clean))


def _json_rows(
    obj: dict[str, Any], stream: str | None, now: float, out: Parsed, default: str | None,
    max_points: int = MAX_POINTS,
) -> None:
    channels = obj.get("channels")
    rows = obj.get("rows")
    if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        raise _Reject("bad_shape", "'channels' must be a list of strings")
    if not isinstance(rows, list):
        raise _Reject("bad_shape", "'rows' must be a list")
    if len(rows) > max_points:
        raise _Reject("too_large", f"{len(rows)} rows, limit {max_points}")
    sid = stream or obj.get("stream") or default
    for row in rows:
        if not isinstance(row, list) or len(row) != len(channels) + 1:
            out.rejects.append(("bad_shape", f"row must be [ts, {len(channels)} values]"))
            continue
        try:
            _json_point({"ts": row[0], "values": dict(zip(channels, row[1:], strict=True)),
                         "stream": sid}, None, now, out)
        except _Reject as exc:
            out.rejects.append((exc.reason, exc.detail))


def _parse_json(
    text: str, stream: str | None, now: float, out: Parsed, default: str | None,
    max_points: int = MAX_POINTS,
) -> None:
    try:
        obj = loads_json(text)
    except ValueError as exc:
        raise _Reject("invalid_json", str(exc)[:80]) from None
    if isinstance(obj, dict) and "rows" in obj:
        _json_rows(obj, stream, now, out, default, max_points)
        return
    items = obj if isinstance(obj, list) else [obj]
    if len(items) > max_points:
        raise _Reject("too_large", f"{len(items)} points, limit {max_points}")
    if not items:
        raise _Reject("bad_shape", "empty batch")
    for item in items:
        try:
            _json_point(item, stream, now, out, default)
        except _Reject as exc:
            out.rejects.append((exc.reason, exc.detail))


def _csv_number(cell: str) -> float | str:
    try:
        return float(cell)
    except ValueError:
        return cell  # the engine counts it as non_numeric


def _parse_csv(text: str, stream: str | None, channels: Sequence[str] | None, now: float,
               out: Parsed, max_points: int = MAX_POINTS) -> None:
    if stream is None:
        raise _Reject("no_stream", "CSV payloads need a topic route that names the stream")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise _Reject("bad_csv", "empty payload")
    names = list(channels or ())
    first = [c.strip() for c in lines[0].split(",")]
    if first[0].lower() in ("ts", "timestamp", "time"):
        names = first[1:]
        lines = lines[1:]
    if not names:
        raise _Reject("bad_csv", "no channel names (no header and stream not configured)")
    if len(lines) > max_points:
        raise _Reject("too_large", f"{len(lines)} lines, limit {max_points}")
    for line in lines:
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != len(names) + 1:
            out.rejects.append(("bad_csv", f"{len(cells)} fields, expected {len(names) + 1}"))
            continue
        try:
            ts, defaulted = parse_timestamp(cells[0], now)
        except _Reject as exc:
            out.rejects.append((exc.reason, exc.detail))
            continue
        out.ts_defaulted += defaulted
        values = {n: _csv_number(c) for n, c in zip(names, cells[1:], strict=True) if c != ""}
        if not values:
            out.rejects.append(("bad_csv", "line without values"))
            continue
        out.points.append(Point(ts=ts, stream=stream, values=values))  # type: ignore[arg-type]


def _parse_binary(data: bytes, stream: str | None, out: Parsed,
                  max_points: int = MAX_POINTS) -> None:
    try:
        batch = decode_batch(data)
    except BadBatch as exc:
        raise _Reject("bad_batch", str(exc)[:120]) from None
    if len(batch.rows) > max_points:
        raise _Reject("too_large", f"{len(batch.rows)} rows, limit {max_points}")
    for p in batch.points():
        out.points.append(p if stream is None else Point(ts=p.ts, stream=stream, values=p.values))


def sniff_format(data: bytes) -> str:
    """``binary``, ``json`` or ``csv`` from the first bytes of a payload."""
    if data[:2] == BATCH_MAGIC and len(data) > 2 and data[2] == 1:
        return "binary"
    head = data[:64].lstrip()
    return "json" if head[:1] in (b"{", b"[") else "csv"


def parse_payload(
    data: bytes,
    *,
    stream: str | None,
    now: float,
    channels: Sequence[str] | None = None,
    fmt: str = "auto",
    max_bytes: int = MAX_PAYLOAD_BYTES,
    default_stream: str | None = None,
    max_points: int = MAX_POINTS,
) -> Parsed:
    """Parse one message; never raises for bad input (see :class:`Parsed` rejects).

    ``stream`` is the stream the topic route names (None: from the payload, else
    ``default_stream``, usually the last topic level); ``channels`` names CSV columns when
    the payload has no header line. Over ``max_bytes`` bytes (checked first) or
    ``max_points`` points (checked before any point is built) the message is rejected
    whole as ``too_large``.
    """
    out = Parsed()
    try:
        if len(data) > max_bytes:
            raise _Reject("too_large", f"{len(data)} bytes, limit {max_bytes}")
        kind = sniff_format(data) if fmt == "auto" else fmt
        if kind == "binary":
            _parse_binary(data, stream, out, max_points)
            return out
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise _Reject("bad_encoding", "payload is not UTF-8") from None
        if kind == "json":
            _parse_json(text, stream, now, out, default_stream, max_points)
        else:
            _parse_csv(text, stream or default_stream, channels, now, out, max_points)
    except _Reject as exc:
        out.rejects.append((exc.reason, exc.detail))
    return out
