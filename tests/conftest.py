"""Shared pytest setup: markers for tests that need real weights or a GPU."""

from __future__ import annotations

import os

import pytest
import torch


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "real_weights: needs real pretrained weights (network or a filled cache); "
        "runs only with ORIGINALITY_REAL_WEIGHTS=1")
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU; skipped when none is available")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    real = os.environ.get("ORIGINALITY_REAL_WEIGHTS") == "1"
    cuda = torch.cuda.is_available()
    skip_real = pytest.mark.skip(reason="needs real weights: set ORIGINALITY_REAL_WEIGHTS=1")
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "real_weights" in item.keywords and not real:
            item.add_marker(skip_real)
        if "gpu" in item.keywords and not cuda:
            item.add_marker(skip_gpu)
