"""Tests of the shapes world's metrics: element distance (1 - F1) and the layout-variation check."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
from PIL import Image

from originality.metrics import CheckResult, DistanceMetric, InDistributionCheck
from originality.shapes import renderer
from originality.shapes.detector import Detection
from originality.shapes.judges import (
    ElementDistance,
    LayoutVariationCheck,
    element_f1_distance,
    match_elements,
)

E = renderer.Element
WHITE = renderer.render([])


def _render(*elements: renderer.Element) -> Image.Image:
    return renderer.render(list(elements))


# A query of three elements and the specs to re-place them.
QUERY_ELEMENTS = [
    E("circle", "red", "big", "full", 16.0, 16.0),
    E("square", "blue", "big", "full", 46.0, 20.0),
    E("star", "green", "big", "full", 30.0, 46.0),
]
SPECS = [(e.shape, e.colour, e.size, e.texture) for e in QUERY_ELEMENTS]


@pytest.fixture(scope="module")
def query() -> Image.Image:
    return renderer.render(QUERY_ELEMENTS)


def _replaced(seed: int) -> list[renderer.Element]:
    return renderer.place(SPECS, random.Random(seed))


def _far_layouts(n: int) -> list[list[renderer.Element]]:
    """n re-placements whose every element is > 6 px from the query's (so clearly not copies)."""
    out, seed = [], 0
    while len(out) < n:
        els = _replaced(seed)
        seed += 1
        if all(math.hypot(a.x - b.x, a.y - b.y) > 6 for a, b in zip(els, QUERY_ELEMENTS)):
            out.append(els)
    return out


def test_protocols_and_names() -> None:
    d, c = ElementDistance(), LayoutVariationCheck()
    assert isinstance(d, DistanceMetric) and d.name == "element-f1"
    assert isinstance(c, InDistributionCheck) and c.name == "layout-variation"
    assert c.uses_edits is False and c.copy_radius == 4.0


# ---------------------------------------------------------------- element distance


def test_f1_distance_of_multisets() -> None:
    rc, bs = ("circle", "red"), ("square", "blue")
    assert element_f1_distance(Counter(), Counter()) == 0.0
    assert element_f1_distance(Counter([rc]), Counter()) == 1.0
    assert element_f1_distance(Counter(), Counter([rc])) == 1.0
    assert element_f1_distance(Counter([rc, bs]), Counter([rc, bs])) == 0.0
    # precision 1, recall 1/2: F1 = 2 * 1 * 0.5 / 1.5 = 2/3
    assert element_f1_distance(Counter([rc, bs]), Counter([rc])) == pytest.approx(1 / 3)
    # multiplicity counts: two red circles against one
    assert element_f1_distance(Counter([rc, rc]), Counter([rc])) == pytest.approx(1 / 3)
    assert element_f1_distance(Counter([rc]), Counter([bs])) == 1.0


def test_element_distance_same_image_is_zero(query: Image.Image) -> None:
    assert ElementDistance()(query, [query, query.copy()]) == [0.0, 0.0]


def test_element_distance_ignores_position_size_and_texture(query: Image.Image) -> None:
    moved = renderer.render(_replaced(3))
    restyled = _render(
        E("circle", "red", "small", "empty", 50.0, 50.0),
        E("square", "blue", "small", "full", 12.0, 40.0),
        E("star", "green", "big", "empty", 30.0, 14.0),
    )
    assert ElementDistance()(query, [moved, restyled]) == [0.0, 0.0]


def test_element_distance_disjoint_elements_is_one() -> None:
    q = _render(E("circle", "red", x=20, y=20), E("square", "blue", x=44, y=44))
    other = _render(E("circle", "blue", x=20, y=20), E("triangle", "red", x=44, y=44), E("star", "green", x=20, y=46))
    assert ElementDistance()(q, [other]) == [1.0]


def test_element_distance_partial_match_by_hand() -> None:
    q = _render(E("circle", "red", x=20, y=20), E("square", "blue", x=44, y=44))
    only_circle = _render(E("circle", "red", x=40, y=24))
    # precision 1/1, recall 1/2 -> F1 = 2/3 -> distance 1/3
    extra = _render(E("circle", "red", x=20, y=20), E("square", "blue", x=44, y=44), E("star", "green", x=20, y=46))
    # precision 2/3, recall 1 -> F1 = 0.8 -> distance 0.2
    (d1, d2) = ElementDistance()(q, [only_circle, extra])
    assert d1 == pytest.approx(1 / 3)
    assert d2 == pytest.approx(0.2)


def test_element_distance_with_empty_images(query: Image.Image) -> None:
    assert ElementDistance()(WHITE, [WHITE, query]) == [0.0, 1.0]
    assert ElementDistance()(query, [WHITE]) == [1.0]
    assert ElementDistance()(query, []) == []


# ---------------------------------------------------------------- layout variation


def test_copies_of_the_query_fail(query: Image.Image) -> None:
    result = LayoutVariationCheck()(query, [query] * 4, [], subject="ignored", pass_fraction=0.5)
    assert isinstance(result, CheckResult)
    assert result.passed is False
    assert result.scores == [0.0] * 4
    assert result.detail.startswith("0/4 reconstructions place the elements elsewhere than the query")


def test_nearly_copies_fail(query: Image.Image) -> None:
    # each element shifted by ~2 px: still within copy_radius of the query's layout
    shifted = [renderer.render([E(e.shape, e.colour, e.size, e.texture, e.x + dx, e.y + dy) for e in QUERY_ELEMENTS])
               for dx, dy in ((2, 0), (0, -2), (1.5, 1.5), (-2, 1))]
    result = LayoutVariationCheck()(query, shifted, [], subject="", pass_fraction=0.5)
    assert not result.passed and result.scores == [0.0] * 4


def test_new_random_positions_pass(query: Image.Image) -> None:
    recon = [renderer.render(els) for els in _far_layouts(6)]
    result = LayoutVariationCheck()(query, recon, [], subject="cat", pass_fraction=0.75)
    assert result.passed is True
    assert result.scores == [1.0] * 6
    assert result.detail.startswith("6/6 reconstructions place the elements elsewhere than the query")
    assert "mean displacement" in result.detail


def test_the_same_non_query_layout_every_seed_fails(query: Image.Image) -> None:
    (layout,) = _far_layouts(1)
    recon = [renderer.render(layout)] * 5
    result = LayoutVariationCheck()(query, recon, [], subject="", pass_fraction=0.5)
    assert result.scores == [1.0] * 5  # none is a copy of the query ...
    assert result.passed is False  # ... but they all are one layout
    assert result.detail.startswith("every seed gives the same layout")


def test_pass_fraction(query: Image.Image) -> None:
    far = [renderer.render(els) for els in _far_layouts(2)]
    recon = [query, query, *far]
    check = LayoutVariationCheck()
    half = check(query, recon, [], subject="", pass_fraction=0.5)
    assert half.passed and half.scores == [0.0, 0.0, 1.0, 1.0]
    assert half.detail.startswith("2/4 ")
    assert not check(query, recon, [], subject="", pass_fraction=0.75).passed


def test_copy_radius_is_configurable(query: Image.Image) -> None:
    shifted = renderer.render([E(e.shape, e.colour, e.size, e.texture, e.x + 6, e.y) for e in QUERY_ELEMENTS])
    assert LayoutVariationCheck()(query, [shifted], [], subject="", pass_fraction=1.0).scores == [1.0]
    assert LayoutVariationCheck(copy_radius=8.0)(query, [shifted], [], subject="", pass_fraction=1.0).scores == [0.0]


def test_empty_detections(query: Image.Image) -> None:
    check = LayoutVariationCheck()
    # an empty query has no layout to copy
    empty_query = check(WHITE, [WHITE, query], [], subject="", pass_fraction=1.0)
    assert empty_query.passed and empty_query.scores == [1.0, 1.0]
    assert "no elements" in empty_query.detail
    # blank reconstructions copy nothing (how far they are from the query is the distance's job)
    blank = check(query, [WHITE, WHITE], [], subject="", pass_fraction=1.0)
    assert blank.passed and blank.scores == [1.0, 1.0]
    # reconstructions with other elements only: no match, no copy
    other = _render(E("hexagon", "red", x=16, y=16))
    assert check(query, [other], [], subject="", pass_fraction=1.0).scores == [1.0]
    # no reconstructions at all: nothing shows variation
    none = check(query, [], [], subject="", pass_fraction=0.5)
    assert not none.passed and none.scores == []


def test_match_elements_is_greedy_nearest_by_shape_and_colour() -> None:
    def det(shape, colour, x, y):
        return Detection(shape, colour, "big", "full", x, y, 100)

    q = [det("circle", "red", 10, 10), det("circle", "red", 40, 40), det("square", "blue", 20, 50)]
    im = [det("circle", "red", 38, 41), det("square", "green", 20, 50), det("circle", "red", 12, 10)]
    matched = match_elements(q, im)
    assert sorted((i, j) for i, j, _ in matched) == [(0, 2), (1, 0)]
    dists = {(i, j): d for i, j, d in matched}
    assert dists[(0, 2)] == pytest.approx(2.0)
    assert dists[(1, 0)] == pytest.approx(math.hypot(2, 1))
