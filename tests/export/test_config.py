from __future__ import annotations

from pathlib import Path

import pytest

from export.config import ARCHITECTURES, TrainConfig, config_from_dict, load_config
from export.errors import TrainConfigError
from tests.export.export_helpers import tiny_config, write_config

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "train"


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_shipped_configs_load(arch: str) -> None:
    cfg = load_config(CONFIG_DIR / f"{arch}.yaml")
    assert isinstance(cfg, TrainConfig)
    assert cfg.architecture == arch


def test_shipped_configs_comment_every_key() -> None:
    for path in CONFIG_DIR.glob("*.yaml"):
        for line in path.read_text(encoding="utf-8").splitlines():
            code = line.split("#", 1)[0]
            if ":" in code and code.strip() and not code.strip().endswith(":"):
                assert "#" in line or code.startswith("    "), f"{path.name}: {line!r}"


def test_transformer_defaults_match_the_source_material() -> None:
    m = load_config(CONFIG_DIR / "transformer.yaml").model
    assert (m.d_model, m.n_heads, m.encoder_layers, m.decoder_layers, m.latent) == (
        64, 4, 2, 2, 32)
    assert load_config(CONFIG_DIR / "transformer.yaml").data.window == 50
    assert load_config(CONFIG_DIR / "vae.yaml").model.latent == 20


@pytest.mark.parametrize(
    ("patch", "key"),
    [
        ({"training": {"epochz": 3}}, "training.epochz"),
        ({"model": {"hidden": [4], "wat": 1}}, "model.wat"),
        ({"bogus": 1}, "bogus"),
        ({"training": {"epochs": 0}}, "training.epochs"),
        ({"training": {"epochs": "many"}}, "training.epochs"),
        ({"data": {"window": 1}}, "data.window"),
        ({"calibration": {"method": "magic"}}, "calibration.method"),
        ({"version": "1.0"}, "version"),
        ({"architecture": "gan"}, "architecture"),
        ({"model": {"hidden": "wide"}}, "model.hidden"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path: Path, patch: dict, key: str) -> None:
    cfg = tiny_config("dense")
    for k, v in patch.items():
        cfg[k] = {**cfg[k], **v} if isinstance(v, dict) and isinstance(cfg.get(k), dict) else v
    path = write_config(tmp_path / "bad.yaml", cfg)
    with pytest.raises(TrainConfigError) as info:
        load_config(path)
    assert info.value.key == key
    assert str(path) in str(info.value)


def test_missing_name_and_yaml_errors(tmp_path: Path) -> None:
    with pytest.raises(TrainConfigError, match="name: missing"):
        config_from_dict({"architecture": "pca"})
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: [unclosed\n", encoding="utf-8")
    with pytest.raises(TrainConfigError, match="invalid YAML"):
        load_config(bad)


def test_floats_written_without_a_dot_are_accepted() -> None:
    cfg = tiny_config("dense")
    cfg["training"]["learning_rate"] = "1e-3"
    assert config_from_dict(cfg).training.learning_rate == pytest.approx(1e-3)
