"""Payload parsers: every format, timestamps, and every kind of bad input."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.payloads import parse_payload, parse_timestamp, sniff_format
from firmware_bridge.batch import encode_batch, encode_batch_json

NOW = 1_700_000_500.0


def test_json_single_point() -> None:
    r = parse_payload(b'{"ts": 1700000000.5, "values": {"temp": 21.3, "vib": 1}}',
                      stream="s", now=NOW)
    assert r.rejects == []
    assert r.points[0].ts == 1700000000.5 and r.points[0].stream == "s"
    assert r.points[0].values == {"temp": 21.3, "vib": 1}


def test_json_batch_list_and_stream_from_payload() -> None:
    body = json.dumps([{"ts": 1, "values": {"a": 1.0}, "stream": "x"},
                       {"ts": 2, "values": {"a": 2.0}, "stream": "x"}]).encode()
    r = parse_payload(body, stream=None, now=NOW)
    assert [p.ts for p in r.points] == [1.0, 2.0] and {p.stream for p in r.points} == {"x"}


def test_json_rows_twin_of_binary_batch() -> None:
    body = encode_batch_json("pump", ["a", "b"], [(10.0, [1.0, float("nan")]), (11.0, [2, 3])])
    r = parse_payload(body, stream=None, now=NOW)
    assert [p.values for p in r.points] == [{"a": 1.0}, {"a": 2, "b": 3}]
    assert r.points[0].stream == "pump"


def test_binary_batch() -> None:
    data = encode_batch("pump", ["t", "rpm"], [(10.0, [21.5, 1200.0]), (11.0, [21.6, 1201.0])])
    assert sniff_format(data) == "binary"
    r = parse_payload(data, stream=None, now=NOW)
    assert [p.ts for p in r.points] == [10.0, 11.0]
    assert r.points[1].values == {"t": pytest.approx(21.6, rel=1e-6), "rpm": 1201.0}
    forced = parse_payload(data, stream="line1", now=NOW)
    assert {p.stream for p in forced.points} == {"line1"}


def test_binary_batch_corrupt() -> None:
    data = encode_batch("pump", ["t"], [(10.0, [1.0])])
    r = parse_payload(data[:-3], stream=None, now=NOW)
    assert r.points == [] and r.rejects[0][0] == "bad_batch"


def test_csv_with_configured_channels_and_header() -> None:
    r = parse_payload(b"1700000000,21.5,0.3\n1700000001,21.6,0.4\n", stream="s", now=NOW,
                      channels=["temp", "vib"])
    assert [p.values["vib"] for p in r.points] == [0.3, 0.4]
    h = parse_payload(b"ts,vib\n1700000002,0.9", stream="s", now=NOW, channels=["temp", "vib"])
    assert h.points[0].values == {"vib": 0.9}


def test_csv_bad_lines_counted() -> None:
    r = parse_payload(b"1,2\n1,2,3,4\nxx,1,2", stream="s", now=NOW, channels=["a", "b"])
    assert [x[0] for x in r.rejects] == ["bad_csv", "bad_csv", "bad_timestamp"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1700000000, 1700000000.0), (1700000000123, 1700000000.123),
     ("2024-01-01T00:00:00Z", 1704067200.0), ("2024-01-01T01:00:00+01:00", 1704067200.0),
     ("2024-01-01T00:00:00", 1704067200.0), ("1700000000.5", 1700000000.5)],
)
def test_timestamps(value: object, expected: float) -> None:
    assert parse_timestamp(value, NOW) == (pytest.approx(expected), False)


def test_missing_timestamp_is_receive_time_and_counted() -> None:
    r = parse_payload(b'[{"values": {"a": 1}}, {"ts": null, "values": {"a": 2}}]',
                      stream="s", now=NOW)
    assert [p.ts for p in r.points] == [NOW, NOW] and r.ts_defaulted == 2


@pytest.mark.parametrize(
    ("payload", "reason"),
    [(b"{not json", "invalid_json"), (b'"just a string"', "bad_csv"), (b'[1, 2]', "bad_shape"),
     (b'{"ts": 1}', "bad_shape"), (b'{"ts": 1, "values": []}', "bad_shape"),
     (b'{"ts": true, "values": {"a": 1}}', "bad_timestamp"),
     (b'{"ts": "yesterday", "values": {"a": 1}}', "bad_timestamp"),
     (b'{"ts": -5, "values": {"a": 1}}', "bad_timestamp"),
     (b"[]", "bad_shape"), (b"\xff\xfe{", "bad_encoding"),
     (b'{"ts": 1, "values": {"a": null}}', "bad_shape")],
)
def test_bad_payloads_are_rejected_not_raised(payload: bytes, reason: str) -> None:
    r = parse_payload(payload, stream="s", now=NOW)
    assert r.points == [] and r.rejects[0][0] == reason


def test_no_stream_anywhere() -> None:
    r = parse_payload(b'{"ts": 1, "values": {"a": 1}}', stream=None, now=NOW)
    assert r.rejects[0][0] == "no_stream"
    ok = parse_payload(b'{"ts": 1, "values": {"a": 1}}', stream=None, now=NOW,
                       default_stream="fromtopic")
    assert ok.points[0].stream == "fromtopic"


def test_huge_payload_rejected_before_parsing() -> None:
    r = parse_payload(b"[" + b"1," * 200_000 + b"1]", stream="s", now=NOW, max_bytes=1000)
    assert r.rejects[0][0] == "too_large"


def test_nan_and_strings_pass_to_engine_for_counting() -> None:
    r = parse_payload(b'{"ts": 1, "values": {"a": NaN, "b": "x", "c": 1.0}}', stream="s",
                      now=NOW)
    v = r.points[0].values
    assert math.isnan(v["a"]) and v["b"] == "x" and v["c"] == 1.0


@given(st.binary(max_size=300))
def test_never_raises_on_arbitrary_bytes(data: bytes) -> None:
    for fmt in ("auto", "json", "csv", "binary"):
        r = parse_payload(data, stream="s", now=NOW, channels=["a"], fmt=fmt)
        assert r.points or r.rejects or not data.strip()
