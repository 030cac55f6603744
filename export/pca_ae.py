"""A torch-free linear (PCA) autoencoder, built with numpy and ``onnx.helper`` only.

Graph: input ``(B, W, C)`` -> Reshape ``(B, W*C)`` -> Sub(mean) -> MatMul(P) ->
MatMul(Pᵀ) -> Add(mean) -> Reshape ``(B, W, C)`` = ``reconstruction`` (scaled units),
where ``P`` ``(W*C, k)`` holds the top-``k`` principal directions of the scaled,
flattened training windows. Fits in milliseconds, so tests and demos use it.

>>> import numpy as np
>>> t = np.arange(600.0)
>>> noise = 0.01 * np.random.default_rng(0).normal(size=(600, 2))
>>> rows = np.c_[np.sin(t / 5), np.cos(t / 5)] + noise
>>> blob = build_pca_model(rows, ("a", "b"), window=8, n_components=4)
>>> from export.onnx_meta import OnnxRunner
>>> OnnxRunner(blob).meta.threshold > 0
True
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export import data as data_mod
from export.finalize import finalize, frameworks

OPSET = 17


def fit_pca(
    scaled_windows: np.ndarray, n_components: int = 0, variance: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Principal directions ``P`` ``(D, k)`` and mean ``(D,)`` of flattened windows.

    ``n_components = 0`` picks the smallest ``k`` explaining ``variance`` of the variance.
    """
    flat = np.asarray(scaled_windows, dtype=np.float64).reshape(len(scaled_windows), -1)
    mean = flat.mean(axis=0)
    _, s, vt = np.linalg.svd(flat - mean, full_matrices=False)
    if n_components <= 0:
        ratio = np.cumsum(s**2) / max(float(np.sum(s**2)), 1e-300)
        n_components = int(np.searchsorted(ratio, variance) + 1)
    k = max(1, min(n_components, vt.shape[0]))
    return vt[:k].T.copy(), mean


def pca_graph(
    components: np.ndarray,
    mean: np.ndarray,
    window: int,
    n_features: int,
    input_name: str = "input",
) -> onnx.ModelProto:
    """The ONNX graph of the PCA autoencoder (no metadata yet)."""
    d = window * n_features
    if components.shape[0] != d or mean.shape != (d,):
        raise ValueError(f"components must be ({d}, k) and mean ({d},)")
    inits = [
        numpy_helper.from_array(components.astype(np.float32), "P"),
        numpy_helper.from_array(np.ascontiguousarray(components.T, dtype=np.float32), "Pt"),
        numpy_helper.from_array(mean.astype(np.float32), "mean"),
        numpy_helper.from_array(np.array([-1, d], dtype=np.int64), "flat_shape"),
        numpy_helper.from_array(np.array([-1, window, n_features], dtype=np.int64), "win_shape"),
    ]
    nodes = [
        helper.make_node("Reshape", [input_name, "flat_shape"], ["flat"]),
        helper.make_node("Sub", ["flat", "mean"], ["centered"]),
        helper.make_node("MatMul", ["centered", "P"], ["code"]),
        helper.make_node("MatMul", ["code", "Pt"], ["decoded"]),
        helper.make_node("Add", ["decoded", "mean"], ["recon_flat"]),
        helper.make_node("Reshape", ["recon_flat", "win_shape"], ["reconstruction"]),
    ]
    graph = helper.make_graph(
        nodes, "pca_autoencoder",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT,
                                       ["batch", window, n_features])],
        [helper.make_tensor_value_info("reconstruction", TensorProto.FLOAT,
                                       ["batch", window, n_features])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="edge-agent.export.pca_ae")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def fit_pca_graph(
    train_scaled: np.ndarray, n_components: int = 0, variance: float = 0.95
) -> onnx.ModelProto:
    """Fit on scaled training windows ``(B, W, C)`` and return the graph."""
    _, window, n_features = train_scaled.shape
    p, mean = fit_pca(train_scaled, n_components, variance)
    return pca_graph(p, mean, window, n_features)


def build_pca_model(
    train: np.ndarray,
    features: Sequence[str],
    window: int,
    *,
    stride: int = 1,
    n_components: int = 0,
    variance: float = 0.95,
    val_fraction: float = 0.2,
    name: str = "pca-ae",
    version: str = "1.0.0",
    method: str = "quantile",
    q: float = 0.995,
    initial_q: float = 0.98,
    reduction: str = "mean",
    tail: int = 1,
    out: str | Path | None = None,
) -> bytes:
    """One call from raw rows ``(N, C)`` of normal data to a complete model file.

    Fits the robust scaler on the first ``1 - val_fraction`` of the rows, the PCA on
    their windows, the threshold on the windows of the last ``val_fraction`` (time
    order kept), embeds metadata and golden vectors, and returns the ONNX bytes
    (also written to ``out`` when given). ``reduction="tail_max"`` (with ``tail``)
    also sets ``channel_scale`` from the training windows (see ``agent/model_meta.py``).
    """
    rows = np.asarray(train, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] != len(features):
        raise ValueError(f"train must be (N, {len(features)}), got {rows.shape}")
    dataset = data_mod.Dataset(tuple(features), (rows,), "")
    train_rows, val_rows = data_mod.split_time_ordered(dataset, val_fraction, window)
    scaler = data_mod.fit_robust_scaler(np.concatenate(train_rows))
    train_win = data_mod.windows_from(train_rows, window, stride)
    graph = fit_pca_graph(data_mod.apply_scaler(scaler, train_win), n_components, variance)
    model, _, _ = finalize(
        graph, name=name, version=version, features=tuple(features), window=window,
        stride=stride, scaler=scaler, architecture="pca", output="reconstruction",
        val_raw_windows=data_mod.windows_from(val_rows, window, 1),
        method=method, q=q, initial_q=initial_q, framework_versions=frameworks(),
        reduction=reduction, tail=tail, fit_raw_windows=train_win,
    )
    blob = model.SerializeToString()
    if out is not None:
        Path(out).write_bytes(blob)
    return blob
