"""``edge-agent demo``: the cascade end to end on a labelled synthetic stream.

Streams MISSION.md item 1's four sensors (with spikes, drifts, noise bursts and drops)
through the same :class:`~agent.engine.Engine` the gateway runs, with the bundled
stage-3 model, prints alerts as they are raised, then a stats table, detection quality
against the labels, and writes ``demo.png`` (signals, fused score, threshold, alerts,
true anomalies) and ``alerts.jsonl`` into ``--out``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from agent.config import AgentConfig, load_config
from agent.engine import Engine
from agent.onnx_scorer import model_from_config
from agent.sinks import CallbackSink, JsonlSink
from agent.synthetic import Synthetic, multisensor
from agent.types import Alert, AlertEvent


def default_config_path() -> Path:
    return Path(__file__).resolve().parent / "resources" / "demo.yaml"


def _print_alert(alert: Alert) -> None:
    if alert.event is AlertEvent.RAISE:
        chans = ",".join(alert.channels) or "-"
        print(f"  ALERT  {alert.severity.label:<8} stream={alert.stream} t={alert.start:.0f} "
              f"score={alert.score:.2f} stage={alert.stage.name.lower()} channels={chans}")
    elif alert.event is AlertEvent.CLEAR:
        assert alert.end is not None
        print(f"  clear  {alert.alert_id[:8]} after {alert.end - alert.start:.0f}s "
              f"peak={alert.peak_score:.2f}")


def episode_recall(labels: np.ndarray, alerts: np.ndarray) -> tuple[int, int]:
    """(labelled episodes touched by an alert, labelled episodes)."""
    edges = np.flatnonzero(np.diff(np.r_[0, labels.astype(int), 0]))
    starts, ends = edges[::2], edges[1::2]
    hit = sum(bool(alerts[s : e + 5].any()) for s, e in zip(starts, ends, strict=True))
    return hit, len(starts)


def run_demo(config_path: str | None, points: int, seed: int, out: Path) -> int:
    cfg: AgentConfig = load_config(config_path or default_config_path())
    stream = cfg.streams[0].id
    out.mkdir(parents=True, exist_ok=True)
    model = model_from_config(cfg.detectors.onnx, cfg.resolve_path)
    data = multisensor(n=points, seed=seed)
    jsonl = JsonlSink(out / "alerts.jsonl")
    engine = Engine(cfg, model=model, sinks=[CallbackSink(_print_alert), jsonl])
    provider = model.provider if model is not None else "none (stage 3 off)"
    print(f"edge-agent demo: {points} points, stream '{stream}', channels "
          f"{', '.join(data.channels)}; stage 3 on {provider}")
    scores = np.zeros(points)
    stages = np.zeros(points, dtype=int)
    alerts = np.zeros(points, dtype=bool)
    t0 = time.perf_counter()
    for i, p in enumerate(data.points(stream)):
        d = engine.process(p)
        scores[i], stages[i], alerts[i] = d.score, int(d.stage), d.alert
    elapsed = time.perf_counter() - t0
    jsonl.close()
    st = engine.stats()
    scored = slice(st["points_in"] - st["scored"]["stage1"], None)
    y, a = data.labels[scored], alerts[scored]
    tp, fp, fn = int((y & a).sum()), int((~y & a).sum()), int((y & ~a).sum())
    hit, episodes = episode_recall(y, a)
    rows = [
        ("points", st["points_in"]),
        ("points/s", f"{points / elapsed:,.0f}"),
        ("stage 1 scored", st["scored"]["stage1"]),
        ("stage 2 scored", f"{st['scored']['stage2']} ({st['escalation_rate']['stage2']:.1%})"),
        ("stage 3 scored", f"{st['scored']['stage3']} ({st['escalation_rate']['stage3']:.1%})"),
        ("alerts raised", sum(v for k, v in st["alerts"].items() if not k.startswith("up"))),
        ("point precision", f"{tp / max(tp + fp, 1):.2f}"),
        ("point recall", f"{tp / max(tp + fn, 1):.2f}"),
        ("episodes detected", f"{hit}/{episodes}"),
        ("false-positive rate", f"{fp / max(int((~y).sum()), 1):.2%}"),
    ]
    print("\n".join(f"  {k:<20} {v}" for k, v in rows))
    png = out / "demo.png"
    plot(data, scores, alerts, cfg.alerts.threshold, png)
    print(f"plot: {png}\nalerts: {out / 'alerts.jsonl'}")
    return 0


def plot(data: Synthetic, scores: np.ndarray, alerts: np.ndarray, threshold: float,
         path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = data.ts - data.ts[0]
    n = len(data.channels)
    fig, axes = plt.subplots(n + 1, 1, figsize=(14, 2.0 * (n + 1)), sharex=True)
    for ax, name, col in zip(axes[:n], data.channels, data.values.T, strict=True):
        ax.plot(t, col, lw=0.6, color="tab:blue")
        ax.set_ylabel(name, fontsize=8)
        _shade(ax, t, data.labels, "tab:red", 0.15)
    ax = axes[-1]
    ax.plot(t, scores, lw=0.6, color="black", label="fused score")
    ax.axhline(threshold, color="tab:orange", ls="--", lw=1, label="threshold")
    _shade(ax, t, alerts, "tab:orange", 0.3)
    _shade(ax, t, data.labels, "tab:red", 0.15)
    ax.set_ylim(0, 1)
    ax.set_ylabel("score")
    ax.set_xlabel("seconds")
    ax.legend(loc="upper right", fontsize=8)
    fig.suptitle("edge-agent demo: red = labelled anomaly, orange = alert")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _shade(ax: object, t: np.ndarray, mask: np.ndarray, color: str, alpha: float) -> None:
    edges = np.flatnonzero(np.diff(np.r_[0, mask.astype(int), 0]))
    for s, e in zip(edges[::2], edges[1::2], strict=True):
        ax.axvspan(t[s], t[min(e, len(t) - 1)], color=color, alpha=alpha, lw=0)  # type: ignore[attr-defined]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_demo(None, 4000, 7, Path("demo-out")))
