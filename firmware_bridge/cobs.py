"""Consistent Overhead Byte Stuffing: remove every 0x00 so it can delimit frames.

The classic variant: a code byte ``n`` (1..255) is followed by ``n - 1`` data bytes, and a code
below 0xFF implies a 0x00 after its block unless the block ends the packet. The encoder always
closes the last block (254 non-zero bytes become ``FF <254 bytes> 01``), exactly like the
streaming C encoder in ``c/edge_frame.c``.

>>> encode(b"\\x11\\x00\\x22")
b'\\x02\\x11\\x02"'
>>> decode(encode(b"\\x00\\x00"))
b'\\x00\\x00'
"""

from __future__ import annotations

from firmware_bridge.errors import BadFrame

_BLOCK = 254


def max_encoded_size(n: int) -> int:
    """Largest COBS encoding of ``n`` bytes (without delimiters).

    >>> max_encoded_size(1024)
    1029
    """
    return n + n // _BLOCK + 1


def encode(data: bytes) -> bytes:
    """COBS-encode ``data``; the result contains no 0x00."""
    out = bytearray()
    for chunk in bytes(data).split(b"\x00"):
        while len(chunk) >= _BLOCK:
            out.append(0xFF)
            out += chunk[:_BLOCK]
            chunk = chunk[_BLOCK:]
        out.append(len(chunk) + 1)
        out += chunk
    return bytes(out)


def decode(data: bytes) -> bytes:
    """Decode one COBS packet (no delimiters).

    Raises:
        BadFrame: kind ``cobs`` if the packet contains 0x00 or a code points past its end.
    """
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise BadFrame("cobs", f"0x00 inside packet at byte {i}")
        end = i + code
        if end > n:
            raise BadFrame("cobs", f"code {code} at byte {i} runs past the end ({n} bytes)")
        block = data[i + 1 : end]
        if 0 in block:
            raise BadFrame("cobs", "0x00 inside packet")
        out += block
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)
