"""The gateway agent never imports torch (it is a 180 MB import the gateway cannot afford)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_agent_runs_a_full_cascade_without_importing_torch(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import importlib, pkgutil, sys
        import agent
        for m in pkgutil.walk_packages(agent.__path__, "agent."):
            importlib.import_module(m.name)
        from agent.config import load_config
        from agent.demo import default_config_path
        from agent.engine import Engine
        from agent.onnx_scorer import model_from_config
        from agent.synthetic import multisensor
        cfg = load_config(default_config_path())
        model = model_from_config(cfg.detectors.onnx, cfg.resolve_path)
        e = Engine(cfg, model)
        for p in multisensor(n=600, seed=1).points("line1"):
            e.process(p)
        assert e.stats()["scored"]["stage3"] > 0
        bad = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
        print("TORCH" if bad else "CLEAN", bad[:5])
        """
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("CLEAN"), r.stdout


def test_no_torch_import_statement_in_agent_sources() -> None:
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "agent").rglob("*.py")
        if any(
            line.strip().startswith(("import torch", "from torch"))
            for line in p.read_text().splitlines()
        )
    ]
    assert offenders == []
