"""COBS and CRC-32 against published vectors and independent reference implementations."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_bridge import cobs
from firmware_bridge.crc import CHECK, crc32, crc32_bitwise
from firmware_bridge.errors import BadFrame

# Wikipedia's COBS examples; our encoder always closes the last block (see cobs.py).
VECTORS = [
    (b"\x00", b"\x01\x01"),
    (b"\x00\x00", b"\x01\x01\x01"),
    (b"\x00\x11\x00", b"\x01\x02\x11\x01"),
    (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
    (b"\x11\x22\x33\x44", b"\x05\x11\x22\x33\x44"),
    (b"\x11\x00\x00\x00", b"\x02\x11\x01\x01\x01"),
    (bytes(range(1, 255)), b"\xff" + bytes(range(1, 255)) + b"\x01"),
    (bytes(range(0, 255)), b"\x01\xff" + bytes(range(1, 255)) + b"\x01"),
    (bytes(range(1, 256)), b"\xff" + bytes(range(1, 255)) + b"\x02\xff"),
]


def cobs_reference(data: bytes) -> bytes:
    """Byte-at-a-time encoder, written like the C one."""
    out = bytearray([0])
    code_pos, code = 0, 1
    for b in data:
        if b == 0:
            out[code_pos] = code
            code_pos, code = len(out), 1
            out.append(0)
            continue
        out.append(b)
        code += 1
        if code == 0xFF:
            out[code_pos] = code
            code_pos, code = len(out), 1
            out.append(0)
    out[code_pos] = code
    return bytes(out)


@pytest.mark.parametrize(("raw", "encoded"), VECTORS)
def test_cobs_vectors(raw: bytes, encoded: bytes) -> None:
    assert cobs.encode(raw) == encoded
    assert cobs.decode(encoded) == raw


def test_cobs_decoder_accepts_the_short_form_without_final_block() -> None:
    assert cobs.decode(b"\xff" + bytes(range(1, 255))) == bytes(range(1, 255))


@pytest.mark.parametrize("packet", [b"\x05\x11\x22", b"\x03\x11\x00\x22", b"\x00", b"\x02\x11\x09"])
def test_cobs_rejects_bad_packets(packet: bytes) -> None:
    with pytest.raises(BadFrame) as info:
        cobs.decode(packet)
    assert info.value.kind == "cobs"


@given(st.binary(max_size=2000))
def test_cobs_round_trip_and_reference(data: bytes) -> None:
    encoded = cobs.encode(data)
    assert 0 not in encoded
    assert len(encoded) <= cobs.max_encoded_size(len(data))
    assert encoded == cobs_reference(data)
    assert cobs.decode(encoded) == data


def test_crc_check_value() -> None:
    assert crc32(b"123456789") == CHECK == 0xCBF43926
    assert crc32(b"") == 0


@given(st.binary(max_size=300), st.binary(max_size=300))
def test_crc_bitwise_matches_zlib_and_continues(a: bytes, b: bytes) -> None:
    assert crc32_bitwise(a + b) == zlib.crc32(a + b)
    assert crc32(b, crc32(a)) == crc32(a + b)
