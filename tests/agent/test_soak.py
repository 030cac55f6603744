"""Soak (issue #7): 5,000,000 points through the engine in a child process, RSS flat.

The child builds the real :class:`~agent.engine.Engine` (stage 1 statistical gate,
stage 2 HalfSpaceTrees, alert policy, a JSON-lines alert sink) and streams a synthetic
two-channel signal through it in batches of 10,000 points: seasonal values with noise,
spikes every 997 points and a level shift every 50,021 (alerts, escalations, quarantines
and re-baselines keep happening), and every 101st point bad in a rotating way (NaN,
a non-number, an unknown channel, an unknown stream, a repeated timestamp). After each
batch it prints the number of points processed; the test reads the child's VmRSS from
``/proc/<pid>/status`` at each of those lines.

The assertion: RSS at the end minus RSS after the warm-up (the first 10 %) is at most
2 MB. Figures go to ``soak.json`` (``benchmarks/results`` with ``EDGE_AGENT_SAVE_FIGURES=1``).

About 14 minutes on the 2-core container (5,000,000 points in 816 s, ~6,100 points/s,
with the machine lightly shared), so it is marked ``soak``
and deselected from the default run (``tests/conftest.py``); CI runs it as its own step,
``pytest -m soak`` (``.ci/run``).
``EDGE_SOAK_POINTS`` lowers the count for a local look (the JSON records what ran).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.agent.fault_helpers import results_dir

pytestmark = [pytest.mark.slow, pytest.mark.soak]

ROOT = Path(__file__).resolve().parents[2]
POINTS = int(os.environ.get("EDGE_SOAK_POINTS", "5000000"))
BATCH = 10_000
GROWTH_LIMIT_MB = 2.0

CHILD = textwrap.dedent(
    """
    import math, sys
    import numpy as np
    from agent.config import config_from_dict
    from agent.engine import Engine
    from agent.sinks import JsonlSink
    from agent.types import Point

    n_points, batch, alerts_path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    cfg = config_from_dict({
        "agent": {"id": "soak"},
        "streams": [{"id": "line1", "channels": ["temp", "vib"]}],
        "detectors": {"river": {"enabled": True}, "onnx": {"enabled": False}},
        "sinks": {"jsonl": None},
    }, "soak")
    sink = JsonlSink(alerts_path)
    engine = Engine(cfg, sinks=[sink])
    rng = np.random.default_rng(7)
    bad = [
        lambda ts: Point(ts, "line1", {"temp": math.nan, "vib": 1.0}),
        lambda ts: Point(ts, "line1", {"temp": "x", "vib": 1.0}),
        lambda ts: Point(ts, "line1", {"temp": 1.0, "vib": 1.0, "ghost": 2.0}),
        lambda ts: Point(ts, "nowhere", {"temp": 1.0}),
        lambda ts: Point(ts - 2.0, "line1", {"temp": 1.0, "vib": 1.0}),
    ]
    done = 0
    while done < n_points:
        n = min(batch, n_points - done)
        i = np.arange(done, done + n)
        temp = 20 + np.sin(i * (2 * math.pi / 60)) + rng.normal(0, 0.1, n)
        temp += 2.0 * ((i // 50021) % 2)
        vib = 1 + 0.8 * np.cos(i * (2 * math.pi / 40)) + rng.normal(0, 0.1, n)
        temp[i % 997 == 0] += 4.0
        for k, t, v in zip(i.tolist(), temp.tolist(), vib.tolist()):
            ts = 1.7e9 + k
            if k % 101 == 100:
                engine.process(bad[(k // 101) % len(bad)](ts))
            else:
                engine.process(Point(ts, "line1", {"temp": t, "vib": v}))
        done += n
        print(done, flush=True)
    sink.close()
    import json
    st = engine.stats()
    print("STATS " + json.dumps({k: st[k] for k in
          ("points_in", "points_rejected", "rejected", "scored", "alerts")}), flush=True)
    """
)


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS line")


def test_five_million_points_rss_flat_after_warmup(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    samples: list[tuple[float, int, int]] = []
    stats: dict[str, object] = {}
    t0 = time.monotonic()
    with (tmp_path / "stderr.txt").open("w") as err, subprocess.Popen(
        [sys.executable, "-c", CHILD, str(POINTS), str(BATCH), str(tmp_path / "alerts.jsonl")],
        stdout=subprocess.PIPE, stderr=err, text=True, cwd=tmp_path, env=env,
    ) as proc:
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                if line.startswith("STATS "):
                    stats = json.loads(line[6:])
                    continue
                samples.append((time.monotonic() - t0, int(line), _rss_kb(proc.pid)))
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    seconds = time.monotonic() - t0
    assert proc.returncode == 0, (tmp_path / "stderr.txt").read_text()[-3000:]
    assert samples and samples[-1][1] == POINTS
    assert stats["points_in"] == POINTS
    rejected = stats["rejected"]
    assert isinstance(rejected, dict)
    # every kind of bad point was met, counted and survived
    assert {"non_finite", "non_numeric", "unknown_channel", "unknown_stream",
            "out_of_order"} <= set(rejected), rejected
    alerts = (tmp_path / "alerts.jsonl").read_text().count("\n")
    assert alerts > 0

    warm_at = POINTS // 10
    warm = next(s for s in samples if s[1] >= warm_at)
    end = samples[-1]
    after = [s for s in samples if s[1] >= warm_at]
    growth_mb = (end[2] - warm[2]) / 1024
    result = {
        "test": "tests/agent/test_soak.py (pytest -m soak)",
        "points": POINTS,
        "batch": BATCH,
        "seconds": round(seconds, 1),
        "points_per_s": round(POINTS / seconds),
        "pipeline": "Engine: stage 1 gate + stage 2 HalfSpaceTrees, alert policy, JSONL sink; "
                    "2 channels, 1 % bad points",
        "warmup_points": warm[1],
        "rss_start_mb": round(samples[0][2] / 1024, 2),
        "rss_after_warmup_mb": round(warm[2] / 1024, 2),
        "rss_end_mb": round(end[2] / 1024, 2),
        "rss_max_after_warmup_mb": round(max(s[2] for s in after) / 1024, 2),
        "growth_mb": round(growth_mb, 3),
        "growth_limit_mb": GROWTH_LIMIT_MB,
        "alerts_lines": alerts,
        "stats": stats,
        "samples": [[round(t, 2), n, kb] for t, n, kb in samples[:: max(1, len(samples) // 500)]],
        "python": sys.version.split()[0],
    }
    out = results_dir() / "soak.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    assert growth_mb <= GROWTH_LIMIT_MB, (
        f"RSS grew {growth_mb:.2f} MB from {warm[1]:,} to {end[1]:,} points; see {out}")
