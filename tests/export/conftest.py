"""Session fixtures for the exporter tests (helpers live in ``export_helpers``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.export.export_helpers import synthetic_rows, tiny_config, write_csv


@pytest.fixture(scope="session")
def normal_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_csv(tmp_path_factory.mktemp("data") / "normal.csv", synthetic_rows())


@pytest.fixture(scope="session")
def heldout_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_csv(tmp_path_factory.mktemp("data") / "heldout.csv",
                     synthetic_rows(600, seed=1), sep=",")


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, normal_csv: Path):
    """Train each architecture once per session; returns a function arch -> RunResult."""
    from export.config import config_from_dict
    from export.train import train_run

    cache: dict[str, Any] = {}

    def get(arch: str):
        if arch not in cache:
            out = tmp_path_factory.mktemp(f"run-{arch}")
            cache[arch] = train_run(config_from_dict(tiny_config(arch)), normal_csv, out,
                                    progress=False)
        return cache[arch]

    return get
