"""Shared pieces of the fault tests (issue #7): input segments, records, figures, RSS."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from tests.agent.mqtt_agent import normal_then_spikes

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"


def segment(t0: float, n: int = 60, spikes: tuple[int, ...] = (25, 45)) -> list[bytes]:
    """JSON lines for both streams of ``write_config``, interleaved; each spike raises an
    alert and clears it two points later (k=1, n=1, clear_after=2)."""
    out = []
    for (ts, v), (_, w) in zip(normal_then_spikes(n, spikes=spikes, t0=t0),
                               normal_then_spikes(n, spikes=tuple(s + 5 for s in spikes),
                                                  t0=t0), strict=True):
        out.append(json.dumps({"stream": "line1", "ts": ts, "values": v}).encode() + b"\n")
        pump = {"t": w["temp"], "rpm": w["vib"] * 1000}
        out.append(json.dumps({"stream": "pump", "ts": ts, "values": pump}).encode() + b"\n")
    return out


def jsonl(path: Path) -> list[dict[str, Any]]:
    """Complete JSON lines of a file a killed process may have left with a torn last line."""
    if not path.exists():
        return []
    out = []
    for line in path.read_bytes().split(b"\n"):
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # empty or torn (kill -9 mid-write)
    return out


def key(alert: dict[str, Any]) -> tuple[str, str, float]:
    """What identifies an alert event of these inputs (timestamps are unique per stream)."""
    return (alert["stream"], alert["event"], float(alert["ts"]))


def first_by_msg_id(received: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    first: dict[str, dict[str, Any]] = {}
    for a in received:
        first.setdefault(a["msg_id"], a)
    return first


def rss_kib(pid: int) -> int:
    """VmRSS of a process in KiB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def results_dir() -> Path:
    """Where tests write their figures: ``benchmarks/results`` (tracked) when
    ``EDGE_AGENT_SAVE_FIGURES=1``, else its git-ignored ``tmp/``, so that running the suite
    leaves the checkout clean."""
    out = RESULTS if os.environ.get("EDGE_AGENT_SAVE_FIGURES") == "1" else RESULTS / "tmp"
    out.mkdir(parents=True, exist_ok=True)
    return out


def save_figures(name: str, figures: dict[str, Any]) -> Path:
    """Print the figures and write ``faults_{name}.json`` (see :func:`results_dir`)."""
    path = results_dir() / f"faults_{name}.json"
    path.write_text(json.dumps(figures, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"\nfault figures ({name}): {json.dumps(figures, sort_keys=True)}")
    return path


def mount_tmpfs(path: Path, size: str) -> str | None:
    """Mount a tmpfs of ``size`` on ``path``; the reason it is not possible, else None."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                        str(path)], capture_output=True, text=True, check=False)
    return None if r.returncode == 0 else f"mount -t tmpfs refused: {r.stderr.strip()}"


def umount(path: Path) -> None:
    subprocess.run(["umount", str(path)], capture_output=True, check=False)


def fingerprint(cfg: Path) -> str:
    """The detector fingerprint a checkpoint of the agent configured by ``cfg`` carries."""
    from agent.engine import Engine
    from agent.runtime import load_effective

    return Engine(load_effective(cfg)[2]).fingerprint()
