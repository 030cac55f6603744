"""The statistical ensemble (stage-3 alternative): Isolation Forest, elliptic envelope and
one-class SVM on per-window summary features, combined by a weighted soft vote.

Per channel the window is summarised as (mean, std, min, max, last - first); the
``5C`` summaries are standardised with the training mean/std. Each member ``i`` gives
scikit-learn's ``decision_function`` ``d_i`` (positive = inside the normal region, 0 on
the member's own boundary); the soft vote is::

    raw = Σ w_i · softplus(-d_i / s_i) / Σ w_i       (s_i: std of d_i on training)

so every member contributes log 2 at its own boundary, about 0 deep inside, and
grows linearly the further out a window lies. ``raw >= 0`` is exported as output kind
``score``; the threshold is then calibrated on validation windows like every other model.

skl2onnx converts :class:`IsolationForest` and :class:`OneClassSVM`; it has no converter
for :class:`EllipticEnvelope`, so that member is written by hand as its exact formula
``d = -(x - loc)ᵀ P (x - loc) - offset`` with ``onnx.helper``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export.config import EnsembleParams

OPSET = 17
ML_OPSET = 3
N_STATS = 5


def summarize(windows: np.ndarray) -> np.ndarray:
    """``(B, W, C)`` -> ``(B, 5C)``: mean, std, min, max, last - first per channel."""
    x = np.asarray(windows, dtype=np.float64)
    return np.concatenate([x.mean(1), x.std(1), x.min(1), x.max(1), x[:, -1] - x[:, 0]], axis=1)


@dataclass
class Ensemble:
    members: dict[str, Any]
    weights: dict[str, float]
    feat_mean: np.ndarray
    feat_std: np.ndarray
    spread: dict[str, float]

    def features(self, windows: np.ndarray) -> np.ndarray:
        return (summarize(windows) - self.feat_mean) / self.feat_std

    def score(self, windows: np.ndarray) -> np.ndarray:
        """Reference (scikit-learn) raw score, what the ONNX graph reproduces."""
        f = self.features(windows).astype(np.float32)
        total = sum(self.weights.values())
        raw = np.zeros(len(f))
        for name, model in self.members.items():
            d = model.decision_function(f)
            z = np.clip(-d / self.spread[name], -30.0, 1e4)
            raw += self.weights[name] * np.logaddexp(0.0, z)
        return raw / total


def fit_ensemble(train_scaled: np.ndarray, p: EnsembleParams, seed: int = 0) -> Ensemble:
    from sklearn.covariance import EllipticEnvelope
    from sklearn.ensemble import IsolationForest
    from sklearn.svm import OneClassSVM

    windows = np.asarray(train_scaled)
    if len(windows) > p.max_samples:
        windows = windows[np.linspace(0, len(windows) - 1, p.max_samples).astype(int)]
    raw = summarize(windows)
    mean, std = raw.mean(0), raw.std(0)
    std = np.where(std > 1e-9, std, 1.0)
    feats = ((raw - mean) / std).astype(np.float32)
    makers = {
        "iforest": lambda: IsolationForest(n_estimators=p.n_estimators,
                                           contamination=p.contamination, random_state=seed),
        "elliptic": lambda: EllipticEnvelope(contamination=p.contamination, random_state=seed,
                                             support_fraction=0.9),
        "ocsvm": lambda: OneClassSVM(nu=p.nu, gamma="scale"),
    }
    members, spread = {}, {}
    weights = {k: w for k, w in p.weights.items() if w > 0}
    for name in weights:
        model = makers[name]().fit(feats)
        members[name] = model
        spread[name] = float(max(np.std(model.decision_function(feats)), 1e-9))
    return Ensemble(members, weights, mean, std, spread)


def _const(name: str, value: Any, dtype: Any = np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def _summary_nodes(window: int, inp: str) -> tuple[list[onnx.NodeProto], list[Any]]:
    n = helper.make_node
    nodes = [
        n("ReduceMean", [inp], ["s_mean"], axes=[1], keepdims=0),
        n("ReduceMean", [inp], ["s_mean_k"], axes=[1], keepdims=1),
        n("Sub", [inp, "s_mean_k"], ["s_diff"]),
        n("Mul", ["s_diff", "s_diff"], ["s_sq"]),
        n("ReduceMean", ["s_sq"], ["s_var"], axes=[1], keepdims=0),
        n("Sqrt", ["s_var"], ["s_std"]),
        n("ReduceMin", [inp], ["s_min"], axes=[1], keepdims=0),
        n("ReduceMax", [inp], ["s_max"], axes=[1], keepdims=0),
        n("Gather", [inp, "s_last_idx"], ["s_last"], axis=1),
        n("Gather", [inp, "s_first_idx"], ["s_first"], axis=1),
        n("Sub", ["s_last", "s_first"], ["s_slope"]),
        n("Concat", ["s_mean", "s_std", "s_min", "s_max", "s_slope"], ["s_all"], axis=1),
        n("Sub", ["s_all", "feat_mean"], ["s_centered"]),
        n("Div", ["s_centered", "feat_std"], ["features"]),
    ]
    inits = [_const("s_last_idx", window - 1, np.int64), _const("s_first_idx", 0, np.int64)]
    return nodes, inits


def _sklearn_member(name: str, model: Any, dim: int) -> tuple[onnx.GraphProto, str]:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    onx = convert_sklearn(model, initial_types=[("features", FloatTensorType([None, dim]))],
                          target_opset={"": OPSET, "ai.onnx.ml": ML_OPSET})
    onx = onnx.compose.add_prefix(onx, prefix=f"{name}_", rename_inputs=False)
    return onx.graph, f"{name}_scores"


def _elliptic_member(model: Any) -> tuple[list[onnx.NodeProto], list[Any], str]:
    n = helper.make_node
    nodes = [
        n("Sub", ["features", "ee_loc"], ["ee_c"]),
        n("MatMul", ["ee_c", "ee_prec"], ["ee_cp"]),
        n("Mul", ["ee_cp", "ee_c"], ["ee_terms"]),
        n("ReduceSum", ["ee_terms", "ee_axis"], ["ee_mahal"], keepdims=1),
        n("Neg", ["ee_mahal"], ["ee_neg"]),
        n("Sub", ["ee_neg", "ee_offset"], ["elliptic_scores"]),
    ]
    inits = [_const("ee_loc", model.location_), _const("ee_prec", model.precision_),
             _const("ee_axis", [1], np.int64), _const("ee_offset", model.offset_)]
    return nodes, inits, "elliptic_scores"


def ensemble_graph(ens: Ensemble, window: int, n_features: int,
                   input_name: str = "input") -> onnx.ModelProto:
    """The whole ensemble as one ONNX graph: ``(B, W, C)`` float32 -> ``score`` ``(B,)``."""
    nodes, inits = _summary_nodes(window, input_name)
    inits += [_const("feat_mean", ens.feat_mean), _const("feat_std", ens.feat_std),
              _const("clip_lo", -30.0), _const("clip_hi", 1e4),
              _const("score_shape", [-1], np.int64)]
    dim = N_STATS * n_features
    total = sum(ens.weights.values())
    weighted = []
    for name, model in ens.members.items():
        if name == "elliptic":
            m_nodes, m_inits, out = _elliptic_member(model)
            nodes += m_nodes
            inits += m_inits
        else:
            graph, out = _sklearn_member(name, model, dim)
            nodes += list(graph.node)
            inits += list(graph.initializer)
        inits += [_const(f"{name}_inv_spread", -1.0 / ens.spread[name]),
                  _const(f"{name}_w", ens.weights[name] / total)]
        nodes += [
            helper.make_node("Mul", [out, f"{name}_inv_spread"], [f"{name}_z"]),
            helper.make_node("Clip", [f"{name}_z", "clip_lo", "clip_hi"], [f"{name}_zc"]),
            helper.make_node("Softplus", [f"{name}_zc"], [f"{name}_a"]),
            helper.make_node("Mul", [f"{name}_a", f"{name}_w"], [f"{name}_vote"]),
        ]
        weighted.append(f"{name}_vote")
    nodes += [helper.make_node("Sum", weighted, ["vote"]),
              helper.make_node("Reshape", ["vote", "score_shape"], ["score"])]
    graph = helper.make_graph(
        nodes, "statistical_ensemble",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT,
                                       ["batch", window, n_features])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"])],
        inits,
    )
    model = helper.make_model(graph, producer_name="edge-agent.export.ensemble", opset_imports=[
        helper.make_opsetid("", OPSET), helper.make_opsetid("ai.onnx.ml", ML_OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
