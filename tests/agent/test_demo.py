"""`edge-agent demo --offline` runs the cascade end to end and leaves a plot to look at."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.demo import episode_recall, run_demo


def test_offline_demo_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_demo(None, 2500, 7, tmp_path) == 0
    out = capsys.readouterr().out
    assert "ALERT" in out and "stage 3 scored" in out and "episodes detected" in out
    png = tmp_path / "demo.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    assert (tmp_path / "alerts.jsonl").read_text().count('"event":"raise"') >= 1


def test_episode_recall() -> None:
    labels = np.array([0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0], dtype=bool)
    alerts = np.zeros_like(labels)
    alerts[3] = True  # just after the first episode
    assert episode_recall(labels, alerts) == (1, 2)
