"""Shared builders for the agent tests: configs, real PCA ONNX models, streams, AUC.

Everything here builds *real* parts (configs, detectors, onnxruntime sessions); nothing
is mocked. ONNX model bytes are cached per process because fitting one takes ~1 s.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Sequence

import numpy as np
import onnx
from sklearn.metrics import roc_auc_score

from agent.config import (
    AgentConfig,
    AlertConfig,
    ChannelConfig,
    DetectorsConfig,
    EscalationConfig,
    OnnxConfig,
    RiverConfig,
    RiverModelConfig,
    StreamConfig,
    ZScoreConfig,
)
from agent.model_meta import ModelMeta
from agent.onnx_scorer import OnnxModel
from agent.synthetic import iot, multisensor
from agent.types import Point
from export.onnx_meta import get_meta, set_meta
from export.pca_ae import build_pca_model

IOT_CHANNELS = ("temperature", "humidity", "pressure")
MULTI_CHANNELS = ("temperature", "vibration", "pressure", "noise")

# Small, fast River settings (LODA with 100 cuts costs ~2 ms per point).
RIVER_KW = {
    "half_space_trees": {"n_trees": 10, "height": 6, "window_size": 100},
    "loda": {"n_random_cuts": 20},
}


def river_config(kind: str = "half_space_trees", warmup: int = 100, **kw: object) -> RiverConfig:
    model = RiverModelConfig(kind=kind, **RIVER_KW[kind])  # type: ignore[arg-type]
    return RiverConfig(models=(model,), warmup=warmup, calibration_window=100, **kw)  # type: ignore[arg-type]


def agent_config(
    channels: Sequence[str | ChannelConfig] = IOT_CHANNELS,
    *,
    stream_id: str = "s",
    zscore: ZScoreConfig | None = None,
    river: RiverConfig | None = None,
    escalation: EscalationConfig | None = None,
    alerts: AlertConfig | None = None,
    onnx_cfg: OnnxConfig | None = None,
) -> AgentConfig:
    chans = tuple(c if isinstance(c, ChannelConfig) else ChannelConfig(c) for c in channels)
    return AgentConfig(
        streams=(StreamConfig(stream_id, chans),),
        detectors=DetectorsConfig(
            zscore=zscore or ZScoreConfig(window=50, min_points=10),
            river=river or river_config(),
            onnx=onnx_cfg or OnnxConfig(),
        ),
        escalation=escalation or EscalationConfig(),
        alerts=alerts or AlertConfig(),
    )


# --------------------------------------------------------------------------- ONNX models


@functools.cache
def pca_blob(kind: str = "iot", window: int = 8, seed: int = 100, n_components: int = 4) -> bytes:
    """A real PCA autoencoder (ONNX bytes) trained on the normal rows of a synthetic stream."""
    gen = iot if kind == "iot" else multisensor
    s = gen(n=1500, seed=seed)
    rows = s.values[:1200]
    # Replace labelled anomalies by the previous value so the training data is normal.
    rows = rows.copy()
    for i in np.flatnonzero(s.labels[:1200]):
        rows[i] = rows[i - 1]
    return build_pca_model(rows, s.channels, window=window, n_components=n_components)


def pca_model(kind: str = "iot", window: int = 8, seed: int = 100, **kw: object) -> OnnxModel:
    kw.setdefault("providers", ("cpu",))
    return OnnxModel(pca_blob(kind, window, seed), **kw)  # type: ignore[arg-type]


def with_meta(blob: bytes, **changes: object) -> bytes:
    """The same graph with some metadata fields replaced (for negative tests)."""
    model = onnx.load_from_string(blob)
    meta = dataclasses.replace(get_meta(model), **changes)
    return set_meta(model, meta).SerializeToString()


def meta_of(blob: bytes) -> ModelMeta:
    return get_meta(onnx.load_from_string(blob))


def without_meta(blob: bytes) -> bytes:
    model = onnx.load_from_string(blob)
    del model.metadata_props[:]
    return model.SerializeToString()


# --------------------------------------------------------------------------- streams


def noisy(n: int, seed: int = 0, level: float = 10.0, sd: float = 1.0, channels: int = 1
          ) -> np.ndarray:
    return np.random.default_rng(seed).normal(level, sd, (n, channels))


def score_learn(det: object, rows: Iterable[np.ndarray]) -> list[float]:
    """Score-then-learn every row with a detector that has ``score_one``/``learn_one``."""
    out = []
    for row in rows:
        x = [float(v) for v in row]
        out.append(det.score_one(x))  # type: ignore[attr-defined]
        det.learn_one(x)  # type: ignore[attr-defined]
    return out


def numbers(obj: object) -> list[float]:
    """Every float/int inside a nested state (dicts, lists, tuples, numpy arrays)."""
    if isinstance(obj, dict):
        return [v for k in obj for v in numbers(obj[k])]
    if isinstance(obj, list | tuple):
        return [v for item in obj for v in numbers(item)]
    if isinstance(obj, np.ndarray):
        return [float(v) for v in obj.ravel()] if obj.dtype.kind in "fiu" else []
    if isinstance(obj, bool):
        return []
    if isinstance(obj, int | float | np.floating | np.integer):
        return [float(obj)]
    return []


def shape_of(obj: object) -> object:
    """The structure of a nested state: keys, container lengths, array shapes."""
    if isinstance(obj, dict):
        return {k: shape_of(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return (type(obj).__name__, len(obj), [shape_of(v) for v in obj])
    if isinstance(obj, np.ndarray):
        return ("ndarray", obj.shape, obj.dtype.str)
    return type(obj).__name__


def auc(labels: np.ndarray, scores: Sequence[float]) -> float:
    return float(roc_auc_score(np.asarray(labels, dtype=bool), np.asarray(scores, dtype=float)))


def points(rows: np.ndarray, channels: Sequence[str], stream: str = "s", t0: float = 1000.0
           ) -> list[Point]:
    return [
        Point(t0 + i, stream, dict(zip(channels, map(float, row), strict=True)))
        for i, row in enumerate(rows)
    ]
