"""Verification of signed model manifests on the gateway (no signing here).

A manifest (``docs/model-format.md``, "Signed manifest") is signed with Ed25519 over
:func:`canonical_bytes`: the manifest without its ``signature`` key, serialised with
sorted keys, compact separators and ASCII escapes. This is the one definition;
``export.signing`` imports it, so what the exporter signs is what the agent checks.

Public keys come from the agent config (``models.public_keys``: PEM files written by
``edge-export keygen``). A key is named by its id: the first 16 hex digits of SHA-256
over the raw 32-byte public key, as written into the manifest's ``key_id``.

>>> canonical_bytes({"b": 1, "a": "é", "signature": "x"})
b'{"a":"\\\\u00e9","b":1}'
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.errors import ConfigError, ModelUpdateError, Reason

SIGNATURE_ALG = "ed25519"


def canonical_bytes(manifest: Mapping[str, Any]) -> bytes:
    """The exact bytes that are signed: manifest minus ``signature``, sorted, compact."""
    body = {k: v for k, v in manifest.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def key_id(key: Ed25519PublicKey) -> str:
    """First 16 hex digits of SHA-256 over the raw 32-byte public key."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def parse_public_key(data: bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM (SubjectPublicKeyInfo) or its raw 32 bytes."""
    if len(data) == 32:
        return Ed25519PublicKey.from_public_bytes(data)
    key = serialization.load_pem_public_key(data)  # ValueError on garbage
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"not an Ed25519 key ({type(key).__name__})")
    return key


def is_signed(manifest: Mapping[str, Any]) -> bool:
    return "signature" in manifest or "signature_alg" in manifest


class KeyRing:
    """The trusted public keys, by key id.

    >>> from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    >>> priv = Ed25519PrivateKey.generate()
    >>> ring = KeyRing([priv.public_key()])
    >>> m = {"name": "m", "key_id": key_id(priv.public_key()), "signature_alg": "ed25519"}
    >>> m["signature"] = base64.b64encode(priv.sign(canonical_bytes(m))).decode()
    >>> ring.verify(m) == m["key_id"]
    True
    """

    def __init__(self, keys: Iterable[Ed25519PublicKey] = ()) -> None:
        self.keys = {key_id(k): k for k in keys}

    @classmethod
    def from_files(cls, paths: Iterable[Path], key: str = "models.public_keys") -> KeyRing:
        """Load PEM files; a missing or foreign key file is a :class:`ConfigError`."""
        keys = []
        for i, p in enumerate(paths):
            try:
                keys.append(parse_public_key(Path(p).read_bytes()))
            except (OSError, ValueError) as exc:
                raise ConfigError(f"{key}[{i}]", f"cannot load Ed25519 public key {p}: {exc}"
                                  ) from exc
        return cls(keys)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(sorted(self.keys))

    def verify(self, manifest: Mapping[str, Any]) -> str:
        """Check the manifest's signature; return the key id that signed it.

        Raises :class:`ModelUpdateError` with reason ``unsigned``, ``unknown_key`` or
        ``bad_signature``.
        """
        if not is_signed(manifest):
            raise ModelUpdateError(Reason.UNSIGNED, "the manifest carries no signature")
        alg = manifest.get("signature_alg")
        if alg != SIGNATURE_ALG:
            raise ModelUpdateError(Reason.BAD_SIGNATURE, f"unsupported signature_alg {alg!r}")
        kid = str(manifest.get("key_id", ""))
        key = self.keys.get(kid)
        if key is None:
            raise ModelUpdateError(Reason.UNKNOWN_KEY,
                                   f"key_id {kid!r} is not a trusted key ({list(self.ids)})")
        try:
            sig = base64.b64decode(str(manifest.get("signature", "")), validate=True)
            key.verify(sig, canonical_bytes(manifest))
        except (InvalidSignature, ValueError) as exc:  # ValueError: bad base64 or NaN
            raise ModelUpdateError(Reason.BAD_SIGNATURE,
                                   f"signature does not verify with key {kid}") from exc
        return kid
