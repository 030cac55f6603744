"""Frames at the byte level: built by hand (like paho's gen_connect) and fed to the decoder."""

from __future__ import annotations

import math
import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_bridge.errors import BadFrame
from firmware_bridge.framing import (
    MAX_ENCODED_SIZE,
    Frame,
    FrameDecoder,
    decode_frame,
    encode_frame,
    pack_frame,
)
from firmware_bridge.messages import (
    Ack,
    Channel,
    Data,
    Heartbeat,
    Hello,
    MessageType,
    SampleEncoding,
    TimeSync,
)


def cobs_reference(data: bytes) -> bytes:
    """Byte-at-a-time COBS encoder, written like the C one (independent of cobs.py)."""
    out = bytearray([0])
    code_pos, code = 0, 1
    for b in data:
        if b != 0:
            out.append(b)
            code += 1
        if b == 0 or code == 0xFF:
            out[code_pos] = code
            code_pos, code = len(out), 1
            out.append(0)
    out[code_pos] = code
    return bytes(out)


def gen_frame(
    msg_type: int, payload: bytes, device: int = 7, seq: int = 0, ts: int = 0, version: int = 1
) -> bytes:
    raw = struct.pack("<BBIHI", version, msg_type, device, seq, ts) + payload
    raw += struct.pack("<I", zlib.crc32(raw))
    return b"\x00" + cobs_reference(raw) + b"\x00"


def gen_data_f32(rows: list[list[float]], period_us: int = 0) -> bytes:
    flat = [v for r in rows for v in r]
    return struct.pack("<BBBI", 0, len(rows[0]), len(rows), period_us) + struct.pack(
        f"<{len(flat)}f", *flat
    )


def gen_hello(names: list[tuple[str, str]], rate: float = 10.0, fw: str = "1.0") -> bytes:
    out = struct.pack("<fB", rate, len(names)) + bytes([len(fw)]) + fw.encode()
    for name, unit in names:
        out += bytes([len(name)]) + name.encode() + bytes([len(unit)]) + unit.encode()
    return out


def data_frame(seq: int, value: float = 1.0, device: int = 7) -> bytes:
    return gen_frame(MessageType.DATA, gen_data_f32([[value]]), device=device, seq=seq)


def test_encode_matches_hand_built_bytes() -> None:
    hello = Hello((Channel("temp", "degC"), Channel("rpm")), 10.0, "1.0")
    frame = Frame(7, 0, 1234, hello)
    assert encode_frame(frame) == gen_frame(
        0x01, gen_hello([("temp", "degC"), ("rpm", "")]), ts=1234
    )
    data = Data.from_rows([(1.5, -2.0), (3.0, 4.0)], period_us=10_000)
    assert encode_frame(Frame(7, 65535, 2**32 - 1, data)) == gen_frame(
        0x02, gen_data_f32([[1.5, -2.0], [3.0, 4.0]], 10_000), seq=65535, ts=2**32 - 1
    )
    assert encode_frame(Frame(7, 3, 0, Heartbeat(9))) == gen_frame(0x03, b"\x09\0\0\0", seq=3)


def test_header_layout_is_little_endian() -> None:
    raw = pack_frame(Frame(0x04030201, 0x0605, 0x0A090807, Heartbeat(0)))
    assert raw[:12] == bytes([1, 3, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    assert len(raw) == 12 + 4 + 4


def test_int16_data_payload_by_hand() -> None:
    payload = struct.pack("<BBBIf", 1, 2, 1, 0, 0.5) + struct.pack("<2h", 3, -32768)
    frame = decode_frame(gen_frame(0x02, payload))
    assert isinstance(frame.message, Data)
    assert frame.message.encoding is SampleEncoding.INT16
    assert frame.message.values[0] == 1.5 and math.isnan(frame.message.values[1])
    assert encode_frame(frame) == gen_frame(0x02, payload)


@pytest.mark.parametrize(
    "message", [TimeSync(1_700_000_000_000), Ack(12, MessageType.HELLO), Heartbeat(2**32 - 1)]
)
def test_every_message_round_trips(message: TimeSync | Ack | Heartbeat) -> None:
    frame = Frame(1, 2, 3, message)
    assert decode_frame(encode_frame(frame)) == frame


@pytest.mark.parametrize(
    ("wire", "kind"),
    [
        (b"\x05\x01\x02", "cobs"),
        (b"\x02\x01\x02\x01", "short"),
        (gen_frame(0x03, b"\0\0\0\0", version=2), "version"),
        (gen_frame(0x7F, b""), "type"),
        (gen_frame(0x03, b"\0\0"), "payload"),
        (gen_frame(0x02, gen_data_f32([[1.0, 2.0]])[:-1]), "payload"),
        (gen_frame(0x01, gen_hello([("a", ""), ("a", "")])), "payload"),
        (gen_frame(0x01, gen_hello([("a", "")]) + b"x"), "payload"),
        (gen_frame(0x02, b"\x07\x01\x01\0\0\0\0"), "payload"),
        (b"\x01" * (MAX_ENCODED_SIZE + 1), "oversize"),
    ],
)
def test_decode_frame_rejects(wire: bytes, kind: str) -> None:
    with pytest.raises(BadFrame) as info:
        decode_frame(wire)
    assert info.value.kind == kind


def test_crc_error_detected_for_every_single_bit_flip() -> None:
    wire = gen_frame(0x02, gen_data_f32([[1.0, 2.0, 3.0]]))
    for bit in range(8, (len(wire) - 1) * 8):  # delimiters excluded
        bad = bytearray(wire)
        bad[bit // 8] ^= 1 << (bit % 8)
        dec = FrameDecoder()
        assert dec.feed(bytes(bad)) == []
        stats = dec.stats()
        assert stats["crc_errors"] + stats["framing_errors"] >= 1, bit


def test_decoder_handles_torn_frames_byte_by_byte() -> None:
    wire = b"".join(data_frame(i, float(i)) for i in range(5))
    dec = FrameDecoder()
    frames = [f for b in wire for f in dec.feed(bytes([b]))]
    assert [f.seq for f in frames] == [0, 1, 2, 3, 4]
    assert dec.stats()["bytes_discarded"] == 0


def test_garbage_and_truncated_frames_are_counted_and_skipped() -> None:
    good = data_frame(1)
    truncated = data_frame(2)[:-6] + b"\x00"
    wire = b"noise\xff\x01" + data_frame(0) + truncated + good
    dec = FrameDecoder()
    assert [f.seq for f in dec.feed(wire)] == [0, 1]
    stats = dec.stats()
    assert stats["framing_errors"] + stats["crc_errors"] == 2
    assert stats["seq_gaps"] == 0 and stats["frames_ok"] == 2


def test_crc_errors_counted() -> None:
    raw = bytearray(pack_frame(Frame(7, 1, 0, Data.from_rows([(1.0,)]))))
    raw[14] ^= 0x40  # inside the payload: COBS stays valid, only the CRC can tell
    bad = b"\x00" + cobs_reference(bytes(raw)) + b"\x00"
    dec = FrameDecoder()
    assert [f.seq for f in dec.feed(data_frame(0) + bad + data_frame(2))] == [0, 2]
    stats = dec.stats()
    assert (stats["crc_errors"], stats["seq_gaps"], stats["frames_missed"]) == (1, 1, 1)


def test_oversize_is_dropped_and_decoder_resyncs() -> None:
    dec = FrameDecoder()
    assert dec.feed(b"\x01" * 600) == []
    assert dec.feed(b"\x01" * 600) == []  # now over the limit: discarding
    assert dec.stats()["oversize"] == 1
    assert dec.feed(b"\x01" * 5000) == []
    frames = dec.feed(b"\x00" + data_frame(0))
    assert [f.seq for f in frames] == [0]
    assert dec.stats()["oversize"] == 1
    assert dec.stats()["bytes_discarded"] == 6200


def test_oversize_frame_cannot_be_encoded() -> None:
    with pytest.raises(ValueError, match="limit"):
        encode_frame(Frame(1, 0, 0, Data.from_rows([[0.0] * 64] * 4)))


def test_sequence_gaps_duplicates_and_resets() -> None:
    dec = FrameDecoder()
    seqs = [65534, 65535, 0, 0, 3, 2, 4]
    frames = dec.feed(b"".join(data_frame(s) for s in seqs))
    assert [f.seq for f in frames] == [65534, 65535, 0, 3, 2, 4]
    stats = dec.stats()
    assert stats["duplicates"] == 1
    assert (stats["seq_gaps"], stats["frames_missed"]) == (2, 3)  # 0->3 and 2->4
    assert stats["seq_resets"] == 1  # 3->2


def test_sequence_tracked_per_device_and_hello_restarts_it() -> None:
    dec = FrameDecoder()
    hello = gen_frame(0x01, gen_hello([("a", "")]), seq=0)
    wire = data_frame(10, device=1) + data_frame(10, device=2) + data_frame(500) + hello
    wire += data_frame(1)
    assert len(dec.feed(wire)) == 5
    stats = dec.stats()
    assert (stats["seq_gaps"], stats["duplicates"], stats["seq_resets"]) == (0, 0, 1)


def test_reset_drops_partial_frame() -> None:
    dec = FrameDecoder()
    wire = data_frame(0)
    dec.feed(wire[:8])
    dec.reset()
    assert dec.feed(wire[8:]) == []
    assert [f.seq for f in dec.feed(data_frame(1))] == [1]


@given(st.binary(max_size=3000))
def test_random_bytes_never_crash(noise: bytes) -> None:
    dec = FrameDecoder()
    for i in range(0, len(noise), 97):
        dec.feed(noise[i : i + 97])
    stats = dec.stats()
    assert stats["bytes_received"] == len(noise)
    assert all(v >= 0 for v in stats.values())


rows_strategy = st.lists(
    st.lists(st.floats(width=32, allow_nan=False), min_size=3, max_size=3),
    min_size=1,
    max_size=5,
)


@given(
    st.lists(st.tuples(rows_strategy, st.binary(max_size=60)), min_size=1, max_size=8),
    st.integers(min_value=1, max_value=200),
)
def test_frames_in_noise_are_all_recovered(
    items: list[tuple[list[list[float]], bytes]], chunk: int
) -> None:
    frames = [Frame(3, i, i * 10, Data.from_rows(rows)) for i, (rows, _) in enumerate(items)]
    wire = b"".join(noise + encode_frame(f) for f, (_, noise) in zip(frames, items, strict=True))
    dec = FrameDecoder()
    got = [f for i in range(0, len(wire), chunk) for f in dec.feed(wire[i : i + chunk])]
    assert got == frames
