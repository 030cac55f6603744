"""Detectors: stateful, I/O-free scorers with River's ``score_one`` / ``learn_one`` shape."""

from agent.detectors.river_models import RiverStage
from agent.detectors.zscore import StatGate

__all__ = ["RiverStage", "StatGate"]
