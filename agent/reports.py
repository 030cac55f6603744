"""The JSON documents the agent publishes about itself: birth, status and stats.

Pure builders (time and counters come in as arguments); schemas in ``docs/schemas/``.
"""

from __future__ import annotations

import os
import resource
from typing import Any

from agent._version import __version__
from agent.config import AgentConfig
from agent.engine import Engine


def rss_bytes() -> int:
    """Resident set size now (Linux ``/proc``), else the peak from ``getrusage``."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def detectors_by_stage(cfg: AgentConfig) -> dict[str, list[str]]:
    d = cfg.detectors
    return {
        "stage1": ([f"zscore:{d.zscore.method}"] if d.zscore.enabled else []),
        "stage2": ([m.kind for m in d.river.models] if d.river.enabled else []),
        "stage3": (["onnx_autoencoder"] if d.onnx.enabled else []),
    }


def birth_payload(cfg: AgentConfig, engine: Engine, session: int, now: float,
                  protocol: str) -> dict[str, Any]:
    model = engine.model
    return {
        "agent_id": cfg.agent.id,
        "agent_version": __version__,
        "config_version": cfg.version,
        "session": session,
        "ts": now,
        "protocol": protocol,
        "streams": {s.id: list(s.channel_names) for s in cfg.streams},
        "detectors": detectors_by_stage(cfg),
        "provider": model.provider if model is not None else None,
        "model": ({"name": model.meta.name, "version": model.meta.version,
                   "sha256": model.sha256} if model is not None else None),
        "stats_interval_s": cfg.agent.stats_interval_s,
    }


def status_payload(state: str, session: int, now: float | None, reason: str) -> dict[str, Any]:
    return {"state": state, "session": session, "ts": now, "reason": reason}


def stats_payload(cfg: AgentConfig, engine: Engine, *, now: float, uptime_s: float,
                  session: int, extra: dict[str, Any]) -> dict[str, Any]:
    """One stats snapshot: the engine's figures plus the runtime's (``extra``)."""
    st = engine.stats()
    model = st["model"]
    return {
        "agent_id": cfg.agent.id,
        "ts": now,
        "session": session,
        "uptime_s": round(uptime_s, 3),
        "config_version": cfg.version,
        "points_in": st["points_in"],
        "points_rejected": st["points_rejected"],
        "rejected": st["rejected"],
        "alerts": st["alerts"],
        "clock_jumps": st["clock_jumps"],
        "scored": st["scored"],
        "escalation_rate": st["escalation_rate"],
        "model": ({"name": model["name"], "version": model["version"],
                   "sha256": model["sha256"]} if model else None),
        "provider": st["provider"],
        "rss_bytes": rss_bytes(),
        **extra,
    }
