"""Stage 3: score a window of the last W points with an ONNX autoencoder.

:class:`OnnxModel` is one loaded, verified model (session + metadata). It is immutable
once built, so swapping models is one reference assignment between two windows.
Loading checks, in order: the file parses, the metadata is valid, the graph's input and
output fit the metadata, the execution provider (first available of the configured list;
a fallback is logged loudly), a warm-up inference, and the golden vectors.

Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import repeat
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from agent.config import OnnxConfig
from agent.errors import ModelLoadError, ModelMetadataError
from agent.model_meta import META_KEY, ModelMeta, reduce_errors

log = logging.getLogger(__name__)

PROVIDER_NAMES = {
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
GOLDEN_RTOL = 1e-3
GOLDEN_ATOL = 1e-6
MAX_MODEL_BYTES = 256 * 1024 * 1024


class Scored(NamedTuple):
    """A stage-3 result for one window: raw error, [0,1) score, per-channel errors.

    A named tuple rather than a frozen dataclass: one is built per scored window and a
    frozen dataclass costs ~4x more to construct (issue #9, stage-3 overhead).
    """

    raw: float
    score: float
    channel_errors: np.ndarray | None


class ScoredBatch:
    """Stage-3 results of a batch of windows, as arrays: what :meth:`OnnxModel.score_batch`
    returns.

    ``raw`` ``(B,)`` raw errors (float32 as a fused graph outputs them, float64 when the
    agent reduces a reconstruction), ``score`` ``(B,)`` float64 calibrated scores in [0, 1]
    (bit for bit what :meth:`~agent.model_meta.ModelMeta.calibrate` gives), and
    ``channel_errors`` ``(B, C)`` per-channel errors or None. Scoring a batch builds these
    arrays only, no Python object per window (issue #9: at batch 16 a result object per
    window cost about a quarter of the fused model's own time). ``batch[i]`` and iteration
    build per-window :class:`Scored` lazily for callers that want them. The arrays are the
    batch's own, never a model's bound output buffers: later runs do not change them.
    """

    __slots__ = ("channel_errors", "raw", "score")

    def __init__(self, raw: np.ndarray, score: np.ndarray,
                 channel_errors: np.ndarray | None) -> None:
        self.raw = raw
        self.score = score
        self.channel_errors = channel_errors

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, i: int) -> Scored:
        per = self.channel_errors
        return Scored(float(self.raw[i]), float(self.score[i]), None if per is None else per[i])

    def __iter__(self) -> Iterator[Scored]:
        per = self.channel_errors
        rows: Iterable[np.ndarray | None] = repeat(None, len(self.raw)) if per is None else per
        return map(Scored, self.raw.tolist(), self.score.tolist(), rows)

    def __repr__(self) -> str:
        return f"ScoredBatch({len(self)} windows, raw={self.raw!r})"


def calibrate_many(meta: ModelMeta, raw: np.ndarray) -> np.ndarray:
    """:meth:`ModelMeta.calibrate` of every raw error (float32 or float64), bit for bit,
    as a float64 array."""
    values = raw.tolist()
    total = sum(values)  # Python floats: NaN or inf (never a warning) if any element is
    if total - total == 0.0 and (not values or min(values) >= 0.0):  # the usual case
        # float32 + float64 scalar computes in float64, as calibrate does with Python floats
        return raw / (raw + np.float64(meta.threshold))  # type: ignore[no-any-return]
    return np.array([meta.calibrate(r) for r in values], dtype=np.float64)


def choose_provider(wanted: Sequence[str], available: Sequence[str]) -> tuple[str, bool]:
    """First configured provider that onnxruntime offers; (name, fell_back)."""
    for i, name in enumerate(wanted):
        ort_name = PROVIDER_NAMES.get(name, name)
        if ort_name in available:
            return ort_name, i > 0
    if "CPUExecutionProvider" in available:
        return "CPUExecutionProvider", True
    raise ModelLoadError(f"none of the providers {list(wanted)} is available ({list(available)})")


def read_model_file(path: str | Path) -> bytes:
    """The bytes of a model file, refused above :data:`MAX_MODEL_BYTES`."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_MODEL_BYTES:
            raise ModelLoadError(f"{p}: {size} bytes exceeds the {MAX_MODEL_BYTES} byte limit")
        return p.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"{p}: cannot read model: {exc}") from exc


def open_session(
    data: bytes,
    providers: Sequence[str],
    intra_op_threads: int,
    inter_op_threads: int,
    source: str,
) -> tuple[Any, str, ModelMeta]:
    """An onnxruntime session on the first available provider, and the model's metadata.

    A fallback to another provider than the first configured one is logged loudly.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra_op_threads
    opts.inter_op_num_threads = inter_op_threads
    opts.log_severity_level = 3
    provider, fell_back = choose_provider(providers, ort.get_available_providers())
    try:
        session = ort.InferenceSession(data, sess_options=opts, providers=[provider])
    except Exception as exc:  # onnxruntime raises several unrelated types on bad bytes
        raise ModelLoadError(f"{source}: onnxruntime cannot load the model: {exc}") from exc
    used = session.get_providers()[0]
    if fell_back or used != provider:
        log.warning(
            "model %s runs on %s: configured providers %s not all available (%s)",
            source, used, list(providers), ", ".join(ort.get_available_providers()),
        )
    props = session.get_modelmeta().custom_metadata_map
    if META_KEY not in props:
        raise ModelMetadataError(f"{source}: no '{META_KEY}' entry in the model's metadata")
    return session, used, ModelMeta.from_json(props[META_KEY])


MAX_BOUND_BATCHES = 4  # per thread: batch sizes with preallocated, bound buffers


class _Bound:
    """Preallocated float32 input and outputs of a fused model for one batch size.

    On the CPU provider they are bound once (onnxruntime IOBinding): a run then neither
    converts the input feed nor allocates outputs. Both outputs live in one block
    (``raw`` then ``per``), so keeping a run's results is a single copy; the block is
    overwritten by the next run.
    """

    __slots__ = ("binding", "n", "out", "per", "raw", "x")

    def __init__(self, session: Any, input_name: str, outputs: list[str],
                 shape: tuple[int, int, int], bind: bool) -> None:
        n, c = shape[0], shape[2]
        self.n = n
        self.x = np.zeros(shape, np.float32)
        self.out = np.zeros(n * (1 + c), np.float32)
        self.raw = self.out[:n]
        self.per = self.out[n:].reshape(n, c)
        self.binding = None
        if bind:
            b = session.io_binding()
            b.bind_input(input_name, "cpu", 0, np.float32, list(shape), self.x.ctypes.data)
            for name, arr in zip(outputs, (self.raw, self.per), strict=True):
                b.bind_output(name, "cpu", 0, np.float32, list(arr.shape), arr.ctypes.data)
            self.binding = b

    def run(self, session: Any, input_name: str, outputs: list[str]) -> list[np.ndarray]:
        """Run on ``x``; the outputs are views of the bound block (valid until the next run)."""
        if self.binding is None:
            return session.run(outputs, {input_name: self.x})  # type: ignore[no-any-return]
        session.run_with_iobinding(self.binding)
        return [self.raw, self.per]

    def run_kept(self, session: Any, input_name: str,
                 outputs: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Run on ``x``; outputs ``(n,)`` and ``(n, C)`` the caller owns (one copy)."""
        if self.binding is None:
            raw, per = session.run(outputs, {input_name: self.x})
            return raw.reshape(self.n), per.reshape(self.n, -1)
        session.run_with_iobinding(self.binding)
        out = self.out.copy()
        n = self.n
        return out[:n], out[n:].reshape(n, -1)


class OnnxModel:
    """An onnxruntime session plus the model's metadata, ready to score windows."""

    def __init__(
        self,
        data: bytes,
        *,
        providers: Sequence[str] = ("cuda", "cpu"),
        intra_op_threads: int = 1,
        inter_op_threads: int = 1,
        verify_golden: bool = True,
        source: str = "<bytes>",
    ) -> None:
        self.source = source
        self.sha256 = hashlib.sha256(data).hexdigest()
        self.size = len(data)
        self._session, self.provider, self.meta = open_session(
            data, providers, intra_op_threads, inter_op_threads, source
        )
        self._check_signature()
        self._center = np.asarray(self.meta.scaler.center, dtype=np.float32)
        self._scale = np.asarray(self.meta.scaler.scale, dtype=np.float32)
        self._input = self.meta.input_name
        self._outputs = [self._session.get_outputs()[0].name]
        self._fused = self.meta.output == "error"
        if self._fused:
            self._outputs = [o.name for o in self._session.get_outputs()]
            if len(self._outputs) != 2:
                raise ModelMetadataError(
                    f"{self.source}: a fused model (output: error) needs 2 graph outputs "
                    f"(raw error, per-channel errors), got {self._outputs}"
                )
        self._inv_scale = (1.0 / self._scale).astype(np.float32)
        self._inv_tail = np.float32(1.0 / self.meta.tail)
        self._inv_channel_scale = (
            (1.0 / np.asarray(self.meta.channel_scale)).astype(np.float32)
            if self.meta.channel_scale else None
        )
        # Per-thread preallocated (1, window, features) float32 input of score_window:
        # onnxruntime reads a long-lived buffer faster than a fresh array each call.
        self._local = threading.local()
        # Warm-up: the first real window should not pay for lazy initialisation.
        self.score_batch(np.zeros((1, self.meta.window, len(self.meta.features))))
        if verify_golden:
            self.check_golden()

    @classmethod
    def from_path(cls, path: str | Path, **kwargs: object) -> OnnxModel:
        return cls(read_model_file(path), source=str(path), **kwargs)  # type: ignore[arg-type]

    def _check_signature(self) -> None:
        inputs = self._session.get_inputs()
        names = [i.name for i in inputs]
        if len(inputs) != 1 or names[0] != self.meta.input_name:
            raise ModelMetadataError(
                f"{self.source}: graph inputs {names} do not match metadata input "
                f"'{self.meta.input_name}' (exactly one input expected)"
            )
        shape = inputs[0].shape
        w, c = self.meta.window, len(self.meta.features)
        fixed_ok = len(shape) == 3 and shape[1] in (w, None) and shape[2] in (c, None)
        symbolic = len(shape) == 3 and all(isinstance(d, str) for d in shape[1:])
        if not (fixed_ok or symbolic):
            raise ModelMetadataError(
                f"{self.source}: input shape {shape} does not fit (batch, {w}, {c})"
            )

    @property
    def window(self) -> int:
        return self.meta.window

    @property
    def features(self) -> tuple[str, ...]:
        return self.meta.features

    def feature_index(self, channels: Sequence[str]) -> np.ndarray:
        """Indices of the model's features inside a stream's channel list."""
        missing = [f for f in self.meta.features if f not in channels]
        if missing:
            raise ModelLoadError(
                f"{self.source}: model features {missing} are not channels of the stream "
                f"({list(channels)})"
            )
        return np.array([list(channels).index(f) for f in self.meta.features])

    def score_batch(self, windows: np.ndarray) -> ScoredBatch:
        """Score raw (unscaled) windows of shape (batch, window, n_features).

        For a fused model the windows are copied (cast to float32) into this thread's
        preallocated input buffer, bound once; a caller that fills
        :meth:`input_buffer` itself skips that copy. One run, then O(1) whole-array work:
        no Python work per window.
        """
        if self._fused and self.meta.scaling_in_graph:
            return self._score_fused(windows)
        x = np.asarray(windows, dtype=np.float32)
        if not self.meta.scaling_in_graph:
            x = (x - self._center) / self._scale
        kind = self.meta.output
        per: np.ndarray | None
        if kind == "error":  # fused without scaling in the graph
            raw, per = self._session.run(self._outputs, {self._input: x})
            raw, per = raw.reshape(len(x)), per.reshape(len(x), -1)
        else:
            out = self._session.run(None, {self._input: x})[0]
            if kind == "reconstruction":
                raw, per = reduce_errors(self.meta, (out.astype(np.float64) - x) ** 2)
            elif kind == "channel_error":
                per = out.astype(np.float64).reshape(len(x), -1)
                raw = per.mean(axis=1)
            else:
                raw, per = out.astype(np.float64).reshape(len(x)), None
        return ScoredBatch(raw, calibrate_many(self.meta, raw), per)

    def input_buffer(self, batch: int) -> np.ndarray:
        """This thread's preallocated, contiguous float32 ``(batch, window, n_features)``
        input of a fused model (bound once on the CPU provider): fill it with raw windows and
        pass it to :meth:`score_batch`, which then copies nothing in. Overwritten by the
        next fill; only for models with ``output: error`` and scaling in the graph."""
        if not (self._fused and self.meta.scaling_in_graph):
            raise ValueError(f"{self.source}: only fused models have a bound input buffer")
        return self._bound(batch).x

    def _bound(self, batch: int) -> _Bound:
        """This thread's preallocated buffers for ``batch`` windows (a few sizes kept)."""
        cache: dict[int, _Bound] | None = getattr(self._local, "bound", None)
        if cache is None:
            cache = self._local.bound = {}
        b = cache.get(batch)
        if b is None:
            if len(cache) >= MAX_BOUND_BATCHES:
                cache.clear()
            shape = (batch, self.meta.window, len(self.meta.features))
            b = cache[batch] = _Bound(self._session, self._input, self._outputs, shape,
                                      self.provider == "CPUExecutionProvider")
        return b

    def _score_fused(self, windows: np.ndarray) -> ScoredBatch:
        """Fused model, scaling in the graph: copy in (unless ``windows`` is the bound
        input itself), run, one copy of the outputs, two array operations for the scores."""
        n = len(windows)
        if n == 0:
            return ScoredBatch(np.zeros(0, np.float32), np.zeros(0),
                               np.zeros((0, len(self.meta.features)), np.float32))
        b = self._bound(n)
        if windows is not b.x:
            windows = np.asarray(windows)
            if windows.shape != b.x.shape:  # copyto would broadcast silently
                raise ValueError(f"windows shape {windows.shape} != {b.x.shape}")
            np.copyto(b.x, windows, casting="unsafe")
        raw, per = b.run_kept(self._session, self._input, self._outputs)
        return ScoredBatch(raw, calibrate_many(self.meta, raw), per)

    def score_window(self, window: np.ndarray) -> Scored:
        """Score one raw window ``(window, n_features)``: the per-point hot path.

        Same arithmetic as :meth:`score_batch` (and :func:`~agent.model_meta.reduce_errors`)
        up to float32 rounding, written as few whole-array operations as possible into a
        preallocated per-thread input buffer: at batch 1 numpy's per-call overhead, not the
        model, dominates (``benchmarks/bench_core.py`` measures it against a bare
        ``session.run``).
        """
        meta = self.meta
        if self._fused and meta.scaling_in_graph:
            # Fused model (export/fuse.py): scaling and reduction run inside the graph;
            # a window costs one copy into the bound input, one run, two output reads.
            b = self._bound(1)
            if window.shape != b.x.shape[1:]:  # copyto would broadcast silently
                raise ValueError(f"window shape {window.shape} != {b.x.shape[1:]}")
            np.copyto(b.x[0], window, casting="unsafe")
            raw_out, per_out = b.run(self._session, self._input, self._outputs)
            raw = float(raw_out[0])
            return Scored(raw, meta.calibrate(raw), per_out[0].copy())
        if meta.output != "reconstruction":
            return self.score_batch(window[None, ...])[0]
        buf = getattr(self._local, "buf", None)
        if buf is None:
            buf = self._local.buf = np.zeros((1, meta.window, len(meta.features)), np.float32)
        x = buf[0]
        if meta.scaling_in_graph:
            np.copyto(x, window, casting="unsafe")
        else:
            np.subtract(window, self._center, out=x, casting="unsafe")
            x *= self._inv_scale
        out = self._session.run(self._outputs, {self._input: buf})[0][0]
        if meta.reduction == "tail_max":
            tail = out[-meta.tail :]
            np.subtract(tail, x[-meta.tail :], out=tail)
            per = np.einsum("ij,ij->j", tail, tail)  # sum of squares per channel
            per *= self._inv_tail
            if self._inv_channel_scale is not None:
                per *= self._inv_channel_scale
            per64 = per.astype(np.float64)
            raw = max(per64.tolist())
        else:
            np.subtract(out, x, out=out)
            per64 = np.einsum("ij,ij->j", out, out).astype(np.float64)
            per64 *= 1.0 / len(out)
            raw = sum(per64.tolist()) / len(per64)
        return Scored(raw=raw, score=meta.calibrate(raw), channel_errors=per64)

    def check_golden(self) -> None:
        """Re-run the exporter's golden vectors; a mismatch means a broken or foreign model."""
        for i, g in enumerate(self.meta.golden):
            got = self.score_window(np.asarray(g.window, dtype=np.float64)).raw
            if not np.isclose(got, g.raw_score, rtol=GOLDEN_RTOL, atol=GOLDEN_ATOL):
                raise ModelLoadError(
                    f"{self.source}: golden vector {i} gives raw error {got:.6g}, "
                    f"expected {g.raw_score:.6g}"
                )

    def describe(self) -> dict[str, object]:
        return {
            "name": self.meta.name,
            "version": self.meta.version,
            "sha256": self.sha256,
            "provider": self.provider,
            "window": self.meta.window,
            "features": list(self.meta.features),
        }


def model_from_config(config: OnnxConfig, resolve: Callable[[str], Path]) -> OnnxModel | None:
    """Load the configured stage-3 model, or None when stage 3 is disabled."""
    if not config.enabled or not config.model:
        return None
    return OnnxModel.from_path(
        resolve(config.model),
        providers=config.providers,
        intra_op_threads=config.intra_op_threads,
        inter_op_threads=config.inter_op_threads,
        verify_golden=config.verify_golden,
    )
