"""The delimited-stream splitter both serial decoders share (firmware_bridge/delimited.py)."""

from __future__ import annotations

import random

import pytest

from firmware_bridge.delimited import Delimited


def _cut(limit: int = 16, counted: bool = True) -> tuple[Delimited, dict[str, int]]:
    counts = {"bytes_discarded": 0, "over": 0}
    return Delimited(b"\n", limit, counts, "over", delimiter_counted=counted), counts


def test_pieces_survive_any_split_of_the_reads() -> None:
    stream = b"".join(b"line %d\n" % i for i in range(200))
    rng = random.Random(1)
    for _ in range(20):
        cut, counts = _cut()
        got: list[bytes] = []
        i = 0
        while i < len(stream):
            n = rng.randint(1, 40)
            got += cut.split(stream[i : i + n])
            i += n
        assert got == [b"line %d" % i for i in range(200)]
        assert counts == {"bytes_discarded": 0, "over": 0}


@pytest.mark.parametrize("counted", [True, False])
def test_an_overlong_run_is_dropped_to_the_next_delimiter(counted: bool) -> None:
    cut, counts = _cut(limit=8, counted=counted)
    assert cut.split(b"ok\n" + b"x" * 10) == [b"ok"]  # over the limit while still open
    assert counts == {"bytes_discarded": 10, "over": 1}
    assert cut.split(b"yyy") == []  # still the same run
    assert cut.split(b"zz\nnext\n") == [b"next"]  # in step again after its delimiter
    assert counts == {"bytes_discarded": 15 + counted, "over": 1}


def test_reset_drops_and_counts_the_partial_piece() -> None:
    cut, counts = _cut()
    assert cut.split(b"abc\npart") == [b"abc"]
    cut.reset()
    assert counts["bytes_discarded"] == 4
    assert cut.split(b"ial\n") == [b"ial"]  # the tail before the reset is gone


def test_the_delimiter_is_one_byte() -> None:
    with pytest.raises(ValueError, match="one byte"):
        Delimited(b"\r\n", 8, {"bytes_discarded": 0}, "over", delimiter_counted=True)
