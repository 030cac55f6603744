"""SKAB outlier-track benchmark of the agent's cascade (protocol: SKAB_PROTOCOL.md).

Run from the repository root::

    python benchmarks/skab.py [--out benchmarks/results] [--no-cv] [--workers N]

Every one of the 34 files goes through :func:`agent.replay.replay_table` -- the code path
of ``edge-agent replay`` -- with a fresh engine per file: the first 400 rows only learn
(``--warmup-rows 400``), every later row is scored and gets a 0/1 alert. The stage-3
model of a file is a :class:`~export.control_chart.WindowMeanChart` fitted on that
file's first 400 rows and exported to ONNX (the protocol allows a detector that learns
from a file's training rows), loaded with :class:`~agent.onnx_scorer.OnnxModel` like any
pushed model. Configuration: ``configs/skab.yaml`` plus :data:`CHART` below (one global
configuration for all 34 files; how it was chosen: ``--cv`` and benchmarks/README.md).

Variants: the cascade, each stage alone, and prototypes of proposed core changes. The
replays (variant x file) and the CV's per-file chart scoring run in a process pool of
``--workers`` processes (default: the number of CPUs); the figures do not depend on it.
The wall and CPU time of the run are saved under ``runtime`` in the JSON.
Outputs: ``<out>/skab.json``, ``<out>/skab.png``, per-file score CSVs under
``<out>/tmp/skab_scores/<group>/<n>.csv`` (``timestamp,alert,score``; gitignored) and
the table in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import dataclasses
import itertools
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import common  # noqa: E402
import skab_metric as sm  # noqa: E402

from agent.config import AgentConfig, load_config  # noqa: E402
from agent.onnx_scorer import OnnxModel  # noqa: E402
from agent.replay import replay_table  # noqa: E402
from export.control_chart import ChannelRule, WindowMeanChart  # noqa: E402

CONFIG = ROOT / "configs" / "skab.yaml"

# The stage-3 chart, fitted per file on its 400 training rows (global parameters). These are
# the choice of cross_validate()'s selection rule on all 34 files (its held-out figures are
# in skab.json); clear_after (40) is in configs/skab.yaml.
CHART: dict[str, Any] = {
    "channels": ("Accelerometer1RMS", "Accelerometer2RMS", "Volume Flow RateRMS"),
    "window": 10,
    "decay": 0.2,
    "threshold": 4.0,
    "rules": {
        "Accelerometer1RMS": {"rel_tolerance": 0.05},
        "Accelerometer2RMS": {"rel_tolerance": 0.05},
        "Volume Flow RateRMS": {"rel_tolerance": 0.025},
    },
}


# --------------------------------------------------------------------------- building blocks


def make_chart(params: dict[str, Any], train: np.ndarray) -> WindowMeanChart:
    rules = {k: ChannelRule(**v) for k, v in params.get("rules", {}).items()}
    return WindowMeanChart(tuple(params["channels"]), params["window"], params["threshold"],
                           rules, decay=params.get("decay", 0.0)).fit(train)


def chart_blob(params: dict[str, Any], f: sm.SkabFile) -> bytes:
    """The ONNX bytes of ``f``'s stage-3 chart (fitted on its training rows)."""
    idx = [f.table.columns.index(c) for c in params["channels"]]
    train = f.table.values[: sm.N_TRAIN, idx]
    chart = make_chart(params, train)
    return chart.to_onnx(name=f"skab-chart-{f.key.replace('/', '-')}", golden_rows=train)


def load_chart(blob: bytes, key: str) -> OnnxModel:
    return OnnxModel(blob, providers=("cpu",), source=f"chart:{key}")


def chart_model(params: dict[str, Any], f: sm.SkabFile) -> OnnxModel:
    return load_chart(chart_blob(params, f), f.key)


def _replace(cfg: AgentConfig, **sections: dict[str, Any]) -> AgentConfig:
    """``_replace(cfg, zscore={"enabled": False}, escalation={...})``: a config variant."""
    det = cfg.detectors
    changes: dict[str, Any] = {}
    for name, kv in sections.items():
        if name in ("zscore", "river", "onnx"):
            det = dataclasses.replace(det, **{name: dataclasses.replace(getattr(det, name), **kv)})
        else:
            changes[name] = dataclasses.replace(getattr(cfg, name), **kv)
    return dataclasses.replace(cfg, detectors=det, **changes)


@dataclasses.dataclass
class Variant:
    name: str
    description: str
    config: AgentConfig
    use_model: bool
    prototype: bool = False  # uses a proposed core change (patched in, see PROTOTYPES)


def variants(cfg: AgentConfig) -> list[Variant]:
    off = {"enabled": False}
    return [
        Variant("cascade", "configs/skab.yaml: stage 1 -> stage 2 -> stage 3 (per-file chart)",
                cfg, True),
        Variant("stage1", "stage 1 only (statistical gate)", _replace(cfg, river=off), False),
        Variant("stage2", "stage 2 only (River)", _replace(cfg, zscore=off), False),
        Variant("stage3", "stage 3 only (per-file chart, every point)",
                _replace(cfg, zscore=off, river=off), True),
        Variant("cascade+hold", "PROTOTYPE: cascade with stricter gates (river_at 0.45, "
                "onnx_at 0.5) + proposed escalation.hold_while_active",
                _replace(cfg, escalation={"river_at": 0.45, "onnx_at": 0.5}), True,
                prototype=True),
    ]


# --------------------------------------------------------------------------- prototypes
# Proposed core change, prototyped without editing agent/: "escalation.hold_while_active" --
# while a stream's alert is active every point goes through every stage, so the stage that
# raised the alert (not a cheap stage that stopped escalating) decides when it clears.


@contextlib.contextmanager
def hold_while_active() -> Iterator[None]:
    import agent.engine as engine_mod
    from agent.cascade import StreamCascade

    class HoldCascade(StreamCascade):
        hold = False

        def process(self, x: list[float], alert_threshold: float) -> Any:
            if not self.hold:
                return super().process(x, alert_threshold)
            cfg = self.config
            self.config = dataclasses.replace(cfg, escalation=dataclasses.replace(
                cfg.escalation, river_at=0.0, onnx_at=0.0))
            try:
                return super().process(x, alert_threshold)
            finally:
                self.config = cfg

    class HoldEngine(engine_mod.Engine):
        def process(self, point: Any) -> Any:
            cas, pol = self._cascades.get(point.stream), self._policies.get(point.stream)
            if cas is not None and pol is not None:
                cas.hold = pol.active
            return super().process(point)

        def process_batch(self, points: Any) -> list[Any]:
            # The hold is read point by point: no vectorised stage-1 runs here.
            return [self.process(p) for p in points]

    import agent.replay as replay_mod

    saved = engine_mod.StreamCascade, replay_mod.Engine
    engine_mod.StreamCascade, replay_mod.Engine = HoldCascade, HoldEngine
    try:
        yield
    finally:
        engine_mod.StreamCascade, replay_mod.Engine = saved


# --------------------------------------------------------------------------- running


# Runs are independent (a fresh engine per file and variant), so they go to a process pool of
# os.cpu_count() workers; results are put back in file order, so nothing depends on which
# worker ran what or when it finished. Workers are spawned (not forked: the parent may hold
# onnxruntime sessions) and get the files, the variants and the charts' ONNX bytes once.

_WORKER: dict[str, Any] = {}


def _init_worker(files: list[sm.SkabFile], vs: list[Variant], blobs: dict[str, bytes]) -> None:
    _WORKER.update(files={f.key: f for f in files}, variants={v.name: v for v in vs},
                   blobs=blobs, models={})


def _worker_model(key: str) -> OnnxModel:
    models = _WORKER["models"]
    if key not in models:
        models[key] = load_chart(_WORKER["blobs"][key], key)
    return models[key]


@dataclasses.dataclass
class FileRun:
    """One variant on one file: what :func:`run_variants` keeps of a replay."""

    alerts: np.ndarray
    scores: np.ndarray
    stage3: int
    escalated: int
    seconds: float


def replay_file(v: Variant, f: sm.SkabFile, model: OnnxModel | None,
                progress: Callable[[int], None] | None = None) -> FileRun:
    ctx = hold_while_active() if v.prototype else contextlib.nullcontext()
    with ctx:
        r = replay_table(v.config, f.table, model=model if v.use_model else None,
                         warmup_rows=sm.N_TRAIN, progress=progress)
    return FileRun(r.alerts, r.scores, int(r.stats["scored"]["stage3"]),
                   int(r.stats["escalated"]["to_stage3"]), r.seconds)


def _replay_task(name: str, key: str) -> FileRun:
    v = _WORKER["variants"][name]
    return replay_file(v, _WORKER["files"][key], _worker_model(key) if v.use_model else None)


def _summarise(v: Variant, files: list[sm.SkabFile], runs: dict[str, FileRun]) -> dict[str, Any]:
    alerts = {f.key: runs[f.key].alerts for f in files}
    scores = {f.key: runs[f.key].scores for f in files}
    total, per = sm.evaluate(files, alerts)
    n_test = sum(len(f.labels) - sm.N_TRAIN for f in files)
    stage3 = sum(runs[f.key].stage3 for f in files)
    return {
        "description": v.description, "prototype": v.prototype, **total.as_dict(),
        "stage3_fraction": round(stage3 / n_test, 4),
        "stage3_escalated": sum(runs[f.key].escalated for f in files),
        "seconds": round(sum(runs[f.key].seconds for f in files), 1),
        "per_file": {k: c.as_dict() for k, c in per.items()},
        "_alerts": alerts, "_scores": scores,
    }


def run_variants(vs: list[Variant], files: list[sm.SkabFile], blobs: dict[str, bytes],
                 pool: cf.ProcessPoolExecutor | None = None,
                 progress: Callable[[int], None] | None = None) -> dict[str, dict[str, Any]]:
    """Every variant on every file through :func:`agent.replay.replay_table` (in ``pool``
    when given, else here); ``seconds`` of a variant is the sum of its replays' times."""
    runs: dict[str, dict[str, FileRun]] = {v.name: {} for v in vs}
    if pool is None:
        models = {f.key: load_chart(blobs[f.key], f.key) for f in files}
        for v in vs:
            for f in files:
                runs[v.name][f.key] = replay_file(v, f, models[f.key], progress)
    else:
        # longest first (the files are similar per row; variant order is roughly by cost)
        by_len = sorted(files, key=lambda f: -len(f.labels))
        futures = {pool.submit(_replay_task, v.name, f.key): (v.name, f)
                   for v in vs for f in by_len}
        for fut in cf.as_completed(futures):
            name, f = futures[fut]
            runs[name][f.key] = fut.result()
            if progress is not None:
                progress(len(f.labels))
    return {v.name: _summarise(v, files, runs[v.name]) for v in vs}


def write_scores(root: Path, files: list[sm.SkabFile], res: dict[str, Any]) -> None:
    for f in files:
        p = root / f"{f.key}.csv"
        p.parent.mkdir(parents=True, exist_ok=True)
        a, s = res["_alerts"][f.key], res["_scores"][f.key]
        lines = ["timestamp,alert,score"] + [
            f"{ts},{int(ai)},{si:.6f}" for ts, ai, si in zip(f.table.raw_ts, a, s, strict=True)]
        p.write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------- cross-validation


def policy_alerts(ratios: np.ndarray, clear_after: int) -> np.ndarray:
    """The agent's AlertPolicy with k = n = 1 and clear_threshold = threshold (vectorised
    ratios in, 0/1 out); the test part only. Checked against replay in the tests.

    The alert is raised by a ratio >= 1 and cleared by ``clear_after`` consecutive ratios
    below 1, so row ``t`` is alerting iff a test row in ``t - clear_after + 1 .. t`` hit."""
    hit = np.asarray(ratios) >= 1.0
    hit[: sm.N_TRAIN] = False
    c = np.concatenate([[0], np.cumsum(hit)])
    i = np.arange(len(hit))
    lo = np.maximum(0, i - clear_after + 1)
    return ((c[i + 1] - c[lo]) > 0).astype(np.int8)


CV_GRID: dict[str, list[Any]] = {
    "window_decay": [(10, 0.2), (20, 0.1), (20, 0.2), (30, 0.1)],
    "threshold": [3.5, 4.0, 5.0, 6.0],
    "acc_rel_tolerance": [0.05, 0.1],
    "flow_rel_tolerance": [0.01, 0.015, 0.02, 0.025, 0.03],
    "clear_after": [1, 5, 10, 20, 40],
}


def _params(window_decay: tuple[int, float], threshold: float, rel: float,
            flow_rel: float) -> dict[str, Any]:
    window, decay = window_decay
    return {**CHART, "window": window, "decay": decay, "threshold": threshold, "rules": {
        "Accelerometer1RMS": {"rel_tolerance": rel},
        "Accelerometer2RMS": {"rel_tolerance": rel},
        "Volume Flow RateRMS": {"rel_tolerance": flow_rel},
    }}


CV_NAMES = ("window_decay", "threshold", "acc_rel_tolerance", "flow_rel_tolerance",
            "clear_after")

# What each ingredient of CV_GRID buys: the same CV with one ingredient taken away (or, for
# "flat_or_weighted", offered next to the flat window), reported as held-out figures.
CV_ABLATIONS: dict[str, dict[str, list[Any]]] = {
    "flat_window": {**CV_GRID, "window_decay": [(5, 0.0), (10, 0.0), (20, 0.0), (30, 0.0)]},
    "flat_or_weighted": {**CV_GRID, "window_decay": [(5, 0.0), (10, 0.0), (20, 0.0),
                                                     (30, 0.0), *CV_GRID["window_decay"]]},
    "no_flow_tolerance": {**CV_GRID, "flow_rel_tolerance": [0.0]},
    "clear_after_max_20": {**CV_GRID, "clear_after": [1, 5, 10, 20]},
}

Conf = dict[tuple[Any, ...], dict[str, sm.Confusion]]


def chart_confusions(f: sm.SkabFile, charts: list[tuple[Any, ...]],
                     clear_afters: list[list[int]]) -> dict[tuple[Any, ...], sm.Confusion]:
    """``f``'s confusion at every ``(*chart, clear_after)`` point, ``clear_afters[i]``
    being the values wanted with ``charts[i]``: the chart is fitted and scored once and the
    (cheap) alert policy is applied to its ratios for each ``clear_after``."""
    out: dict[tuple[Any, ...], sm.Confusion] = {}
    y = f.labels[sm.N_TRAIN:].astype(bool)
    for chart_args, cas in zip(charts, clear_afters, strict=True):
        p = _params(*chart_args)
        idx = [f.table.columns.index(c) for c in p["channels"]]
        x = f.table.values[:, idx]
        ratios = make_chart(p, x[: sm.N_TRAIN]).score_rows(x)
        for ca, c in zip(cas, policy_confusions(ratios, cas, y), strict=True):
            out[(*chart_args, ca)] = c
    return out


def policy_confusions(ratios: np.ndarray, clear_afters: list[int],
                      y: np.ndarray) -> list[sm.Confusion]:
    """``sm.confusion(labels, policy_alerts(ratios, ca))`` for every ``ca`` of
    ``clear_afters`` at once (``y``: the test rows' labels as bool; same integers)."""
    hit = np.asarray(ratios) >= 1.0
    hit[: sm.N_TRAIN] = False
    c = np.concatenate([[0], np.cumsum(hit)])
    i = np.arange(sm.N_TRAIN, len(hit))  # test rows only
    lo = np.maximum(0, i[None, :] - np.asarray(clear_afters)[:, None] + 1)
    alert = (c[i + 1][None, :] - c[lo]) > 0  # (len(clear_afters), test rows)
    tp = np.count_nonzero(alert & y, axis=1)
    fp = np.count_nonzero(alert, axis=1) - tp
    fn = int(np.count_nonzero(y)) - tp
    tn = len(y) - tp - fp - fn
    return [sm.Confusion(int(a), int(b), int(c_), int(d))
            for a, b, c_, d in zip(tp, tn, fp, fn, strict=True)]


def _chart_task(key: str, charts: list[tuple[Any, ...]],
                clear_afters: list[list[int]]) -> dict[tuple[Any, ...], sm.Confusion]:
    return chart_confusions(_WORKER["files"][key], charts, clear_afters)


def grid_points(grid: dict[str, list[Any]]) -> list[tuple[Any, ...]]:
    return list(itertools.product(*(grid[n] for n in CV_NAMES)))


def fill_cache(files: list[sm.SkabFile], points: list[tuple[Any, ...]], cache: Conf,
               pool: cf.ProcessPoolExecutor | None = None) -> None:
    """Score the grid ``points`` missing from ``cache`` (one task per file in ``pool``)."""
    todo: dict[tuple[Any, ...], list[int]] = {}  # chart args -> clear_after values missing
    for g in dict.fromkeys(points):
        if g not in cache:
            todo.setdefault(g[:-1], []).append(g[-1])
    if not todo:
        return
    charts, cas = list(todo), list(todo.values())
    if pool is None:
        per = [chart_confusions(f, charts, cas) for f in files]
    else:
        n = len(files)
        per = list(pool.map(_chart_task, [f.key for f in files], [charts] * n, [cas] * n))
    for chart_args, ca_list in todo.items():
        for ca in ca_list:
            g = (*chart_args, ca)
            cache[g] = {f.key: part[g] for f, part in zip(files, per, strict=True)}


def grid_confusions(files: list[sm.SkabFile], grid: dict[str, list[Any]],
                    cache: Conf | None = None,
                    pool: cf.ProcessPoolExecutor | None = None) -> Conf:
    """Per-file confusions of every grid point (vectorised chart + policy; ``cache`` is
    shared between grids so that a setting is scored once; files go to ``pool`` if given)."""
    cache = {} if cache is None else cache
    points = grid_points(grid)
    fill_cache(files, points, cache, pool)
    return {g: cache[g] for g in points}


def cross_validate(files: list[sm.SkabFile], grid: dict[str, list[Any]] | None = None,
                   cache: Conf | None = None,
                   pool: cf.ProcessPoolExecutor | None = None) -> dict[str, Any]:
    """Leave-files-out CV of the chart + policy parameters over ``grid`` (:data:`CV_GRID`).

    Selection rule on the tuning files: the largest F1 among settings with FAR <= 10 %
    (then the smallest FAR + MAR). Two fold schemes: by group (tune on valve1, test on
    valve2 + other, and the reverse) and 4 interleaved folds (file i -> fold i mod 4).
    Each file is held out exactly once per scheme; the held-out confusions are pooled.
    """
    grid = CV_GRID if grid is None else grid
    keys = [f.key for f in files]
    conf = grid_confusions(files, grid, cache, pool)

    def pick(tune: list[str]) -> tuple[Any, ...]:
        def key(g: tuple[Any, ...]) -> tuple[Any, ...]:
            c = sum((conf[g][k] for k in tune), sm.Confusion())
            return (c.far <= 10.0, c.f1, -(c.far + c.mar))
        return max(conf, key=key)

    out: dict[str, Any] = {"grid": grid, "selection": "max F1 s.t. FAR <= 10 % on the "
                           "tuning files, ties: min FAR + MAR", "schemes": {}}
    schemes = {
        "by_group": [[k for k in keys if k.startswith("valve1/")],
                     [k for k in keys if not k.startswith("valve1/")]],
        "interleaved_4fold": [[k for i, k in enumerate(keys) if i % 4 == j] for j in range(4)],
    }
    for scheme, folds in schemes.items():
        held = sm.Confusion()
        rows = []
        for test in folds:
            tune = [k for k in keys if k not in test]
            g = pick(tune)
            c_test = sum((conf[g][k] for k in test), sm.Confusion())
            c_tune = sum((conf[g][k] for k in tune), sm.Confusion())
            held = held + c_test
            rows.append({"test_files": test, "chosen": dict(zip(CV_NAMES, g, strict=True)),
                         "tune": c_tune.as_dict(), "held_out": c_test.as_dict()})
        out["schemes"][scheme] = {"folds": rows, "held_out_pooled": held.as_dict()}
    g = pick(keys)
    out["all_files_choice"] = dict(zip(CV_NAMES, g, strict=True))
    out["all_files_choice_score"] = sum((conf[g][k] for k in keys), sm.Confusion()).as_dict()
    return out


def ablations(files: list[sm.SkabFile], cache: Conf,
              pool: cf.ProcessPoolExecutor | None = None) -> dict[str, Any]:
    """Held-out figures of the CV over each grid of :data:`CV_ABLATIONS`."""
    out = {}
    for name, grid in CV_ABLATIONS.items():
        cv = cross_validate(files, grid, cache, pool)
        out[name] = {"grid": grid, "all_files_choice": cv["all_files_choice"],
                     "all_files_choice_score": cv["all_files_choice_score"],
                     **{s: v["held_out_pooled"] for s, v in cv["schemes"].items()}}
    return out


# --------------------------------------------------------------------------- reporting


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = ["| Detector | F1 | FAR, % | MAR, % | TP | TN | FP | FN | causal |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| **edge-agent {name}** | {r['F1']:.2f} | {r['FAR']:.2f} | "
                     f"{r['MAR']:.2f} | {r['tp']} | {r['tn']} | {r['fp']} | {r['fn']} | yes |")
    for name, f1, far, mar, ahead in sm.LEADERBOARD:
        lines.append(f"| {name} | {f1:.2f} | {far:.2f} | {mar:.2f} | | | | | "
                     f"{'no (looks ahead)' if ahead else 'yes'} |")
    return "\n".join(lines)


def plot(results: dict[str, dict[str, Any]], main: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(2, 1, figsize=(14, 9), gridspec_kw={"height_ratios": [3, 2]})
    per = results[main]["per_file"]
    keys = list(per)
    x = np.arange(len(keys))
    a1.bar(x - 0.2, [per[k]["FAR"] for k in keys], 0.4, label="FAR %", color="tab:red")
    a1.bar(x + 0.2, [per[k]["MAR"] for k in keys], 0.4, label="MAR %", color="tab:blue")
    a1.set_xticks(x, keys, rotation=90, fontsize=8)
    a1.set_ylabel("%")
    a1.set_title(f"SKAB per file, edge-agent {main} (causal)")
    a1.legend()
    rows = [(f"edge-agent {n}", r["FAR"], r["MAR"], True) for n, r in results.items()]
    rows += [(n, far, mar, not ahead) for n, _f1, far, mar, ahead in sm.LEADERBOARD]
    for name, far, mar, causal in rows:
        ours = name.startswith("edge-agent")
        a2.scatter(far, mar, s=60 if ours else 40, marker="o" if ours else ("s" if causal else "^"),
                   color="tab:green" if ours else ("tab:gray" if causal else "tab:orange"))
        a2.annotate(name, (far, mar), fontsize=7, xytext=(3, 3), textcoords="offset points")
    a2.set_xlabel("FAR, % (lower is better)")
    a2.set_ylabel("MAR, % (lower is better)")
    a2.set_title("vs. the SKAB leaderboard (orange triangles look ahead; grey squares causal)")
    a2.grid(alpha=0.3)
    fig.tight_layout()
    common.save_png(fig, path)
    plt.close(fig)


def cv_table(cv: dict[str, Any], abl: dict[str, Any]) -> str:
    def fig(c: dict[str, Any]) -> str:
        return f"{c['F1']:.2f} / {c['FAR']:.2f} / {c['MAR']:.2f}"

    rows = {"CV_GRID (shipped)": {"by_group": cv["schemes"]["by_group"]["held_out_pooled"],
                                  "interleaved_4fold":
                                      cv["schemes"]["interleaved_4fold"]["held_out_pooled"],
                                  "all_files_choice_score": cv["all_files_choice_score"]},
            **abl}
    lines = ["| CV grid | by group F1 / FAR / MAR | 4-fold F1 / FAR / MAR | "
             "all-files choice F1 / FAR / MAR |", "|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {fig(r['by_group'])} | {fig(r['interleaved_4fold'])} | "
                     f"{fig(r['all_files_choice_score'])} |")
    return "\n".join(lines)


def runtime_text(rt: dict[str, Any]) -> str:
    phases = ", ".join(f"{k} {v:.0f} s" for k, v in rt["phase_wall_seconds"].items())
    return (f"{rt['wall_seconds']:.0f} s wall ({phases}), {rt['cpu_seconds']:.0f} s CPU, "
            f"{rt['workers']} worker process{'es' if rt['workers'] > 1 else ''}")


def config_summary(cfg: AgentConfig) -> dict[str, Any]:
    d = dataclasses.asdict(cfg)
    return {k: d[k] for k in ("streams", "detectors", "escalation", "alerts")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--data", default=None, help="SKAB copy (default ../shared/datasets/skab)")
    ap.add_argument("--config", default=str(CONFIG))
    ap.add_argument("--scores", default=None,
                    help="per-file score CSVs (default <out>/tmp/skab_scores)")
    ap.add_argument("--no-cv", action="store_true", help="skip the cross-validation")
    ap.add_argument("--variants", default=None, help="comma-separated subset of variants")
    ap.add_argument("--no-readme", action="store_true")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="worker processes for the replays and the CV (default: the number "
                    "of CPUs; 1 = everything in this process)")
    args = ap.parse_args(argv)

    from tqdm import tqdm

    clock = common.Stopwatch()
    out = Path(args.out)
    if not sm.available(args.data):
        print(f"SKAB not found at {sm.data_dir(args.data)}", file=sys.stderr)
        return 2
    files = sm.load_files(args.data)
    cfg = load_config(args.config)
    blobs = {f.key: chart_blob(CHART, f) for f in files}
    vs = variants(cfg)
    if args.variants:
        keep = args.variants.split(",")
        vs = [v for v in vs if v.name in keep]
    rows_total = sum(len(f.labels) for f in files)
    workers = max(1, args.workers)
    clock.lap("load")
    with contextlib.ExitStack() as stack:
        pool = None if workers == 1 else stack.enter_context(cf.ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker, initargs=(files, vs, blobs)))
        with tqdm(total=rows_total * len(vs), unit="row", file=sys.stderr, desc="skab") as bar:
            results = run_variants(vs, files, blobs, pool, bar.update)
        clock.lap("replay")
        cache: Conf = {}
        cv = abl = None
        if not args.no_cv:
            grids = [CV_GRID, *CV_ABLATIONS.values()]
            fill_cache(files, [g for grid in grids for g in grid_points(grid)], cache, pool)
            cv = cross_validate(files, CV_GRID, cache)
            abl = ablations(files, cache)
        clock.lap("cv")
    main_name = "cascade" if "cascade" in results else next(iter(results))
    write_scores(Path(args.scores) if args.scores else out / "tmp" / "skab_scores", files,
                 results[main_name])
    refs = sm.reference_scores(files)

    for r in results.values():
        r.pop("_alerts"), r.pop("_scores")
    report = {
        "benchmark": "SKAB v0.9 outlier track (SKAB_PROTOCOL.md), 34 files, 400 training rows",
        "date": common.now_utc(), "machine": common.machine(), "versions": common.versions(),
        "command": "python benchmarks/skab.py " + " ".join(argv or sys.argv[1:]),
        "main": main_name,
        "variants": results,
        "stage3_model": {"kind": "WindowMeanChart (export/control_chart.py), fitted "
                                  "per file on its first 400 rows, exported to ONNX",
                         "params": CHART},
        "config": config_summary(cfg), "config_file": str(Path(args.config).resolve()
                                                            .relative_to(ROOT)),
        "references": {k: c.as_dict() for k, c in refs.items()},
        "leaderboard": [dict(zip(("name", "F1", "FAR", "MAR", "looks_ahead"), r, strict=True))
                        for r in sm.LEADERBOARD],
        "cross_validation": cv,
        "cv_ablations": abl,
    }
    plot(results, main_name, out / "skab.png")
    clock.lap("report")
    report["runtime"] = runtime = clock.summary(workers=workers)
    common.save_json(out / "skab.json", report)

    tab = table(results)
    print(tab)
    print()
    for name, r in results.items():
        print(f"{name:10s} stage-3 fraction of test points: {r['stage3_fraction']:.3f}  "
              f"({r['seconds']} s)")
    for name, c in refs.items():
        print(f"reference {name:20s} {c}")
    if cv:
        for scheme, s in cv["schemes"].items():
            h = s["held_out_pooled"]
            print(f"CV {scheme:18s} held-out pooled: F1 {h['F1']:.2f}  FAR {h['FAR']:.2f} %  "
                  f"MAR {h['MAR']:.2f} %")
        print(f"CV choice on all files: {cv['all_files_choice']}")
    if abl:
        print(cv_table(cv, abl))
    print(f"runtime: {runtime_text(runtime)}")
    if not args.no_readme:
        body = (
            f"SKAB outlier track, `python benchmarks/skab.py` ({report['date']}, "
            f"{report['machine'].get('cpu', report['machine']['machine'])}). Micro-averaged "
            "over the test rows of all 34 files; Conv-AE, LSTM-AE and MSET look ahead "
            "(centred windows), edge-agent is causal.\n\n" + tab + "\n\n"
            + "Stage-3 fraction of test points: " + ", ".join(
                f"{n} {r['stage3_fraction']:.2f}" for n, r in results.items()) + "."
            + f"\n\nRuntime of the whole script: {runtime_text(runtime)}."
        )
        if cv:
            body += "\n\nLeave-files-out CV (held-out, pooled): " + "; ".join(
                f"{s}: F1 {v['held_out_pooled']['F1']:.2f} / FAR {v['held_out_pooled']['FAR']:.2f}"
                f" / MAR {v['held_out_pooled']['MAR']:.2f}" for s, v in cv["schemes"].items()) + "."
        if cv and abl:
            body += ("\n\nWhat each ingredient of the CV grid buys (held-out, pooled; the same "
                     "selection rule on each grid):\n\n" + cv_table(cv, abl))
        common.update_readme("skab", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
