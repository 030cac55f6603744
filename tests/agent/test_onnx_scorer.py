"""Stage 3: OnnxModel on real ONNX files and real onnxruntime sessions."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from agent.config import OnnxConfig
from agent.errors import ModelLoadError, ModelMetadataError
from agent.model_meta import META_KEY, ModelMeta, Scaler, reduce_errors
from agent.onnx_scorer import OnnxModel, choose_provider, model_from_config
from agent.synthetic import iot
from tests.agent.helpers import IOT_CHANNELS, meta_of, pca_blob, pca_model, with_meta, without_meta

CPU = "CPUExecutionProvider"


def _windows(n: int = 5, window: int = 8, seed: int = 3) -> np.ndarray:
    rows = iot(n=200, seed=seed).values
    return np.stack([rows[i : i + window] for i in range(0, n * 10, 10)])


def _reconstruct(blob: bytes, scaled: np.ndarray) -> np.ndarray:
    """The model's output computed with our own onnxruntime session (independent path)."""
    sess = ort.InferenceSession(blob, providers=[CPU])
    return sess.run(None, {"input": scaled.astype(np.float32)})[0].astype(np.float64)


# --------------------------------------------------------------------------- loading


def test_loads_a_pca_model_on_cpu(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="agent.onnx_scorer"):
        m = pca_model(providers=("cpu",))
    assert m.provider == CPU
    assert m.window == 8
    assert m.features == IOT_CHANNELS
    assert m.size == len(pca_blob())
    d = m.describe()
    assert d["provider"] == CPU and d["name"] == "pca-ae" and d["window"] == 8
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_missing_gpu_falls_back_to_cpu_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    assert "CUDAExecutionProvider" not in ort.get_available_providers()
    with caplog.at_level(logging.WARNING, logger="agent.onnx_scorer"):
        m = pca_model(providers=("cuda", "cpu"))
    assert m.provider == CPU
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    msg = warnings[0].getMessage()
    assert CPU in msg and "cuda" in msg


@pytest.mark.parametrize(
    ("wanted", "available", "expected"),
    [
        (("cpu",), [CPU], (CPU, False)),
        (("cuda", "cpu"), ["CUDAExecutionProvider", CPU], ("CUDAExecutionProvider", False)),
        (("cuda", "cpu"), [CPU], (CPU, True)),
        (("tensorrt", "cuda"), ["CUDAExecutionProvider", CPU], ("CUDAExecutionProvider", True)),
        (("openvino",), ["AzureExecutionProvider", CPU], (CPU, True)),
        (("CPUExecutionProvider",), [CPU], (CPU, False)),  # ort names pass through
    ],
)
def test_choose_provider(wanted, available, expected) -> None:
    assert choose_provider(wanted, available) == expected


def test_choose_provider_without_any_usable_provider() -> None:
    with pytest.raises(ModelLoadError, match="none of the providers"):
        choose_provider(("cuda",), ["AzureExecutionProvider"])


def test_golden_vectors_are_verified_at_load() -> None:
    blob = pca_blob()
    meta = meta_of(blob)
    assert len(meta.golden) >= 2
    m = OnnxModel(blob, providers=("cpu",))
    for g in meta.golden:
        got = m.score_window(np.asarray(g.window)).raw
        assert got == pytest.approx(g.raw_score, rel=1e-3)


def test_tampered_golden_score_is_a_load_error() -> None:
    meta = meta_of(pca_blob())
    g0 = meta.golden[0]
    bad = (type(g0)(window=g0.window, raw_score=g0.raw_score * 1.5 + 0.1), *meta.golden[1:])
    blob = with_meta(pca_blob(), golden=bad)
    with pytest.raises(ModelLoadError, match="golden vector 0"):
        OnnxModel(blob, providers=("cpu",))
    # Skipping the verification is possible (and then the model loads).
    assert OnnxModel(blob, providers=("cpu",), verify_golden=False).provider == CPU


@pytest.mark.parametrize("data", [b"", b"not an onnx model", bytes(range(256)) * 4])
def test_garbage_bytes_are_a_load_error(data: bytes) -> None:
    with pytest.raises(ModelLoadError, match="cannot load"):
        OnnxModel(data, providers=("cpu",))


def test_model_without_metadata_is_a_metadata_error() -> None:
    with pytest.raises(ModelMetadataError, match=META_KEY):
        OnnxModel(without_meta(pca_blob()), providers=("cpu",))


def test_unparseable_metadata_is_a_metadata_error() -> None:
    model = onnx.load_from_string(pca_blob())
    for p in model.metadata_props:
        if p.key == META_KEY:
            p.value = '{"name": "x"'
    with pytest.raises(ModelMetadataError, match="not valid JSON"):
        OnnxModel(model.SerializeToString(), providers=("cpu",))


def test_metadata_that_does_not_fit_the_graph_is_a_metadata_error() -> None:
    with pytest.raises(ModelMetadataError, match="does not fit"):
        OnnxModel(with_meta(pca_blob(), window=9, golden=()), providers=("cpu",))
    with pytest.raises(ModelMetadataError, match="do not match"):
        OnnxModel(with_meta(pca_blob(), input_name="x"), providers=("cpu",))


def test_from_path(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(pca_blob())
    m = OnnxModel.from_path(path, providers=("cpu",))
    assert m.source == str(path)
    with pytest.raises(ModelLoadError, match="cannot read"):
        OnnxModel.from_path(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x00junk")
    with pytest.raises(ModelLoadError, match=r"junk\.onnx"):
        OnnxModel.from_path(tmp_path / "junk.onnx", providers=("cpu",))


def test_model_from_config_resolves_the_path(tmp_path: Path) -> None:
    (tmp_path / "m.onnx").write_bytes(pca_blob())
    cfg = OnnxConfig(enabled=True, model="m.onnx", providers=("cpu",))
    m = model_from_config(cfg, lambda p: tmp_path / p)
    assert m is not None and m.provider == CPU
    assert model_from_config(OnnxConfig(), lambda p: tmp_path / p) is None


# --------------------------------------------------------------------------- features


def test_feature_index_maps_model_features_into_stream_channels() -> None:
    m = pca_model()
    idx = m.feature_index(("pressure", "extra", "temperature", "humidity"))
    assert idx.tolist() == [2, 3, 0]


def test_feature_not_in_the_stream_is_a_load_error() -> None:
    with pytest.raises(ModelLoadError, match="humidity"):
        pca_model().feature_index(("temperature", "pressure"))


# --------------------------------------------------------------------------- scoring


def test_score_batch_equals_score_window_per_window() -> None:
    m = pca_model()
    wins = _windows(6)
    batch = m.score_batch(wins)
    assert len(batch) == 6
    for w, b in zip(wins, batch, strict=True):
        one = m.score_window(w)
        assert one.raw == pytest.approx(b.raw, rel=1e-5)
        np.testing.assert_allclose(one.channel_errors, b.channel_errors, rtol=1e-5)
        assert b.score == pytest.approx(b.raw / (b.raw + m.meta.threshold))


def test_mean_reduction_matches_an_independent_computation() -> None:
    blob = pca_blob()
    m = OnnxModel(blob, providers=("cpu",))
    w = _windows(1)[0]
    scaled = ((w - np.asarray(m.meta.scaler.center)) / np.asarray(m.meta.scaler.scale))[None]
    sq = (_reconstruct(blob, scaled) - scaled.astype(np.float32)) ** 2
    res = m.score_window(w)
    assert res.raw == pytest.approx(sq.mean(), rel=1e-4)
    np.testing.assert_allclose(res.channel_errors, sq[0].mean(axis=0), rtol=1e-4)


def test_tail_max_reduction_on_a_real_model() -> None:
    tail_blob = with_meta(pca_blob(), reduction="tail_max", tail=2, channel_scale=(1.0, 2.0, 4.0),
                          golden=())
    mean_m = pca_model()
    tail_m = OnnxModel(tail_blob, providers=("cpu",))
    w = _windows(1)[0].copy()
    w[-1, 0] += 30.0  # a spike in the last row of channel 0
    scaled = ((w - np.asarray(mean_m.meta.scaler.center)) / np.asarray(mean_m.meta.scaler.scale))
    sq = (_reconstruct(tail_blob, scaled[None]) - scaled[None].astype(np.float32)) ** 2
    per = sq[0, -2:, :].mean(axis=0) / np.array([1.0, 2.0, 4.0])
    res = tail_m.score_window(w)
    np.testing.assert_allclose(res.channel_errors, per, rtol=1e-4)
    assert res.raw == pytest.approx(per.max(), rel=1e-4)
    # The spike is not diluted by the window length as it is with "mean".
    assert res.raw > mean_m.score_window(w).raw


def _meta(**kw) -> ModelMeta:
    return ModelMeta(name="t", version="1.0.0", features=("a", "b"), window=4,
                     scaler=Scaler(center=(0.0, 0.0), scale=(1.0, 1.0)), threshold=1.0, **kw)


def test_reduce_errors_mean_and_tail_max() -> None:
    sq = np.zeros((2, 4, 2))
    sq[0, :, 0] = [0.0, 0.0, 0.0, 8.0]  # one big error at the end of channel a
    sq[1, :, 1] = [1.0, 1.0, 1.0, 1.0]
    raw, per = reduce_errors(_meta(), sq)
    np.testing.assert_allclose(per, [[2.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(raw, [1.0, 0.5])
    raw, per = reduce_errors(_meta(reduction="tail_max", tail=1), sq)
    np.testing.assert_allclose(per, [[8.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(raw, [8.0, 1.0])
    raw, per = reduce_errors(_meta(reduction="tail_max", tail=2, channel_scale=(4.0, 0.5)), sq)
    np.testing.assert_allclose(per, [[1.0, 0.0], [0.0, 2.0]])
    np.testing.assert_allclose(raw, [1.0, 2.0])


def test_calibration_maps_the_threshold_to_one_half() -> None:
    meta = _meta()
    assert meta.calibrate(1.0) == 0.5
    assert meta.calibrate(2.0) == pytest.approx(2 / 3)
    assert meta.calibrate(-1.0) == 0.0
    assert meta.calibrate(float("nan")) == 1.0
