"""Common end of every training run: metadata, threshold and golden vectors.

Whatever produced the graph (PyTorch, numpy PCA, scikit-learn), the threshold and
the golden vectors are computed by onnxruntime from the final bytes with
:func:`export.scoring.window_errors`, the same arithmetic the agent uses.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import platform

import numpy as np
import onnx

from agent.model_meta import GoldenVector, ModelMeta, Scaler
from export.calibrate import thresholds_for
from export.onnx_meta import OnnxRunner, get_meta, set_meta
from export.scoring import channel_errors, scale_windows


def created_at() -> str:
    """UTC ISO time, or ``SOURCE_DATE_EPOCH`` when set (reproducible builds)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = (dt.datetime.fromtimestamp(int(epoch), dt.UTC) if epoch
            else dt.datetime.now(dt.UTC).replace(microsecond=0))
    return when.isoformat().replace("+00:00", "Z")


def frameworks(**extra: str) -> dict[str, str]:
    import onnxruntime

    out = {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
           "numpy": np.__version__, "python": platform.python_version()}
    out.update(extra)
    return out


def pick_golden_indices(n: int, count: int = 4) -> list[int]:
    if n == 0:
        return []
    return sorted({round(float(i)) for i in np.linspace(0, n - 1, min(count, n))})


def golden_vectors(
    runner: OnnxRunner, raw_windows: np.ndarray, count: int = 4
) -> tuple[GoldenVector, ...]:
    """``count`` windows spread over ``raw_windows`` with their raw errors from onnxruntime."""
    idx = pick_golden_indices(len(raw_windows), count)
    chosen = np.asarray(raw_windows)[idx]
    scores = runner.raw_errors(chosen)
    return tuple(
        GoldenVector(window=tuple(tuple(float(v) for v in row) for row in w), raw_score=float(s))
        for w, s in zip(chosen, scores, strict=True)
    )


def embed_golden(model: onnx.ModelProto, raw_windows: np.ndarray, count: int = 4) -> ModelMeta:
    """Compute golden vectors with onnxruntime and store them in ``model``'s metadata."""
    meta = get_meta(model)
    golden = golden_vectors(OnnxRunner(model), raw_windows, count)
    meta = dataclasses.replace(meta, golden=golden)
    set_meta(model, meta)
    return meta


def finalize(
    model: onnx.ModelProto,
    *,
    name: str,
    version: str,
    features: tuple[str, ...],
    window: int,
    stride: int,
    scaler: Scaler,
    architecture: str,
    output: str,
    val_raw_windows: np.ndarray,
    method: str = "quantile",
    q: float = 0.995,
    initial_q: float = 0.98,
    data_sha256: str = "",
    framework_versions: dict[str, str] | None = None,
    golden_count: int = 4,
    reduction: str = "mean",
    tail: int = 1,
    fit_raw_windows: np.ndarray | None = None,
) -> tuple[onnx.ModelProto, ModelMeta, np.ndarray]:
    """Embed complete metadata; returns the model, its metadata and validation errors.

    With ``reduction="tail_max"`` the per-channel ``channel_scale`` is the median
    per-channel tail error on ``fit_raw_windows`` (the training windows; validation
    windows if not given), so each channel's typical error maps to 1.
    """
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                default=17)
    meta = ModelMeta(
        name=name, version=version, features=tuple(features), window=window, scaler=scaler,
        threshold=1.0, kind="ensemble" if architecture == "ensemble" else "autoencoder",
        architecture=architecture, stride=stride, scaling_in_graph=False,
        input_name=model.graph.input[0].name, output=output,
        training_data_sha256=data_sha256, created_at=created_at(), opset=opset,
        frameworks=framework_versions or frameworks(),
        reduction=reduction if output == "reconstruction" else "mean",
        tail=min(tail, window),
    )
    set_meta(model, meta)
    if reduction == "tail_max" and output == "reconstruction":
        fit = val_raw_windows if fit_raw_windows is None else fit_raw_windows
        runner = OnnxRunner(model)
        scaled = scale_windows(meta, fit)
        per = channel_errors(meta, runner.run_scaled(scaled), scaled)
        scale = tuple(float(max(v, 1e-9)) for v in np.median(per, axis=0))
        meta = dataclasses.replace(meta, channel_scale=scale)
        set_meta(model, meta)
    errors = OnnxRunner(model).raw_errors(val_raw_windows)
    threshold, table = thresholds_for(errors, method, q, initial_q)
    table["n_windows"] = float(len(errors))
    meta = dataclasses.replace(meta, threshold=threshold, thresholds=table)
    set_meta(model, meta)
    meta = embed_golden(model, val_raw_windows, golden_count)
    return model, meta, errors
