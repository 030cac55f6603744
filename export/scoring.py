"""The numpy reference for turning model output into a raw window error.

This is the one definition the exporter uses for thresholds, golden vectors and
reports. It does exactly what the agent does (``agent/onnx_scorer.py``): scale in
float32, then, by output kind,

``reconstruction`` (B, W, C), scaled units
    squared error ``(x̂ - x)^2`` in float64, reduced by
    :func:`agent.model_meta.reduce_errors` (``reduction``: ``mean`` over window and
    channels, or ``tail_max``: per channel over the last ``tail`` steps, divided by
    ``channel_scale``, max over channels).
``channel_error`` (B, C)
    window error ``mean_c e_c``.
``score`` (B,) or (B, 1)
    the raw window error itself.
``error`` (fused, :mod:`export.fuse`)
    the graph's first output ``raw_error`` (B,) is the raw window error; the graph
    scales its raw input itself, so use :meth:`export.onnx_meta.OnnxRunner.run_fused`.

>>> import numpy as np
>>> from agent.model_meta import ModelMeta, Scaler
>>> meta = ModelMeta(name="m", version="1.0.0", features=("a", "b"), window=2,
...                  scaler=Scaler(center=(0.0, 0.0), scale=(1.0, 1.0)), threshold=1.0)
>>> x = np.zeros((1, 2, 2), dtype=np.float32)
>>> float(window_errors(meta, x + 1.0, x)[0])
1.0
"""

from __future__ import annotations

import numpy as np

from agent.model_meta import ModelMeta, reduce_errors


def scale_windows(meta: ModelMeta, raw: np.ndarray) -> np.ndarray:
    """Apply the metadata's scaler to raw windows, in float32 exactly like the agent."""
    x = np.asarray(raw, dtype=np.float32)
    center = np.asarray(meta.scaler.center, dtype=np.float32)
    scale = np.asarray(meta.scaler.scale, dtype=np.float32)
    return (x - center) / scale


def _reduced(
    meta: ModelMeta, output: np.ndarray, scaled_input: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    out = np.asarray(output)
    x = np.asarray(scaled_input)
    if out.shape != x.shape:
        raise ValueError(f"reconstruction shape {out.shape} != input shape {x.shape}")
    return reduce_errors(meta, (out.astype(np.float64) - x) ** 2)


def channel_errors(meta: ModelMeta, output: np.ndarray, scaled_input: np.ndarray) -> np.ndarray:
    """Per-channel errors ``(B, C)`` as the agent reports them (per-channel outputs only)."""
    if meta.output == "reconstruction":
        return _reduced(meta, output, scaled_input)[1]
    if meta.output == "channel_error":
        return np.asarray(output, dtype=np.float64).reshape(len(output), -1)
    raise ValueError(f"output kind {meta.output!r} has no per-channel errors")


def window_errors(meta: ModelMeta, output: np.ndarray, scaled_input: np.ndarray) -> np.ndarray:
    """Raw window errors ``(B,)`` as float64, the quantity ``meta.threshold`` is measured in."""
    if meta.output in ("score", "error"):
        return np.asarray(output, dtype=np.float64).reshape(len(output))
    if meta.output == "channel_error":
        return channel_errors(meta, output, scaled_input).mean(axis=1)
    return _reduced(meta, output, scaled_input)[0]


def calibrated(meta: ModelMeta, raw: np.ndarray) -> np.ndarray:
    """Vectorised :meth:`ModelMeta.calibrate`: ``raw / (raw + threshold)``, NaN -> 1."""
    r = np.maximum(np.asarray(raw, dtype=np.float64), 0.0)
    out = r / (r + meta.threshold)
    return np.where(np.isfinite(out), out, 1.0)
