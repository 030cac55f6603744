"""benchmarks/skab.py: the vectorised CV path is the replay path (ONNX chart + alert policy)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import skab  # noqa: E402
import skab_metric as sm  # noqa: E402

from agent.config import load_config  # noqa: E402
from agent.replay import replay_table  # noqa: E402

needs_data = pytest.mark.skipif(
    not sm.available(),
    reason=f"SKAB dataset not found at {sm.data_dir()} (expected ../shared/datasets/skab)",
)


def test_policy_alerts_raise_on_a_hit_and_clear_after_n_misses() -> None:
    r = np.zeros(sm.N_TRAIN + 12)
    r[5] = 2.0  # a training row never alerts
    r[sm.N_TRAIN + 2] = 1.0
    r[sm.N_TRAIN + 4] = 1.5
    a = skab.policy_alerts(r, clear_after=3)[sm.N_TRAIN:]
    assert a.tolist() == [0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    assert skab.policy_alerts(r, clear_after=1)[sm.N_TRAIN:].tolist() == \
        [0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0]


@needs_data
@pytest.mark.parametrize("key", ["valve1/5", "other/9"])
def test_vectorised_chart_and_policy_match_replay_with_onnx(key: str) -> None:
    f = next(g for g in sm.load_files() if g.key == key)
    cfg = load_config(skab.CONFIG)
    stage3 = next(v for v in skab.variants(cfg) if v.name == "stage3").config
    res = replay_table(stage3, f.table, model=skab.chart_model(skab.CHART, f),
                       warmup_rows=sm.N_TRAIN)
    idx = [f.table.columns.index(c) for c in skab.CHART["channels"]]
    x = f.table.values[:, idx]
    ratios = skab.make_chart(skab.CHART, x[: sm.N_TRAIN]).score_rows(x)
    test = slice(sm.N_TRAIN, None)
    np.testing.assert_allclose(res.scores[test], ratios[test] / (1 + ratios[test]),
                               rtol=1e-4, atol=1e-6)
    clear_after = cfg.alerts.clear_after
    vec = skab.policy_alerts(ratios, clear_after)
    assert vec[test].any() and not vec[test].all()
    # the float32 graph could land on the other side of 1.0 only for a ratio within 1e-5 of
    # it; these files have none, so the alerts must agree row for row
    assert not (np.abs(ratios[test] - 1.0) < 1e-5).any()
    np.testing.assert_array_equal(res.alerts[test], vec[test])
