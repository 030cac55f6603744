"""The three-stage cascade of one stream: statistical gate -> River -> ONNX autoencoder.

Every point is scored by the first enabled stage. The point (stage 3: the window ending
at the point) goes on to the next enabled stage only when the highest score of the
stages so far reaches that stage's gate (``escalation.river_at``, scaled for the number of
channels: :func:`~agent.escalation.river_gate`; ``escalation.onnx_at``),
or when a sampled check is due (``escalation.sample_every``), so drift the cheap stages
miss is still looked at. Taking the highest score means a weak stage 2 cannot keep a
point that stage 1 found suspicious away from the model.

Fusion (docs/fusion.md): with ``fusion: deepest`` the fused score is the score of the
deepest stage that looked at the point -- a deeper stage confirms or dismisses what a
shallower one suspected; with ``fusion: max`` it is the largest stage score.

Learning is score-then-learn: the point is scored with state from strictly earlier
points, then learnt. Stage 1 keeps values it flagged out of its baseline (see
:class:`~agent.detectors.gate.Stage1Gate`); stage 2 does not learn points whose fused
score reached the alert threshold when ``river.guard`` is on. The stage-3 window always
holds the real values (an autoencoder must see the anomaly to score it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent.config import AgentConfig, StreamConfig
from agent.detectors.batch_gate import score_learn_many
from agent.detectors.gate import Stage1Gate
from agent.detectors.river_models import RiverStage
from agent.escalation import river_gate
from agent.onnx_scorer import OnnxModel
from agent.types import Stage


@dataclass(frozen=True, slots=True)
class Outcome:
    """The cascade's verdict on one point, before the alert policy."""

    score: float
    stage: Stage
    stage_scores: tuple[float | None, float | None, float | None]
    channel_evidence: Sequence[float] | None
    sampled: bool = False


class _Window:
    """The last ``size`` rows, readable as one contiguous (size, C) array in O(1)."""

    def __init__(self, size: int, n_channels: int) -> None:
        self.size = size
        self._buf = np.zeros((2 * size, n_channels))
        self._pos = 0
        self.count = 0

    def push(self, x: np.ndarray) -> None:
        self._buf[self._pos] = x
        self._buf[self._pos + self.size] = x
        self._pos = (self._pos + 1) % self.size
        self.count = min(self.count + 1, self.size)

    @property
    def full(self) -> bool:
        return self.count >= self.size

    def view(self) -> np.ndarray:
        return self._buf[self._pos : self._pos + self.size]

    def resized(self, size: int) -> _Window:
        new = _Window(size, self._buf.shape[1])
        keep = min(self.count, size)
        if keep:
            for row in self.view()[self.size - keep :]:
                new.push(row)
        return new


class StreamCascade:
    """Per-stream detector state and the escalation logic."""

    def __init__(
        self, stream: StreamConfig, config: AgentConfig, model: OnnxModel | None = None
    ) -> None:
        self.stream = stream
        self.config = config
        self.channels = stream.channel_names
        n = len(self.channels)
        det = config.detectors
        self.stat = Stage1Gate(det.zscore, n, stream.channels) if det.zscore.enabled else None
        self.river = RiverStage(det.river, self.channels) if det.river.enabled else None
        self._gate_of: tuple[object, object] | None = None  # (escalation, zscore) configs
        self._river_at = 0.0
        self._model: OnnxModel | None = None
        self._feat_idx: np.ndarray | None = None
        self._all_feats = False  # the model reads every channel in order: no column copy
        self._window: _Window | None = None
        self._last = [0.0] * n
        self._seen = [False] * n
        self._since_sample = 0
        self._river_held = 0
        self.counts = {"scored": [0, 0, 0], "escalated": [0, 0, 0], "sampled": 0, "imputed": 0}
        if model is not None:
            self.set_model(model)

    # ------------------------------------------------------------------ model
    @property
    def model(self) -> OnnxModel | None:
        return self._model

    def set_model(self, model: OnnxModel | None) -> None:
        """Swap the stage-3 model between two points; the raw window history is kept."""
        if model is None:
            self._model, self._feat_idx = None, None
            return
        idx = model.feature_index(self.channels)
        if self._window is None:
            self._window = _Window(model.window, len(self.channels))
        elif self._window.size != model.window:
            self._window = self._window.resized(model.window)
        self._model, self._feat_idx = model, idx
        self._all_feats = bool(np.array_equal(idx, np.arange(len(self.channels))))

    # ------------------------------------------------------------------ helpers
    def _fill(self, x: list[float]) -> list[float]:
        """Carry the last finite value forward into missing channels (stages 2 and 3)."""
        last = self._last
        missing = False
        for i, v in enumerate(x):
            if v - v == 0.0:  # finite (NaN and inf give NaN)
                last[i] = v
                self._seen[i] = True
            else:
                missing = True
                if not self._seen[i]:
                    last[i] = self.stat.center()[i] if self.stat is not None else 0.0
        if missing:
            self.counts["imputed"] += 1
        return list(last)

    @property
    def river_at(self) -> float:
        """Stage 2's gate on this stream: ``escalation.river_at`` scaled for its number of
        channels (:func:`~agent.escalation.river_gate`) unless ``scale_river_at`` is off;
        follows the config object if it is swapped."""
        esc, z = self.config.escalation, self.config.detectors.zscore
        if self._gate_of is None or self._gate_of[0] is not esc or self._gate_of[1] is not z:
            self._gate_of = (esc, z)
            self._river_at = (river_gate(esc.river_at, len(self.channels), z.threshold)
                              if esc.scale_river_at else esc.river_at)
        return self._river_at

    @property
    def warming_up(self) -> bool:
        if self.stat is not None:
            return self.stat.warming_up
        if self.river is not None:
            return self.river.warming_up
        return self._window is None or not self._window.full

    # ------------------------------------------------------------------ main path
    def process(self, x: list[float], alert_threshold: float) -> Outcome:
        """Score ``x`` (NaN = missing) with state from earlier points only, then learn it."""
        return self._process(x, alert_threshold, None)

    def _process(self, x: list[float], alert_threshold: float,
                 stage1: tuple[float, np.ndarray] | None) -> Outcome:
        """:meth:`process`; ``stage1``: stage 1's score and channel ratios of ``x`` when
        :meth:`process_batch` has already run stage 1 over it (then learnt too)."""
        filled = self._fill(x)
        if self._window is not None:
            self._window.push(filled)
        esc = self.config.escalation
        counts = self.counts
        sample = False
        if esc.sample_every:
            self._since_sample += 1
            if self._since_sample >= esc.sample_every:
                self._since_sample, sample = 0, True

        s1 = s2 = s3 = None
        evidence: Sequence[float] | None = None
        stat_evidence = False
        gate: float | None = None  # highest score of the stages that ran so far
        prev: float | None = None  # score of the deepest stage that ran
        deepest = Stage.NONE
        stat, river = self.stat, self.river
        if stage1 is not None or (stat is not None and not stat.warming_up):
            # Scored, then learnt at once: stages 2-3 never read stage 1's state.
            s1 = stat.score_learn(x) if stage1 is None else stage1[0]
            stat_evidence = True  # stage 1's last_ratios, read below only for a hit
            counts["scored"][0] += 1
            gate = prev = s1
            deepest = Stage.STATISTICAL
        if river is not None and (
            gate is None or gate >= self.river_at or sample
        ) and not river.warming_up:
            if gate is not None:
                counts["escalated"][1] += 1
            s2 = river.score_one(filled)
            counts["scored"][1] += 1
            gate = s2 if gate is None else max(gate, s2)
            prev, deepest = s2, Stage.RIVER
        model, window = self._model, self._window
        if model is not None and window is not None and window.full and (
            gate is None or gate >= esc.onnx_at or sample
        ):
            if gate is not None:
                counts["escalated"][2] += 1
            win = window.view()  # contiguous (W, C), copied once, into the model's buffer
            res = model.score_window(win if self._all_feats else win[:, self._feat_idx])
            s3 = res.score
            counts["scored"][2] += 1
            if res.channel_errors is not None:
                ev = np.zeros(len(self.channels))
                ev[self._feat_idx] = res.channel_errors / max(model.meta.threshold, 1e-12)
                evidence, stat_evidence = ev.tolist(), False
            prev, deepest = s3, Stage.ONNX
        if sample and deepest != Stage.NONE:
            counts["sampled"] += 1

        if prev is None:
            fused = 0.0
        elif esc.fusion == "max":
            fused = max(s for s in (s1, s2, s3) if s is not None)
        else:
            fused = prev
        # The policy keeps evidence only for hits; copy (stage 1 reuses its buffer).
        if fused < alert_threshold:
            evidence = None
        elif stat_evidence and stat is not None:
            evidence = (stat.last_ratios if stage1 is None else stage1[1]).tolist()
        elif evidence is not None:
            evidence = list(evidence)

        # ---- learn (after scoring: no point ever scores itself)
        if stat is not None and s1 is None:
            stat.learn_only(x)  # (a scored point was learnt by score_learn above)
        # Stage 2 stays out of anything suspicious: a point stage 1 flagged on any
        # channel, or whose fused score is a hit (a spike it learnt would widen its range
        # and hide the next one).
        # After relearn_after suspicious points in a row the change has lasted: learn it,
        # or a stream whose only judge is stage 2 would stay in alarm for ever.
        suspicious = fused >= alert_threshold or (s1 is not None and s1 >= 0.5)
        if river is not None:
            rcfg = self.config.detectors.river
            if rcfg.guard and suspicious and self._river_held < rcfg.relearn_after:
                self._river_held += 1
            else:
                self._river_held = 0
                river.learn_one(filled, scored=s2 is not None)
        return Outcome(fused, deepest, (s1, s2, s3), evidence, sample)

    def process_many(self, rows: Sequence[list[float]], alert_threshold: float) -> list[Outcome]:
        """:meth:`process` every row in order (score-then-learn point by point: row ``i``
        is scored with state from rows before it only, never from later rows)."""
        process = self.process
        return [process(x, alert_threshold) for x in rows]

    def process_batch(self, rows: Sequence[list[float]], alert_threshold: float
                      ) -> list[Outcome]:
        """:meth:`process_many`, the same outcomes and state, with stage 1 run over the
        rows first, vectorised along time (:mod:`agent.detectors.batch_gate`), then stages
        2-3 row by row on its results. Nothing after stage 1 feeds back into it within the
        rows, except where this falls back to :meth:`process` row by row: from a row met
        while stage 1 is warming up (such rows are learnt, not scored), and for the whole
        batch when a value is missing on a channel never seen yet (its stand-in for stages
        2-3 is stage 1's centre at that row)."""
        stat = self.stat
        if stat is None or len(rows) < 2 or stat.warming_up:
            return self.process_many(rows, alert_threshold)
        x = np.array(rows, dtype=float)
        if not all(self._seen) and not bool(np.isfinite(x).all()):
            return self.process_many(rows, alert_threshold)
        res = score_learn_many(stat, x, stop_at_warm_up=True)
        process = self._process
        out = [process(row, alert_threshold, (s, r)) for row, s, r in
               zip(rows[: res.n], res.scores.tolist(), res.ratios, strict=True)]
        if res.n < len(rows):
            out += self.process_many(rows[res.n :], alert_threshold)
        return out

    def learn_only(self, x: list[float]) -> None:
        """Warm-up rows: learn without scoring (the stat gate accepts everything finite)."""
        filled = self._fill(x)
        if self._window is not None:
            self._window.push(filled)
        if self.stat is not None:
            self.stat.learn_only(x)
        if self.river is not None:
            self.river.learn_one(filled)

    def rebaseline(self) -> None:
        if self.stat is not None:
            self.stat.rebaseline_all()

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, Any]:
        return {
            "channels": self.channels,
            "stat": self.stat.state_dict() if self.stat is not None else None,
            "river": self.river.state_dict() if self.river is not None else None,
            "window": self._window,
            "last": list(self._last),
            "seen": list(self._seen),
            "since_sample": self._since_sample,
            "river_held": self._river_held,
            "counts": self.counts,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        if tuple(state["channels"]) != self.channels:
            raise ValueError(f"checkpoint channels {state['channels']} != {self.channels}")
        if (state["stat"] is None) != (self.stat is None) or (state["river"] is None) != (
            self.river is None
        ):
            raise ValueError("checkpoint stages do not match the configured stages")
        if self.stat is not None:
            self.stat.load_state(state["stat"])
        if self.river is not None:
            self.river.load_state(state["river"])
        win = state["window"]
        if win is not None and self._model is not None and win.size != self._model.window:
            win = win.resized(self._model.window)
        self._window = win if self._model is not None else self._window
        self._last = list(state["last"])
        self._seen = list(state["seen"])
        self._since_sample = int(state["since_sample"])
        self._river_held = int(state["river_held"])
        self.counts = state["counts"]
