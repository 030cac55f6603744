from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.model_meta import ModelMeta, Scaler
from export import data as data_mod
from export.errors import DataError
from export.scoring import calibrated, channel_errors, scale_windows, window_errors
from tests.export.export_helpers import FEATURES, synthetic_rows, write_csv


def _meta(output: str = "reconstruction") -> ModelMeta:
    return ModelMeta(name="m", version="1.0.0", features=("a", "b"), window=3,
                     scaler=Scaler(center=(1.0, 2.0), scale=(2.0, 4.0)), threshold=0.5,
                     output=output)


def test_window_errors_follow_the_documented_reduction() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 3, 2)).astype(np.float32)
    recon = rng.normal(size=(5, 3, 2)).astype(np.float32)
    per_channel = ((x.astype(np.float64) - recon) ** 2).mean(axis=1)
    np.testing.assert_allclose(channel_errors(_meta(), recon, x), per_channel)
    np.testing.assert_allclose(window_errors(_meta(), recon, x), per_channel.mean(axis=1))
    np.testing.assert_allclose(window_errors(_meta("channel_error"), per_channel, x),
                               per_channel.mean(axis=1))
    scores = per_channel.mean(axis=1)[:, None]
    np.testing.assert_allclose(window_errors(_meta("score"), scores, x), scores[:, 0])


def test_calibrated_maps_threshold_to_half_like_the_metadata() -> None:
    meta = _meta()
    raw = np.array([0.0, 0.5, 1.0, np.nan])
    np.testing.assert_allclose(calibrated(meta, raw)[:3], [meta.calibrate(v) for v in raw[:3]])
    assert calibrated(meta, raw)[3] == 1.0


def test_scale_windows_uses_center_and_scale() -> None:
    out = scale_windows(_meta(), np.array([[[3.0, 6.0]]]))
    np.testing.assert_allclose(out, [[[1.0, 1.0]]])
    assert out.dtype == np.float32


@pytest.mark.parametrize("sep", [";", ","])
def test_load_csv_detects_separator_and_skips_label_columns(tmp_path: Path, sep: str) -> None:
    rows = synthetic_rows(50)
    ds = data_mod.load_dataset(write_csv(tmp_path / "d.csv", rows, sep=sep))
    assert ds.features == FEATURES
    np.testing.assert_allclose(ds.segments[0], rows, atol=1e-6)
    assert len(ds.sha256) == 64


def test_load_csv_explicit_features_and_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("timestamp,a,b,c\n1,1.0,2.0,x\n2,3.0,,5\n3,4.0,5.0,6\n", encoding="utf-8")
    ds = data_mod.load_dataset(path, ["b", "a"])
    assert ds.features == ("b", "a")
    np.testing.assert_allclose(ds.segments[0], [[2.0, 1.0], [5.0, 4.0]])
    assert ds.dropped_rows == 1
    with pytest.raises(DataError, match="missing feature"):
        data_mod.load_dataset(path, ["nope"])


def test_directory_is_one_segment_per_file(tmp_path: Path) -> None:
    write_csv(tmp_path / "a.csv", synthetic_rows(40))
    write_csv(tmp_path / "b.csv", synthetic_rows(30, seed=3), sep=",")
    ds = data_mod.load_dataset(tmp_path)
    assert [len(s) for s in ds.segments] == [40, 30]
    assert len(data_mod.windows_from(ds.segments, 16, 1)) == (40 - 15) + (30 - 15)


def test_robust_scaler_median_iqr_and_fallbacks() -> None:
    rng = np.random.default_rng(0)
    rows = np.c_[rng.normal(10, 2, 4000), np.r_[np.zeros(3990), np.ones(10)], np.full(4000, 7.0)]
    sc = data_mod.fit_robust_scaler(rows)
    assert sc.center[0] == pytest.approx(10, abs=0.1)
    assert sc.scale[0] == pytest.approx(2 * 1.349, rel=0.05)  # IQR of N(0, 2)
    assert sc.scale[1] == pytest.approx(1.349 * rows[:, 1].std())  # IQR 0 -> std fallback
    assert sc.scale[2] == pytest.approx(7e-6)  # constant column -> clamped, still > 0


def test_windows_and_time_ordered_split() -> None:
    rows = np.arange(40, dtype=float).reshape(20, 2)
    w = data_mod.make_windows(rows, 5, 3)
    assert w.shape == (6, 5, 2)
    np.testing.assert_array_equal(w[1, 0], rows[3])
    ds = data_mod.Dataset(("a", "b"), (rows,), "")
    train, val = data_mod.split_time_ordered(ds, 0.25, 5)
    assert train[0][-1, 0] < val[0][0, 0]
    with pytest.raises(DataError):
        data_mod.split_time_ordered(ds, 0.1, 5)
