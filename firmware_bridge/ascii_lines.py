"""ASCII line mode: one sample per line, for firmware that can only ``printf``.

Two forms, chosen per line: ``ts,v1,v2,...`` (CSV, ``;`` also accepted; ``ts`` is device
milliseconds) and ``name=value name=value`` (optional ``ts=`` key). Blank lines and ``#``
comments are skipped. See ``docs/serial-protocol.md`` section 3.

>>> parser = AsciiLineParser(channels=["temp", "rpm"])
>>> parser.feed(b"100,21.5,1200\\nrpm=900 temp=22\\n#hi\\nnot a line\\n")
[AsciiSample(device_ms=100.0, values={'temp': 21.5, 'rpm': 1200.0}), \
AsciiSample(device_ms=None, values={'rpm': 900.0, 'temp': 22.0})]
>>> parser.stats()["bad_lines"]
1
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from firmware_bridge.delimited import Delimited
from firmware_bridge.errors import BadLine

MAX_LINE_BYTES: Final = 512
MAX_FIELDS: Final = 65
_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,32}")
_KV_SPLIT = re.compile(r"[\s,]+")

COUNTERS: Final = (
    "bytes_received",
    "bytes_discarded",
    "lines_ok",
    "bad_lines",
    "field_count",
    "overlong",
)


@dataclass(frozen=True, slots=True)
class AsciiSample:
    """One parsed line: device time in ms (``None`` if the line had none) and values."""

    device_ms: float | None
    values: dict[str, float]


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise BadLine("bad_line", f"not a number: {text[:20]!r}") from None
    if math.isinf(value):
        raise BadLine("bad_line", f"infinite value {text!r}")
    return value


def parse_line(line: str, channels: Sequence[str] = ()) -> AsciiSample | None:
    """Parse one line (without its newline); ``None`` for blank lines and comments.

    Raises:
        BadLine: kind ``bad_line`` (unparseable) or ``field_count`` (CSV width differs from
            ``channels``).
    """
    line = line.strip()
    if not line or line.startswith("#"):
        return None
    if "=" in line:
        values: dict[str, float] = {}
        device_ms: float | None = None
        tokens = [t for t in _KV_SPLIT.split(line) if t]
        if len(tokens) > MAX_FIELDS:
            raise BadLine("bad_line", f"{len(tokens)} fields, limit {MAX_FIELDS}")
        for token in tokens:
            name, sep, text = token.partition("=")
            if not sep or not _NAME.fullmatch(name):
                raise BadLine("bad_line", f"bad pair {token[:40]!r}")
            if name == "ts":
                device_ms = _number(text)
            elif name in values:
                raise BadLine("bad_line", f"channel {name!r} twice")
            else:
                values[name] = _number(text)
        if not values:
            raise BadLine("bad_line", "no values")
        return AsciiSample(device_ms, values)
    sep = ";" if ";" in line else ","
    if sep == ";" and "," in line:
        raise BadLine("bad_line", "mixes ',' and ';'")
    fields = line.split(sep)
    if len(fields) < 2 or len(fields) > MAX_FIELDS:
        raise BadLine("bad_line", f"CSV needs ts and 1..{MAX_FIELDS - 1} values")
    numbers = [_number(f.strip()) for f in fields]
    names = list(channels) or [f"ch{i}" for i in range(len(numbers) - 1)]
    if len(names) != len(numbers) - 1:
        raise BadLine("field_count", f"{len(numbers) - 1} values for {len(names)} channels")
    return AsciiSample(numbers[0], dict(zip(names, numbers[1:], strict=True)))


class AsciiLineParser:
    """Incremental line parser; never raises, counts what it rejects (see :data:`COUNTERS`).

    Without configured ``channels`` the first CSV line fixes the width (names ``ch0``...).
    """

    def __init__(self, channels: Sequence[str] = (), max_line: int = MAX_LINE_BYTES) -> None:
        for name in channels:
            if not _NAME.fullmatch(name):
                raise ValueError(f"channels: bad name {name!r} (use 1..32 of [A-Za-z0-9_.-])")
        self.channels = tuple(channels)
        self.max_line = max_line
        self._csv_names = self.channels
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._lines = Delimited(b"\n", max_line, self._counts, "overlong",
                                delimiter_counted=True)

    def stats(self) -> dict[str, int]:
        return dict(self._counts)

    def reset(self) -> None:
        """Forget a partial line (e.g. after the port was reopened)."""
        self._lines.reset()

    def feed(self, data: bytes) -> list[AsciiSample]:
        """Consume ``data`` and return the samples of the lines it completed."""
        data = bytes(data)
        counts = self._counts
        counts["bytes_received"] += len(data)
        out: list[AsciiSample] = []
        for piece in self._lines.split(data):
            if len(piece) > self.max_line:
                counts["overlong"] += 1
                counts["bytes_discarded"] += len(piece) + 1
                continue
            sample = self._line(piece)
            if sample is not None:
                out.append(sample)
        return out

    def _line(self, raw: bytes) -> AsciiSample | None:
        try:
            text = raw.decode("utf-8")
            sample = parse_line(text, self._csv_names)
        except (UnicodeDecodeError, BadLine) as exc:
            kind = exc.kind if isinstance(exc, BadLine) else "bad_line"
            self._counts["field_count" if kind == "field_count" else "bad_lines"] += 1
            self._counts["bytes_discarded"] += len(raw) + 1
            return None
        if sample is None:
            return None
        if not self._csv_names and "=" not in text:
            self._csv_names = tuple(sample.values)  # the first CSV line fixes the width
        self._counts["lines_ok"] += 1
        return sample
