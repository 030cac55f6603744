"""One raw log line -> timestamp, level, component, session and message.

``auto`` tries a few common layouts in order and takes the first that matches:

* ``2024-05-01T12:00:00.123Z INFO pump.ctrl: message`` (also ``[INFO]``, ``[comp]``, a
  space instead of ``T``, a comma before the fraction -- Python ``logging``, Go, Rust);
* log4j: ``2024-05-01 12:00:00,123 [thread] WARN com.acme.Pump - message``;
* syslog (RFC 3164): ``May  1 12:00:00 host sshd[123]: message`` (no level);
* HDFS / Hadoop: ``081109 203615 148 INFO dfs.DataNode$PacketResponder: message``;

otherwise the whole line is the message (counted as ``unformatted``). A configured
regex replaces the list. Lines that start with white space, ``at ``, ``Caused by`` or
``...`` and match no layout are continuation lines (stack traces) and are not scored.

Levels are normalised (``WARNING`` -> ``WARN``, ``ERR`` -> ``ERROR``, ``CRIT`` ->
``CRITICAL`` ...); timestamps become epoch seconds (``None`` if absent or unreadable;
the caller decides). Nothing here raises on any ``str`` input.

>>> p = LineParser()
>>> r = p.parse("2024-05-01T12:00:00Z WARNING pump.ctrl: pressure 3.2 bar")
>>> r.ts, r.level, r.component, r.message
(1714564800.0, 'WARN', 'pump.ctrl', 'pressure 3.2 bar')
>>> p.parse("    at com.acme.Pump.run(Pump.java:42)").continuation
True
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

_LEVELS = (r"(?i:TRACE|DEBUG|INFO|NOTICE|WARN|WARNING|ERROR|ERR|CRIT|CRITICAL|FATAL|ALERT"
           r"|EMERG|SEVERE|FINE|FINER|FINEST)")
_ISO = (r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d{1,9})?(?:Z|[+-]\d{2}:?\d{2})?"
        r"|\d{9,10}(?:\.\d+)?|\d{12,13}")
AUTO_FORMATS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("iso", re.compile(
        rf"^(?P<ts>{_ISO})\s+\[?(?P<level>{_LEVELS})\]?:?\s+"
        r"(?:\[(?P<component>[^\]\s]{1,256})\]:?|(?P<component2>[^\s:\[\]]{1,256}):)\s?"
        r"(?P<message>.*)$")),
    ("log4j", re.compile(
        rf"^(?P<ts>{_ISO})\s+\[(?P<thread>[^\]]{{0,128}})\]\s+(?P<level>{_LEVELS})\s+"
        r"(?P<component>[^\s]{1,256})\s+-\s(?P<message>.*)$")),
    ("iso_nocomponent", re.compile(
        rf"^(?P<ts>{_ISO})\s+\[?(?P<level>{_LEVELS})\]?:?\s+(?P<message>.*)$")),
    ("syslog", re.compile(
        r"^(?P<ts>[A-Z][a-z]{2}\s+\d{1,2}\s\d{2}:\d{2}:\d{2})\s+(?P<host>\S{1,256})\s+"
        r"(?P<component>[^\s:\[]{1,256})(?:\[\d{1,10}\])?:\s?(?P<message>.*)$")),
    ("hdfs", re.compile(
        rf"^(?P<ts>\d{{6}}\s\d{{6}})\s+\d{{1,10}}\s+(?P<level>{_LEVELS})\s+"
        r"(?P<component>[^\s:]{1,256}):\s?(?P<message>.*)$")),
)
_CONTINUATION = re.compile(r"^(?:\s|at\s|Caused by|\.\.\.|Traceback \(most recent)")
_LEVEL_NAMES = {
    "WARNING": "WARN", "ERR": "ERROR", "CRIT": "CRITICAL", "SEVERE": "ERROR",
    "EMERG": "FATAL", "ALERT": "CRITICAL", "FINE": "DEBUG", "FINER": "TRACE",
    "FINEST": "TRACE", "NOTICE": "INFO",
}
MAX_FIELD_CHARS = 64


def normalise_level(level: str | None) -> str | None:
    if not level:
        return None
    up = level.strip("[]: ").upper()[:MAX_FIELD_CHARS]
    return _LEVEL_NAMES.get(up, up) or None


def parse_ts(text: str | None, year: int | None = None) -> float | None:
    """Epoch seconds of a log timestamp (ISO-8601, epoch s/ms, syslog, HDFS); else None."""
    if not text:
        return None
    t = text.strip()
    try:
        if t[:1].isdigit() and t.replace(".", "", 1).isdigit():
            v = float(t)
            return v / 1000.0 if v > 1e11 else v
        if len(t) == 13 and t[6] == " " and t[:6].isdigit() and t[7:].isdigit():  # HDFS
            dt = datetime.strptime(t, "%y%m%d %H%M%S").replace(tzinfo=UTC)
        elif t[:1].isalpha():  # syslog: no year, take the given or the current one
            y = year or datetime.now(UTC).year
            dt = datetime.strptime(f"{y} {' '.join(t.split())}", "%Y %b %d %H:%M:%S")
            dt = dt.replace(tzinfo=UTC)
        else:
            dt = datetime.fromisoformat(t.replace(",", ".", 1))
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=UTC)
        return dt.timestamp()
    except (ValueError, OverflowError, OSError):
        return None


@dataclass(frozen=True, slots=True)
class ParsedLine:
    ts: float | None
    ts_text: str
    level: str | None
    component: str | None
    session: str | None
    message: str
    layout: str  # which format matched, "" = none (the whole line is the message)
    continuation: bool = False


class LineParser:
    """Splits lines with ``auto`` layouts or one configured regex; see the module doc."""

    def __init__(self, line_format: str = "auto", session_pattern: str | None = None) -> None:
        self.formats = AUTO_FORMATS if line_format == "auto" else (
            ("custom", re.compile(line_format)),)
        self.session_rx = re.compile(session_pattern) if session_pattern else None

    def parse(self, line: str) -> ParsedLine:
        line = line.rstrip("\r\n")
        for name, rx in self.formats:
            m = rx.match(line)
            if m is None:
                continue
            g = m.groupdict()
            ts_text = (g.get("ts") or "").strip()
            comp = g.get("component") or g.get("component2")
            message = g.get("message") or ""
            session = g.get("session") or self._session(message)
            return ParsedLine(parse_ts(ts_text), ts_text, normalise_level(g.get("level")),
                              comp[:MAX_FIELD_CHARS] if comp else None,
                              session[:MAX_FIELD_CHARS] if session else None, message, name)
        if not line.strip() or _CONTINUATION.match(line):
            return ParsedLine(None, "", None, None, None, line.strip(), "", continuation=True)
        session = self._session(line)
        return ParsedLine(None, "", None, None, session[:MAX_FIELD_CHARS] if session else None,
                          line.strip(), "")

    def _session(self, message: str) -> str | None:
        if self.session_rx is None:
            return None
        m = self.session_rx.search(message)
        if m is None:
            return None
        return m.group(1) if m.groups() and m.group(1) else m.group(0)
