"""Stale streams: a ``stale`` event when a stream has been silent too long, ``fresh`` when
data is back. Pure: the caller passes the clocks (``docs/mqtt.md``, "Stale streams").

Silence is measured on the **arrival** side with the monotonic clock, never with data
timestamps (a device whose clock is wrong or jumps must not look silent or alive): on
every check, a stream whose count of accepted points (``Engine.accepted``) changed since
the previous check was seen *now*. So the resolution is the check interval (the live
agent checks every :data:`CHECK_S` seconds), the cost per point is nil and the state is
a few numbers per configured stream. Only accepted points count: a stream that sends
nothing but rejected input is silent as far as detection is concerned.

A stream is stale once ``stale_after_s`` (``streams[].stale_after_s``, default
``agent.stale_after_s``; 0 = off) has passed since it was last seen, or since the agent
started for a stream never seen. Each transition is reported once.

>>> f = Freshness(now=0.0)
>>> f.check({"s": 1.0}, {}, now=0.5, wall=100.5)
[]
>>> [e["event"] for e in f.check({"s": 1.0}, {}, now=1.2, wall=101.2)]
['stale']
>>> f.check({"s": 1.0}, {}, now=5.0, wall=105.0)  # reported once
[]
>>> ev = f.check({"s": 1.0}, {"s": 3}, now=6.0, wall=106.0)[0]
>>> ev["event"], ev["silent_s"]
('fresh', 6.0)
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

CHECK_S = 0.25  # seconds between two checks in the live agent


class Freshness:
    """Tracks, per stream, when accepted data last arrived and whether it is stale."""

    def __init__(self, now: float) -> None:
        self.started = now
        self.counts: Counter[str] = Counter()
        self._seen: dict[str, int] = {}      # accepted-point count at the last check
        self._last: dict[str, float] = {}    # monotonic time of the last arrival
        self._ever: set[str] = set()         # streams that sent anything since start
        self._stale: set[str] = set()
        self._checked = False

    def check(self, limits: Mapping[str, float], accepted: Mapping[str, int], *, now: float,
              wall: float) -> list[dict[str, Any]]:
        """Update from ``accepted`` (points accepted per stream so far) at monotonic ``now``
        (``wall``: the same instant in epoch seconds); return the events to publish.

        ``limits`` maps every configured stream to its ``stale_after_s`` (0 = off)."""
        events = []
        for sid in [s for s in self._seen if s not in limits]:  # stream removed by config
            for d in (self._seen, self._last):
                d.pop(sid, None)
            self._stale.discard(sid)
            self._ever.discard(sid)
        for sid, limit in limits.items():
            n = accepted.get(sid, 0)
            prev = self._seen.get(sid)
            if prev is None:  # first look: silent since start (or since added by a config)
                self._seen[sid], self._last[sid] = n, now if self._checked else self.started
                continue
            if n != prev:
                silent = now - self._last[sid]
                self._seen[sid], self._last[sid] = n, now
                self._ever.add(sid)
                if sid in self._stale:
                    self._stale.discard(sid)
                    self.counts["fresh"] += 1
                    log.info("stream %s is fresh again after %.1f s of silence", sid, silent)
                    events.append({"event": "fresh", "stream": sid, "ts": wall,
                                   "silent_s": round(silent, 3), "stale_after_s": limit})
                continue
            if limit <= 0:
                self._stale.discard(sid)
                continue
            silent = now - self._last[sid]
            if sid not in self._stale and silent >= limit:
                self._stale.add(sid)
                self.counts["stale"] += 1
                log.warning("stream %s is stale: no accepted point for %.1f s "
                            "(stale_after_s %g)", sid, silent, limit)
                events.append({"event": "stale", "stream": sid, "ts": wall,
                               "last_seen": (round(wall - silent, 3) if sid in self._ever
                                             else None),
                               "silent_s": round(silent, 3), "stale_after_s": limit})
        self._checked = True
        return events

    def stats(self) -> dict[str, Any]:
        return {"stale": sorted(self._stale), "stale_events": self.counts["stale"],
                "fresh_events": self.counts["fresh"]}
