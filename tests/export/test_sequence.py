"""``edge-export train`` with ``architecture: next_event``: a small run on session-keyed
workflows, loaded by the agent; it must rank held-out normal steps high and find skipped
and swapped steps."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from agent.errors import ModelMetadataError
from agent.events.cascade import EventEngine
from agent.events.config import EventsConfig, EventSourceConfig, SequenceConfig
from agent.events.sequence import NextEventModel
from agent.events.types import EventPoint
from agent.model_meta import ModelMeta, Scaler
from agent.synthetic_events import EventSet, generate_events, write_events_csv
from export.config import config_from_dict
from export.errors import DataError
from export.sequence import load_event_sequences, load_event_sessions
from export.train import train_run


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("next_event")
    write_events_csv(str(d / "train.csv"), [generate_events(8000, seed=7)], sessions=True)
    cfg = config_from_dict({
        "name": "ne-test", "architecture": "next_event", "data": {"window": 10},
        "training": {"epochs": 6, "batch_size": 64, "learning_rate": 0.01, "threads": 1},
        "model": {"embedding": 16, "hidden": 32, "top_k": 5, "min_prob": 0.05},
    })
    res = train_run(cfg, d / "train.csv", d / "run", progress=False)
    assert res.report["max_abs_diff"] < 1e-4
    assert res.report["sessions"] > 100  # one sequence per workflow instance
    return res.model_path


def _sessions(s: EventSet) -> dict[str, list[int]]:
    out: dict[str, list[int]] = defaultdict(list)
    for i, sid in enumerate(s.sessions):
        if sid:
            out[sid].append(i)
    return out


def _scores(model: NextEventModel, s: EventSet) -> dict[int, bool]:
    """Event index -> flagged, every workflow step scored on its own session's history."""
    flagged = {}
    for idx in _sessions(s).values():
        ids = model.vocab.ids(s.events[i] for i in idx)
        for j, i in enumerate(idx):
            hist = ([0] * model.history + ids[:j])[-model.history:]
            flagged[i] = model.score_one(hist, ids[j]).flagged
    return flagged


def test_model_file_and_agent_loader(run: Path) -> None:
    model = NextEventModel.from_path(run)
    meta = model.meta
    assert meta.kind == "next_event" and meta.output == "probabilities"
    assert meta.vocab[:2] == ("<pad>", "<unknown>") and meta.top_k == 5
    assert meta.thresholds["min_prob"] == 0.05 and model.min_prob == 0.05
    assert NextEventModel.from_path(run, min_prob=0.0).min_prob == 0.0
    assert len(meta.golden) == 4 and model.history == 10
    probs = model.predict(np.zeros((3, 10), dtype=np.int64))
    assert probs.shape == (3, len(meta.vocab))
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    s = model.score_one([0] * 10, model.vocab.id_of("BATCH_START"))
    assert s.rank >= 0 and len(s.top_ids) == 5 and not s.flagged  # a session's first step
    assert model.score_one([0] * 10, model.vocab.id_of("DRAIN_END")).flagged  # never first
    assert model.score_one([0] * 10, 1).flagged  # <unknown> is never expected


def test_heldout_steps_are_expected_and_swapped_steps_are_not(run: Path) -> None:
    model = NextEventModel.from_path(run)
    normal = generate_events(3000, seed=11)
    flags = _scores(model, normal)
    assert len(flags) > 2000
    assert sum(flags.values()) / len(flags) < 0.02  # held-out valid steps: top-k, >= floor
    for kind in ("wrong_order", "skipped_step"):
        bad = generate_events(6000, seed=12, anomalies=(kind,))
        flags = _scores(model, bad)
        first = [min(i for i in idx if bad.labels[i]) for idx in _sessions(bad).values()
                 if any(bad.labels[i] for i in idx)]
        assert len(first) > 20
        hit = sum(flags[i] for i in first) / len(first)
        assert hit > 0.9, (kind, hit)  # the first out-of-order / skipped-to step


def test_cascade_keys_history_by_session(run: Path) -> None:
    """Heartbeats and log-ins between two steps carry no session: with the session key the
    skipped-to step is caught at the default gate; the rest of the stream stays quiet."""
    model = NextEventModel.from_path(run)
    cfg = EventsConfig(sources=(EventSourceConfig("plc1"),), sequence=SequenceConfig())
    eng = EventEngine(cfg, model=model)

    def point(s: EventSet, i: int, dt: float = 0.0) -> EventPoint:
        sid = s.sessions[i]
        return EventPoint(s.ts[i] + dt, "plc1", s.events[i], {"session": sid} if sid else {})

    warm = generate_events(3000, seed=8)
    for i in range(len(warm.events)):
        eng.learn_only(point(warm, i, -1e6))
    test = generate_events(4000, seed=9, anomalies=("skipped_step",))
    ds = [eng.process(point(test, i)) for i in range(len(test.events))]
    hit = [d.flagged for d, lab in zip(ds, test.labels, strict=True) if lab]
    fp = [d.flagged for d, lab in zip(ds, test.labels, strict=True) if not lab]
    assert len(hit) > 20 and sum(hit) / len(hit) > 0.9
    assert sum(fp) / len(fp) < 0.01
    assert all(d.expected_top_k for d in ds if d.stage == 3)
    assert 0 < eng.stats()["escalation_rate"] < 0.5  # the gate keeps the model off most


def test_session_csv_loading(tmp_path: Path) -> None:
    s = generate_events(300, seed=5)
    write_events_csv(str(tmp_path / "a.csv"), [s], sessions=True)
    seqs, sha = load_event_sessions(tmp_path / "a.csv")
    assert [e for _, e in seqs["plc1"]] == list(s.events) and len(sha) == 64
    assert [sid for sid, _ in seqs["plc1"]] == list(s.sessions)
    write_events_csv(str(tmp_path / "b.csv"), [s])  # three columns: no sessions
    plain, _ = load_event_sequences(tmp_path / "b.csv")
    assert plain["plc1"] == list(s.events)
    assert {sid for sid, _ in load_event_sessions(tmp_path / "b.csv")[0]["plc1"]} == {""}
    (tmp_path / "c.csv").write_text("1.0,plc1,A,s1,extra\n")
    with pytest.raises(DataError, match="line 1"):
        load_event_sessions(tmp_path / "c.csv")


def test_next_event_metadata_is_validated() -> None:
    base = dict(name="m", version="1.0.0", features=("event",), window=3,
                scaler=Scaler((0.0,), (1.0,)), threshold=1.0, kind="next_event",
                output="probabilities", vocab=("<pad>", "<unknown>", "A", "B", "C"), top_k=3)
    ModelMeta(**base)  # type: ignore[arg-type]
    for change, match in (({"top_k": 2}, "top_k"), ({"vocab": ("A", "B", "C", "D")}, "vocab"),
                          ({"output": "score"}, "output"), ({"kind": "autoencoder"}, "kind")):
        with pytest.raises(ModelMetadataError, match=match):
            ModelMeta(**(base | change))  # type: ignore[arg-type]
    m = ModelMeta(**base)  # type: ignore[arg-type]
    assert ModelMeta.from_json(m.to_json()) == m
