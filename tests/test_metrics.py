"""Tests of the Stable Diffusion world's metrics: DreamSim distance and the CLIP edit check.

Everything here runs offline: DreamSim loads a randomly initialised cache written
in the package's own layout, CLIP is a tiny random model with CLIP's real tokenizer.
Only the `real_weights` test uses the released models (skipped unless
ORIGINALITY_REAL_WEIGHTS=1).
"""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch
from PIL import Image

from offline_models import OFFLINE_DREAMSIM_TYPE, make_tiny_clip
from originality.metrics import (
    CheckResult,
    ClipEditCheck,
    DistanceMetric,
    DreamSimDistance,
    InDistributionCheck,
)


def _noise_image(seed: int, size: tuple[int, int] = (64, 48)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _gradient_image(size: int = 80) -> Image.Image:
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    rgb = np.stack([np.add.outer(ramp, 0 * ramp), np.add.outer(0 * ramp, ramp), np.full((size, size), 128.0)], -1)
    return Image.fromarray(rgb.astype(np.uint8))


@pytest.fixture(scope="module", autouse=True)
def _one_cpu_thread():
    """Run this module's CPU inference on one thread.

    On a small, busy machine (2 cores shared with a training job) two intra-op threads
    fight over the cores and a ViT-B/32 forward goes from ~0.2 s to ~2.5 s.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def query() -> Image.Image:
    return _noise_image(0)


@pytest.fixture(scope="module")
def others() -> list[Image.Image]:
    # an identical copy of the query, a different noise image, a smooth gradient (other size, mode RGBA)
    return [_noise_image(0), _noise_image(1), _gradient_image().convert("RGBA")]


def test_metrics_satisfy_protocols():
    assert isinstance(DreamSimDistance(), DistanceMetric)
    check = ClipEditCheck()
    assert isinstance(check, InDistributionCheck)
    assert check.uses_edits is True


# --------------------------------------------------------------------------- DreamSim

@pytest.fixture(scope="module")
def dreamsim_runs(dreamsim_cache, query, others):
    """One metric built from the random cache and called twice (2 images, then 1 of them);
    batch_size=1 so the images go through separate batches. `dreamsim.dreamsim` is
    wrapped to count loads: (metric, first, second, loads_at_construction, loads)."""
    import dreamsim

    loads = []
    real = dreamsim.dreamsim

    def counting(*args, **kwargs):
        loads.append(kwargs)
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dreamsim, "dreamsim", counting)
        metric = DreamSimDistance(dreamsim_type=OFFLINE_DREAMSIM_TYPE, cache_dir=dreamsim_cache, batch_size=1)
        loads_at_construction = len(loads)
        first = metric(query, others[:2])   # [identical copy, different image]
        second = metric(query, others[1:2])  # the different image again
    return metric, first, second, loads_at_construction, loads


def test_dreamsim_one_float_per_image(dreamsim_runs):
    _, first, second, _, _ = dreamsim_runs
    assert len(first) == 2 and len(second) == 1
    assert all(type(d) is float for d in first + second)


def test_dreamsim_identical_image_is_zero_and_different_is_positive(dreamsim_runs):
    _, (same, different), _, _, _ = dreamsim_runs
    assert abs(same) < 1e-4
    assert different > 1e-3


def test_dreamsim_is_deterministic(dreamsim_runs):
    _, first, second, _, _ = dreamsim_runs
    assert second[0] == pytest.approx(first[1], abs=1e-6)


def test_dreamsim_loads_lazily_and_once(dreamsim_runs, dreamsim_cache):
    metric, _, _, loads_at_construction, loads = dreamsim_runs
    assert loads_at_construction == 0  # nothing loaded when the metric is built
    assert len(loads) == 1  # two calls, one load
    assert loads[0]["cache_dir"] == str(dreamsim_cache)
    assert loads[0]["dreamsim_type"] == OFFLINE_DREAMSIM_TYPE
    assert metric._model is not None


def test_dreamsim_empty_list(dreamsim_runs, query):
    metric, _, _, _, _ = dreamsim_runs
    assert metric(query, []) == []


def test_dreamsim_clear_error_without_weights_or_network(tmp_path, query, monkeypatch):
    def no_network(url, dst, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    cache = tmp_path / "nested" / "empty-cache"
    metric = DreamSimDistance(dreamsim_type=OFFLINE_DREAMSIM_TYPE, cache_dir=cache)
    with pytest.raises(RuntimeError) as info:
        metric(query, [query])
    message = str(info.value)
    assert str(cache) in message
    assert "network" in message and "first use" in message
    assert isinstance(info.value.__cause__, urllib.error.URLError)
    assert cache.is_dir()  # the cache folder (and its parents) was created


# --------------------------------------------------------------------------- CLIP

@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """(folder, model, processor): the tiny CLIP, also saved to a folder."""
    folder = tmp_path_factory.mktemp("tiny-clip")
    model, processor = make_tiny_clip(folder)
    return folder, model, processor


@pytest.fixture(scope="module")
def clip_check(tiny_clip):
    folder, _, _ = tiny_clip
    return ClipEditCheck(model_id=str(folder))


@pytest.fixture(scope="module")
def edits(query, others) -> list[Image.Image]:
    return [query, *others]


def test_tiny_clip_tokenizer_matches_openai_clip(tiny_clip):
    from open_clip.tokenizer import SimpleTokenizer

    _, _, processor = tiny_clip
    reference = SimpleTokenizer()  # open_clip's port of OpenAI's tokenizer
    sot, eot = reference.sot_token_id, reference.eot_token_id
    for text in ["a photo of a cat", "A photo of an Object!", "a photo of a scene", "ukulele-playing hedgehogs"]:
        assert processor.tokenizer(text)["input_ids"] == [sot, *reference.encode(text), eot]


def test_clip_check_not_loaded_at_construction(tiny_clip):
    folder, _, _ = tiny_clip
    check = ClipEditCheck(model_id=str(folder))
    assert check.model is None and check.processor is None


def test_clip_check_scores(clip_check, query, edits):
    result = clip_check(query, [query], edits, subject="cat", pass_fraction=0.5)
    assert isinstance(result, CheckResult)
    assert len(result.scores) == len(edits)
    assert all(type(s) is float and 0.0 <= s <= 1.0 for s in result.scores)
    hits = sum(s >= 0.5 for s in result.scores)
    assert result.passed == (hits / len(edits) >= 0.5)
    assert result.detail == f"{hits}/{len(edits)} edits show a cat (P >= 0.5, vs the preset domains)"


def test_clip_check_pass_fraction_bounds(clip_check, query, edits):
    assert clip_check(query, [query], edits, subject="cat", pass_fraction=0.0).passed is True
    assert clip_check(query, [query], edits, subject="cat", pass_fraction=1.01).passed is False


def test_clip_check_empty_edits_fail(clip_check, query):
    result = clip_check(query, [query], [], subject="cat", pass_fraction=0.0)
    assert result.passed is False
    assert result.scores == []
    assert "no edit" in result.detail


def test_clip_check_injected_model_matches_saved_folder(tiny_clip, clip_check, query, edits):
    _, model, processor = tiny_clip
    injected = ClipEditCheck(model_id="not/a-real-model", model=model, processor=processor)
    from_injected = injected(query, [], edits, subject="dog", pass_fraction=0.5).scores
    from_folder = clip_check(query, [], edits, subject="dog", pass_fraction=0.5).scores
    assert from_injected == pytest.approx(from_folder, abs=1e-5)


# --------------------------------------------------------------------------- real weights

@pytest.mark.real_weights
def test_real_dreamsim_ensemble_and_clip(query):
    """The released DreamSim ensemble and openai/clip-vit-base-patch32 (network or a filled cache)."""
    from originality.device import pick_device

    device = pick_device()
    other = _gradient_image()

    metric = DreamSimDistance(dreamsim_type="ensemble", device=device)
    same, different = metric(query, [query, other])
    assert abs(same) < 1e-3
    assert different > same

    check = ClipEditCheck(device=device)
    result = check(query, [], [query, other], subject="cat", pass_fraction=0.5)
    assert len(result.scores) == 2
    assert all(0.0 <= s <= 1.0 for s in result.scores)
