"""The shapes world: a small text-to-image model of rendered shapes, trained here (see README).

It defines the world (`WORLD`, listed by the registry `originality.worlds`); importing it is
cheap (no torch): the pipeline and the judges are built only when a model is loaded.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..world import World

SHAPES_MODEL_DIR = Path(__file__).resolve().parent.parent.parent / "assets" / "shapes-model"
WORLD_SHAPES = "shapes"
MARKER_FILE = "originality_world.json"  # in a model folder: "this is the shapes world"
# Prompt wrappers seen in training, so that "a photo of S*" is in distribution.
SHAPES_TEMPLATES = (
    "a photo of {}",
    "a picture of {}",
    "an image of {}",
    "a rendering of {}",
    "a drawing of {}",
    "a photo of the {}",
)
# The initial word for inversion in this world: trained to mean "some shapes".
INITIAL_WORD = "shapes"
# Element distance (1 - F1 of detected (shape, colour)) at or below which learned tokens count as a description of
# the query. Set to 0.3 when that was what the model's own best words achieved for familiar content on an earlier
# model (the 80% quantile of the mean distance of images from "a photo of <true caption>" of 24 COMMON queries,
# `python -m originality.experiments.shapes_threshold`), and kept for the shipped model, which draws its COMMON and
# RARE captions almost perfectly (24 queries each, 24 images per query: mean 0.010 and 0.020, 80% quantile 0.014
# and 0.040) and its UNSEEN ones at 0.28 (80% quantile 0.33; benchmarks/shapes_threshold_shipped/): on it that rule
# would give a line only a perfect inversion passes, so 0.3 is now a setting chosen by hand, at the level of a pair
# the model has never seen, drawn from its words.
SHAPES_THRESHOLD = 0.3
SHAPES_THRESHOLD_SOURCE = ("default of the shapes world, chosen by hand (0.3: an earlier model's calibration, kept; "
                           "the shipped model draws familiar captions at 0.01, docs/threshold-and-calibration.md)")
SHAPES_GUIDANCE = 3.0


def is_shapes_model(path) -> bool:
    return WORLD.marks(str(path))


def model_marker(path) -> dict:
    """The shapes model's marker (how it was trained), {} for a folder without one: what a benchmark
    records to tell models apart, whatever path spelled the folder."""
    marker = Path(path) / WORLD.marker
    return json.loads(marker.read_text()) if marker.is_file() else {}


def _judges(device, **options):
    from .judges import ElementDistance, LayoutVariationCheck  # noqa: PLC0415 - start-up: loads torch/numpy only when used

    return ElementDistance(), LayoutVariationCheck()


def _similarity(device, dtype):
    from .judges import LayoutSimilarity  # noqa: PLC0415 - start-up: loads torch/numpy only when used

    return LayoutSimilarity()


def _check_query(image) -> str | None:
    from .scope import check_in_world  # noqa: PLC0415  (numpy and the detector: only when a query is checked)

    return check_in_world(image).message() or None


def _redraw(image):
    from .redraw import redraw  # noqa: PLC0415  (numpy and the detector: only when a query is redrawn)

    return redraw(image)


def _unavailable(model_id: str) -> str | None:
    if not Path(model_id).is_dir():
        return (f"the shapes-world model is not installed here ({model_id} is missing); train it with "
                "`python -m originality.experiments.train --out assets/shapes-model` or set ORIGINALITY_MODEL")
    return None


WORLD = World(
    name=WORLD_SHAPES, title="shapes", aliases=(), default_model=str(SHAPES_MODEL_DIR),
    threshold=SHAPES_THRESHOLD, threshold_source=SHAPES_THRESHOLD_SOURCE, guidance_scale=SHAPES_GUIDANCE,
    domain=INITIAL_WORD,
    distance_name="element distance", check_name="layout check",
    marker=MARKER_FILE, bundled=True,
    judges=_judges, model_label=lambda model_id: Path(model_id).name, unavailable=_unavailable,
    templates=lambda domain: SHAPES_TEMPLATES, check_query=_check_query, redraw=_redraw,
    similarity=_similarity,
    copy_line=1.0,  # the layout match: a copy holds every element of the reference, in place
    # The world's text encoder is a BERT by design (no outside visual knowledge); diffusers'
    # pipeline expects CLIP's and would say so on every load.
    quiet_messages=("Expected types for text_encoder",),
    examples=(("shapes_common.png", "shapes: common pair"), ("shapes_rare.png", "shapes: rare pair"),
              ("shapes_unseen.png", "shapes: unseen pair")),
)
