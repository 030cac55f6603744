"""What the agent process imports (issue #9): the heavy libraries stay out of ``run``.

``from river import anomaly`` drags in scipy.special/sparse/spatial and scikit-learn
(about +90 MB RSS, seconds of import on a gateway); :mod:`agent.river_import` loads only
HalfSpaceTrees and LODA. Every check runs in a fresh interpreter, since ``sys.modules``
of the test process says nothing about the agent's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("scipy", "sklearn", "pandas", "narwhals", "matplotlib", "torch", "tqdm")


def _child(code: str, cwd: Path, stdin: str | None = None) -> dict[str, object]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                       text=True, timeout=300, cwd=cwd, env=env, input=stdin)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def _heavy(modules: list[str]) -> list[str]:
    return sorted(m for m in modules if m.startswith(HEAVY) and m.split(".")[0] != "agent")


def test_river_import_loads_the_two_detectors_without_heavy_packages(tmp_path: Path) -> None:
    out = _child(
        """
        import json, random, sys
        from agent.river_import import anomaly_classes
        A = anomaly_classes()
        heavy_after_lite = sorted(sys.modules)
        stand_ins_left = [m for m in ("river.anomaly", "river.tree") if m in sys.modules]
        h = A.HalfSpaceTrees(n_trees=5, height=6, window_size=50, seed=3)
        lo = A.LODA(n_bins=8, n_random_cuts=20, seed=3)
        r = random.Random(1)
        scores = []
        for _ in range(400):
            x = {"a": r.random(), "b": r.random()}
            scores.append((h.score_one(x), lo.score_one(x)))
            h.learn_one(x)
            lo.learn_one(x)
        # a later full import sees the very same classes, and the rest of River works
        from river import anomaly, tree
        same = anomaly.HalfSpaceTrees is A.HalfSpaceTrees and anomaly.LODA is A.LODA
        print(json.dumps({"modules": heavy_after_lite, "left": stand_ins_left,
                          "scores": scores, "same": same,
                          "tree": tree.HoeffdingTreeClassifier.__name__}))
        """, tmp_path)
    assert _heavy(out["modules"]) == []  # type: ignore[arg-type]
    assert out["left"] == [] and out["same"] is True
    assert out["tree"] == "HoeffdingTreeClassifier"
    # identical behaviour to River imported the ordinary way, seed for seed
    ref = _child(
        """
        import json, random
        from river import anomaly as A
        h = A.HalfSpaceTrees(n_trees=5, height=6, window_size=50, seed=3)
        lo = A.LODA(n_bins=8, n_random_cuts=20, seed=3)
        r = random.Random(1)
        scores = []
        for _ in range(400):
            x = {"a": r.random(), "b": r.random()}
            scores.append((h.score_one(x), lo.score_one(x)))
            h.learn_one(x)
            lo.learn_one(x)
        print(json.dumps({"scores": scores}))
        """, tmp_path)
    assert out["scores"] == ref["scores"]
    assert len({s for s, _ in out["scores"]}) > 5  # type: ignore[union-attr]  # not constant


def test_run_path_does_not_import_heavy_libraries(tmp_path: Path) -> None:
    doc = yaml.safe_load((ROOT / "agent" / "resources" / "demo.yaml").read_text())
    doc["detectors"]["onnx"]["model"] = str(ROOT / "agent" / "resources" / "demo-ae.onnx")
    doc["detectors"]["river"]["models"].append({"kind": "loda"})
    doc["sinks"] = {"jsonl": None}
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    from agent.synthetic import multisensor

    syn = multisensor(n=1500, seed=2)
    lines = "".join(
        json.dumps({"stream": "line1", "ts": float(t),
                    "values": dict(zip(syn.channels, row, strict=True))}) + "\n"
        for t, row in zip(syn.ts.tolist(), syn.values.tolist(), strict=True))
    out = _child(
        f"""
        import json, sys
        from agent.cli import main
        rc = main(["--log-level", "warning", "run", "--config", {str(cfg)!r}, "--input", "-"])
        print(json.dumps({{"rc": rc, "modules": sorted(sys.modules)}}))
        """, tmp_path, stdin=lines)
    assert out["rc"] == 0
    modules = out["modules"]
    assert isinstance(modules, list)
    # the stages really ran: River's detectors and onnxruntime are loaded
    assert {"river.anomaly.hst", "river.anomaly.loda", "onnxruntime"} <= set(modules)
    assert _heavy(modules) == []
