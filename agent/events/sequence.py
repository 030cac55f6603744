"""Stage 3 for event streams: a DeepLog-style next-event model over ONNX.

The last ``history`` event ids of a source predict the next one; the observed event is
anomalous when it is not among the model's ``top_k`` most likely ids or when its
probability is below ``min_prob`` (default: the model's ``thresholds["min_prob"]``, set
by the trainer; 0 = top-k only). The floor matters when the next event is nearly
certain -- inside a workflow instance the model gives the expected step ~0.99 and the
other ids ~1e-4 in arbitrary order, so a skipped-to step can rank 2nd: top-k alone cannot
separate it, its probability can. The model file is an ordinary ONNX model of
the agent (docs/model-format.md) with ``kind: next_event``: input ``(batch, history)``
int64 ids, output ``(batch, len(vocab))`` probabilities, the vocabulary in its metadata.

Score: ``raw = p_(k+1) / p_observed``, the probability of the most likely event *outside*
the top k over the observed one's. ``raw >= 1`` exactly when the observed event is outside
the top k, and the agent's calibration ``raw / (raw + 1)`` (metadata ``threshold: 1``)
puts that boundary at 0.5, like every other stage.

:class:`NextEventModel` also offers the duck-typed surface of
:class:`~agent.onnx_scorer.OnnxModel` the model store uses (``meta``, ``sha256``,
``provider``, ``features``, ``window``, ``score_window``, ``check_golden``,
``describe``), so pushed next-event models are verified the same way. A golden vector's
``raw_score`` is the top-1 probability for its history. Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.errors import ModelLoadError, ModelMetadataError
from agent.events.vocab import Vocab
from agent.model_meta import NEXT_EVENT
from agent.onnx_scorer import GOLDEN_ATOL, GOLDEN_RTOL, Scored, open_session, read_model_file

log = logging.getLogger(__name__)
MAX_RAW = 1e6


@dataclass(frozen=True)
class NextEventScore:
    """The model's verdict on one observed event."""

    raw: float
    score: float
    rank: int  # 0 = the most likely
    prob: float
    flagged: bool
    top_ids: tuple[int, ...]
    top_probs: tuple[float, ...] = ()  # the probabilities of ``top_ids``


class NextEventModel:
    """An onnxruntime session of a ``next_event`` model plus its vocabulary."""

    def __init__(
        self,
        data: bytes,
        *,
        providers: Sequence[str] = ("cpu",),
        intra_op_threads: int = 1,
        inter_op_threads: int = 1,
        verify_golden: bool = True,
        source: str = "<bytes>",
        top_k: int | None = None,
        min_prob: float | None = None,
    ) -> None:
        self.source = source
        self.sha256 = hashlib.sha256(data).hexdigest()
        self.size = len(data)
        self._session, self.provider, self.meta = open_session(
            data, providers, intra_op_threads, inter_op_threads, source
        )
        if self.meta.kind != NEXT_EVENT:
            raise ModelMetadataError(f"{source}: kind {self.meta.kind!r} is not {NEXT_EVENT!r}")
        self.vocab = Vocab(self.meta.vocab)
        self.top_k = top_k if top_k is not None else self.meta.top_k
        if not 3 <= self.top_k < len(self.vocab):
            raise ModelLoadError(f"{source}: top_k {self.top_k} not in 3..{len(self.vocab) - 1}")
        self.min_prob = float(self.meta.thresholds.get("min_prob", 0.0)) if min_prob is None \
            else min_prob
        if not 0.0 <= self.min_prob < 1.0:
            raise ModelLoadError(f"{source}: min_prob {self.min_prob} not in [0, 1)")
        self._check_signature()
        self._input = self.meta.input_name
        self.predict(np.zeros((1, self.history), dtype=np.int64))
        if verify_golden:
            self.check_golden()

    @classmethod
    def from_path(cls, path: str | Path, **kwargs: object) -> NextEventModel:
        return cls(read_model_file(path), source=str(path), **kwargs)  # type: ignore[arg-type]

    def _check_signature(self) -> None:
        ins, outs = self._session.get_inputs(), self._session.get_outputs()
        if len(ins) != 1 or ins[0].name != self.meta.input_name or ins[0].type != "tensor(int64)":
            raise ModelMetadataError(
                f"{self.source}: expected one int64 input {self.meta.input_name!r}, got "
                f"{[(i.name, i.type) for i in ins]}")
        shape, out_shape = ins[0].shape, outs[0].shape
        if len(shape) != 2 or (shape[1] not in (self.history, None) and not isinstance(
                shape[1], str)):
            raise ModelMetadataError(f"{self.source}: input shape {shape} does not fit "
                                     f"(batch, {self.history})")
        if len(out_shape) != 2 or (out_shape[1] not in (len(self.vocab), None) and not isinstance(
                out_shape[1], str)):
            raise ModelMetadataError(f"{self.source}: output shape {out_shape} does not fit "
                                     f"(batch, {len(self.vocab)})")

    # ----------------------------------------------------------------- model surface
    @property
    def history(self) -> int:
        return self.meta.window

    @property
    def window(self) -> int:
        return self.meta.window

    @property
    def features(self) -> tuple[str, ...]:
        return self.meta.features

    def predict(self, histories: np.ndarray) -> np.ndarray:
        """Probabilities ``(batch, vocab)`` for int64 histories ``(batch, history)``."""
        x = np.asarray(histories, dtype=np.int64)
        out = self._session.run(None, {self._input: x})[0]
        return np.asarray(out, dtype=np.float64).reshape(len(x), len(self.vocab))

    def score_probs(self, probs: np.ndarray, observed: int) -> NextEventScore:
        """Verdict on ``observed`` given one row of probabilities."""
        k = self.top_k
        p = probs.copy()
        p[0] = -1.0  # <pad> is never a real next event
        p_obs = float(probs[observed]) if observed != 0 else 0.0
        top = np.argpartition(-p, k)[: k + 1]
        top = top[np.argsort(-p[top], kind="stable")]
        rank = int(np.sum(p > p_obs)) if observed != 0 else len(p)
        p_out = float(p[top[k]])  # best probability outside the top k
        flagged = rank >= k or p_obs < self.min_prob
        raw = min(p_out / p_obs, MAX_RAW) if p_obs > 0 else MAX_RAW
        if flagged and raw < 1.0:  # flagged by min_prob only
            raw = max(raw, self.min_prob / max(p_obs, 1e-12))
        raw = min(raw, MAX_RAW)
        return NextEventScore(raw, self.meta.calibrate(raw), rank, p_obs, flagged,
                              tuple(int(i) for i in top[:k]),
                              tuple(float(probs[i]) for i in top[:k]))

    def score_one(self, history: Sequence[int], observed: int) -> NextEventScore:
        probs = self.predict(np.asarray([history], dtype=np.int64))[0]
        return self.score_probs(probs, observed)

    def score_window(self, window: np.ndarray) -> Scored:
        """Model-store surface: ``window`` is ``(history, 1)`` ids; raw = top-1 probability."""
        ids = np.asarray(window, dtype=np.float64).reshape(1, -1)
        if not np.all(np.isfinite(ids)) or ids.shape[1] != self.history:
            raise ModelLoadError(f"{self.source}: a golden history must be {self.history} ids")
        raw = float(self.predict(ids.astype(np.int64)).max())
        return Scored(raw=raw, score=raw, channel_errors=None)

    def check_golden(self) -> None:
        for i, g in enumerate(self.meta.golden):
            got = self.score_window(np.asarray(g.window)).raw
            if not math.isclose(got, g.raw_score, rel_tol=GOLDEN_RTOL, abs_tol=GOLDEN_ATOL):
                raise ModelLoadError(f"{self.source}: golden vector {i} gives top-1 probability "
                                     f"{got:.6g}, expected {g.raw_score:.6g}")

    def describe(self) -> dict[str, object]:
        return {"name": self.meta.name, "version": self.meta.version, "sha256": self.sha256,
                "provider": self.provider, "kind": NEXT_EVENT, "history": self.history,
                "vocab": len(self.vocab), "top_k": self.top_k, "min_prob": self.min_prob}
