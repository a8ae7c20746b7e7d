"""The Stable Diffusion world (`WORLD`) and what it checks before and around an analysis.

- `WORLD`: its default model (`SD_MODEL_ID`), threshold and where that number comes from, guidance
  scale, domain word, judges (DreamSim and the CLIP edit check) and when it can run here (`sd_available`).
  It has no marker file: the registry (`originality.worlds`) gives it every model no other world claims.
- `check_pipeline_support`: read a model's `model_index.json` (one small file from the folder or
  the Hub) and refuse, before any weights are downloaded, the pipelines the engine cannot invert
  (SDXL, SD3, Flux, Kandinsky, single-file checkpoints, text encoders that are not CLIP).
- `pick_domain`: the domain (initial word of the learned tokens) chosen by CLIP zero-shot over the
  presets when the user chose none, with its probabilities for the report.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .config import DOMAINS
from .world import World

if TYPE_CHECKING:
    from PIL import Image

logger = logging.getLogger(__name__)

SD_MODEL_ID = "CompVis/stable-diffusion-v1-4"
WORLD_SD = "stable-diffusion"
# DreamSim threshold for Stable Diffusion. The paper gives none; its one anchor is that
# single-token reconstructions of generic street-cat photos never seen in training
# average 0.42 (supplementary, Sec. 5), and that familiar images score markedly lower.
# 0.45 lets such a generic-but-unseen image pass at m = 1 and leaves no more slack than
# that. Not yet validated on real weights.
SD_THRESHOLD = 0.45
SD_THRESHOLD_SOURCE = ("uncalibrated default of the Stable Diffusion world (0.45, from the paper's street-cat anchor; "
                       "calibrate it with `python -m originality calibrate`)")
SD_GUIDANCE = 7.5


# ORIGINALITY_SD_ON_CPU=1: the server's operator runs the Stable Diffusion world without a GPU (minutes per
# inversion step at 512 px: for the dress rehearsal, benchmarks/rehearsal.py, or a CPU host with time to spare)
SD_ON_CPU_ENV = "ORIGINALITY_SD_ON_CPU"


def sd_available(model_id: str = SD_MODEL_ID) -> bool:
    """True where a Stable Diffusion run makes sense: a GPU (or $ORIGINALITY_SD_ON_CPU=1), and weights cached or
    downloadable."""
    import torch  # noqa: PLC0415 - start-up cost: torch only when the question is asked

    if not torch.cuda.is_available() and os.environ.get(SD_ON_CPU_ENV) != "1":
        from .device import gpu_problem  # noqa: PLC0415 - start-up cost (device imports torch)

        if gpu_problem():
            logger.warning(gpu_problem())
        return False
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("1", "true", "True"):
        return True
    from huggingface_hub import try_to_load_from_cache  # noqa: PLC0415 - start-up cost

    return isinstance(try_to_load_from_cache(model_id, "model_index.json"), str)


def _sd_unavailable(model_id: str) -> str | None:
    if model_id == SD_MODEL_ID and not sd_available():
        return ("Stable Diffusion needs a CUDA GPU and its weights; this server has no GPU (or cannot download "
                "the weights). Choose the shapes world.")
    return None


def _sd_judges(device, *, dreamsim_type: str = "ensemble", clip_model: str = "openai/clip-vit-base-patch32",
               cache_dir=None):
    from .metrics import ClipEditCheck, DreamSimDistance, default_cache_dir  # noqa: PLC0415 - start-up cost (torch)

    cache = Path(cache_dir) / "dreamsim" if cache_dir else default_cache_dir("dreamsim")
    return (DreamSimDistance(dreamsim_type=dreamsim_type, device=device, cache_dir=cache),
            ClipEditCheck(model_id=clip_model, device=device))


WORLD = World(
    name=WORLD_SD, title="Stable Diffusion", aliases=("sd",), default_model=SD_MODEL_ID,
    threshold=SD_THRESHOLD, threshold_source=SD_THRESHOLD_SOURCE, guidance_scale=SD_GUIDANCE, domain="house",
    picks_domain=True, distance_name="DreamSim", check_name="edit check",
    judges=_sd_judges, unavailable=_sd_unavailable,  # similarity: None, the copy and style backbones
    examples=(("sd_house.png", "SD: house"), ("sd_painting.png", "SD: painting")),
)

SUPPORTED = ("Stable Diffusion 1.x / 2.x pipelines in the diffusers layout (StableDiffusionPipeline with one "
             "CLIP text encoder and a UNet2DConditionModel, e.g. CompVis/stable-diffusion-v1-4, "
             "stabilityai/stable-diffusion-2-1) and the bundled shapes world")
SUPPORTED_PIPELINES = frozenset({"StableDiffusionPipeline"})
# Pipelines people try, and why they cannot work here (the engine wraps one CLIP text encoder
# feeding one UNet2DConditionModel).
KNOWN_UNSUPPORTED = {
    "StableDiffusionXLPipeline": "SDXL has two text encoders",
    "StableDiffusion3Pipeline": "SD3 is a transformer with three text encoders",
    "FluxPipeline": "Flux is a transformer with a T5 text encoder",
    "KandinskyPipeline": "Kandinsky is conditioned on image embeddings, not on token embeddings",
    "KandinskyV22Pipeline": "Kandinsky is conditioned on image embeddings, not on token embeddings",
    "KandinskyCombinedPipeline": "Kandinsky is conditioned on image embeddings, not on token embeddings",
    "KandinskyV22CombinedPipeline": "Kandinsky is conditioned on image embeddings, not on token embeddings",
    "PixArtAlphaPipeline": "PixArt is a transformer with a T5 text encoder",
}
CLIP_TEXT_ENCODERS = frozenset({"CLIPTextModel"})
SINGLE_FILE_SUFFIXES = (".ckpt", ".safetensors", ".pt", ".pth", ".bin")


class UnsupportedModel(ValueError):
    """The model is not a pipeline the engine can run; the message names what is supported."""


def read_model_index(model_id: str) -> dict:
    """`model_index.json` of a local folder or a Hub repository (downloads that one file only)."""
    path = Path(model_id)
    if path.is_file() or (not path.exists() and model_id.endswith(SINGLE_FILE_SUFFIXES)):
        raise UnsupportedModel(f"{model_id!r} is a single-file checkpoint; supported: {SUPPORTED}. Convert it "
                               "to the diffusers layout first (diffusers' StableDiffusionPipeline.from_single_file "
                               "then save_pretrained).")
    if path.is_dir():
        index = path / "model_index.json"
        if not index.is_file():
            raise UnsupportedModel(f"the folder {model_id!r} has no model_index.json, so it is not a diffusers "
                                   f"pipeline; supported: {SUPPORTED}")
        return json.loads(index.read_text())
    from huggingface_hub import hf_hub_download  # noqa: PLC0415 - start-up: huggingface_hub only when used

    try:
        local = hf_hub_download(model_id, "model_index.json")
    except Exception as err:  # noqa: BLE001 - offline, missing repo, gated repo: all say "cannot read it"
        raise ValueError(f"could not load a Stable Diffusion pipeline from {model_id!r}: its model_index.json "
                         f"cannot be read (neither a local folder nor a reachable Hub repository: "
                         f"{type(err).__name__}: {err}). Supported: {SUPPORTED}.") from err
    return json.loads(Path(local).read_text())


def check_pipeline_support(model_id: str, world: World | None = None) -> dict:
    """Raise `UnsupportedModel` unless `model_id` is a pipeline the engine can run; returns its model index.

    `world`: the world the model belongs to (`worlds.world_of_model`; None: this one). Another world's
    pipeline (the shapes world's, marked by its folder's marker file) brings its own text encoder."""
    index = read_model_index(model_id)
    name = index.get("_class_name", "?")
    if name in KNOWN_UNSUPPORTED:
        raise UnsupportedModel(f"{model_id!r} is a {name}: {KNOWN_UNSUPPORTED[name]}, and this engine learns tokens "
                               f"of one CLIP text encoder. Supported: {SUPPORTED}.")
    if name not in SUPPORTED_PIPELINES:
        raise UnsupportedModel(f"{model_id!r} is a {name}, not a StableDiffusionPipeline. Supported: {SUPPORTED}.")
    for extra in ("text_encoder_2", "text_encoder_3", "transformer", "prior"):
        if (index.get(extra) or [None])[0] is not None:
            raise UnsupportedModel(f"{model_id!r} has a {extra} component; supported: {SUPPORTED}.")
    unet = (index.get("unet") or [None, None])[1]
    if unet != "UNet2DConditionModel":
        raise UnsupportedModel(f"{model_id!r} has no UNet2DConditionModel (unet: {unet}); supported: {SUPPORTED}.")
    text_encoder = (index.get("text_encoder") or [None, None])[1]
    own_encoder = world is not None and world is not WORLD and world.marks(model_id)
    if text_encoder not in CLIP_TEXT_ENCODERS and not own_encoder:
        raise UnsupportedModel(f"{model_id!r} has a {text_encoder} text encoder, not CLIP's (CLIPTextModel); "
                               f"supported: {SUPPORTED}.")
    return index


# --------------------------------------------------------------------------- automatic domain

@dataclass(frozen=True)
class DomainPick:
    """The domain CLIP found most likely for the query, and every preset's probability."""

    domain: str
    probabilities: dict[str, float]

    def sentence(self) -> str:
        top = sorted(self.probabilities.items(), key=lambda kv: -kv[1])[:3]
        shown = ", ".join(f"{d} {p:.0%}" for d, p in top)
        return (f"domain {self.domain!r} picked automatically by CLIP zero-shot over the presets ({shown}); "
                "choose a domain to override it")

    def to_dict(self) -> dict:
        return {"domain": self.domain, "probabilities": dict(self.probabilities), "method": "clip-zero-shot"}


def domain_prompt(domain: str) -> str:
    """CLIP prompt of a domain preset ("painting" is artwork: "a painting", the rest "a photo of a ...")."""
    from .metrics import subject_prompt  # noqa: PLC0415 - start-up: loads torch/numpy only when used

    return subject_prompt(DOMAINS[domain])


def pick_domain(model, query: Image.Image) -> DomainPick | None:
    """CLIP zero-shot over the domain presets (with "a painting" for artwork) on the query; None
    when the model world has no CLIP judge (the shapes world keeps its own default word)."""
    from .metrics import ClipEditCheck  # noqa: PLC0415 - start-up: loads torch/numpy only when used

    check = model.in_distribution
    if not isinstance(check, ClipEditCheck):
        return None
    domains = list(DOMAINS)
    probs = check.probabilities([query], [domain_prompt(d) for d in domains])[0]
    table = {d: float(p) for d, p in zip(domains, probs)}
    return DomainPick(max(table, key=table.get), table)
