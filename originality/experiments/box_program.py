"""The shapes world's layouts drawn by a fourth program: a numpy rasteriser whose shapes fill their element's box.

A third stand-in for the drawings the targets are checked on, written after the detector's wider reading was tuned
on `other_program` (matplotlib) and `pil_program` (PIL), so that its drawings test that reading on conventions it
was not tuned on. A person who draws "a big red square" in an SVG editor or with a few lines of numpy makes
choices of their own; the ones here, each unlike the world's renderer, matplotlib's and PIL's:

- every shape fills the element's box, 2r wide (r the world's radius for its size): the square's side is 2r
  (the renderer's 1.63 r, PIL's and matplotlib's 1.41 r), the triangle is equilateral with a 2r base (the
  renderer's 1.73 r) and its box centred on the element, the hexagon has a flat top as the world's does, its
  corners 2r apart across, and the star's side points touch the box (outer radius 1.05 r) with an inner radius
  half its outer one (the renderer's 0.45, the regular pentagram's 0.38);
- colours from the Tableau palette (matplotlib's default cycle): red (214, 39, 40), green (44, 160, 44), blue
  (31, 119, 180), on a canvas of (250, 250, 250);
- an empty element's outline is a fixed 2 px of the 64 px frame, centred on the edge, whatever the size (a fifth
  of a big shape's radius, over a third of a small one's);
- edges anti-aliased by point sampling `samples` x `samples` times per pixel.

Positions, shapes, colour words, sizes and textures are the layout's, so a drawing here and the world's drawing of
one layout have one caption.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from ..shapes.renderer import IMAGE_SIZE, RADIUS, Element

TABLEAU = {"red": (214, 39, 40), "green": (44, 160, 44), "blue": (31, 119, 180)}
CANVAS = (250, 250, 250)
OUTLINE_PX = 2.0  # an empty element's outline width, in pixels of the 64 px frame
STAR_INNER = 0.5  # the star's inner radius, as a share of its outer one


def _regular(x: float, y: float, circumradius: float, corners: int, start: float) -> list[tuple[float, float]]:
    """Corners of a regular polygon about (x, y), the first at `start` degrees (anticlockwise from +x; y grows
    downwards)."""
    return [(x + circumradius * math.cos(math.radians(start + 360 * k / corners)),
             y - circumradius * math.sin(math.radians(start + 360 * k / corners))) for k in range(corners)]


def polygon(shape: str, x: float, y: float, r: float) -> list[tuple[float, float]] | None:
    """The vertices of `shape` filling the box of side 2r centred on (x, y); None for a circle."""
    if shape == "circle":
        return None
    if shape == "square":
        return [(x - r, y - r), (x + r, y - r), (x + r, y + r), (x - r, y + r)]
    if shape == "triangle":
        height = r * math.sqrt(3)
        return [(x, y - height / 2), (x + r, y + height / 2), (x - r, y + height / 2)]
    if shape == "hexagon":
        return _regular(x, y, r, 6, 0)  # corners at left and right, 2r apart
    if shape == "star":
        outer = r / math.cos(math.radians(18))  # the side points touch the box's sides
        points = _regular(x, y, outer, 5, 90)
        dents = _regular(x, y, STAR_INNER * outer, 5, 90 + 36)
        return [p for pair in zip(points, dents) for p in pair]
    raise ValueError(f"unknown shape {shape!r}")


def _inside(px: np.ndarray, py: np.ndarray, corners: list[tuple[float, float]]) -> np.ndarray:
    """Even-odd point-in-polygon test of sample points (px, py)."""
    inside = np.zeros(px.shape, dtype=bool)
    for (x0, y0), (x1, y1) in zip(corners, corners[1:] + corners[:1]):
        crosses = (y0 > py) != (y1 > py)
        with np.errstate(divide="ignore", invalid="ignore"):
            at = x0 + (py - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (px < at)
    return inside


def _edge_distance(px: np.ndarray, py: np.ndarray, corners: list[tuple[float, float]]) -> np.ndarray:
    """Distance from sample points (px, py) to the polygon's edges."""
    best = np.full(px.shape, np.inf)
    for (x0, y0), (x1, y1) in zip(corners, corners[1:] + corners[:1]):
        dx, dy = x1 - x0, y1 - y0
        t = np.clip(((px - x0) * dx + (py - y0) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
        best = np.minimum(best, np.hypot(px - (x0 + t * dx), py - (y0 + t * dy)))
    return best


def coverage(element: Element, size: int = IMAGE_SIZE, samples: int = 4) -> np.ndarray:
    """The share (0..1) of each pixel of a `size` px canvas that `element` covers, by `samples`^2 point samples."""
    k = size / IMAGE_SIZE
    x, y, r = element.x * k, element.y * k, RADIUS[element.size] * k
    offsets = (np.arange(samples) + 0.5) / samples
    grid = (np.arange(size)[:, None] + offsets[None, :]).reshape(-1)
    py, px = np.meshgrid(grid, grid, indexing="ij")
    half = OUTLINE_PX * k / 2
    corners = polygon(element.shape, x, y, r)
    if corners is None:
        distance = np.hypot(px - x, py - y)
        hit = np.abs(distance - r) <= half if element.texture == "empty" else distance <= r
    elif element.texture == "empty":
        hit = _edge_distance(px, py, corners) <= half
    else:
        hit = _inside(px, py, corners)
    return hit.reshape(size, samples, size, samples).mean(axis=(1, 3))


def draw(elements: list[Element] | tuple[Element, ...], size: int = IMAGE_SIZE, samples: int = 4) -> Image.Image:
    """`elements` drawn on a `size` px canvas (RGB); their `rgb`, `scale`, `turn` and `stroke` are ignored: the
    colour is `TABLEAU`'s and the shape fills the box of the size word's radius."""
    canvas = np.empty((size, size, 3), dtype=np.float64)
    canvas[:] = CANVAS
    for e in elements:
        cover = coverage(e, size, samples)[..., None]
        canvas = canvas * (1.0 - cover) + np.asarray(TABLEAU[e.colour], dtype=np.float64) * cover
    return Image.fromarray(np.round(canvas).astype(np.uint8), "RGB")
