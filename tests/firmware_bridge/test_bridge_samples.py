"""Frames → points: device clock mapping, channel naming, and the auto-detecting stream."""

from __future__ import annotations

import math

import pytest

from agent.types import Point
from firmware_bridge.framing import Frame, encode_frame
from firmware_bridge.messages import Channel, Data, Heartbeat, Hello
from firmware_bridge.samples import DeviceClock, SampleConverter
from firmware_bridge.stream import Mode, SampleStream

HELLO = Hello((Channel("a"), Channel("b")), 10.0)


def data(seq: int, ts: int, rows: list[tuple[float, float]], period_us: int = 0) -> Frame:
    return Frame(5, seq, ts, Data.from_rows(rows, period_us=period_us))


def test_clock_anchor_refine_and_resync() -> None:
    clock = DeviceClock(max_skew=2.0)
    clock.observe(clock.unwrap(1000), now=100.5)
    assert clock.to_epoch(1000) == 100.5
    clock.observe(clock.unwrap(2000), now=101.1)  # arrived faster: offset lowered
    assert clock.to_epoch(2000) == 101.1
    clock.observe(clock.unwrap(3000), now=102.9)  # 0.8 s late: within max_skew, kept
    assert clock.to_epoch(3000) == 102.1 and clock.resyncs == 0
    clock.observe(clock.unwrap(4000), now=106.0)  # 2.9 s late: re-anchored
    assert clock.to_epoch(4000) == 106.0 and clock.resyncs == 1


def test_clock_unwraps_u32_and_detects_reset() -> None:
    clock = DeviceClock()
    start = clock.unwrap(2**32 - 500)
    clock.observe(start, now=1000.0)
    after = clock.unwrap(500)
    assert after - start == 1000
    clock.observe(after, now=1001.0)
    assert clock.to_epoch(after) == 1001.0
    assert clock.unwrap(100_000) == 2**32 + 100_000
    assert clock.unwrap(50_000) == 50_000 and clock.resets == 1


def test_clock_needs_an_observation() -> None:
    with pytest.raises(RuntimeError):
        DeviceClock().to_epoch(0)


def test_converter_names_stream_and_timestamps() -> None:
    conv = SampleConverter()
    assert conv.convert(Frame(5, 0, 0, HELLO), now=50.0) == []
    points = conv.convert(data(1, 1000, [(1.0, 2.0), (3.0, 4.0)], 100_000), now=51.1)
    assert points == [
        Point(51.0, "dev5", {"a": 1.0, "b": 2.0}),
        Point(51.1, "dev5", {"a": 3.0, "b": 4.0}),
    ]
    assert conv.hello(5) == HELLO


def test_converter_gateway_time_source_and_custom_stream() -> None:
    conv = SampleConverter(stream="pump", time_source="gateway")
    conv.convert(Frame(5, 0, 0, HELLO), now=0.0)
    points = conv.convert(data(1, 99999, [(1.0, 2.0), (3.0, 4.0)], 500_000), now=10.0)
    assert [(p.ts, p.stream) for p in points] == [(9.5, "pump"), (10.0, "pump")]


def test_converter_counts_rejects() -> None:
    conv = SampleConverter()
    assert conv.convert(data(0, 0, [(1.0, 2.0)]), now=1.0) == []
    conv.convert(Frame(5, 1, 0, Hello((Channel("only"),))), now=1.0)
    assert conv.convert(data(2, 0, [(1.0, 2.0)]), now=1.0) == []
    conv.convert(Frame(5, 3, 0, HELLO), now=1.0)
    points = conv.convert(data(4, 10, [(math.nan, 2.0), (math.nan, math.nan)], 1000), now=1.0)
    assert [p.values for p in points] == [{"b": 2.0}]
    conv.convert(Frame(5, 5, 20, Heartbeat(7)), now=1.0)
    stats = conv.stats()
    assert (stats["no_hello"], stats["channel_mismatch"]) == (1, 1)
    assert (stats["missing_values"], stats["empty_samples"], stats["points"]) == (3, 1, 1)
    assert (stats["hellos"], stats["heartbeats"], stats["device_tx_dropped"]) == (2, 1, 7)


def test_configured_names_used_before_hello() -> None:
    conv = SampleConverter(channels=["x", "y"])
    assert conv.convert(data(0, 0, [(1.0, 2.0)]), now=1.0)[0].values == {"x": 1.0, "y": 2.0}


def test_stream_auto_detects_ascii() -> None:
    s = SampleStream(mode="auto", channels=["a"])
    assert s.feed(b"1,1\n2,2\n", now=10.0) == []
    points = s.feed(b"3,3\n", now=10.0)
    assert [p.values["a"] for p in points] == [1.0, 2.0, 3.0]
    assert points[0].stream == "serial" and s.decided is Mode.ASCII
    assert s.stats()["lines_ok"] == 3
    s.reset()
    assert s.decided is Mode.AUTO


def test_stream_ascii_timestamps() -> None:
    s = SampleStream(mode="ascii", stream="st")
    (p1,) = s.feed(b"1000,1\n", now=20.0)
    p2, p3 = s.feed(b"1500,2\nv=3\n", now=20.6)  # device spacing kept, jitter ignored
    assert (p1.ts, p2.ts, p3.ts) == (20.0, 20.5, 20.6)


def test_stream_binary_counts_everything() -> None:
    s = SampleStream(mode="binary")
    wire = encode_frame(Frame(5, 0, 0, HELLO)) + b"junk" + encode_frame(data(1, 5, [(1, 2)]))
    assert len(s.feed(wire, now=1.0)) == 1
    stats = s.stats()
    assert stats["framing_errors"] == 1 and stats["points"] == 1 and stats["mode"] == 1


def test_mode_parse() -> None:
    with pytest.raises(ValueError, match="mode"):
        Mode.parse("serial")
