"""Event streams: stage 1 alone and the cascade with the next-event model, per anomaly type.

    python benchmarks/events.py [--seeds 1 2] [--events 20000] [--model RUN/model.onnx]

Data: :mod:`agent.synthetic_events` (PLC workflows as state machines plus background
events; every workflow step carries its instance id as ``attrs["session"]``, background
events none). The next-event model is trained with ``edge-export train`` and
``configs/train/next_event.yaml`` (epochs capped by ``--epochs``, one torch thread) on
40,000 normal events of another seed, one sequence per session (skipped with
``--model``). Each test run is one source of ``--events`` events with one anomaly type
injected into 15 % of the workflow instances; before scoring, the engine learns the last
20,000 training events (warm-up, ``learn_only``).

Two units, both reported:

* **per event**: an event counts as detected when the cascade flags it (fused score
  >= 0.5, before the alert policy); every flagged normal event is a false positive,
  including the events of an instance *after* its anomaly (``aftermath``: after a swap
  ``A C B D`` the model rightly finds ``D`` unexpected after ``B``; counted as FP here
  and reported separately);
* **per instance** (DeepLog's unit, its sessions / HDFS blocks): a workflow instance is
  anomalous when one of its events is labelled, detected when one of its events is
  flagged; every event without a session is a unit of its own.

Methods: ``stage1`` (rarity only); ``cascade`` (the defaults: session-keyed histories,
escalation on transitions with P(event | previous) < 0.5, top-k 9 plus the model's
probability floor 0.05); ``cascade_topk`` (top-k only, ``min_prob`` 0: DeepLog's rule).
No session-free method: a model trained per session is not meant for the interleaved
stream (the source-level model before sessions reached F1 0.58 / 0.71 per event, see the
git history of benchmarks/README.md). Sweeps over ``top_k`` and ``min_prob`` on the
sequence anomalies (first seed). Throughput is events/s of ``EventEngine.process`` on one core
(onnxruntime with one thread; the machine may be shared). Saves ``events.json`` and
``events.png``; updates benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
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

METHODS = ("stage1", "cascade", "cascade_topk")
K_SWEEP = (3, 5, 9, 15)
P_SWEEP = (0.0, 0.01, 0.02, 0.05, 0.1)


def prf(tp: int, fp: int, fn: int, negatives: int = 0) -> dict[str, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    out = {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f, 4),
           "tp": tp, "fp": fp, "fn": fn, "negatives": negatives}
    if negatives:
        out["fpr"] = round(fp / negatives, 5)
    return out


def train_model(out: Path, epochs: int, n: int = 40_000, seed: int = 100) -> Path:
    import yaml

    from export.config import config_from_dict
    from export.train import train_run

    data = out / "train.csv"
    write_events_csv(str(data), [generate_events(n, seed=seed)], sessions=True)
    raw = yaml.safe_load((ROOT / "configs" / "train" / "next_event.yaml").read_text())
    raw["training"]["epochs"] = min(int(raw["training"]["epochs"]), epochs)
    raw["training"]["threads"] = 1  # two torch threads on a busy 2-core box crawl
    res = train_run(config_from_dict(raw), data, out / "run", progress=False)
    return res.model_path


def points(s: EventSet, dt: float = 0.0) -> list[EventPoint]:
    out = []
    for i, (t, e) in enumerate(zip(s.ts, s.events, strict=True)):
        sid = s.session_of(i)
        out.append(EventPoint(t + dt, s.source, e, {"session": sid} if sid else {}))
    return out


def count(flags: list[bool], test: EventSet) -> dict[str, Any]:
    """Per-event and per-instance confusion counts of one run."""
    tp = fp = fn = after = 0
    units: dict[str, list[bool]] = {}  # unit -> [labelled, flagged]
    hit_sessions: set[str] = set()
    for i, (f, lab) in enumerate(zip(flags, test.labels, strict=True)):
        sid = test.session_of(i)
        tp += f and bool(lab)
        fn += (not f) and bool(lab)
        if f and not lab:
            fp += 1
            after += sid in hit_sessions
        if lab and sid:
            hit_sessions.add(sid)
        u = units.setdefault(sid or f"#{i}", [False, False])
        u[0] |= bool(lab)
        u[1] |= f
    neg = sum(not lab for lab in test.labels)
    itp = sum(lab and f for lab, f in units.values())
    ifp = sum(f and not lab for lab, f in units.values())
    ifn = sum(lab and not f for lab, f in units.values())
    ineg = sum(not lab for lab, _ in units.values())
    return {"event": (tp, fp, fn, neg), "instance": (itp, ifp, ifn, ineg), "aftermath": after}


def run_one(method: str, model: NextEventModel | None, warm: EventSet, test: EventSet,
            top_k: int | None = None, min_prob: float | None = None
            ) -> tuple[dict[str, Any], float, float]:
    if model is not None:
        model.top_k = top_k if top_k is not None else model.meta.top_k
        model.min_prob = min_prob if min_prob is not None else (
            0.0 if method == "cascade_topk" else float(model.meta.thresholds["min_prob"]))
    cfg = EventsConfig(sources=(EventSourceConfig(test.source),), sequence=SequenceConfig())
    eng = EventEngine(cfg, model=None if method == "stage1" else model)
    for p in points(warm, dt=-1e7):
        eng.learn_only(p)
    pts = points(test)
    t0 = time.perf_counter()
    flags = [eng.process(p).flagged for p in pts]
    seconds = time.perf_counter() - t0
    return count(flags, test), len(pts) / seconds, eng.stats()["escalation_rate"]


def model_cost(model: NextEventModel, n: int = 2000) -> dict[str, float]:
    import numpy as np

    rng = np.random.default_rng(0)
    hist = rng.integers(2, len(model.vocab), size=(n, model.history))
    t0 = time.perf_counter()
    for h in hist:
        model.score_one(h.tolist(), 2)
    return {"us_per_event": round((time.perf_counter() - t0) / n * 1e6, 1),
            "bytes": model.size}


def sweep(model: NextEventModel, warm: EventSet, seed: int, n: int, **kw: Any
          ) -> dict[str, Any]:
    tot = {"event": [0, 0, 0, 0], "instance": [0, 0, 0, 0]}
    for kind in SEQUENCE_ANOMALIES:
        c, _, _ = run_one("cascade", model, warm, generate_events(n, seed=seed,
                                                                  anomalies=(kind,)), **kw)
        for unit in tot:
            tot[unit] = [a + b for a, b in zip(tot[unit], c[unit], strict=True)]
    return {unit: prf(*v) for unit, v in tot.items()}


def plot(results: dict[str, Any], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 1]})
    width = 0.8 / len(METHODS)
    for j, m in enumerate(METHODS):
        f1 = [results["per_type"][k][m]["event"]["f1"] for k in ANOMALY_TYPES]
        ax.bar([i + j * width for i in range(len(ANOMALY_TYPES))], f1, width, label=m)
    ax.axhline(0.95, color="tab:red", linestyle="--", linewidth=1, label="target 0.95")
    ax.set_xticks([i + (len(METHODS) - 1) / 2 * width for i in range(len(ANOMALY_TYPES))],
                  ANOMALY_TYPES)
    ax.set_ylabel("F1 (per event)")
    ax.set_ylim(0, 1.05)
    ax.set_title("event streams: stage 1 vs cascade")
    ax.legend(fontsize=7)
    ks = sorted(results["k_sweep"], key=int)
    for unit, style in (("event", "o-"), ("instance", "s--")):
        ax2.plot([int(k) for k in ks], [results["k_sweep"][k][unit]["f1"] for k in ks], style,
                 label=unit)
    ax2.set_xlabel("top_k (min_prob = model's)")
    ax2.set_ylabel("sequence-anomaly F1")
    ax2.set_ylim(0, 1.05)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, path)


def table(results: dict[str, Any]) -> str:
    lines = ["| anomaly | method | P (event) | R (event) | F1 (event) | FPR (event) "
             "| F1 (instance) |", "|---|---|---|---|---|---|---|"]
    for k in ANOMALY_TYPES:
        for m in METHODS:
            r = results["per_type"][k][m]
            e, i = r["event"], r["instance"]
            lines.append(f"| {k} | {m} | {e['precision']:.3f} | {e['recall']:.3f} | "
                         f"{e['f1']:.3f} | {e['fpr']:.4f} | {i['f1']:.3f} |")
    seq = results["sequence_anomalies"]
    lines.append("")
    lines.append("Sequence anomalies (skipped step + wrong order), F1 per event / per instance: "
                 + ", ".join(f"{m} {seq[m]['event']['f1']:.3f} / {seq[m]['instance']['f1']:.3f}"
                             for m in METHODS) + " (target 0.95).")
    c = seq["cascade"]
    lines.append(f"`cascade` per event: precision {c['event']['precision']:.3f}, recall "
                 f"{c['event']['recall']:.3f}, FPR {c['event']['fpr']:.4f}; "
                 f"{results['aftermath']['cascade']} of its {c['event']['fp']} false "
                 "positives are aftermath (a later event of an instance already flagged).")
    lines.append("top_k sweep (min_prob = model's), sequence-anomaly F1 event / instance: "
                 + ", ".join(f"k={k} {v['event']['f1']:.3f} / {v['instance']['f1']:.3f}"
                             for k, v in results["k_sweep"].items()) + ".")
    lines.append("min_prob sweep (top_k 9): " + ", ".join(
        f"{p} {v['event']['f1']:.3f} / {v['instance']['f1']:.3f}"
        for p, v in results["min_prob_sweep"].items()) + ".")
    lines.append("Throughput on one core (events/s): " + ", ".join(
        f"{m} {results['events_per_s'][m]:,.0f}" for m in METHODS)
        + f"; `cascade` runs the model on {results['escalation_rate']['cascade']:.1%} "
        "of events.")
    mm = results["model"]
    lines.append(f"Model: {mm['vocab']} ids, history {mm['history']}, top-k {mm['top_k']}, "
                 f"min_prob {mm['min_prob']}, {mm['bytes'] / 1024:.0f} KiB, "
                 f"{mm['us_per_event']:.0f} µs per scored event. Run {results['date']} "
                 f"(1-min load average {results.get('load_avg_1m_at_end', 'n/a')} on "
                 f"{results['machine']['cpus']} CPUs); `python benchmarks/events.py`.")
    seq_c = results["sequence_anomalies"]["cascade"]
    met = seq_c["instance"]["f1"] >= 0.95
    lines += ["", (
        f"**Status: sequence-anomaly F1 {seq_c['instance']['f1']:.3f} per instance "
        f"(DeepLog's unit, its HDFS blocks) {'meets' if met else 'misses'} the 0.95 target; "
        f"per event it is {seq_c['event']['f1']:.3f}.** What changed and why: (1) every "
        "workflow step carries its instance id and the sequence stage keeps one history per "
        "session (DeepLog keys by session): in the source's single stream 8 context-free "
        "events (5 background, 3 rare warnings) sit in the model's top 9 after any step, so "
        "top-9 could not tell a skipped-to step from the next one and a heartbeat pushed steps "
        "out of the 10-event history; (2) inside a session the expected step gets ~0.99 and "
        "every other id ~1e-4 in arbitrary order (a skipped-to step often ranks 2nd), so top-k "
        "alone finds nothing (`cascade_topk`) and the model's probability floor `min_prob` "
        "(0.05, below every valid branch: 0.1..0.85) decides; k only matters below the number "
        "of valid next steps (k=3 < 4 workflow starts); (3) the transition gate escalates "
        "below P 0.5 so branch points (MIX_END -> SAMPLE_TAKEN is a valid rework step) reach "
        "the model; (4) training also inserts `<unknown>` into histories, so an unknown alarm "
        "inside a batch does not make its next step look wrong; (5) the `max_lift` check "
        "applies to session-less events only. The generator's labels were checked, not "
        "changed: the first labelled event of every anomalous instance is exactly where the "
        "instance's prefix stops being a valid path (tests/agent/events/test_events_sessions.py)."
        " Per event the rest is inherent to a next-event model trained on normal data: the "
        "second event of a swapped pair (A C B D: B) often looks plausible to the model once C "
        "is out of place (false negatives), and the step after the pair (D) looks wrong after "
        "B (the aftermath false positives counted above); the remaining false positives are "
        "stage 1's share flags.")]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--sweep-events", type=int, default=10_000)
    ap.add_argument("--epochs", type=int, default=6, help="cap on training epochs")
    ap.add_argument("--model", default=None, help="a trained next_event model (skip training)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--no-readme", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        model_path = Path(args.model) if args.model else train_model(Path(tmp), args.epochs)
        model = NextEventModel.from_path(model_path)
    print(f"model ready after {time.perf_counter() - started:.0f} s", flush=True)
    warm_all = generate_events(40_000, seed=100)
    warm = dataclasses.replace(
        warm_all, ts=warm_all.ts[-20_000:], events=warm_all.events[-20_000:],
        labels=warm_all.labels[-20_000:], sessions=warm_all.sessions[-20_000:])
    per_type: dict[str, dict[str, Any]] = {}
    speed: dict[str, list[float]] = {m: [] for m in METHODS}
    esc: dict[str, list[float]] = {m: [] for m in METHODS}
    totals: dict[str, dict[str, dict[str, list[int]]]] = {}
    after: dict[str, int] = {m: 0 for m in METHODS}
    for kind in ANOMALY_TYPES:
        per_type[kind] = {}
        totals[kind] = {}
        tests = [generate_events(args.events, seed=s, anomalies=(kind,)) for s in args.seeds]
        for m in METHODS:
            tot = {"event": [0, 0, 0, 0], "instance": [0, 0, 0, 0]}
            for test in tests:
                c, eps, rate = run_one(m, model, warm, test)
                for unit in tot:
                    tot[unit] = [a + b for a, b in zip(tot[unit], c[unit], strict=True)]
                if kind in SEQUENCE_ANOMALIES:
                    after[m] += c["aftermath"]
                speed[m].append(eps)
                esc[m].append(rate)
            totals[kind][m] = tot
            per_type[kind][m] = {unit: prf(*v) for unit, v in tot.items()}
            print(f"{kind:14s} {m:18s} event {per_type[kind][m]['event']} "
                  f"instance F1 {per_type[kind][m]['instance']['f1']}", flush=True)
    seq = {m: {unit: prf(*[sum(totals[k][m][unit][j] for k in SEQUENCE_ANOMALIES)
                           for j in range(4)]) for unit in ("event", "instance")}
           for m in METHODS}
    k_sweep = {str(k): sweep(model, warm, args.seeds[0], args.sweep_events, top_k=k)
               for k in K_SWEEP}
    print("k sweep", {k: v["event"]["f1"] for k, v in k_sweep.items()}, flush=True)
    p_sweep = {str(p): sweep(model, warm, args.seeds[0], args.sweep_events, min_prob=p)
               for p in P_SWEEP}
    print("min_prob sweep", {k: v["event"]["f1"] for k, v in p_sweep.items()}, flush=True)
    model.top_k, model.min_prob = model.meta.top_k, float(model.meta.thresholds["min_prob"])
    results = {
        "date": now_utc(), "machine": machine(), "versions": versions("torch"),
        "seeds": args.seeds, "events_per_run": args.events,
        "sweep_events_per_run": args.sweep_events,
        "model": {"path": str(model_path) if args.model else "trained by this run",
                  "epochs_cap": args.epochs, "vocab": len(model.vocab),
                  "history": model.history, "top_k": model.top_k,
                  "min_prob": model.min_prob, "sha256": model.sha256,
                  **model_cost(model)},
        "per_type": per_type, "sequence_anomalies": seq, "aftermath": after,
        "k_sweep": k_sweep, "min_prob_sweep": p_sweep,
        "events_per_s": {m: round(sorted(v)[len(v) // 2], 1) for m, v in speed.items()},
        "escalation_rate": {m: round(sum(v) / len(v), 4) for m, v in esc.items()},
        "seconds": round(time.perf_counter() - started, 1),
        "load_avg_1m_at_end": round(os.getloadavg()[0], 2),  # throughput depends on it
    }
    save_json(out / "events.json", results)
    plot(results, out / "events.png")
    if not args.no_readme:
        update_readme("events", "## Event streams (issue #8)\n\n" + table(results))
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
