"""The cascade against "autoencoder on every window" at equal false-alarm rate (issue #9).

Used by ``benchmarks/synthetic.py`` (MISSION item 1). Comparing two detectors at their
own thresholds says little when their false-positive rates differ, so:

* the autoencoder-everywhere scores are recorded once (they do not depend on any
  threshold: nothing learns in that configuration) and the agent's own
  :class:`~agent.policy.AlertPolicy` is replayed over them for every threshold of a grid
  (:func:`replay_policy`; the replay is checked against the engine's own alerts at the
  configured threshold);
* the cascade is re-run through the engine for every threshold of its grid (its stage 2
  learns depending on the alert threshold, so a replay would not be exact);
* the "equal FPR" figure gives the autoencoder the **oracle** threshold: the lowest one
  whose point FPR on the *test labels* does not exceed the cascade's FPR on the same seed
  (:func:`oracle_threshold`). That choice sees the labels, so it favours the autoencoder.

With ``k = n = 1`` the set of alerted points only shrinks as the threshold rises (the
clear threshold rises with it, see :func:`clear_for`), which is what makes the oracle
search a bisection.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from agent.config import AlertConfig
from agent.policy import AlertPolicy
from agent.synthetic import KINDS, Synthetic

AE = "autoencoder (every window)"  # the variant's name in benchmarks/synthetic.py
AFTER = 5  # an episode counts as found when an alert overlaps it or follows within 5 points


def _odds(s: float) -> float:
    return s / (1.0 - s)


def clear_for(threshold: float, base: AlertConfig) -> float:
    """The clear threshold that keeps ``base``'s hysteresis at another alert threshold.

    Scores are odds-calibrated (``s / (1 - s)`` is the multiple of the stage threshold),
    so the hysteresis is kept as a ratio of odds: 0.4 at 0.5 (the shipped pair) is
    "clear below 2/3 of the threshold multiple" at every threshold.
    """
    ratio = _odds(base.clear_threshold) / _odds(base.threshold)
    o = _odds(threshold) * ratio
    return min(threshold, o / (1.0 + o))


def at_threshold(base: AlertConfig, threshold: float, clear_after: int | None = None
                 ) -> AlertConfig:
    """``base`` moved to ``threshold`` (clear threshold scaled by :func:`clear_for`)."""
    if threshold == base.threshold and clear_after in (None, base.clear_after):
        return base
    return dataclasses.replace(
        base, threshold=threshold, clear_threshold=clear_for(threshold, base),
        clear_after=base.clear_after if clear_after is None else clear_after)


def replay_policy(scores: np.ndarray, scored: np.ndarray, cfg: AlertConfig) -> np.ndarray:
    """Alert flags of the agent's alert policy fed the recorded fused ``scores``.

    ``scored`` marks points the engine handed to the policy (stage != NONE); the others
    keep the episode's state, exactly as in ``Engine.process``.
    """
    pol = AlertPolicy(cfg, "s", ("x",))
    out = np.zeros(len(scores), dtype=bool)
    active = False
    update = pol.update
    for i, (s, ok) in enumerate(zip(scores.tolist(), scored.tolist(), strict=True)):
        if ok:
            active = update(float(i), s, 3, None)[0]
        out[i] = active
    return out


def point_fpr(alerts: np.ndarray, labels: np.ndarray, warm: int) -> float:
    a, y = alerts[warm:], labels[warm:]
    return float((a & ~y).sum() / max(int((~y).sum()), 1))


def _episodes(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.flatnonzero(np.diff(np.r_[0, mask.astype(int), 0]))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def metrics(alerts: np.ndarray, data: Synthetic, warm: int) -> dict[str, Any]:
    """Point FPR, point and event recall (all and per kind), hits by position in episode."""
    a, y, k = alerts[warm:], data.labels[warm:], data.kinds[warm:]
    out: dict[str, Any] = {"fpr": point_fpr(alerts, data.labels, warm),
                           "recall": float((a & y).sum() / max(int(y.sum()), 1))}
    hit_all = n_all = 0
    per_kind: dict[str, Any] = {}
    for kind in KINDS:
        m = y & (k == kind)
        eps = _episodes(m)
        if not eps:
            continue
        hits = sum(bool(a[s:e + AFTER].any()) for s, e in eps)
        longest = max(e - s for s, e in eps)
        pos_hit, pos_n = np.zeros(longest), np.zeros(longest)
        for s, e in eps:
            pos_hit[: e - s] += a[s:e]
            pos_n[: e - s] += 1
        per_kind[kind] = {"point_recall": float(a[m].mean()), "event_recall": hits / len(eps),
                          "episodes": len(eps), "points": int(m.sum()),
                          "position_hits": pos_hit.tolist(), "position_n": pos_n.tolist()}
        hit_all += hits
        n_all += len(eps)
    out["event_recall"] = hit_all / max(n_all, 1)
    out["kinds"] = per_kind
    # False positives within one stage-3 window after an episode: the "smear".
    fp = a & ~y
    after = np.zeros(len(y), dtype=bool)
    for _s, e in _episodes(y):
        after[e:e + 30] = True
    out["fp_after_episode_share"] = float((fp & after).sum() / max(int(fp.sum()), 1))
    return out


def oracle_threshold(scores: np.ndarray, scored: np.ndarray, base: AlertConfig,
                     labels: np.ndarray, warm: int, max_fpr: float, iters: int = 30) -> float:
    """Lowest alert threshold whose replayed point FPR is <= ``max_fpr`` (uses the labels)."""
    lo, hi = 1e-6, 1.0 - 1e-9  # FPR(lo) is the highest; FPR(hi) is 0
    if point_fpr(replay_policy(scores, scored, at_threshold(base, lo)), labels, warm) <= max_fpr:
        return lo
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        f = point_fpr(replay_policy(scores, scored, at_threshold(base, mid)), labels, warm)
        lo, hi = (lo, mid) if f <= max_fpr else (mid, hi)
    return hi


def mean_over_seeds(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Average point/event figures over seeds; pool the position counts."""
    out: dict[str, Any] = {key: float(np.mean([r[key] for r in runs]))
                           for key in ("fpr", "recall", "event_recall", "fp_after_episode_share")}
    kinds: dict[str, Any] = {}
    for kind in KINDS:
        rs = [r["kinds"][kind] for r in runs if kind in r["kinds"]]
        if not rs:
            continue
        width = max(len(x["position_hits"]) for x in rs)
        hits, n = np.zeros(width), np.zeros(width)
        for x in rs:
            hits[: len(x["position_hits"])] += x["position_hits"]
            n[: len(x["position_n"])] += x["position_n"]
        kinds[kind] = {
            "point_recall": float(np.mean([x["point_recall"] for x in rs])),
            "event_recall": float(np.mean([x["event_recall"] for x in rs])),
            "episodes": int(sum(x["episodes"] for x in rs)),
            "by_position": (hits / np.maximum(n, 1)).tolist(),
        }
    out["kinds"] = kinds
    return out
