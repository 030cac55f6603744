"""The SKAB metric and its sanity references (SKAB_PROTOCOL.md, "Metric" and item 6)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import skab_metric as sm  # noqa: E402

needs_data = pytest.mark.skipif(
    not sm.available(),
    reason=f"SKAB dataset not found at {sm.data_dir()} (expected ../shared/datasets/skab)",
)


def test_confusion_counts_only_test_rows_and_rounds() -> None:
    labels = np.array([1] * 400 + [0, 0, 1, 1, 1])
    alerts = np.array([0] * 400 + [1, 0, 1, 0, 1])
    c = sm.confusion(labels, alerts)
    assert (c.tp, c.tn, c.fp, c.fn) == (2, 1, 1, 1)
    assert c.f1 == round(4 / 6, 2) and c.far == 50.0 and c.mar == round(100 / 3, 2)
    with pytest.raises(ValueError):
        sm.confusion(labels, alerts[:-1])


def test_empty_denominators_give_zero() -> None:
    c = sm.Confusion()
    assert (c.f1, c.far, c.mar) == (0.0, 0.0, 0.0)


@pytest.fixture(scope="module")
def files() -> list[sm.SkabFile]:
    return sm.load_files()


@needs_data
def test_split_and_test_set_size(files: list[sm.SkabFile]) -> None:
    assert len(files) == 34
    n_test = sum(len(f.labels) - sm.N_TRAIN for f in files)
    n_anom = sum(int(f.labels[sm.N_TRAIN:].sum()) for f in files)
    assert (n_test, n_anom) == (23801, 12771)


@needs_data
def test_always_alarm(files: list[sm.SkabFile]) -> None:
    c, _ = sm.evaluate(files, {f.key: sm.always_alarm(f) for f in files})
    assert (c.f1, c.far, c.mar) == (0.70, 100.0, 0.0)


@needs_data
def test_never_alarm(files: list[sm.SkabFile]) -> None:
    c, _ = sm.evaluate(files, {f.key: sm.never_alarm(f) for f in files})
    assert (c.f1, c.far, c.mar) == (0.0, 0.0, 100.0)


@needs_data
def test_t2_reimplementation_reproduces_the_leaderboard(files: list[sm.SkabFile]) -> None:
    c, _ = sm.evaluate(files, {f.key: sm.t2_alerts(f) for f in files})
    assert (c.f1, c.far, c.mar) == (0.66, 19.21, 42.60)
    assert (c.tp, c.tn, c.fp, c.fn) == (7331, 8911, 2119, 5440)
