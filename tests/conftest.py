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


@pytest.fixture(scope="session")
def tiny_shapes_model(tmp_path_factory):
    """A shapes-world model folder with random weights (seeded): the real loading path, fake numbers."""
    from originality.shapes import model as shapes_model

    path = tmp_path_factory.mktemp("tiny-shapes-model")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        pipe = shapes_model.assemble(shapes_model.build_components())
    shapes_model.save(pipe, path, meta={"note": "random weights for tests"})
    return path
