from __future__ import annotations

import numpy as np

from agent.synthetic import KINDS, iot, multisensor


def test_multisensor_is_seedable_and_labelled() -> None:
    a, b = multisensor(n=3000, seed=3), multisensor(n=3000, seed=3)
    assert np.array_equal(a.values, b.values) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.values, multisensor(n=3000, seed=4).values)
    assert 0.04 <= a.labels.mean() <= 0.07
    assert set(a.kinds[a.labels]) == set(KINDS)
    assert a.channels == ("temperature", "vibration", "pressure", "noise")
    assert np.all(np.diff(a.ts) == 1.0)


def test_iot_setting() -> None:
    s = iot(n=4000, seed=1)
    normal = s.values[~s.labels]
    assert abs(normal[:, 2].mean() - 1013) < 1
    assert abs(normal[:, 0].mean() - 20) < 1
    dev = np.abs(s.values[s.labels] - np.array([20.0, 50.0, 1013.0]))
    assert dev.max() > 25  # +-30 spikes exist
    assert abs(s.labels.mean() - 0.05) < 0.005


def test_points_carry_channel_names() -> None:
    p = next(iter(iot(n=10).points("s")))
    assert set(p.values) == {"temperature", "humidity", "pressure"} and p.stream == "s"
