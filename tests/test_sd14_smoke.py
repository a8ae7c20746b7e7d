"""The full SD v1.4 architecture (random weights, ../shared/sd-v1-4-configs or $ORIGINALITY_SD14_CONFIGS)
through the engine on the CPU: one inversion step at 512 px, one short generation of the
reconstruction and of the edit, DreamSim's ensemble and a CLIP ViT-L/14-shaped judge.

The UNet and VAE run in bfloat16 with the text encoder in float32, as on a GPU (device.frozen_dtype),
so shape and dtype mismatches between the real-size modules show up here. That needs a CPU with
AVX-512: without it PyTorch runs bfloat16 convolutions on one thread in a slow path (the VAE's
encoder alone ran for over 10 minutes on a 2-core AVX2 host, against about 80 s for the whole
test on AVX-512), so there the frozen modules run in float32 and the test still checks the real
architecture end to end (bfloat16's numerics are tested on the tiny SD in test_precision.py).
Marked slow: a few minutes on 2 CPU cores."""

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from originality import AnalysisConfig, OriginalityModel, analyze
from originality.metrics import ClipEditCheck, DreamSimDistance
from originality.sd import WORLD as SD_WORLD
from originality.testing import sd14_pipeline_from_configs
from tests.offline_models import make_clip_l14, make_dreamsim_cache

ROOT = Path(__file__).resolve().parents[1]
# $ORIGINALITY_SD14_CONFIGS, else the shared folder beside the checkout (or beside a worktree's parent)
CONFIGS = next((p for p in [Path(os.environ.get("ORIGINALITY_SD14_CONFIGS", "/nonexistent")),
                            ROOT.parent / "shared" / "sd-v1-4-configs",
                            ROOT.parent.parent / "shared" / "sd-v1-4-configs"]
                if (p / "unet" / "config.json").is_file()), ROOT.parent / "shared" / "sd-v1-4-configs")

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (CONFIGS / "unet" / "config.json").is_file(),
                                 reason=f"SD v1.4 configs not found at {CONFIGS}")]


# bfloat16 only where the CPU runs it at speed (see the module docstring)
FROZEN_DTYPE = torch.bfloat16 if "AVX512" in torch.backends.cpu.get_cpu_capability() else torch.float32


def test_sd14_architecture_runs_through_the_engine(tmp_path):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        pipe = sd14_pipeline_from_configs(CONFIGS, dtype=FROZEN_DTYPE, device="cpu")
    pipe.text_encoder.to(torch.float32)  # as models._load_pipeline keeps it
    clip, processor = make_clip_l14()
    model = OriginalityModel(
        pipeline=pipe, name="sd14-random", world=dataclasses.replace(SD_WORLD, threshold=2.0),
        distance=DreamSimDistance(dreamsim_type="ensemble", cache_dir=make_dreamsim_cache(tmp_path / "ds", "ensemble")),
        in_distribution=ClipEditCheck(model=clip, processor=processor))
    assert model.resolution == 512
    query = Image.fromarray(np.random.RandomState(0).randint(0, 255, (300, 400, 3)).astype(np.uint8))
    config = AnalysisConfig.preset("fast", max_tokens=1, steps=1, batch_size=2, micro_batch_size=1,
                                   num_reconstructions=1, num_edits=1, num_inference_steps=1)
    report = analyze(query, config, model)
    (r,) = report.results
    assert r.embeddings.shape == (1, 768) and r.embeddings.dtype == torch.float32
    assert len(r.losses) == 1 and np.isfinite(r.losses[0])
    assert r.reconstructions[0].size == (512, 512) and r.edits[0].size == (512, 512)
    assert len(r.distances) == 1 and 0.0 <= r.distances[0] <= 2.0  # the ensemble's distance
    assert len(r.check_scores) == 1 and 0.0 <= r.check_scores[0] <= 1.0
    assert report.domain_pick is not None and report.config["domain"] == report.domain_pick["domain"]
    assert report.model["dtype"] == str(FROZEN_DTYPE).removeprefix("torch.")
    assert report.model["text_encoder_dtype"] == "float32"
    print("timings", r.timings)
