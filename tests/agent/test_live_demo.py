"""``edge-agent demo`` needs no broker installed by hand.

With Mosquitto hidden, the demo starts the embedded amqtt broker (MQTT 3.1.1 only), so
this also checks the agent's MQTT 5 -> 3.1.1 fallback against a real 3.1.1-only broker.
With neither broker it runs the offline demo and says why.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import agent.live_demo as live_demo


@pytest.mark.network
@pytest.mark.skipif(importlib.util.find_spec("amqtt") is None,
                    reason="amqtt is not installed (pip install -e '.[test]' or '.[demo]')")
def test_live_demo_on_amqtt_without_mosquitto(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(live_demo, "find_mosquitto", lambda: None)  # as on a fresh machine
    assert live_demo.run_live_demo(None, 1500, 7, tmp_path, rate=1500.0) == 0
    out = capsys.readouterr().out
    assert "edge-agent live demo: amqtt on 127.0.0.1:" in out
    assert "amqtt (MQTT 3.1.1)" in out  # the agent fell back from MQTT 5
    assert "ALERT" in out and "episodes detected" in out
    assert "points ingested        1500" in out
    png = tmp_path / "demo.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "alerts.jsonl").read_text().count('"event":"raise"') >= 1


def test_demo_without_any_broker_runs_offline_and_says_why(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(live_demo, "find_mosquitto", lambda: None)
    monkeypatch.setattr(live_demo, "amqtt_available", lambda: False)
    assert live_demo.run_live_demo(None, 800, 7, tmp_path) == 0
    out = capsys.readouterr().out
    assert "Mosquitto is not installed" in out and "edge-agent[demo]" in out
    assert "running the offline demo instead" in out and "stage 3 scored" in out
    assert (tmp_path / "demo.png").exists()
