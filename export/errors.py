"""The exporter's exception tree.

ExportError
 ├── TrainConfigError     bad training config (names file, dotted key and reason)
 ├── DataError            a training / calibration data file that cannot be used
 ├── ModelFileError       an ONNX file without usable metadata, or a failed torch/ONNX check
 └── SignatureError       a manifest whose signature or digest does not verify

The CLI maps :class:`TrainConfigError` to exit status 2 and every other
:class:`ExportError` to exit status 1.
"""

from __future__ import annotations


class ExportError(Exception):
    """Root of every error the exporter raises on purpose."""


class TrainConfigError(ExportError):
    """A training config value is missing, unknown or invalid."""

    def __init__(self, key: str, reason: str, source: str | None = None) -> None:
        self.key = key
        self.reason = reason
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key}: {reason}")


class DataError(ExportError):
    """A data file is unusable (no numeric columns, too short for one window, ...)."""


class ModelFileError(ExportError):
    """An ONNX file cannot be read, has no metadata, or fails verification."""


class SignatureError(ExportError):
    """A manifest's signature, digest or size does not match."""
