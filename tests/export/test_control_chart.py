"""WindowMeanChart: streaming == vectorised == exported ONNX; direction, tolerance, memory."""

from __future__ import annotations

import numpy as np
import pytest

from agent.onnx_scorer import OnnxModel
from export.control_chart import ChannelRule, WindowMeanChart, trailing_means


def _data(n: int = 900, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.c_[rng.normal(0.2, 0.002, n), np.round(rng.normal(32.3, 0.5, n)), rng.normal(5, 1, n)]
    x[600:700, 1] -= 2.0  # a lasting drop of the quantised channel
    x[750:800, 0] *= 1.03  # a 3 % rise of a very steady channel
    return x


def _chart(**kw: object) -> WindowMeanChart:
    return WindowMeanChart(("acc", "flow", "noise"), **kw)  # type: ignore[arg-type]


def test_trailing_means_are_causal() -> None:
    x = np.arange(10.0)[:, None]
    m = trailing_means(x, 3)
    assert m[:3, 0].tolist() == [0.0, 0.5, 1.0] and m[9, 0] == 8.0


def test_stream_equals_vectorised_and_detects_the_episode() -> None:
    x = _data()
    det = _chart(window=10, threshold=5.0).fit(x[:400])
    vec = det.score_rows(x)
    stream = np.array([det.score_one(v) for v in x])
    np.testing.assert_allclose(stream, vec, rtol=1e-9, atol=1e-12)
    assert (vec[620:700] >= 1).all()
    assert (vec[420:590] < 1).mean() > 0.95


def test_direction_and_relative_tolerance() -> None:
    x = _data()
    up_only = _chart(window=10, rules={"flow": ChannelRule(direction="up")}).fit(x[:400])
    assert (up_only.score_rows(x)[620:700] < 1).all()  # the drop is ignored
    tol = _chart(window=10, rules={"acc": ChannelRule(rel_tolerance=0.05)}).fit(x[:400])
    plain = _chart(window=10).fit(x[:400])
    assert (plain.score_rows(x)[760:800] >= 1).all()  # 3 % of a very steady level: alarm
    assert (tol.score_rows(x)[760:800] < 1).all()  # ... but within a 5 % tolerance


def test_onnx_export_scores_like_numpy() -> None:
    x = _data()
    det = _chart(window=10, threshold=4.0,
                 rules={"acc": ChannelRule(rel_tolerance=0.01, direction="up")}).fit(x[:400])
    model = OnnxModel(det.to_onnx(golden_rows=x[:400]), providers=("cpu",))
    assert model.meta.output == "score" and model.window == 10
    wins = np.stack([x[i - 9 : i + 1] for i in range(9, len(x))])
    raw = np.array([s.raw for s in model.score_batch(wins)])
    ref = det.score_rows(x)[9:]
    np.testing.assert_allclose(raw, ref, rtol=1e-3, atol=1e-4)
    s = model.score_window(wins[650]).score
    assert s == pytest.approx(WindowMeanChart.unit(ref[650]), rel=1e-3)


def test_validation_and_bounded_memory() -> None:
    with pytest.raises(ValueError):
        _chart(window=0)
    with pytest.raises(ValueError):
        _chart(rules={"nope": ChannelRule()})
    with pytest.raises(ValueError):
        ChannelRule(direction="sideways")
    with pytest.raises(RuntimeError):
        _chart().score_one([0.0, 0.0, 0.0])
    det = _chart(window=5).fit(_data()[:400])
    for v in _data(3000, seed=1):
        det.score_one(v)
    assert det._ring.shape == (5, 3)


@pytest.mark.parametrize("decay", [0.0, 0.2])
def test_weighted_window_stream_vectorised_onnx_agree(decay: float) -> None:
    x = _data()
    det = _chart(window=12, threshold=4.0, decay=decay,
                 rules={"flow": ChannelRule(rel_tolerance=0.01)}).fit(x[:400])
    vec = det.score_rows(x)
    stream = np.array([det.score_one(v) for v in x])
    np.testing.assert_allclose(stream, vec, rtol=1e-9, atol=1e-12)
    model = OnnxModel(det.to_onnx(golden_rows=x[:400]), providers=("cpu",))
    wins = np.stack([x[i - 11 : i + 1] for i in range(11, len(x))])
    raw = np.array([s.raw for s in model.score_batch(wins)])
    np.testing.assert_allclose(raw, vec[11:], rtol=1e-3, atol=1e-4)
    assert (vec[625:700] >= 1).all()


def test_weighted_window_weights_recent_points_more() -> None:
    x = np.array([[0.0], [0.0], [0.0], [4.0]])
    q = 0.5  # weights newest first 1, .5, .25, .125
    m = trailing_means(x, 4, decay=q)
    assert m[3, 0] == pytest.approx(4.0 / (1 + 0.5 + 0.25 + 0.125))
    assert m[0, 0] == 0.0 and trailing_means(x, 4)[3, 0] == 1.0
    ones = trailing_means(np.ones((30, 2)), 7, decay=0.3)
    np.testing.assert_allclose(ones, 1.0)  # normalised, also while the window fills


def test_weighted_window_follows_a_step_sooner_and_forgets_it_sooner() -> None:
    x = np.r_[np.zeros(30), np.ones(10), np.zeros(30)][:, None]
    flat, ewma = trailing_means(x, 10)[:, 0], trailing_means(x, 10, decay=0.2)[:, 0]
    into, out = slice(31, 39), slice(41, 49)  # strictly inside the transitions
    assert (ewma[into] > flat[into]).all() and (ewma[out] < flat[out]).all()
    assert flat[39] == pytest.approx(1.0) and ewma[39] == pytest.approx(1.0)
    assert flat[49] == pytest.approx(0.0) and ewma[49] == pytest.approx(0.0)


@pytest.mark.parametrize("decay", [0.0, 0.2])
def test_scores_are_causal(decay: float) -> None:
    x = _data()
    det = _chart(window=10, decay=decay).fit(x[:400])
    base = det.score_rows(x)
    future = x.copy()
    future[650:] = future[650:] * 3.0 + 7.0  # anything may happen later ...
    changed = det.score_rows(future)
    np.testing.assert_array_equal(changed[:650], base[:650])  # ... the past does not move
    assert not np.array_equal(changed[650:], base[650:])
    det.reset()
    streamed = np.array([det.score_one(v) for v in future[:650]])
    np.testing.assert_allclose(streamed, base[:650], rtol=1e-9, atol=1e-12)


def test_decay_is_validated() -> None:
    with pytest.raises(ValueError, match="decay"):
        _chart(decay=1.0)
    with pytest.raises(ValueError, match="decay"):
        _chart(decay=-0.1)
