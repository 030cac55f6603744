"""The SKAB outlier-track metric and its sanity references (see SKAB_PROTOCOL.md).

* Data: the 34 scored files of ``../shared/datasets/skab`` (``valve1/`` 16, ``valve2/`` 4,
  ``other/`` 14), read with the agent's own :func:`agent.csvio.read_table`; the first
  :data:`N_TRAIN` rows of a file are training data, every later row is test data.
* Metric: one confusion matrix summed over the test rows of all files (a micro-average
  over points), F1 = 2TP / (2TP + FP + FN), FAR % = 100 FP / (FP + TN),
  MAR % = 100 FN / (FN + TP), each rounded to 2 decimals.
* References: ``always alarm`` (F1 ~0.70, FAR 100, MAR 0), ``never alarm`` (0, 0, 100) and
  the repository's Hotelling T² rule reimplemented (F1 0.66, FAR 19.21, MAR 42.60).

Nothing here looks at labels except :func:`confusion` / :func:`evaluate`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from agent.csvio import Table, read_table

N_TRAIN = 400
GROUPS = ("valve1", "valve2", "other")
SENSORS = (
    "Accelerometer1RMS", "Accelerometer2RMS", "Current", "Pressure", "Temperature",
    "Thermocouple", "Voltage", "Volume Flow RateRMS",
)
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "skab"


def data_dir(path: str | Path | None = None) -> Path:
    """The SKAB copy: ``path``, ``$SKAB_DIR`` or ``../shared/datasets/skab``."""
    if path is not None:
        return Path(path)
    env = os.environ.get("SKAB_DIR")
    return Path(env) if env else DEFAULT_DATA


def available(path: str | Path | None = None) -> bool:
    d = data_dir(path)
    return all((d / g).is_dir() for g in GROUPS)


@dataclass(frozen=True)
class SkabFile:
    key: str  # "valve1/0"
    path: Path
    table: Table

    @property
    def labels(self) -> np.ndarray:
        return self.table.labels["anomaly"].astype(np.int8)

    def sensors(self) -> np.ndarray:
        """(rows, 8) sensor values in :data:`SENSORS` order."""
        idx = [self.table.columns.index(c) for c in SENSORS]
        return self.table.values[:, idx]


def list_files(path: str | Path | None = None) -> list[tuple[str, Path]]:
    d = data_dir(path)
    out = []
    for g in GROUPS:
        files = sorted((d / g).glob("*.csv"), key=lambda p: int(p.stem))
        out.extend((f"{g}/{p.stem}", p) for p in files)
    return out


def load_files(path: str | Path | None = None) -> list[SkabFile]:
    files = [SkabFile(k, p, read_table(p)) for k, p in list_files(path)]
    if len(files) != 34:
        raise RuntimeError(f"{data_dir(path)}: expected 34 SKAB files, found {len(files)}")
    return files


# --------------------------------------------------------------------------- metric


@dataclass(frozen=True)
class Confusion:
    tp: int = 0
    tn: int = 0
    fp: int = 0
    fn: int = 0

    def __add__(self, other: Confusion) -> Confusion:
        return Confusion(self.tp + other.tp, self.tn + other.tn, self.fp + other.fp,
                         self.fn + other.fn)

    @property
    def f1(self) -> float:
        d = 2 * self.tp + self.fp + self.fn
        return round(2 * self.tp / d, 2) if d else 0.0

    @property
    def far(self) -> float:
        d = self.fp + self.tn
        return round(100.0 * self.fp / d, 2) if d else 0.0

    @property
    def mar(self) -> float:
        d = self.fn + self.tp
        return round(100.0 * self.fn / d, 2) if d else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self) | {"F1": self.f1, "FAR": self.far, "MAR": self.mar}

    def __str__(self) -> str:
        return f"F1 {self.f1:.2f}  FAR {self.far:6.2f} %  MAR {self.mar:6.2f} %"


def confusion(labels: np.ndarray, alerts: np.ndarray, n_train: int = N_TRAIN) -> Confusion:
    """Counts over the test rows (row index >= ``n_train``) of one file."""
    y = np.asarray(labels)[n_train:].astype(bool)
    p = np.asarray(alerts)[n_train:].astype(bool)
    if y.shape != p.shape:
        raise ValueError(f"{len(p)} predictions for {len(y)} test rows")
    return Confusion(
        tp=int(np.sum(y & p)), tn=int(np.sum(~y & ~p)), fp=int(np.sum(~y & p)),
        fn=int(np.sum(y & ~p)),
    )


def evaluate(
    files: Iterable[SkabFile], alerts: Mapping[str, np.ndarray]
) -> tuple[Confusion, dict[str, Confusion]]:
    """Micro-averaged confusion over all files, plus the per-file confusions."""
    per = {f.key: confusion(f.labels, alerts[f.key]) for f in files}
    total = sum(per.values(), Confusion())
    return total, per


# --------------------------------------------------------------------------- references


def always_alarm(f: SkabFile) -> np.ndarray:
    return np.ones(len(f.labels), dtype=np.int8)


def never_alarm(f: SkabFile) -> np.ndarray:
    return np.zeros(len(f.labels), dtype=np.int8)


def f_quantile_grid(p: float, d1: int, d2: int) -> float:
    """The repository's F quantile: the last point of linspace(0, 15, 10000) with cdf < p."""
    from scipy import stats

    grid = np.linspace(0, 15, 10000)
    return float(grid[stats.f.cdf(grid, d1, d2) < p][-1])


def t2_alerts(f: SkabFile, p_value: float = 0.999, factor: float = 2.0,
              median_window: int = 5) -> np.ndarray:
    """SKAB's Hotelling T² rule (core/t2.py + notebooks/t2_SKAB.ipynb), reimplemented.

    Standardise on the training rows (columns constant there dropped), T² with the
    inverse training covariance, trailing median over ``median_window`` rows of the whole
    file (the repository predicts on the whole file), alert when T² > factor x UCL.
    """
    x = f.sensors()
    train = x[:N_TRAIN]
    keep = np.any(train != train[0], axis=0)
    x, train = x[:, keep], train[:, keep]
    mean, std = train.mean(axis=0), train.std(axis=0)  # StandardScaler: ddof = 0
    z = (x - mean) / std
    inv = np.linalg.inv(np.cov(z[:N_TRAIN].T))
    t2 = np.einsum("ij,jk,ik->i", z, inv, z)
    n, m = N_TRAIN, z.shape[1]
    ucl = m * (n - 1) * (n + 1) / (n * (n - m)) * f_quantile_grid(p_value, m, n - m)
    med = trailing_median(t2, median_window)
    return (med > factor * ucl).astype(np.int8)  # NaN (first rows) compares False


def trailing_median(x: np.ndarray, w: int) -> np.ndarray:
    """pandas ``rolling(w).median()``: NaN for the first w-1 rows."""
    out = np.full(len(x), np.nan)
    if len(x) >= w:
        win = np.lib.stride_tricks.sliding_window_view(x, w)
        out[w - 1 :] = np.median(win, axis=1)
    return out


REFERENCES: dict[str, Callable[[SkabFile], np.ndarray]] = {
    "always alarm": always_alarm,
    "never alarm": never_alarm,
    "T² (reimplemented)": t2_alerts,
}

# Published leaderboard, outlier track: (F1, FAR %, MAR %, looks ahead)
LEADERBOARD: list[tuple[str, float, float, float, bool]] = [
    ("Conv-AE", 0.78, 13.55, 28.02, True),
    ("MSET", 0.78, 39.73, 14.13, True),
    ("T²+Q (PCA)", 0.76, 26.62, 24.92, False),
    ("LSTM-AE", 0.74, 29.96, 25.92, True),
    ("T²", 0.66, 19.21, 42.60, False),
    ("LSTM-VAE", 0.56, 9.13, 55.03, False),
    ("Vanilla LSTM", 0.54, 12.54, 59.53, False),
    ("Vanilla AE", 0.39, 2.59, 75.15, False),
    ("Isolation Forest", 0.29, 2.56, 82.89, False),
]


def reference_scores(files: list[SkabFile]) -> dict[str, Confusion]:
    return {
        name: evaluate(files, {f.key: fn(f) for f in files})[0] for name, fn in REFERENCES.items()
    }


if __name__ == "__main__":  # pragma: no cover
    fs = load_files()
    for name, c in reference_scores(fs).items():
        print(f"{name:22s} {c}  {c.as_dict()}")
