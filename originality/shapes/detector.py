"""A rule-based element detector for shapes-world images (no learned weights).

`detect(image)` finds the coloured elements of a shapes-world image and reads each
one's (shape, colour, size, texture) and position:

1. Colour: a pixel belongs to a colour when that colour's channel is the dominant
   one and its saturation (max - min channel) is at least `SATURATION_FRACTION` of
   the colour's own saturation in `world.RGB` (white, grey and black pixels have
   none).
2. Elements: 8-connected components of each colour's mask; components smaller than
   `min_area` pixels are noise and are dropped. Holes are filled
   (`binary_fill_holes`) to get each element's silhouette. The placement lets two
   elements overlap by a pixel or two, so two elements of one colour can touch and
   form one component; a silhouette whose distance transform has two peaks joined
   by a narrow neck is split there (watershed on the distance transform).
3. Shape, size and texture, by analysis by synthesis: every candidate
   (shape, size, texture) is rendered with `world.render`, placed so that its ink
   centroid falls on the element's (the box filter that anti-aliases the renders
   keeps both ink and centroid exact), and compared with the element's ink
   (coverage, read from the darkest channel) by L1 distance; the closest candidate
   wins. A pre-filter by IoU of the silhouette with each shape's template
   (`world.shape_mask` stretched to the component's box) is not needed: the
   rendered candidates already tell a small circle from a small hexagon, which
   stretched templates barely do.
4. Position: the centre of the winning candidate's bounding box at the fitted
   position, i.e. the centre of the rendered shape's bounding box in pixels (pixel
   i spans [i, i + 1]). `Element.x/y` is the centre of the circle the shape is
   inscribed in; for stars the box centre lies slightly above it, see
   `element_bbox_centre`.

Images of another size are resized to `world.IMAGE_SIZE` first; positions and
areas are in pixels of that 64 px frame.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image
from scipy import ndimage

from . import world

_CHANNEL = {"red": 0, "green": 1, "blue": 2}
# Saturation of each pure colour, and its darkest channel (coverage of a pixel is
# (255 - darkest channel) / (255 - _INK_MIN)).
_FULL_SAT = {c: float(max(rgb) - min(rgb)) for c, rgb in world.RGB.items()}
_INK_MIN = float(min(min(rgb) for rgb in world.RGB.values()))
# A pixel is coloured from this fraction of its colour's full saturation on; below
# one half, so that the 1 px outlines of small empty elements stay closed.
SATURATION_FRACTION = 0.35
# Two distance-transform peaks are separate elements when the silhouette between
# them narrows to below (lower peak - SPLIT_DEPTH) pixels of depth.
SPLIT_DEPTH = 1.0
# Peaks shallower than this (pixels) never start an element of their own.
MIN_PEAK_DEPTH = 1.5
# Candidate templates are rendered at this many sub-pixel phases per pixel.
PHASES = 4
_HALF = 15  # templates are (2 * _HALF) px square, centred on the element
_EIGHT = np.ones((3, 3), dtype=bool)
CANDIDATES = tuple(itertools.product(world.SHAPES, world.SIZES, world.TEXTURES))


@dataclass(frozen=True)
class Detection:
    """One detected element; (x, y) is the centre of its bounding box in pixels."""

    shape: str
    colour: str
    size: str
    texture: str
    x: float
    y: float
    area: int  # pixels of the element's colour mask (its ink, holes not counted)

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.shape, self.colour, self.size, self.texture)


def element_bbox_centre(element: world.Element) -> tuple[float, float]:
    """Centre of the bounding box of the shape `element` renders (what `detect` reports)."""
    poly = world.shape_polygon(element.shape, element.x, element.y, element.radius)
    if poly is None:
        return element.x, element.y
    xs, ys = [p[0] for p in poly], [p[1] for p in poly]
    return (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2


def _coverage(rgb: np.ndarray) -> np.ndarray:
    return np.clip((255.0 - rgb.min(axis=2)) / (255.0 - _INK_MIN), 0.0, 1.0)


@lru_cache(maxsize=None)
def _template(candidate: tuple[str, str, str], px: int, py: int) -> np.ndarray:
    """Coverage of `candidate` rendered with its element at (_HALF + px/P, _HALF + py/P)."""
    shape, size, texture = candidate
    c = world.IMAGE_SIZE // 2
    e = world.Element(shape, "red", size, texture, c + px / PHASES, c + py / PHASES)
    cov = _coverage(np.asarray(world.render([e]), dtype=np.float32))
    return cov[c - _HALF : c + _HALF, c - _HALF : c + _HALF]


@lru_cache(maxsize=None)
def _centroid_offset(candidate: tuple[str, str, str]) -> tuple[float, float, float]:
    """(ink centroid - element position) in x and y, and total ink, of `candidate`."""
    t = _template(candidate, 0, 0)
    ink = float(t.sum())
    ys, xs = np.mgrid[0 : t.shape[0], 0 : t.shape[1]]
    gx = float((t * (xs + 0.5)).sum() / ink)
    gy = float((t * (ys + 0.5)).sum() / ink)
    return gx - _HALF, gy - _HALF, ink


def _misfit(ink: np.ndarray, total: float, gx: float, gy: float, candidate) -> tuple[float, float, float]:
    """L1 distance between `ink` (an image-sized coverage map) and `candidate` fitted to it."""
    ox, oy, _ = _centroid_offset(candidate)
    ex, ey = gx - ox, gy - oy
    qx, qy = round(ex * PHASES), round(ey * PHASES)
    ix, fx = divmod(qx, PHASES)
    iy, fy = divmod(qy, PHASES)
    t = _template(candidate, fx, fy)
    # The template's window in image coordinates, clipped to the image.
    h, w = ink.shape
    x0, y0 = ix - _HALF, iy - _HALF
    ax0, ay0 = max(0, x0), max(0, y0)
    ax1, ay1 = min(w, x0 + 2 * _HALF), min(h, y0 + 2 * _HALF)
    if ax1 <= ax0 or ay1 <= ay0:
        return total + float(t.sum()), ex, ey
    window = ink[ay0:ay1, ax0:ax1]
    tw = t[ay0 - y0 : ay1 - y0, ax0 - x0 : ax1 - x0]
    inside = float(np.abs(window - tw).sum())
    outside = total - float(window.sum()) + (float(t.sum()) - float(tw.sum()))
    return inside + outside, ex, ey


def _split(filled: np.ndarray) -> list[np.ndarray]:
    """Split a silhouette into elements at narrow necks between distance-transform peaks."""
    depth = ndimage.distance_transform_edt(np.pad(filled, 1))[1:-1, 1:-1]
    peaks = (depth == ndimage.maximum_filter(depth, size=3)) & (depth >= MIN_PEAK_DEPTH)
    labels, n = ndimage.label(peaks, structure=_EIGHT)
    if n <= 1:
        return [filled]
    heights = ndimage.maximum(depth, labels, index=np.arange(1, n + 1))
    reps = [tuple(np.argwhere(labels == i + 1)[0]) for i in range(n)]
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in itertools.combinations(sorted(range(n), key=lambda k: -heights[k]), 2):
        if find(i) == find(j):
            continue
        level = min(heights[i], heights[j]) - SPLIT_DEPTH
        connected, _ = ndimage.label(depth >= level, structure=_EIGHT)
        if connected[reps[i]] == connected[reps[j]]:
            parent[find(j)] = find(i)
    roots = sorted({find(i) for i in range(n)})
    if len(roots) == 1:
        return [filled]
    markers = np.zeros(filled.shape, dtype=np.int16)
    for k, root in enumerate(roots, start=1):
        for i in range(n):
            if find(i) == root:
                markers[labels == i + 1] = k
    markers[~filled] = -1
    cost = np.where(filled, 254 - np.minimum(depth * 10, 254), 255).astype(np.uint8)
    flooded = ndimage.watershed_ift(cost, markers, structure=_EIGHT)
    return [filled & (flooded == k) for k in range(1, len(roots) + 1)]


def detect(image: Image.Image, min_area: int = 12) -> list[Detection]:
    """Elements of a shapes-world image, sorted top-to-bottom then left-to-right."""
    image = image.convert("RGB")
    if image.size != (world.IMAGE_SIZE, world.IMAGE_SIZE):
        image = image.resize((world.IMAGE_SIZE, world.IMAGE_SIZE), Image.BILINEAR)
    rgb = np.asarray(image, dtype=np.float32)
    sat = rgb.max(axis=2) - rgb.min(axis=2)
    dominant = rgb.argmax(axis=2)
    coverage = _coverage(rgb)
    masks = {
        colour: (dominant == channel) & (sat >= SATURATION_FRACTION * _FULL_SAT[colour])
        for colour, channel in _CHANNEL.items()
    }
    found: list[Detection] = []
    for colour, channel in _CHANNEL.items():
        mask = masks[colour]
        if not mask.any():
            continue
        labels, _ = ndimage.label(mask, structure=_EIGHT)
        sizes = np.bincount(labels.ravel())
        keep = np.flatnonzero(sizes >= min_area)
        keep = keep[keep > 0]
        if len(keep) == 0:
            continue
        # Faint pixels of this colour (anti-aliased rims) that no colour mask holds.
        faint = (dominant == channel) & ~(masks["red"] | masks["green"] | masks["blue"])
        pieces: list[np.ndarray] = []
        for index in keep:
            pieces.extend(_split(ndimage.binary_fill_holes(labels == index)))
        for piece in pieces:
            region = piece | (ndimage.binary_dilation(piece, structure=_EIGHT, iterations=2) & faint)
            ink = np.where(region, coverage, 0.0)
            total = float(ink.sum())
            area = int((piece & mask).sum())
            if total <= 0 or area < min_area:
                continue
            ys, xs = np.nonzero(ink)
            weights = ink[ys, xs]
            gx = float((weights * (xs + 0.5)).sum() / total)
            gy = float((weights * (ys + 0.5)).sum() / total)
            best = min(((_misfit(ink, total, gx, gy, c), c) for c in CANDIDATES), key=lambda m: m[0][0])
            (_, ex, ey), (shape, size, texture) = best
            x, y = element_bbox_centre(world.Element(shape, colour, size, texture, ex, ey))
            found.append(Detection(shape, colour, size, texture, x, y, area))
    found.sort(key=lambda d: (d.y, d.x))
    return found
