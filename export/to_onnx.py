"""PyTorch -> ONNX, and the ``model.pt`` checkpoint that lets ``verify`` rebuild the module.

Uses the TorchScript-based exporter (``dynamo=False``): the dynamo exporter needs
``onnxscript``, which the training host does not have. Its known, harmless warnings
(legacy-exporter deprecation, tracer notes on shape checks inside torch.nn, the LSTM
batch-size note: our LSTMs take no initial state, so batch stays dynamic and the
tests check batch 16) are filtered here, narrowly, and nowhere else.
"""

from __future__ import annotations

import dataclasses
import io
import warnings
from pathlib import Path
from typing import Any

import onnx
import torch

from export.config import MODEL_PARAMS
from export.models import build_model

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "reconstruction"


def export_module(module: torch.nn.Module, window: int, n_features: int) -> onnx.ModelProto:
    """Trace ``module`` (moved to CPU, eval mode) into an ONNX graph with dynamic batch."""
    dummy = torch.zeros(2, window, n_features, dtype=torch.float32)
    return trace_to_onnx(module, dummy, INPUT_NAME, OUTPUT_NAME)


def trace_to_onnx(
    module: torch.nn.Module, dummy: torch.Tensor, input_name: str, output_name: str
) -> onnx.ModelProto:
    """Trace ``module`` on ``dummy`` (batch axis 0 dynamic) and check the graph."""
    module = module.to("cpu").eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=r"The feature will be removed.*")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=r"Exporting a model to ONNX with a batch_size "
                                r"other than 1.*LSTM", category=UserWarning)
        torch.onnx.export(
            module, (dummy,), buf, dynamo=False, opset_version=OPSET,
            input_names=[input_name], output_names=[output_name],
            dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
            do_constant_folding=True,
        )
    model = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(model)
    return model


def save_checkpoint(
    path: str | Path, module: torch.nn.Module, architecture: str, window: int,
    n_features: int, params: Any,
) -> Path:
    """``model.pt``: state_dict plus what is needed to rebuild the module."""
    path = Path(path)
    torch.save({
        "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
        "architecture": architecture, "window": window, "n_features": n_features,
        "params": dataclasses.asdict(params),
    }, path)
    return path


def load_checkpoint(path: str | Path) -> torch.nn.Module:
    ckpt = torch.load(Path(path), map_location="cpu", weights_only=True)
    arch = ckpt["architecture"]
    raw = {k: tuple(v) if isinstance(v, list) else v for k, v in ckpt["params"].items()}
    params = MODEL_PARAMS[arch](**raw)
    module = build_model(arch, int(ckpt["window"]), int(ckpt["n_features"]), params)
    module.load_state_dict(ckpt["state_dict"])
    return module.eval()


def torch_outputs(module: torch.nn.Module, scaled: Any) -> Any:
    """Eval-mode outputs of ``module`` for scaled windows (numpy in, numpy out)."""
    module = module.to("cpu").eval()
    with torch.no_grad():
        return module(torch.as_tensor(scaled, dtype=torch.float32)).numpy()
