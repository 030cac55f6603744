"""Thresholds from held-out normal data: an empirical quantile, or peaks-over-threshold.

POT (Siffer et al., "Anomaly detection in streams with extreme value theory", 2017):
take the errors above an initial high quantile ``t = Q(initial_q)``, fit a
generalized Pareto distribution (shape ξ, scale σ) to the exceedances ``x - t`` by
maximum likelihood (scipy; probability-weighted moments if that fails), and return
the level exceeded with probability ``1 - q``::

    z = t + σ/ξ · ((n (1 - q) / N_t)^(-ξ) - 1)        (ξ ≠ 0)
    z = t - σ · log(n (1 - q) / N_t)                   (ξ = 0)

With ``q > initial_q`` the tail probability ratio is below 1, so ``z > t``. Unlike
the plain quantile, ``z`` can extrapolate beyond the largest error seen.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export import data as data_mod
from export.errors import DataError
from export.onnx_meta import OnnxRunner, rewrite_meta

MIN_EXCEEDANCES = 10


@dataclass(frozen=True)
class PotFit:
    threshold: float
    initial: float
    shape: float
    scale: float
    n_exceed: int
    fallback: str = ""


def quantile_threshold(errors: np.ndarray, q: float) -> float:
    errors = np.asarray(errors, dtype=np.float64)
    if errors.size == 0:
        raise DataError("no errors to calibrate on")
    return float(np.quantile(errors, q))


def _gpd_pwm(y: np.ndarray) -> tuple[float, float]:
    """Hosking & Wallis (1987) probability-weighted moments: (shape ξ, scale σ)."""
    y = np.sort(y)
    n = len(y)
    a0 = float(y.mean())
    p = (np.arange(1, n + 1) - 0.35) / n
    a1 = float(np.mean((1.0 - p) * y))
    denom = a0 - 2.0 * a1
    if denom <= 0:
        return 0.0, a0
    k = a0 / denom - 2.0  # Hosking's k = -ξ
    return -k, 2.0 * a0 * a1 / denom


def _gpd_mle(y: np.ndarray) -> tuple[float, float]:
    from scipy import stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        shape, _, scale = stats.genpareto.fit(y, floc=0.0)
    return float(shape), float(scale)


def pot_threshold(errors: np.ndarray, q: float = 0.995, initial_q: float = 0.98) -> PotFit:
    """Peaks-over-threshold estimate of the ``q`` quantile (see the module docstring)."""
    if not initial_q < q < 1.0:
        raise ValueError(f"need initial_q < q < 1, got {initial_q}, {q}")
    x = np.asarray(errors, dtype=np.float64)
    t = quantile_threshold(x, initial_q)
    y = x[x > t] - t
    if len(y) < MIN_EXCEEDANCES:
        return PotFit(quantile_threshold(x, q), t, 0.0, 0.0, len(y),
                      fallback=f"only {len(y)} exceedances; used the empirical quantile")
    fallback = ""
    try:
        shape, scale = _gpd_mle(y)
        if not (math.isfinite(shape) and math.isfinite(scale) and scale > 0):
            raise ValueError("non-finite fit")
    except (ValueError, RuntimeError, FloatingPointError):
        shape, scale = _gpd_pwm(y)
        fallback = "MLE failed; used probability-weighted moments"
    ratio = len(x) * (1.0 - q) / len(y)
    if abs(shape) < 1e-9:
        z = t - scale * math.log(ratio)
    else:
        z = t + scale / shape * (ratio ** (-shape) - 1.0)
    return PotFit(float(z), t, shape, scale, len(y), fallback)


def thresholds_for(
    errors: np.ndarray, method: str, q: float, initial_q: float = 0.98
) -> tuple[float, dict[str, float]]:
    """The chosen threshold plus every candidate, for the metadata ``thresholds`` dict."""
    quant = quantile_threshold(errors, q)
    pot = pot_threshold(errors, q, initial_q)
    table = {
        f"quantile_{q:g}": quant,
        f"pot_{q:g}": pot.threshold,
        "p50": quantile_threshold(errors, 0.5),
        "max": float(np.max(errors)),
    }
    chosen = pot.threshold if method == "pot" else quant
    # The metadata contract needs threshold > 0; a perfect fit would give 0.
    chosen = max(chosen, 1e-12)
    return chosen, table


def calibrate_file(
    model_path: str | Path,
    data_path: str | Path,
    method: str = "quantile",
    q: float = 0.995,
    initial_q: float = 0.98,
) -> tuple[float, dict[str, float]]:
    """Compute thresholds on held-out normal data and rewrite them into the ONNX file."""
    runner = OnnxRunner(model_path)
    meta = runner.meta
    dataset = data_mod.load_dataset(data_path, meta.features)
    windows = data_mod.windows_from(dataset.segments, meta.window, meta.stride)
    if len(windows) == 0:
        raise DataError(f"{data_path}: fewer rows than one window ({meta.window})")
    errors = runner.raw_errors(windows)
    threshold, table = thresholds_for(errors, method, q, initial_q)
    table["n_windows"] = float(len(errors))
    rewrite_meta(model_path, threshold=threshold, thresholds=table)
    return threshold, table
