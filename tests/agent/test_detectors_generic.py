"""The generic detector check (STYLE.md section 9, like River's ``checks/anomaly.py``).

Every detector -- the statistical gate in each method, each River kind, the ONNX PCA
autoencoder scoring windows, and the whole cascade -- scores a labelled synthetic stream
score-then-learn, must beat chance (by a margin where it clearly should), and must survive
a save + reload (pickle round trip) with an identical continuation.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

from agent.cascade import StreamCascade
from agent.config import OnnxConfig, RiverConfig, ZScoreConfig
from agent.detectors import RiverStage, StatGate
from agent.synthetic import Synthetic, iot, multisensor
from tests.agent.helpers import agent_config, auc, pca_model, river_config

SKIP = 150  # warm-up: no labelled anomalies there (generator ``warmup``)
N = 1200


@dataclass
class Detector:
    """A uniform face over every detector: step = score-then-learn, save/load = bytes."""

    make: Callable[[Synthetic], object]
    step: Callable[[object, list[float]], float]
    save: Callable[[object], bytes]
    load: Callable[[Synthetic, bytes], object]


def _plain(factory: Callable[[Synthetic], object]) -> Detector:
    """StatGate / RiverStage: score_one + learn_one, state via state_dict / load_state."""

    def step(det, x):
        s = det.score_one(x)
        det.learn_one(x)
        return s

    def load(stream, blob):
        det = factory(stream)
        det.load_state(pickle.loads(blob))
        return det

    return Detector(factory, step, lambda d: pickle.dumps(d.state_dict()), load)


def _cascade(zscore: bool, river: bool) -> Detector:
    """A StreamCascade (the ONNX stage gets a real PCA model trained on normal data)."""

    def make(stream: Synthetic) -> StreamCascade:
        cfg = agent_config(
            stream.channels,
            zscore=ZScoreConfig(window=50, min_points=10, enabled=zscore),
            river=river_config() if river else RiverConfig(enabled=False),
            onnx_cfg=OnnxConfig(),
        )
        kind = "iot" if stream.channels[1] == "humidity" else "multi"
        return StreamCascade(cfg.streams[0], cfg, pca_model(kind))

    def load(stream, blob):
        cas = make(stream)
        cas.load_state(pickle.loads(blob))
        return cas

    return Detector(make, lambda c, x: c.process(x, 0.5).score,
                    lambda c: pickle.dumps(c.state_dict()), load)


def _gate(method: str) -> Detector:
    return _plain(lambda s: StatGate(ZScoreConfig(method=method, window=100), len(s.channels)))


def _river(kind: str) -> Detector:
    return _plain(lambda s: RiverStage(river_config(kind, warmup=100), s.channels))


DETECTORS = {
    "zscore-rolling": _gate("rolling"),
    "zscore-robust": _gate("robust"),
    "zscore-both": _gate("both"),
    "river-hst": _river("half_space_trees"),
    "river-loda": _river("loda"),
    "onnx-pca": _cascade(zscore=False, river=False),
    "cascade": _cascade(zscore=True, river=True),
}

# (detector, stream, minimum AUC): > 0.5 everywhere, a margin where the detector is clearly
# suited (point spikes for z-score, trees and projections; windows for the autoencoder).
CASES = [
    ("zscore-rolling", "iot", 0.85),
    ("zscore-robust", "iot", 0.8),
    ("zscore-both", "iot", 0.85),
    ("zscore-both", "multisensor", 0.75),
    ("river-hst", "iot", 0.7),
    ("river-hst", "multisensor", 0.5),
    ("river-loda", "iot", 0.65),
    ("river-loda", "multisensor", 0.55),
    ("onnx-pca", "iot", 0.65),
    ("onnx-pca", "multisensor", 0.6),
    ("cascade", "iot", 0.65),
    ("cascade", "multisensor", 0.5),
]


def _case_id(case) -> str:
    values = case.values if hasattr(case, "values") else case
    return f"{values[0]}-{values[1]}"


def _stream(name: str) -> Synthetic:
    gen = iot if name == "iot" else multisensor
    return gen(n=N, seed=1, warmup=SKIP)


@pytest.mark.parametrize(("name", "stream_name", "min_auc"), CASES,
                         ids=[_case_id(c) for c in CASES])
def test_detector_beats_chance_and_survives_save_and_reload(
    name: str, stream_name: str, min_auc: float
) -> None:
    det = DETECTORS[name]
    stream = _stream(stream_name)
    rows = stream.values.tolist()
    half = len(rows) // 2

    a = det.make(stream)
    first = [det.step(a, x) for x in rows[:half]]
    b = det.load(stream, det.save(a))  # a checkpoint taken mid-stream
    rest_a = [det.step(a, x) for x in rows[half:]]
    rest_b = [det.step(b, x) for x in rows[half:]]
    assert rest_a == rest_b, "continuation after save + reload differs"

    scores = np.asarray(first + rest_a)
    assert np.isfinite(scores).all()
    assert ((scores >= 0) & (scores <= 1)).all()
    got = auc(stream.labels[SKIP:], scores[SKIP:])
    assert got > 0.5
    assert got > min_auc, f"{name} on {stream_name}: AUC {got:.3f}"
