"""Stage 3 in batches: :class:`ScoredBatch` arrays against per-window results and against
a direct onnxruntime run of the same exported model (issue #9, batch overhead)."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from types import FrameType

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from agent.cascade import StreamCascade
from agent.config import EscalationConfig
from agent.model_meta import reduce_errors
from agent.model_updates import WatchedModel
from agent.onnx_scorer import OnnxModel, Scored, ScoredBatch, calibrate_many
from agent.synthetic import iot, multisensor
from export.fuse import CHANNEL_OUTPUT, RAW_OUTPUT, fuse
from export.onnx_meta import get_meta
from export.pca_ae import build_pca_model
from tests.agent.helpers import IOT_CHANNELS, agent_config, pca_model

WINDOW = 10
REDUCTIONS = {"mean": {"reduction": "mean"}, "tail_max": {"reduction": "tail_max", "tail": 3}}
_BLOBS: dict[tuple[str, bool], bytes] = {}


def _blob(reduction: str, fused: bool) -> bytes:
    """A real PCA autoencoder exported to ONNX (fused: scaling and reduction in the graph)."""
    key = (reduction, fused)
    if key not in _BLOBS:
        s = multisensor(n=2000, seed=21, anomaly_rate=0.0)
        unfused = build_pca_model(s.values, s.channels, window=WINDOW, n_components=4,
                                  **REDUCTIONS[reduction])
        _BLOBS[key] = (fuse(onnx.load_from_string(unfused)).SerializeToString() if fused
                       else unfused)
    return _BLOBS[key]


def _model(reduction: str = "tail_max", fused: bool = True) -> OnnxModel:
    return OnnxModel(_blob(reduction, fused), providers=("cpu",))


def _windows(n: int, seed: int = 0) -> np.ndarray:
    """Unseen windows (float64, raw units); every fourth one with a spike at its end."""
    rng = np.random.default_rng(seed)
    rows = multisensor(n=n * 15 + WINDOW, seed=500 + seed, anomaly_rate=0.0).values
    starts = rng.integers(0, len(rows) - WINDOW, size=n)
    w = np.stack([rows[s : s + WINDOW] for s in starts]) + rng.normal(scale=0.05,
                                                                      size=(n, WINDOW, 4))
    w[::4, -1, :] += 20.0
    return w


def _direct(blob: bytes, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw and per-channel errors from our own onnxruntime session on the same bytes."""
    meta = get_meta(onnx.load_from_string(blob))
    sess = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    x = windows.astype(np.float32)
    if meta.output == "error":
        raw, per = sess.run([RAW_OUTPUT, CHANNEL_OUTPUT], {meta.input_name: x})
        return raw.astype(np.float64), per
    x = (x - np.asarray(meta.scaler.center, np.float32)) / np.asarray(meta.scaler.scale,
                                                                       np.float32)
    out = sess.run(None, {meta.input_name: x})[0]
    return reduce_errors(meta, (out.astype(np.float64) - x) ** 2)


@pytest.mark.parametrize("reduction", list(REDUCTIONS))
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
@pytest.mark.parametrize("batch", [1, 5, 16])
def test_batch_arrays_match_a_direct_run_and_per_window_scoring(
    reduction: str, fused: bool, batch: int
) -> None:
    m = _model(reduction, fused)
    wins = _windows(batch, seed=batch)
    res = m.score_batch(wins)
    assert isinstance(res, ScoredBatch) and len(res) == batch
    assert res.raw.shape == res.score.shape == (batch,)
    assert res.raw.dtype == (np.float32 if fused else np.float64)  # as computed, no cast
    assert res.score.dtype == np.float64
    assert res.channel_errors is not None and res.channel_errors.shape == (batch, 4)
    raw_ref, per_ref = _direct(_blob(reduction, fused), wins)
    np.testing.assert_allclose(res.raw, raw_ref, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(res.channel_errors, per_ref, rtol=1e-5, atol=1e-9)
    assert res.score.tolist() == [m.meta.calibrate(r) for r in res.raw.tolist()]
    if batch > 1:  # the model works: spiked windows above the threshold, the rest below
        assert res.score[::4].min() > 0.5 > np.delete(res.score, np.s_[::4]).max()
    for i, one in enumerate(m.score_window(w) for w in wins):
        assert one.raw == pytest.approx(res.raw[i], rel=1e-5)
        np.testing.assert_allclose(one.channel_errors, res.channel_errors[i], rtol=1e-5)
        item = res[i]  # built lazily, from the arrays
        assert type(item) is Scored
        assert (item.raw, item.score) == (res.raw[i], res.score[i])
        np.testing.assert_array_equal(item.channel_errors, res.channel_errors[i])
    assert [tuple(r[:2]) for r in res] == list(zip(res.raw.tolist(), res.score.tolist(),
                                                    strict=True))


def test_batches_keep_their_own_arrays() -> None:
    m = _model()
    a_wins, b_wins = _windows(16, seed=1), _windows(16, seed=2)
    a = m.score_batch(a_wins)
    kept = (a.raw.copy(), a.score.copy(), a.channel_errors.copy())
    b = m.score_batch(b_wins)  # same batch size: same bound buffers underneath
    assert not np.array_equal(a.raw, b.raw)
    for got, want in zip((a.raw, a.score, a.channel_errors), kept, strict=True):
        np.testing.assert_array_equal(got, want)
    buf = m.input_buffer(16)
    for arr in (a.raw, a.score, a.channel_errors, b.channel_errors):
        assert not np.shares_memory(arr, buf)
    assert not np.shares_memory(a.channel_errors, b.channel_errors)


def test_filling_the_bound_input_buffer_scores_without_a_copy() -> None:
    m = _model("mean")
    wins = _windows(16, seed=3)
    want = m.score_batch(wins)
    buf = m.input_buffer(16)
    assert buf is m.input_buffer(16)  # preallocated once per size and thread
    assert buf.dtype == np.float32 and buf.flags.c_contiguous and buf.shape == (16, WINDOW, 4)
    buf[:] = wins
    got = m.score_batch(buf)
    np.testing.assert_array_equal(got.raw, want.raw)
    np.testing.assert_array_equal(got.channel_errors, want.channel_errors)
    buf[:] = wins[::-1]  # the same buffer, refilled: the session reads the new values
    np.testing.assert_array_equal(m.score_batch(buf).raw, want.raw[::-1])
    with pytest.raises(ValueError, match="fused"):
        _model("mean", fused=False).input_buffer(4)


def test_calibrate_many_is_calibrate_bit_for_bit() -> None:
    m = _model()
    rng = np.random.default_rng(4)
    finite = np.r_[rng.lognormal(size=50) * m.meta.threshold, 0.0, -0.0, 3.4e38, 1e-30]
    assert calibrate_many(m.meta, finite).tolist() == [m.meta.calibrate(r) for r in finite]
    odd = np.r_[finite[:5], np.nan, np.inf, -np.inf, -2.0, 1.7e308, 1.7e308]
    assert calibrate_many(m.meta, odd).tolist() == [m.meta.calibrate(r) for r in odd]


def test_non_finite_windows_score_one_in_a_batch() -> None:
    m = _model()
    wins = _windows(6, seed=5)
    wins[1, 3, 0] = np.nan
    wins[4, -1, 2] = np.inf
    res = m.score_batch(wins)
    assert res.score[1] == res.score[4] == 1.0
    assert np.isfinite(res.score).all() and res.score.max() <= 1.0
    assert res.score.tolist() == [m.score_window(w).score for w in wins]


def test_empty_batch() -> None:
    for m in (_model(), _model(fused=False)):
        res = m.score_batch(np.zeros((0, WINDOW, 4)))
        assert len(res) == 0 and list(res) == [] and res.raw.shape == (0,)


def _python_calls(fn: Callable[[], object]) -> int:
    """Python-level and C-level function calls made while ``fn`` runs."""
    count = 0

    def prof(_frame: FrameType, event: str, _arg: object) -> None:
        nonlocal count
        if event in ("call", "c_call"):
            count += 1

    sys.setprofile(prof)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return count


def test_a_fused_batch_does_no_python_work_per_window() -> None:
    m = _model()
    small, large = _windows(2, seed=6), _windows(64, seed=6)
    for wins in (small, large):  # buffers allocated and bound: not counted
        m.score_batch(wins)
    n_small = _python_calls(lambda: m.score_batch(small))
    n_large = _python_calls(lambda: m.score_batch(large))
    assert n_small == n_large < 60


def test_watched_model_fails_a_whole_batch_and_counts_it_once() -> None:
    w = WatchedModel(_model(), clock=lambda: 7.0)
    ok = w.score_batch(_windows(3, seed=7))
    assert len(ok) == 3 and w.windows == 3 and w.first_scored == 7.0
    bad = w.score_batch(np.zeros((3, WINDOW - 1, 4)))  # a shape the model cannot take
    assert len(bad) == 3 and all(math.isnan(r) for r in bad.raw) and bad.score.tolist() == [0.0] * 3
    assert bad.channel_errors is None
    assert type(bad[0]) is Scored and math.isnan(bad[0].raw) and bad[0][1:] == (0.0, None)
    assert w.errors == 1 and w.windows == 3


def test_cascade_scores_reordered_and_extra_channels_like_the_model_order() -> None:
    """The cascade hands the model its window without a column copy when the stream's
    channels are the model's, in order; reordered or extra channels are selected first."""
    model = pca_model(providers=("cpu",))
    rows = iot(n=260, seed=4, warmup=120).values  # columns in IOT_CHANNELS order
    order = [2, 1, 0]  # stream channels: pressure, humidity, temperature, extra
    extra = np.random.default_rng(8).normal(size=(len(rows), 1))
    shuffled = np.c_[rows[:, order], extra]
    esc = EscalationConfig(river_at=0.0, onnx_at=0.0)
    plain_cfg = agent_config(escalation=esc)
    mixed_cfg = agent_config([IOT_CHANNELS[i] for i in order] + ["extra"], escalation=esc)
    plain = StreamCascade(plain_cfg.streams[0], plain_cfg, model)
    mixed = StreamCascade(mixed_cfg.streams[0], mixed_cfg, model)
    assert plain._all_feats and not mixed._all_feats
    scored = 0
    for i, (a, b) in enumerate(zip(rows, shuffled, strict=True)):
        oa, ob = plain.process(a.tolist(), 0.0), mixed.process(b.tolist(), 0.0)
        if oa.stage_scores[2] is None:
            continue
        scored += 1
        want = model.score_window(rows[i - model.window + 1 : i + 1])
        assert oa.stage_scores[2] == ob.stage_scores[2] == want.score
        ev = np.asarray(want.channel_errors) / model.meta.threshold
        np.testing.assert_allclose(oa.channel_evidence, ev)
        np.testing.assert_allclose(ob.channel_evidence, [*ev[order], 0.0])
    assert scored > 100
