"""``edge-export train`` with ``architecture: next_event``: a DeepLog-style next-event LSTM.

Data: CSV ``timestamp,source,event[,session]`` (a file or a directory of them; a header
line is optional), normal operation only. Each source is its own sequence, in file order;
with a ``session`` column (a workflow instance, batch or job id; empty for none) each
``(source, session)`` is, as DeepLog keys its sequences by session / block id, and the
agent does the same when an event carries ``attrs["session"]``. The last
``data.val_fraction`` of every source's rows is held out (a history lands in validation
when the event it predicts does).

Model: event id -> embedding -> LSTM -> linear -> softmax over the vocabulary, trained
with cross-entropy to predict event ``t`` from events ``t-h .. t-1`` (``h`` =
``data.window``, left-padded with ``<pad>`` at the start of a source). A share
``unknown_rate`` of history ids is replaced by ``<unknown>`` while training, and a share
``unknown_insert_rate`` of histories gets one ``<unknown>`` inserted (older events shift
out), so one never-seen event -- replacing a step or arriving between two -- does not
derail the predictions after it. ``model.min_prob`` goes into the metadata
(``thresholds["min_prob"]``): the agent's default probability floor.

RUN_DIR gets ``model.onnx`` (input ``(batch, h)`` int64, output ``(batch, vocab)``
probabilities, metadata ``kind: next_event`` with ``vocab``, ``top_k`` and golden
histories), ``meta.json``, ``report.json`` (top-k accuracies on validation),
``report.png`` and ``model.pt``. The torch and onnxruntime probabilities are compared on
validation histories before anything is written.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from agent.events.vocab import PAD_ID, UNKNOWN_ID, Vocab
from agent.model_meta import NEXT_EVENT, GoldenVector, ModelMeta, Scaler
from export import report
from export.config import NextEventParams, TrainConfig
from export.errors import DataError, ModelFileError
from export.finalize import created_at, frameworks
from export.onnx_meta import save_model, set_meta
from export.to_onnx import OPSET, trace_to_onnx


class NextEventNet(nn.Module):
    """Embedding -> LSTM -> linear; ``forward`` returns logits, ``probabilities`` softmax."""

    def __init__(self, vocab: int, params: NextEventParams) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, params.embedding)
        self.lstm = nn.LSTM(params.embedding, params.hidden, num_layers=params.num_layers,
                            batch_first=True)
        self.out = nn.Linear(params.hidden, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(self.embed(x))
        return self.out(h[:, -1, :])


class _Probabilities(nn.Module):
    def __init__(self, net: NextEventNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x), dim=-1)


def load_event_sessions(path: str | Path) -> tuple[dict[str, list[tuple[str, str]]], str]:
    """Per-source ``(session, event)`` lists in file order (session ``""`` when the CSV has
    no fourth column or it is empty), and the SHA-256 of the bytes read."""
    p = Path(path)
    files = sorted(p.rglob("*.csv")) if p.is_dir() else [p]
    if not files or not all(f.is_file() for f in files):
        raise DataError(f"{p}: no event CSV files")
    seqs: dict[str, list[tuple[str, str]]] = {}
    sha = hashlib.sha256()
    for f in files:
        data = f.read_bytes()
        sha.update(data)
        for i, row in enumerate(csv.reader(io.StringIO(data.decode("utf-8")))):
            if not row or (i == 0 and row[0].strip().lower() in ("timestamp", "ts", "time")):
                continue
            if len(row) not in (3, 4) or not row[2].strip():
                raise DataError(f"{f}: line {i + 1}: expected timestamp,source,event[,session]")
            session = row[3].strip() if len(row) == 4 else ""
            seqs.setdefault(row[1].strip(), []).append((session, row[2].strip()))
    if not seqs:
        raise DataError(f"{p}: no events")
    return seqs, sha.hexdigest()


def load_event_sequences(path: str | Path) -> tuple[dict[str, list[str]], str]:
    """Per-source event lists from CSV file(s) (sessions ignored), and the SHA-256."""
    seqs, sha = load_event_sessions(path)
    return {s: [e for _, e in rows] for s, rows in seqs.items()}, sha


def session_windows(rows: list[tuple[str, str]], vocab: Vocab, history: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(histories, targets, row index of each target) of one source, every session its own
    sequence (left-padded at the session's first event)."""
    by_session: dict[str, list[int]] = {}
    for i, (session, _) in enumerate(rows):
        by_session.setdefault(session, []).append(i)
    xs, ys, pos = [], [], []
    for idx in by_session.values():
        x, y = windows(vocab.ids(rows[i][1] for i in idx), history)
        xs.append(x)
        ys.append(y)
        pos.append(np.asarray(idx, dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(pos)


def windows(ids: list[int], history: int) -> tuple[np.ndarray, np.ndarray]:
    """(histories ``(n, h)``, targets ``(n,)``) of one sequence, left-padded with <pad>."""
    padded = np.concatenate([np.full(history, PAD_ID, dtype=np.int64),
                             np.asarray(ids, dtype=np.int64)])
    n = len(ids)
    idx = np.arange(n)[:, None] + np.arange(history)[None, :]
    return padded[idx], padded[history:]


def insert_unknown(xb: np.ndarray, rng: np.random.Generator, rate: float) -> None:
    """In place: a share ``rate`` of rows gets ``<unknown>`` inserted at a random position
    after the padding (the last position included: an alarm just before the target),
    older ids shifting left. Rows of padding only are left alone.

    >>> x = np.array([[0, 0, 4, 5]] * 3)
    >>> insert_unknown(x, np.random.default_rng(3), 0.99); x.tolist()
    [[0, 4, 5, 1], [0, 4, 1, 5], [0, 1, 4, 5]]
    """
    h = xb.shape[1]
    for r in np.flatnonzero(rng.random(len(xb)) < rate):
        n_pad = int(np.sum(xb[r] == PAD_ID))
        if n_pad >= h:
            continue
        j = int(rng.integers(max(n_pad - 1, 0), h))
        xb[r, :j] = xb[r, 1:j + 1]
        xb[r, j] = UNKNOWN_ID


def export_next_event(net: NextEventNet, history: int) -> onnx.ModelProto:
    dummy = torch.zeros(2, history, dtype=torch.int64)
    return trace_to_onnx(_Probabilities(net), dummy, "input", "probabilities")


def _ort_probs(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    out = [sess.run(None, {"input": x[i:i + 1024]})[0] for i in range(0, len(x), 1024)]
    return np.concatenate(out).astype(np.float64)


def topk_accuracy(probs: np.ndarray, targets: np.ndarray, ks: tuple[int, ...]) -> dict[str, float]:
    """Share of targets among the k most likely ids (``<pad>`` excluded)."""
    p = probs.copy()
    p[:, PAD_ID] = -1.0
    rank = (p > p[np.arange(len(p)), targets][:, None]).sum(axis=1)
    return {f"top_{k}": float(np.mean(rank < k)) for k in ks}


def train_next_event(cfg: TrainConfig, data: str | Path, out: str | Path, *,
                     device: str = "cpu", progress: bool = True, atol: float = 1e-4) -> Any:
    """Train, export, check and write RUN_DIR; returns :class:`export.train.RunResult`."""
    from export.train import RunResult

    params: NextEventParams = cfg.model
    t_cfg = cfg.training
    started = time.perf_counter()
    run_dir = Path(out)
    run_dir.mkdir(parents=True, exist_ok=True)
    seqs, data_sha = load_event_sessions(data)
    h = cfg.data.window
    split = {s: max(1, int(len(ev) * (1 - cfg.data.val_fraction))) for s, ev in seqs.items()}
    vocab = Vocab.build((e for s, ev in seqs.items() for _, e in ev[: split[s]]),
                        max_size=params.max_vocab, min_count=params.min_count)
    parts = {"train": [], "val": []}  # type: dict[str, list[tuple[np.ndarray, np.ndarray]]]
    n_sessions = 0
    for s, ev in seqs.items():
        n_sessions += len({session for session, _ in ev})
        x, y, pos = session_windows(ev, vocab, h)
        tr = pos < split[s]
        parts["train"].append((x[tr], y[tr]))
        parts["val"].append((x[~tr], y[~tr]))
    x_tr = np.concatenate([a for a, _ in parts["train"]])
    y_tr = np.concatenate([b for _, b in parts["train"]])
    x_va = np.concatenate([a for a, _ in parts["val"]])
    y_va = np.concatenate([b for _, b in parts["val"]])
    if len(x_tr) < 10 or len(x_va) < 1:
        raise DataError(f"{data}: too few events ({len(x_tr)} train, {len(x_va)} validation)")
    if t_cfg.max_train_windows and len(x_tr) > t_cfg.max_train_windows:
        keep = np.linspace(0, len(x_tr) - 1, t_cfg.max_train_windows).astype(int)
        x_tr, y_tr = x_tr[keep], y_tr[keep]

    torch.manual_seed(t_cfg.seed)
    rng = np.random.default_rng(t_cfg.seed)
    if t_cfg.threads:
        torch.set_num_threads(t_cfg.threads)
    dev = "cuda" if device in ("cuda", "auto") and torch.cuda.is_available() else "cpu"
    net = NextEventNet(len(vocab), params).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=t_cfg.learning_rate,
                           weight_decay=t_cfg.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    xv, yv = torch.as_tensor(x_va, device=dev), torch.as_tensor(y_va, device=dev)
    train_loss: list[float] = []
    val_loss: list[float] = []
    best, best_state, bad_epochs, best_epoch = float("inf"), None, 0, 0
    for epoch in range(t_cfg.epochs):
        net.train()
        order = rng.permutation(len(x_tr))
        total = 0.0
        for i in range(0, len(order), t_cfg.batch_size):
            b = order[i:i + t_cfg.batch_size]
            xb = x_tr[b].copy()
            if params.unknown_rate > 0:
                mask = (rng.random(xb.shape) < params.unknown_rate) & (xb != PAD_ID)
                xb[mask] = UNKNOWN_ID
            if params.unknown_insert_rate > 0:
                insert_unknown(xb, rng, params.unknown_insert_rate)
            xb_t = torch.as_tensor(xb, device=dev)
            yb_t = torch.as_tensor(y_tr[b], device=dev)
            opt.zero_grad()
            loss = loss_fn(net(xb_t), yb_t)
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
        net.eval()
        with torch.no_grad():
            vl = float(loss_fn(net(xv), yv))
        train_loss.append(total / len(x_tr))
        val_loss.append(vl)
        if progress:
            print(f"epoch {epoch + 1}: train {train_loss[-1]:.4f} val {vl:.4f}", flush=True)
        if vl < best - t_cfg.min_delta:
            best, bad_epochs, best_epoch = vl, 0, epoch + 1
            best_state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
        else:
            bad_epochs += 1
            if bad_epochs >= t_cfg.patience:
                break
    assert best_state is not None
    net.load_state_dict(best_state)
    net = net.to("cpu").eval()
    torch.save({"state_dict": best_state, "architecture": NEXT_EVENT, "vocab": len(vocab),
                "params": dataclasses.asdict(params), "history": h}, run_dir / "model.pt")

    graph = export_next_event(net, h)
    with torch.no_grad():
        ref = torch.softmax(net(torch.as_tensor(x_va)), dim=-1).numpy().astype(np.float64)
    got = _ort_probs(graph, x_va)
    diff = float(np.max(np.abs(got - ref)))
    if diff > atol:
        raise ModelFileError(f"torch and ONNX probabilities differ by {diff:.3g} > atol {atol:g}")
    golden_idx = np.linspace(0, len(x_va) - 1, min(4, len(x_va))).astype(int)
    golden = tuple(GoldenVector(window=tuple((float(v),) for v in x_va[i]),
                                raw_score=float(got[i].max())) for i in golden_idx)
    acc = topk_accuracy(got, y_va, (1, 3, 5, params.top_k))
    meta = ModelMeta(
        name=cfg.name, version=cfg.version, features=("event",), window=h,
        scaler=Scaler(center=(0.0,), scale=(1.0,)), threshold=1.0, kind=NEXT_EVENT,
        architecture=NEXT_EVENT, output="probabilities", vocab=vocab.tokens,
        top_k=params.top_k, thresholds={**acc, "min_prob": params.min_prob},
        training_data_sha256=data_sha, created_at=created_at(), opset=OPSET,
        frameworks=frameworks(torch=torch.__version__), golden=golden,
    )
    set_meta(graph, meta)
    model_path = save_model(graph, run_dir / "model.onnx")
    from agent.events.sequence import NextEventModel

    NextEventModel.from_path(model_path)  # the agent's own loader, golden vectors included
    (run_dir / "meta.json").write_text(
        json.dumps(json.loads(meta.to_json()), indent=2, sort_keys=True) + "\n",
        encoding="utf-8")
    p_obs = got[np.arange(len(got)), y_va]
    rep = {
        "name": cfg.name, "version": cfg.version, "architecture": NEXT_EVENT,
        "config": dataclasses.asdict(cfg), "sources": sorted(seqs),
        "events": sum(len(v) for v in seqs.values()), "sessions": n_sessions,
        "vocab": len(vocab),
        "history": h, "top_k": params.top_k, "train_windows": len(x_tr),
        "val_windows": len(x_va), "train_loss": train_loss, "val_loss": val_loss,
        "best_epoch": best_epoch, "val_accuracy": acc, "device": dev,
        "n_params": sum(p.numel() for p in net.parameters()),
        "model_bytes": model_path.stat().st_size, "max_abs_diff": diff,
        "max_abs_diff_against": "torch", "atol": atol, "golden": len(golden),
        "threshold": 1.0, "thresholds": acc, "seconds": time.perf_counter() - started,
    }
    report.write_json(run_dir / "report.json", rep)
    report.write_png(run_dir / "report.png", title=f"{cfg.name} (next_event)",
                     train_loss=train_loss, val_loss=val_loss,
                     val_errors=-np.log(np.maximum(p_obs, 1e-12)), threshold=float(
                         -np.log(max(np.sort(p_obs)[int(0.01 * len(p_obs))], 1e-12))),
                     thresholds={})
    return RunResult(run_dir, model_path, meta, rep)
