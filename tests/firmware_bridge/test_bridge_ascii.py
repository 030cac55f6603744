"""ASCII line mode: both line forms, limits and counters."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_bridge.ascii_lines import AsciiLineParser, AsciiSample, parse_line
from firmware_bridge.errors import BadLine


def test_csv_and_key_value_lines() -> None:
    p = AsciiLineParser(["t", "p"])
    out = p.feed(b"10,1.5,2\r\n20;3;4\nts=30 t=5, p=6\n\n# comment\nt=7\n")
    assert out == [
        AsciiSample(10.0, {"t": 1.5, "p": 2.0}),
        AsciiSample(20.0, {"t": 3.0, "p": 4.0}),
        AsciiSample(30.0, {"t": 5.0, "p": 6.0}),
        AsciiSample(None, {"t": 7.0}),
    ]
    assert p.stats()["lines_ok"] == 4


def test_unconfigured_csv_names_fixed_by_first_line() -> None:
    p = AsciiLineParser()
    out = p.feed(b"1,2,3\n2,4,5\n3,1\n")
    assert [s.values for s in out] == [{"ch0": 2.0, "ch1": 3.0}, {"ch0": 4.0, "ch1": 5.0}]
    assert p.stats()["field_count"] == 1


@pytest.mark.parametrize(
    "line",
    ["1,abc", "1,inf", "1,2;3", "a=1 =2", "bad name=1", "x=1 x=2", "ts=5", "5", "1,2,3,4"],
)
def test_bad_lines_raise(line: str) -> None:
    with pytest.raises(BadLine):
        parse_line(line, ["a", "b"])


def test_nan_is_kept_as_no_value() -> None:
    sample = parse_line("1,nan", ["a"])
    assert sample is not None and math.isnan(sample.values["a"])


def test_overlong_line_dropped_until_newline() -> None:
    p = AsciiLineParser(["a"], max_line=32)
    assert p.feed(b"x" * 40) == []
    assert p.feed(b"y" * 40 + b"\n1,2\n") == [AsciiSample(1.0, {"a": 2.0})]
    stats = p.stats()
    assert stats["overlong"] == 1 and stats["bytes_discarded"] == 81


def test_non_utf8_and_torn_lines() -> None:
    p = AsciiLineParser(["a"])
    assert p.feed(b"\xff\xfe,1\n1,") == []
    assert p.feed(b"5\n") == [AsciiSample(1.0, {"a": 5.0})]
    assert p.stats()["bad_lines"] == 1


def test_bad_configured_channel_name() -> None:
    with pytest.raises(ValueError, match="bad name"):
        AsciiLineParser(["has space"])


@given(st.binary(max_size=2000))
def test_random_bytes_never_crash(data: bytes) -> None:
    p = AsciiLineParser()
    p.feed(data)
    assert p.stats()["bytes_received"] == len(data)
