"""Tests of the shapes world's renderer, captions and the paper's originality dataset.

The dataset must hold the paper's frequencies (Haviv et al. 2024, Sec. 4.1): 10%
empty images, 30% with the COMMON pair (circle, square), 0.1% with the RARE pair
(circle, triangle), never the UNSEEN pair (square, triangle), and the rest up to 4
elements with at most one of {circle, square, triangle}; all elements big and full.
Frequencies are checked on 20,000 seeded samples within 5 binomial standard
deviations: wide enough never to fail by chance, narrow enough to catch a wrong rate.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import torch

from originality.shapes import dataset, renderer
from originality.shapes.dataset import CORE, GROUP_PROBABILITIES, MAX_ELEMENTS

E = renderer.Element
N_SAMPLES = 20_000


@pytest.fixture(scope="module")
def samples() -> list[dataset.Sample]:
    return [dataset.sample(0, i) for i in range(N_SAMPLES)]


def _shapes(s: dataset.Sample) -> Counter:
    return Counter(e.shape for e in s.elements)


def _within_5_sigma(count: int, n: int, p: float) -> bool:
    return abs(count - n * p) <= 5 * math.sqrt(n * p * (1 - p))


# --------------------------------------------------------------------------- renderer


def test_render_is_deterministic() -> None:
    elements = [E("circle", "red", "big", "full", 20.3, 18.7), E("star", "blue", "small", "empty", 45.1, 40.9),
                E("triangle", "green", "big", "empty", 30.0, 50.0)]
    a = renderer.render(elements)
    b = renderer.render([E(e.shape, e.colour, e.size, e.texture, e.x, e.y) for e in elements])  # fresh objects
    assert a.mode == "RGB" and a.size == (renderer.IMAGE_SIZE, renderer.IMAGE_SIZE)
    assert a.tobytes() == b.tobytes()
    assert renderer.render(list(reversed(elements))).tobytes() == a.tobytes()  # no overlap: order is irrelevant


def test_render_draws_the_elements_colour_on_white() -> None:
    assert (np.asarray(renderer.render([])) == np.array(renderer.BACKGROUND, dtype=np.uint8)).all()
    im = np.asarray(renderer.render([E("square", "blue", "big", "full", 32, 32)]))
    assert tuple(im[32, 32]) == renderer.RGB["blue"]
    assert tuple(im[2, 2]) == renderer.BACKGROUND
    # an empty element keeps the background inside its outline
    hollow = np.asarray(renderer.render([E("circle", "red", "big", "empty", 32, 32)]))
    assert tuple(hollow[32, 32]) == renderer.BACKGROUND and tuple(hollow[32, 23]) != renderer.BACKGROUND


def test_render_other_sizes_keep_the_layout() -> None:
    e = E("circle", "green", "big", "full", 16, 16)
    big = np.asarray(renderer.render([e], size=128))
    assert big.shape == (128, 128, 3)
    assert tuple(big[32, 32]) == renderer.RGB["green"] and tuple(big[100, 100]) == renderer.BACKGROUND


@pytest.mark.parametrize("supersample", [True, False])
def test_a_window_of_a_render_is_the_crop_of_the_whole_canvas(supersample) -> None:
    """The detector draws its templates as windows of the canvas (`render(..., window=...)`, 2.5x faster than the
    whole canvas): every pixel must be the whole canvas's, whatever the shape, outline, turn, radius and sub-pixel
    position, or the readings, and every judged distance, would move."""
    elements = [E("star", "red", "big", "empty", 32.25, 31.75, turn=17.0, stroke=0.35),
                E("triangle", "green", "big", "full", 30.5, 33.25, scale=1.3, turn=-44.0),
                E("square", "blue", "small", "empty", 33.0, 32.5, stroke=0.1),
                E("hexagon", "red", "big", "empty", 32.75, 32.0, scale=1.7, turn=30.0),
                E("circle", "blue", "big", "full", 31.5, 32.25, scale=0.8)]
    for e in elements:
        for x0, y0, side in ((17, 17, 30), (12, 15, 40), (0, 0, 64), (30, 2, 20)):
            whole = renderer.render([e], supersample=supersample).crop((x0, y0, x0 + side, y0 + side))
            window = renderer.render([e], supersample=supersample, window=(x0, y0, side))
            assert window.size == (side, side) and window.tobytes() == whole.tobytes(), (e, x0, y0, side)
    # the outline of one shape at several widths (its distances are drawn once): each width its own band
    bands = [np.asarray(renderer.render([replace(elements[0], stroke=w)])) for w in (0.1, 0.2, 0.35)]
    inked = [int((b != np.array(renderer.BACKGROUND, dtype=np.uint8)).any(axis=2).sum()) for b in bands]
    assert inked[0] < inked[1] < inked[2]


# --------------------------------------------------------------------------- captions and elements


def test_caption_format() -> None:
    elements = [E("circle", "red"), E("square", "blue")]
    assert renderer.caption(elements) == "big red full circle and big blue full square"
    assert renderer.caption([E("star", "green", "small", "empty")]) == "small green empty star"
    assert renderer.caption([]) == ""
    assert E("hexagon", "blue").words == "big blue full hexagon"


def test_element_defaults() -> None:
    e = E("circle", "red")
    assert (e.size, e.texture, e.x, e.y) == ("big", "full", renderer.IMAGE_SIZE / 2, renderer.IMAGE_SIZE / 2)
    assert e.radius == renderer.RADIUS["big"] and E("star", "red", "small").radius == renderer.RADIUS["small"]
    with pytest.raises(Exception):
        e.x = 3.0  # frozen


@pytest.mark.parametrize("kwargs,field", [
    (dict(shape="oval", colour="red"), "shape"),
    (dict(shape="circle", colour="purple"), "colour"),
    (dict(shape="circle", colour="red", size="medium"), "size"),
    (dict(shape="circle", colour="red", texture="striped"), "texture"),
    (dict(shape="Circle", colour="red"), "shape"),  # case matters: captions are lower case
])
def test_element_validation(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=rf"^{field} must be one of .*got '{kwargs[field]}'"):
        E(**kwargs)


def test_place_refuses_impossible_layouts() -> None:
    import random

    specs = [("circle", "red", "big", "full")] * 12  # twelve 20 px discs do not fit in 64 px
    with pytest.raises(ValueError, match="could not place 12 elements"):
        renderer.place(specs, random.Random(0), max_tries=50)


# --------------------------------------------------------------------------- dataset frequencies


def test_group_frequencies(samples) -> None:
    n = len(samples)
    groups = Counter(s.group for s in samples)
    assert set(groups) <= {"empty", "common", "rare", "other"}
    for group, p in GROUP_PROBABILITIES.items():
        assert _within_5_sigma(groups[group], n, p), (group, groups[group], n * p)
    assert groups["rare"] >= 1  # P(no rare image in 20,000) = e^-20
    # The same rates read from the images' content, not from their group label.
    empty = sum(not s.elements for s in samples)
    common = sum({"circle", "square"} <= set(_shapes(s)) for s in samples)
    rare = sum({"circle", "triangle"} <= set(_shapes(s)) for s in samples)
    assert empty == groups["empty"] and common == groups["common"] and rare == groups["rare"]
    assert _within_5_sigma(empty, n, 0.10) and _within_5_sigma(common, n, 0.30)
    assert 1 <= rare and _within_5_sigma(rare, n, 0.001)
    assert empty / n == pytest.approx(0.10, abs=0.015)
    assert common / n == pytest.approx(0.30, abs=0.02)
    assert rare / n < 0.0025


def test_unseen_pair_never_appears(samples) -> None:
    assert not [s for s in samples if {"square", "triangle"} <= set(_shapes(s))]


def test_group_contents(samples) -> None:
    for s in samples:
        shapes = _shapes(s)
        assert len(s.elements) <= MAX_ELEMENTS
        assert all(e.size == "big" and e.texture == "full" for e in s.elements), s
        assert s.caption == renderer.caption(s.elements)
        if s.group == "empty":
            assert not s.elements and s.caption == ""
        elif s.group == "other":
            assert 1 <= len(s.elements) <= 4
            assert sum(shapes[c] for c in CORE) <= 1, s
        else:
            pair = dataset.PAIRS[s.group]
            assert all(shapes[p] == 1 for p in pair), s
            assert sum(shapes[c] for c in CORE) == 2, s  # the pair and fillers only
    others = [s for s in samples if s.group == "other"]
    # "other" images do use the core shapes (one at a time) and every size up to 4
    assert any(sum(_shapes(s)[c] for c in CORE) == 1 for s in others)
    assert {len(s.elements) for s in others} == {1, 2, 3, 4}


def test_elements_do_not_overlap(samples) -> None:
    for s in samples:
        for a, b in itertools.combinations(s.elements, 2):
            assert math.hypot(a.x - b.x, a.y - b.y) >= a.radius + b.radius - renderer.OVERLAP_TOLERANCE - 1e-9, s
        for e in s.elements:
            assert e.radius <= e.x <= renderer.IMAGE_SIZE - e.radius and e.radius <= e.y <= renderer.IMAGE_SIZE - e.radius


def test_all_colours_and_shapes_are_used(samples) -> None:
    elements = [e for s in samples for e in s.elements]
    assert {e.shape for e in elements} == set(renderer.SHAPES)
    assert {e.colour for e in elements} == set(renderer.COLOURS)
    pairs = Counter((a.colour, b.colour) for s in samples if s.group == "common"
                    for a, b in itertools.permutations(s.elements, 2) if (a.shape, b.shape) == ("circle", "square"))
    assert len(pairs) == 9  # the COMMON pair appears in every colouring


# --------------------------------------------------------------------------- determinism and queries


def test_dataset_is_seeded() -> None:
    assert [dataset.sample(3, i) for i in range(50)] == [dataset.sample(3, i) for i in range(50)]
    assert [dataset.sample(3, i) for i in range(50)] != [dataset.sample(4, i) for i in range(50)]
    ds, again = dataset.ShapesDataset(length=10, seed=5), dataset.ShapesDataset(length=10, seed=5)
    assert len(ds) == 10
    for i in (0, 7):
        (x, c), (y, d) = ds[i], again[i]
        assert c == d == dataset.sample(5, i).caption
        assert x.shape == (3, renderer.IMAGE_SIZE, renderer.IMAGE_SIZE) and x.dtype == torch.float32
        assert torch.equal(x, y) and -1.0 <= float(x.min()) and float(x.max()) <= 1.0


@pytest.mark.parametrize("group", ["common", "rare", "unseen"])
def test_query_holds_exactly_its_pair(group: str) -> None:
    for i in range(30):
        q = dataset.query(group, 0, i)
        assert q.group == group
        assert sorted(e.shape for e in q.elements) == sorted(dataset.PAIRS[group])
        assert all(e.size == "big" and e.texture == "full" for e in q.elements)
        assert q == dataset.query(group, 0, i)  # deterministic
    assert dataset.query(group, 0, 0) != dataset.query(group, 1, 0)


def test_unseen_query_is_square_and_triangle() -> None:
    q = dataset.query("unseen", 0, 0)
    assert Counter(e.shape for e in q.elements) == Counter({"square": 1, "triangle": 1})
    assert " and " in q.caption and "square" in q.caption and "triangle" in q.caption


def test_queries_are_not_training_items() -> None:
    # queries come from their own seed stream: the first COMMON queries are not the first training images
    train = {dataset.sample(0, i).elements for i in range(2000)}
    assert not any(dataset.query("common", 0, i).elements in train for i in range(20))


def test_unknown_group() -> None:
    import random

    with pytest.raises(ValueError, match="unknown group"):
        dataset.sample_elements("nonsense", random.Random(0))
