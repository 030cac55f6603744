"""Size, latency and torch/ONNX agreement of every stage-3 architecture on SKAB.

Trains each ``configs/train/<arch>.yaml`` on SKAB's anomaly-free recording (8 channels,
read in place from ``--data``; the GPL data is never copied into the repository) with a
short budget (``--epochs``, default 5, and at most ``--max-windows`` training windows), so
the numbers describe model size and runtime cost, not tuned accuracy. Latency is the
median over ``--repeats`` onnxruntime CPU runs with one intra-op thread (the agent's
default), per window, at batch 1 and batch 16.

    python benchmarks/bench_models.py [--data CSV] [--arch dense,pca] [--epochs 3]

Writes ``benchmarks/results/models.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from export.config import ARCHITECTURES, TORCH_ARCHITECTURES, load_config
from export.train import train_run

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path("/work/shared/datasets/skab/anomaly-free/anomaly-free.csv")


def latency_ms(model_path: Path, window: int, n_features: int, batch: int,
               repeats: int) -> float:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    x = np.random.default_rng(0).normal(size=(batch, window, n_features)).astype(np.float32)
    for _ in range(5):
        sess.run(None, {name: x})
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sess.run(None, {name: x})
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1000.0 / batch


def bench(arch: str, data: Path, epochs: int, max_windows: int, repeats: int,
          work: Path) -> dict:
    cfg = load_config(REPO / "configs" / "train" / f"{arch}.yaml")
    training = dataclasses.replace(cfg.training, epochs=min(cfg.training.epochs, epochs),
                                   max_train_windows=max_windows)
    cfg = dataclasses.replace(cfg, training=training)
    started = time.perf_counter()
    res = train_run(cfg, data, work / arch, progress=False)
    seconds = time.perf_counter() - started
    meta, rep = res.meta, res.report
    n_features = len(meta.features)
    return {
        "architecture": arch, "model_bytes": res.model_path.stat().st_size,
        "params": rep["n_params"], "window": meta.window, "n_features": n_features,
        "epochs_run": rep.get("epochs_run"), "train_windows": rep["train_windows"],
        "train_seconds": round(seconds, 2),
        "latency_ms_per_window_b1": latency_ms(res.model_path, meta.window, n_features, 1,
                                               repeats),
        "latency_ms_per_window_b16": latency_ms(res.model_path, meta.window, n_features, 16,
                                                repeats),
        "max_abs_diff": rep["max_abs_diff"], "max_abs_diff_against": rep["max_abs_diff_against"],
        "threshold": meta.threshold, "val_error_p50": rep["val_error_quantiles"]["0.5"],
    }


def table(rows: list[dict]) -> str:
    head = (f"{'arch':<12}{'bytes':>10}{'params':>9}{'ms/win b1':>11}{'ms/win b16':>12}"
            f"{'max|diff|':>11}  vs{'':<10}{'train s':>8}")
    lines = [head, "-" * len(head)]
    for r in rows:
        diff = "-" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.2g}"
        lines.append(
            f"{r['architecture']:<12}{r['model_bytes']:>10}{r['params']:>9}"
            f"{r['latency_ms_per_window_b1']:>11.3f}{r['latency_ms_per_window_b16']:>12.3f}"
            f"{diff:>11}  {r['max_abs_diff_against'] or '-':<12}{r['train_seconds']:>8.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--arch", default=",".join(ARCHITECTURES))
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--max-windows", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "models.json")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-models-") as tmp:
        for arch in args.arch.split(","):
            rows.append(bench(arch, args.data, args.epochs, args.max_windows, args.repeats,
                              Path(tmp)))
            print(f"{arch}: done in {rows[-1]['train_seconds']} s", file=sys.stderr)
    result = {
        "dataset": "SKAB anomaly-free (" + args.data.name + ")",
        "budget": {"epochs": args.epochs, "max_train_windows": args.max_windows,
                   "note": "short training: sizes and latencies are representative, "
                           "accuracy is not tuned"},
        "torch_architectures": list(TORCH_ARCHITECTURES),
        "onnxruntime": ort.__version__, "python": platform.python_version(),
        "machine": platform.machine(), "latency_threads": 1, "models": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(table(rows))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
