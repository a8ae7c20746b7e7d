"""What a model world is: the one home of world knowledge (a leaf module: it imports no other part of the engine).

A world is a kind of text-to-image model together with what judges it: its default model, distance
threshold (and where that number comes from), guidance scale and domain word, its inversion templates,
the distance and in-distribution check built for a loaded pipeline (and the check's one name for
people), how it compares an image with reference images, and which file marks a model folder as
one of its models. Each world module defines its `WORLD` (`originality.sd`, `originality.shapes`);
the registry (`originality.worlds`) lists them and answers "which world is this model".

Every other module reads world knowledge from here (`OriginalityModel.world`, `worlds.get_world`);
nothing copies it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .config import ART_DOMAINS
from .templates import ART_TEMPLATES, OBJECT_TEMPLATES

# `World.threshold_sentence` for a threshold the user gave (the record and report.json say it).
THRESHOLD_SETTING_SOURCE = "set for this run (threshold setting)"
# The check's name for a report of a world this installation does not know (`worlds.check_name_of`).
UNKNOWN_CHECK_NAME = "in-distribution check"


def _default_templates(domain: str) -> tuple[str, ...]:
    return ART_TEMPLATES if domain in ART_DOMAINS else OBJECT_TEMPLATES


def _always_available(model_id: str) -> str | None:
    return None


def _any_image(image: Any) -> str | None:
    return None


def _same_label(model_id: str) -> str:
    return model_id


@dataclass(frozen=True)
class World:
    """One model world (see the module docstring)."""

    name: str  # the one name used everywhere (reports, app, CLI)
    title: str  # for people: "Stable Diffusion"
    aliases: tuple[str, ...]
    default_model: str  # Hub id or folder
    threshold: float  # distance at or below which reconstructions count as the image
    # where `threshold` comes from, for people (recorded in every report that uses it: `threshold_sentence`)
    threshold_source: str
    guidance_scale: float
    domain: str  # default initial word of the learned tokens
    distance_name: str  # the distance's name for people, e.g. "DreamSim"
    check_name: str  # the in-distribution check's one name for people: "edit check", "layout check"
    # (device, options) -> (distance, in-distribution check); options: dreamsim_type, clip_model, cache_dir
    judges: Callable[..., tuple[Any, Any]]
    # the file whose presence in a model folder marks the folder as this world's model; None: the world has
    # no marker and owns the models no other world claims (the registry lists it last)
    marker: str | None = None
    # True: `default_model` ships with this package (assets/), so a run of it is a run of the bundled model
    bundled: bool = False
    # (model_id) -> None when it can run here, else why not (a sentence for people)
    unavailable: Callable[[str], str | None] = _always_available
    # domain -> inversion templates
    templates: Callable[[str], tuple[str, ...]] = _default_templates
    # example images in assets/examples: (file name, label)
    examples: tuple[tuple[str, str], ...] = ()
    # (model_id) -> the model's name in reports
    model_label: Callable[[str], str] = _same_label
    # True: a query with no domain gets one picked by CLIP zero-shot over the presets (`sd.pick_domain`);
    # `domain` is then only the fallback
    picks_domain: bool = False
    # (query image, RGB) -> None when the world can judge it, else why not (a sentence for people); run
    # before any inversion unless AnalysisConfig.world_check is "off"
    check_query: Callable[[Any], str | None] = _any_image
    # (query image at the model's resolution) -> the world's own drawing of what it shows, or None where it reads
    # nothing (`AnalysisConfig.redraw`); None: the world has no drawing of its own, so the setting does nothing
    redraw: Callable[[Any], Any] | None = None
    # diffusers log messages (prefixes) that are expected for this world's pipelines and not shown
    quiet_messages: tuple[str, ...] = ()
    # (device, dtype) -> how this world compares the query with reference images the user names
    # (`similarity.SimilarityJudge`: copy, and style where it applies), built lazily by `similarity.judge_for`;
    # None: the copy and style backbones (`similarity.BackboneSimilarity`)
    similarity: Callable[..., Any] | None = None
    # copy similarity at or above which a reference counts as a likely copy (AnalysisConfig.copy_line's default):
    # DCR's 0.5 on copy-detection features; a world with its own copy measure sets its own
    copy_line: float = 0.5

    def matches(self, name: str | None) -> bool:
        """True when `name` is this world's name or one of its aliases (the one alias matcher)."""
        return name == self.name or name in self.aliases

    def marks(self, model_id: str) -> bool:
        """True when `model_id` is a folder holding this world's marker file (never for a world without one)."""
        return self.marker is not None and (Path(model_id) / self.marker).is_file()

    def bundles(self, model_id: str) -> bool:
        """True when `model_id` is this world's bundled model (the folder shipped in assets/), however spelled."""
        return self.bundled and Path(model_id).is_dir() and \
            Path(model_id).resolve() == Path(self.default_model).resolve()

    def threshold_sentence(self, given: float | None) -> str:
        """Where an analysis' threshold came from, for people: the one sentence of the record and of
        `Report.threshold_source`. `given`: the threshold setting as the user gave it (None: the world's default)."""
        return THRESHOLD_SETTING_SOURCE if given is not None else self.threshold_source

    def check_available(self, model_id: str) -> None:
        """Raise ValueError (a sentence for people) when `model_id` cannot run here."""
        why = self.unavailable(model_id)
        if why:
            raise ValueError(why)
