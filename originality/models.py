"""Model worlds: a Stable Diffusion pipeline plus the metric and check that judge it.

`load_model()` is the one place that loads weights and decides device and dtype.
Models load lazily (never at import), once per (model, device, dtype), and are
shared by every analysis in the process.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline

from .config import ART_DOMAINS, DOMAINS
from .device import frozen_dtype, pick_device
from .metrics import ClipEditCheck, DistanceMetric, DreamSimDistance, InDistributionCheck, default_cache_dir
from .templates import ART_TEMPLATES, OBJECT_TEMPLATES

logger = logging.getLogger(__name__)

SD_MODEL_ID = "CompVis/stable-diffusion-v1-4"
SHAPES_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "shapes-model"
WORLD_SD = "stable-diffusion"
WORLD_SHAPES = "shapes"


@dataclass
class OriginalityModel:
    """A text-to-image pipeline and the two judges of its reconstructions."""

    pipeline: StableDiffusionPipeline
    name: str
    world: str  # WORLD_SD or WORLD_SHAPES
    distance: DistanceMetric
    in_distribution: InDistributionCheck
    default_domain: str
    default_threshold: float
    default_guidance_scale: float
    world_templates: tuple[str, ...] | None = None  # when set, used for every domain
    threshold_source: str = ""  # where default_threshold comes from (recorded in every report)
    # One analysis at a time per model: placeholder tokens live in the shared text encoder.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def device(self) -> torch.device:
        return self.pipeline.unet.device

    @property
    def resolution(self) -> int:
        return self.pipeline.unet.config.sample_size * self.pipeline.vae_scale_factor

    def initial_word(self, domain: str) -> str:
        return DOMAINS.get(domain, domain)

    def templates(self, domain: str) -> tuple[str, ...]:
        if self.world_templates is not None:
            return self.world_templates
        return ART_TEMPLATES if domain in ART_DOMAINS else OBJECT_TEMPLATES

    def describe(self) -> dict:
        return {
            "name": self.name,
            "world": self.world,
            "distance": self.distance.name,
            "in_distribution": self.in_distribution.name,
            "device": str(self.device),
            "dtype": str(self.pipeline.unet.dtype).replace("torch.", ""),
            "text_encoder_dtype": str(self.pipeline.text_encoder.dtype).replace("torch.", ""),
            "loss_scale": "dynamic" if self.pipeline.unet.dtype == torch.float16 else "none",
            "resolution": self.resolution,
        }


_CACHE: dict[tuple, OriginalityModel] = {}
_CACHE_LOCK = threading.Lock()


def sd_available(model_id: str = SD_MODEL_ID) -> bool:
    """True where a Stable Diffusion run makes sense: a GPU, and weights cached or downloadable."""
    if not torch.cuda.is_available():
        from .device import gpu_problem  # noqa: PLC0415

        if gpu_problem():
            logger.warning(gpu_problem())
        return False
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("1", "true", "True"):
        return True
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(model_id, "model_index.json"), str)


def default_model_id() -> str:
    """$ORIGINALITY_MODEL, else Stable Diffusion v1.4 where it can run, else the bundled shapes world."""
    env = os.environ.get("ORIGINALITY_MODEL")
    if env:
        return env
    return SD_MODEL_ID if sd_available() else str(SHAPES_MODEL_DIR)


def resolve_model_id(model: str | None) -> str:
    if model in (None, "", "auto"):
        return default_model_id()
    if model in ("shapes", WORLD_SHAPES):
        return str(SHAPES_MODEL_DIR)
    if model in ("sd", WORLD_SD):
        return SD_MODEL_ID
    return model


def load_model(
    model: str | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    dreamsim_type: str = "ensemble",
    clip_model: str = "openai/clip-vit-base-patch32",
    cache_dir: str | os.PathLike | None = None,
) -> OriginalityModel:
    """Load (once) a model world by Hub id or local folder; "shapes"/"sd"/None pick a world.

    Device: CUDA when present, else CPU. Dtype: float16 for the frozen modules on
    GPU, float32 on CPU (learned embeddings are always float32).
    """
    model_id = resolve_model_id(model)
    dev = pick_device(device)
    dt = frozen_dtype(dev, dtype)
    key = (model_id, str(dev), str(dt), dreamsim_type, clip_model, str(cache_dir))
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = _load(model_id, dev, dt, dreamsim_type, clip_model, cache_dir)
        return _CACHE[key]


def _load_pipeline(model_id: str, device: torch.device, dtype: torch.dtype) -> StableDiffusionPipeline:
    from .sd import check_pipeline_support  # noqa: PLC0415

    check_pipeline_support(model_id)  # one small file; refuses SDXL, SD3, ... before any weights
    try:
        pipe = StableDiffusionPipeline.from_pretrained(
            model_id, dtype=dtype, safety_checker=None, requires_safety_checker=False
        )
    except (OSError, ValueError, EnvironmentError) as err:
        raise ValueError(
            f"could not load a Stable Diffusion pipeline from {model_id!r}: {err}. "
            "Give a diffusers folder or a Hub id whose weights are cached or downloadable."
        ) from err
    pipe.set_progress_bar_config(disable=True)
    pipe = pipe.to(device)
    # The text encoder (~1% of a step's FLOPs) stays float32: the learned rows' gradient goes
    # through it (README, "Precision and memory"; tests/test_precision.py).
    pipe.text_encoder.to(TEXT_ENCODER_DTYPE)
    return pipe


TEXT_ENCODER_DTYPE = torch.float32


def _load(model_id, device, dtype, dreamsim_type, clip_model, cache_dir) -> OriginalityModel:
    from .shapes.model import is_shapes_model

    logger.info("loading %s on %s (%s)", model_id, device, dtype)
    pipe = _load_pipeline(model_id, device, dtype)
    if Path(model_id).is_dir() and is_shapes_model(model_id):
        from .shapes.metrics import ElementDistance, LayoutVariationCheck
        from .shapes.model import INITIAL_WORD, SHAPES_TEMPLATES

        return OriginalityModel(
            pipeline=pipe,
            name=Path(model_id).name,
            world=WORLD_SHAPES,
            distance=ElementDistance(),
            in_distribution=LayoutVariationCheck(),
            default_domain=INITIAL_WORD,
            default_threshold=SHAPES_THRESHOLD,
            default_guidance_scale=SHAPES_GUIDANCE,
            threshold_source=SHAPES_THRESHOLD_SOURCE,
            world_templates=SHAPES_TEMPLATES,
        )
    cache = Path(cache_dir) if cache_dir else None
    return OriginalityModel(
        pipeline=pipe,
        name=model_id,
        world=WORLD_SD,
        distance=DreamSimDistance(dreamsim_type=dreamsim_type, device=device,
                                  cache_dir=(cache / "dreamsim") if cache else default_cache_dir("dreamsim")),
        in_distribution=ClipEditCheck(model_id=clip_model, device=device),
        default_domain="house",
        default_threshold=SD_THRESHOLD,
        default_guidance_scale=7.5,
        threshold_source=SD_THRESHOLD_SOURCE,
    )


# DreamSim threshold for Stable Diffusion. The paper gives none; its one anchor is that
# single-token reconstructions of generic street-cat photos never seen in training
# average 0.42 (supplementary, Sec. 5), and that familiar images score markedly lower.
# 0.45 lets such a generic-but-unseen image pass at m = 1 and leaves no more slack than
# that. Not yet validated on real weights.
SD_THRESHOLD = 0.45
SD_THRESHOLD_SOURCE = ("uncalibrated default of the Stable Diffusion world (0.45, from the paper's street-cat anchor; "
                       "calibrate it with `python -m originality calibrate`)")
# Element distance (1 - F1 of detected (shape, colour)) for the shapes world, set to what the
# model's own best words achieve for familiar content: images generated from "a photo of <true
# caption>" of 24 COMMON queries (`python -m originality.shapes.calibrate --groups common
# --per-group 24`, 8 images each) have per-query mean distances whose 80% quantile is 0.29 on the
# shipped model (mean 0.17). Learned tokens that reconstruct the query that well count as a
# description of it. UNSEEN true captions stay above (0.45: the model cannot draw that pair
# from words). The 80% quantile rather than the mean, because a threshold at the mean rejects
# caption-quality reconstructions for half of the familiar images.
SHAPES_THRESHOLD = 0.3
SHAPES_THRESHOLD_SOURCE = ("calibrated default of the shapes world (0.3: 80% quantile of true-caption distances of "
                           "24 COMMON queries, `python -m originality.shapes.calibrate`)")
SHAPES_GUIDANCE = 3.0
