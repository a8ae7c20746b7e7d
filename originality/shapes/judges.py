"""The shapes world's distance metric and in-distribution check.

Both read images through the rule-based detector (`originality.shapes.detector`):

- `ElementDistance` ("element-f1"): 1 - F1 between the multisets of detected
  (shape, colour) of the query and of each image. 0 = the same elements, 1 = none
  in common.
- `LayoutSimilarity` (copy similarity to a reference image, `originality.similarity`): the share of
  elements the two layouts have in common, the same element at the same place; style does not apply.
- `LayoutVariationCheck` ("layout-variation"): the paper's in-distribution test for
  the synthetic setting. A concept the model has learned is drawn at new positions
  from seed to seed; tokens that merely copy the query put every element back where
  the query has it. The check needs no edit images (`uses_edits = False`).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from dataclasses import dataclass, field

from PIL import Image

from ..images import centre_square
from ..metrics import CheckResult
from .detector import MIN_AREA, Detection, detect


def element_f1_distance(a: Counter, b: Counter) -> float:
    """1 - F1 between two multisets: 0.0 when both are empty, 1.0 when only one is."""
    na, nb = sum(a.values()), sum(b.values())
    if na == 0 and nb == 0:
        return 0.0
    if na == 0 or nb == 0:
        return 1.0
    common = sum((a & b).values())
    # F1 = 2PR / (P + R) with P = common / nb, R = common / na, i.e. 2 common / (na + nb).
    return 1.0 - 2.0 * common / (na + nb)


def _elements(detections: list[Detection]) -> Counter:
    return Counter((d.shape, d.colour) for d in detections)


@dataclass
class ElementDistance:
    """Distance between shapes-world images as 1 - F1 of their detected (shape, colour) multisets.

    Size, texture and position are ignored: the query "red circle and blue square"
    and an image with only a red circle share one element of 2 and 1, so F1 =
    2 * 1 / (2 + 1) = 2/3 and the distance is 1/3. Lower = closer.
    """

    min_area: int = MIN_AREA
    name: str = field(init=False, default="element-f1")

    def __call__(self, query: Image.Image, images: list[Image.Image]) -> list[float]:
        q = _elements(detect(query, min_area=self.min_area))
        return [element_f1_distance(q, _elements(detect(im, min_area=self.min_area))) for im in images]


def match_elements(query: list[Detection], image: list[Detection], key=lambda d: (d.shape, d.colour),
                   radius: float = math.inf) -> list[tuple[int, int, float]]:
    """Greedy nearest matching of `image`'s elements to `query`'s with the same `key` (default (shape, colour)),
    at most `radius` px apart.

    Returns (query index, image index, displacement in px) for each matched pair,
    closest pairs first; each element is matched at most once.
    """
    pairs = [
        (dist, i, j)
        for (i, q), (j, d) in itertools.product(enumerate(query), enumerate(image))
        if key(q) == key(d) and (dist := math.hypot(q.x - d.x, q.y - d.y)) <= radius
    ]
    used_q: set[int] = set()
    used_d: set[int] = set()
    matched = []
    for dist, i, j in sorted(pairs):
        if i in used_q or j in used_d:
            continue
        used_q.add(i)
        used_d.add(j)
        matched.append((i, j, dist))
    return matched


@dataclass
class LayoutVariationCheck:
    """Do the reconstructions place the query's elements elsewhere than the query does?

    Each reconstruction's detected elements are matched to the query's by (shape,
    colour), nearest first. A reconstruction is a *copy* when at least one element
    matched and every matched element lies within `copy_radius` px of its query
    element. Its score is 1.0 when it is not a copy and 0.0 when it is (so a
    reconstruction with no element in common with the query, or no element at all,
    scores 1.0: it copies nothing; how well it reconstructs is the distance
    metric's business).

    The check passes when at least `pass_fraction` of the reconstructions are not
    copies and the seeds do not all give one layout: when two or more
    reconstructions have matched elements, some query element must be placed at
    positions more than `copy_radius / 2` px apart by two of them. A query with
    no detected element has no layout to copy: every score is 1.0 and the check
    passes. `edits` and `subject` are ignored.
    """

    copy_radius: float = 4.0
    min_area: int = MIN_AREA
    name: str = field(init=False, default="layout-variation")
    uses_edits: bool = field(init=False, default=False)

    def __call__(
        self,
        query: Image.Image,
        reconstructions: list[Image.Image],
        edits: list[Image.Image],
        *,
        subject: str,
        pass_fraction: float,
        domain: str | None = None,
    ) -> CheckResult:
        n = len(reconstructions)
        if n == 0:
            return CheckResult(False, [], "no reconstructions to check")
        q = detect(query, min_area=self.min_area)
        if not q:
            return CheckResult(True, [1.0] * n, "no elements detected in the query: there is no layout to copy")
        scores: list[float] = []
        # positions[i] = where each reconstruction with matches puts query element i
        positions: dict[int, list[tuple[float, float]]] = {}
        displacements: list[float] = []  # mean displacement of each reconstruction with matches
        for image in reconstructions:
            dets = detect(image, min_area=self.min_area)
            matched = match_elements(q, dets)
            copy = bool(matched) and all(dist <= self.copy_radius for _, _, dist in matched)
            scores.append(0.0 if copy else 1.0)
            if matched:
                displacements.append(sum(dist for _, _, dist in matched) / len(matched))
                for i, j, _ in matched:
                    positions.setdefault(i, []).append((dets[j].x, dets[j].y))
        moved = int(sum(scores))
        summary = f"{moved}/{n} reconstructions place the elements elsewhere than the query"
        if displacements:
            summary += f" (mean displacement {sum(displacements) / len(displacements):.1f} px)"
        if moved < pass_fraction * n:
            return CheckResult(False, scores, summary)
        if len(displacements) >= 2 and self.layout_spread(positions) <= self.copy_radius / 2:
            return CheckResult(False, scores, f"every seed gives the same layout ({summary})")
        return CheckResult(True, scores, summary)

    @staticmethod
    def layout_spread(positions: dict[int, list[tuple[float, float]]]) -> float:
        """Largest distance between two reconstructions' positions of one query element.

        Infinite when no query element is matched in two reconstructions (their
        matched elements differ, so their layouts do).
        """
        spreads = [
            max(math.hypot(a[0] - b[0], a[1] - b[1]) for a, b in itertools.combinations(points, 2))
            for points in positions.values()
            if len(points) >= 2
        ]
        return max(spreads) if spreads else math.inf


@dataclass
class LayoutSimilarity:
    """The shapes world's copy similarity to a reference: how much of the layout the two images share.

    Elements are detected in both images and matched greedily, nearest first, when they agree in shape,
    colour, size and texture and lie at most `radius` px apart (64 px frame). The score is the F1 of the
    match, 2 * matched / (elements in one + elements in the other), in [0, 1]: 1 = the same elements at
    the same places (two images without any element also score 1), 0 = nothing in common; higher = more
    alike. Style does not apply: every image of this world is drawn in one style (flat red, green or
    blue shapes on white), so `style` returns None and `style_note` says why. No weights to load.
    """

    radius: float = 4.0
    min_area: int = MIN_AREA
    copy_measure: str = field(init=False, default="layout match: the F1 of the elements two images share (same "
                                                  "shape, colour, size and texture, at most 4 px apart), in [0, 1]")
    style_measure: None = field(init=False, default=None)
    style_note: str = field(init=False, default="style does not apply in the shapes world: every image of it is "
                                                "drawn in one style (flat red, green or blue shapes on white)")

    def layout_match(self, a: list[Detection], b: list[Detection]) -> float:
        """F1 of the elements `a` and `b` share at the same place (see the class docstring)."""
        if not a and not b:
            return 1.0
        matched = match_elements(a, b, key=lambda d: (d.shape, d.colour, d.size, d.texture), radius=self.radius)
        return 2.0 * len(matched) / (len(a) + len(b))

    def copy(self, images: list[Image.Image], references: list[Image.Image]) -> list[list[float]]:
        # a reference is read as a query is, its centre square (the layout's frame), never squashed to one
        refs = [detect(centre_square(r), min_area=self.min_area) for r in references]
        found = (detect(centre_square(im), min_area=self.min_area) for im in images)
        return [[self.layout_match(mine, r) for r in refs] for mine in found]

    def style(self, images: list[Image.Image], references: list[Image.Image]) -> None:
        return None

    def backbones(self) -> dict:
        return {"copy": {"id": "shapes detector (originality.shapes.detector, no weights)"}, "style": None}
