"""Helpers for the exporter tests: a small synthetic sin/cos + noise dataset and tiny
training configs (a few epochs, window 16) so every model fits in seconds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml

FEATURES = ("temperature", "vibration", "pressure")
WINDOW = 16


def synthetic_rows(n: int = 1200, seed: int = 0) -> np.ndarray:
    """Normal data: three periodic channels with different periods, plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.float64)
    clean = np.c_[20 + 2 * np.sin(t / 8), np.cos(t / 13), 5 + 0.5 * np.sin(t / 5)]
    return clean + 0.05 * rng.normal(size=clean.shape) * np.array([2.0, 1.0, 0.5])


def write_csv(path: Path, rows: np.ndarray, sep: str = ";") -> Path:
    """SKAB-like CSV: datetime first, feature columns, anomaly/changepoint labels last."""
    header = sep.join(["datetime", *FEATURES, "anomaly", "changepoint"])
    lines = [header]
    for i, row in enumerate(rows):
        stamp = f"2020-01-01 00:{i // 60 % 60:02d}:{i % 60:02d}"
        lines.append(sep.join([stamp, *(f"{v:.6f}" for v in row), "0", "0"]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


TINY_MODEL: dict[str, dict[str, Any]] = {
    "dense": {"hidden": [32], "latent": 8},
    "conv": {"channels": [8, 8], "kernel_size": 3, "latent": 4},
    "lstm": {"hidden": 16, "latent": 8},
    "transformer": {"d_model": 16, "n_heads": 4, "encoder_layers": 1, "decoder_layers": 1,
                    "dim_feedforward": 32, "latent": 8, "dropout": 0.1},
    "vae": {"hidden": [32, 16], "latent": 6, "dropout": 0.1, "beta": 0.1},
    "pca": {"n_components": 6},
    "ensemble": {"n_estimators": 8, "max_samples": 300},
}


def tiny_config(arch: str, **training: Any) -> dict[str, Any]:
    return {
        "name": f"tiny-{arch}",
        "version": "0.1.0",
        "architecture": arch,
        "data": {"window": WINDOW, "stride": 4, "val_fraction": 0.25},
        "training": {"epochs": 4, "batch_size": 32, "learning_rate": 3e-3, "patience": 3,
                     "seed": 0, "threads": 1, **training},
        "model": TINY_MODEL[arch],
    }


def write_config(path: Path, cfg: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path



def inject_spikes(windows: np.ndarray, scale: np.ndarray, seed: int = 0) -> np.ndarray:
    """Add a ±(3..5)·scale spike to one random point and channel of each window."""
    rng = np.random.default_rng(seed)
    out = windows.copy()
    for w in out:
        t, c = rng.integers(1, w.shape[0] - 1), rng.integers(0, w.shape[1])
        w[t, c] += rng.choice([-1, 1]) * rng.uniform(3, 5) * scale[c]
    return out
