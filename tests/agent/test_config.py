"""Configuration: every shipped config loads; every error names file, key and reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.cli import main
from agent.config import AgentConfig, config_from_dict, load_config
from agent.demo import default_config_path
from agent.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = [*sorted((ROOT / "configs").glob("*.yaml")), default_config_path()]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_loads(path: Path) -> None:
    cfg = load_config(path)
    assert isinstance(cfg, AgentConfig)
    assert cfg.streams, "shipped configs define at least one stream"
    if cfg.detectors.onnx.enabled:
        assert cfg.resolve_path(cfg.detectors.onnx.model or "").exists()


def test_skab_and_nab_channels() -> None:
    skab = load_config(ROOT / "configs" / "skab.yaml")
    assert len(skab.streams[0].channels) == 8
    assert "Volume Flow RateRMS" in skab.streams[0].channel_names
    nab = load_config(ROOT / "configs" / "nab.yaml")
    assert nab.streams[0].channel_names == ("value",)


def test_default_yaml_documents_every_key() -> None:
    """Every key in default.yaml carries a comment on its line or the line above."""
    lines = (ROOT / "configs" / "default.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.startswith("- "):
            continue
        if ":" in stripped:
            above = lines[i - 1].strip() if i else ""
            assert "#" in line or above.startswith("#") or stripped.endswith(":"), (
                f"default.yaml line {i + 1} has no comment: {line!r}"
            )


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("detectors:\n  zscore:\n    window: 3\n", "detectors.zscore.window", ">= 10"),
        ("nope: 1\n", "nope", "unknown key"),
        ("alerts:\n  k: many\n", "alerts.k", "integer"),
        ("alerts:\n  k: 9\n  n: 5\n", "alerts.k", "1..n"),
        ("streams:\n  - id: 'bad id!'\n    channels: [a]\n", "streams[0].id", "must match"),
        ("streams:\n  - id: s\n", "streams[0].channels", "required"),
        ("streams:\n  - id: s\n    channels: [a, a]\n", "streams[0].channels", "duplicate"),
        ("escalation:\n  fusion: average\n", "escalation.fusion", "one of"),
        ("detectors:\n  onnx:\n    enabled: true\n", "detectors.onnx.model", "required"),
        ("detectors:\n  river:\n    models:\n      - kind: lof\n",
         "detectors.river.models[0].kind", "one of"),
        ("agent:\n  id: x\n  log_level: loud\n", "agent.log_level", "one of"),
        ("[1, 2\n", "line", "invalid YAML"),
        ("- just\n- a list\n", "<root>", "mapping"),
    ],
)
def test_errors_name_file_key_and_reason(tmp_path: Path, text: str, key: str, reason: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(f)
    msg = str(err.value)
    assert str(f) in msg
    assert key in msg
    assert reason in msg


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_empty_file_is_all_defaults(tmp_path: Path) -> None:
    f = tmp_path / "empty.yaml"
    f.write_text("")
    assert load_config(f) == AgentConfig()


def test_config_is_frozen() -> None:
    cfg = config_from_dict({})
    with pytest.raises(AttributeError):
        cfg.version = "2"  # type: ignore[misc]


def test_paths_resolve_relative_to_the_file(tmp_path: Path) -> None:
    f = tmp_path / "sub" / "c.yaml"
    f.parent.mkdir()
    f.write_text("version: '1'\n")
    assert load_config(f).resolve_path("m.onnx") == f.parent / "m.onnx"


def test_config_check_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", *map(str, SHIPPED)]) == 0
    assert capsys.readouterr().out.count(": ok") == len(SHIPPED)
    bad = tmp_path / "bad.yaml"
    bad.write_text("alerts:\n  threshold: 2\n")
    assert main(["config", "check", str(bad)]) == 2


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("serial:\n  port: /dev/ttyUSB0\n", "serial", "expected a list"),
        ("serial:\n  - baud: 9600\n", "serial[0].port", "is required"),
        ("serial:\n  - port: /dev/ttyUSB0\n    baud: 0\n", "serial[0].baud", "must be > 0"),
        ("serial:\n  - port: /dev/ttyUSB0\n    parity: X\n", "serial[0].parity", "one of"),
        ("serial:\n  - port: /dev/ttyUSB0\n    mode: hex\n", "serial[0].mode", "one of"),
        ("serial:\n  - port: /dev/ttyUSB0\n    speed: 9600\n", "serial[0].speed",
         "unknown key"),
        ("serial:\n  - port: /dev/ttyUSB0\n    stream: nope\n", "serial[0].stream",
         "not a configured stream"),
        ("serial:\n  - port: /dev/a\n  - port: /dev/a\n", "serial[1].port",
         "already read by serial[0]"),
    ],
)
def test_serial_section_errors(tmp_path: Path, text: str, key: str, reason: str) -> None:
    f = tmp_path / "serial.yaml"
    f.write_text("streams:\n  - id: line1\n    channels: [a]\n" + text)
    with pytest.raises(ConfigError) as err:
        load_config(f)
    assert f"{f}: {key}: " in str(err.value) and reason in str(err.value)


def test_serial_section_maps_onto_the_source_config(tmp_path: Path) -> None:
    f = tmp_path / "serial.yaml"
    f.write_text("streams:\n  - id: line1\n    channels: [a]\n"
                 "serial:\n  - port: /dev/ttyACM0\n    baud: 9600\n    parity: E\n"
                 "    stopbits: 2\n    stream: line1\n    channels: [a]\n")
    (sc,) = load_config(f).serial
    assert (sc.port, sc.baud, sc.parity, sc.stopbits, sc.channels) == (
        "/dev/ttyACM0", 9600, "E", 2.0, ("a",))
    assert sc.port_settings().baudrate == 9600 and load_config(ROOT / "configs" /
                                                               "default.yaml").serial
