"""The examples in module docstrings run and say what they print (so they cannot rot)."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODULES = sorted(
    ".".join(p.relative_to(ROOT).with_suffix("").parts)
    for package in ("agent", "export", "firmware_bridge")
    for p in (ROOT / package).rglob("*.py")
    if ">>> " in p.read_text(encoding="utf-8")
)


def test_there_are_examples() -> None:
    assert len(MODULES) > 30


@pytest.mark.parametrize("name", MODULES)
def test_module_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name}: no example ran"
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed"
