"""A bounded map from event names to model ids, with reserved ``<pad>`` and ``<unknown>``.

Id 0 pads a history shorter than the model's (a source that has just started), id 1
stands for every name the map does not hold. The next-event model's metadata carries
the vocabulary as a list (index = id), so the exporter and the agent map names the
same way.

>>> v = Vocab.build(["OPEN", "CLOSE", "OPEN"])
>>> v.tokens
('<pad>', '<unknown>', 'OPEN', 'CLOSE')
>>> v.id_of("CLOSE"), v.id_of("never seen")
(3, 1)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

PAD = "<pad>"
UNKNOWN = "<unknown>"
PAD_ID = 0
UNKNOWN_ID = 1
RESERVED = (PAD, UNKNOWN)
MAX_TOKEN_CHARS = 256


class Vocab:
    """Immutable ``name -> id`` map; ``tokens[i]`` is the name of id ``i``."""

    def __init__(self, tokens: Sequence[str]) -> None:
        if tuple(tokens[:2]) != RESERVED:
            raise ValueError(f"a vocabulary starts with {list(RESERVED)}, got {list(tokens[:2])}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("vocabulary tokens must be distinct")
        self.tokens = tuple(tokens)
        self._ids = {t: i for i, t in enumerate(self.tokens)}

    @classmethod
    def build(cls, events: Iterable[str], max_size: int = 10_000, min_count: int = 1) -> Vocab:
        """The most frequent names (ties: first seen first), at most ``max_size`` ids."""
        counts = Counter(events)
        order = [e for e, c in counts.most_common() if c >= min_count and e not in RESERVED]
        return cls([*RESERVED, *order[: max(max_size - 2, 0)]])

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, name: object) -> bool:
        return name in self._ids and name not in RESERVED

    def id_of(self, name: str) -> int:
        return self._ids.get(name, UNKNOWN_ID) if name not in RESERVED else UNKNOWN_ID

    def ids(self, names: Iterable[str]) -> list[int]:
        return [self.id_of(n) for n in names]

    def name_of(self, i: int) -> str:
        return self.tokens[i] if 0 <= i < len(self.tokens) else UNKNOWN
