"""Smoke tests of the shipped shapes-world model (assets/shapes-model) on the CPU.

Skipped when the model has not been trained yet (`python -m originality.experiments.train`).
$ORIGINALITY_SHAPES_MODEL points the tests at another shapes-world folder.

Loose on purpose, since this runs in CI: the model must draw the prompted
elements in at least half of a few seeded images (the real quality gate is
`python -m originality.experiments.evaluate`, >= 80%), and a whole `analyze` with the
fast preset must finish and give a self-consistent report. The score itself is
not asserted: it depends on the trained weights.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from pathlib import Path

import pytest

from originality.labels import label_rank
from originality.analysis import analyze, generate, resolve_config
from originality.config import AnalysisConfig
from originality.models import load_model
from originality.shapes import SHAPES_GUIDANCE, SHAPES_MODEL_DIR, SHAPES_THRESHOLD, WORLD_SHAPES
from originality.shapes import dataset
from originality.shapes.detector import detect
from originality.shapes.model import colour_binding, is_shapes_model
from originality.shapes.renderer import render

MODEL_DIR = Path(os.environ.get("ORIGINALITY_SHAPES_MODEL", SHAPES_MODEL_DIR))

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not is_shapes_model(MODEL_DIR),
    reason=f"no trained shapes-world model at {MODEL_DIR} (train it with `python -m originality.experiments.train`, "
           "or set ORIGINALITY_SHAPES_MODEL)",
)]

PROMPTS = {
    "big red full circle": [("circle", "red", "big", "full")],
    "big blue full square": [("square", "blue", "big", "full")],
    "big green full triangle": [("triangle", "green", "big", "full")],
}


@pytest.fixture(scope="module")
def model():
    return load_model(str(MODEL_DIR), device="cpu")


def test_loads_as_the_shapes_world(model) -> None:
    assert model.world.name == WORLD_SHAPES
    assert model.resolution == 64
    assert model.world.guidance_scale == SHAPES_GUIDANCE


@pytest.mark.parametrize("prompt", list(PROMPTS))
def test_draws_the_prompted_elements(model, prompt: str) -> None:
    config = resolve_config(AnalysisConfig.preset("fast", generation_batch_size=4), model)
    images = generate(model.pipeline, prompt, 4, seed=0, config=config, resolution=model.resolution)
    assert len(images) == 4 and all(im.size == (64, 64) for im in images)
    want = Counter(PROMPTS[prompt])
    found = [Counter(d.key for d in detect(im)) for im in images]
    hits = sum(not (want - f) for f in found)  # every prompted element detected (extras allowed)
    detail = "; ".join(", ".join(" ".join(k) for k in sorted(f)[:6]) or "nothing" for f in found)
    assert hits >= 2, f"{prompt!r}: prompted elements found in {hits}/4 images; detected: {detail}"


def test_text_encoder_binds_colours_to_shapes(model) -> None:
    """Trained with the binding loss, a shape word's state holds its own colour, not its partner's
    (the model before it: 0.49 own / 0.49 other, and it swapped colours between shapes)."""
    binding = colour_binding(model.pipeline.tokenizer, model.pipeline.text_encoder)
    assert binding["own"] > 0.9 and binding["other"] < 0.1, binding


def test_draws_common_pairs(model) -> None:
    """COMMON pairs over all 9 colour combinations: the shipped model drew exactly the prompted
    pair in 90% of images at the quality gate (evaluate.py, 8 per prompt); a random model in 0%."""
    from originality.experiments.evaluate import seen_prompts  # noqa: PLC0415

    config = resolve_config(AnalysisConfig.preset("fast", generation_batch_size=4), model)
    pairs = [spec for spec in seen_prompts() if spec.group == "common pairs"]
    assert len(pairs) == 9
    hits = 0
    for spec in pairs:
        images = generate(model.pipeline, spec.prompt, 4, seed=0, config=config, resolution=model.resolution)
        want = Counter(spec.elements)
        hits += sum(not (want - Counter(d.key for d in detect(im))) for im in images)
    assert hits >= 0.5 * 4 * len(pairs), f"both prompted elements in only {hits}/{4 * len(pairs)} images"


def test_fast_analysis_of_a_common_image(model, tmp_path) -> None:
    query = render(dataset.query("common", 0, 0).elements)
    config = AnalysisConfig.preset("fast")
    rows = model.pipeline.text_encoder.get_input_embeddings().weight.shape[0]
    report = analyze(query, config, model)

    # 1..5 token lengths, tried in order, stopping at the first that passes
    assert 1 <= len(report.results) <= 5
    assert [r.num_tokens for r in report.results] == list(range(1, len(report.results) + 1))
    assert report.max_tokens == 5 and report.threshold == SHAPES_THRESHOLD
    assert all(not r.passed for r in report.results[:-1])
    if report.score is None:
        assert len(report.results) == 5 and not report.results[-1].passed and report.label == "5+"
    else:
        assert report.score == len(report.results) and report.results[-1].passed
        assert report.label == str(report.score)
    for r in report.results:
        assert r.passed == (r.distance_passed and r.check_passed)
        assert len(r.distances) == config.num_reconstructions == len(r.reconstructions)
        assert all(0.0 <= d <= 1.0 for d in r.distances)
        assert r.distance_passed == (r.mean_distance <= report.threshold)
        assert r.edits == []  # the shapes world's check needs no edit images
        assert len(r.check_scores) == config.num_reconstructions
        assert len(r.losses) == config.steps and all(math.isfinite(x) for x in r.losses)
        assert tuple(r.embeddings.shape) == (r.num_tokens, model.pipeline.text_encoder.config.hidden_size)
    assert report.model["world"] == WORLD_SHAPES and report.model["distance"] == "element-f1"
    assert report.config["guidance_scale"] == SHAPES_GUIDANCE
    # the tokens the analysis added are gone again
    assert model.pipeline.text_encoder.get_input_embeddings().weight.shape[0] == rows
    assert not any(t.startswith("<s") for t in model.pipeline.tokenizer.get_vocab())

    summary = json.loads(json.dumps(report.summary()))
    assert summary["label"] == report.label and summary["score"] == report.score
    assert len(summary["results"]) == len(report.results)
    assert report.save(tmp_path / "report").joinpath("report.json").is_file()


# The method's central claim on the shipped model: a drawing of a pair the model saw often (COMMON) needs fewer
# learned tokens than one of a pair it never saw (UNSEEN). Fixed images chosen before running: the first four
# varied drawings of each group at the figure-6 seed (0), no selection; a reduced budget that fits CI
# (`benchmarks/figure6_varied.json` has the full fast preset on 20 images per group: COMMON mostly 1, UNSEEN 2..5+).
CLAIM_INDEXES = (0, 1, 2, 3)
CLAIM_BUDGET = dict(max_tokens=2, steps=100, batch_size=4)


@pytest.mark.slow  # (the whole module is slow; said again: this one takes minutes)
def test_common_drawings_score_below_unseen_ones(model) -> None:
    from originality.experiments.figure6 import query_image

    config = AnalysisConfig.preset("fast", **CLAIM_BUDGET)
    numbers: dict[str, list[int]] = {}
    detail = []
    for group in ("common", "unseen"):
        for index in CLAIM_INDEXES:
            caption, image = query_image(group, 0, index, "varied")
            report = analyze(image, config, model)
            numbers.setdefault(group, []).append(label_rank(report.label))  # "2+" -> 3
            detail.append(f"{group} {index} ({caption}): {report.label}, mean distances "
                          f"{[round(r.mean_distance, 3) for r in report.results]}")
    common, unseen = (sum(numbers[g]) / len(numbers[g]) for g in ("common", "unseen"))
    assert common < unseen, f"COMMON {common:.2f} is not below UNSEEN {unseen:.2f}:\n" + "\n".join(detail)
