"""``edge-export train``: normal data + config -> RUN_DIR with a complete model file.

RUN_DIR gets ``model.onnx`` (metadata and golden vectors embedded; for autoencoders the
fused form, see :mod:`export.fuse`, with the reconstruction graph in
``model-unfused.onnx``), ``meta.json``,
``report.json``, ``report.png`` and, for PyTorch architectures, ``model.pt`` (state_dict
plus architecture, for ``edge-export verify``). Torch is imported only for the torch
architectures, so ``pca`` and ``ensemble`` runs work on a host without it.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from agent.model_meta import ModelMeta
from export import data as data_mod
from export import report
from export.config import TORCH_ARCHITECTURES, TrainConfig, load_config
from export.errors import ModelFileError
from export.finalize import finalize, frameworks
from export.fuse import fuse as fuse_model
from export.onnx_meta import load_model, read_meta, save_model
from export.verify import DEFAULT_ATOL, verify_file


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    model_path: Path
    meta: ModelMeta
    report: dict[str, Any]
    unfused_path: Path | None = None  # model-unfused.onnx: the reconstruction graph

    @property
    def reconstruction_path(self) -> Path:
        """The file whose output is the model's own (reconstruction or score) output."""
        return self.unfused_path or self.model_path


@dataclass
class _Fitted:
    graph: onnx.ModelProto
    train_loss: list[float]
    val_loss: list[float]
    n_params: int
    extra: dict[str, Any]
    reference_diff: float | None = None


def _subsample(windows: np.ndarray, limit: int) -> np.ndarray:
    if limit <= 0 or len(windows) <= limit:
        return windows
    return windows[np.linspace(0, len(windows) - 1, limit).astype(int)]


def _onnx_outputs(graph: onnx.ModelProto, scaled: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {graph.graph.input[0].name: scaled.astype(np.float32)})[0]


def _graph_params(graph: onnx.ModelProto) -> int:
    """Numbers stored in the graph: initializers plus numeric node attributes (trees, SVs)."""
    n = sum(int(np.prod(t.dims)) for t in graph.graph.initializer)
    return n + sum(len(a.floats) + len(a.ints) for node in graph.graph.node
                   for a in node.attribute)


def _fit_pca(cfg: TrainConfig, train_s: np.ndarray, val_s: np.ndarray) -> _Fitted:
    from export.pca_ae import fit_pca, pca_graph

    _, window, n_features = train_s.shape
    p, mean = fit_pca(train_s, cfg.model.n_components, cfg.model.variance)
    graph = pca_graph(p, mean, window, n_features)
    probe = val_s[:256]
    flat = probe.reshape(len(probe), -1).astype(np.float64) - mean
    ref = ((flat @ p) @ p.T + mean).reshape(probe.shape)
    diff = float(np.max(np.abs(_onnx_outputs(graph, probe) - ref))) if len(probe) else None
    return _Fitted(graph, [], [], p.size + mean.size, {"n_components": int(p.shape[1])}, diff)


def _fit_ensemble(cfg: TrainConfig, train_s: np.ndarray, val_s: np.ndarray) -> _Fitted:
    from export.ensemble import ensemble_graph, fit_ensemble

    ens = fit_ensemble(train_s, cfg.model, cfg.training.seed)
    _, window, n_features = train_s.shape
    graph = ensemble_graph(ens, window, n_features)
    probe = val_s[:256]
    diff = float(np.max(np.abs(_onnx_outputs(graph, probe) - ens.score(probe))))
    return _Fitted(graph, [], [], _graph_params(graph), {"members": sorted(ens.members)}, diff)


def _fit_torch(cfg: TrainConfig, train_s: np.ndarray, val_s: np.ndarray, device: str,
               progress: bool, run_dir: Path) -> _Fitted:
    from export.to_onnx import export_module, save_checkpoint
    from export.torch_train import train_torch

    res = train_torch(cfg, train_s, val_s, device=device, progress=progress)
    _, window, n_features = train_s.shape
    save_checkpoint(run_dir / "model.pt", res.model, cfg.architecture, window, n_features,
                    cfg.model)
    graph = export_module(res.model, window, n_features)
    extra = {"device": res.device, "best_epoch": res.best_epoch,
             "epochs_run": len(res.train_loss)}
    return _Fitted(graph, res.train_loss, res.val_loss, res.n_params, extra)


def _versions(cfg: TrainConfig) -> dict[str, str]:
    extra = {}
    if cfg.architecture in TORCH_ARCHITECTURES:
        import torch

        extra["torch"] = torch.__version__
    if cfg.architecture == "ensemble":
        import skl2onnx
        import sklearn

        extra.update({"scikit-learn": sklearn.__version__, "skl2onnx": skl2onnx.__version__})
    return frameworks(**extra)


def train_run(
    config: TrainConfig | str | Path,
    data: str | Path,
    out: str | Path,
    device: str = "cpu",
    progress: bool = True,
    atol: float = DEFAULT_ATOL,
    fuse: bool = True,
) -> RunResult:
    """Train, export, calibrate, verify and embed golden vectors; see the module docstring.

    With ``fuse`` (the default) an autoencoder's ``model.onnx`` is the fused form
    (``output: error``, :mod:`export.fuse`) and the verified reconstruction graph is kept
    as ``model-unfused.onnx``.
    """
    cfg = config if isinstance(config, TrainConfig) else load_config(config)
    if cfg.architecture == "next_event":  # event sequences, not numeric windows
        from export.sequence import train_next_event

        return train_next_event(cfg, data, out, device=device, progress=progress, atol=atol)
    started = time.perf_counter()
    run_dir = Path(out)
    run_dir.mkdir(parents=True, exist_ok=True)
    dataset = data_mod.load_dataset(data, cfg.features)
    window, stride = cfg.data.window, cfg.data.stride
    train_rows, val_rows = data_mod.split_time_ordered(dataset, cfg.data.val_fraction, window)
    scaler = data_mod.fit_robust_scaler(np.concatenate(train_rows))
    train_raw = _subsample(data_mod.windows_from(train_rows, window, stride),
                           cfg.training.max_train_windows)
    val_raw = data_mod.windows_from(val_rows, window, 1)
    train_s = data_mod.apply_scaler(scaler, train_raw)
    val_s = data_mod.apply_scaler(scaler, val_raw)

    if cfg.architecture == "pca":
        fitted = _fit_pca(cfg, train_s, val_s)
    elif cfg.architecture == "ensemble":
        fitted = _fit_ensemble(cfg, train_s, val_s)
    else:
        fitted = _fit_torch(cfg, train_s, val_s, device, progress, run_dir)
    output = "score" if cfg.architecture == "ensemble" else "reconstruction"
    cal = cfg.calibration
    model, meta, val_errors = finalize(
        fitted.graph, name=cfg.name, version=cfg.version, features=dataset.features,
        window=window, stride=stride, scaler=scaler, architecture=cfg.architecture,
        output=output, val_raw_windows=val_raw, method=cal.method, q=cal.q,
        initial_q=cal.pot_initial_q, data_sha256=dataset.sha256,
        framework_versions=_versions(cfg), reduction=cal.reduction, tail=cal.tail,
        fit_raw_windows=train_raw,
    )
    model_path = save_model(model, run_dir / "model.onnx")
    checkpoint = run_dir / "model.pt" if cfg.architecture in TORCH_ARCHITECTURES else None
    check = verify_file(model_path, checkpoint=checkpoint, data=None, atol=atol)
    if check.golden_max_rel_err > 1e-6:
        raise ModelFileError(f"golden vectors do not reproduce ({check.golden_max_rel_err:.3g})")
    unfused_path = None
    if fuse and output == "reconstruction":
        unfused_path = model_path.with_name("model-unfused.onnx")
        model_path.replace(unfused_path)
        save_model(fuse_model(load_model(unfused_path)), model_path)
    meta = read_meta(model_path)
    meta_dict = json.loads(meta.to_json())
    (run_dir / "meta.json").write_text(json.dumps(meta_dict, indent=2, sort_keys=True) + "\n",
                                       encoding="utf-8")
    diff = check.max_abs_diff if check.max_abs_diff is not None else fitted.reference_diff
    rep = {
        "name": cfg.name, "version": cfg.version, "architecture": cfg.architecture,
        "config": dataclasses.asdict(cfg), "features": list(dataset.features),
        "rows": dataset.n_rows, "dropped_rows": dataset.dropped_rows,
        "train_windows": len(train_s), "val_windows": len(val_s),
        "train_loss": fitted.train_loss, "val_loss": fitted.val_loss,
        "threshold": meta.threshold, "thresholds": meta.thresholds,
        "val_error_quantiles": {str(q): float(np.quantile(val_errors, q))
                                for q in (0.5, 0.9, 0.99, 0.999)},
        "n_params": fitted.n_params, "model_bytes": model_path.stat().st_size,
        "max_abs_diff": diff, "max_abs_diff_against": "torch" if check.max_abs_diff
        is not None else {"pca": "numpy", "ensemble": "scikit-learn"}[cfg.architecture],
        "atol": atol, "golden": len(meta.golden), "fused": unfused_path is not None,
        "seconds": time.perf_counter() - started,
        **fitted.extra,
    }
    report.write_json(run_dir / "report.json", rep)
    report.write_png(run_dir / "report.png", title=f"{cfg.name} ({cfg.architecture})",
                     train_loss=fitted.train_loss, val_loss=fitted.val_loss,
                     val_errors=val_errors, threshold=meta.threshold, thresholds=meta.thresholds)
    return RunResult(run_dir, model_path, meta, rep, unfused_path)
