"""The agent's exception tree.

AgentError
 ├── ConfigError          bad configuration (names file, dotted key and reason)
 ├── InputError           an input file or payload that cannot be used at all
 ├── CheckpointError      a checkpoint that is corrupt, foreign or from another version
 ├── ModelLoadError       an ONNX model or its metadata that cannot be used
 │   └── ModelMetadataError
 └── ModelUpdateError     a pushed or dropped model refused (``reason``: a :class:`Reason`)

Single bad rows or payloads are not exceptions: they are counted by reason
(see :class:`agent.counters.RejectCounter`) and skipped.
"""

from __future__ import annotations

from enum import StrEnum


class AgentError(Exception):
    """Root of every error the agent raises on purpose."""


class ConfigError(AgentError):
    """A configuration value is missing, unknown or invalid."""

    def __init__(self, key: str, reason: str, source: str | None = None) -> None:
        self.key = key
        self.reason = reason
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key}: {reason}")


class InputError(AgentError):
    """An input (file, payload) is unusable as a whole."""


class CheckpointError(AgentError):
    """A detector checkpoint cannot be restored."""


class ModelLoadError(AgentError):
    """An ONNX model cannot be loaded or does not fit the configured stream."""


class ModelMetadataError(ModelLoadError):
    """The model's embedded metadata is missing or invalid."""


class Reason(StrEnum):
    """Why a model update was refused or rolled back (``model/state`` ``reason``)."""

    BAD_OFFER = "bad_offer"
    BAD_MANIFEST = "bad_manifest"
    TOO_LARGE = "too_large"
    TOO_MANY_CHUNKS = "too_many_chunks"
    BAD_CHUNK = "bad_chunk"
    MISSING_CHUNKS = "missing_chunks"
    SIZE_MISMATCH = "size_mismatch"
    SHA256_MISMATCH = "sha256_mismatch"
    UNSIGNED = "unsigned"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    LOAD_FAILED = "load_failed"
    BAD_METADATA = "bad_metadata"
    MANIFEST_MISMATCH = "manifest_mismatch"
    FEATURES_MISMATCH = "features_mismatch"
    NO_GOLDEN = "no_golden"
    GOLDEN_MISMATCH = "golden_mismatch"
    NOTHING_TO_ROLL_BACK = "nothing_to_roll_back"
    HEALTH_ERRORS = "health_errors"
    ALERT_STORM = "alert_storm"
    STORE_FAILED = "store_failed"


class ModelUpdateError(AgentError):
    """A model update step failed; ``reason`` says which check, the message the details."""

    def __init__(self, reason: Reason, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason.value}: {detail}")
