from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent._version import __version__
from export.cli import main
from export.onnx_meta import read_meta
from export.pca_ae import build_pca_model
from tests.export.export_helpers import FEATURES, WINDOW, synthetic_rows, tiny_config, write_config

REPO = Path(__file__).resolve().parents[2]


def test_help_and_version_exit_zero(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--help"], ["--version"], ["train", "--help"], ["calibrate", "--help"],
                 ["verify", "--help"], ["sign", "--help"], ["inspect", "--help"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 0
    assert f"edge-export {__version__}" in capsys.readouterr().out


def test_module_entry_point_runs() -> None:
    out = subprocess.run([sys.executable, "-m", "export.cli", "--version"], cwd=REPO,
                         capture_output=True, text=True, check=True)
    assert __version__ in out.stdout


def test_bad_config_exits_2_naming_the_key(tmp_path: Path, normal_csv: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tiny_config("pca")
    cfg["training"]["epochz"] = 3
    path = write_config(tmp_path / "bad.yaml", cfg)
    rc = main(["train", "--config", str(path), "--data", str(normal_csv),
               "--out", str(tmp_path / "run")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "training.epochz" in err and str(path) in err


def test_train_calibrate_verify_sign_inspect(tmp_path: Path, normal_csv: Path,
                                             heldout_csv: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path / "pca.yaml", tiny_config("pca"))
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--data", str(normal_csv), "--out", str(run),
                 "--quiet"]) == 0
    model = run / "model.onnx"
    assert main(["calibrate", str(model), "--data", str(heldout_csv), "--method", "pot",
                 "--q", "0.99", "--initial-q", "0.9"]) == 0
    assert read_meta(model).thresholds["n_windows"] > 0
    assert main(["verify", str(model), "--data", str(heldout_csv), "--golden", "3"]) == 0
    assert len(read_meta(model).golden) == 3
    assert main(["keygen", "--out", str(tmp_path / "keys")]) == 0
    assert main(["sign", str(model), "--key", str(tmp_path / "keys" / "signing_key.pem"),
                 "--targets", "s1,s2"]) == 0
    assert main(["check-signature", str(model), "--pub",
                 str(tmp_path / "keys" / "signing_key.pub.pem")]) == 0
    capsys.readouterr()
    assert main(["inspect", str(model)]) == 0
    text = capsys.readouterr().out
    for field in ("name:", "version:", "architecture:", "threshold:", "features:", "scaler:",
                  "golden vectors:", "window / stride:", "pot_0.99", *FEATURES):
        assert field in text
    assert main(["inspect", str(model), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["architecture"] == "pca"


def test_verify_with_torch_checkpoint(trained, capsys: pytest.CaptureFixture[str]) -> None:
    res = trained("dense")
    assert main(["verify", str(res.model_path)]) == 0  # picks model.pt next to the model
    assert "torch vs ONNX: max abs diff" in capsys.readouterr().out


def test_failures_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "m.onnx"
    build_pca_model(synthetic_rows(), FEATURES, WINDOW, n_components=6, out=model)
    assert main(["inspect", str(tmp_path / "missing.onnx")]) == 1
    assert main(["calibrate", str(model), "--data", str(tmp_path / "none.csv")]) == 1
    assert "error" in capsys.readouterr().err
