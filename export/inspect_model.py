"""``edge-export inspect``: the embedded metadata, human-readable or as JSON."""

from __future__ import annotations

import json
from pathlib import Path

from agent.model_meta import ModelMeta
from export.onnx_meta import get_meta, load_model


def describe(path: str | Path, as_json: bool = False) -> str:
    model = load_model(path)
    meta = get_meta(model)
    if as_json:
        return json.dumps(json.loads(meta.to_json()), indent=2, sort_keys=True)
    return format_meta(meta, Path(path), model.graph.input[0].name)


def format_meta(meta: ModelMeta, path: Path | None = None, graph_input: str = "") -> str:
    lines = []
    if path is not None:
        lines.append(f"file:               {path} ({path.stat().st_size} bytes)")
    lines += [
        f"name:               {meta.name}",
        f"version:            {meta.version}",
        f"kind:               {meta.kind}",
        f"architecture:       {meta.architecture}",
        f"schema_version:     {meta.schema_version}",
        f"input:              {meta.input_name} (batch, {meta.window}, {len(meta.features)})"
        + (f" [graph: {graph_input}]" if graph_input and graph_input != meta.input_name else ""),
        f"output:             {meta.output}" + (
            " (fused: scaling and error reduction in the graph; outputs raw_error (batch,),"
            f" channel_error (batch, {len(meta.features)}))" if meta.output == "error" else ""),
        f"reduction:          {meta.reduction}"
        + (f" (tail {meta.tail})" if meta.reduction == "tail_max" else ""),
        f"window / stride:    {meta.window} / {meta.stride}",
        f"features:           {', '.join(meta.features)}",
        f"scaling_in_graph:   {meta.scaling_in_graph}",
        "scaler:             feature: center / scale",
    ]
    for f, c, s in zip(meta.features, meta.scaler.center, meta.scaler.scale, strict=True):
        lines.append(f"  {f:<28} {c:.6g} / {s:.6g}")
    if meta.channel_scale:
        lines.append("channel_scale:      " + ", ".join(
            f"{f} {v:.6g}" for f, v in zip(meta.features, meta.channel_scale, strict=True)))
    lines.append(f"threshold:          {meta.threshold:.6g}  (raw window error -> score 0.5)")
    for key in sorted(meta.thresholds):
        lines.append(f"  {key:<28} {meta.thresholds[key]:.6g}")
    lines += [
        f"training_data_sha256: {meta.training_data_sha256 or '-'}",
        f"created_at:         {meta.created_at or '-'}",
        f"opset:              {meta.opset}",
        "frameworks:         " + ", ".join(f"{k} {v}" for k, v in sorted(meta.frameworks.items())),
        f"golden vectors:     {len(meta.golden)}",
    ]
    for i, g in enumerate(meta.golden):
        score = meta.calibrate(g.raw_score)
        lines.append(f"  [{i}] raw_score {g.raw_score:.6g}  score {score:.4f}")
    return "\n".join(lines)
