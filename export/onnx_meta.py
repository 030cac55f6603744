"""Reading and writing the :class:`~agent.model_meta.ModelMeta` inside ONNX files.

Also the one place the exporter runs an ONNX model (CPU onnxruntime), so every
threshold, golden vector and report is computed from the same bytes the agent loads.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from agent.errors import ModelMetadataError
from agent.model_meta import META_KEY, ModelMeta
from export import scoring
from export.errors import ModelFileError


def set_meta(model: onnx.ModelProto, meta: ModelMeta) -> onnx.ModelProto:
    """Store ``meta.to_json()`` under :data:`META_KEY` (replacing an earlier entry)."""
    keep = [p for p in model.metadata_props if p.key != META_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    entry = model.metadata_props.add()
    entry.key = META_KEY
    entry.value = meta.to_json()
    return model


def get_meta(model: onnx.ModelProto) -> ModelMeta:
    for p in model.metadata_props:
        if p.key == META_KEY:
            try:
                return ModelMeta.from_json(p.value)
            except ModelMetadataError as exc:
                raise ModelFileError(str(exc)) from exc
    raise ModelFileError(f"ONNX model has no {META_KEY!r} metadata")


def load_model(path: str | Path) -> onnx.ModelProto:
    try:
        return onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError, OSError, ...
        raise ModelFileError(f"{path}: cannot load ONNX model: {exc}") from exc


def read_meta(path: str | Path) -> ModelMeta:
    return get_meta(load_model(path))


def save_model(model: onnx.ModelProto, path: str | Path) -> Path:
    path = Path(path)
    path.write_bytes(model.SerializeToString())
    return path


def rewrite_meta(path: str | Path, **changes: object) -> ModelMeta:
    """Replace fields of the embedded metadata in place; returns the new metadata."""
    model = load_model(path)
    meta = dataclasses.replace(get_meta(model), **changes)
    save_model(set_meta(model, meta), path)
    return meta


def graph_bytes(model: onnx.ModelProto) -> bytes:
    """Serialised model without ``metadata_props`` (for reproducibility checks)."""
    clone = onnx.ModelProto()
    clone.CopyFrom(model)
    del clone.metadata_props[:]
    return clone.SerializeToString()


class OnnxRunner:
    """A CPU onnxruntime session plus the metadata, scoring raw windows the agent's way."""

    def __init__(self, model: onnx.ModelProto | bytes | str | Path) -> None:
        if isinstance(model, str | Path):
            model = load_model(model)
        if isinstance(model, bytes):
            model = onnx.load_from_string(model)
        self.meta = get_meta(model)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self._session = ort.InferenceSession(
            model.SerializeToString(), opts, providers=["CPUExecutionProvider"]
        )
        self.output_name = self._session.get_outputs()[0].name

    def run_scaled(self, scaled: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Model output for already-scaled windows ``(B, W, C)``."""
        outs = []
        for i in range(0, len(scaled), batch_size):
            chunk = np.ascontiguousarray(scaled[i : i + batch_size], dtype=np.float32)
            outs.append(self._session.run(None, {self.meta.input_name: chunk})[0])
        return np.concatenate(outs) if outs else np.empty((0,), dtype=np.float32)

    def run_fused(self, raw_windows: np.ndarray, batch_size: int = 256) -> list[np.ndarray]:
        """All outputs of a fused model (``output: error``) for raw (unscaled) windows:
        ``[raw_error (B,), channel_error (B, C)]`` (see :mod:`export.fuse`)."""
        x = np.asarray(raw_windows, dtype=np.float32)
        if not self.meta.scaling_in_graph:
            x = scoring.scale_windows(self.meta, x)
        chunks = [self._session.run(None, {self.meta.input_name: np.ascontiguousarray(
            x[i : i + batch_size])}) for i in range(0, len(x), batch_size)]
        if not chunks:
            c = len(self.meta.features)
            return [np.empty((0,), np.float32), np.empty((0, c), np.float32)]
        return [np.concatenate([c[k] for c in chunks]) for k in range(len(chunks[0]))]

    def raw_errors_scaled(self, scaled: np.ndarray) -> np.ndarray:
        if len(scaled) == 0:
            return np.empty((0,), dtype=np.float64)
        if self.meta.output == "error":
            raise ValueError("a fused model (output: error) takes raw windows: use raw_errors")
        return scoring.window_errors(self.meta, self.run_scaled(scaled), scaled)

    def raw_errors(self, raw_windows: np.ndarray) -> np.ndarray:
        """Raw window errors for unscaled windows, exactly as the agent computes them."""
        if self.meta.output == "error":
            return self.run_fused(raw_windows)[0].astype(np.float64).reshape(-1)
        return self.raw_errors_scaled(scoring.scale_windows(self.meta, raw_windows))
