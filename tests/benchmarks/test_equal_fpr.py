"""The equal-FPR comparison of benchmarks/synthetic.py (benchmarks/equal_fpr.py): the
policy replay reproduces the engine, the oracle threshold is the lowest within the FPR
budget, and the point / event / position figures count what they claim."""

from __future__ import annotations

import copy
import itertools
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from equal_fpr import (  # noqa: E402
    at_threshold,
    clear_for,
    metrics,
    oracle_threshold,
    point_fpr,
    replay_policy,
)

from agent.config import AlertConfig, config_from_dict  # noqa: E402
from agent.engine import Engine  # noqa: E402
from agent.onnx_scorer import OnnxModel  # noqa: E402
from agent.synthetic import Synthetic, multisensor  # noqa: E402

DEMO = ROOT / "agent" / "resources" / "demo.yaml"


def _autoencoder_everywhere(alerts: AlertConfig | None = None) -> dict[str, object]:
    cfg = yaml.safe_load(DEMO.read_text())
    cfg = copy.deepcopy(cfg)
    cfg["detectors"]["zscore"]["enabled"] = False
    cfg["detectors"]["river"]["enabled"] = False
    if alerts is not None:
        cfg["alerts"].update(threshold=alerts.threshold, clear_threshold=alerts.clear_threshold,
                             clear_after=alerts.clear_after)
    return cfg


def _run(cfg_dict: dict[str, object], data: Synthetic, model: OnnxModel
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cfg = config_from_dict(cfg_dict, str(DEMO))
    eng = Engine(cfg, model=model)
    sid = cfg.streams[0].id
    scores, scored, alerts = (np.zeros(len(data.ts)), np.zeros(len(data.ts), bool),
                              np.zeros(len(data.ts), bool))
    for i, p in enumerate(data.points(sid)):
        d = eng.process(p)
        scores[i], scored[i], alerts[i] = d.score, int(d.stage) != 0, d.alert
    return scores, scored, alerts


def test_replayed_policy_reproduces_the_engine_at_every_threshold() -> None:
    model = OnnxModel.from_path(ROOT / "agent" / "resources" / "demo-ae.onnx",
                                providers=("cpu",))
    data = multisensor(n=900, seed=5)
    pol = config_from_dict(yaml.safe_load(DEMO.read_text()), str(DEMO)).alerts
    scores, scored, alerts = _run(_autoencoder_everywhere(), data, model)
    assert alerts.any() and not alerts.all()
    assert np.array_equal(replay_policy(scores, scored, pol), alerts)
    for t, hold in ((0.8, None), (0.65, 3)):
        moved = at_threshold(pol, t, hold)
        _s, _ok, engine_alerts = _run(_autoencoder_everywhere(moved), data, model)
        assert np.array_equal(replay_policy(scores, scored, moved), engine_alerts)
        assert not np.array_equal(engine_alerts, alerts)


def test_clear_threshold_keeps_the_odds_ratio() -> None:
    base = AlertConfig(threshold=0.5, k=1, n=1, clear_threshold=0.4, clear_after=1)
    assert at_threshold(base, 0.5) is base
    assert clear_for(0.5, base) == pytest.approx(0.4)
    c = clear_for(0.8, base)  # threshold odds 4 -> clear odds 8/3
    assert c == pytest.approx((8 / 3) / (1 + 8 / 3))
    assert at_threshold(base, 0.8, 3).clear_after == 3


def test_oracle_threshold_is_the_lowest_within_the_fpr_budget() -> None:
    rng = np.random.default_rng(0)
    n, warm = 3000, 100
    labels = np.zeros(n, dtype=bool)
    labels[rng.choice(np.arange(warm, n), 150, replace=False)] = True
    scores = np.clip(rng.normal(0.35, 0.12, n) + 0.3 * labels, 0.0, 0.99)
    scored = np.ones(n, dtype=bool)
    base = AlertConfig(threshold=0.5, k=1, n=1, clear_threshold=0.4, clear_after=1)
    budget = 0.01
    t = oracle_threshold(scores, scored, base, labels, warm, budget)
    fpr = point_fpr(replay_policy(scores, scored, at_threshold(base, t)), labels, warm)
    below = point_fpr(replay_policy(scores, scored, at_threshold(base, t - 1e-4)), labels, warm)
    assert fpr <= budget < below
    # k = n = 1: alerts at a higher threshold are a subset of those at a lower one
    grid = [replay_policy(scores, scored, at_threshold(base, x)) for x in (0.4, 0.5, 0.6, 0.7)]
    for lo, hi in itertools.pairwise(grid):
        assert not (hi & ~lo).any()


def test_metrics_count_points_events_and_positions() -> None:
    n, warm = 120, 10
    labels = np.zeros(n, dtype=bool)
    kinds = np.full(n, "", dtype=object)
    labels[20:30], kinds[20:30] = True, "noise"   # hit on 2 of 10 points
    labels[60:65], kinds[60:65] = True, "drop"    # found 3 points after its end
    labels[50], kinds[50] = True, "spike"         # missed
    alerts = np.zeros(n, dtype=bool)
    alerts[[21, 25]] = True
    alerts[67] = True     # within 5 after the drop: event found, and a false positive
    alerts[110] = True    # a false positive more than 30 points away from any episode
    data = Synthetic(np.arange(n, dtype=float), np.zeros((n, 1)), ("x",), labels, kinds)
    m = metrics(alerts, data, warm)
    assert m["recall"] == pytest.approx(2 / 16)
    assert m["fpr"] == pytest.approx(2 / (n - warm - 16))
    assert m["event_recall"] == pytest.approx(2 / 3)
    assert m["fp_after_episode_share"] == pytest.approx(0.5)
    k = m["kinds"]
    assert k["noise"]["point_recall"] == pytest.approx(0.2)
    assert k["noise"]["position_hits"] == [0, 1, 0, 0, 0, 1, 0, 0, 0, 0]
    assert k["drop"]["event_recall"] == 1.0 and k["drop"]["point_recall"] == 0.0
    assert k["spike"]["event_recall"] == 0.0
