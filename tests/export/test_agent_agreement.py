"""The exporter's numbers are the agent's numbers: same scaling, same reduction."""

from __future__ import annotations

import numpy as np
import pytest

from agent.onnx_scorer import OnnxModel
from export.data import make_windows
from export.onnx_meta import OnnxRunner
from export.pca_ae import build_pca_model
from tests.export.export_helpers import FEATURES, WINDOW, synthetic_rows


@pytest.mark.parametrize(("reduction", "tail"), [("mean", 1), ("tail_max", 3)])
def test_pca_model_scores_like_the_agent(reduction: str, tail: int) -> None:
    blob = build_pca_model(synthetic_rows(), FEATURES, WINDOW, n_components=6,
                           reduction=reduction, tail=tail)
    agent_model = OnnxModel(blob, providers=("cpu",))  # also checks the golden vectors
    runner = OnnxRunner(blob)
    assert runner.meta.reduction == reduction
    assert bool(runner.meta.channel_scale) == (reduction == "tail_max")
    windows = make_windows(synthetic_rows(300, seed=9), WINDOW, 7)
    ours = runner.raw_errors(windows)
    theirs = np.array([s.raw for s in agent_model.score_batch(windows)])
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)


@pytest.mark.parametrize("arch", ["dense", "ensemble"])
def test_trained_models_load_in_the_agent(trained, arch: str) -> None:
    res = trained(arch)
    agent_model = OnnxModel(res.model_path.read_bytes(), providers=("cpu",))
    windows = np.array([g.window for g in res.meta.golden])
    theirs = np.array([s.raw for s in agent_model.score_batch(windows)])
    np.testing.assert_allclose(theirs, [g.raw_score for g in res.meta.golden], rtol=1e-9)
