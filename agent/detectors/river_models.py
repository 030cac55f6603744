"""Stage 2: River online detectors behind a streaming min-max scaler, self-calibrating.

River detectors score on their own scales (HalfSpaceTrees in [0, 1], LODA as a
negative log-likelihood). Each one is therefore calibrated against its own recent history
of scores on *accepted* points: with ``m`` the median and ``q`` the ``calibration_quantile`` of the
recent scores, the threshold ratio is ``(s - m) / (q - m)`` (1.0 = as unusual as the top
``1 - calibration_quantile`` of normal points). The stage ratio is the largest model
ratio, mapped to [0, 1) as ``r / (1 + r)`` like every stage.

The min-max scaler (HalfSpaceTrees assumes features in [0, 1]) is ours and is
fed only accepted points, so an anomaly cannot stretch its own range. The learnt range
maps to [0.25, 0.75], leaving room on both sides for values beyond it.

Memory: HalfSpaceTrees holds ``n_trees * 2**height`` nodes, LODA ``n_random_cuts``
bounded histograms; nothing grows with history. (River's OneClassSVM was tried and left
out: it is linear, so it sees outliers on one side of the data only, and it ranked
anomalies at chance on the synthetic streams. River's LocalOutlierFactor keeps every
point, so its memory grows without bound.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from operator import gt, lt
from typing import Any

import numpy as np

from agent.config import RiverConfig, RiverModelConfig
from agent.detectors import hst_walk

_REFRESH = 50  # accepted points between re-computations of the calibration quantiles


def _make_model(cfg: RiverModelConfig) -> Any:
    # Imported lazily, and only the two detectors' own modules: `from river import anomaly`
    # pulls in scipy and scikit-learn (~2 s, ~95 MB; see agent/river_import.py).
    from agent.river_import import anomaly_classes

    anomaly = anomaly_classes()

    if cfg.kind == "half_space_trees":
        return anomaly.HalfSpaceTrees(
            n_trees=cfg.n_trees, height=cfg.height, window_size=cfg.window_size, seed=cfg.seed
        )
    if cfg.kind == "loda":
        return anomaly.LODA(n_bins=cfg.n_bins, n_random_cuts=cfg.n_random_cuts, seed=cfg.seed)
    raise ValueError(f"unknown river model kind {cfg.kind!r}")  # config validation prevents this


class _Calibrator:
    """Rolling median / upper quantile of a model's scores on accepted points."""

    def __init__(self, window: int, quantile: float) -> None:
        self.window = window
        self.quantile = quantile
        self._ring = np.zeros(window)
        self._n = 0
        self._since = 0
        self._mid = 0.0
        self._span = 0.0

    @property
    def ready(self) -> bool:
        return self._span > 0

    def add(self, s: float) -> None:
        self._ring[self._n % self.window] = s
        self._n += 1
        self._since += 1
        if self._since >= _REFRESH or (self._span == 0 and self._n >= 20):
            vals = self._ring[: min(self._n, self.window)]
            mid, hi = np.quantile(vals, [0.5, self.quantile])
            spread = float(hi - mid)
            self._mid = float(mid)
            # No spread yet (a model that still scores everything alike, like
            # HalfSpaceTrees before its first reference window): not ready.
            self._span = spread if spread > 1e-9 * (1.0 + abs(float(mid))) else 0.0
            self._since = 0

    def ratio(self, s: float) -> float:
        if not self.ready:
            return 0.0
        return max(0.0, (s - self._mid) / self._span)


class RiverStage:
    """A list of River anomaly detectors over one stream's channels.

    Calibration scores are taken on every ``calibration_every``-th learnt point
    (whether or not that point was escalated, so the sample is unbiased); the rest of
    the learnt points cost one ``learn_one`` per model and nothing else. A
    HalfSpaceTrees scores and learns a calibration point in one walk per tree, and a
    point scored with ``learn_next`` starts being learnt in the walk that scores it
    (:mod:`agent.detectors.hst_walk`: the same scores and trees as River's calls).
    """

    calibration_every = 4

    def __init__(self, config: RiverConfig, channels: Sequence[str]) -> None:
        self.config = config
        self.channels = tuple(channels)
        # Trees built now, not at the first point (see hst_walk.prebuilt).
        self._models = [hst_walk.prebuilt(_make_model(m), self.channels)
                        for m in config.models]
        self._calib = [
            _Calibrator(config.calibration_window // self.calibration_every,
                        config.calibration_quantile)
            for _ in config.models
        ]
        c = len(self.channels)
        self._lo = [math.inf] * c
        self._hi = [-math.inf] * c
        self._learned = 0
        # HalfSpaceTrees scores everything alike until its first reference window is full.
        self._calibrate_from = max([config.warmup // 2] + [
            m.window_size for m in config.models if m.kind == "half_space_trees"])
        self._last_raw: list[float] = []
        self.last_ratios = [0.0] * len(self._models)
        # The point score_one last mapped and its features, reused by learn_one when the
        # learnt range did not move in between (the usual case).
        self._scored_x: list[float] | None = None
        self._scored_feats: dict[str, float] = {}
        # Per model: scored and learnt through hst_walk (None: not known yet).
        self._one_walk: list[bool | None] = [None] * len(self._models)
        # Features whose learning score_one(learn_next=True) started, not finished yet.
        self._pending: dict[str, float] | None = None

    @property
    def warming_up(self) -> bool:
        return self._learned < self.config.warmup or not all(k.ready for k in self._calib)

    def _features(self, x: Sequence[float]) -> dict[str, float]:
        if len(x) != len(self.channels):
            raise ValueError(f"{len(x)} values for {len(self.channels)} channels")
        out = {}
        for name, v, lo, hi in zip(self.channels, x, self._lo, self._hi, strict=False):
            span = hi - lo
            # The learnt range maps to [0.25, 0.75]: HalfSpaceTrees splits [0, 1], so
            # values beyond the range land in leaves normal data never fills.
            z = 0.25 + 0.5 * (v - lo) / span if span > 0 else 0.5
            out[name] = 0.0 if z < 0.0 else (1.0 if z > 1.0 else z)
        return out

    def score_one(self, x: Sequence[float], learn_next: bool = False) -> float:
        """Stage score in [0, 1) (0 while warming up). ``x`` must be finite.

        ``learn_next``: the caller expects to learn this very point next
        (``learn_one(x, scored=True)``), so each HalfSpaceTrees starts learning it in
        the walk that scores it; anything else called next takes that back. Scores and
        state are the same either way.
        """
        if self._pending is not None:
            self._settle()
        if self.warming_up:
            self.last_ratios = [0.0] * len(self._models)
            self._last_raw = []
            return 0.0
        feats = self._features(x)
        self._scored_x, self._scored_feats = list(x), feats
        raw = []
        for j, m in enumerate(self._models):
            if self._one_walk[j] or (self._one_walk[j] is None and self._check_walk(j)):
                raw.append(hst_walk.score_walk(m, feats, learn_next))
                if learn_next:
                    self._pending = feats
            else:
                raw.append(m.score_one(feats))
        self._last_raw = raw
        self.last_ratios = [k.ratio(s) for k, s in zip(self._calib, raw, strict=True)]
        peak = max(self.last_ratios)
        return peak / (1.0 + peak)

    def learn_one(self, x: Sequence[float], scored: bool = False) -> None:
        """Learn one accepted point; ``scored``: score_one was just called on this point."""
        lo, hi = self._lo, self._hi
        moved = True in map(lt, x, lo) or True in map(gt, x, hi)  # (C-speed, usually False)
        if moved:
            for i, v in enumerate(x):
                if v < lo[i]:
                    lo[i] = v
                if v > hi[i]:
                    hi[i] = v
        scored_x, self._scored_x = self._scored_x, None
        same = not moved and scored_x is not None and scored_x == (
            x if type(x) is list else list(x))
        feats = self._scored_feats if same else self._features(x)
        # Half learnt by score_one(learn_next=True): finish it (or take it back if the
        # point or its features changed).
        started = self._pending is not None and same
        if self._pending is not None and not started:
            self._settle()
        self._pending = None
        learned = self._learned
        self._learned = learned + 1
        calibrate = learned >= self._calibrate_from and learned % self.calibration_every == 0
        if not (calibrate or started):  # the usual case: River's learn_one, nothing else
            for m in self._models:
                m.learn_one(feats)
            return
        # The scores score_one took of this point (``started``: of the same features,
        # with nothing learnt since) are those of a point the models have not learnt.
        reuse = (scored or started) and bool(self._last_raw)
        for j, (m, k) in enumerate(zip(self._models, self._calib, strict=True)):
            if calibrate and reuse:  # the score of this point, taken before it was learnt
                k.add(self._last_raw[j])
            walk = self._one_walk[j] or (self._one_walk[j] is None and self._check_walk(j))
            if not walk:
                if calibrate and not reuse:  # the score of a point not learnt yet
                    k.add(m.score_one(feats))
                m.learn_one(feats)
            elif started:
                hst_walk.count(m)
            elif calibrate and not reuse:
                k.add(hst_walk.score_learn(m, feats))  # = score_one, then learn_one
            else:
                m.learn_one(feats)

    def _settle(self) -> None:
        """Take back the learning a ``score_one(learn_next=True)`` started."""
        feats, self._pending = self._pending, None
        if feats is not None:
            for m, walk in zip(self._models, self._one_walk, strict=True):
                if walk:
                    hst_walk.unwalk(m, feats)

    def _check_walk(self, j: int) -> bool:
        """Whether model ``j`` scores and learns through :mod:`hst_walk` (a River
        HalfSpaceTrees laid out as it expects); decided once its trees are built."""
        m = self._models[j]
        if self.config.models[j].kind != "half_space_trees":
            self._one_walk[j] = False
        elif m.trees:
            self._one_walk[j] = hst_walk.supports(m)
        return bool(self._one_walk[j])

    def __getstate__(self) -> dict[str, Any]:
        self._settle()
        return self.__dict__

    def state_dict(self) -> dict[str, Any]:
        self._settle()
        return {
            "models": self._models,
            "calib": self._calib,
            "lo": list(self._lo),
            "hi": list(self._hi),
            "learned": self._learned,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        if len(state["models"]) != len(self._models) or len(state["lo"]) != len(self._lo):
            raise ValueError("river state does not match the configured models/channels")
        self._models = state["models"]
        self._calib = state["calib"]
        self._lo = list(state["lo"])
        self._hi = list(state["hi"])
        self._learned = int(state["learned"])
        self._scored_x = None
        self._pending = None
        self._one_walk = [None] * len(self._models)
