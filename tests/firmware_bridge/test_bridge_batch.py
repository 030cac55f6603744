"""The compact binary batch: exact bytes, round trip, and a decoder that only raises BadBatch."""

from __future__ import annotations

import contextlib
import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.types import Point
from firmware_bridge.batch import (
    MAX_BATCH_BYTES,
    Batch,
    decode_batch,
    encode_batch,
    encode_batch_json,
)
from firmware_bridge.errors import BadBatch, FramingError


def gen_batch(stream: str, channels: list[str], rows: list[tuple[float, list[float]]]) -> bytes:
    out = b"EB" + struct.pack("<BBHIB", 1, 0, len(channels), len(rows), len(stream))
    out += stream.encode()
    for c in channels:
        out += bytes([len(c.encode())]) + c.encode()
    for ts, values in rows:
        out += struct.pack("<d", ts) + struct.pack(f"<{len(values)}f", *values)
    return out


def test_bytes_match_hand_built() -> None:
    rows = [(1.5, [1.0, 2.0]), (2.5, [math.nan, -4.0])]
    data = encode_batch("dev7", ["temp", "μ"], rows)
    assert data == gen_batch("dev7", ["temp", "μ"], rows)
    assert len(data) == 11 + 4 + 5 + 3 + 2 * 16


def test_decode_and_points_skip_nan() -> None:
    data = gen_batch("s", ["a", "b"], [(1.0, [1.0, math.nan]), (2.0, [math.nan, math.nan])])
    batch = decode_batch(data)
    assert batch.channels == ("a", "b") and len(batch.rows) == 2
    assert batch.points() == [Point(1.0, "s", {"a": 1.0})]


def test_empty_batch_is_valid() -> None:
    assert decode_batch(encode_batch("s", ["a"], [])) == Batch("s", ("a",), ())


GOOD = gen_batch("s", ["a", "b"], [(1.0, [1.0, 2.0])])


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "truncated"),
        (b"XX" + GOOD[2:], "magic"),
        (GOOD[:2] + b"\x02" + GOOD[3:], "version"),
        (GOOD[:3] + b"\x01" + GOOD[4:], "flags"),
        (GOOD[:4] + b"\x00\x00" + GOOD[6:], "n_channels"),
        (GOOD[:6] + struct.pack("<I", 10**6) + GOOD[10:], "n_rows"),
        (GOOD[:-1], "truncated"),
        (GOOD + b"\x00", "trailing"),
        (gen_batch("s", ["a", "a"], []), "unique"),
        (gen_batch("", ["a"], []), "stream"),
        (gen_batch("s", ["a"], [(math.inf, [1.0])]), "timestamp"),
        (gen_batch("s", ["a"], [(1.0, [math.inf])]), "infinite"),
        (GOOD[:11] + b"\xff\xfe" + GOOD[13:], "UTF-8"),
        (b"\x00" * (MAX_BATCH_BYTES + 1), "limit"),
    ],
)
def test_decode_rejects_with_reason(data: bytes, reason: str) -> None:
    with pytest.raises(BadBatch, match=reason):
        decode_batch(data)


def test_bad_batch_is_a_framing_error() -> None:
    assert issubclass(BadBatch, FramingError)


@pytest.mark.parametrize(
    ("stream", "channels", "rows", "match"),
    [
        ("", ["a"], [], "stream"),
        ("s", [], [], "channels"),
        ("s", ["a", "a"], [], "unique"),
        ("s", ["a"], [(1.0, [1.0, 2.0])], "2 values"),
        ("s", ["a"], [(math.nan, [1.0])], "not finite"),
        ("s", ["a"], [(1.0, [math.inf])], "infinite"),
        ("s", ["a"], [(1.0, [1e39])], "rows"),
        ("s", ["x" * 65], [], "channels"),
    ],
)
def test_encode_rejects(stream: str, channels: list[str], rows: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        encode_batch(stream, channels, rows)


names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=10)


@given(
    names,
    st.lists(names, min_size=1, max_size=6, unique=True),
    st.data(),
)
def test_round_trip(stream: str, channels: list[str], data: st.DataObject) -> None:
    value = st.floats(width=32, allow_infinity=False)
    row = st.tuples(
        st.floats(allow_nan=False, allow_infinity=False),
        st.lists(value, min_size=len(channels), max_size=len(channels)),
    )
    rows = data.draw(st.lists(row, max_size=20))
    batch = decode_batch(encode_batch(stream, channels, rows))
    assert batch.stream == stream and batch.channels == tuple(channels)
    assert len(batch.rows) == len(rows)
    for (ts, vals), (ts2, vals2) in zip(rows, batch.rows, strict=True):
        assert ts == ts2
        assert [v if v == v else None for v in vals] == [v if v == v else None for v in vals2]


@given(st.binary(max_size=400))
def test_fuzz_decode_only_raises_bad_batch(data: bytes) -> None:
    with contextlib.suppress(BadBatch):
        decode_batch(data)


@given(st.integers(min_value=0, max_value=len(GOOD) - 1), st.integers(0, 255))
def test_fuzz_mutations_of_a_good_batch(pos: int, byte: int) -> None:
    data = bytearray(GOOD)
    data[pos] = byte
    with contextlib.suppress(BadBatch):
        decode_batch(bytes(data))


def test_every_truncation_is_rejected() -> None:
    for cut in range(len(GOOD)):
        with pytest.raises(BadBatch):
            decode_batch(GOOD[:cut])


def test_json_twin() -> None:
    assert encode_batch_json("s", ["a", "b"], [(1.0, [2.0, math.nan])]) == (
        b'{"v":1,"stream":"s","channels":["a","b"],"rows":[[1.0,2.0,null]]}'
    )
