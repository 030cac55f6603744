"""Fuse the agent's arithmetic into an autoencoder graph (metadata ``output: error``).

An unfused model (``output: reconstruction``) leaves the agent ~5-8 small numpy calls
per window: scale the input, subtract the reconstruction, square, reduce. At batch 1
those cost more than the model. :func:`fuse` wraps the graph once, at export time::

    input (B, W, C), raw units
      -> Sub(center) -> Div(scale)                       = scaled   (old graph input)
      -> <autoencoder>                                   = reconstruction
      -> Sub(scaled) -> Mul(self)                        = squared error (B, W, C)
      -> [Slice last ``tail`` steps] -> ReduceMean(t)
      -> [Div(channel_scale)]                            = channel_error (B, C)
      -> ReduceMean(c) | ReduceMax(c)                    = raw_error (B,)

so the outputs are exactly what :func:`agent.model_meta.reduce_errors` computes (in
float32 instead of float64). The metadata becomes ``output: error``,
``scaling_in_graph: true`` and the golden vectors are recomputed from the fused bytes.
The agent then only copies the raw window into its input buffer and runs the session.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from agent.model_meta import ModelMeta
from export.errors import ModelFileError
from export.onnx_meta import get_meta, set_meta

RAW_OUTPUT = "raw_error"
CHANNEL_OUTPUT = "channel_error"
_P = "fused__"  # prefix of every name this module adds to the graph


def _opset(model: onnx.ModelProto) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
               default=17)


def _reduce(
    op: str, src: str, dst: str, axis: int, opset: int
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """A Reduce* node over one axis (keepdims 0); axes is an input from opset 18 on."""
    if opset >= 18:
        name = f"{_P}axis{axis}"
        init = numpy_helper.from_array(np.array([axis], dtype=np.int64), name)
        return [helper.make_node(op, [src, name], [dst], keepdims=0)], [init]
    return [helper.make_node(op, [src], [dst], axes=[axis], keepdims=0)], []


def _check_names(graph: onnx.GraphProto, in_name: str) -> None:
    """Refuse graphs whose names clash with ours, or whose subgraphs read the input
    directly (they would keep reading the raw, unscaled tensor)."""
    names = {i.name for i in graph.initializer} | {o for n in graph.node for o in n.output}
    clash = sorted(n for n in names if n.startswith(_P) or n in (RAW_OUTPUT, CHANNEL_OUTPUT))
    if clash:
        raise ModelFileError(f"cannot fuse: the graph already uses the names {clash}")
    for node in graph.node:
        for attr in node.attribute:
            for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
                if any(in_name in n.input for n in sub.node):
                    raise ModelFileError(
                        f"cannot fuse: a subgraph of node {node.name or node.op_type!r} "
                        f"reads the graph input {in_name!r}")


def fuse_graph(model: onnx.ModelProto, meta: ModelMeta) -> onnx.ModelProto:
    """A new graph: raw input -> scaling -> ``model`` -> error reduction (see module doc)."""
    if meta.output != "reconstruction" or meta.scaling_in_graph:
        raise ModelFileError(
            f"only unfused reconstruction models can be fused (output {meta.output!r}, "
            f"scaling_in_graph {meta.scaling_in_graph})"
        )
    src = model.graph
    if len(src.input) != 1 or len(src.output) != 1:
        raise ModelFileError("fusing needs a graph with exactly one input and one output")
    in_name, recon = src.input[0].name, src.output[0].name
    _check_names(src, in_name)
    scaled = f"{_P}scaled"
    opset = _opset(model)
    n = len(meta.features)

    def const(name: str, values: object, dtype: type = np.float32) -> onnx.TensorProto:
        return numpy_helper.from_array(np.asarray(values, dtype=dtype), f"{_P}{name}")

    inits = [const("center", meta.scaler.center), const("scale", meta.scaler.scale)]
    front = [
        helper.make_node("Sub", [in_name, f"{_P}center"], [f"{_P}centered"]),
        helper.make_node("Div", [f"{_P}centered", f"{_P}scale"], [scaled]),
    ]
    body = []
    for node in src.node:
        clone = onnx.NodeProto()
        clone.CopyFrom(node)
        for i, name in enumerate(clone.input):
            if name == in_name:
                clone.input[i] = scaled
        body.append(clone)
    back = [
        helper.make_node("Sub", [recon, scaled], [f"{_P}diff"]),
        helper.make_node("Mul", [f"{_P}diff", f"{_P}diff"], [f"{_P}sq"]),
    ]
    sq = f"{_P}sq"
    if meta.reduction == "tail_max":
        inits += [const("starts", [-meta.tail], np.int64), const("ends", [meta.window], np.int64),
                  const("axes", [1], np.int64)]
        back.append(helper.make_node(
            "Slice", [sq, f"{_P}starts", f"{_P}ends", f"{_P}axes"], [f"{_P}tail"]))
        sq = f"{_P}tail"
    scaled_per = meta.reduction == "tail_max" and bool(meta.channel_scale)
    per = f"{_P}per" if scaled_per else CHANNEL_OUTPUT
    nodes, more = _reduce("ReduceMean", sq, per, 1, opset)
    back += nodes
    inits += more
    if scaled_per:
        inits.append(const("channel_scale", meta.channel_scale))
        back.append(helper.make_node("Div", [per, f"{_P}channel_scale"], [CHANNEL_OUTPUT]))
    op = "ReduceMax" if meta.reduction == "tail_max" else "ReduceMean"
    nodes, more = _reduce(op, CHANNEL_OUTPUT, RAW_OUTPUT, 1, opset)
    back += nodes
    inits += [i for i in more if i.name not in {x.name for x in inits}]

    graph_in = onnx.ValueInfoProto()
    graph_in.CopyFrom(src.input[0])
    graph = helper.make_graph(
        front + body + back, f"{src.name or 'model'}_fused", [graph_in],
        [helper.make_tensor_value_info(RAW_OUTPUT, TensorProto.FLOAT, ["batch"]),
         helper.make_tensor_value_info(CHANNEL_OUTPUT, TensorProto.FLOAT, ["batch", n])],
        list(src.initializer) + inits,
    )
    graph.value_info.extend(src.value_info)
    fused = helper.make_model(graph, opset_imports=list(model.opset_import),
                              producer_name=model.producer_name or "edge-agent.export",
                              producer_version=model.producer_version)
    fused.ir_version = model.ir_version
    fused.metadata_props.extend(model.metadata_props)
    onnx.checker.check_model(fused)
    return fused


def fuse(model: onnx.ModelProto, golden_count: int = 4) -> onnx.ModelProto:
    """The fused twin of a finalized unfused model, with metadata and fresh golden vectors.

    Threshold, channel_scale and golden windows are kept; the golden raw scores are
    recomputed by onnxruntime from the fused bytes.
    """
    from export.finalize import embed_golden

    meta = get_meta(model)
    fused = fuse_graph(model, meta)
    set_meta(fused, dataclasses.replace(meta, output="error", scaling_in_graph=True,
                                        golden=()))
    windows = np.array([g.window for g in meta.golden], dtype=np.float64)
    if len(windows):
        embed_golden(fused, windows, min(golden_count, len(windows)))
    return fused
