"""Batcher: size, age and channel-set rules."""

from __future__ import annotations

import math

from agent.types import Point
from firmware_bridge.batch import decode_batch
from firmware_bridge.publisher import Batcher


def test_batches_by_size_age_and_channel_set() -> None:
    b = Batcher(max_rows=3, max_age=1.0)
    assert b.add(Point(1.0, "s", {"a": 1.0, "b": 2.0}), now=0.0) == []
    assert b.add(Point(2.0, "s", {"a": 3.0}), now=0.1) == []  # subset: NaN for b
    assert b.add(Point(1.0, "t", {"z": 1.0}), now=0.2) == []
    done = b.add(Point(3.0, "s", {"c": 1.0}), now=0.3)  # new channel set closes the batch
    assert [(d.stream, d.channels, len(d.rows)) for d in done] == [("s", ("a", "b"), 2)]
    assert math.isnan(done[0].rows[1][1][1])
    assert b.due(now=1.1) == []
    assert [d.stream for d in b.due(now=1.25)] == ["t"]
    assert [d.stream for d in b.due(now=1.3)] == ["s"]
    assert b.flush() == []


def test_full_batch_and_encoding() -> None:
    b = Batcher(max_rows=2, max_age=10.0)
    b.add(Point(1.0, "s", {"a": 1.0}), now=0.0)
    (done,) = b.add(Point(2.0, "s", {"a": 2.0}), now=0.0)
    assert decode_batch(done.encode()).rows == ((1.0, (1.0,)), (2.0, (2.0,)))
    assert done.encode("json").startswith(b'{"v":1')
