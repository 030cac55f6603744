"""Workflow sessions: the generator's session ids and causal labels, the cascade's
per-session histories (bounded, saved, restored)."""

from __future__ import annotations

import copy
import csv
from collections import defaultdict
from pathlib import Path

import pytest

from agent.config import config_from_dict
from agent.errors import ConfigError
from agent.events.cascade import SESSION_HISTORY, EventEngine
from agent.events.config import EventsConfig, EventSourceConfig, SequenceConfig
from agent.events.types import EventPoint
from agent.synthetic_events import (
    BACKGROUND,
    RARE,
    SEQUENCE_ANOMALIES,
    WORKFLOWS,
    first_invalid,
    generate_events,
)


def test_sessions_mark_workflow_steps_only() -> None:
    s = generate_events(5000, seed=4, anomalies=("rare_burst",))
    assert len(s.sessions) == len(s.events)
    context_free = set(BACKGROUND) | set(RARE)
    for ev, sid, lab in zip(s.events, s.sessions, s.labels, strict=True):
        assert (sid == "") == (ev in context_free), (ev, sid)
        assert not (lab == "rare_burst" and sid)
    assert {sid.split("-")[0] for sid in s.sessions if sid} == set(WORKFLOWS)


@pytest.mark.parametrize("kind", SEQUENCE_ANOMALIES)
def test_first_label_is_where_the_instance_turns_invalid(kind: str) -> None:
    """Labels match what a causal detector can know: the first labelled step of an instance
    is the first step no valid path allows after the ones before it; normal instances
    never turn invalid."""
    s = generate_events(8000, seed=5, anomalies=(kind,))
    inst: dict[str, list[int]] = defaultdict(list)
    for i, sid in enumerate(s.sessions):
        if sid:
            inst[sid].append(i)
    complete = list(inst.items())[1:-1]  # the last one may be cut off
    n_bad = 0
    for sid, idx in complete:
        wf = sid.split("-")[0]
        labs = [j for j, i in enumerate(idx) if s.labels[i]]
        got = first_invalid(wf, [s.events[i] for i in idx])
        if labs:
            n_bad += 1
            assert got == labs[0], (sid, [s.events[i] for i in idx], labs)
            assert {s.labels[idx[j]] for j in labs} == {kind}
        else:
            assert got is None, sid
    assert n_bad > 20


def test_session_histories_are_bounded_and_restored() -> None:
    cfg = EventsConfig(sources=(EventSourceConfig("plc1"),),
                       sequence=SequenceConfig(max_sessions=3))
    eng = EventEngine(cfg)
    t = 0.0
    for n in range(6):
        for step in range(SESSION_HISTORY + 5):
            t += 1.0
            eng.process(EventPoint(t, "plc1", f"S{step % 7}", {"session": f"job-{n}"}))
            eng.process(EventPoint(t, "plc1", "HEARTBEAT"))
    state = eng.cascade("plc1").state_dict()
    assert list(state["sessions"]) == ["job-3", "job-4", "job-5"]  # least recent evicted
    assert all(len(h) == SESSION_HISTORY for h in state["sessions"].values())
    assert set(state["history"]) == {"HEARTBEAT"}  # session-less events only
    other = EventEngine(cfg)
    other.load_state(copy.deepcopy(eng.state_dict()))
    assert other.cascade("plc1").state_dict()["sessions"] == state["sessions"]


def test_session_config_keys() -> None:
    assert SequenceConfig().session_key == "session" and SequenceConfig().min_prob is None
    with pytest.raises(ConfigError, match=r"events\.sequence\.max_sessions"):
        config_from_dict({"events": {"sequence": {"max_sessions": 0}}})
    with pytest.raises(ConfigError, match=r"events\.sequence\.min_prob"):
        config_from_dict({"events": {"sequence": {"min_prob": 1.5}}})
    off = EventsConfig(sources=(EventSourceConfig("plc1"),),
                       sequence=SequenceConfig(session_key=""))
    eng = EventEngine(off)
    eng.process(EventPoint(1.0, "plc1", "A", {"session": "job-1"}))
    st = eng.cascade("plc1").state_dict()
    assert st["sessions"] == {} and st["history"] == ["A"]  # keying off: one history


def test_first_invalid() -> None:
    steps = ["MAINT_REQUEST", "LOCKOUT", "INSPECT", "INSPECT_DONE", "TEST_RUN", "UNLOCK",
             "MAINT_DONE"]
    assert first_invalid("maintenance", steps) is None
    assert first_invalid("maintenance", steps[:2] + steps[3:]) == 2  # skipped INSPECT
    assert first_invalid("maintenance", [*steps[:4], steps[5], steps[4], *steps[6:]]) == 4


def test_replay_reads_the_session_column(tmp_path: Path) -> None:
    from agent.cli import main
    from agent.synthetic_events import write_events_csv

    data = tmp_path / "ev.csv"
    write_events_csv(str(data), [generate_events(600, seed=6)], sessions=True)
    with data.open("a") as fh:
        fh.write("1900000000.0,plc1,A,s1,extra\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("events:\n  sources:\n    - id: plc1\n")
    out = tmp_path / "scores.csv"
    assert main(["replay", "--kind", "events", "--config", str(cfg), "--input", str(data),
                 "--scores", str(out)]) == 0
    with out.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 601
    assert [r["stage"] for r in rows].count("0") < 300  # session rows are used ...
    assert rows[-1]["stage"] == "0" and rows[-1]["event"] == ""  # ... a 5-field row is not
