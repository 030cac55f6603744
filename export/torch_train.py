"""The PyTorch training loop: seeded, deterministic, early-stopped, with a tqdm bar."""

from __future__ import annotations

import copy
import os
import sys
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from export.config import TrainConfig
from export.models import build_model, count_params


@dataclass
class TrainResult:
    model: torch.nn.Module
    device: str
    n_params: int
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    best_epoch: int = 0


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but CUDA is not available")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu, cuda or auto, got {device!r}")
    return device


def _loss(model: torch.nn.Module, xb: torch.Tensor, beta: float) -> torch.Tensor:
    recon = model(xb)
    loss = torch.mean((recon - xb) ** 2)
    kl = getattr(model, "last_kl", None)
    if model.training and kl is not None:
        loss = loss + beta * kl / (xb.shape[1] * xb.shape[2])
    return loss


def _val_loss(model: torch.nn.Module, val: torch.Tensor, batch: int) -> float:
    model.eval()
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(val), batch):
            xb = val[i : i + batch]
            total += float(torch.sum((model(xb) - xb) ** 2))
    return total / max(val.numel(), 1)


def train_torch(
    cfg: TrainConfig, train_scaled: np.ndarray, val_scaled: np.ndarray,
    device: str = "cpu", progress: bool = True,
) -> TrainResult:
    """Train ``cfg.architecture`` on scaled windows; returns the best model (CPU, eval)."""
    device = resolve_device(device)
    t = cfg.training
    _, window, n_features = train_scaled.shape
    # CPU kernels are deterministic for a fixed thread count; on CUDA ask for
    # deterministic kernels (this import-heavy switch is skipped on CPU on purpose).
    old_det = torch.are_deterministic_algorithms_enabled()
    old_threads = torch.get_num_threads()
    if t.threads:
        torch.set_num_threads(t.threads)
    if device == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(t.seed)
            if device == "cuda":
                torch.cuda.manual_seed_all(t.seed)
            return _fit(cfg, train_scaled, val_scaled, device, progress, window, n_features)
    finally:
        torch.set_num_threads(old_threads)
        if device == "cuda":
            torch.use_deterministic_algorithms(old_det)


def _fit(
    cfg: TrainConfig, train_scaled: np.ndarray, val_scaled: np.ndarray, device: str,
    progress: bool, window: int, n_features: int,
) -> TrainResult:
    t = cfg.training
    model = build_model(cfg.architecture, window, n_features, cfg.model).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=t.learning_rate, weight_decay=t.weight_decay)
    beta = float(getattr(cfg.model, "beta", 0.0))
    train = torch.as_tensor(train_scaled, dtype=torch.float32, device=device)
    val = torch.as_tensor(val_scaled, dtype=torch.float32, device=device)
    rng = np.random.default_rng(t.seed)
    result = TrainResult(model=model, device=device, n_params=count_params(model))
    best, best_state, stale = float("inf"), copy.deepcopy(model.state_dict()), 0
    bar = tqdm(range(1, t.epochs + 1), desc=f"train {cfg.architecture}", unit="epoch",
               file=sys.stderr, disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        order = torch.as_tensor(rng.permutation(len(train)), device=device)
        total = 0.0
        for i in range(0, len(train), t.batch_size):
            xb = train[order[i : i + t.batch_size]]
            opt.zero_grad()
            loss = _loss(model, xb, beta)
            loss.backward()
            opt.step()
            total += loss.item() * len(xb)
        result.train_loss.append(total / len(train))
        result.val_loss.append(_val_loss(model, val, 256) if len(val) else result.train_loss[-1])
        bar.set_postfix(loss=f"{result.train_loss[-1]:.4g}", val=f"{result.val_loss[-1]:.4g}")
        if result.val_loss[-1] < best - t.min_delta:
            best, best_state, stale = result.val_loss[-1], copy.deepcopy(model.state_dict()), 0
            result.best_epoch = epoch
        else:
            stale += 1
            if stale >= t.patience:
                break
    bar.close()
    model.load_state_dict(best_state)
    result.model = model.to("cpu").eval()
    return result
