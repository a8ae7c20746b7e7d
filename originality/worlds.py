"""The registry of model worlds: which worlds the engine knows, and which world a model belongs to.

What a world is, and everything known about one, is `originality.world.World`; each world module
defines its own (`originality.shapes.WORLD`, `originality.sd.WORLD`) and this module lists them. The
CLI's help and the app's choices are read from here; the world names are the one vocabulary ("sd"
is an alias). Importing this module is cheap (no torch): judges and pipelines are built only when a
model is loaded.
"""

from __future__ import annotations

import os

from . import sd, shapes
from .sd import SD_MODEL_ID, WORLD_SD, sd_available  # noqa: F401 - re-exported: the registry's names for them
from .world import UNKNOWN_CHECK_NAME, World

# name -> world. A world with a marker file claims the folders that hold it; Stable Diffusion, which has none,
# comes last and owns every model no other world claims.
_WORLDS: dict[str, World] = {w.name: w for w in (shapes.WORLD, sd.WORLD)}


def all_worlds() -> list[World]:
    """Every world, Stable Diffusion last (it owns any model no other world claims)."""
    found = list(_WORLDS.values())
    return [w for w in found if w.marker is not None] + [w for w in found if w.marker is None]


def find_world(name: str | None) -> World | None:
    """The world called `name` or one of its aliases (`World.matches`); None when there is none."""
    return next((w for w in all_worlds() if w.matches(name)), None)


def get_world(name: str) -> World:
    """The world called `name` or one of its aliases; ValueError lists the choices."""
    found = find_world(name)
    if found is not None:
        return found
    choices = ", ".join(f"{w.name} ({'/'.join(w.aliases)})" if w.aliases else w.name for w in all_worlds())
    raise ValueError(f"unknown model world {name!r}; choose one of {choices}")


def check_name_of(name: str | None) -> str:
    """The in-distribution check's one name for people (`World.check_name`) in the world called `name` (a
    report's `model["world"]`); a generic name for a world this installation does not know."""
    found = find_world(name)
    return found.check_name if found is not None else UNKNOWN_CHECK_NAME


def world_of_model(model_id: str) -> World:
    """The world a model (Hub id or folder) belongs to: the first whose marker its folder holds, else the
    world without a marker (Stable Diffusion)."""
    found = all_worlds()
    return next((w for w in found if w.marks(model_id)), None) or next(w for w in found if w.marker is None)


def world_model_id(world: World) -> str:
    """$ORIGINALITY_MODEL when it is a model of `world`, else the world's default model."""
    env = os.environ.get("ORIGINALITY_MODEL", "").strip()
    return env if env and world_of_model(env) is world else world.default_model


def default_world() -> tuple[World, str]:
    """(world, why) for a caller that names none: $ORIGINALITY_MODEL's world, else the first that runs here."""
    env = os.environ.get("ORIGINALITY_MODEL", "").strip()
    if env:
        return world_of_model(env), f"set by ORIGINALITY_MODEL ({env})"
    sd_world = get_world(WORLD_SD)
    if sd_world.unavailable(sd_world.default_model) is None:
        return sd_world, "a CUDA GPU is available to run it"
    small = get_world(shapes.WORLD_SHAPES)
    from .device import gpu_problem  # noqa: PLC0415 - start-up cost: device imports torch

    problem = gpu_problem()
    if problem:  # a GPU torch cannot use is not "no GPU": say so
        return small, f"{problem} The small shapes world runs on a CPU"
    return small, "there is no CUDA GPU here, and the small shapes world runs on a CPU"


def resolve_model_id(model: str | None) -> str:
    """A model argument as a Hub id or folder: None/"auto" -> `default_model_id()`, a world name or alias ->
    that world's model, anything else as given."""
    if model in (None, "", "auto"):
        return default_model_id()
    named = find_world(model)
    return named.default_model if named is not None else model


def default_model_id() -> str:
    """$ORIGINALITY_MODEL, else Stable Diffusion v1.4 where it can run, else the bundled shapes world."""
    env = os.environ.get("ORIGINALITY_MODEL")
    if env:
        return env
    return default_world()[0].default_model
