"""Binary frames: header, payload and CRC-32, COBS-encoded between 0x00 delimiters.

``wire = 00 | COBS(version u8 | type u8 | device_id u32 | seq u16 | timestamp_ms u32
| payload | crc32 u32) | 00`` (little-endian). See ``docs/serial-protocol.md``.

>>> frame = Frame(device_id=7, seq=1, timestamp_ms=500, message=Heartbeat(tx_dropped=0))
>>> wire = encode_frame(frame)
>>> wire[0], wire[-1]
(0, 0)
>>> decode_frame(wire) == frame
True
>>> decoder = FrameDecoder()
>>> [f.seq for f in decoder.feed(b"garbage" + wire)]
[1]
>>> decoder.stats()["framing_errors"], decoder.stats()["frames_ok"]
(1, 1)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from firmware_bridge import cobs
from firmware_bridge.crc import crc32
from firmware_bridge.delimited import Delimited
from firmware_bridge.errors import BadFrame
from firmware_bridge.messages import (
    Ack,
    Data,
    Heartbeat,
    Hello,
    Message,
    MessageType,
    SampleEncoding,
    TimeSync,
    parse_payload,
)

__all__ = [
    "HEADER_SIZE",
    "MAX_ENCODED_SIZE",
    "MAX_FRAME_SIZE",
    "MIN_FRAME_SIZE",
    "PROTOCOL_VERSION",
    "Ack",
    "Data",
    "Frame",
    "FrameDecoder",
    "Heartbeat",
    "Hello",
    "Message",
    "MessageType",
    "SampleEncoding",
    "TimeSync",
    "decode_frame",
    "encode_frame",
    "pack_frame",
    "unpack_frame",
]

PROTOCOL_VERSION: Final = 1
_HEADER = struct.Struct("<BBIHI")
_CRC = struct.Struct("<I")
HEADER_SIZE: Final = _HEADER.size  # 12
MIN_FRAME_SIZE: Final = HEADER_SIZE + _CRC.size  # 16
MAX_FRAME_SIZE: Final = 1024
MAX_ENCODED_SIZE: Final = cobs.max_encoded_size(MAX_FRAME_SIZE)  # 1029
DELIMITER: Final = b"\x00"


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame: who sent it, its sequence number and clock, and its message."""

    device_id: int
    seq: int
    timestamp_ms: int
    message: Message
    version: int = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        if not 0 <= self.device_id <= 0xFFFFFFFF:
            raise ValueError(f"device_id: must fit a u32, got {self.device_id}")
        if not 0 <= self.seq <= 0xFFFF:
            raise ValueError(f"seq: must fit a u16, got {self.seq}")
        if not 0 <= self.timestamp_ms <= 0xFFFFFFFF:
            raise ValueError(f"timestamp_ms: must fit a u32, got {self.timestamp_ms}")

    @property
    def type(self) -> MessageType:
        return self.message.TYPE


def pack_frame(frame: Frame, max_frame_size: int = MAX_FRAME_SIZE) -> bytes:
    """The frame before COBS: header, payload and CRC-32.

    Raises:
        ValueError: the frame is larger than ``max_frame_size``.
    """
    body = (
        _HEADER.pack(frame.version, frame.type, frame.device_id, frame.seq, frame.timestamp_ms)
        + frame.message.to_payload()
    )
    raw = body + _CRC.pack(crc32(body))
    if len(raw) > max_frame_size:
        raise ValueError(f"frame is {len(raw)} bytes, limit {max_frame_size}")
    return raw


def encode_frame(frame: Frame, max_frame_size: int = MAX_FRAME_SIZE) -> bytes:
    """Wire bytes of one frame, with its leading and trailing 0x00 delimiter."""
    return DELIMITER + cobs.encode(pack_frame(frame, max_frame_size)) + DELIMITER


def unpack_frame(raw: bytes) -> Frame:
    """Check the CRC, version and payload of a COBS-decoded frame.

    Raises:
        BadFrame: kind ``short``, ``crc``, ``version``, ``type`` or ``payload``.
    """
    if len(raw) < MIN_FRAME_SIZE:
        raise BadFrame("short", f"{len(raw)} bytes, a frame has at least {MIN_FRAME_SIZE}")
    (expected,) = _CRC.unpack_from(raw, len(raw) - 4)
    actual = crc32(raw[:-4])
    if actual != expected:
        raise BadFrame("crc", f"crc 0x{actual:08x}, frame says 0x{expected:08x}")
    version, msg_type, device_id, seq, ts = _HEADER.unpack_from(raw)
    if version != PROTOCOL_VERSION:
        raise BadFrame("version", f"protocol version {version}, expected {PROTOCOL_VERSION}")
    message = parse_payload(msg_type, raw[HEADER_SIZE:-4])
    return Frame(device_id, seq, ts, message, version)


def decode_frame(packet: bytes, max_frame_size: int = MAX_FRAME_SIZE) -> Frame:
    """Decode one COBS packet (surrounding 0x00 delimiters are allowed and stripped).

    Raises:
        BadFrame: kind ``oversize``, ``cobs``, ``short``, ``crc``, ``version``, ``type``
            or ``payload``.
    """
    packet = bytes(packet).strip(DELIMITER)
    if len(packet) > cobs.max_encoded_size(max_frame_size):
        raise BadFrame("oversize", f"{len(packet)} encoded bytes")
    raw = cobs.decode(packet)
    if len(raw) > max_frame_size:
        raise BadFrame("oversize", f"{len(raw)} bytes, limit {max_frame_size}")
    return unpack_frame(raw)


_COUNTER_OF_KIND: Final = {
    "cobs": "framing_errors",
    "short": "framing_errors",
    "version": "framing_errors",
    "crc": "crc_errors",
    "oversize": "oversize",
    "type": "unknown_type",
    "payload": "payload_errors",
}

COUNTERS: Final = (
    "bytes_received",
    "bytes_discarded",
    "frames_ok",
    "crc_errors",
    "framing_errors",
    "oversize",
    "unknown_type",
    "payload_errors",
    "seq_gaps",
    "frames_missed",
    "duplicates",
    "seq_resets",
)


class FrameDecoder:
    """Incremental decoder: feed any bytes, get every good frame back; never raises.

    Bad packets are counted (see :data:`COUNTERS`) and skipped; the next 0x00 resynchronises.
    Sequence numbers are tracked per device: a duplicate of the previous frame is dropped.
    """

    def __init__(self, max_frame_size: int = MAX_FRAME_SIZE) -> None:
        self.max_frame_size = max_frame_size
        self._last_seq: dict[int, int] = {}
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._packets = Delimited(b"\x00", cobs.max_encoded_size(max_frame_size),
                                  self._counts, "oversize", delimiter_counted=False)

    def stats(self) -> dict[str, int]:
        """A copy of every counter."""
        return dict(self._counts)

    def reset(self) -> None:
        """Forget a partial frame (e.g. after the port was reopened); counters stay."""
        self._packets.reset()

    def feed(self, data: bytes) -> list[Frame]:
        """Consume ``data`` and return the frames it completed, in order."""
        data = bytes(data)
        self._counts["bytes_received"] += len(data)
        frames: list[Frame] = []
        for piece in self._packets.split(data):
            if piece:
                self._packet(piece, frames)
        return frames

    def _packet(self, packet: bytes, frames: list[Frame]) -> None:
        counts = self._counts
        try:
            frame = decode_frame(packet, self.max_frame_size)
        except BadFrame as exc:
            counts[_COUNTER_OF_KIND[exc.kind]] += 1
            counts["bytes_discarded"] += len(packet)
            return
        if self._is_duplicate(frame):
            counts["duplicates"] += 1
            return
        counts["frames_ok"] += 1
        frames.append(frame)

    def _is_duplicate(self, frame: Frame) -> bool:
        last = self._last_seq.get(frame.device_id)
        self._last_seq[frame.device_id] = frame.seq
        if last is None:
            return False
        diff = (frame.seq - last) & 0xFFFF
        if diff == 1:
            return False
        if frame.type is MessageType.HELLO:
            # A HELLO out of sequence is a reboot: restart tracking, not a gap.
            self._counts["seq_resets"] += 1
        elif diff == 0:
            return True
        elif diff <= 0x8000:
            self._counts["seq_gaps"] += 1
            self._counts["frames_missed"] += diff - 1
        else:
            self._counts["seq_resets"] += 1
        return False
