from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest

from export.errors import SignatureError
from export.pca_ae import build_pca_model
from export.signing import (
    canonical_bytes,
    keygen,
    manifest_path,
    sign_model,
    verify_manifest,
)
from tests.export.export_helpers import FEATURES, WINDOW, synthetic_rows


@pytest.fixture()
def signed(tmp_path: Path) -> tuple[Path, Path, Path]:
    model = tmp_path / "model.onnx"
    build_pca_model(synthetic_rows(), FEATURES, WINDOW, n_components=6, out=model)
    priv, pub = keygen(tmp_path / "keys")
    return model, sign_model(model, priv, ["line1/pump", "line2/pump"]), pub


def test_keygen_private_key_is_0600_and_not_overwritten(tmp_path: Path) -> None:
    priv, pub = keygen(tmp_path)
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    assert pub.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    with pytest.raises(SignatureError, match="refusing"):
        keygen(tmp_path)


def test_manifest_fields_and_verification(signed) -> None:
    model, man_path, pub = signed
    assert man_path == manifest_path(model) and man_path.name == "model.onnx.manifest.json"
    m = json.loads(man_path.read_text())
    assert {"name", "version", "sha256", "size", "golden", "targets", "created_at",
            "signature", "signature_alg", "key_id", "file", "schema"} == set(m)
    assert m["targets"] == ["line1/pump", "line2/pump"] and m["size"] == model.stat().st_size
    assert 3 <= len(m["golden"]) <= 5
    verify_manifest(man_path.read_bytes(), pub.read_bytes(), model.read_bytes())


def test_canonical_bytes_are_sorted_compact_without_signature() -> None:
    m = {"b": 1, "a": [1.5, "x"], "signature": "zzz", "c": {"y": 1, "x": 2}}
    assert canonical_bytes(m) == b'{"a":[1.5,"x"],"b":1,"c":{"x":2,"y":1}}'


def test_tampered_model_byte_fails(signed) -> None:
    model, man_path, pub = signed
    blob = bytearray(model.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    with pytest.raises(SignatureError, match="sha256"):
        verify_manifest(man_path.read_bytes(), pub.read_bytes(), bytes(blob))


def test_tampered_manifest_fails(signed) -> None:
    model, man_path, pub = signed
    m = json.loads(man_path.read_text())
    m["targets"] = ["line3/pump"]
    with pytest.raises(SignatureError, match="signature"):
        verify_manifest(m, pub.read_bytes(), model.read_bytes())
    m = json.loads(man_path.read_text())
    sig = bytearray(base64.b64decode(m["signature"]))
    sig[0] ^= 0x01
    m["signature"] = base64.b64encode(bytes(sig)).decode()
    with pytest.raises(SignatureError):
        verify_manifest(m, pub.read_bytes())


def test_wrong_key_fails(signed, tmp_path: Path) -> None:
    model, man_path, _ = signed
    _, other_pub = keygen(tmp_path / "other")
    with pytest.raises(SignatureError, match="signature"):
        verify_manifest(man_path.read_bytes(), other_pub.read_bytes(), model.read_bytes())
