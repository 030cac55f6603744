"""The stage-2 gate of a stream, for its number of channels.

Stage 1's score is its largest channel ratio, so on normal data a stream with more
channels reaches a fixed gate more often: with ``river_at`` 0.4 (ratio 2/3, a z-score of
2 at the default threshold 3) one Gaussian channel escalates about 9 % of its points
(level and step views together), 8 channels about 50 %, 32 channels about 90 %
(``benchmarks/bench_core.py``) -- stage 2 then runs on nearly every point and stops being
a second stage.

With ``escalation.scale_river_at`` (the default), ``river_at`` is the gate of a
one-channel stream and a stream of ``C`` channels gets the gate that the largest of ``C``
independent Gaussian channels reaches as often as one channel reaches ``river_at``
(Šidák's correction: per-channel tail ``p_C = 1 - (1 - p_1)**(1/C)``). The gate never
rises above 0.5, the score at which stage 1 flags a point (flagged points always go on to
stage 2), and never falls below ``river_at``.
"""

from __future__ import annotations

import math
from statistics import NormalDist

FLAG_SCORE = 0.5  # stage score of a ratio of 1 (r / (1 + r)): stage 1 flags the point
_NORMAL = NormalDist()


def river_gate(river_at: float, n_channels: int, z_threshold: float) -> float:
    """The stage-1 score from which a point of a ``n_channels`` stream goes to stage 2.

    ``z_threshold``: the z-score at which stage 1's ratio is 1 (``zscore.threshold``).
    """
    if n_channels <= 1 or river_at <= 0.0 or river_at >= FLAG_SCORE:
        return river_at
    z = river_at / (1.0 - river_at) * z_threshold  # the one-channel gate as a z-score
    tail = 2.0 * _NORMAL.cdf(-z)  # share of one channel's normal points at or beyond it
    tail_c = -math.expm1(math.log1p(-tail) / n_channels)
    if tail_c <= 0.0:
        return FLAG_SCORE
    ratio = -_NORMAL.inv_cdf(tail_c / 2.0) / z_threshold
    return min(FLAG_SCORE, max(river_at, ratio / (1.0 + ratio)))
