"""Core throughput without a broker: per-stage cost, stages 1-2 vs bare HalfSpaceTrees,
stage 3 overhead vs a bare ``session.run``, and the whole cascade on one SKAB file.

    python benchmarks/bench_core.py [--points N] [--out benchmarks/results]

Saves ``core.json`` and ``core.png``. Ratios are measured in the same run, so they hold
across machines; absolute microseconds vary (and rise when other work shares the CPU).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent._version import __version__  # noqa: E402
from agent.cascade import StreamCascade  # noqa: E402
from agent.config import (  # noqa: E402
    AgentConfig,
    ChannelConfig,
    DetectorsConfig,
    RiverConfig,
    StreamConfig,
    ZScoreConfig,
    load_config,
)
from agent.csvio import read_table  # noqa: E402
from agent.detectors.river_models import RiverStage  # noqa: E402
from agent.detectors.zscore import StatGate  # noqa: E402
from agent.onnx_scorer import OnnxModel  # noqa: E402
from agent.replay import replay_table  # noqa: E402

SKAB_FILE = ROOT.parent / "shared" / "datasets" / "skab" / "valve1" / "1.csv"


def per_point_us(fn, n: int) -> float:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) / n * 1e6


def bench_stages(n: int, channels: int, seed: int = 0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, channels))
    rows = x.tolist()
    names = [f"c{i}" for i in range(channels)]

    gate = StatGate(ZScoreConfig(), channels)

    def stage1() -> None:
        for r in rows:
            gate.score_one(r)
            gate.learn_one(r)

    river = RiverStage(RiverConfig(warmup=50), names)

    def stage2_all() -> None:  # score + learn every point (escalation 100 %)
        for r in rows:
            river.score_one(r)
            river.learn_one(r, scored=True)

    from river.anomaly import HalfSpaceTrees

    hst = HalfSpaceTrees(n_trees=10, height=8, window_size=250, seed=42)
    lo, hi = x.min(axis=0), x.max(axis=0)
    dicts = [dict(zip(names, ((r - lo) / (hi - lo)).tolist(), strict=True)) for r in x]

    def bare_hst() -> None:
        for d in dicts:
            hst.score_one(d)
            hst.learn_one(d)

    stream = StreamConfig("s", tuple(ChannelConfig(c) for c in names))
    cfg = AgentConfig(streams=(stream,), detectors=DetectorsConfig(river=RiverConfig(warmup=50)))
    cascade = StreamCascade(stream, cfg)

    def stages12() -> None:  # the real cascade (default gates), stages 1-2
        for r in rows:
            cascade.process(r, 0.5)

    out = {
        "stage1_us": per_point_us(stage1, n),
        "stage2_score_learn_us": per_point_us(stage2_all, n),
        "bare_hst_us": per_point_us(bare_hst, n),
        "cascade_stages12_us": per_point_us(stages12, n),
    }
    scored = cascade.counts["scored"]
    out["escalation_to_stage2"] = scored[1] / max(scored[0], 1)
    out["cascade_over_hst"] = out["cascade_stages12_us"] / out["bare_hst_us"]
    return out


def bench_stage3(repeats: int = 300) -> dict[str, float]:
    from export.pca_ae import build_pca_model

    rng = np.random.default_rng(1)
    t = np.arange(4000.0)
    rows = np.c_[np.sin(t / 9), np.cos(t / 7), np.sin(t / 13), rng.normal(size=4000)]
    rows = np.repeat(rows, 2, axis=1) + 0.05 * rng.normal(size=(4000, 8))
    feats = tuple(f"c{i}" for i in range(8))
    blob = build_pca_model(rows, feats, window=50, n_components=16)
    model = OnnxModel(blob, providers=("cpu",))
    sess = model._session  # the same session, bare
    name = model.meta.input_name
    res: dict[str, float] = {"model_bytes": len(blob)}
    for batch in (1, 16):
        w = rows[: 50 * batch].reshape(batch, 50, 8)
        xs = w.astype(np.float32)

        def bare(xs: np.ndarray = xs) -> None:
            for _ in range(repeats):
                sess.run(None, {name: xs})

        def ours(w: np.ndarray = w, batch: int = batch) -> None:
            if batch == 1:  # the cascade's per-point path
                for _ in range(repeats):
                    model.score_window(w[0])
            else:
                for _ in range(repeats):
                    model.score_batch(w)

        bare()  # warm
        b = per_point_us(bare, repeats * batch)
        o = per_point_us(ours, repeats * batch)
        res[f"bare_us_per_window_b{batch}"] = b
        res[f"agent_us_per_window_b{batch}"] = o
        res[f"overhead_b{batch}"] = o / b - 1
    return res


def bench_skab() -> dict[str, float] | None:
    if not SKAB_FILE.exists():
        return None
    cfg = load_config(ROOT / "configs" / "skab.yaml")
    table = read_table(SKAB_FILE)
    r = replay_table(cfg, table, warmup_rows=400)
    scored = r.scored
    return {
        "file": str(SKAB_FILE.relative_to(ROOT.parent)),
        "points": r.points,
        "us_per_point": r.seconds / r.points * 1e6,
        "stage1_scored": scored["stage1"],
        "stage2_fraction": scored["stage2"] / max(scored["stage1"], 1),
        "stage3_fraction": scored["stage3"] / max(scored["stage1"], 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--points", type=int, default=20000)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, object] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": __import__("os").cpu_count()},
        "agent_version": __version__,
        "points": args.points,
        "channels": {},
    }
    for c in (1, 8, 32):
        print(f"stages 1-2 with {c} channel(s)...", file=sys.stderr)
        result["channels"][str(c)] = bench_stages(args.points, c)  # type: ignore[index]
    print("stage 3...", file=sys.stderr)
    result["stage3"] = bench_stage3()
    print("SKAB file...", file=sys.stderr)
    result["skab"] = bench_skab()
    (out / "core.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    _plot(result, out / "core.png")
    return 0


def _plot(result: dict[str, object], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chans = result["channels"]
    assert isinstance(chans, dict)
    labels = list(chans)
    keys = ["stage1_us", "stage2_score_learn_us", "bare_hst_us", "cascade_stages12_us"]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.2
    for i, k in enumerate(keys):
        ax.bar([j + i * width for j in range(len(labels))], [chans[c][k] for c in labels],
               width, label=k)
    ax.set_xticks([j + 1.5 * width for j in range(len(labels))], [f"{c} ch" for c in labels])
    ax.set_ylabel("µs per point")
    ax.legend(fontsize=8)
    ax.set_title("edge-agent core cost per point (same run)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
