"""The committed demo model is what `python -m export.demo_model` builds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agent.model_meta import ModelMeta
from agent.onnx_scorer import OnnxModel
from export.demo_model import DEFAULT_OUT, build


def test_committed_demo_model_matches_a_rebuild(tmp_path: Path) -> None:
    fresh = OnnxModel(build(tmp_path / "m.onnx"), providers=("cpu",))
    shipped = OnnxModel.from_path(DEFAULT_OUT, providers=("cpu",))
    a: ModelMeta = fresh.meta
    b: ModelMeta = shipped.meta
    assert (a.features, a.window, a.reduction) == (b.features, b.window, b.reduction)
    assert a.tail == b.tail
    assert np.isclose(a.threshold, b.threshold, rtol=1e-4)
    for g in b.golden:  # the shipped golden vectors score the same on the rebuilt model
        got = fresh.score_window(np.asarray(g.window)).raw
        assert np.isclose(got, g.raw_score, rtol=1e-3)
