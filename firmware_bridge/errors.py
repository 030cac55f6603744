"""The firmware bridge's exception tree.

FramingError            root of every error this package raises on purpose
 ├── BadFrame           one serial frame that cannot be used (``kind`` says why)
 ├── BadLine            one ASCII-mode line that cannot be used (``kind`` says why)
 ├── BadBatch           a compact binary batch (MQTT payload) that cannot be used
 └── PortError          a serial port that cannot be opened or configured

A stream decoder never raises on garbage: :class:`firmware_bridge.framing.FrameDecoder`
counts bad frames by kind and carries on. These exceptions come from the one-shot
functions (``decode_frame``, ``decode_batch``) that callers use on a single unit.
"""

from __future__ import annotations

from typing import Final

#: The reasons a frame is rejected; each one is a counter of the stream decoder.
FRAME_ERROR_KINDS: Final = ("cobs", "short", "version", "crc", "oversize", "type", "payload")


class FramingError(Exception):
    """Root of every error the firmware bridge raises on purpose."""


class BadFrame(FramingError):
    """A single frame is malformed.

    ``kind`` is one of :data:`FRAME_ERROR_KINDS`; ``reason`` is a human-readable detail.
    """

    def __init__(self, kind: str, reason: str) -> None:
        if kind not in FRAME_ERROR_KINDS:
            raise ValueError(f"unknown frame error kind {kind!r}")
        self.kind = kind
        self.reason = reason
        super().__init__(f"{kind}: {reason}")


class BadLine(FramingError):
    """A single ASCII-mode line is malformed; ``kind`` is ``bad_line`` or ``field_count``."""

    def __init__(self, kind: str, reason: str) -> None:
        self.kind = kind
        self.reason = reason
        super().__init__(f"{kind}: {reason}")


class BadBatch(FramingError):
    """A compact binary batch is malformed; ``reason`` names the first problem found."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class PortError(FramingError):
    """A serial port cannot be opened, configured or read."""
