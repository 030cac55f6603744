"""Typed, frozen configuration loaded from YAML.

One dataclass per section; :func:`load_config` turns a YAML file into an
:class:`AgentConfig` and raises :class:`~agent.errors.ConfigError` naming the file, the
dotted key and the reason on the first problem (unknown keys are errors too)::

    configs/default.yaml: detectors.zscore.window: must be >= 10, got 3

Every field has a default, so an empty file is a valid (if not very useful) config.
``configs/default.yaml`` documents each key.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from agent.config_live import (
    ControlConfig,
    MetricsConfig,
    ModelsConfig,
    MqttConfig,
    StoreConfig,
)
from agent.errors import ConfigError
from agent.events.config import EventsConfig
from agent.sources.serial import SerialSourceConfig

Direction = Literal["up", "down", "both"]
MAX_CONFIG_BYTES = 1024 * 1024  # a config file (or persisted overlay) larger is refused unread
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _check(ok: bool, key: str, reason: str) -> None:
    if not ok:
        raise ConfigError(key, reason)


@dataclass(frozen=True)
class ChannelConfig:
    """One channel of a stream. In YAML a bare name is short for ``{name: NAME}``."""

    name: str
    direction: Direction | None = None
    abs_tolerance: float | None = None
    rel_tolerance: float | None = None

    def __post_init__(self) -> None:
        _check(bool(self.name) and len(self.name) <= 128, "name", "must be 1..128 characters")
        for k in ("abs_tolerance", "rel_tolerance"):
            v = getattr(self, k)
            _check(v is None or v >= 0, k, f"must be >= 0, got {v}")


@dataclass(frozen=True)
class StreamConfig:
    id: str
    channels: tuple[ChannelConfig, ...]
    # seconds without an accepted point before a ``stale`` event (None: agent.stale_after_s)
    stale_after_s: float | None = None

    def __post_init__(self) -> None:
        _check(bool(_ID.match(self.id)), "id", f"must match [A-Za-z0-9_-]{{1,64}}, got {self.id!r}")
        _check(len(self.channels) >= 1, "channels", "needs at least one channel")
        _check(self.stale_after_s is None or self.stale_after_s >= 0, "stale_after_s",
               f"must be >= 0 (0 = off), got {self.stale_after_s}")
        names = [c.name for c in self.channels]
        dup = sorted({n for n in names if names.count(n) > 1})
        _check(not dup, "channels", f"duplicate channel names {dup}")

    @property
    def channel_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.channels)


@dataclass(frozen=True)
class ZScoreConfig:
    enabled: bool = True
    method: Literal["rolling", "robust", "both"] = "both"
    window: int = 100
    min_points: int = 10
    threshold: float = 3.0
    robust_threshold: float = 3.5
    abs_tolerance: float = 0.0
    rel_tolerance: float = 0.0
    direction: Direction = "both"
    guard: bool = True
    rebaseline_after: int = 30
    robust_refresh: int = 10
    delta: bool = True
    stuck_after: int = 5
    ewma_lambda: float = 0.0  # EWMA view of each channel's values (0: off)
    ewma_threshold: float = 0.0  # rolling-z threshold of the EWMA view (0: `threshold`)

    def __post_init__(self) -> None:
        _check(self.window >= 10, "window", f"must be >= 10, got {self.window}")
        _check(self.window <= 100_000, "window", f"must be <= 100000, got {self.window}")
        _check(
            2 <= self.min_points <= self.window,
            "min_points",
            f"must be in 2..window ({self.window}), got {self.min_points}",
        )
        _check(self.threshold > 0, "threshold", f"must be > 0, got {self.threshold}")
        _check(self.robust_threshold > 0, "robust_threshold", "must be > 0")
        _check(self.abs_tolerance >= 0, "abs_tolerance", "must be >= 0")
        _check(self.rel_tolerance >= 0, "rel_tolerance", "must be >= 0")
        _check(self.rebaseline_after >= 1, "rebaseline_after", "must be >= 1")
        _check(1 <= self.robust_refresh <= self.window, "robust_refresh", "must be in 1..window")
        _check(self.stuck_after == 0 or self.stuck_after >= 2, "stuck_after",
               f"must be 0 (off) or >= 2, got {self.stuck_after}")
        _check(0.0 <= self.ewma_lambda < 1.0, "ewma_lambda",
               f"must be in [0, 1) (0: off), got {self.ewma_lambda}")
        _check(self.ewma_threshold >= 0.0, "ewma_threshold",
               f"must be >= 0 (0: the level view's threshold), got {self.ewma_threshold}")


@dataclass(frozen=True)
class RiverModelConfig:
    """One River detector. Parameters that do not apply to ``kind`` are ignored."""

    kind: Literal["half_space_trees", "loda"]
    n_trees: int = 10
    height: int = 8
    window_size: int = 250
    n_bins: int = 10
    n_random_cuts: int = 100
    seed: int = 42

    def __post_init__(self) -> None:
        _check(1 <= self.n_trees <= 100, "n_trees", f"must be in 1..100, got {self.n_trees}")
        _check(1 <= self.height <= 16, "height", f"must be in 1..16, got {self.height}")
        _check(self.window_size >= 10, "window_size", "must be >= 10")
        _check(2 <= self.n_bins <= 1000, "n_bins", "must be in 2..1000")
        _check(1 <= self.n_random_cuts <= 1000, "n_random_cuts", "must be in 1..1000")


@dataclass(frozen=True)
class RiverConfig:
    enabled: bool = True
    models: tuple[RiverModelConfig, ...] = (RiverModelConfig(kind="half_space_trees"),)
    warmup: int = 250
    guard: bool = True
    relearn_after: int = 300
    calibration_window: int = 1000
    calibration_quantile: float = 0.995

    def __post_init__(self) -> None:
        _check(not self.enabled or len(self.models) >= 1, "models", "needs at least one model")
        _check(self.warmup >= 1, "warmup", "must be >= 1")
        _check(self.relearn_after >= 1, "relearn_after", "must be >= 1")
        _check(self.calibration_window >= 50, "calibration_window", "must be >= 50")
        _check(0.5 < self.calibration_quantile < 1, "calibration_quantile", "must be in (0.5, 1)")


@dataclass(frozen=True)
class OnnxConfig:
    enabled: bool = False
    model: str | None = None
    providers: tuple[Literal["cuda", "tensorrt", "openvino", "cpu"], ...] = ("cuda", "cpu")
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    verify_golden: bool = True

    def __post_init__(self) -> None:
        _check(not self.enabled or bool(self.model), "model", "is required when enabled")
        _check(len(self.providers) >= 1, "providers", "needs at least one provider")
        _check(self.intra_op_threads >= 0, "intra_op_threads", "must be >= 0 (0 = onnxruntime)")
        _check(self.inter_op_threads >= 0, "inter_op_threads", "must be >= 0")


@dataclass(frozen=True)
class DetectorsConfig:
    zscore: ZScoreConfig = field(default_factory=ZScoreConfig)
    river: RiverConfig = field(default_factory=RiverConfig)
    onnx: OnnxConfig = field(default_factory=OnnxConfig)


@dataclass(frozen=True)
class EscalationConfig:
    river_at: float = 0.4
    # river_at is the gate of a one-channel stream; more channels raise it (agent/escalation.py)
    scale_river_at: bool = True
    onnx_at: float = 0.4
    sample_every: int = 0
    fusion: Literal["deepest", "max"] = "deepest"

    def __post_init__(self) -> None:
        _check(0 <= self.river_at <= 1, "river_at", f"must be in [0, 1], got {self.river_at}")
        _check(0 <= self.onnx_at <= 1, "onnx_at", f"must be in [0, 1], got {self.onnx_at}")
        _check(self.sample_every >= 0, "sample_every", "must be >= 0 (0 = off)")


@dataclass(frozen=True)
class SeverityConfig:
    medium: float = 1.0
    high: float = 1.5
    critical: float = 2.0

    def __post_init__(self) -> None:
        _check(self.medium >= 1.0, "medium", "must be >= 1 (multiple of the threshold)")
        _check(self.medium <= self.high <= self.critical, "high", "need medium <= high <= critical")


@dataclass(frozen=True)
class AlertConfig:
    threshold: float = 0.5
    k: int = 3
    n: int = 5
    clear_threshold: float = 0.4
    clear_after: int = 5
    cooldown_s: float = 0.0
    top_channels: int = 3
    severity: SeverityConfig = field(default_factory=SeverityConfig)

    def __post_init__(self) -> None:
        _check(0 < self.threshold < 1, "threshold", f"must be in (0, 1), got {self.threshold}")
        _check(1 <= self.n <= 10_000, "n", f"must be in 1..10000, got {self.n}")
        _check(1 <= self.k <= self.n, "k", f"must be in 1..n ({self.n}), got {self.k}")
        _check(
            0 < self.clear_threshold <= self.threshold,
            "clear_threshold",
            f"must be in (0, threshold={self.threshold}], got {self.clear_threshold}",
        )
        _check(self.clear_after >= 1, "clear_after", "must be >= 1")
        _check(self.cooldown_s >= 0, "cooldown_s", "must be >= 0")
        _check(self.top_channels >= 1, "top_channels", "must be >= 1")


@dataclass(frozen=True)
class CheckpointConfig:
    path: str | None = None
    interval_s: float = 300.0

    def __post_init__(self) -> None:
        _check(self.interval_s > 0, "interval_s", "must be > 0")


@dataclass(frozen=True)
class SinksConfig:
    jsonl: str | None = None


@dataclass(frozen=True)
class AgentSection:
    id: str = "edge-agent"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    stats_interval_s: float = 30.0
    clock_jump_s: float = 3600.0
    stale_after_s: float = 0.0

    def __post_init__(self) -> None:
        _check(bool(_ID.match(self.id)), "id", f"must match [A-Za-z0-9_-]{{1,64}}, got {self.id!r}")
        _check(self.stats_interval_s > 0, "stats_interval_s", "must be > 0")
        _check(self.clock_jump_s > 0, "clock_jump_s", f"must be > 0, got {self.clock_jump_s}")
        _check(self.stale_after_s >= 0, "stale_after_s",
               f"must be >= 0 (0 = off), got {self.stale_after_s}")


@dataclass(frozen=True)
class AgentConfig:
    version: str = "1"
    agent: AgentSection = field(default_factory=AgentSection)
    streams: tuple[StreamConfig, ...] = ()
    detectors: DetectorsConfig = field(default_factory=DetectorsConfig)
    escalation: EscalationConfig = field(default_factory=EscalationConfig)
    alerts: AlertConfig = field(default_factory=AlertConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    sinks: SinksConfig = field(default_factory=SinksConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    serial: tuple[SerialSourceConfig, ...] = ()
    events: EventsConfig = field(default_factory=EventsConfig)
    source_path: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        ids = [s.id for s in self.streams]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        _check(not dup, "streams", f"duplicate stream ids {dup}")
        ports = [s.port for s in self.serial]
        for i, sc in enumerate(self.serial):
            _check(ports.index(sc.port) == i, f"serial[{i}].port",
                   f"{sc.port!r} is already read by serial[{ports.index(sc.port)}]")
            sid = sc.resolved_stream  # None: dev{device_id}, known only at run time
            _check(sid is None or sid in ids, f"serial[{i}].stream",
                   f"{sid!r} is not a configured stream (streams: {ids})")

    def stream(self, stream_id: str) -> StreamConfig | None:
        for s in self.streams:
            if s.id == stream_id:
                return s
        return None

    def stale_after(self, stream: StreamConfig) -> float:
        """Seconds of silence before ``stream`` is reported stale (0 = never)."""
        return self.agent.stale_after_s if stream.stale_after_s is None else stream.stale_after_s

    def resolve_path(self, value: str) -> Path:
        """Paths in a config file are relative to that file."""
        p = Path(value).expanduser()
        if p.is_absolute() or self.source_path is None:
            return p
        return Path(self.source_path).parent / p


# --------------------------------------------------------------------------- loading


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key)
            except ConfigError as exc:
                errors.append(exc.reason)
        raise ConfigError(key, "; ".join(errors))
    if origin is Literal:
        if value not in args:
            raise ConfigError(key, f"must be one of {list(args)}, got {value!r}")
        return value
    if origin is tuple:
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise ConfigError(key, f"expected a list, got {type(value).__name__}")
        return tuple(_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        if tp is ChannelConfig and isinstance(value, str):
            value = {"name": value}
        return _build(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(key, f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ConfigError(key, f"expected a string, got {value!r}")
        return str(value)
    raise ConfigError(key, f"unsupported type {_type_name(tp)}")  # pragma: no cover


def _build(cls: Any, data: Any, prefix: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(prefix or "<root>", f"expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source_path"}
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else str(name)
        if name not in fields:
            raise ConfigError(key, f"unknown key (expected one of {sorted(fields)})")
        kwargs[name] = _coerce(hints[name], value, key)
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{prefix}.{missing[0]}" if prefix else missing[0], "is required")
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        # SerialSourceConfig (usable on its own) names its keys "serial.X" already
        key = exc.key.removeprefix("serial.") if cls is SerialSourceConfig else exc.key
        raise ConfigError(f"{prefix}.{key}" if prefix else key, exc.reason) from None


def config_from_dict(data: Any, source: str | None = None) -> AgentConfig:
    """Build a validated config from already-parsed YAML/JSON data."""
    try:
        cfg = _build(AgentConfig, data, "")
    except ConfigError as exc:
        raise ConfigError(exc.key, exc.reason, source) from None
    return dataclasses.replace(cfg, source_path=source) if source else cfg


def load_config(path: str | Path) -> AgentConfig:
    """Load and validate a YAML config file; raise ConfigError naming file and key."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError("<file>", f"larger than {MAX_CONFIG_BYTES} bytes", str(p))
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("<file>", f"cannot read: {exc}", str(p)) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "<file>"
        raise ConfigError(where, f"invalid YAML: {getattr(exc, 'problem', exc)}", str(p)) from exc
    return config_from_dict(data, str(p))
