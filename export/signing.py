"""Ed25519 keys, signed model manifests, and their verification.

Manifest (``MODEL.manifest.json``, a JSON object)::

    schema        "edge-agent.manifest/1"
    name, version model name and semantic version (from the embedded metadata)
    file          base name of the ONNX file
    sha256, size  hex SHA-256 and byte length of the ONNX file
    golden        the metadata's golden vectors [{"window": [[...]], "raw_score": x}]
    targets       stream ids the model is meant for (may be empty)
    created_at    UTC ISO-8601 time of signing
    key_id        first 16 hex digits of SHA-256 over the raw 32-byte public key
    signature_alg "ed25519"
    signature     base64 (standard, padded) Ed25519 signature over canonical_bytes()

Canonical bytes = the manifest *without* the ``signature`` key, serialised as
``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
allow_nan=False).encode("ascii")``. Verifiers parse the manifest with ``json.loads`` and
re-serialise it the same way (Python's float repr round-trips, so this is stable).

:func:`verify_manifest` needs only the standard library, ``cryptography`` and the
manifest (plus, optionally, the model bytes). :func:`canonical_bytes` is defined once, in
``agent.signing`` (the gateway's verifier), and imported here.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from agent.signing import canonical_bytes  # the one definition, shared with the agent
from export.errors import SignatureError

SCHEMA = "edge-agent.manifest/1"
PRIVATE_NAME = "signing_key.pem"
PUBLIC_NAME = "signing_key.pub.pem"


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    return hashlib.sha256(_raw_public(key)).hexdigest()[:16]


def load_public_key(data: bytes) -> Ed25519PublicKey:
    """PEM (SubjectPublicKeyInfo) or the raw 32 bytes."""
    if len(data) == 32:
        return Ed25519PublicKey.from_public_bytes(data)
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise SignatureError(f"not an Ed25519 public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError("public key is not Ed25519")
    return key


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise SignatureError(f"{path}: cannot load private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"{path}: private key is not Ed25519")
    return key


def keygen(out_dir: str | Path) -> tuple[Path, Path]:
    """Write a new key pair; the private key file is created with mode 0600."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    priv_path, pub_path = out / PRIVATE_NAME, out / PUBLIC_NAME
    if priv_path.exists() or pub_path.exists():
        raise SignatureError(f"{out}: a key pair already exists; refusing to overwrite")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    os.chmod(priv_path, 0o600)
    pub_path.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv_path, pub_path


def build_manifest(model_bytes: bytes, *, name: str, version: str, file: str,
                   golden: list[dict[str, Any]], targets: list[str]) -> dict[str, Any]:
    return {
        "schema": SCHEMA, "name": name, "version": version, "file": file,
        "sha256": hashlib.sha256(model_bytes).hexdigest(), "size": len(model_bytes),
        "golden": golden, "targets": list(targets),
        "created_at": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
        .replace("+00:00", "Z"),
    }


def sign_manifest(manifest: dict[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    signed = {k: v for k, v in manifest.items() if k != "signature"}
    signed["key_id"] = key_id(key.public_key())
    signed["signature_alg"] = "ed25519"
    signed["signature"] = base64.b64encode(key.sign(canonical_bytes(signed))).decode("ascii")
    return signed


def verify_manifest(
    manifest: dict[str, Any] | str | bytes,
    public_key: bytes | Ed25519PublicKey,
    model_bytes: bytes | None = None,
) -> dict[str, Any]:
    """Check the signature (and, given ``model_bytes``, size and SHA-256).

    Returns the parsed manifest; raises :class:`SignatureError` on any mismatch.
    """
    if isinstance(manifest, str | bytes):
        try:
            manifest = json.loads(manifest)
        except ValueError as exc:
            raise SignatureError(f"manifest is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise SignatureError("manifest must be a JSON object")
    if manifest.get("signature_alg") != "ed25519":
        raise SignatureError(f"unsupported signature_alg {manifest.get('signature_alg')!r}")
    key = public_key if isinstance(public_key, Ed25519PublicKey) else load_public_key(public_key)
    try:
        sig = base64.b64decode(str(manifest.get("signature", "")), validate=True)
        key.verify(sig, canonical_bytes(manifest))
    except (InvalidSignature, ValueError) as exc:
        raise SignatureError("manifest signature does not verify") from exc
    if model_bytes is not None:
        if len(model_bytes) != manifest.get("size"):
            raise SignatureError(f"model size {len(model_bytes)} != manifest size")
        if hashlib.sha256(model_bytes).hexdigest() != manifest.get("sha256"):
            raise SignatureError("model sha256 does not match the manifest")
    return manifest


def manifest_path(model_path: str | Path) -> Path:
    p = Path(model_path)
    return p.with_name(p.name + ".manifest.json")


def sign_model(model_path: str | Path, key_path: str | Path,
               targets: list[str] | None = None) -> Path:
    """Write ``MODEL.manifest.json`` next to the model, signed with ``key_path``."""
    from export.onnx_meta import get_meta, load_model

    model_path = Path(model_path)
    blob = model_path.read_bytes()
    meta = get_meta(load_model(model_path))
    golden = [{"window": [list(r) for r in g.window], "raw_score": g.raw_score}
              for g in meta.golden]
    manifest = build_manifest(blob, name=meta.name, version=meta.version,
                              file=model_path.name, golden=golden, targets=targets or [])
    signed = sign_manifest(manifest, load_private_key(key_path))
    out = manifest_path(model_path)
    out.write_text(json.dumps(signed, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out
