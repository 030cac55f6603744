"""Vocabulary, stage-1 rarity and the transition gate on plain values."""

from __future__ import annotations

import pytest

from agent.events.rarity import CategoryRarity, TransitionGate
from agent.events.vocab import UNKNOWN_ID, Vocab


def test_vocab_reserved_ids_and_unknown() -> None:
    v = Vocab.build(["A", "B", "A", "C"], max_size=4)
    assert v.tokens == ("<pad>", "<unknown>", "A", "B")
    assert v.id_of("C") == UNKNOWN_ID and v.id_of("<pad>") == UNKNOWN_ID
    assert "A" in v and "<pad>" not in v
    with pytest.raises(ValueError):
        Vocab(["A", "B"])


def _warm(r: CategoryRarity, n: int = 300) -> None:
    for i in range(n):
        r.process("A" if i % 3 else "B")


def test_new_value_flags_at_once_and_is_not_learnt() -> None:
    r = CategoryRarity(min_events=50, relearn_after=3)
    _warm(r)
    assert r.process("NEW") == (4.0, "new_value")
    assert r.process("NEW")[1] == "new_value"  # guarded: not in the baseline yet
    r.process("NEW")  # third flag: learnt as a new normal
    assert r.score_one("NEW")[1] != "new_value"


def test_burst_of_rare_value_flags_but_single_occurrence_does_not() -> None:
    r = CategoryRarity(min_events=50)
    for i in range(3000):
        r.process("RARE" if i % 500 == 0 else ("A" if i % 2 else "B"))
    assert r.process("RARE")[0] < 1.0
    ratios = [r.process("RARE")[0] for _ in range(6)]
    assert ratios[-1] >= 1.0 and max(ratios) >= 1.0


def test_warm_up_and_bounded_memory() -> None:
    r = CategoryRarity(min_events=100, max_values=10)
    assert r.process("X") == (0.0, "")
    for i in range(1000):
        r.process(f"v{i % 50}")
    assert len(r._long.counts) <= 10 and len(r._short.counts) <= 10


def test_state_round_trip() -> None:
    r = CategoryRarity(min_events=10)
    _warm(r, 100)
    s = CategoryRarity(min_events=10)
    s.load_state(r.state_dict())
    assert s.score_one("A") == r.score_one("A") and s.score_one("Z") == r.score_one("Z")


def test_transition_gate() -> None:
    g = TransitionGate(below=0.1, min_row=5, max_rows=3, max_row=2)
    assert not g.unusual(None, "A")
    for _ in range(10):
        g.learn_one("A", "B")
    assert not g.unusual("A", "B") and g.unusual("A", "C") and g.unusual("Q", "B")
    for prev in "WXYZ":
        g.learn_one(prev, "B")
    assert len(g._rows) <= 3
