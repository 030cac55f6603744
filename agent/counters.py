"""Counting rejected input by reason, logging each reason once."""

from __future__ import annotations

import logging
from collections import Counter

log = logging.getLogger("agent.input")


class RejectCounter:
    """Counts rejections per reason; the first of each reason is logged with its detail.

    >>> rc = RejectCounter()
    >>> rc.reject("non_finite", "stream s channel a is NaN")
    >>> rc.reject("non_finite", "again")
    >>> dict(rc.counts)
    {'non_finite': 2}
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.counts: Counter[str] = Counter()
        self._log = logger or log

    def reject(self, reason: str, detail: str = "", n: int = 1) -> None:
        if reason not in self.counts:
            self._log.warning(
                "rejected input (%s): %s; further '%s' are only counted (see stats)",
                reason, detail or reason, reason,
            )
        self.counts[reason] += n

    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))
