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
from agent.detectors import hst_flat, hst_walk
from agent.detectors.hst_flat import FlatHST

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
    the learnt points cost one ``learn_one`` per model and nothing else.

    A HalfSpaceTrees is run through :class:`~agent.detectors.hst_flat.FlatHST` (unless
    ``flat=False``): the same scores and trees as River's calls, but the points it learns
    wait in a buffer (at most one window of raw values) and are learnt, and their
    calibration scores taken, in one vectorised pass when its window ends, when a
    calibrator is due to refresh, or when the state is read (:meth:`state_dict`, a
    pickle). Neither a score nor a ratio can tell the difference: scores read only the
    reference masses, which change at a window's end, and the calibrators refresh only
    after the buffered samples are in.
    """

    calibration_every = 4

    def __init__(self, config: RiverConfig, channels: Sequence[str], flat: bool = True) -> None:
        self.config = config
        self.channels = tuple(channels)
        self.flat = flat
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
        # The point score_one last mapped (reused by learn_one when it is the same point)
        self._scored_x: list[float] | None = None
        self._scored_feats: list[float] = []
        self._mirror()

    def _mirror(self) -> None:
        """(Re)build the array mirrors of the models that have one; empty the buffer."""
        self._flat: list[FlatHST | None] = [
            FlatHST(m, self.channels) if self.flat and hst_flat.supports(m, self.channels)
            else None for m in self._models]
        self._plain = [j for j, f in enumerate(self._flat) if f is None]
        self._any_flat = len(self._plain) < len(self._models)
        self._buf: list[list[float]] = []  # learnt, not yet given to the FlatHSTs
        self._buf_lo: list[float] = []  # the learnt range before the buffer's first point
        self._buf_hi: list[float] = []
        self._flush_at = 0  # buffered points at which a FlatHST's window ends
        # Per buffered calibration sample: its row and the scores score_one took (or None)
        self._buf_cal: list[tuple[int, list[float] | None]] = []

    @property
    def warming_up(self) -> bool:
        return self._learned < self.config.warmup or not all(k.ready for k in self._calib)

    def _feature_list(self, x: Sequence[float]) -> list[float]:
        if len(x) != len(self.channels):
            raise ValueError(f"{len(x)} values for {len(self.channels)} channels")
        out = []
        for v, lo, hi in zip(x, self._lo, self._hi, strict=False):
            span = hi - lo
            # The learnt range maps to [0.25, 0.75]: HalfSpaceTrees splits [0, 1], so
            # values beyond the range land in leaves normal data never fills.
            z = 0.25 + 0.5 * (v - lo) / span if span > 0 else 0.5
            out.append(0.0 if z < 0.0 else (1.0 if z > 1.0 else z))
        return out

    def _features(self, x: Sequence[float]) -> dict[str, float]:
        return dict(zip(self.channels, self._feature_list(x), strict=True))

    def score_one(self, x: Sequence[float]) -> float:
        """Stage score in [0, 1) (0 while warming up). ``x`` must be finite."""
        if self.warming_up:
            self.last_ratios = [0.0] * len(self._models)
            self._last_raw = []
            return 0.0
        feats = self._feature_list(x)
        self._scored_x, self._scored_feats = list(x), feats
        fdict = dict(zip(self.channels, feats, strict=True)) if self._plain else None
        raw = [m.score_one(fdict) if f is None else f.score(feats)
               for m, f in zip(self._models, self._flat, strict=True)]
        self._last_raw = raw
        self.last_ratios = [k.ratio(s) for k, s in zip(self._calib, raw, strict=True)]
        peak = max(self.last_ratios)
        return peak / (1.0 + peak)

    def learn_one(self, x: Sequence[float], scored: bool = False) -> None:
        """Learn one accepted point; ``scored``: score_one was just called on this point."""
        lo, hi = self._lo, self._hi
        if self._any_flat and not self._buf:
            self._buf_lo, self._buf_hi = list(lo), list(hi)
            self._flush_at = self._room()  # (the windows' counters move only in _flush)
        moved = True in map(lt, x, lo) or True in map(gt, x, hi)  # (C-speed, usually False)
        if moved:
            for i, v in enumerate(x):
                if v < lo[i]:
                    lo[i] = v
                if v > hi[i]:
                    hi[i] = v
        scored_x, self._scored_x = self._scored_x, None
        learned = self._learned
        self._learned = learned + 1
        calibrate = learned >= self._calibrate_from and learned % self.calibration_every == 0
        # The scores score_one took of this point are those of a point not learnt yet.
        reuse = scored and bool(self._last_raw)
        if self._plain:
            same = not moved and scored_x is not None and scored_x == (
                x if type(x) is list else list(x))
            feats = dict(zip(self.channels, self._scored_feats if same
                             else self._feature_list(x), strict=True))
            for j in self._plain:
                m = self._models[j]
                if calibrate:
                    self._calib[j].add(self._last_raw[j] if reuse else m.score_one(feats))
                m.learn_one(feats)
        if self._any_flat:
            buf = self._buf
            if calibrate:
                self._buf_cal.append((len(buf), list(self._last_raw) if reuse else None))
            buf.append(list(x))
            if (calibrate and self._refresh_due()) or len(buf) >= self._flush_at:
                self._flush()

    def _room(self) -> int:
        """Points the FlatHSTs can take before one of their windows ends."""
        return min(f.window - f.counter for f in self._flat if f is not None)

    def _refresh_due(self) -> bool:
        """Whether a calibrator of a FlatHST refreshes on the buffered samples."""
        n = len(self._buf_cal)
        return any(k._since + n >= _REFRESH or (k._span == 0 and k._n + n >= 20)
                   for k, f in zip(self._calib, self._flat, strict=True) if f is not None)

    def _flush(self) -> None:
        """Learn the buffered points (and add their calibration samples) in the FlatHSTs:
        afterwards everything is as if each had been learnt at once."""
        buf = self._buf
        if not buf:
            return
        x = np.array(buf, dtype=float)
        lo = np.minimum.accumulate(np.vstack((self._buf_lo, x)), axis=0)[1:]
        hi = np.maximum.accumulate(np.vstack((self._buf_hi, x)), axis=0)[1:]
        span = hi - lo
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(span > 0, 0.25 + 0.5 * (x - lo) / span, 0.5)
        np.clip(z, 0.0, 1.0, out=z)
        cal = self._buf_cal
        fresh = [i for i, prior in cal if prior is None]
        for j, f in enumerate(self._flat):
            if f is None:
                continue
            if cal:
                scores = iter(f.score_many(z[fresh]).tolist() if fresh else ())
                k = self._calib[j]
                for _, prior in cal:
                    k.add(next(scores) if prior is None else prior[j])
            f.learn_many(z)
        self._buf, self._buf_cal = [], []

    def _sync(self) -> None:
        """Bring River's own models up to date (flush, then write the FlatHSTs back)."""
        self._flush()
        for f in self._flat:
            if f is not None:
                f.to_river()

    def __getstate__(self) -> dict[str, Any]:
        self._sync()
        state = dict(self.__dict__)
        for k in ("_flat", "_plain", "_any_flat", "_buf", "_buf_lo", "_buf_hi", "_buf_cal",
                  "_flush_at"):
            state.pop(k)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        for k in ("_one_walk", "_pending"):  # (pickled before the FlatHSTs)
            state.pop(k, None)
        self.__dict__.update(state)
        self.__dict__.setdefault("flat", True)
        self._mirror()

    def state_dict(self) -> dict[str, Any]:
        self._sync()
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
        self._models = [hst_walk.prebuilt(m, self.channels) for m in state["models"]]
        self._calib = state["calib"]
        self._lo = list(state["lo"])
        self._hi = list(state["hi"])
        self._learned = int(state["learned"])
        self._scored_x = None
        self._mirror()
