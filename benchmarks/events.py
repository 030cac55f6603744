"""Event streams: stage 1 alone and the cascade with the next-event model, per anomaly type.

    python benchmarks/events.py [--seeds 1 2] [--events 20000] [--model RUN/model.onnx]

Data: :mod:`agent.synthetic_events` (PLC workflows as state machines plus background
events). The next-event model is trained with ``edge-export train`` and
``configs/train/next_event.yaml`` on 40,000 normal events of another seed (skipped with
``--model``). Each test run is one source of ``--events`` events with one anomaly type
injected into 15 % of the workflow instances; before scoring, the engine learns the
last 20,000 training events (warm-up, ``learn_only``).

Metrics are per event: an event counts as detected when the cascade flags it (fused
score >= 0.5, before the alert policy), precision counts every flagged normal event of
that run. Methods: ``stage1`` (rarity only), ``cascade`` (rarity + model, escalation on
unusual transitions, top-k and the lift check), ``cascade_minprob`` (model on every
event, also flagging a probability below 0.01). Throughput is events/s
of ``EventEngine.process`` on one core (onnxruntime with one thread).
Saves ``events.json`` and ``events.png``; updates benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import machine, now_utc, save_json, save_png, update_readme, versions  # noqa: E402

from agent.events.cascade import EventEngine  # noqa: E402
from agent.events.config import EventsConfig, EventSourceConfig, SequenceConfig  # noqa: E402
from agent.events.sequence import NextEventModel  # noqa: E402
from agent.events.types import EventPoint  # noqa: E402
from agent.synthetic_events import (  # noqa: E402
    ANOMALY_TYPES,
    SEQUENCE_ANOMALIES,
    EventSet,
    generate_events,
    write_events_csv,
)

METHODS = ("stage1", "cascade", "cascade_minprob")


def prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f, 4),
            "tp": tp, "fp": fp, "fn": fn}


def train_model(out: Path, n: int = 40_000, seed: int = 100) -> Path:
    from export.train import train_run

    data = out / "train.csv"
    write_events_csv(str(data), [generate_events(n, seed=seed)])
    res = train_run(ROOT / "configs" / "train" / "next_event.yaml", data, out / "run",
                    progress=False)
    return res.model_path


def run_one(method: str, model: NextEventModel | None, warm: EventSet, test: EventSet
            ) -> tuple[dict[str, int], float, float]:
    seq = SequenceConfig(escalate="always" if method == "cascade_minprob" else "transition")
    if model is not None:
        model.min_prob = 0.01 if method == "cascade_minprob" else 0.0
    cfg = EventsConfig(sources=(EventSourceConfig(test.source),), sequence=seq)
    eng = EventEngine(cfg, model=None if method == "stage1" else model)
    for t, e in zip(warm.ts, warm.events, strict=True):
        eng.learn_only(EventPoint(t - 1e7, test.source, e))
    tp = fp = fn = 0
    t0 = time.perf_counter()
    flags = []
    for t, e in zip(test.ts, test.events, strict=True):
        flags.append(eng.process(EventPoint(t, test.source, e)).flagged)
    seconds = time.perf_counter() - t0
    for f, lab in zip(flags, test.labels, strict=True):
        tp += f and bool(lab)
        fp += f and not lab
        fn += (not f) and bool(lab)
    st = eng.stats()
    return {"tp": tp, "fp": fp, "fn": fn}, len(test.events) / seconds, st["escalation_rate"]


def plot(results: dict[str, Any], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    width = 0.8 / len(METHODS)
    for j, m in enumerate(METHODS):
        f1 = [results["per_type"][k][m]["f1"] for k in ANOMALY_TYPES]
        ax.bar([i + j * width for i in range(len(ANOMALY_TYPES))], f1, width, label=m)
    ax.axhline(0.95, color="tab:red", linestyle="--", linewidth=1, label="target 0.95")
    ax.set_xticks([i + width for i in range(len(ANOMALY_TYPES))], ANOMALY_TYPES)
    ax.set_ylabel("F1 (per event)")
    ax.set_ylim(0, 1.05)
    ax.set_title("event streams: stage 1 vs cascade")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, path)


def table(results: dict[str, Any]) -> str:
    lines = ["| anomaly | method | precision | recall | F1 |", "|---|---|---|---|---|"]
    for k in ANOMALY_TYPES:
        for m in METHODS:
            r = results["per_type"][k][m]
            lines.append(f"| {k} | {m} | {r['precision']:.3f} | {r['recall']:.3f} | "
                         f"{r['f1']:.3f} |")
    seq = results["sequence_anomalies"]
    lines.append("")
    lines.append("Sequence anomalies (skipped step + wrong order), F1: " + ", ".join(
        f"{m} {seq[m]['f1']:.3f}" for m in METHODS) + " (target 0.95).")
    lines.append("Throughput on one core (events/s): " + ", ".join(
        f"{m} {results['events_per_s'][m]:,.0f}" for m in METHODS)
        + f"; escalation rate of `cascade`: {results['escalation_rate']['cascade']:.1%}.")
    lines.append(f"Model: {results['model']['vocab']} ids, history "
                 f"{results['model']['history']}, top-k {results['model']['top_k']}. "
                 f"Run {results['date']}; `python benchmarks/events.py`.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--model", default=None, help="a trained next_event model (skip training)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--no-readme", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out)
    with tempfile.TemporaryDirectory() as tmp:
        model_path = Path(args.model) if args.model else train_model(Path(tmp))
        model = NextEventModel.from_path(model_path)
    warm_all = generate_events(40_000, seed=100)
    warm = dataclasses.replace(warm_all, ts=warm_all.ts[-20_000:],
                               events=warm_all.events[-20_000:], labels=warm_all.labels[-20_000:])
    per_type: dict[str, dict[str, Any]] = {}
    speed: dict[str, list[float]] = {m: [] for m in METHODS}
    esc: dict[str, list[float]] = {m: [] for m in METHODS}
    for kind in ANOMALY_TYPES:
        per_type[kind] = {}
        for m in METHODS:
            tot = {"tp": 0, "fp": 0, "fn": 0}
            for seed in args.seeds:
                test = generate_events(args.events, seed=seed, anomalies=(kind,))
                c, eps, rate = run_one(m, model, warm, test)
                for key in tot:
                    tot[key] += c[key]
                speed[m].append(eps)
                esc[m].append(rate)
            per_type[kind][m] = prf(**tot)
            print(f"{kind:14s} {m:15s} {per_type[kind][m]}", flush=True)
    seq = {m: prf(*(sum(per_type[k][m][x] for k in SEQUENCE_ANOMALIES)
                    for x in ("tp", "fp", "fn"))) for m in METHODS}
    results = {
        "date": now_utc(), "machine": machine(), "versions": versions("torch"),
        "seeds": args.seeds, "events_per_run": args.events,
        "model": {"path": str(model_path) if args.model else "trained by this run",
                  "vocab": len(model.vocab), "history": model.history, "top_k": model.top_k,
                  "sha256": model.sha256},
        "per_type": per_type, "sequence_anomalies": seq,
        "events_per_s": {m: round(sorted(v)[len(v) // 2], 1) for m, v in speed.items()},
        "escalation_rate": {m: round(sum(v) / len(v), 4) for m, v in esc.items()},
    }
    save_json(out / "events.json", results)
    plot(results, out / "events.png")
    if not args.no_readme:
        update_readme("events", "## Event streams (issue #8)\n\n" + table(results))
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
