"""Configuration sections of the live runtime: ``mqtt``, ``store``, ``control``, ``metrics``,
``models``.

Kept beside :mod:`agent.config` (which imports them into :class:`~agent.config.AgentConfig`)
so that module stays about detection. Same rules: frozen dataclasses, a default for every
field, ``__post_init__`` checks raising :class:`~agent.errors.ConfigError` with the key.

>>> MqttConfig(port=0)
Traceback (most recent call last):
...
agent.errors.ConfigError: port: must be in 1..65535, got 0
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from agent.errors import ConfigError
from agent.topics import check_id, validate_filter

COMMANDS = ("ping", "rebirth", "rebaseline", "reload", "set_log_level", "flush", "stats_now",
            "checkpoint", "model_rollback")


def _check(ok: bool, key: str, reason: str) -> None:
    if not ok:
        raise ConfigError(key, reason)


def _check_id(value: str | None, key: str) -> None:
    if value is not None:
        try:
            check_id(key, value)
        except ValueError as exc:
            raise ConfigError(key, str(exc).split(": ", 1)[1]) from None


@dataclass(frozen=True)
class TlsConfig:
    enabled: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    verify: bool = True

    def __post_init__(self) -> None:
        _check((self.cert_file is None) == (self.key_file is None), "cert_file",
               "cert_file and key_file go together")


@dataclass(frozen=True)
class IngestConfig:
    """One sensor subscription. ``stream: null`` takes the stream from the payload, else
    from the last topic level."""

    topic: str
    stream: str | None = None
    format: Literal["auto", "json", "csv", "binary"] = "auto"

    def __post_init__(self) -> None:
        try:
            validate_filter(self.topic)
        except ValueError as exc:
            raise ConfigError("topic", str(exc)) from None
        _check_id(self.stream, "stream")


@dataclass(frozen=True)
class MqttConfig:
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str | None = None
    username: str | None = None
    password: str | None = None
    protocol: Literal["auto", "5", "3.1.1"] = "auto"
    keepalive_s: int = 30
    clean_start: bool = True
    session_expiry_s: int = 0
    tls: TlsConfig = field(default_factory=TlsConfig)
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    watchdog_factor: float = 1.5
    prefix: str = "edge"
    site: str = "site1"
    gateway: str | None = None
    ingest: tuple[IngestConfig, ...] = ()
    ingest_qos: int = 0
    max_payload_bytes: int = 262_144
    max_points: int = 100_000
    queue_size: int = 10_000
    inflight: int = 20

    def __post_init__(self) -> None:
        _check(1 <= self.port <= 65535, "port", f"must be in 1..65535, got {self.port}")
        _check(bool(self.host), "host", "must not be empty")
        _check(self.client_id is None or 1 <= len(self.client_id) <= 128, "client_id",
               "must be 1..128 characters")
        _check(self.password is None or self.username is not None, "password",
               "needs a username")
        _check(5 <= self.keepalive_s <= 3600, "keepalive_s", "must be in 5..3600")
        _check(self.session_expiry_s >= 0, "session_expiry_s", "must be >= 0")
        _check(0 < self.reconnect_min_s <= self.reconnect_max_s, "reconnect_min_s",
               "must be > 0 and <= reconnect_max_s")
        _check(self.watchdog_factor == 0 or self.watchdog_factor >= 1.2, "watchdog_factor",
               "must be 0 (off) or >= 1.2")
        _check_id(self.prefix, "prefix")
        _check_id(self.site, "site")
        _check_id(self.gateway, "gateway")
        _check(self.ingest_qos in (0, 1, 2), "ingest_qos", "must be 0, 1 or 2")
        _check(64 <= self.max_payload_bytes <= 16 * 1024 * 1024, "max_payload_bytes",
               "must be in 64..16777216")
        _check(1 <= self.max_points <= 1_000_000, "max_points", "must be in 1..1000000")
        _check(10 <= self.queue_size <= 1_000_000, "queue_size", "must be in 10..1000000")
        _check(1 <= self.inflight <= 1000, "inflight", "must be in 1..1000")


@dataclass(frozen=True)
class StoreConfig:
    path: str | None = None
    max_bytes: int = 64 * 1024 * 1024
    max_age_s: float = 7 * 86400.0
    stats: bool = False
    memory_max_bytes: int = 4 * 1024 * 1024
    retry_s: float = 5.0

    def __post_init__(self) -> None:
        _check(self.max_bytes >= 4096, "max_bytes", "must be >= 4096")
        _check(self.max_age_s > 0, "max_age_s", "must be > 0")
        _check(self.memory_max_bytes >= 4096, "memory_max_bytes", "must be >= 4096")
        _check(self.retry_s > 0, "retry_s", "must be > 0")


@dataclass(frozen=True)
class HmacKeyConfig:
    """A shared secret for signed control messages: its id and the file holding it."""

    id: str
    file: str

    def __post_init__(self) -> None:
        _check(1 <= len(self.id) <= 64, "id", "must be 1..64 characters")


@dataclass(frozen=True)
class ControlConfig:
    """Commands and ``config/desired``; signatures per ``docs/security.md``."""

    enabled: bool = True
    desired_path: str | None = None
    commands: tuple[str, ...] = COMMANDS
    require_signed: bool = False
    hmac_keys: tuple[HmacKeyConfig, ...] = ()
    public_keys: tuple[str, ...] = ()
    max_skew_s: float = 300.0
    nonce_cache: int = 10_000
    nonce_file: str | None = None
    max_command_bytes: int = 16_384
    max_desired_bytes: int = 262_144

    def __post_init__(self) -> None:
        bad = sorted(set(self.commands) - set(COMMANDS))
        _check(not bad, "commands", f"unknown commands {bad} (known: {list(COMMANDS)})")
        _check(not self.require_signed or bool(self.hmac_keys or self.public_keys),
               "require_signed", "needs control.hmac_keys or control.public_keys")
        _check(1 <= self.max_skew_s <= 86400, "max_skew_s", "must be in 1..86400")
        _check(100 <= self.nonce_cache <= 1_000_000, "nonce_cache", "must be in 100..1000000")
        _check(self.nonce_file is None or bool(self.nonce_file), "nonce_file",
               "must not be empty (null = in memory only)")
        _check(64 <= self.max_command_bytes <= 16 * 1024 * 1024, "max_command_bytes",
               "must be in 64..16777216")
        _check(64 <= self.max_desired_bytes <= 16 * 1024 * 1024, "max_desired_bytes",
               "must be in 64..16777216")


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 9108

    def __post_init__(self) -> None:
        _check(0 <= self.port <= 65535, "port", "must be in 0..65535 (0 = any free port)")


@dataclass(frozen=True)
class ModelHealthConfig:
    """Post-activation health check of a new model (failure: automatic rollback)."""

    window_s: float = 300.0
    max_alert_rate_per_min: float = 10.0
    max_errors: int = 0

    def __post_init__(self) -> None:
        _check(self.window_s > 0, "window_s", "must be > 0")
        _check(self.max_alert_rate_per_min >= 0, "max_alert_rate_per_min", "must be >= 0")
        _check(self.max_errors >= 0, "max_errors", "must be >= 0")


@dataclass(frozen=True)
class ModelsConfig:
    """Model updates over MQTT and from a watched directory (``docs/model-update.md``).

    ``dir: null`` turns them off. Secure by default: signed models only, so keys are
    required as soon as updates are on.
    """

    dir: str | None = None
    public_keys: tuple[str, ...] = ()
    require_signed: bool = True
    keep: int = 3
    max_bytes: int = 64 * 1024 * 1024
    max_chunks: int = 4096
    max_chunk_bytes: int = 1024 * 1024
    max_offer_bytes: int = 65_536
    max_queue_bytes: int = 64 * 1024 * 1024
    stall_s: float = 30.0
    watch_dir: str | None = None
    watch_interval_s: float = 5.0
    health: ModelHealthConfig = field(default_factory=ModelHealthConfig)

    def __post_init__(self) -> None:
        _check(self.dir is None or bool(self.dir), "dir", "must not be empty (null = off)")
        _check(self.dir is None or not self.require_signed or bool(self.public_keys),
               "public_keys", "needs at least one Ed25519 public key (PEM) while "
               "require_signed is true")
        _check(self.watch_dir is None or self.dir is not None, "watch_dir", "needs models.dir")
        _check(0 <= self.keep <= 100, "keep", f"must be in 0..100, got {self.keep}")
        _check(1024 <= self.max_bytes <= 1024 * 1024 * 1024, "max_bytes",
               "must be in 1024..1073741824")
        _check(1 <= self.max_chunks <= 1_000_000, "max_chunks", "must be in 1..1000000")
        _check(256 <= self.max_chunk_bytes <= 16 * 1024 * 1024, "max_chunk_bytes",
               "must be in 256..16777216")
        _check(1024 <= self.max_offer_bytes <= 16 * 1024 * 1024, "max_offer_bytes",
               "must be in 1024..16777216")
        _check(max(self.max_chunk_bytes, self.max_offer_bytes) <= self.max_queue_bytes
               <= 4 * 1024 * 1024 * 1024, "max_queue_bytes",
               "must be in max(max_chunk_bytes, max_offer_bytes)..4294967296")
        _check(self.stall_s > 0, "stall_s", "must be > 0")
        _check(self.watch_interval_s > 0, "watch_interval_s", "must be > 0")
