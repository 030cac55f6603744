"""Typed training configuration loaded from ``configs/train/*.yaml``.

One frozen dataclass per section; the ``model:`` section's class depends on
``architecture``. Unknown keys, wrong types and bad values raise
:class:`~export.errors.TrainConfigError` naming the file and the dotted key, e.g.
``configs/train/dense.yaml: training.epochs: must be >= 1, got 0``.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from export.errors import TrainConfigError

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # as agent.model_meta
_SEMVER = re.compile(r"^\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$")
ARCHITECTURES = ("dense", "conv", "lstm", "transformer", "vae", "pca", "ensemble", "next_event")
TORCH_ARCHITECTURES = ("dense", "conv", "lstm", "transformer", "vae")


def _need(ok: bool, key: str, reason: str) -> None:
    if not ok:
        raise TrainConfigError(key, reason)


@dataclass(frozen=True)
class DataConfig:
    window: int = 50  # rows per window
    stride: int = 1  # step between training windows
    val_fraction: float = 0.2  # last part of every segment held out (time-ordered)

    def __post_init__(self) -> None:
        _need(2 <= self.window <= 10_000, "window", f"must be in 2..10000, got {self.window}")
        _need(self.stride >= 1, "stride", f"must be >= 1, got {self.stride}")
        _need(0.0 < self.val_fraction < 0.9, "val_fraction",
              f"must be in (0, 0.9), got {self.val_fraction}")


@dataclass(frozen=True)
class TrainingConfig:
    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 5  # early stopping: epochs without validation improvement
    min_delta: float = 0.0  # improvement smaller than this does not count
    seed: int = 0
    max_train_windows: int = 0  # 0 = all; else evenly subsample the training windows
    threads: int = 0  # torch CPU threads while training; 0 = torch's default

    def __post_init__(self) -> None:
        _need(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
        _need(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        _need(self.learning_rate > 0, "learning_rate", f"must be > 0, got {self.learning_rate}")
        _need(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        _need(self.patience >= 1, "patience", f"must be >= 1, got {self.patience}")
        _need(self.min_delta >= 0, "min_delta", f"must be >= 0, got {self.min_delta}")
        _need(self.max_train_windows >= 0, "max_train_windows", "must be >= 0")
        _need(self.threads >= 0, "threads", f"must be >= 0, got {self.threads}")


@dataclass(frozen=True)
class CalibrationConfig:
    method: str = "quantile"  # quantile | pot
    q: float = 0.995  # target quantile of normal validation errors
    pot_initial_q: float = 0.98  # POT: quantile above which the GPD tail is fitted
    reduction: str = "mean"  # mean | tail_max (see agent/model_meta.py)
    tail: int = 1  # tail_max: newest steps per channel

    def __post_init__(self) -> None:
        _need(self.reduction in ("mean", "tail_max"), "reduction",
              f"must be 'mean' or 'tail_max', got {self.reduction!r}")
        _need(self.tail >= 1, "tail", f"must be >= 1, got {self.tail}")
        _need(self.method in ("quantile", "pot"), "method",
              f"must be 'quantile' or 'pot', got {self.method!r}")
        _need(0.5 < self.q < 1.0, "q", f"must be in (0.5, 1), got {self.q}")
        _need(0.5 < self.pot_initial_q < self.q, "pot_initial_q",
              f"must be in (0.5, q={self.q}), got {self.pot_initial_q}")


@dataclass(frozen=True)
class DenseParams:
    hidden: tuple[int, ...] = (64, 32)
    latent: int = 16
    dropout: float = 0.0


@dataclass(frozen=True)
class ConvParams:
    channels: tuple[int, ...] = (32, 16)  # one stride-2 Conv1d per entry
    kernel_size: int = 5
    latent: int = 8  # channels at the bottleneck

    def __post_init__(self) -> None:
        _need(self.kernel_size % 2 == 1, "kernel_size", f"must be odd, got {self.kernel_size}")


@dataclass(frozen=True)
class LstmParams:
    hidden: int = 64
    latent: int = 16
    num_layers: int = 1


@dataclass(frozen=True)
class TransformerParams:
    d_model: int = 64
    n_heads: int = 4
    encoder_layers: int = 2
    decoder_layers: int = 2
    dim_feedforward: int = 128
    latent: int = 32
    dropout: float = 0.1

    def __post_init__(self) -> None:
        _need(self.d_model % self.n_heads == 0, "n_heads",
              f"must divide d_model={self.d_model}, got {self.n_heads}")


@dataclass(frozen=True)
class VaeParams:
    hidden: tuple[int, ...] = (128, 64)
    latent: int = 20
    dropout: float = 0.1
    beta: float = 1.0  # weight of the KL term (per window element)


@dataclass(frozen=True)
class PcaParams:
    n_components: int = 0  # 0 = smallest number reaching `variance`
    variance: float = 0.95

    def __post_init__(self) -> None:
        _need(self.n_components >= 0, "n_components", "must be >= 0")
        _need(0.0 < self.variance <= 1.0, "variance", f"must be in (0, 1], got {self.variance}")


@dataclass(frozen=True)
class EnsembleParams:
    n_estimators: int = 50  # isolation forest trees (skl2onnx conversion time grows fast)
    nu: float = 0.05  # one-class SVM
    contamination: float = 0.01  # isolation forest / elliptic envelope
    weights: dict[str, float] = field(
        default_factory=lambda: {"iforest": 0.4, "elliptic": 0.3, "ocsvm": 0.3}
    )
    max_samples: int = 2000  # windows used to fit (OCSVM is quadratic)

    def __post_init__(self) -> None:
        bad = sorted(set(self.weights) - {"iforest", "elliptic", "ocsvm"})
        _need(not bad, "weights", f"unknown members {bad}")
        _need(sum(self.weights.values()) > 0, "weights", "must have a positive sum")
        _need(all(w >= 0 for w in self.weights.values()), "weights", "must be >= 0")
        _need(0.0 < self.nu < 1.0, "nu", f"must be in (0, 1), got {self.nu}")


@dataclass(frozen=True)
class NextEventParams:
    """DeepLog-style next-event LSTM (export/sequence.py); ``data.window`` is the history."""

    embedding: int = 32  # event-id embedding size
    hidden: int = 64  # LSTM hidden size
    num_layers: int = 1  # stacked LSTM layers
    top_k: int = 9  # the agent flags an event outside the top k (DeepLog: 9)
    unknown_rate: float = 0.02  # share of history ids replaced by <unknown> while training
    unknown_insert_rate: float = 0.05  # share of histories with one <unknown> inserted
    min_prob: float = 0.0  # the agent also flags a probability below this (0 = top-k only)
    min_count: int = 1  # events seen fewer times map to <unknown>
    max_vocab: int = 5000  # ids, <pad> and <unknown> included

    def __post_init__(self) -> None:
        _need(self.top_k >= 3, "top_k", f"must be >= 3, got {self.top_k}")
        _need(0.0 <= self.unknown_rate < 0.5, "unknown_rate", "must be in [0, 0.5)")
        _need(0.0 <= self.unknown_insert_rate < 0.5, "unknown_insert_rate",
              "must be in [0, 0.5)")
        _need(0.0 <= self.min_prob < 1.0, "min_prob", f"must be in [0, 1), got {self.min_prob}")
        _need(self.min_count >= 1, "min_count", "must be >= 1")
        _need(self.max_vocab >= 5, "max_vocab", "must be >= 5")
        _need(self.embedding >= 1 and self.hidden >= 1 and self.num_layers >= 1, "hidden",
              "embedding, hidden and num_layers must be >= 1")


MODEL_PARAMS: dict[str, type] = {
    "dense": DenseParams, "conv": ConvParams, "lstm": LstmParams,
    "transformer": TransformerParams, "vae": VaeParams, "pca": PcaParams,
    "ensemble": EnsembleParams, "next_event": NextEventParams,
}


@dataclass(frozen=True)
class TrainConfig:
    name: str
    architecture: str
    version: str = "1.0.0"
    features: tuple[str, ...] | None = None  # None = every numeric column
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    model: Any = None  # one of the *Params classes, chosen by architecture

    def __post_init__(self) -> None:
        _need(self.architecture in ARCHITECTURES, "architecture",
              f"must be one of {ARCHITECTURES}, got {self.architecture!r}")
        _need(bool(_NAME.match(self.name)), "name",
              f"must match {_NAME.pattern}, got {self.name!r}")
        _need(bool(_SEMVER.match(self.version)), "version",
              f"must be a semantic version like 1.2.3, got {self.version!r}")
        if self.features is not None:
            _need(len(self.features) > 0 and len(set(self.features)) == len(self.features),
                  "features", "must be a non-empty list of distinct column names")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return None
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _coerce(value, inner[0], key)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise TrainConfigError(key, f"must be a list, got {type(value).__name__}")
        item = typing.get_args(tp)[0]
        return tuple(_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise TrainConfigError(key, f"must be a mapping, got {type(value).__name__}")
        kt, vt = typing.get_args(tp)
        return {_coerce(k, kt, key): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise TrainConfigError(key, f"must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TrainConfigError(key, f"must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TrainConfigError(key, f"must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise TrainConfigError(key, f"must be a string, got {value!r}")
        return value
    return value


def _build(cls: type, raw: Any, prefix: str, extra: dict[str, Any] | None = None) -> Any:
    dotted = (prefix + ".") if prefix else ""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise TrainConfigError(prefix or "<top>", f"must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(map(str, raw)) - known)
    if unknown:
        raise TrainConfigError(dotted + unknown[0], "unknown key")
    values = {k: _coerce(v, hints[k], dotted + k) for k, v in raw.items() if k not in (extra or {})}
    values.update(extra or {})
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    for name in required:
        if name not in values:
            raise TrainConfigError(dotted + name, "missing required key")
    try:
        return cls(**values)
    except TrainConfigError as exc:
        raise TrainConfigError(dotted + exc.key, exc.reason) from None


def config_from_dict(raw: Any) -> TrainConfig:
    """Build a :class:`TrainConfig` from parsed YAML (errors carry the dotted key only)."""
    if not isinstance(raw, dict):
        raise TrainConfigError("<top>", "config must be a mapping")
    arch = raw.get("architecture")
    if arch not in ARCHITECTURES:
        raise TrainConfigError("architecture", f"must be one of {ARCHITECTURES}, got {arch!r}")
    params = _build(MODEL_PARAMS[arch], raw.get("model"), "model")
    return _build(TrainConfig, raw, "", extra={"model": params})


def load_config(path: str | Path) -> TrainConfig:
    """Read and validate a YAML training config; errors name ``path`` and the key."""
    source = str(path)
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise TrainConfigError("<file>", f"cannot read: {exc}", source) from exc
    except yaml.YAMLError as exc:
        raise TrainConfigError("<file>", f"invalid YAML: {exc}", source) from exc
    try:
        return config_from_dict(raw)
    except TrainConfigError as exc:
        raise TrainConfigError(exc.key, exc.reason, source) from None
