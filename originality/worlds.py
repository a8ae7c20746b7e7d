"""The registry of model worlds: which models the engine knows, and their defaults and judges.

A world is a kind of text-to-image model together with what judges it: its default model,
distance threshold, guidance scale and domain word, its inversion templates, the
distance and in-distribution check built for a loaded pipeline, and how it compares an
image with reference images (copy and style similarity, `originality.similarity`). The CLI's help and the
app's choices are read from here; the world names are the one vocabulary ("sd" is an alias).

Stable Diffusion is defined here; the shapes world registers its own (`originality.shapes`).
Importing this module is cheap: judges and pipelines are built only when a model is loaded.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable

from .config import ART_DOMAINS
from .templates import ART_TEMPLATES, OBJECT_TEMPLATES

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


@dataclass(frozen=True)
class World:
    """One model world (see the module docstring)."""

    name: str  # the one name used everywhere (reports, app, CLI)
    title: str  # for people: "Stable Diffusion"
    aliases: tuple[str, ...]
    default_model: str  # Hub id or folder
    threshold: float  # distance at or below which reconstructions count as the image
    guidance_scale: float
    domain: str  # default initial word of the learned tokens
    distance_name: str  # the distance's name for people, e.g. "DreamSim"
    check_name: str  # the in-distribution check's name for people, e.g. "edit check"
    # where `threshold` comes from, for people (recorded in every report that uses it)
    threshold_source: str
    # (model_id) -> True when that model belongs to this world (folder markers etc.)
    owns: Callable[[str], bool]
    # (device, options) -> (distance, in-distribution check); options: dreamsim_type, clip_model, cache_dir
    judges: Callable[..., tuple[Any, Any]]
    # (model_id) -> None when it can run here, else why not (a sentence for people)
    unavailable: Callable[[str], str | None] = lambda model_id: None
    # domain -> inversion templates
    templates: Callable[[str], tuple[str, ...]] = lambda domain: (
        ART_TEMPLATES if domain in ART_DOMAINS else OBJECT_TEMPLATES)
    # example images in assets/examples: (file name, label)
    examples: tuple[tuple[str, str], ...] = ()
    # (model_id) -> the model's name in reports
    model_label: Callable[[str], str] = lambda model_id: model_id
    # True: a query with no domain gets one picked by CLIP zero-shot over the presets (`sd.pick_domain`);
    # `domain` is then only the fallback
    picks_domain: bool = False
    # (query image, RGB) -> None when the world can judge it, else why not (a sentence for people); run
    # before any inversion unless AnalysisConfig.world_check is "off"
    check_query: Callable[[Any], str | None] = lambda image: None
    # diffusers log messages (prefixes) that are expected for this world's pipelines and not shown
    quiet_messages: tuple[str, ...] = field(default=())
    # (device, dtype) -> how this world compares the query with reference images the user names
    # (`similarity.SimilarityJudge`: copy, and style where it applies); built lazily by `similarity.judge_for`
    similarity: Callable[..., Any] = field(default=lambda device, dtype: _backbone_similarity(device, dtype))
    # copy similarity at or above which a reference counts as a likely copy (AnalysisConfig.copy_line's default):
    # DCR's 0.5 on copy-detection features; a world with its own copy measure sets its own
    copy_line: float = 0.5

    def model_id(self) -> str:
        """$ORIGINALITY_MODEL when it is a model of this world, else the world's default model."""
        env = os.environ.get("ORIGINALITY_MODEL", "").strip()
        return env if env and world_of_model(env) is self else self.default_model

    def check_available(self, model_id: str) -> None:
        """Raise ValueError (a sentence for people) when `model_id` cannot run here."""
        why = self.unavailable(model_id)
        if why:
            raise ValueError(why)


_WORLDS: dict[str, World] = {}
_BUILTIN_LOADED = False


def register(world: World) -> World:
    """Add (or replace) a world; the first registered that `owns` a model wins, SD last."""
    _WORLDS[world.name] = world
    return world


def _builtins() -> dict[str, World]:
    global _BUILTIN_LOADED
    if not _BUILTIN_LOADED:
        _BUILTIN_LOADED = True
        import originality.shapes  # noqa: F401, PLC0415 - registers the shapes world (cheap: no torch)
    return _WORLDS


def all_worlds() -> list[World]:
    """Every registered world, Stable Diffusion last (it owns any model no other world claims)."""
    found = list(_builtins().values())
    return [w for w in found if w.name != WORLD_SD] + [w for w in found if w.name == WORLD_SD]


def get_world(name: str) -> World:
    """The world called `name` or one of its aliases; ValueError lists the choices."""
    for w in all_worlds():
        if name == w.name or name in w.aliases:
            return w
    choices = ", ".join(f"{w.name} ({'/'.join(w.aliases)})" if w.aliases else w.name for w in all_worlds())
    raise ValueError(f"unknown model world {name!r}; choose one of {choices}")


def world_of_model(model_id: str) -> World:
    """The world a model (Hub id or folder) belongs to."""
    return next(w for w in all_worlds() if w.owns(model_id))


def default_world() -> tuple[World, str]:
    """(world, why) for a caller that names none: $ORIGINALITY_MODEL's world, else the first that runs here."""
    env = os.environ.get("ORIGINALITY_MODEL", "").strip()
    if env:
        return world_of_model(env), f"set by ORIGINALITY_MODEL ({env})"
    sd = get_world(WORLD_SD)
    if sd.unavailable(sd.default_model) is None:
        return sd, "a CUDA GPU is available to run it"
    shapes = next(w for w in all_worlds() if w is not sd)
    from .device import gpu_problem  # noqa: PLC0415

    problem = gpu_problem()
    if problem:  # a GPU torch cannot use is not "no GPU": say so
        return shapes, f"{problem} The small shapes world runs on a CPU"
    return shapes, "there is no CUDA GPU here, and the small shapes world runs on a CPU"


def resolve_model_id(model: str | None) -> str:
    """A model argument as a Hub id or folder: None/"auto" -> `default_model_id()`, a world name or alias ->
    that world's model, anything else as given."""
    if model in (None, "", "auto"):
        return default_model_id()
    for w in all_worlds():
        if model == w.name or model in w.aliases:
            return w.default_model
    return model


def default_model_id() -> str:
    """$ORIGINALITY_MODEL, else Stable Diffusion v1.4 where it can run, else the bundled shapes world."""
    env = os.environ.get("ORIGINALITY_MODEL")
    if env:
        return env
    return default_world()[0].default_model


# --------------------------------------------------------------------------- Stable Diffusion


def sd_available(model_id: str = SD_MODEL_ID) -> bool:
    """True where a Stable Diffusion run makes sense: a GPU, and weights cached or downloadable."""
    import torch  # noqa: PLC0415

    if not torch.cuda.is_available():
        from .device import gpu_problem  # noqa: PLC0415

        if gpu_problem():
            logger.warning(gpu_problem())
        return False
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("1", "true", "True"):
        return True
    from huggingface_hub import try_to_load_from_cache  # noqa: PLC0415

    return isinstance(try_to_load_from_cache(model_id, "model_index.json"), str)


def _sd_unavailable(model_id: str) -> str | None:
    if model_id == SD_MODEL_ID and not sd_available():
        return ("Stable Diffusion needs a CUDA GPU and its weights; this server has no GPU (or cannot download "
                "the weights). Choose the shapes world.")
    return None


def _sd_judges(device, *, dreamsim_type: str = "ensemble", clip_model: str = "openai/clip-vit-base-patch32",
               cache_dir=None):
    from pathlib import Path  # noqa: PLC0415

    from .metrics import ClipEditCheck, DreamSimDistance, default_cache_dir  # noqa: PLC0415

    cache = Path(cache_dir) / "dreamsim" if cache_dir else default_cache_dir("dreamsim")
    return (DreamSimDistance(dreamsim_type=dreamsim_type, device=device, cache_dir=cache),
            ClipEditCheck(model_id=clip_model, device=device))


def _backbone_similarity(device, dtype):
    from .similarity import BackboneSimilarity  # noqa: PLC0415

    return BackboneSimilarity(device=device, dtype=dtype)


register(World(
    name=WORLD_SD, title="Stable Diffusion", aliases=("sd",), default_model=SD_MODEL_ID,
    threshold=SD_THRESHOLD, threshold_source=SD_THRESHOLD_SOURCE, guidance_scale=SD_GUIDANCE, domain="house",
    picks_domain=True, distance_name="DreamSim",
    check_name="edit check", owns=lambda model_id: True, judges=_sd_judges, unavailable=_sd_unavailable,
    examples=(("sd_house.png", "SD: house"), ("sd_painting.png", "SD: painting")),
))
