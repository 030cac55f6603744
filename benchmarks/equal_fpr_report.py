"""The report of the equal-FPR comparison of ``benchmarks/synthetic.py`` (issue #9): the
README text (tables and the explanation of point vs event recall, with this run's
numbers) and the figure ``synthetic_fpr.png``. Reads only the results dictionary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from common import save_png
from equal_fpr import AE


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f} %"


def render_equal_fpr(res: dict[str, Any]) -> list[str]:
    eq = res["item1_equal_fpr"]
    c, a, r = eq["cascade"], eq["autoencoder_oracle"], eq["ratio"]
    sh = eq["autoencoder_shipped_threshold"]
    thr = float(np.mean(eq["autoencoder_thresholds"]))
    s3 = res["item1_multisensor"]["cascade"]["stage3_fraction"]
    lines = [
        "**Cascade vs autoencoder everywhere at equal false-positive rate** (item 1; the "
        "curves are in the figure below). The line above compares each at its own threshold, "
        f"at FPRs {100 * sh['fpr']:.2f} % (autoencoder) and {100 * c['fpr']:.2f} % (cascade), "
        "so it says little. Here the cascade runs as shipped (alert threshold "
        f"{eq['alert_policy']['threshold']}) and the autoencoder everywhere (same ONNX model, "
        "same alert policy, clear threshold scaled with the threshold in odds) at the lowest "
        "threshold whose point FPR on the *test labels* does not exceed the cascade's, per "
        f"seed (mean {thr:.3f}, i.e. {thr / (1 - thr):.1f}x its calibrated error). That "
        "threshold is chosen with the labels: **an oracle in the autoencoder's favour**. "
        f"Point FPR: cascade {100 * c['fpr']:.2f} %, autoencoder {100 * a['fpr']:.2f} %; "
        "means over the seeds; event = labelled episode, found when an alert overlaps it or "
        "follows within 5 points.", "",
        "| anomaly type (episodes) | point recall, cascade | autoencoder (oracle) | cascade / AE | "
        "event recall, cascade | autoencoder (oracle) | cascade / AE |",
        "|---|---|---|---|---|---|---|",
        f"| all | {c['recall']:.3f} | {a['recall']:.3f} | {_pct(r['recall'])} | "
        f"{c['event_recall']:.3f} | {a['event_recall']:.3f} | {_pct(r['event_recall'])} |"]
    for k, ck in c["kinds"].items():
        ak, rk = a["kinds"].get(k), r["kinds"].get(k, {})
        if ak is None:
            continue
        lines.append(f"| {k} ({ck['episodes']}) | {ck['point_recall']:.3f} | "
                     f"{ak['point_recall']:.3f} | "
                     f"{_pct(rk.get('point_recall'))} | {ck['event_recall']:.3f} | "
                     f"{ak['event_recall']:.3f} | {_pct(rk.get('event_recall'))} |")
    low = [f"{k} {kind} recall {_pct(v)}" for k, rk in r["kinds"].items()
           for kind, v in (("point", rk["point_recall"]), ("event", rk["event_recall"]))
           if v is not None and v < 0.95]
    met = (s3 <= 0.10 and (r["recall"] or 0) >= 0.95 and (r["event_recall"] or 0) >= 0.95)
    lines += ["", f"Target (issue #9: stage 3 on <= 10 % of windows, >= 95 % of the "
              f"autoencoder-everywhere recall at equal or lower FPR): stage 3 on "
              f"{100 * s3:.1f} % of points, point recall {_pct(r['recall'])} and event recall "
              f"{_pct(r['event_recall'])} of the autoencoder's at equal FPR: "
              f"**{'met' if met else 'not met'}** overall"
              + (f"; per type below 95 %: {', '.join(low)}." if low else
                 "; every type at >= 95 % too.")]
    lines += ["", "![recall against point FPR, cascade and autoencoder everywhere; which "
              "points of an episode each marks](results/synthetic_fpr.png)", "",
              *along_curves(eq), "", *explain_points(res)]
    return lines


def along_curves(eq: dict[str, Any]) -> list[str]:
    """The cascade's threshold sweep against the autoencoder's curve at the same FPR
    (linear interpolation of the autoencoder's mean curve; no oracle per seed here)."""
    ae = sorted(eq["curves"][AE], key=lambda p: p["fpr"])
    fx = [p["fpr"] for p in ae]
    rows, worse = [], []
    for p in sorted(eq["curves"]["cascade"], key=lambda p: p["threshold"]):
        if not fx[0] <= p["fpr"] <= fx[-1]:
            continue
        r_ae = float(np.interp(p["fpr"], fx, [q["recall"] for q in ae]))
        e_ae = float(np.interp(p["fpr"], fx, [q["event_recall"] for q in ae]))
        rows.append(f"| {p['threshold']} | {100 * p['fpr']:.2f} | {p['recall']:.3f} / "
                    f"{r_ae:.3f} | {p['event_recall']:.3f} / {e_ae:.3f} |")
        if p["recall"] < 0.95 * r_ae:
            worse.append(f"{100 * p['fpr']:.2f} %")
    return [
        "Along the curves (the cascade re-run at each alert threshold; the autoencoder's "
        "recall read off its mean curve at the same FPR): "
        + ("the cascade's point recall is below 95 % of the autoencoder's at FPR "
           + ", ".join(worse) + f" (the shipped operating point: {100 * eq['cascade']['fpr']:.2f}"
           " %)." if worse else
           "the cascade's point recall is >= 95 % of the autoencoder's at every FPR of its "
           "sweep."), "",
        "| cascade alert threshold | FPR % | point recall, cascade / AE | "
        "event recall, cascade / AE |", "|---|---|---|---|", *rows]


def _mean(xs: list[float], lo: int, hi: int) -> float:
    part = xs[lo:hi]
    return float(np.mean(part)) if part else float("nan")


def explain_points(res: dict[str, Any]) -> list[str]:
    """Why point recall and event recall tell different stories (numbers from this run)."""
    eq = res["item1_equal_fpr"]
    c, a, sh = eq["cascade"], eq["autoencoder_oracle"], eq["autoencoder_shipped_threshold"]
    ms = res["item1_multisensor"]["cascade"]
    ck, ak = c["kinds"], a["kinds"]
    out = ["Why per-point recall differs from per-event recall:", "",
           f"* Alerts spill past the labels. {100 * sh['fp_after_episode_share']:.0f} % of the "
           "autoencoder's false positives at its own threshold (and "
           f"{100 * a['fp_after_episode_share']:.0f} % at the oracle one) fall within 30 points "
           "(one window) after a labelled episode: it scores the window *ending* at each point "
           "and a window that still holds the anomaly reconstructs badly, so it smears alerts "
           "over the following windows. To get down to the cascade's FPR its threshold must "
           "rise until it loses "
           + (f"{100 * (1 - ak['spike']['point_recall']):.0f} % of the spikes and "
              if "spike" in ak else "")
           + (f"{100 * (1 - ak['drop']['event_recall']):.0f} % of the drops. "
              if "drop" in ak else ". ")
           + f"The cascade's false positives sit there too "
           f"({100 * c['fp_after_episode_share']:.0f} % within 30 points after an episode).",
           "* The cascade's policy (k = n = 1, clear after one point below the clear threshold) "
           "marks the points whose fused score is high, not whole episodes: "
           + ", ".join(f"{k} {ck[k]['point_recall']:.2f}" for k in ck)
           + " of the labelled points. "
           + (f"In a noise burst the points where the added N(0, 1) happens to be small are "
              f"missed (by position in the burst: "
              f"{', '.join(f'{x:.2f}' for x in ck['noise']['by_position'])}). "
              if "noise" in ck else "")
           + (f"A drop to 0 is flagged at once only where the channel was far from 0 (first "
              f"two points {_mean(ck['drop']['by_position'], 0, 2):.2f}), from its third "
              f"point by the stuck-sensor check, `stuck_after: 3` "
              f"({_mean(ck['drop']['by_position'], 2, 5):.2f})." if "drop" in ck else "")]
    if "drift" in ck and "drift" in ak:
        cd, ad = ck["drift"]["by_position"], ak["drift"]["by_position"]
        found_after = ms["event_recall"].get("drift", float("nan")) - ms["drift_during"]
        out.append(
            "* Drift (a 20-point ramp): neither marks the early ramp (points 1-13: at most "
            f"{max(cd[:13] + ad[:13]):.2f} of episodes, cascade or autoencoder); it is small "
            "against the noise and the seasonal signal until late. The cascade alerts inside "
            f"the ramp in {100 * ms['drift_during']:.0f} % of the drifts; "
            f"{100 * found_after:.0f} % are found only after it, at the step back to normal "
            "where the generator ends the ramp abruptly, whose alerts fall a few points "
            "*after* the labels: found for the event metric (within 5 points), false "
            "positives for the point metric. On the last ramp points (16-20) the autoencoder "
            f"marks {_mean(ad, 15, 20):.2f} of episodes, the cascade {_mean(cd, 15, 20):.2f}: "
            f"drift point recall {ck['drift']['point_recall']:.3f} (cascade) vs "
            f"{ak['drift']['point_recall']:.3f}.")
    alts = eq.get("marking_alternatives_on_tuning_seeds") or []
    if alts:
        out += ["", "Could the cascade mark more points of an episode without raising FPR? "
                f"Tried on seeds {eq.get('tuning_seeds')} only (the demo config's tuning "
                "seeds, not the evaluation seeds), each alternative at its best threshold of "
                "a small grid with mean FPR <= the shipped cascade's there:", "",
                "| alternative | alert threshold | FPR % | point recall | drift points | "
                "noise points | event recall | stage-3 fraction |",
                "|---|---|---|---|---|---|---|---|"]
        for x in alts:
            if x.get("threshold") is None:
                out.append(f"| {x['alternative']} | none within the FPR budget | | | | | | |")
                continue
            out.append(f"| {x['alternative']} | {x['threshold']} | {100 * x['fpr']:.2f} | "
                       f"{x['recall']:.3f} | {x['drift_point_recall']:.3f} | "
                       f"{x['noise_point_recall']:.3f} | {x['event_recall']:.3f} | "
                       f"{x['stage3_fraction']:.3f} |")
        ref = alts[0]
        better = [x["alternative"] for x in alts[1:]
                  if x.get("threshold") is not None and x["recall"] > ref["recall"]]
        out += ["", ("None beats the shipped marking at equal FPR on the tuning seeds, so it "
                     "stays: a hold or a wider hysteresis also keeps every false alarm up "
                     "longer (the false positives after an episode come in runs), and the "
                     "threshold that brings the FPR back down loses more points than they add; "
                     "escalating more adds stage 3's own false positives. What is left of the "
                     "drift gap is in what the detectors see of a young ramp, not in how "
                     "episodes are marked." if not better else
                     f"Better than shipped on the tuning seeds: {', '.join(better)} (not "
                     "adopted in this run; evaluate on seeds 0-2 before changing the demo "
                     "config).")]
    return out


def plot_equal_fpr(eq: dict[str, Any], path: Path) -> None:
    """Recall against point FPR (per point, per event) and hits by position in episode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    styles = {AE: ("tab:red", "o"), "cascade": ("tab:blue", "s")}
    c, a = eq["cascade"], eq["autoencoder_oracle"]
    for ax, key, label in ((axes[0], "recall", "point recall"),
                           (axes[1], "event_recall", "event recall")):
        for name, pts in eq["curves"].items():
            color, marker = styles.get(name, ("tab:cyan", "^"))
            pts = sorted(pts, key=lambda p: p["fpr"])
            ax.plot([100 * p["fpr"] for p in pts], [p[key] for p in pts], marker=marker,
                    ms=3, color=color, label=name)
        ax.plot(100 * c["fpr"], c[key], "*", ms=16, color="tab:blue", mec="k",
                label="cascade as shipped")
        ax.plot(100 * a["fpr"], a[key], "*", ms=16, color="tab:red", mec="k",
                label="autoencoder at the cascade's FPR (oracle threshold)")
        ax.axvline(100 * c["fpr"], color="grey", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel("point false-positive rate % (log)")
        ax.set_ylabel(label)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.set_title(f"item 1: {label} vs FPR (means over seeds)")
    axes[0].legend(fontsize=7, loc="upper left")
    ax = axes[2]
    for kind, color in (("drift", "tab:orange"), ("noise", "tab:green"), ("drop", "tab:purple")):
        if kind not in c["kinds"] or kind not in a["kinds"]:
            continue
        pc, pa = c["kinds"][kind]["by_position"], a["kinds"][kind]["by_position"]
        ax.plot(range(1, len(pc) + 1), pc, "-", color=color, marker="s", ms=3,
                label=f"{kind}: cascade")
        ax.plot(range(1, len(pa) + 1), pa, "--", color=color, marker="o", ms=3,
                label=f"{kind}: autoencoder (oracle)")
    ax.set_xticks([1, 5, 10, 15, 20])
    ax.set_xlabel("point of the episode (1 = first labelled point)")
    ax.set_ylabel("share of episodes alerted at that point")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("which points of an episode are marked, at equal FPR")
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)
