"""``report.png`` (loss curves, validation error histogram with the threshold) and
``report.json``. Uses matplotlib's object API with the Agg canvas (no pyplot state)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def write_png(
    path: str | Path,
    *,
    title: str,
    train_loss: list[float],
    val_loss: list[float],
    val_errors: np.ndarray,
    threshold: float,
    thresholds: dict[str, float],
) -> Path:
    fig = Figure(figsize=(11, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    if train_loss:
        epochs = np.arange(1, len(train_loss) + 1)
        ax1.plot(epochs, train_loss, label="train")
        ax1.plot(epochs, val_loss, label="validation")
        ax1.set_yscale("log")
        ax1.set_xlabel("epoch")
        ax1.set_ylabel("loss (scaled MSE)")
        ax1.legend()
    else:
        ax1.text(0.5, 0.5, "no iterative training\n(closed-form fit)", ha="center",
                 va="center", transform=ax1.transAxes)
    ax1.set_title("loss")
    errors = np.asarray(val_errors, dtype=np.float64)
    ax2.hist(errors, bins=60, color="tab:gray")
    ax2.axvline(threshold, color="tab:red", label=f"threshold {threshold:.4g}")
    for key, value in sorted(thresholds.items()):
        if key.startswith(("quantile_", "pot_")) and value != threshold:
            ax2.axvline(value, color="tab:orange", linestyle="--", label=f"{key} {value:.4g}")
    ax2.set_yscale("log")
    ax2.set_xlabel("raw window error (validation, normal)")
    ax2.set_title("validation reconstruction errors")
    ax2.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


def write_json(path: str | Path, report: dict[str, Any]) -> Path:
    path = Path(path)
    path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path
