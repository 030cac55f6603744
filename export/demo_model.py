"""Build the demo's stage-3 model: a PCA autoencoder fitted on normal synthetic data.

``python -m export.demo_model [OUT]`` (default ``agent/resources/demo-ae.onnx``). The
file is committed so that ``edge-agent demo`` needs neither torch nor onnx; a test
rebuilds it and checks that it scores like the committed one.

The model uses the ``tail_max`` reduction (see ``agent/model_meta.py``): the error of the
newest ``TAIL`` steps, per channel, normalised by that channel's median error on normal
data, so that a short anomaly on one channel is not averaged away. The file is the fused
form (``output: error``, see ``export/fuse.py``): scaling and that reduction run inside
the graph; ``build(fused=False)`` gives the reconstruction graph with the same threshold.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import onnx

from agent.synthetic import multisensor
from export.calibrate import quantile_threshold
from export.data import make_windows
from export.finalize import embed_golden
from export.fuse import fuse
from export.onnx_meta import OnnxRunner, get_meta, set_meta
from export.pca_ae import build_pca_model
from export.scoring import channel_errors, scale_windows

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "agent" / "resources" / "demo-ae.onnx"
WINDOW = 30
TAIL = 3
QUANTILE = 0.999


def build(out: str | Path | None = DEFAULT_OUT, fused: bool = True) -> bytes:
    normal = multisensor(n=6000, seed=12345, anomaly_rate=0.0)
    held_out = multisensor(n=4000, seed=54321, anomaly_rate=0.0)
    blob = build_pca_model(
        normal.values, normal.channels, window=WINDOW, variance=0.9,
        name="demo-pca-ae", version="1.0.0", q=QUANTILE,
    )
    model = onnx.load_from_string(blob)
    meta = dataclasses.replace(get_meta(model), reduction="tail_max", tail=TAIL, golden=())
    set_meta(model, meta)
    fit_windows = make_windows(normal.values, WINDOW, 1)
    runner = OnnxRunner(model)
    scaled = scale_windows(meta, fit_windows)
    per = channel_errors(meta, runner.run_scaled(scaled), scaled)
    scale = tuple(float(max(v, 1e-9)) for v in np.median(per, axis=0))
    meta = dataclasses.replace(meta, channel_scale=scale)
    set_meta(model, meta)
    val_windows = make_windows(held_out.values, WINDOW, 1)
    raw = OnnxRunner(model).raw_errors(val_windows)
    threshold = quantile_threshold(raw, QUANTILE)
    meta = dataclasses.replace(
        meta, threshold=threshold, thresholds={f"quantile_{QUANTILE}": threshold}
    )
    set_meta(model, meta)
    embed_golden(model, val_windows)
    if fused:
        model = fuse(model)
    data = model.SerializeToString()
    if out is not None:
        Path(out).write_bytes(data)
    return data


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else DEFAULT_OUT
    blob = build(out)
    print(f"wrote {out} ({len(blob)} bytes)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
