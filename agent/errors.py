"""The agent's exception tree.

AgentError
 ├── ConfigError          bad configuration (names file, dotted key and reason)
 ├── InputError           an input file or payload that cannot be used at all
 ├── CheckpointError      a checkpoint that is corrupt, foreign or from another version
 └── ModelLoadError       an ONNX model or its metadata that cannot be used
     └── ModelMetadataError

Single bad rows or payloads are not exceptions: they are counted by reason
(see :class:`agent.counters.RejectCounter`) and skipped.
"""

from __future__ import annotations


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
