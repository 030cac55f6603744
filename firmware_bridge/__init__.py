"""Bytes from microcontrollers → frames → samples; and the compact batch for MQTT.

The framing core is pure (bytes in, frames out); ``serial_port`` and ``simulator`` are the
only modules touching the OS. Protocol: ``docs/serial-protocol.md``.
"""

from __future__ import annotations

from firmware_bridge.batch import Batch, decode_batch, encode_batch, encode_batch_json
from firmware_bridge.errors import BadBatch, BadFrame, BadLine, FramingError, PortError
from firmware_bridge.framing import Frame, FrameDecoder, MessageType, decode_frame, encode_frame
from firmware_bridge.stream import Mode, SampleStream

__all__ = [
    "BadBatch",
    "BadFrame",
    "BadLine",
    "Batch",
    "Frame",
    "FrameDecoder",
    "FramingError",
    "MessageType",
    "Mode",
    "PortError",
    "SampleStream",
    "decode_batch",
    "decode_frame",
    "encode_batch",
    "encode_batch_json",
    "encode_frame",
]
