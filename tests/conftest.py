"""Shared pytest setup: markers for tests that need real weights or a GPU, and the random-weight
models every module shares (built once per session: the shapes-world model, the DreamSim cache)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


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


@pytest.fixture(scope="session")
def dreamsim_cache(tmp_path_factory):
    """A DreamSim cache folder with random weights (seeded) that `dreamsim.dreamsim` loads offline."""
    from offline_models import OFFLINE_DREAMSIM_TYPE, make_dreamsim_cache

    return make_dreamsim_cache(tmp_path_factory.mktemp("dreamsim-cache"), OFFLINE_DREAMSIM_TYPE)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_app(tmp: Path, env: dict[str, str], timeout: float = 240):
    """`python app.py` in a subprocess on 127.0.0.1 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT) with its data,
    temp and log files in `tmp` and `env` on top; yields the page URL once it answers, stops it after."""
    port = free_port()
    full = dict(os.environ)
    full.pop("ORIGINALITY_HF_DATASET", None)
    full.update({
        "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port), "ORIGINALITY_DATA_DIR": str(tmp / "data"),
        "GRADIO_TEMP_DIR": str(tmp / "gradio"), "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1", "TMPDIR": str(tmp / "tmp"),  # download files land in the test's folder
    })
    full.update(env)
    (tmp / "tmp").mkdir(exist_ok=True)
    log_path = tmp / "server.log"
    url = f"http://127.0.0.1:{port}/"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=full, stdout=log,
                                stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"app.py exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
                try:
                    with urllib.request.urlopen(url, timeout=5) as response:
                        if response.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"app.py did not answer within {timeout:.0f} s:\n{log_path.read_text()[-3000:]}")
                time.sleep(1)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="session")
def tiny_sd_world(tmp_path_factory, dreamsim_cache):
    """A Stable Diffusion folder (`tiny-sd`), a CLIP folder (`tiny-clip`) and a DreamSim cache (`cache`), all random
    weights, for `load_model(root / "tiny-sd", **tiny_sd_options(root))`."""
    return write_tiny_sd_world(tmp_path_factory.mktemp("sd-world"), dreamsim_cache)


def write_tiny_sd_world(root: Path, dreamsim_cache: Path) -> Path:
    """`tiny_sd_world`'s folders, written under `root` (for a module that needs a world of its own)."""
    from offline_models import make_tiny_clip

    from originality.testing import tiny_sd_pipeline

    tiny_sd_pipeline(seed=0).save_pretrained(root / "tiny-sd")
    (root / "cache").mkdir()
    (root / "cache" / "dreamsim").symlink_to(dreamsim_cache, target_is_directory=True)
    make_tiny_clip(root / "tiny-clip")
    return root


def tiny_sd_options(root: Path) -> dict:
    """`load_model`'s options for `tiny_sd_world`'s folders: CPU, offline DreamSim and CLIP."""
    from offline_models import OFFLINE_DREAMSIM_TYPE

    return dict(device="cpu", dreamsim_type=OFFLINE_DREAMSIM_TYPE, clip_model=str(root / "tiny-clip"),
                cache_dir=root / "cache")
