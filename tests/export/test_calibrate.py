from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from export.calibrate import calibrate_file, pot_threshold, quantile_threshold, thresholds_for
from export.onnx_meta import OnnxRunner, read_meta
from export.pca_ae import build_pca_model
from tests.export.export_helpers import FEATURES, WINDOW, synthetic_rows


def test_quantile_threshold() -> None:
    assert quantile_threshold(np.arange(101.0), 0.9) == pytest.approx(90.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pot_on_exponential_tail(seed: int) -> None:
    x = np.random.default_rng(seed).exponential(1.0, 20_000)
    fit = pot_threshold(x, q=0.999, initial_q=0.98)
    assert not fit.fallback
    assert fit.threshold > fit.initial == pytest.approx(math.log(50), rel=0.05)
    assert abs(fit.shape) < 0.15  # exponential tail: GPD shape ~ 0
    assert fit.scale == pytest.approx(1.0, rel=0.15)
    assert fit.threshold == pytest.approx(math.log(1000), rel=0.1)  # true 0.999 quantile


def test_pot_extrapolates_beyond_the_sample() -> None:
    x = np.random.default_rng(3).exponential(1.0, 2_000)
    fit = pot_threshold(x, q=0.9999, initial_q=0.95)
    assert fit.threshold > np.max(x) * 0.9
    assert fit.threshold == pytest.approx(math.log(10_000), rel=0.2)


def test_pot_falls_back_with_too_few_exceedances() -> None:
    fit = pot_threshold(np.arange(50.0), q=0.995, initial_q=0.98)
    assert fit.fallback and fit.threshold == pytest.approx(np.quantile(np.arange(50.0), 0.995))


def test_thresholds_table_and_choice() -> None:
    x = np.random.default_rng(4).exponential(1.0, 5_000)
    q_thr, table = thresholds_for(x, "quantile", 0.995)
    p_thr, _ = thresholds_for(x, "pot", 0.995)
    assert q_thr == table["quantile_0.995"] and p_thr == table["pot_0.995"]
    assert {"p50", "max"} <= set(table)


@pytest.mark.parametrize("method", ["quantile", "pot"])
def test_calibrate_rewrites_the_model_file(tmp_path: Path, heldout_csv: Path,
                                           method: str) -> None:
    path = tmp_path / "m.onnx"
    build_pca_model(synthetic_rows(), FEATURES, WINDOW, n_components=6, out=path)
    before = read_meta(path)
    threshold, table = calibrate_file(path, heldout_csv, method=method, q=0.99,
                                      initial_q=0.9)
    after = read_meta(path)
    assert after.threshold == threshold == table[f"{method}_0.99"]
    assert after.thresholds == table and after.golden == before.golden
    errors = OnnxRunner(path).raw_errors(
        np.stack([synthetic_rows(600, seed=1)[i : i + WINDOW] for i in range(600 - WINDOW + 1)]))
    if method == "quantile":
        assert threshold == pytest.approx(np.quantile(errors, 0.99))
    else:
        assert threshold > np.quantile(errors, 0.9)
