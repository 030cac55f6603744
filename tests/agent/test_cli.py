"""The edge-agent CLI follows Unix habits: --version, --help everywhere, exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agent import __version__
from agent.cli import main


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args],
                          capture_output=True, text=True, timeout=120)


def test_version() -> None:
    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"edge-agent {__version__}"


@pytest.mark.parametrize(
    "sub", [[], ["run"], ["replay"], ["demo"], ["config"], ["config", "check"]]
)
def test_help_everywhere(sub: list[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main([*sub, "--help"])
    assert e.value.code == 0


def test_no_command_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage" in capsys.readouterr().err


def test_missing_required_option_exits_2() -> None:
    r = run("replay", "--config", "x.yaml")
    assert r.returncode == 2 and "--input" in r.stderr
