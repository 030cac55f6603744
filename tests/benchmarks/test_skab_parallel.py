"""benchmarks/skab.py: the process pool and the grouped CV scoring change no figure."""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import skab  # noqa: E402
import skab_metric as sm  # noqa: E402

from agent.config import load_config  # noqa: E402

needs_data = pytest.mark.skipif(
    not sm.available(),
    reason=f"SKAB dataset not found at {sm.data_dir()} (expected ../shared/datasets/skab)",
)

KEYS = ("valve1/5", "other/9")


def test_policy_confusions_equal_the_policy_then_the_metric() -> None:
    rng = np.random.default_rng(7)
    for n_test in (1, 30, 600):
        ratios = rng.exponential(0.6, sm.N_TRAIN + n_test)
        ratios[sm.N_TRAIN // 2] = 5.0  # training rows never alert
        ratios[-1] = 1.0  # the threshold itself is a hit
        labels = (rng.random(len(ratios)) < 0.4).astype(np.int8)
        cas = [1, 5, 40, 2 * n_test]
        got = skab.policy_confusions(ratios, cas, labels[sm.N_TRAIN:].astype(bool))
        want = [sm.confusion(labels, skab.policy_alerts(ratios, ca)) for ca in cas]
        assert got == want
        assert all(isinstance(v, int) for c in got for v in (c.tp, c.tn, c.fp, c.fn))
    assert len(set(want)) > 1


@pytest.fixture(scope="module")
def files() -> list[sm.SkabFile]:
    return [f for f in sm.load_files() if f.key in KEYS]


@pytest.fixture(scope="module")
def variants() -> list[skab.Variant]:
    vs = skab.variants(load_config(skab.CONFIG))
    # stage 3 alone (ONNX model in the worker) and the prototype (patched engine in the worker)
    return [v for v in vs if v.name in ("stage3", "cascade+hold")]


@pytest.fixture(scope="module")
def blobs(files: list[sm.SkabFile]) -> dict[str, bytes]:
    return {f.key: skab.chart_blob(skab.CHART, f) for f in files}


@pytest.fixture(scope="module")
def pool(files: list[sm.SkabFile], variants: list[skab.Variant],
         blobs: dict[str, bytes]) -> Iterator[cf.ProcessPoolExecutor]:
    with cf.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"),
                                initializer=skab._init_worker,
                                initargs=(files, variants, blobs)) as p:
        yield p


@needs_data
def test_replays_in_the_pool_equal_replays_here(
        files: list[sm.SkabFile], variants: list[skab.Variant], blobs: dict[str, bytes],
        pool: cf.ProcessPoolExecutor) -> None:
    here = skab.run_variants(variants, files, blobs)
    seen: list[int] = []
    there = skab.run_variants(variants, files, blobs, pool, seen.append)
    assert sorted(seen) == sorted(len(f.labels) for f in files for _ in variants)
    assert list(there) == [v.name for v in variants]
    for name in here:
        a, b = here[name], there[name]
        assert list(b["per_file"]) == list(KEYS)  # file order, not completion order
        for k in ("tp", "tn", "fp", "fn", "stage3_fraction", "stage3_escalated", "per_file"):
            assert a[k] == b[k], (name, k)
        for key in KEYS:
            np.testing.assert_array_equal(a["_alerts"][key], b["_alerts"][key])
            np.testing.assert_array_equal(a["_scores"][key], b["_scores"][key])
    # the workers ran the prototype patched: unpatched, the same configuration differs
    hold = next(v for v in variants if v.prototype)
    unpatched = skab.Variant("unpatched", "", hold.config, hold.use_model)
    one = files[0].key
    plain = skab.run_variants([unpatched], files[:1], blobs)["unpatched"]
    assert not np.array_equal(plain["_scores"][one], there[hold.name]["_scores"][one])


@needs_data
def test_grouped_cv_scoring_equals_scoring_each_point(
        files: list[sm.SkabFile], pool: cf.ProcessPoolExecutor) -> None:
    grid = {**skab.CV_GRID, "window_decay": [(10, 0.2), (5, 0.0)], "threshold": [4.0, 6.0],
            "acc_rel_tolerance": [0.05], "flow_rel_tolerance": [0.0, 0.025],
            "clear_after": [1, 40]}
    here = skab.grid_confusions(files, grid)
    cache: skab.Conf = {}
    there = skab.grid_confusions(files, grid, cache, pool)
    assert list(there) == list(here) == skab.grid_points(grid)
    assert there == here and len(cache) == 16
    # each point on its own: a chart fitted for it, the policy applied to its ratios
    for g, per in here.items():
        *chart_args, ca = g
        p = skab._params(*chart_args)
        for f in files:
            idx = [f.table.columns.index(c) for c in p["channels"]]
            x = f.table.values[:, idx]
            ratios = skab.make_chart(p, x[: sm.N_TRAIN]).score_rows(x)
            assert per[f.key] == sm.confusion(f.labels, skab.policy_alerts(ratios, ca)), g
    assert len({tuple(per.values()) for per in here.values()}) > 1  # the grid matters
