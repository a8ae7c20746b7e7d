"""Model loading: the SD world from a diffusers folder with the real DreamSim and CLIP code paths."""

import numpy as np
import pytest
import torch
from PIL import Image

from originality import AnalysisConfig, analyze, load_model
from originality.metrics import ClipEditCheck, DreamSimDistance
from originality.models import WORLD_SD, default_model_id, resolve_model_id
from originality.shapes import SHAPES_MODEL_DIR
from conftest import tiny_sd_options


def test_sd_folder_loads_lazily_once_with_its_metrics(tiny_sd_world):
    kwargs = tiny_sd_options(tiny_sd_world)
    model = load_model(str(tiny_sd_world / "tiny-sd"), **kwargs)
    assert load_model(str(tiny_sd_world / "tiny-sd"), **kwargs) is model  # cached, shared
    assert model.world.name == WORLD_SD and model.resolution == 64
    assert isinstance(model.distance, DreamSimDistance) and model.distance._model is None  # not loaded yet
    assert isinstance(model.in_distribution, ClipEditCheck)
    assert model.pipeline.unet.dtype == torch.float32  # CPU: full precision
    assert model.templates("painting")[0].startswith("a detailed image of the artwork")
    assert model.templates("house")[0] == "a photo of a {}"


def test_full_analysis_on_the_sd_world_uses_dreamsim_and_clip(tiny_sd_world):
    model = load_model(str(tiny_sd_world / "tiny-sd"), **tiny_sd_options(tiny_sd_world))
    query = Image.fromarray(np.random.RandomState(3).randint(0, 255, (90, 90, 3), dtype=np.uint8))
    config = AnalysisConfig.preset("fast", steps=2, batch_size=2, num_reconstructions=2, num_edits=2,
                                   num_inference_steps=2, max_tokens=2, threshold=0.0,
                                   always_check_edits=True)  # threshold 0 fails every length: check anyway
    report = analyze(query, config, model)
    assert report.label == "2+" and len(report.results) == 2  # threshold 0 cannot be met
    for r in report.results:
        assert len(r.distances) == 2 and all(0.0 < d < 2.0 for d in r.distances)  # real DreamSim numbers
        assert len(r.edits) == 2 and all(0.0 <= p <= 1.0 for p in r.check_scores)  # real CLIP probabilities
        assert r.check_detail.endswith(f"(P >= 0.5, vs {report.config['domain']} and the other domains)")
    assert report.model["distance"] == "dreamsim" and report.config["threshold"] == 0.0
    assert report.threshold_source.startswith("set for this run") and report.model["text_encoder_dtype"] == "float32"
    assert report.domain_pick["domain"] == report.config["domain"]  # no domain given: CLIP picked one


def test_model_resolution_and_defaults(monkeypatch):
    monkeypatch.delenv("ORIGINALITY_MODEL", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_model_id() == str(SHAPES_MODEL_DIR)  # no GPU: the bundled shapes world
    monkeypatch.setenv("ORIGINALITY_MODEL", "/some/folder")
    assert default_model_id() == "/some/folder"
    assert resolve_model_id("shapes") == str(SHAPES_MODEL_DIR)
    assert resolve_model_id("sd") == "CompVis/stable-diffusion-v1-4"


def test_unloadable_model_gives_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="could not load a Stable Diffusion pipeline"):
        load_model(str(tmp_path / "nothing-here"), device="cpu")
