"""Labelled synthetic event sequences: PLC workflows as state machines, plus injected anomalies.

A source (one PLC) runs one workflow instance after another -- a batch, a clean-in-place
cycle, a product changeover, a maintenance job -- each a small state machine with
branches (a QC failure loops back through rework, sanitising is optional ...). Between
any two events, background events happen at random (heartbeats, operator log-ins, doors,
network retries) and, rarely, warnings that are normal but uncommon.

Anomalies (``ANOMALY_TYPES``), labelled per event:

* ``skipped_step``: one step of an instance is left out; the label is on the event that
  arrives instead of it. Only skips that leave an *invalid* path are used.
* ``wrong_order``: two adjacent steps are swapped (again only when the result is
  invalid); both swapped events are labelled.
* ``unknown_event``: an event id never seen before (a fresh alarm code) is inserted.
* ``rare_burst``: a known but rare warning repeats 5..10 times in a row.

Every event also carries a *session*: the workflow instance it belongs to
(``batch-<seed>-17``), as a PLC tags the steps of a batch or job with its order number;
background events, warnings and bursts belong to none (``""``). The agent's sequence
stage keys its history by session when events carry one (DeepLog keys by session / block
id), so a heartbeat between two steps does not push a step out of the model's history.

>>> s = generate_events(300, seed=1)
>>> len(s.events), set(s.labels)
(300, {''})
>>> a = generate_events(3000, seed=1, anomalies=("unknown_event",))
>>> sum(lab == "unknown_event" for lab in a.labels) > 0
True
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

ANOMALY_TYPES = ("skipped_step", "wrong_order", "unknown_event", "rare_burst")
SEQUENCE_ANOMALIES = ("skipped_step", "wrong_order")

# node name -> (event emitted, [(next node, probability)]); "END" finishes the instance.
_Graph = dict[str, tuple[str, list[tuple[str, float]]]]


def _chain(prefix: str, events: Sequence[str], last_next: str = "END") -> _Graph:
    g: _Graph = {}
    for i, ev in enumerate(events):
        nxt = f"{prefix}{i + 1}" if i + 1 < len(events) else last_next
        g[f"{prefix}{i}"] = (ev, [(nxt, 1.0)])
    return g


def _batch() -> _Graph:
    g = _chain("b", ["BATCH_START", "RECIPE_LOAD", "VALVE_IN_OPEN", "FILL_START", "FILL_END",
                     "VALVE_IN_CLOSE", "HEAT_ON", "TEMP_REACHED", "MIX_START", "MIX_END",
                     "HEAT_OFF", "SAMPLE_TAKEN"], last_next="qc")
    g["qc"] = ("QC_CHECK", [("pass", 0.85), ("fail", 0.15)])
    g["fail"] = ("QC_FAIL", [("adj", 1.0)])
    g["adj"] = ("DOSE_ADJUST", [("m2", 1.0)])
    g["m2"] = ("MIX_START", [("m3", 1.0)])
    g["m3"] = ("MIX_END", [("s2", 1.0)])
    g["s2"] = ("SAMPLE_TAKEN", [("qc2", 1.0)])
    g["qc2"] = ("QC_CHECK", [("pass", 1.0)])
    g["pass"] = ("QC_PASS", [("d0", 1.0)])
    g.update(_chain("d", ["VALVE_OUT_OPEN", "DRAIN_START", "DRAIN_END", "VALVE_OUT_CLOSE",
                          "BATCH_END"]))
    return g


def _cip() -> _Graph:
    g = _chain("c", ["CIP_START", "CIP_PUMP_ON", "RINSE_START", "RINSE_END", "CAUSTIC_START",
                     "CAUSTIC_END", "RINSE_START", "RINSE_END", "ACID_START", "ACID_END",
                     "RINSE_START", "RINSE_END"], last_next="san?")
    g["san?"] = ("CONDUCTIVITY_OK", [("s0", 0.7), ("e0", 0.3)])
    g.update(_chain("s", ["SANITIZE_START", "SANITIZE_END"], last_next="e0"))
    g.update(_chain("e", ["CIP_PUMP_OFF", "CIP_END"]))
    return g


def _changeover() -> _Graph:
    g = _chain("o", ["CHANGEOVER_START", "LINE_STOP", "GUARD_OPEN", "TOOL_CHANGE",
                     "GUARD_CLOSE"], last_next="cal?")
    g["cal?"] = ("FORMAT_SELECT", [("k0", 0.5), ("z0", 0.5)])
    g.update(_chain("k", ["CALIBRATE", "CAL_OK"], last_next="z0"))
    g.update(_chain("z", ["LINE_START", "CHANGEOVER_END"]))
    return g


def _maintenance() -> _Graph:
    g = _chain("m", ["MAINT_REQUEST", "LOCKOUT", "INSPECT"], last_next="rep?")
    g["rep?"] = ("INSPECT_DONE", [("p0", 0.4), ("t0", 0.6)])
    g.update(_chain("p", ["PART_REMOVE", "PART_INSTALL"], last_next="t0"))
    g.update(_chain("t", ["TEST_RUN", "UNLOCK", "MAINT_DONE"]))
    return g


WORKFLOWS: dict[str, tuple[float, _Graph]] = {
    "batch": (0.55, _batch()),
    "cip": (0.2, _cip()),
    "changeover": (0.15, _changeover()),
    "maintenance": (0.1, _maintenance()),
}
_STARTS = {"batch": "b0", "cip": "c0", "changeover": "o0", "maintenance": "m0"}
# probability per gap between two events
BACKGROUND: dict[str, float] = {
    "HEARTBEAT": 0.04, "OPERATOR_LOGIN": 0.008, "OPERATOR_LOGOUT": 0.008,
    "DOOR_OPEN": 0.006, "NETWORK_RETRY": 0.004,
}
RARE: dict[str, float] = {"TEMP_WARN": 0.0015, "PRESSURE_WARN": 0.001, "LOW_AIR_WARN": 0.0008}


@dataclass(frozen=True)
class EventSet:
    """One source's labelled event sequence."""

    source: str
    ts: tuple[float, ...]
    events: tuple[str, ...]
    labels: tuple[str, ...]  # "" for normal, else one of ANOMALY_TYPES
    sessions: tuple[str, ...] = ()  # workflow instance per event, "" for none; () = unknown

    def rows(self) -> list[tuple[float, str, str]]:
        return [(t, self.source, e) for t, e in zip(self.ts, self.events, strict=True)]

    def session_of(self, i: int) -> str:
        return self.sessions[i] if self.sessions else ""


def vocabulary() -> list[str]:
    """Every event a normal source can emit."""
    names = {ev for _, g in WORKFLOWS.values() for ev, _ in g.values()}
    return sorted(names | set(BACKGROUND) | set(RARE))


def _walk(g: _Graph, start: str, rng: random.Random) -> list[str]:
    out, node = [], start
    while node != "END":
        ev, nxt = g[node]
        out.append(ev)
        r, acc = rng.random(), 0.0
        for n, p in nxt:
            acc += p
            if r < acc:
                node = n
                break
        else:
            node = nxt[-1][0]
    return out


def accepts(workflow: str, events: Sequence[str]) -> bool:
    """Whether ``events`` is a complete valid path of ``workflow`` (NFA simulation)."""
    g = WORKFLOWS[workflow][1]
    states = {_STARTS[workflow]}
    for ev in events:
        nxt: set[str] = set()
        for s in states:
            if s == "END" or g[s][0] != ev:
                continue
            nxt.update(n for n, _ in g[s][1])
        if not nxt:
            return False
        states = nxt
    return "END" in states


def first_invalid(workflow: str, events: Sequence[str]) -> int | None:
    """Index of the first event that no valid path of ``workflow`` allows after the ones
    before it (a causal detector can know from there on), None when every prefix is valid.

    >>> first_invalid("maintenance", ["MAINT_REQUEST", "INSPECT", "LOCKOUT"])
    1
    """
    g = WORKFLOWS[workflow][1]
    states = {_STARTS[workflow]}
    for i, ev in enumerate(events):
        states = {n for s in states if s != "END" and g[s][0] == ev for n, _ in g[s][1]}
        if not states:
            return i
    return None


def _inject(kind: str, wf: str, steps: list[str], rng: random.Random,
            counter: list[int]) -> tuple[list[str], list[str]] | None:
    """(events, labels) of one anomalous instance, or None when no valid injection exists."""
    n = len(steps)
    if kind == "skipped_step":
        for i in rng.sample(range(1, n - 1), n - 2):
            cand = steps[:i] + steps[i + 1:]
            if not accepts(wf, cand):
                return cand, [""] * i + ["skipped_step"] + [""] * (n - 2 - i)
        return None
    if kind == "wrong_order":
        for i in rng.sample(range(1, n - 1), n - 2):
            if steps[i] == steps[i + 1]:
                continue
            cand = [*steps[:i], steps[i + 1], steps[i], *steps[i + 2:]]
            if not accepts(wf, cand):
                return cand, [""] * i + ["wrong_order"] * 2 + [""] * (n - 2 - i)
        return None
    i = rng.randrange(1, n)
    if kind == "unknown_event":
        counter[0] += 1
        code = f"ALM_{0x300 + counter[0]:04X}"
        return [*steps[:i], code, *steps[i:]], [""] * i + ["unknown_event"] + [""] * (n - i)
    if kind == "rare_burst":
        ev = rng.choice(sorted(RARE))
        k = rng.randint(5, 10)
        return (steps[:i] + [ev] * k + steps[i:],
                [""] * i + ["rare_burst"] * k + [""] * (n - i))
    raise ValueError(f"unknown anomaly type {kind!r}")


def generate_events(
    n_events: int,
    seed: int = 0,
    anomalies: Sequence[str] = (),
    rate: float = 0.15,
    source: str = "plc1",
    t0: float = 1_700_000_000.0,
    mean_gap_s: float = 2.0,
) -> EventSet:
    """``n_events`` events of one source; ``rate`` = share of workflow instances that carry
    one anomaly (of a type drawn uniformly from ``anomalies``)."""
    bad = [a for a in anomalies if a not in ANOMALY_TYPES]
    if bad:
        raise ValueError(f"unknown anomaly types {bad} (known: {ANOMALY_TYPES})")
    rng = random.Random(seed)
    names = list(WORKFLOWS)
    weights = [WORKFLOWS[w][0] for w in names]
    background = {**BACKGROUND, **RARE}
    events: list[str] = []
    labels: list[str] = []
    sessions: list[str] = []
    counter = [seed * 1000]
    instance = 0
    while len(events) < n_events:
        wf = rng.choices(names, weights)[0]
        instance += 1
        sid = f"{wf}-{seed}-{instance}"  # unique across runs, like a real batch number
        steps = _walk(WORKFLOWS[wf][1], _STARTS[wf], rng)
        labs = [""] * len(steps)
        if anomalies and rng.random() < rate:
            got = _inject(rng.choice(list(anomalies)), wf, steps, rng, counter)
            if got is not None:
                steps, labs = got
        for ev, lab in zip(steps, labs, strict=True):
            events.append(ev)
            labels.append(lab)
            sessions.append("" if lab == "rare_burst" else sid)  # a warning has no order id
            # background noise between events, never inside an injected burst
            if lab != "rare_burst":
                for bg, p in background.items():
                    if rng.random() < p:
                        events.append(bg)
                        labels.append("")
                        sessions.append("")
    events, labels, sessions = events[:n_events], labels[:n_events], sessions[:n_events]
    ts, t = [], t0
    for _ in events:
        t += rng.expovariate(1.0 / mean_gap_s)
        ts.append(round(t, 3))
    return EventSet(source, tuple(ts), tuple(events), tuple(labels), tuple(sessions))


def write_events_csv(path: str, sets: Sequence[EventSet], sessions: bool = False) -> None:
    """``timestamp,source,event`` rows, merged in time order; with ``sessions`` a fourth
    column ``session`` (empty for events of no workflow instance)."""
    import csv

    rows = sorted(((t, s.source, e, s.session_of(i))
                   for s in sets for i, (t, e) in enumerate(zip(s.ts, s.events, strict=True))),
                  key=lambda r: r[0])
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["timestamp", "source", "event", *(["session"] if sessions else [])])
        for t, src, ev, sid in rows:
            w.writerow([f"{t:.3f}", src, ev, *([sid] if sessions else [])])
