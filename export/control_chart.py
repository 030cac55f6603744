"""A windowed-mean deviation chart: a causal detector of collective (long-lasting) anomalies.

Per channel ``c`` the detector compares the mean of the last ``window`` points,
``m_c(t)``, with a *frozen* baseline learnt from a block of normal points (the training
rows), in units of how much that same windowed mean moved on the training rows::

    z_c(t) = (m_c(t) - mu_c) / s_c      mu_c = mean of the training rows
                                        s_c  = std of the training rows' windowed means

and turns it into a *threshold ratio* like every stage of the agent (docs/fusion.md)::

    r_c = directional |z_c| / threshold_c   if |m_c - mu_c| > max(abs_tol_c, rel_tol_c |mu_c|)
        = 0                                 otherwise
    r   = max_c r_c                          (1.0 = at the threshold)

* **Why a windowed mean.** The anomalies of an industrial testbed such as SKAB are long
  runs in which a channel's *level* moves by a fraction of its point-to-point noise (a
  quantised flow meter that toggles 32/33 and starts toggling 31/32 when a valve
  closes). A per-point z-score cannot see that; the mean of ``window`` points can, and
  ``s_c`` is measured on windowed means, so autocorrelation is accounted for.
* **Why a frozen baseline.** The episodes last hundreds of points: a baseline that keeps
  learning absorbs them. The baseline is refitted when the model is (re)built.
* **Exponential weighting (``decay``).** With ``decay = q > 0`` the window mean becomes
  an exponentially weighted mean of the same ``window`` points (weight ``(1 - q)^k`` for
  the point ``k`` steps back, normalised): an EWMA chart truncated to the window. Its mean
  follows a step sooner than a flat mean of the same length and forgets a spike sooner;
  ``s_c`` is measured on the same weighted means, so the threshold keeps its meaning.
  ``decay = 0`` is the plain mean. Still O(channels) per point (a truncated EWMA is a
  recursion: ``S <- (1 - q) S + x_t - (1 - q)^window x_(t - window)``) and exactly a
  weighted sum over the window in the ONNX graph.
* **Direction and tolerance** mean what they mean in stage 1 (``ChannelConfig``): a
  channel may alert only on rises (``up``) or drops (``down``); a deviation smaller than
  the tolerance (absolute, or relative to the baseline level) is no anomaly, however
  small ``s_c`` is (a vibration sensor that is extremely steady during training).

Cost: O(channels) per point (a ring buffer and running sums), memory O(window x channels);
nothing grows with history. :meth:`score_rows` is the same arithmetic, vectorised, for
offline evaluation; :meth:`to_onnx` exports the same computation as an ONNX graph with
the agent's model metadata (``output: score``), so that the chart can be pushed to a
gateway as a stage-3 model today. ``onnx`` is imported only by :meth:`to_onnx`.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> train = rng.normal(10.0, 1.0, size=(400, 2))
>>> det = WindowMeanChart(("a", "b"), window=10, threshold=5.0).fit(train)
>>> round(det.score_one([10.0, 10.0]), 3) < 1.0
True
>>> ratios = [det.score_one([8.0, 10.0]) for _ in range(10)]   # a lasting drop of 2 sigma
>>> ratios[-1] > 1.0
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

_DIR = {"both": (1.0, 1.0), "up": (1.0, 0.0), "down": (0.0, 1.0)}


@dataclass(frozen=True)
class ChannelRule:
    """Per-channel options; ``threshold`` overrides the chart's threshold for the channel."""

    direction: str = "both"
    rel_tolerance: float = 0.0
    abs_tolerance: float = 0.0
    threshold: float | None = None

    def __post_init__(self) -> None:
        if self.direction not in _DIR:
            raise ValueError(f"direction must be one of {sorted(_DIR)}, got {self.direction!r}")
        if self.rel_tolerance < 0 or self.abs_tolerance < 0:
            raise ValueError("tolerances must be >= 0")
        if self.threshold is not None and not self.threshold > 0:
            raise ValueError("threshold must be > 0")


@dataclass
class WindowMeanChart:
    """Windowed-mean deviation chart over ``channels`` (see the module docstring)."""

    channels: tuple[str, ...]
    window: int = 10
    threshold: float = 5.0
    rules: Mapping[str, ChannelRule] = field(default_factory=dict)
    min_scale: float = 1e-9  # floor of s_c, relative to 1 + |mu_c|
    decay: float = 0.0  # exponential weighting of the window (0 = plain mean), see above

    def __post_init__(self) -> None:
        self.channels = tuple(self.channels)
        if not self.channels:
            raise ValueError("needs at least one channel")
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        if not self.threshold > 0:
            raise ValueError(f"threshold must be > 0, got {self.threshold}")
        if not 0.0 <= self.decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {self.decay}")
        unknown = sorted(set(self.rules) - set(self.channels))
        if unknown:
            raise ValueError(f"rules for unknown channels {unknown}")
        c = len(self.channels)
        rules = [self.rules.get(ch, ChannelRule()) for ch in self.channels]
        thr = np.array([r.threshold or self.threshold for r in rules])
        self._up = np.array([_DIR[r.direction][0] for r in rules]) / thr
        self._down = np.array([_DIR[r.direction][1] for r in rules]) / thr
        self._rel = np.array([r.rel_tolerance for r in rules])
        self._abs = np.array([r.abs_tolerance for r in rules])
        self.mu = np.zeros(c)
        self.scale = np.ones(c)
        self.fitted = False
        self._q = 1.0 - self.decay
        self._weights = window_weights(self.window, self.decay)  # oldest .. newest
        self._norms = np.cumsum(self._weights[::-1])  # sum of the newest 1, 2, .. weights
        self._ring = np.zeros((self.window, c))
        self._sum = np.zeros(c)
        self._head = 0
        self._count = 0
        self.last_ratios = np.zeros(c)

    # ------------------------------------------------------------------ fitting
    def fit(self, rows: np.ndarray) -> WindowMeanChart:
        """Learn ``mu`` and ``s`` from normal rows ``(N, C)`` (N >= window + 1)."""
        x = np.asarray(rows, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.channels):
            raise ValueError(f"rows must be (N, {len(self.channels)}), got {x.shape}")
        if len(x) < self.window + 1:
            raise ValueError(f"need at least window + 1 = {self.window + 1} rows, got {len(x)}")
        if not np.isfinite(x).all():
            raise ValueError("training rows must be finite")
        self.mu = x.mean(axis=0)
        means = trailing_means(x, self.window, self.decay)[self.window - 1 :]
        s = means.std(axis=0)
        self.scale = np.maximum(s, self.min_scale * (1.0 + np.abs(self.mu)))
        self.fitted = True
        self.reset()
        return self

    def reset(self) -> None:
        """Forget the recent window (not the baseline)."""
        self._ring[:] = 0.0
        self._sum[:] = 0.0
        self._head = 0
        self._count = 0

    @property
    def tolerance_z(self) -> np.ndarray:
        """Per-channel tolerance, in units of ``s_c``."""
        return np.maximum(self._abs, self._rel * np.abs(self.mu)) / self.scale

    # ------------------------------------------------------------------ scoring
    def _ratios(self, z: np.ndarray) -> np.ndarray:
        dev = np.maximum(np.maximum(z, 0.0) * self._up, np.maximum(-z, 0.0) * self._down)
        return np.where(np.abs(z) > self.tolerance_z, dev, 0.0)

    def push(self, x: Sequence[float]) -> None:
        """Add one point (all channels finite; the caller carries missing values forward)."""
        v = np.asarray(x, dtype=np.float64)
        self._sum *= self._q  # weighted sum: newest weight 1, k steps back (1 - decay)^k
        if self._count >= self.window:
            self._sum -= self._weights[0] * self._q * self._ring[self._head]
        else:
            self._count += 1
        self._ring[self._head] = v
        self._sum += v
        self._head = (self._head + 1) % self.window
        if self._head == 0:  # once per window: exact sum again, no rounding drift
            self._sum = self._weights[-self._count :] @ self._ring[: self._count]

    def score_one(self, x: Sequence[float]) -> float:
        """Push ``x`` and return the threshold ratio of the window ending at ``x``."""
        if not self.fitted:
            raise RuntimeError("fit() the chart before scoring")
        self.push(x)
        z = (self._sum / self._norms[self._count - 1] - self.mu) / self.scale
        self.last_ratios = self._ratios(z)
        return float(self.last_ratios.max())

    def score_rows(self, rows: np.ndarray) -> np.ndarray:
        """Ratios of every row of ``rows`` as if streamed from a fresh window (vectorised)."""
        x = np.asarray(rows, dtype=np.float64)
        z = (trailing_means(x, self.window, self.decay) - self.mu) / self.scale
        return self._ratios(z).max(axis=1)

    @staticmethod
    def unit(ratio: float) -> float:
        """The agent's [0, 1) score of a threshold ratio (0.5 = at the threshold)."""
        return ratio / (1.0 + ratio) if math.isfinite(ratio) else 1.0

    # ------------------------------------------------------------------ export
    def to_onnx(self, name: str = "window-mean-chart", version: str = "1.0.0",
                golden_rows: np.ndarray | None = None) -> bytes:
        """The chart as an ONNX model with the agent's metadata (``output: score``).

        The agent scales the window with ``scaler = (mu, s)``; the graph takes the (weighted)
        mean over time, applies direction, tolerance and per-channel thresholds and outputs the
        largest ratio; the model's ``threshold`` is 1.0, so ``score = r / (1 + r)`` exactly
        as :meth:`unit`. ``golden_rows`` (raw rows, >= window) give golden vectors.
        """
        import onnx
        from onnx import TensorProto, helper, numpy_helper

        from agent.model_meta import META_KEY, GoldenVector, ModelMeta, Scaler

        if not self.fitted:
            raise RuntimeError("fit() the chart before exporting")
        c, w = len(self.channels), self.window
        f32 = np.float32
        inits = [
            numpy_helper.from_array(self._up.astype(f32), "up"),
            numpy_helper.from_array(self._down.astype(f32), "down"),
            numpy_helper.from_array(self.tolerance_z.astype(f32), "tol"),
            numpy_helper.from_array(np.zeros(c, dtype=f32), "zero"),
            numpy_helper.from_array(
                (self._weights / self._weights.sum()).astype(f32).reshape(w, 1), "weights"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "time_axis"),
        ]
        nodes = [
            helper.make_node("Mul", ["input", "weights"], ["weighted"]),
            helper.make_node("ReduceSum", ["weighted", "time_axis"], ["z"], keepdims=0),
            helper.make_node("Relu", ["z"], ["z_up"]),
            helper.make_node("Neg", ["z"], ["neg_z"]),
            helper.make_node("Relu", ["neg_z"], ["z_down"]),
            helper.make_node("Mul", ["z_up", "up"], ["r_up"]),
            helper.make_node("Mul", ["z_down", "down"], ["r_down"]),
            helper.make_node("Max", ["r_up", "r_down"], ["r_dir"]),
            helper.make_node("Abs", ["z"], ["z_abs"]),
            helper.make_node("Greater", ["z_abs", "tol"], ["beyond"]),
            helper.make_node("Where", ["beyond", "r_dir", "zero"], ["ratios"]),
            helper.make_node("ReduceMax", ["ratios"], ["score"], axes=[1], keepdims=0),
        ]
        graph = helper.make_graph(
            nodes, "window_mean_chart",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", w, c])],
            [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"])],
            inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                  producer_name="edge-export.control_chart")
        model.ir_version = 8
        onnx.checker.check_model(model)
        meta = ModelMeta(
            name=name, version=version, features=self.channels, window=w,
            scaler=Scaler(center=tuple(float(v) for v in self.mu),
                          scale=tuple(float(v) for v in self.scale)),
            threshold=1.0, kind="control_chart", architecture="window_mean_chart",
            output="score", opset=17,
        )
        if golden_rows is not None and len(golden_rows) >= w:
            rows = np.asarray(golden_rows, dtype=np.float64)
            picks = np.linspace(w, len(rows), num=min(3, len(rows) - w + 1)).astype(int)
            golden = []
            for end in picks:
                win = rows[end - w : end]
                z = self._weights @ ((win - self.mu) / self.scale) / self._weights.sum()
                golden.append(GoldenVector(
                    window=tuple(tuple(float(v) for v in r) for r in win),
                    raw_score=float(self._ratios(z).max()),
                ))
            meta = ModelMeta.from_dict({**_asdict(meta), "golden": [
                {"window": g.window, "raw_score": g.raw_score} for g in golden]})
        entry = model.metadata_props.add()
        entry.key, entry.value = META_KEY, meta.to_json()
        return model.SerializeToString()


def _asdict(meta: object) -> dict[str, object]:
    from dataclasses import asdict

    return asdict(meta)  # type: ignore[call-overload]


def window_weights(window: int, decay: float) -> np.ndarray:
    """Unnormalised weights of a window, oldest first: ``(1 - decay)^k``, k steps back."""
    return (1.0 - decay) ** np.arange(window - 1, -1, -1, dtype=np.float64)


def trailing_means(x: np.ndarray, window: int, decay: float = 0.0) -> np.ndarray:
    """Row ``t``: the mean of rows ``max(0, t - window + 1) .. t`` (causal; vectorised),
    weighted ``(1 - decay)^k`` for the row ``k`` steps back when ``decay > 0``."""
    x = np.asarray(x, dtype=np.float64)
    if decay > 0.0:
        wts = window_weights(window, decay)[::-1]  # newest first
        num = np.stack([np.convolve(col, wts)[: len(x)] for col in x.T], axis=1) \
            if len(x) else np.zeros_like(x)
        den = np.cumsum(wts)[np.minimum(np.arange(len(x)), window - 1)]
        return num / den[:, None]
    c = np.cumsum(np.vstack([np.zeros((1, x.shape[1])), x]), axis=0)
    i = np.arange(len(x))
    lo = np.maximum(0, i - window + 1)
    return (c[i + 1] - c[lo]) / (i + 1 - lo)[:, None]
