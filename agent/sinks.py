"""Alert sinks: where alert events go. Pluggable; each is a small class with ``emit``/``close``.

The MQTT publisher and the store-and-forward queue live in the runtime; here are the
in-process ones: JSON lines (file or stdout), a Python callback, an in-memory list.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Protocol

from agent.types import Alert


class AlertSink(Protocol):
    def emit(self, alert: Alert) -> None: ...

    def close(self) -> None: ...


class MemorySink:
    """Keeps every alert in a list (tests, demo)."""

    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    def emit(self, alert: Alert) -> None:
        self.alerts.append(alert)

    def close(self) -> None:
        pass


class CallbackSink:
    """Calls ``fn(alert)`` for each alert."""

    def __init__(self, fn: Callable[[Alert], None]) -> None:
        self.fn = fn

    def emit(self, alert: Alert) -> None:
        self.fn(alert)

    def close(self) -> None:
        pass


def _end_torn_line(path: Path) -> None:
    """Terminate a last line cut short by a crash, so the next record starts on its own line.

    The torn record stays as one unparseable line (readers skip it); appending to it would
    corrupt the next, complete record too.
    """
    try:
        with open(path, "rb+") as fh:
            if fh.seek(0, 2) and (fh.seek(-1, 2), fh.read(1))[1] != b"\n":
                fh.write(b"\n")
    except FileNotFoundError:
        return


class JsonlSink:
    """One JSON object per line, to a file (appended) or to stdout with ``"-"``."""

    def __init__(self, target: str | Path) -> None:
        self.target = str(target)
        self._own = self.target != "-"
        if self._own:
            _end_torn_line(Path(self.target))
        self._fh: IO[str] = (
            open(self.target, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
            if self._own
            else sys.stdout
        )

    def emit(self, alert: Alert) -> None:
        self._fh.write(json.dumps(alert.to_dict(), separators=(",", ":")) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._own:
            self._fh.close()
