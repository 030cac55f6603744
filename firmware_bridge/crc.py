"""CRC-32/ISO-HDLC, the zlib/Ethernet CRC used to check every frame.

Reflected polynomial 0xEDB88320, init 0xFFFFFFFF, final xor 0xFFFFFFFF. :func:`crc32` is the
fast path (zlib); :func:`crc32_bitwise` spells the algorithm out exactly as the C encoder does,
and the tests check they agree.

>>> hex(crc32(b"123456789"))
'0xcbf43926'
>>> crc32_bitwise(b"123456789") == crc32(b"123456789")
True
"""

from __future__ import annotations

import zlib
from typing import Final

POLY: Final = 0xEDB88320
CHECK: Final = 0xCBF43926  # CRC of b"123456789"


def crc32(data: bytes, crc: int = 0) -> int:
    """CRC-32 of ``data``, continuing from a previous ``crc`` (0 to start)."""
    return zlib.crc32(data, crc) & 0xFFFFFFFF


def crc32_bitwise(data: bytes, crc: int = 0) -> int:
    """Bit-at-a-time CRC-32: slow, table-free, the reference for firmware."""
    crc ^= 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (POLY if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF
