"""A rule-based element detector for shapes-world images (no learned weights).

`detect(image)` finds the coloured elements of a shapes-world image and reads each
one's (shape, colour, size, texture) and position:

1. Colour: a pixel belongs to a colour when that colour's channel is the dominant
   one and its saturation (max - min channel) is at least `SATURATION_FRACTION` of
   the colour's own saturation in `renderer.RGB` (white, grey and black pixels have
   none).
2. Elements: 8-connected components of each colour's mask; components smaller than
   `min_area` pixels are noise and are dropped. Holes are filled
   (`binary_fill_holes`) to get each element's silhouette. The placement lets two
   elements overlap by a pixel or two, so two elements of one colour can touch and
   form one component; a silhouette whose distance transform has two peaks joined
   by a narrow neck is split there (watershed on the distance transform).
3. Shape, size and texture, by analysis by synthesis: every candidate
   (shape, size, texture) is rendered with `renderer.render`, placed so that its ink
   centroid falls on the element's (the box filter that anti-aliases the renders
   keeps both ink and centroid exact), and compared with the element's ink
   (coverage, read from the darkest channel) by L1 distance; the closest candidate
   wins. (IoU of the silhouette with `renderer.shape_mask` stretched to the
   component's box mistook ~10% of small circles and hexagons for each other, and
   a hole-area rule misread small empty triangles and stars, whose holes are a
   few pixels; the rendered candidates tell both apart.) A hexagon is also tried
   standing on a vertex (turned 30 degrees, as other programs draw a regular
   hexagon; the world's stands on a side). A drawing from elsewhere
   (`FOREIGN_READING`) is read more widely: other outline widths, radii from 0.7
   to 1.8 of the size word's, and each polygon also at the turn its ink shows
   (the phase of the ink's k-th angular moment, k its symmetry: `_turns`).
   Elements of one colour that were split
   apart are refitted jointly: each to the ink the other elements' fits leave.
   A drawing from elsewhere may also overlap two shapes of one colour so deeply
   that no neck is left, or let one colour's shape hide part of another's: where
   a blob left whole fits no candidate well, it is also read as the largest
   candidate lying inside it plus what fits the rest (`_as_two`), and as one
   shape partly under the other colours beside it (`_partly_hidden`); either is
   kept when it explains the ink clearly better.
   A blob that no candidate fits (relative misfit above `max_misfit`) is dropped.
4. Position: the centre of the winning candidate's bounding box at the fitted
   position, i.e. the centre of the rendered shape's bounding box in pixels (pixel
   i spans [i, i + 1]). `Element.x/y` is the centre of the circle the shape is
   inscribed in; for stars the box centre lies slightly above it, see
   `element_bbox_centre`.

Images of another size are resized to `renderer.IMAGE_SIZE` first; positions and
areas are in pixels of that 64 px frame.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np
from PIL import Image
from scipy import ndimage

from . import renderer

# Each colour word's channel in an RGB pixel.
CHANNEL = {"red": 0, "green": 1, "blue": 2}
# Saturation of each pure colour, and its darkest channel (coverage of a pixel is
# (255 - darkest channel) / (255 - _INK_MIN)).
_FULL_SAT = {c: float(max(rgb) - min(rgb)) for c, rgb in renderer.RGB.items()}
_INK_MIN = float(min(min(rgb) for rgb in renderer.RGB.values()))
# A pixel is coloured from this fraction of its colour's full saturation on; below
# one half, so that the 1 px outlines of small empty elements stay closed.
SATURATION_FRACTION = 0.25
# Two distance-transform peaks are separate elements when the silhouette between
# them narrows to below (lower peak - SPLIT_DEPTH) pixels of depth.
SPLIT_DEPTH = 1.0
# Peaks shallower than this (pixels) never start an element of their own.
MIN_PEAK_DEPTH = 1.5
# Blobs no candidate explains better than this relative misfit are not elements.
# Clean renders fit to <= 0.13, blurred ones (Gaussian radius up to 2.5 px) to
# <= 0.73; blobs of uniform RGB noise fit to 0.33-0.84.
MAX_MISFIT = 0.75
# The outline widths (fractions of the radius) the world draws: its own images and the judge read these alone.
WORLD_STROKES = (renderer.STROKE_FRACTION,)
# A width past the world's is tried only while the outline leaves a hole: at most this share of the full shape's
# ink (the world's own star outline is 0.73 of it; a triangle's 0.3 outline, 0.82, reads as full).
MAX_OUTLINE_SHARE = 0.75
# Candidate templates are rendered at this many sub-pixel phases per pixel.
PHASES = 4
# Templates are (2 * half) px square, centred on the element: _HALF, or wider for a candidate drawn larger than
# WIDE_WINDOW_FROM px (1.3 of a big radius; `_half`), so that a wide reading's big shapes are not cut off.
_HALF = 15
WIDE_WINDOW_FROM = 13.0
_EIGHT = np.ones((3, 3), dtype=bool)
CANDIDATES = tuple(itertools.product(renderer.SHAPES, renderer.SIZES, renderer.TEXTURES))


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
    # The element as read: centred where its circle is (renderer.Element.x/y), with the radius scale and turn of the
    # template that fitted it and the nominal colour; None for a detection made by hand.
    element: renderer.Element | None = None

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.shape, self.colour, self.size, self.texture)


def element_bbox_centre(element: renderer.Element) -> tuple[float, float]:
    """Centre of the bounding box of the shape `element` renders (what `detect` reports)."""
    poly = renderer.shape_polygon(element.shape, element.x, element.y, element.radius, element.turn)
    if poly is None:
        return element.x, element.y
    xs, ys = [p[0] for p in poly], [p[1] for p in poly]
    return (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2


def _coverage(rgb: np.ndarray) -> np.ndarray:
    return np.clip((255.0 - rgb.min(axis=2)) / (255.0 - _INK_MIN), 0.0, 1.0)


def _own_coverage(coverage: np.ndarray, core: np.ndarray) -> np.ndarray:
    """Coverage relative to the element's own ink level (its shade may be lighter than the nominal one).

    The level is a high quantile of the coverage over the element's core pixels, so a lighter
    shade still reads as full coverage inside and its anti-aliased rim keeps its proportions.
    """
    level = float(np.quantile(coverage[core], 0.9)) if core.any() else 1.0
    return np.clip(coverage / level, 0.0, 1.0) if level > 0.3 else coverage


# Drawn radii vary around each size word's (renderer.Variation: +-10%), so every candidate is
# also fitted at the scale its ink suggests, snapped to this grid (a relative radius).
SCALES = tuple(round(0.86 + 0.02 * k, 2) for k in range(15))  # 0.86 .. 1.14
# A drawing from elsewhere may draw a size word's radius further off (another program's idea of "big"): its reading
# also fits each candidate whose ink puts it outside SCALES at the radii of WIDE_SCALES outside SCALES within
# BEYOND_SPAN of that (`_scales_beyond`; each size word only on its own side of the radius between them,
# `_size_scales`), and reads the element so where that fits better than the fit on SCALES (its misfit below
# BEYOND_MARGIN times that one's) and reads it otherwise (a big circle drawn at 0.8 fits a hexagon at 0.88 best on
# SCALES). Where it reads it alike, the fit on SCALES stands unless it is poor (relative misfit above
# SAME_READING_MISFIT; on the 40 drawn ways of `benchmarks/detector_programs.py` at most 0.12, a drawing at 0.75 of the
# radius read at 0.86; a big circle drawn at 1.5 and read at 1.14, 0.27): one of the world's varied triangles, drawn
# at 1.1, fits best at 1.2, a quarter of a pixel off. The margin keeps two small full hexagons edged in black (whose
# colour is a smaller shape) from reading as circles at 0.8, and changed nothing else in that benchmark. Where the
# fit on SCALES is poor, every candidate is fitted beyond, not only the contenders: a big empty circle drawn at 1.6
# overlaps no grid radius of SCALES, so on SCALES the nearest candidates are the smallest ones. The grid reaches
# 1.8 of the radius (a big shape drawn past 1.3 read as a circle, or not at all, before); two big shapes at 1.8 no
# longer fit side by side.
WIDE_SCALES = tuple(round(0.70 + 0.02 * k, 2) for k in range(56))
BEYOND_SPAN = 0.06
BEYOND_MARGIN = 0.9
SAME_READING_MISFIT = 0.15
# Between the size words' radii (5.5 and 10 px) a drawing is ambiguous; no candidate of one size word is tried at a
# radius the other's reaches, so that two candidates never render alike. Big is tried as far down as the reading's
# grid goes (0.7 of its radius, 7 px), small up to the grid's last radius below that (1.24 of its radius, 6.82 px).
# The split leans big, since the world draws nothing else (`dataset`: every training image and every benchmark query
# is big), and other programs draw squares smaller than the world's (inscribed in their circle, 0.87 of its side).
# Split at the words' geometric mean (7.2 / 7.6 px), the 30 test layouts drawn in SVG at 0.85 of the world's radius
# with inscribed squares read right 11 times (30 now), the renderer's 60 layouts at 0.72 of its radius never (60
# now); 5 of the 30 small shapes drawn alone at 1.25 of their radius now read big (benchmarks/RESULTS.md, session 38).
_SIZE_RADII = {"small": (0.0, 6.82), "big": (7.0, float("inf"))}
# A polygon's turn (degrees, anticlockwise) is estimated from its ink (`_turns`) and snapped to this grid; turns
# nearer upright than MIN_TURN are upright (the estimate's error on upright drawings is under 1.5 degrees).
TURN_STEP = 2.0
MIN_TURN = 3.0
# k-fold symmetry of each polygon: its turn is defined modulo 360 / k.
_FOLDS = {"square": 4, "triangle": 3, "hexagon": 6, "star": 5}


class _Style(NamedTuple):
    """How a candidate's template is drawn: `plain`, with aliased edges (an outline drawn that way is a different
    band of pixels), turned `turn` degrees (`renderer.Element.turn`), and an empty one's outline `stroke` wide (a
    fraction of the radius, `renderer.Element.stroke`)."""

    plain: bool = False
    turn: float = 0.0
    stroke: float = renderer.STROKE_FRACTION


_UPRIGHT = _Style()


class Reading(NamedTuple):
    """How widely `detect` looks: the outline widths an empty element is tried at (fractions of its radius), how
    many of the candidates closest at their ink's scale go on to try every scale and style, the grid of relative
    radii, whether a polygon is also tried at the turn its ink shows, and whether a blob of one colour that no
    candidate fits alone is tried as two that overlap, or as one that another colour partly hides (`_as_two`,
    `_partly_hidden`)."""

    strokes: tuple[float, ...] = WORLD_STROKES
    contenders: int = 4
    scales: tuple[float, ...] = SCALES
    turned: bool = False
    overlaps: bool = False


# The world's own images, and the judge (reconstructions and a query analysed as given): the world's outline,
# radii and orientation.
WORLD_READING = Reading()
# A drawing from elsewhere, read for the redraw and the world check: outlines from one pixel of a big element (0.1
# of its radius; 0.18 of a small one's) to twice the world's, and more contenders, since the ink-based scale of an
# outline drawn otherwise is further off (a thin anti-aliased ring's ink is about 1.3 times the template's); radii
# from 0.7 to 1.8 of the size word's; polygons turned any way (a triangle pointing down is a triangle); and shapes
# that overlap (the world's never do by more than a pixel).
FOREIGN_READING = Reading(strokes=(0.1, renderer.STROKE_FRACTION, 0.3, 0.4), contenders=8, scales=WIDE_SCALES,
                          turned=True, overlaps=True)


# Templates are cached (an image's reading draws a few thousand, mostly the same for the next image); bounded, since
# a turned drawing's templates are of its own turn.
TEMPLATE_CACHE = 32768


@lru_cache(maxsize=TEMPLATE_CACHE)
def _template(candidate: tuple[str, str, str], px: int, py: int, scale: float = 1.0,
              style: _Style = _UPRIGHT) -> np.ndarray:
    """Coverage of `candidate` at relative radius `scale` in a (2 half) px window (`_half`), its element at
    (half + px/P, half + py/P)."""
    shape, size, texture = candidate
    c, half = renderer.IMAGE_SIZE // 2, _half(size, scale)
    e = renderer.Element(shape, "red", size, texture, c + px / PHASES, c + py / PHASES, scale=scale, turn=style.turn,
                         stroke=style.stroke)
    # Only the template's window of the canvas: the same pixels for about half the work (a cold template, with the
    # renderer's shared outline distances: 0.37 -> 0.15 ms).
    drawn = renderer.render([e], supersample=not style.plain, window=(c - half, c - half, 2 * half))
    return _coverage(np.asarray(drawn, dtype=np.float32))


@lru_cache(maxsize=TEMPLATE_CACHE)
def _centroid_offset(candidate: tuple[str, str, str], scale: float = 1.0,
                     style: _Style = _UPRIGHT) -> tuple[float, float, float]:
    """(ink centroid - element position) in x and y, and total ink, of `candidate` at `scale`."""
    t = _template(candidate, 0, 0, scale, style)
    ink = float(t.sum())
    ys, xs = np.mgrid[0 : t.shape[0], 0 : t.shape[1]]
    gx = float((t * (xs + 0.5)).sum() / ink)
    gy = float((t * (ys + 0.5)).sum() / ink)
    half = t.shape[0] // 2
    return gx - half, gy - half, ink


def _half(size: str, scale: float) -> int:
    """Half the side of a template's window (px): _HALF up to WIDE_WINDOW_FROM (the windows the reading has always
    used), wider past it, so that a shape's farthest corners (`renderer.REACH` times its radius from its centre) and
    2 px of rim fit."""
    radius = renderer.RADIUS[size] * scale
    return _HALF if radius <= WIDE_WINDOW_FROM + 1e-9 else math.ceil(renderer.REACH * radius) + 2


def _styles(candidate: tuple[str, str, str], strokes: tuple[float, ...] = WORLD_STROKES, turn: float = 0.0
            ) -> tuple[_Style, ...]:
    """Template styles to try: outlines drawn aliased are a different band of pixels, and `strokes` wide; a hexagon
    may stand on a side (the world's) or a vertex (the usual regular hexagon of other programs); a polygon is also
    tried at `turn` (degrees, the turn its ink shows: `_turns`)."""
    empty = candidate[2] == "empty"
    edges = (False, True) if empty else (False,)
    turns = (0.0, 30.0) if candidate[0] == "hexagon" else (0.0,)
    if turn and all(_turn_apart(candidate[0], turn, t) >= TURN_STEP for t in turns):
        turns += (turn,)
    widths = tuple(w for w in strokes if w in WORLD_STROKES or _outline_share(candidate, w) <= MAX_OUTLINE_SHARE)
    return tuple(_Style(plain, turn, stroke) for plain in edges for turn in turns
                 for stroke in (widths if empty else WORLD_STROKES))


def _turn_apart(shape: str, a: float, b: float) -> float:
    """How far apart two turns of `shape` are, in degrees, given its symmetry (0 .. 180 / k)."""
    period = 360.0 / _FOLDS.get(shape, 1)
    gap = (a - b) % period
    return min(gap, period - gap)


def _angular_moments(ink: np.ndarray, gx: float, gy: float) -> dict[int, complex]:
    """The k-th angular moments sum(ink rho^2 e^(i k phi)) about (gx, gy) for each polygon's k (phi anticlockwise
    on screen); a k-fold polygon's vertices put its moment's phase at k times their angle."""
    ys, xs = np.nonzero(ink)
    weights = ink[ys, xs]
    dx, dy = xs + 0.5 - gx, gy - (ys + 0.5)
    rho2, phi = dx * dx + dy * dy, np.arctan2(dy, dx)
    return {k: complex((weights * rho2 * np.exp(1j * k * phi)).sum()) for k in set(_FOLDS.values())}


@lru_cache(maxsize=None)
def _upright_moment(shape: str) -> complex:
    """The angular moment of `shape` drawn upright by the world (big, full), its phase the reference of a turn."""
    t = _template((shape, "big", "full"), 0, 0)
    return _angular_moments(t, _HALF + 0.0, _HALF + 0.0)[_FOLDS[shape]]


def _turns(ink: np.ndarray, gx: float, gy: float) -> dict[str, float]:
    """For each polygon, the turn (degrees anticlockwise, in (-180 / k, 180 / k]) at which its upright drawing's
    vertices would fall where `ink`'s (an element's coverage, its ink centroid at (gx, gy)) do, snapped to
    TURN_STEP; 0 when nearer upright than MIN_TURN. Measured on polygons drawn by the world's renderer and PIL
    (aliased or not, any turn), the estimate is within 5 degrees of the drawn turn."""
    moments = _angular_moments(ink, gx, gy)
    turns = {}
    for shape, k in _FOLDS.items():
        period = 360.0 / k
        turn = np.degrees(np.angle(moments[k] / _upright_moment(shape))) / k
        turn = TURN_STEP * round(turn / TURN_STEP)
        turn = (turn + period / 2) % period - period / 2
        turns[shape] = 0.0 if abs(turn) < MIN_TURN else float(turn)
    return turns


def _size_scales(size: str, scales: tuple[float, ...]) -> tuple[float, ...]:
    """The relative radii of `scales` at which a candidate of `size` is tried: those on its side of the radius
    between the size words (`_SIZE_RADII`)."""
    low, high = _SIZE_RADII[size]
    return tuple(s for s in scales if low <= renderer.RADIUS[size] * s <= high)


def _outline_share(candidate: tuple[str, str, str], stroke: float) -> float:
    """An empty candidate's ink with its outline `stroke` wide, as a share of the full shape's (0..1)."""
    shape, size, _ = candidate
    return _centroid_offset(candidate, 1.0, _Style(stroke=stroke))[2] / _centroid_offset((shape, size, "full"))[2]


def _ink_scale(candidate: tuple[str, str, str], total: float, stroke: float = renderer.STROKE_FRACTION) -> float:
    """The relative radius at which `candidate`'s ink, its outline `stroke` wide, equals `total` (ink ~ radius^2)."""
    return float(np.sqrt(total / _centroid_offset(candidate, 1.0, _Style(stroke=stroke))[2]))


def _scales_beyond(candidate: tuple[str, str, str], total: float, stroke: float, scales: tuple[float, ...]
                   ) -> tuple[float, ...]:
    """The scales of the grid `scales` outside SCALES within BEYOND_SPAN of the one `candidate`'s ink puts it at,
    where that one is outside SCALES too (on its size word's side, `_size_scales`); () otherwise."""
    estimate = _ink_scale(candidate, total, stroke)
    if SCALES[0] <= estimate <= SCALES[-1]:
        return ()
    return tuple(s for s in _size_scales(candidate[1], scales)
                 if not SCALES[0] <= s <= SCALES[-1] and abs(s - estimate) <= BEYOND_SPAN + 1e-9)


def _scales_for(candidate: tuple[str, str, str], total: float, stroke: float = renderer.STROKE_FRACTION
                ) -> tuple[float, ...]:
    """The two grid scales around the one at which `candidate`'s ink equals `total` (`_ink_scale`)."""
    k = int(np.searchsorted(SCALES, _ink_scale(candidate, total, stroke)))
    return tuple(SCALES[i] for i in {min(max(k - 1, 0), len(SCALES) - 1), min(k, len(SCALES) - 1)})


@dataclass(frozen=True)
class _Fit:
    candidate: tuple[str, str, str]
    x: float  # element position (renderer.Element.x/y)
    y: float
    misfit: float  # L1 distance between the element's ink and the candidate's render
    ink: float  # the element's ink (sum of its coverage)
    scale: float = 1.0  # the candidate's relative radius
    style: _Style = _UPRIGHT  # how the candidate was drawn

    @property
    def relative_misfit(self) -> float:
        """misfit / (both inks): 0 = the render exactly, 1 = nothing in common."""
        return self.misfit / (self.ink + _centroid_offset(self.candidate, self.scale, self.style)[2])


def _placed(candidate: tuple[str, str, str], ex: float, ey: float, shape: tuple[int, int], scale: float = 1.0,
            style: _Style = _UPRIGHT):
    """The candidate's template at (ex, ey): (template crop, (y0, y1, x0, x1) in the image)."""
    ix, fx = divmod(round(ex * PHASES), PHASES)
    iy, fy = divmod(round(ey * PHASES), PHASES)
    t = _template(candidate, fx, fy, scale, style)
    h, w = shape
    half = t.shape[0] // 2
    x0, y0 = ix - half, iy - half
    ax0, ay0 = max(0, x0), max(0, y0)
    ax1, ay1 = min(w, x0 + 2 * half), min(h, y0 + 2 * half)
    if ax1 <= ax0 or ay1 <= ay0:
        return t[:0, :0], (0, 0, 0, 0)
    return t[ay0 - y0 : ay1 - y0, ax0 - x0 : ax1 - x0], (ay0, ay1, ax0, ax1)


def _render_fit(fit: _Fit, shape: tuple[int, int]) -> np.ndarray:
    out = np.zeros(shape, dtype=np.float64)
    t, (y0, y1, x0, x1) = _placed(fit.candidate, fit.x, fit.y, shape, fit.scale, fit.style)
    out[y0:y1, x0:x1] = t
    return out


def _misfit(ink: np.ndarray, total: float, candidate: tuple[str, str, str], ex: float, ey: float,
            scale: float = 1.0, style: _Style = _UPRIGHT, hidden: np.ndarray | None = None) -> float:
    """L1 distance between `ink` (image-sized, summing to `total`) and `candidate` at (ex, ey). `hidden`: pixels
    (image-sized, 0 or 1) where another colour lies, so that the candidate's ink there is not counted as missing."""
    t, (y0, y1, x0, x1) = _placed(candidate, ex, ey, ink.shape, scale, style)
    window = ink[y0:y1, x0:x1]
    # |ink - template| inside the template's window, plus what either has outside it.
    template_ink = _centroid_offset(candidate, scale, style)[2]
    misfit = float(np.abs(window - t).sum()) + (total - float(window.sum())) + (template_ink - float(t.sum()))
    return misfit if hidden is None else misfit - float((t * hidden[y0:y1, x0:x1]).sum())


def _fit(ink: np.ndarray, search: float = 0.0, finalists: int = 3, reading: Reading = WORLD_READING,
         hidden: np.ndarray | None = None) -> _Fit | None:
    """The candidate closest to `ink` (an image-sized coverage map of one element), looked for as `reading` says.

    Each candidate is placed so that its ink centroid falls on the element's; with
    `search` > 0 the best `finalists` also try positions up to `search` px away
    (for elements whose ink is not all theirs, e.g. two that overlap). `hidden`: as `_misfit`'s.
    """
    total = float(ink.sum())
    if total <= 0:
        return None
    ys, xs = np.nonzero(ink)
    weights = ink[ys, xs]
    gx = float((weights * (xs + 0.5)).sum() / total)
    gy = float((weights * (ys + 0.5)).sum() / total)
    def placed_at_centroid(candidate, scale: float, style: _Style) -> _Fit:
        ox, oy, _ = _centroid_offset(candidate, scale, style)
        ex, ey = gx - ox, gy - oy
        return _Fit(candidate, ex, ey, _misfit(ink, total, candidate, ex, ey, scale, style, hidden), total, scale,
                    style)

    turns = _turns(ink, gx, gy) if reading.turned else {}

    def styles(candidate) -> tuple[_Style, ...]:
        return _styles(candidate, reading.strokes, turns.get(candidate[0], 0.0))

    fits = sorted((placed_at_centroid(c, scale, style) for c in CANDIDATES for style in styles(c)
                   for scale in _scales_for(c, total, style.stroke)), key=lambda f: f.misfit)
    # The ink-based scale estimate is rough for outlines (their ink is a band of whole pixels when
    # drawn aliased): the closest few candidates try every scale of the grid.
    contenders = list(dict.fromkeys(f.candidate for f in fits))[:reading.contenders]
    for candidate in contenders:
        for style in styles(candidate):
            for scale in SCALES:
                f = placed_at_centroid(candidate, scale, style)
                if f.misfit < fits[0].misfit:
                    fits.insert(0, f)
    # A drawing from elsewhere: contenders whose ink puts them past the world's radii are fitted there too, and win
    # where they fit better and read the element otherwise, or the fit on SCALES is poor; then every candidate is a
    # contender, since the nearest on SCALES say little (WIDE_SCALES).
    poor = fits[0].relative_misfit > SAME_READING_MISFIT
    beyond = [placed_at_centroid(c, scale, style) for c in (CANDIDATES if poor else contenders) for style in styles(c)
              for scale in _scales_beyond(c, total, style.stroke, reading.scales)] if reading.scales != SCALES else []
    if beyond:
        wide = min(beyond, key=lambda f: f.misfit)
        if wide.misfit < BEYOND_MARGIN * fits[0].misfit and (
                wide.candidate != fits[0].candidate or poor):
            fits.insert(0, wide)
    best = fits[0]
    if search > 0:
        steps = np.arange(-search, search + 1e-9, 1.0 / PHASES)
        for f in fits[:finalists]:
            for dx, dy in itertools.product(steps, steps):
                m = _misfit(ink, total, f.candidate, f.x + dx, f.y + dy, f.scale, f.style, hidden)
                if m < best.misfit:
                    best = _Fit(f.candidate, float(f.x + dx), float(f.y + dy), m, total, f.scale, f.style)
    return best


# A blob of one colour that the split at necks leaves whole and that no single candidate fits well may be two
# elements that overlap (a triangle's tip inside a circle leaves no neck), or one that a shape of another colour
# covers in part (a circle with a bite out of it fits a hexagon better than a circle). Each other reading is kept
# where it leaves less than CLEARLY_BETTER of the single fit's misfit:
# - two: the largest candidate that lies inside the ink, plus what best explains the rest, both refitted as touching
#   elements are. A template's ink outside the blob costs INSIDE_PENALTY times what its ink inside earns, so the
#   first element is one the blob holds whole;
# - one partly hidden: refitted with the other colours' pixels around it counted as hiding it, moved up to
#   HIDDEN_SEARCH px, since the ink it shows has its centroid away from the hidden part.
CLEARLY_BETTER = 0.6
INSIDE_PENALTY = 3.0
HIDDEN_SEARCH = 2.0


def _largest_inside(ink: np.ndarray) -> _Fit:
    """The candidate, upright at its size word's radius, that covers the most of `ink` while lying within it."""
    total, best = float(ink.sum()), None
    for candidate in CANDIDATES:
        t = _template(candidate, 0, 0)
        # correlate's output at a pixel puts the template's centre (its element's position) on it
        score = (1 + INSIDE_PENALTY) * ndimage.correlate(ink, t, mode="constant") - INSIDE_PENALTY * float(t.sum())
        y, x = np.unravel_index(int(np.argmax(score)), score.shape)
        if best is None or score[y, x] > best[0]:
            best = (float(score[y, x]), candidate, float(x), float(y))
    _, candidate, x, y = best
    return _Fit(candidate, x, y, _misfit(ink, total, candidate, x, y), total)


def _as_two(single: _Fit, ink: np.ndarray, min_area: int, reading: Reading) -> list[_Fit] | None:
    """Two overlapping elements that explain `ink` (one blob's coverage) clearly better than `single` does
    (`CLEARLY_BETTER`), or None."""
    first = _largest_inside(ink)
    rest = np.clip(ink - _render_fit(first, ink.shape), 0.0, 1.0)
    # the first element's anti-aliased rim is no second element
    rest = np.where(ndimage.binary_opening(rest > 0.5, structure=_EIGHT), rest, 0.0)
    if rest.sum() < min_area:
        return None
    second = _fit(rest, search=0.75, reading=reading)
    if second is None:
        return None
    region = ink > 0
    pair = [f for f, _, _ in _explain_away([(first, 0, region), (second, 0, region)], ink, reading=reading)]
    pair_misfit = _joint_misfit(ink, [_render_fit(f, ink.shape) for f in pair])
    return pair if pair_misfit < CLEARLY_BETTER * _joint_misfit(ink, [_render_fit(single, ink.shape)]) else None


def _partly_hidden(single: _Fit, ink: np.ndarray, hidden: np.ndarray, reading: Reading) -> _Fit | None:
    """The element `ink` (one blob's coverage) shows, where `hidden` (0 or 1, other colours' pixels next to it) may
    cover part of it, when that fits clearly better than `single` (`CLEARLY_BETTER`); else None."""
    refit = _fit(ink, search=HIDDEN_SEARCH, reading=reading, hidden=hidden)
    return refit if refit is not None and refit.misfit < CLEARLY_BETTER * single.misfit else None


def _joint_misfit(ink: np.ndarray, renders: list[np.ndarray]) -> float:
    """L1 distance between `ink` and image-sized `renders` laid over each other (coverage capped at 1)."""
    return float(np.abs(ink - np.minimum(sum(renders), 1.0)).sum())


def _split(filled: np.ndarray) -> list[np.ndarray]:
    """Split a silhouette into elements at narrow necks between distance-transform peaks."""
    depth = ndimage.distance_transform_edt(np.pad(filled, 1))[1:-1, 1:-1]
    peaks = (depth == ndimage.maximum_filter(depth, size=3)) & (depth >= MIN_PEAK_DEPTH)
    labels, n = ndimage.label(peaks, structure=_EIGHT)
    if n <= 1:
        return [filled]
    heights = ndimage.maximum(depth, labels, index=np.arange(1, n + 1))
    reps = [tuple(np.argwhere(labels == i + 1)[0]) for i in range(n)]
    # A peak starts an element unless it reaches an already kept (as high or
    # higher) peak without going deeper than SPLIT_DEPTH below its own height.
    kept: list[int] = []
    for i in sorted(range(n), key=lambda k: -heights[k]):
        connected, _ = ndimage.label(depth >= heights[i] - SPLIT_DEPTH, structure=_EIGHT)
        if all(connected[reps[i]] != connected[reps[j]] for j in kept):
            kept.append(i)
    if len(kept) == 1:
        return [filled]
    markers = np.zeros(filled.shape, dtype=np.int32)
    for k, i in enumerate(kept, start=1):
        markers[labels == i + 1] = k
    flooded = _flood(markers, depth, filled)
    return [filled & (flooded == k) for k in range(1, len(kept) + 1)]


def _flood(markers: np.ndarray, depth: np.ndarray, filled: np.ndarray) -> np.ndarray:
    """Watershed: grow the markers through `filled`, deepest pixels first."""
    labels = markers.copy()
    for level in np.arange(float(depth.max()), -0.5, -0.5):
        allowed = filled & (depth >= level)
        while True:
            grown = ndimage.grey_dilation(labels, footprint=_EIGHT)
            new = allowed & (labels == 0) & (grown > 0)
            if not new.any():
                break
            labels[new] = grown[new]
    return labels


def _explain_away(fits: list, coverage: np.ndarray, rounds: int = 2, reading: Reading = WORLD_READING) -> list:
    """Refit elements of one colour that touch, each to the ink the others' fits leave.

    A split along a neck cuts the overlap between two elements out of one of them;
    subtracting the other elements' fitted renders from the ink of their union
    gives each element back its own ink, overlap included. A refit is kept only
    when it explains the union's ink better.
    """
    union = np.zeros(coverage.shape, dtype=bool)
    for _, _, region in fits:
        union |= region
    ink = np.where(union, coverage, 0.0)
    fits = list(fits)
    renders = [_render_fit(f, coverage.shape) for f, _, _ in fits]

    current = _joint_misfit(ink, renders)
    for _ in range(rounds):
        for i, (fit, area, region) in enumerate(fits):
            grown = ndimage.binary_dilation(region, structure=_EIGHT, iterations=3) & union
            others = sum(r for j, r in enumerate(renders) if j != i)
            refit = _fit(np.where(grown, np.clip(ink - others, 0.0, 1.0), 0.0), search=0.75, reading=reading)
            if refit is None:
                continue
            old = renders[i]
            renders[i] = _render_fit(refit, coverage.shape)
            score = _joint_misfit(ink, renders)
            if score < current:
                fits[i], current = (refit, area, region), score
            else:
                renders[i] = old
    return fits


def _read_component(component: np.ndarray, mask: np.ndarray, faint: np.ndarray, others: np.ndarray,
                    coverage: np.ndarray, min_area: int, reading: Reading) -> list[tuple[_Fit, int, np.ndarray]]:
    """The elements (fit, area, region) of one connected blob of a colour (`mask`'s), with `faint` its
    anti-aliased rim and `others` the other colours' pixels: split at narrow necks, each piece fitted; pieces that
    touch are refitted to the ink the others leave (`_explain_away`); a blob left whole that no one candidate fits
    well may be two, or one partly hidden (`Reading.overlaps`, `_as_two`, `_partly_hidden`)."""
    fits = []
    for piece in _split(ndimage.binary_fill_holes(component)):
        area = int((piece & mask).sum())
        if area < min_area:
            continue
        region = piece | (ndimage.binary_dilation(piece, structure=_EIGHT, iterations=2) & faint)
        fit = _fit(np.where(region, _own_coverage(coverage, piece & mask), 0.0), reading=reading)
        if fit is not None:
            fits.append((fit, area, region))
    if len(fits) > 1:  # touching elements, split apart, refitted on their own ink level as above
        return _explain_away(fits, _own_coverage(coverage, component & mask), reading=reading)
    if reading.overlaps and len(fits) == 1 and fits[0][0].relative_misfit > SAME_READING_MISFIT:
        fit, area, region = fits[0]
        ink = np.where(region, _own_coverage(coverage, component & mask), 0.0)
        pair = _as_two(fit, ink, min_area, reading)
        if pair:  # each element's area: the blob's pixels its render covers more than the other's
            first, second = (_render_fit(f, coverage.shape) for f in pair)
            return [(pair[0], int((component & mask & (first >= second)).sum()), region),
                    (pair[1], int((component & mask & (second > first)).sum()), region)]
        hidden = ndimage.binary_dilation(component, structure=_EIGHT, iterations=2) & others
        unhidden = _partly_hidden(fit, ink, hidden.astype(np.float64), reading) if hidden.any() else None
        if unhidden is not None:
            return [(unhidden, area, region)]
    return fits


# Blobs of fewer pixels of a colour's ink (at 64 px) are noise, not an element.
MIN_AREA = 12


def colour_masks(rgb: np.ndarray) -> dict[str, np.ndarray]:
    """Colour -> (H, W) bool mask of the pixels of an (H, W, 3) float RGB array that are that colour's ink: its channel
    the brightest, and saturated to at least `SATURATION_FRACTION` of the world's full shade of it."""
    sat = rgb.max(axis=2) - rgb.min(axis=2)
    dominant = rgb.argmax(axis=2)
    return {colour: (dominant == channel) & (sat >= SATURATION_FRACTION * _FULL_SAT[colour])
            for colour, channel in CHANNEL.items()}


def detect(image: Image.Image, min_area: int = MIN_AREA, max_misfit: float = MAX_MISFIT,
           reading: Reading = WORLD_READING) -> list[Detection]:
    """Elements of a shapes-world image, sorted top-to-bottom then left-to-right.

    Blobs of fewer than `min_area` coloured pixels are noise; blobs whose best
    candidate's relative misfit (L1 between inks over the sum of both inks: 0 =
    identical, 1 = disjoint) exceeds `max_misfit` resemble no element and are
    dropped too. `reading` says how widely candidates are looked for: the
    world's (`WORLD_READING`) for its own images and the judge, `FOREIGN_READING`
    for a drawing from another program.
    """
    image = image.convert("RGB")
    if image.size != (renderer.IMAGE_SIZE, renderer.IMAGE_SIZE):
        image = image.resize((renderer.IMAGE_SIZE, renderer.IMAGE_SIZE), Image.BILINEAR)
    rgb = np.asarray(image, dtype=np.float32)
    dominant = rgb.argmax(axis=2)
    coverage = _coverage(rgb)
    masks = colour_masks(rgb)
    found: list[Detection] = []
    for colour, channel in CHANNEL.items():
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
        others = (masks["red"] | masks["green"] | masks["blue"]) & ~mask
        fits = [f for index in keep
                for f in _read_component(labels == index, mask, faint, others, coverage, min_area, reading)]
        for fit, area, _ in fits:
            if fit.relative_misfit > max_misfit:
                continue
            shape, size, texture = fit.candidate
            element = renderer.Element(shape, colour, size, texture, float(fit.x), float(fit.y), scale=fit.scale,
                                       turn=fit.style.turn, stroke=fit.style.stroke)
            x, y = element_bbox_centre(element)
            found.append(Detection(shape, colour, size, texture, float(x), float(y), area, element))
    found.sort(key=lambda d: (d.y, d.x))
    return found
