from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from sklearn.metrics import roc_auc_score

from agent.model_meta import META_KEY, ModelMeta
from export.onnx_meta import OnnxRunner, get_meta
from export.pca_ae import build_pca_model, fit_pca, pca_graph
from tests.export.export_helpers import FEATURES, WINDOW, inject_spikes, synthetic_rows

REPO = Path(__file__).resolve().parents[2]


def test_export_pca_and_pure_modules_do_not_import_torch() -> None:
    code = ("import sys, export, export.pca_ae, export.scoring, export.signing, export.calibrate,"
            " export.train, export.cli, export.inspect_model, export.verify, export.ensemble;"
            " print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "False"


def test_graph_is_flatten_project_reconstruct() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4, 2)).astype(np.float32)
    p, mean = fit_pca(x, n_components=8)
    assert p.shape == (8, 8)  # all components -> identity reconstruction
    model = pca_graph(p, mean, 4, 2)
    ops = [n.op_type for n in model.graph.node]
    assert ops == ["Reshape", "Sub", "MatMul", "MatMul", "Add", "Reshape"]
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"input": x[:3]})[0], x[:3], atol=1e-4)


def test_variance_rule_picks_few_components() -> None:
    t = np.arange(500.0)
    x = np.stack([np.c_[np.sin((t[i:i + 8] + 0) / 5), np.sin(t[i:i + 8] / 5)]
                  for i in range(400)])
    p, _ = fit_pca(x, variance=0.99)
    assert p.shape[1] <= 3


def test_build_pca_model_one_call(tmp_path: Path) -> None:
    out = tmp_path / "pca.onnx"
    blob = build_pca_model(synthetic_rows(), FEATURES, WINDOW, n_components=6, name="demo",
                           version="2.0.0", out=out)
    assert out.read_bytes() == blob
    model = onnx.load_from_string(blob)
    raw = next(p.value for p in model.metadata_props if p.key == META_KEY)
    meta = ModelMeta.from_json(raw)
    assert meta == get_meta(model)
    assert (meta.name, meta.version, meta.architecture, meta.output) == (
        "demo", "2.0.0", "pca", "reconstruction")
    assert meta.features == FEATURES and meta.window == WINDOW and not meta.scaling_in_graph
    assert 3 <= len(meta.golden) <= 5
    assert meta.threshold == meta.thresholds["quantile_0.995"]
    runner = OnnxRunner(blob)
    windows = np.array([g.window for g in meta.golden])
    np.testing.assert_allclose(runner.raw_errors(windows), [g.raw_score for g in meta.golden],
                               rtol=1e-9)


def test_pca_scores_spikes_above_normal() -> None:
    rows = synthetic_rows(2000, seed=2)
    runner = OnnxRunner(build_pca_model(rows[:1400], FEATURES, WINDOW, n_components=6))
    from export.data import make_windows

    normal = make_windows(rows[1400:], WINDOW, 4)
    spiked = inject_spikes(normal, np.asarray(runner.meta.scaler.scale))
    scores = np.r_[runner.raw_errors(normal), runner.raw_errors(spiked)]
    labels = np.r_[np.zeros(len(normal)), np.ones(len(spiked))]
    assert roc_auc_score(labels, scores) > 0.9
