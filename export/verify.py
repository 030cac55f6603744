"""Checks that an ONNX file does what its PyTorch twin does, and embeds golden vectors.

* torch vs ONNX: eval-mode outputs on random windows (scaled units, N(0, 1)) and on
  real windows must agree within ``atol`` (default ``1e-4``, absolute, scaled units).
  For a fused model (``output: error``, :mod:`export.fuse`) the per-channel errors of
  the graph are compared with those of the torch reconstruction.
* golden vectors: 3-5 raw windows from data with the raw error onnxruntime computes
  for them (see :func:`export.scoring.window_errors`); the agent checks them at load.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.model_meta import reduce_errors
from export import data as data_mod
from export.errors import ModelFileError
from export.finalize import embed_golden
from export.onnx_meta import OnnxRunner, load_model, save_model
from export.scoring import scale_windows

DEFAULT_ATOL = 1e-4


@dataclass(frozen=True)
class VerifyResult:
    max_abs_diff_random: float | None
    max_abs_diff_real: float | None
    atol: float
    golden_count: int
    golden_max_rel_err: float

    @property
    def max_abs_diff(self) -> float | None:
        diffs = [d for d in (self.max_abs_diff_random, self.max_abs_diff_real) if d is not None]
        return max(diffs) if diffs else None


def torch_vs_onnx(
    runner: OnnxRunner, checkpoint: str | Path, real_scaled: np.ndarray, n_random: int = 32,
    seed: int = 0,
) -> tuple[float, float | None]:
    """Max abs output difference on random and on real windows (torch imported lazily)."""
    from export.to_onnx import load_checkpoint

    module = load_checkpoint(checkpoint)
    meta = runner.meta
    rand = np.random.default_rng(seed).normal(
        size=(n_random, meta.window, len(meta.features))).astype(np.float32)
    compare = _fused_diff if meta.output == "error" else _reconstruction_diff
    d_rand = compare(runner, module, rand)
    d_real = compare(runner, module, real_scaled) if len(real_scaled) else None
    return d_rand, d_real


def _reconstruction_diff(runner: OnnxRunner, module: object, scaled: np.ndarray) -> float:
    from export.to_onnx import torch_outputs

    return float(np.max(np.abs(torch_outputs(module, scaled) - runner.run_scaled(scaled))))


def _fused_diff(runner: OnnxRunner, module: object, scaled: np.ndarray) -> float:
    """A fused model (``output: error``) has no reconstruction output: compare its
    per-channel errors with those of the torch reconstruction, reduced in numpy."""
    from export.to_onnx import torch_outputs

    meta = runner.meta
    center = np.asarray(meta.scaler.center, dtype=np.float64)
    raw = np.asarray(scaled, dtype=np.float64) * np.asarray(meta.scaler.scale) + center
    x = scale_windows(meta, raw)  # what the graph's own scaling makes of it
    want = reduce_errors(meta, (torch_outputs(module, x).astype(np.float64) - x) ** 2)[1]
    got = runner.run_fused(raw)[1]
    return float(np.max(np.abs(want - got)))


def golden_check(runner: OnnxRunner) -> float:
    """Largest relative error between embedded golden scores and a fresh computation."""
    if not runner.meta.golden:
        return 0.0
    windows = np.array([g.window for g in runner.meta.golden], dtype=np.float64)
    expected = np.array([g.raw_score for g in runner.meta.golden])
    got = runner.raw_errors(windows)
    return float(np.max(np.abs(got - expected) / np.maximum(np.abs(expected), 1e-12)))


def verify_file(
    model_path: str | Path,
    checkpoint: str | Path | None = None,
    data: str | Path | None = None,
    atol: float = DEFAULT_ATOL,
    golden_count: int = 4,
) -> VerifyResult:
    """Compare against the checkpoint (if any), then (re)embed golden vectors.

    Golden windows come from ``data`` when given, else the file's existing golden
    windows are re-scored. Raises :class:`ModelFileError` when the difference exceeds
    ``atol``; the file is only rewritten when verification passes.
    """
    model = load_model(model_path)
    runner = OnnxRunner(model)
    meta = runner.meta
    if data is not None:
        dataset = data_mod.load_dataset(data, meta.features)
        raw = data_mod.windows_from(dataset.segments, meta.window, meta.stride)
    else:
        raw = np.array([g.window for g in meta.golden], dtype=np.float64)
    real = raw[np.linspace(0, len(raw) - 1, min(len(raw), 64)).astype(int)] if len(raw) else raw
    d_rand = d_real = None
    if checkpoint is not None:
        d_rand, d_real = torch_vs_onnx(runner, checkpoint, scale_windows(meta, real))
        worst = max(d for d in (d_rand, d_real) if d is not None)
        if worst > atol:
            raise ModelFileError(
                f"torch and ONNX outputs differ by {worst:.3g} > atol {atol:g}")
    if len(raw):
        embed_golden(model, raw, golden_count)
        save_model(model, model_path)
    rel = golden_check(OnnxRunner(model_path))
    return VerifyResult(d_rand, d_real, atol, len(OnnxRunner(model_path).meta.golden), rel)
