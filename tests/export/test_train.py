"""Every architecture trains on synthetic data, exports, and agrees with its ONNX file."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from sklearn.metrics import roc_auc_score

from agent.model_meta import META_KEY, ModelMeta
from export.config import config_from_dict
from export.data import load_dataset, make_windows
from export.onnx_meta import OnnxRunner, graph_bytes, load_model
from export.scoring import scale_windows
from export.train import train_run
from tests.export.export_helpers import FEATURES, WINDOW, inject_spikes, synthetic_rows, tiny_config

TORCH_ARCHS = ["dense", "conv", "lstm", "transformer", "vae"]
ALL_ARCHS = [*TORCH_ARCHS, "pca", "ensemble"]


@pytest.mark.parametrize("arch", ALL_ARCHS)
def test_run_dir_and_metadata(trained, arch: str) -> None:
    res = trained(arch)
    for name in ("model.onnx", "meta.json", "report.json", "report.png"):
        assert (res.run_dir / name).stat().st_size > 0
    assert (res.run_dir / "model.pt").exists() == (arch in TORCH_ARCHS)
    model = load_model(res.model_path)
    raw = next(p.value for p in model.metadata_props if p.key == META_KEY)
    meta = ModelMeta.from_json(raw)
    assert meta == res.meta
    assert ModelMeta.from_json(meta.to_json()) == meta
    assert json.loads((res.run_dir / "meta.json").read_text()) == json.loads(meta.to_json())
    assert meta.features == FEATURES and meta.window == WINDOW and meta.architecture == arch
    # Autoencoders ship fused (export/fuse.py); the reconstruction graph is kept next to it.
    assert meta.output == ("score" if arch == "ensemble" else "error")
    assert (res.unfused_path is None) == (arch == "ensemble")
    if res.unfused_path is not None:
        unfused = ModelMeta.from_json(next(p.value for p in load_model(
            res.unfused_path).metadata_props if p.key == META_KEY))
        assert unfused.output == "reconstruction" and unfused.threshold == meta.threshold
    assert meta.threshold > 0 and 3 <= len(meta.golden) <= 5
    assert meta.frameworks["onnxruntime"] == ort.__version__
    report = json.loads((res.run_dir / "report.json").read_text())
    assert report["n_params"] > 0 and report["threshold"] == meta.threshold


@pytest.mark.parametrize("arch", ALL_ARCHS)
def test_onnx_dynamic_batch_and_golden(trained, arch: str) -> None:
    res = trained(arch)
    runner = OnnxRunner(res.reconstruction_path)
    x = np.random.default_rng(1).normal(size=(16, WINDOW, 3)).astype(np.float32)
    out16 = runner.run_scaled(x)
    out1 = np.concatenate([runner.run_scaled(x[i : i + 1]) for i in range(16)])
    np.testing.assert_allclose(out16, out1, rtol=1e-4, atol=1e-5)
    runner = OnnxRunner(res.model_path)
    windows = np.array([g.window for g in res.meta.golden])
    np.testing.assert_allclose(runner.raw_errors(windows),
                               [g.raw_score for g in res.meta.golden], rtol=1e-6)


@pytest.mark.parametrize("arch", TORCH_ARCHS)
def test_torch_and_onnx_agree(trained, arch: str, normal_csv) -> None:
    from export.to_onnx import load_checkpoint, torch_outputs

    res = trained(arch)
    assert res.report["max_abs_diff"] < 1e-4
    module = load_checkpoint(res.run_dir / "model.pt")
    ds = load_dataset(normal_csv)
    real = scale_windows(res.meta, make_windows(ds.segments[0], WINDOW, 37))
    onnx_out = OnnxRunner(res.reconstruction_path).run_scaled(real)
    assert float(np.max(np.abs(torch_outputs(module, real) - onnx_out))) < 1e-4


def test_pca_matches_its_numpy_reference(trained) -> None:
    report = trained("pca").report
    assert report["max_abs_diff_against"] == "numpy" and report["max_abs_diff"] < 1e-4
    assert report["n_components"] == 6


def test_ensemble_matches_its_scikit_learn_reference(trained) -> None:
    res = trained("ensemble")
    assert res.report["max_abs_diff_against"] == "scikit-learn"
    assert res.report["max_abs_diff"] < 1e-3
    assert res.report["members"] == ["elliptic", "iforest", "ocsvm"]
    out = OnnxRunner(res.model_path).run_scaled(
        np.zeros((4, WINDOW, 3), dtype=np.float32))
    assert out.shape == (4,) and np.all(out >= 0)


@pytest.mark.parametrize("arch", ["dense", "lstm", "transformer", "vae", "ensemble"])
def test_same_data_and_config_give_the_same_model(trained, arch, normal_csv, tmp_path) -> None:
    first = trained(arch)
    again = train_run(config_from_dict(tiny_config(arch)), normal_csv, tmp_path / "again",
                      progress=False)
    a, b = load_model(first.model_path), load_model(again.model_path)
    assert graph_bytes(a) == graph_bytes(b)
    x = np.random.default_rng(2).normal(size=(8, WINDOW, 3)).astype(np.float32)
    np.testing.assert_array_equal(OnnxRunner(a).run_scaled(x), OnnxRunner(b).run_scaled(x))
    assert first.meta.threshold == again.meta.threshold


@pytest.mark.parametrize("arch", ["dense", "pca"])
def test_spikes_score_above_normal_windows(tmp_path, arch: str) -> None:
    from tests.export.export_helpers import write_csv

    rows = synthetic_rows(2000, seed=3)
    csv = write_csv(tmp_path / "train.csv", rows[:1500])
    cfg = tiny_config(arch, epochs=15)
    res = train_run(config_from_dict(cfg), csv, tmp_path / "run", progress=False)
    runner = OnnxRunner(res.model_path)
    normal = make_windows(rows[1500:], WINDOW, 4)
    spiked = inject_spikes(normal, np.asarray(res.meta.scaler.scale), seed=4)
    scores = np.r_[runner.raw_errors(normal), runner.raw_errors(spiked)]
    labels = np.r_[np.zeros(len(normal)), np.ones(len(spiked))]
    assert roc_auc_score(labels, scores) > 0.9
    assert np.mean(runner.raw_errors(spiked) > res.meta.threshold) > 0.5


def test_exported_graph_passes_the_onnx_checker(trained) -> None:
    onnx.checker.check_model(load_model(trained("transformer").model_path))
