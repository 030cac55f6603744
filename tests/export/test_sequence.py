"""``edge-export train`` with ``architecture: next_event``: a tiny run, loaded by the agent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.errors import ModelMetadataError
from agent.events.cascade import EventEngine
from agent.events.config import EventsConfig, EventSourceConfig, SequenceConfig
from agent.events.sequence import NextEventModel
from agent.events.types import EventPoint
from agent.model_meta import ModelMeta, Scaler
from agent.synthetic_events import generate_events, write_events_csv
from export.config import config_from_dict
from export.train import train_run


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("next_event")
    write_events_csv(str(d / "train.csv"), [generate_events(4000, seed=7)])
    cfg = config_from_dict({
        "name": "ne-test", "architecture": "next_event", "data": {"window": 10},
        "training": {"epochs": 3, "batch_size": 128, "learning_rate": 0.01, "threads": 1},
        "model": {"embedding": 8, "hidden": 16, "top_k": 5},
    })
    res = train_run(cfg, d / "train.csv", d / "run", progress=False)
    assert res.report["max_abs_diff"] < 1e-4
    return res.model_path


def test_model_file_and_agent_loader(run: Path) -> None:
    model = NextEventModel.from_path(run)
    meta = model.meta
    assert meta.kind == "next_event" and meta.output == "probabilities"
    assert meta.vocab[:2] == ("<pad>", "<unknown>") and meta.top_k == 5
    assert len(meta.golden) == 4 and model.history == 10
    probs = model.predict(np.zeros((3, 10), dtype=np.int64))
    assert probs.shape == (3, len(meta.vocab))
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    s = model.score_one([0] * 10, model.vocab.id_of("BATCH_START"))
    assert s.rank >= 0 and len(s.top_ids) == 5 and (s.raw >= 1.0) == s.flagged
    assert model.score_one([0] * 10, 1).flagged  # <unknown> is never expected


def test_cascade_with_model_flags_skipped_steps(run: Path) -> None:
    model = NextEventModel.from_path(run)
    cfg = EventsConfig(sources=(EventSourceConfig("plc1"),),
                       sequence=SequenceConfig(escalate="always", max_lift=0.0))
    eng = EventEngine(cfg, model=model)
    warm = generate_events(3000, seed=8)
    for t, e in zip(warm.ts, warm.events, strict=True):
        eng.learn_only(EventPoint(t - 1e6, "plc1", e))
    test = generate_events(3000, seed=9, anomalies=("skipped_step",))
    ds = [eng.process(EventPoint(t, "plc1", e)) for t, e in zip(test.ts, test.events,
                                                                 strict=True)]
    hit = [d.flagged for d, lab in zip(ds, test.labels, strict=True) if lab]
    assert hit and sum(hit) / len(hit) > 0.15  # a 3-epoch toy model, far from the benchmark
    assert all(d.expected_top_k for d in ds[1:] if d.stage == 3)


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
