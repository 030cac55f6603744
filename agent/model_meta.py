"""What an ONNX model file carries for the agent: one definition, used by `export` and `agent`.

The metadata travels inside the ONNX file as the ``metadata_props`` entry
:data:`META_KEY`, a JSON object described by :class:`ModelMeta`. The agent needs
nothing else to feed a window to the model and to turn its output into a score.

Input contract
    One float32 input named ``input_name`` of shape ``(batch, window, n_features)``,
    dynamic batch, features in ``features`` order. If ``scaling_in_graph`` is false the
    agent applies ``(x - scaler.center) / scaler.scale`` before feeding the model.

Output contract (``output``)
    ``reconstruction``: same shape as the input, in scaled units. The agent computes the
    per-channel error ``mean_t (x - x_hat)^2`` and the window error as their mean.
    ``channel_error``: ``(batch, n_features)`` per-channel errors, already reduced.
    ``score``: ``(batch,)`` raw window error.
    ``error``: a fused model (``export/fuse.py``) with two outputs, ``(batch,)`` raw
    window error and ``(batch, n_features)`` per-channel errors, both already reduced
    with ``reduction``/``tail``/``channel_scale`` inside the graph (usually together
    with ``scaling_in_graph: true``): the agent only feeds the window and reads them.

Reduction (``reduction``)
    ``mean`` (default): raw error = mean over window and channels of the squared error.
    ``tail_max``: per channel, the mean squared error of the last ``tail`` time steps
    divided by ``channel_scale[c]`` (that channel's typical error on normal data); raw
    error = the largest of those. A point-level anomaly on one channel is then not
    diluted by the window length or by the other channels. :func:`reduce_errors` is the
    one implementation, used by the agent and by ``export``.

Calibration
    ``unit = raw / (raw + threshold)``, so ``threshold`` maps to 0.5, twice the
    threshold to 0.667 and so on; every model, whatever its error scale, gives the
    alert policy the same [0, 1] score (see docs/fusion.md).

>>> meta = ModelMeta(name="demo", version="1.0.0", features=("a", "b"), window=4,
...                  scaler=Scaler(center=(0.0, 0.0), scale=(1.0, 1.0)), threshold=0.2)
>>> ModelMeta.from_json(meta.to_json()) == meta
True
>>> round(meta.calibrate(0.2), 3)
0.5
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from agent.errors import ModelMetadataError

META_KEY = "edge_agent.meta"
SCHEMA_VERSION = 1
OUTPUT_KINDS = ("reconstruction", "channel_error", "score", "probabilities", "error")
NEXT_EVENT = "next_event"  # kind of the event-sequence models (agent/events/sequence.py)
REDUCTIONS = ("mean", "tail_max")
_SEMVER = re.compile(r"^\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True)
class Scaler:
    """Per-feature affine scaling ``(x - center) / scale`` (robust: median / IQR)."""

    center: tuple[float, ...]
    scale: tuple[float, ...]


@dataclass(frozen=True)
class GoldenVector:
    """A raw (unscaled) input window and the raw error the exporter computed for it."""

    window: tuple[tuple[float, ...], ...]
    raw_score: float


@dataclass(frozen=True)
class ModelMeta:
    name: str
    version: str
    features: tuple[str, ...]
    window: int
    scaler: Scaler
    threshold: float
    kind: str = "autoencoder"
    architecture: str = "unknown"
    stride: int = 1
    scaling_in_graph: bool = False
    input_name: str = "input"
    output: str = "reconstruction"
    thresholds: dict[str, float] = field(default_factory=dict)
    training_data_sha256: str = ""
    created_at: str = ""
    opset: int = 17
    frameworks: dict[str, str] = field(default_factory=dict)
    golden: tuple[GoldenVector, ...] = ()
    reduction: str = "mean"
    tail: int = 1
    channel_scale: tuple[float, ...] = ()
    vocab: tuple[str, ...] = ()  # next_event: event name of each id (0 <pad>, 1 <unknown>)
    top_k: int = 0  # next_event: an event outside the model's top_k is anomalous
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        def bad(key: str, reason: str) -> ModelMetadataError:
            return ModelMetadataError(f"model metadata {key}: {reason}")

        if self.schema_version != SCHEMA_VERSION:
            raise bad("schema_version", f"expected {SCHEMA_VERSION}, got {self.schema_version}")
        if not _NAME.match(self.name):
            raise bad("name", f"must match {_NAME.pattern}, got {self.name!r}")
        if not _SEMVER.match(self.version):
            raise bad("version", f"must be a semantic version like 1.2.3, got {self.version!r}")
        if not self.features or len(set(self.features)) != len(self.features):
            raise bad("features", "must be a non-empty list of distinct names")
        if not 1 <= self.window <= 10_000:
            raise bad("window", f"must be in 1..10000, got {self.window}")
        if self.stride < 1:
            raise bad("stride", f"must be >= 1, got {self.stride}")
        n = len(self.features)
        if len(self.scaler.center) != n or len(self.scaler.scale) != n:
            raise bad("scaler", f"center and scale need {n} values (one per feature)")
        if any(not math.isfinite(v) for v in self.scaler.center):
            raise bad("scaler.center", "values must be finite")
        if any(not (math.isfinite(v) and v > 0) for v in self.scaler.scale):
            raise bad("scaler.scale", "values must be finite and > 0")
        if self.output not in OUTPUT_KINDS:
            raise bad("output", f"must be one of {OUTPUT_KINDS}, got {self.output!r}")
        if not (math.isfinite(self.threshold) and self.threshold > 0):
            raise bad("threshold", f"must be finite and > 0, got {self.threshold}")
        if self.reduction not in REDUCTIONS:
            raise bad("reduction", f"must be one of {REDUCTIONS}, got {self.reduction!r}")
        if not 1 <= self.tail <= self.window:
            raise bad("tail", f"must be in 1..window ({self.window}), got {self.tail}")
        if self.channel_scale and (
            len(self.channel_scale) != n
            or any(not (math.isfinite(v) and v > 0) for v in self.channel_scale)
        ):
            raise bad("channel_scale", f"needs {n} finite values > 0 (or none)")
        if self.kind == NEXT_EVENT or self.vocab or self.top_k:
            _check_next_event(self, bad)
        for g in self.golden:
            if len(g.window) != self.window or any(len(row) != n for row in g.window):
                raise bad("golden", f"each golden window must be {self.window}x{n}")

    @property
    def per_channel(self) -> bool:
        return self.output in ("reconstruction", "channel_error", "error")

    def calibrate(self, raw: float) -> float:
        """Map a raw window error to [0, 1) with the threshold at 0.5."""
        if not math.isfinite(raw):
            return 1.0
        raw = max(raw, 0.0)
        return raw / (raw + self.threshold)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> ModelMeta:
        try:
            raw = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ModelMetadataError(f"model metadata is not valid JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise ModelMetadataError("model metadata must be a JSON object")
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelMeta:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ModelMetadataError(f"model metadata has unknown keys {unknown}")
        try:
            data = dict(raw)
            data["features"] = tuple(str(f) for f in data["features"])
            sc = data["scaler"]
            data["scaler"] = Scaler(
                center=tuple(float(v) for v in sc["center"]),
                scale=tuple(float(v) for v in sc["scale"]),
            )
            data["golden"] = tuple(
                GoldenVector(
                    window=tuple(tuple(float(v) for v in row) for row in g["window"]),
                    raw_score=float(g["raw_score"]),
                )
                for g in data.get("golden", ())
            )
            data["thresholds"] = {str(k): float(v) for k, v in data.get("thresholds", {}).items()}
            data["frameworks"] = {str(k): str(v) for k, v in data.get("frameworks", {}).items()}
            for key in ("window", "stride", "opset", "schema_version"):
                if key in data:
                    data[key] = int(data[key])
            data["threshold"] = float(data["threshold"])
            data["channel_scale"] = tuple(float(v) for v in data.get("channel_scale", ()))
            if "tail" in data:
                data["tail"] = int(data["tail"])
            data["vocab"] = tuple(str(v) for v in data.get("vocab", ()))
            data["top_k"] = int(data.get("top_k", 0))
            return cls(**data)
        except ModelMetadataError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelMetadataError(f"model metadata is incomplete or mistyped: {exc!r}") from exc


def _check_next_event(meta: ModelMeta, bad: Any) -> None:
    """A next-event model: input ``(batch, window)`` int64 event ids (``window`` = history),
    output ``(batch, len(vocab))`` probabilities; see docs/model-format.md."""
    if meta.kind != NEXT_EVENT:
        raise bad("kind", f"vocab/top_k are only for kind {NEXT_EVENT!r}, got {meta.kind!r}")
    if meta.vocab[:2] != ("<pad>", "<unknown>") or len(set(meta.vocab)) != len(meta.vocab):
        raise bad("vocab", "must start with '<pad>', '<unknown>' and hold distinct names")
    if not 3 <= meta.top_k < len(meta.vocab):
        raise bad("top_k", f"must be in 3..len(vocab)-1 ({len(meta.vocab) - 1}), got {meta.top_k}")
    if meta.output != "probabilities":
        raise bad("output", f"a next_event model outputs 'probabilities', got {meta.output!r}")
    if meta.features != ("event",):
        raise bad("features", "a next_event model has the single feature 'event'")


def reduce_errors(meta: ModelMeta, sq_err: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw window errors ``(B,)`` and per-channel errors ``(B, C)`` from squared errors.

    ``sq_err`` is ``(B, W, C)``: the squared difference between the scaled input and the
    reconstruction. See "Reduction" above.
    """
    if meta.reduction == "tail_max":
        per = sq_err[:, -meta.tail :, :].mean(axis=1)
        if meta.channel_scale:
            per = per / np.asarray(meta.channel_scale)
        return per.max(axis=1), per
    per = sq_err.mean(axis=1)
    return per.mean(axis=1), per
