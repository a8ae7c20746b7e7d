"""Model worlds: a Stable Diffusion pipeline plus the metric and check that judge it.

`load_model()` is the one place that loads weights and decides device and dtype.
Models load lazily (never at import), once per (model, device, dtype), and are
shared by every analysis in the process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from dataclasses import dataclass, field

import torch
from diffusers import StableDiffusionPipeline

from .config import DOMAINS
from .device import frozen_dtype, pick_device
from .metrics import DistanceMetric, InDistributionCheck
from .sd import check_pipeline_support
from .world import World
from .worlds import (  # noqa: F401 - re-exported: where callers looked for them before the registry
    SD_MODEL_ID,
    WORLD_SD,
    default_model_id,
    get_world,
    resolve_model_id,
    sd_available,
    world_of_model,
)

logger = logging.getLogger(__name__)


@dataclass
class OriginalityModel:
    """A text-to-image pipeline and the two judges of its reconstructions."""

    pipeline: StableDiffusionPipeline
    name: str
    # the model's world (`originality.world.World`): its defaults (threshold, guidance scale, domain word and
    # where the threshold comes from), templates and check name are read from it, never copied here
    world: World
    distance: DistanceMetric
    in_distribution: InDistributionCheck
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
        return self.world.templates(domain)

    def describe(self) -> dict:
        return {
            "name": self.name,
            "world": self.world.name,
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


class _Quiet:
    """A logging filter that drops the messages a world expects (see `World.quiet_messages`)."""

    def __init__(self, prefixes: tuple[str, ...]):
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(self.prefixes)


@contextlib.contextmanager
def _quiet(prefixes: tuple[str, ...]):
    if not prefixes:
        yield
        return
    target = logging.getLogger("diffusers.pipelines.pipeline_utils")
    quiet = _Quiet(prefixes)
    target.addFilter(quiet)
    try:
        yield
    finally:
        target.removeFilter(quiet)


def _load_pipeline(model_id: str, device: torch.device, dtype: torch.dtype, world: World) -> StableDiffusionPipeline:
    check_pipeline_support(model_id, world)  # one small file; refuses SDXL, SD3, ... before any weights
    try:
        with _quiet(world.quiet_messages):
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
    # through it (docs/precision-and-memory.md; tests/test_precision.py).
    pipe.text_encoder.to(TEXT_ENCODER_DTYPE)
    return pipe


TEXT_ENCODER_DTYPE = torch.float32


def _load(model_id, device, dtype, dreamsim_type, clip_model, cache_dir) -> OriginalityModel:
    world = world_of_model(model_id)
    logger.info("loading %s (%s world) on %s (%s)", model_id, world.name, device, dtype)
    pipe = _load_pipeline(model_id, device, dtype, world)
    distance, check = world.judges(device, dreamsim_type=dreamsim_type, clip_model=clip_model, cache_dir=cache_dir)
    return OriginalityModel(
        pipeline=pipe,
        name=world.model_label(model_id),
        world=world,
        distance=distance,
        in_distribution=check,
    )
