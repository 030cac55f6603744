"""Fused models (``output: error``): scaling and error reduction inside the ONNX graph.

The fused graph must score like the unfused model does in the agent (float64 numpy
reduction of the reconstruction), to float32 tolerance, for both reductions and with
``channel_scale``; its golden vectors must verify; the export tools must understand it.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from agent.errors import ModelLoadError
from agent.model_meta import reduce_errors
from agent.onnx_scorer import MAX_BOUND_BATCHES, OnnxModel, Scored
from agent.synthetic import multisensor
from export.calibrate import calibrate_file
from export.cli import main as export_main
from export.errors import ModelFileError
from export.fuse import CHANNEL_OUTPUT, RAW_OUTPUT, fuse
from export.onnx_meta import OnnxRunner, get_meta, save_model, set_meta
from export.pca_ae import build_pca_model
from export.verify import verify_file
from tests.export.export_helpers import tiny_config, write_config

RTOL = 2e-5  # float32 arithmetic in the graph vs float64 in the agent's numpy path
ATOL = 1e-7
CASES = {
    "mean": {"reduction": "mean"},
    "tail_max": {"reduction": "tail_max", "tail": 3},  # channel_scale fitted by finalize
}


def _rows(n: int = 2500, seed: int = 7) -> tuple[np.ndarray, tuple[str, ...]]:
    s = multisensor(n=n, seed=seed, anomaly_rate=0.0)
    return s.values, s.channels


def _unfused(case: str, **changes: object) -> bytes:
    rows, channels = _rows()
    blob = build_pca_model(rows, channels, window=12, n_components=5, **CASES[case])
    if not changes:
        return blob
    model = onnx.load_from_string(blob)
    set_meta(model, dataclasses.replace(get_meta(model), **changes))
    return model.SerializeToString()


def _fused(blob: bytes) -> bytes:
    return fuse(onnx.load_from_string(blob)).SerializeToString()


def _random_windows(meta_window: int, n: int, seed: int = 0) -> np.ndarray:
    """Normal windows from unseen data plus noise; every third one with a spike at its end."""
    rng = np.random.default_rng(seed)
    rows, _ = _rows(n * 20 + meta_window, seed=1000 + seed)
    starts = rng.integers(0, len(rows) - meta_window, size=n)
    w = np.stack([rows[s : s + meta_window] for s in starts])
    w = w + rng.normal(scale=0.05, size=w.shape)
    w[::3, -1, :] += 25.0 * rng.choice([-1.0, 1.0], size=(len(w[::3]), 4))
    return w


def _reference(blob: bytes, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw and per-channel errors of an unfused model, computed here independently."""
    meta = get_meta(onnx.load_from_string(blob))
    x = ((windows.astype(np.float32) - np.asarray(meta.scaler.center, np.float32))
         / np.asarray(meta.scaler.scale, np.float32))
    sess = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    out = sess.run(None, {meta.input_name: x})[0]
    return reduce_errors(meta, (out.astype(np.float64) - x) ** 2)


@pytest.mark.parametrize("case", [*CASES, "tail_max_no_channel_scale", "tail_max_scaled"])
def test_fused_scores_agree_with_the_unfused_model(case: str) -> None:
    if case == "tail_max_no_channel_scale":
        blob = _unfused("tail_max", channel_scale=(), golden=())
    elif case == "tail_max_scaled":
        blob = _unfused("tail_max", tail=5, channel_scale=(0.5, 2.0, 3.0, 0.25), golden=())
    else:
        blob = _unfused(case)
    fused_blob = _fused(blob)
    meta = get_meta(onnx.load_from_string(fused_blob))
    assert meta.output == "error" and meta.scaling_in_graph
    if case == "tail_max":
        assert meta.channel_scale  # the fitted one, carried over
    old = OnnxModel(blob, providers=("cpu",), verify_golden=False)
    new = OnnxModel(fused_blob, providers=("cpu",))
    wins = _random_windows(meta.window, 16)
    raw_ref, per_ref = _reference(blob, wins)
    for res in (new.score_batch(wins), [new.score_window(w) for w in wins],
                old.score_batch(wins)):
        np.testing.assert_allclose([r.raw for r in res], raw_ref, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(np.stack([r.channel_errors for r in res]), per_ref,
                                   rtol=RTOL, atol=ATOL)
        for r in res:
            assert r.score == new.meta.calibrate(r.raw)
    # The spikes are actually seen (the comparison is not between near-equal numbers).
    spiked = np.zeros(len(wins), bool)
    spiked[::3] = True
    assert raw_ref[spiked].min() > raw_ref[~spiked].max() > 0


@pytest.mark.parametrize("case", list(CASES))
def test_golden_vectors_come_from_the_fused_graph_and_verify(case: str) -> None:
    blob = _unfused(case)
    fused_blob = _fused(blob)
    old, new = get_meta(onnx.load_from_string(blob)), get_meta(onnx.load_from_string(fused_blob))
    assert len(new.golden) == len(old.golden) >= 3
    assert new.threshold == old.threshold and new.channel_scale == old.channel_scale
    for a, b in zip(old.golden, new.golden, strict=True):
        assert a.window == b.window
        assert b.raw_score == pytest.approx(a.raw_score, rel=RTOL)
    OnnxModel(fused_blob, providers=("cpu",))  # verifies them at load
    runner = OnnxRunner(fused_blob)
    windows = np.array([g.window for g in new.golden])
    np.testing.assert_array_equal(runner.raw_errors(windows), [g.raw_score for g in new.golden])
    # A wrong golden score is refused, as for unfused models.
    model = onnx.load_from_string(fused_blob)
    g0 = dataclasses.replace(new.golden[0], raw_score=new.golden[0].raw_score * 1.5)
    set_meta(model, dataclasses.replace(new, golden=(g0, *new.golden[1:])))
    with pytest.raises(ModelLoadError, match="golden vector 0"):
        OnnxModel(model.SerializeToString(), providers=("cpu",))


def test_graph_shape_and_outputs() -> None:
    fused = fuse(onnx.load_from_string(_unfused("tail_max")))
    onnx.checker.check_model(fused)
    assert [o.name for o in fused.graph.output] == [RAW_OUTPUT, CHANNEL_OUTPUT]
    assert [i.name for i in fused.graph.input] == ["input"]
    ops = [n.op_type for n in fused.graph.node]
    assert ops[:2] == ["Sub", "Div"] and ops[-1] == "ReduceMax" and "Slice" in ops
    with pytest.raises(ModelFileError, match="only unfused"):
        fuse(fused)  # already fused


def test_opset_18_reduce_axes_as_inputs() -> None:
    model = onnx.load_from_string(_unfused("mean"))
    model.opset_import[0].version = 18
    fused = fuse(model)
    assert any(n.op_type == "ReduceMean" and len(n.input) == 2 for n in fused.graph.node)
    m = OnnxModel(fused.SerializeToString(), providers=("cpu",))
    w = _random_windows(m.window, 4, seed=2)
    raw_ref, _ = _reference(_unfused("mean"), w)
    np.testing.assert_allclose([r.raw for r in m.score_batch(w)], raw_ref, rtol=RTOL)


def test_batches_of_many_sizes_and_results_do_not_alias() -> None:
    m = OnnxModel(_fused(_unfused("tail_max")), providers=("cpu",))
    wins = _random_windows(m.window, 24, seed=5)
    ref = [m.score_window(w) for w in wins]
    kept = [r.channel_errors.copy() for r in ref]
    # More batch sizes than the per-thread cache holds: evicted and rebuilt correctly.
    for size in range(1, MAX_BOUND_BATCHES + 4):
        got = m.score_batch(wins[:size])
        assert all(type(r) is Scored and r.score == m.meta.calibrate(r.raw) for r in got)
        np.testing.assert_allclose([r.raw for r in got], [r.raw for r in ref[:size]], rtol=1e-6)
    assert len(m.score_batch(wins[:0])) == 0
    with pytest.raises(ValueError, match="shape"):  # never broadcast a wrong shape
        m.score_window(wins[0][:1])
    with pytest.raises(ValueError, match="shape"):
        m.score_batch(wins[:2, :1])
    for r, k in zip(ref, kept, strict=True):  # later runs did not overwrite earlier results
        np.testing.assert_array_equal(r.channel_errors, k)


def test_threads_score_with_their_own_buffers() -> None:
    m = OnnxModel(_fused(_unfused("mean")), providers=("cpu",))
    wins = _random_windows(m.window, 8, seed=9)
    want = [m.score_window(w).raw for w in wins]
    errors: list[str] = []

    def work(k: int) -> None:
        for _ in range(200):
            i = (k * 3) % len(wins)
            got = m.score_window(wins[i]).raw
            if got != want[i]:
                errors.append(f"thread {k}: window {i} gave {got}, want {want[i]}")
                return

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_verify_inspect_and_calibrate_understand_the_fused_form(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = save_model(fuse(onnx.load_from_string(_unfused("tail_max"))), tmp_path / "m.onnx")
    res = verify_file(path)  # re-scores and re-embeds the golden vectors
    assert res.golden_count >= 3 and res.golden_max_rel_err < 1e-6
    assert export_main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "output:             error (fused" in out and "tail_max (tail 3)" in out
    rows, channels = _rows(1500, seed=11)
    csv = tmp_path / "heldout.csv"
    csv.write_text(",".join(channels) + "\n"
                   + "\n".join(",".join(f"{v:.6f}" for v in r) for r in rows) + "\n")
    threshold, _ = calibrate_file(path, csv, "quantile", 0.99, 0.98)
    m = OnnxModel.from_path(path, providers=("cpu",))
    assert m.meta.threshold == threshold > 0
    assert m.meta.output == "error"


def test_train_fuses_by_default_and_no_fuse_ships_the_reconstruction_graph(
    tmp_path: Path, normal_csv: Path
) -> None:
    cfg = write_config(tmp_path / "pca.yaml", tiny_config("pca"))
    runs = {}
    for label, extra in (("fused", []), ("plain", ["--no-fuse"])):
        runs[label] = tmp_path / label
        assert export_main(["train", "--config", str(cfg), "--data", str(normal_csv),
                            "--out", str(runs[label]), "--quiet", *extra]) == 0
    fused, plain = (get_meta(onnx.load(str(runs[k] / "model.onnx"))) for k in ("fused", "plain"))
    assert fused.output == "error" and fused.scaling_in_graph
    assert plain.output == "reconstruction" and not plain.scaling_in_graph
    assert not (runs["plain"] / "model-unfused.onnx").exists()
    kept = get_meta(onnx.load(str(runs["fused"] / "model-unfused.onnx")))
    assert dataclasses.replace(kept, created_at="") == dataclasses.replace(plain, created_at="")
    assert fused.threshold == plain.threshold
    # Same scores through the agent, to float32 tolerance.
    assert plain.features == ("temperature", "vibration", "pressure")  # multisensor's first 3
    wins = _random_windows(plain.window, 12, seed=4)[..., :3]
    a = OnnxModel.from_path(runs["fused"] / "model.onnx", providers=("cpu",))
    b = OnnxModel.from_path(runs["plain"] / "model.onnx", providers=("cpu",))
    np.testing.assert_allclose([r.raw for r in a.score_batch(wins)],
                               [r.raw for r in b.score_batch(wins)], rtol=RTOL, atol=ATOL)


def test_name_clashes_are_refused() -> None:
    model = onnx.load_from_string(_unfused("mean"))
    model.graph.node[0].output[0] = RAW_OUTPUT
    model.graph.node[1].input[0] = RAW_OUTPUT
    with pytest.raises(ModelFileError, match="already uses the names"):
        fuse(model)


def test_non_finite_windows_score_one() -> None:
    m = OnnxModel(_fused(_unfused("tail_max")), providers=("cpu",))
    wins = _random_windows(m.window, 3, seed=6)
    wins[1, 4, 2] = np.nan
    wins[2, -1, 0] = np.inf
    got = m.score_batch(wins)
    assert got[0].score < 1.0 and got[1].score == got[2].score == 1.0
    assert [m.score_window(w).score for w in wins] == [r.score for r in got]
