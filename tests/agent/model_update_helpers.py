"""Builders for the model-update tests: tiny PCA models, keys, signed manifests, a signal."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from export.pca_ae import build_pca_model
from export.signing import build_manifest, sign_manifest
from tests.agent.helpers import meta_of, with_meta

FEATURES = ("temp", "vib")


def signal_row(i: int) -> tuple[float, float]:
    """A quiet, deterministic two-channel signal (the 'normal' the models learn)."""
    noise = math.sin(i * 12.9898) * 43758.5453 % 1.0 - 0.5
    return (20.0 + math.sin(i / 5.0) + 0.05 * noise, 1.0 + 0.1 * math.cos(i / 5.0) + 0.01 * noise)


@functools.cache
def model_blob(version: str = "1.0.0", features: tuple[str, ...] = FEATURES,
               n_components: int = 3, name: str = "pca-ae") -> bytes:
    rows = np.array([signal_row(i) for i in range(600)])
    if len(features) != 2:
        rows = np.c_[rows, rows[:, :1] * 0.5][:, : len(features)]
    return build_pca_model(rows, features, window=8, n_components=n_components, name=name,
                           version=version)


def storm_blob(version: str) -> bytes:
    """Same graph, a tiny threshold: every window scores ~1 (an alert storm)."""
    return with_meta(model_blob(version), threshold=1e-12)


def bad_golden_blob(version: str) -> bytes:
    blob = model_blob(version)
    meta = meta_of(blob)
    golden = tuple(dataclasses.replace(g, raw_score=g.raw_score * 5 + 1.0) for g in meta.golden)
    return with_meta(blob, golden=golden)


def keypair(dir_: Path, name: str = "ops") -> tuple[Ed25519PrivateKey, Path]:
    key = Ed25519PrivateKey.generate()
    pub = dir_ / f"{name}.pub.pem"
    pub.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return key, pub


def manifest(blob: bytes, key: Ed25519PrivateKey | None, targets: tuple[str, ...] = (),
             **over: Any) -> dict[str, Any]:
    meta = meta_of(blob)
    golden = [{"window": [list(r) for r in g.window], "raw_score": g.raw_score}
              for g in meta.golden]
    m = build_manifest(blob, name=meta.name, version=meta.version, file="model.onnx",
                       golden=golden, targets=list(targets))
    m.update(over)
    return sign_manifest(m, key) if key is not None else m


def write_model(dir_: Path, name: str, blob: bytes, man: dict[str, Any]) -> Path:
    p = dir_ / name
    p.write_bytes(blob)
    p.with_name(p.name + ".manifest.json").write_text(json.dumps(man), encoding="utf-8")
    return p
