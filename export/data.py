"""Reading normal sensor data, fitting the robust scaler and cutting windows.

CSV files may use ``;`` or ``,`` (detected from the header line). Every column
that parses as numbers is a sensor channel except ``anomaly``, ``changepoint``,
``datetime`` and ``timestamp`` (case-insensitive). A directory is read as one
segment per ``*.csv`` file (sorted by name); windows never cross segments.
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.model_meta import Scaler
from export.errors import DataError

EXCLUDED_COLUMNS = frozenset({"anomaly", "changepoint", "datetime", "timestamp"})


@dataclass(frozen=True)
class Dataset:
    """Time-ordered segments ``(N_i, C)`` of raw values, columns named by ``features``."""

    features: tuple[str, ...]
    segments: tuple[np.ndarray, ...]
    sha256: str
    dropped_rows: int = 0

    @property
    def n_rows(self) -> int:
        return sum(len(s) for s in self.segments)


def _csv_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".csv")
        if not files:
            raise DataError(f"{path}: directory holds no .csv files")
        return files
    if not path.is_file():
        raise DataError(f"{path}: no such file or directory")
    return [path]


def _detect_separator(header: str) -> str:
    return ";" if header.count(";") > header.count(",") else ","


def _read_table(path: Path) -> tuple[list[str], list[list[str]]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from exc
    lines = text.splitlines()
    if not lines:
        raise DataError(f"{path}: empty file")
    rows = list(csv.reader(lines, delimiter=_detect_separator(lines[0])))
    header = [h.strip() for h in rows[0]]
    return header, [r for r in rows[1:] if r and any(c.strip() for c in r)]


def _to_float(cell: str) -> float:
    try:
        return float(cell)
    except ValueError:
        return math.nan


def _numeric_columns(header: list[str], rows: list[list[str]]) -> list[str]:
    probe = rows[: min(len(rows), 200)]
    names = []
    for j, name in enumerate(header):
        if name.lower() in EXCLUDED_COLUMNS or not name:
            continue
        values = [_to_float(r[j]) for r in probe if j < len(r)]
        if values and sum(math.isfinite(v) for v in values) >= 0.9 * len(values):
            names.append(name)
    return names


def load_dataset(path: str | Path, features: Sequence[str] | None = None) -> Dataset:
    """Read a CSV file or a directory of CSV files into a :class:`Dataset`.

    Rows with a missing or non-numeric value in a selected column are dropped and counted.
    """
    files = _csv_files(Path(path))
    digest = hashlib.sha256()
    chosen: list[str] | None = list(features) if features else None
    segments = []
    dropped = 0
    for file in files:
        digest.update(file.read_bytes())
        header, rows = _read_table(file)
        if chosen is None:
            chosen = _numeric_columns(header, rows)
            if not chosen:
                raise DataError(f"{file}: no numeric sensor columns")
        missing = [f for f in chosen if f not in header]
        if missing:
            raise DataError(f"{file}: missing feature columns {missing}")
        idx = [header.index(f) for f in chosen]
        table = np.array(
            [[_to_float(r[j]) if j < len(r) else math.nan for j in idx] for r in rows],
            dtype=np.float64,
        ).reshape(len(rows), len(idx))
        ok = np.isfinite(table).all(axis=1)
        dropped += int((~ok).sum())
        segments.append(table[ok])
    assert chosen is not None
    return Dataset(tuple(chosen), tuple(segments), digest.hexdigest(), dropped)


def fit_robust_scaler(rows: np.ndarray, min_scale: float = 1e-6) -> Scaler:
    """Median / IQR per column.

    A column whose IQR is zero (a quantised or mostly constant signal) falls back to
    ``1.349 * std`` (the IQR of a normal distribution with that std); any scale is then
    clamped to at least ``min_scale * max(1, |median|)`` so constant columns stay finite.
    """
    rows = np.asarray(rows, dtype=np.float64)
    center = np.median(rows, axis=0)
    q75, q25 = np.percentile(rows, [75, 25], axis=0)
    scale = q75 - q25
    scale = np.where(scale > 0, scale, 1.349 * rows.std(axis=0))
    floor = min_scale * np.maximum(1.0, np.abs(center))
    scale = np.maximum(scale, floor)
    return Scaler(center=tuple(float(v) for v in center), scale=tuple(float(v) for v in scale))


def apply_scaler(scaler: Scaler, rows: np.ndarray) -> np.ndarray:
    """``(x - center) / scale`` in float32, the arithmetic the agent uses."""
    center = np.asarray(scaler.center, dtype=np.float32)
    scale = np.asarray(scaler.scale, dtype=np.float32)
    return (np.asarray(rows, dtype=np.float32) - center) / scale


def make_windows(rows: np.ndarray, window: int, stride: int = 1) -> np.ndarray:
    """Sliding windows ``(B, window, C)`` with the given stride (empty if too short)."""
    n, c = rows.shape
    if n < window:
        return np.empty((0, window, c), dtype=rows.dtype)
    starts = np.arange(0, n - window + 1, stride)
    return np.stack([rows[s : s + window] for s in starts])


def split_time_ordered(
    dataset: Dataset, val_fraction: float, window: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Split each segment at ``1 - val_fraction`` of its length: train first, validation last."""
    train, val = [], []
    for seg in dataset.segments:
        cut = round(len(seg) * (1.0 - val_fraction))
        train.append(seg[:cut])
        val.append(seg[cut:])
    if sum(len(t) for t in train) < window:
        raise DataError(f"training part has fewer rows than one window ({window})")
    if val_fraction > 0 and all(len(v) < window for v in val):
        raise DataError(f"validation part has fewer rows than one window ({window})")
    return train, val


def windows_from(segments: Sequence[np.ndarray], window: int, stride: int) -> np.ndarray:
    parts = [make_windows(s, window, stride) for s in segments if len(s) >= window]
    if not parts:
        n_features = segments[0].shape[1] if segments else 0
        return np.empty((0, window, n_features))
    return np.concatenate(parts)
