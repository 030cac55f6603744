"""Central side of edge-agent: normal data -> model -> ONNX file with metadata -> signed manifest.

Importing this package (or :mod:`export.pca_ae`, :mod:`export.scoring`,
:mod:`export.signing`) does not import torch; only the PyTorch trainers do, lazily.
"""

from __future__ import annotations

from agent._version import __version__

__all__ = ["__version__"]
