"""Helpers shared by the benchmark scripts: machine/version info, JSON/PNG saving, README."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import re
import resource
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "benchmarks" / "README.md"


def now_utc() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


def versions(*packages: str) -> dict[str, str]:
    out = {}
    for p in ("edge-agent", "numpy", "scipy", "river", "onnxruntime", "onnx", *packages):
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            continue
    with contextlib.suppress(OSError, subprocess.SubprocessError):  # read-only git query
        out["git_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
            timeout=10, check=False,
        ).stdout.strip()
    return out


def save_json(path: str | Path, obj: Any) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    tmp.replace(p)
    return p


def save_png(fig: Any, path: str | Path, dpi: int = 110) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=dpi, bbox_inches="tight")
    return p


def update_readme(section: str, body: str, readme: Path = README) -> Path:
    """Replace the text between ``<!-- section:start -->`` and ``<!-- section:end -->``."""
    start, end = f"<!-- {section}:start -->", f"<!-- {section}:end -->"
    text = readme.read_text() if readme.exists() else "# Benchmarks\n"
    block = f"{start}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _m: block, text) if pattern.search(text) else (
        text.rstrip() + "\n\n" + block + "\n")
    readme.write_text(text)
    return readme


class Stopwatch:
    """Wall time of a run by phase (:meth:`lap`) and in total, and the CPU time of this
    process plus its finished child processes (a process pool's workers count once the pool
    has been shut down)."""

    def __init__(self) -> None:
        self._start = self._last = time.perf_counter()
        self.phases: dict[str, float] = {}

    def lap(self, phase: str) -> float:
        """Close ``phase`` (it began at the previous lap); its wall seconds."""
        now = time.perf_counter()
        self.phases[phase] = round(now - self._last, 1)
        self._last = now
        return self.phases[phase]

    @staticmethod
    def cpu_seconds() -> float:
        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    def summary(self, **extra: Any) -> dict[str, Any]:
        return {"wall_seconds": round(time.perf_counter() - self._start, 1),
                "cpu_seconds": round(self.cpu_seconds(), 1),
                "phase_wall_seconds": dict(self.phases), **extra}
