"""Is a query an image of the shapes world at all? Checked before any inversion.

The shapes world is the default wherever there is no GPU, so visitors upload photos and
paintings to it. Its model knows nothing but a few coloured shapes on white: the score of a
photo would be a confident "5+" that means nothing. `check_in_world` refuses such a query with
a reason a person can act on; a researcher can switch the check off (`AnalysisConfig.world_check`).

What the world's images are (`world`, `dataset`): a white canvas; 1..`MAX_ELEMENTS` elements,
each one of three saturated hues (red, green or blue, in any shade a person still calls that
colour), each a circle, square, triangle, hexagon or star (as wide one way as any other); nothing else. The check
reads the query at the model's resolution, as the analysis does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from . import renderer
from .dataset import MAX_ELEMENTS
from .detector import CHANNEL, FOREIGN_READING, MIN_AREA, colour_masks, detect

# A pixel is background when every channel is at least this bright.
WHITE_LEVEL = 215
# A pixel is coloured when its brightest and darkest channels differ by at least this much; below it, grey.
COLOURED = 40
# Share of the canvas that must be background (four big elements cover ~30% of it).
MIN_BACKGROUND = 0.55
# Share of the 2 px frame around the canvas that must be background (elements never touch it).
MIN_BORDER_BACKGROUND = 0.85
# A coloured pixel is of a world hue when its middle channel is close enough to its darkest one, relative to its
# saturation: (middle - darkest) / (brightest - darkest) is the hue's distance from its primary in sixths of the hue
# circle (0: the primary, 1: yellow, cyan or magenta). How far a hue may stray depends on the direction, as people
# name colours (the xkcd colour survey's names, `matplotlib.colors.XKCD_COLORS`): colours named blue reach 0.8
# towards cyan, and teal and aqua begin at 0.94; orange, pink, purple, indigo and lavender lie at 0.42-0.55 from red
# or blue; lime and teal begin 0.5-0.6 from green. The world's own varied shades reach 0.33 from red and blue and
# 0.48 from green. Keyed by (brightest channel's colour, middle channel's colour).
HUE_LIMITS = {
    ("red", "green"): 0.40,  # towards orange
    ("red", "blue"): 0.40,  # towards pink and magenta
    ("green", "red"): 0.55,  # towards lime and yellow
    ("green", "blue"): 0.55,  # towards teal and cyan
    ("blue", "red"): 0.40,  # towards violet and purple
    ("blue", "green"): 0.80,  # towards azure (matplotlib's default blue, 0.59; deep sky blue, 0.75) and cyan
}
# Pixels that are neither background, nor of a world hue, nor in a detected element's
# neighbourhood (anti-aliased rims, JPEG ringing): at most this share of the canvas.
MAX_STRAY = 0.04
# Straight grey or black lines across the canvas (a frame around the drawing, a plot's axes box, grid lines) are not
# part of what the world draws, but they are no content either: the reading ignores grey and the redraw drops them.
# A row or column is such a line where grey or black covers at least RULE_COVER of it, and the line is at most
# RULE_WIDTH px thick at 64 px (a thicker band is a bar, not a line).
RULE_COVER = 0.6
RULE_WIDTH = 3
# Every shape the world draws is as wide one way as any other: a regular polygon's (or star's) pixels spread alike in
# every direction (their second moments are isotropic). An ellipse, a bar, a crescent or a half disc is not, and the
# reading would redraw it as the world shape nearest to it. A mark is refused when its elongation (the square root of
# the ratio of its moments' eigenvalues: 1 for a disc, 2 for a 2:1 ellipse) exceeds that of the world shapes read in
# its place, drawn where it is and hidden where the image's other colours cover it, by more than this factor.
# Measured (benchmarks/RESULTS.md, session 36): at most 1.18 over 5,258 drawings read right (the world's and three
# other programs', 45 ways: outlines, radii, turns, JPEG, shapes pushed together); 1.34-1.37 for a 1.4:1 ellipse,
# 1.5-2.0 for crescents, half discs, rhombi and right triangles; 1.22 for a 1.25:1 ellipse, which passes.
MAX_STRETCH = 1.3

_SHAPE_NAMES = ", ".join(f"{shape}s" for shape in renderer.SHAPES[:-1]) + f" and {renderer.SHAPES[-1]}s"


def _hue_limit_table() -> np.ndarray:
    """HUE_LIMITS indexed by channel: [brightest channel, middle channel] (the diagonal is never read)."""
    table = np.ones((3, 3), dtype=np.float32)
    for (bright, middle), limit in HUE_LIMITS.items():
        table[CHANNEL[bright], CHANNEL[middle]] = limit
    return table


_HUE_LIMIT = _hue_limit_table()

OUTSIDE_ADVICE = ("This model only knows a few coloured shapes (red, green or blue) on a white background; "
                  "for photos and artwork use Stable Diffusion on a GPU.")


@dataclass(frozen=True)
class WorldFit:
    """The outcome of `check_in_world`: `ok`, and if not, `reason` (a sentence for the user)."""

    ok: bool
    reason: str = ""
    elements: int = 0  # elements the detector read
    background: float = 0.0  # share of background pixels, 0..1
    stretch: float | None = None  # `most_stretched`'s ratio (None: not reached, or no mark with a shape read in it)

    def message(self) -> str:
        return "" if self.ok else f"{self.reason} {OUTSIDE_ADVICE}"


def check_in_world(image: Image.Image) -> WorldFit:
    """Whether `image` (any size, RGB) looks like a shapes-world image; reads it at 64 px."""
    small = image.convert("RGB")
    if small.size != (renderer.IMAGE_SIZE, renderer.IMAGE_SIZE):
        small = small.resize((renderer.IMAGE_SIZE, renderer.IMAGE_SIZE), Image.BILINEAR)
    rgb = np.asarray(small, dtype=np.float32)
    sat = rgb.max(axis=2) - rgb.min(axis=2)
    white = rgb.min(axis=2) >= WHITE_LEVEL
    white |= _rules(sat, white)
    background = float(white.mean())
    frame = np.ones(white.shape, dtype=bool)
    frame[2:-2, 2:-2] = False
    # 1. A white canvas.
    if background < MIN_BACKGROUND or float(white[frame].mean()) < MIN_BORDER_BACKGROUND:
        return WorldFit(False, f"The image is not on a white background (only {background:.0%} of it is white).",
                        background=background)
    # 2. Elements the detector can read, as many as the world draws.
    found = detect(small, reading=FOREIGN_READING)
    if not found:
        inked = any(mask.sum() >= MIN_AREA for mask in colour_masks(rgb).values())
        return WorldFit(False, f"The image's coloured marks match none of this world's shapes ({_SHAPE_NAMES})."
                        if inked else "No coloured shape was found in the image (it is blank or its marks are too "
                        "faint).", background=background)
    if len(found) > MAX_ELEMENTS:
        return WorldFit(False, f"The image holds {len(found)} shapes; this world's images hold at most {MAX_ELEMENTS}.",
                        elements=len(found), background=background)
    # 3. Nothing else: no other hues, no marks the detector could not read as elements.
    order = np.argsort(rgb, axis=2, kind="stable")
    lo, mid = (np.take_along_axis(rgb, order[..., k : k + 1], axis=2)[..., 0] for k in range(2))
    coloured = ~white & (sat >= COLOURED)
    off_hue = coloured & ((mid - lo) > _HUE_LIMIT[order[..., 2], order[..., 1]] * np.maximum(sat, 1.0))
    near_elements = _near(found, white.shape)
    stray = ~white & ~near_elements
    if float(off_hue.mean()) > MAX_STRAY:
        return WorldFit(False, f"{float(off_hue.mean()):.0%} of the image is in colours other than red, green and blue.",
                        elements=len(found), background=background)
    if float(stray.mean()) > MAX_STRAY:
        return WorldFit(False, f"{float(stray.mean()):.0%} of the image is marks that are not shapes of this world.",
                        elements=len(found), background=background)
    # 4. Every mark drawn as a shape of this world would be: not stretched.
    stretched = most_stretched(rgb, found)
    stretch = stretched[2] if stretched else None
    if stretch is not None and stretch > MAX_STRETCH:
        colour, elongation, _ = stretched
        return WorldFit(False, f"A {colour} mark is {elongation:.1f} times as long as it is wide; this world draws "
                        f"only {_SHAPE_NAMES}, as wide as they are tall.",
                        elements=len(found), background=background, stretch=stretch)
    return WorldFit(True, elements=len(found), background=background, stretch=stretch)


def _rules(sat: np.ndarray, white: np.ndarray) -> np.ndarray:
    """The pixels of straight grey or black lines across an (H, W) canvas (`RULE_COVER`, `RULE_WIDTH`), which the
    check counts as background; `sat` is each pixel's brightest less darkest channel, `white` the background mask
    without them."""
    grey = ~white & (sat < COLOURED)
    rows = _thin(grey.mean(axis=1) >= RULE_COVER)
    columns = _thin(grey.mean(axis=0) >= RULE_COVER)
    return grey & (rows[:, None] | columns[None, :])


def _thin(lines: np.ndarray) -> np.ndarray:
    """`lines` (a bool per row or column) without its runs longer than `RULE_WIDTH`."""
    out = lines.copy()
    start = None
    for i, on in enumerate([*lines, False]):
        if on and start is None:
            start = i
        elif not on and start is not None:
            if i - start > RULE_WIDTH:
                out[start:i] = False
            start = None
    return out


def _near(found, shape: tuple[int, int]) -> np.ndarray:
    """Pixels within each detected element's circle (its farthest corner, `renderer.REACH` times its radius from the
    centre of its box, + 2 px), where its ink and rim lie; the radius as read where larger than its size word's."""
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]]
    mask = np.zeros(shape, dtype=bool)
    for d in found:
        r = max(renderer.RADIUS[d.size], d.element.radius if d.element else 0.0) * renderer.REACH + 2.0
        mask |= (xs + 0.5 - d.x) ** 2 + (ys + 0.5 - d.y) ** 2 <= r * r
    return mask


def _elongation(mask: np.ndarray) -> float:
    """How much longer than wide the pixels of an (H, W) bool mask are: the square root of the ratio of the
    eigenvalues of their coordinates' covariance (1: alike in every direction, as a disc or a regular polygon; 2: a
    2:1 ellipse). A pixel's own extent (1/12 px^2 each way) keeps a line of pixels finite."""
    ys, xs = np.nonzero(mask)
    if len(xs) < 2:
        return 1.0
    low, high = np.linalg.eigvalsh(np.cov(np.stack([xs, ys]).astype(np.float64)) + np.eye(2) / 12.0)
    return float(np.sqrt(high / low))


def most_stretched(rgb: np.ndarray, found) -> tuple[str, float, float] | None:
    """(colour, elongation, ratio) of the mark of an (H, W, 3) canvas that is most stretched past the world shapes
    `found` reads in its place: `ratio` is its elongation over theirs (the check refuses above `MAX_STRETCH`); None
    when no mark has a shape read in its place. A mark is a connected blob of one colour's ink
    (`detector.colour_masks`), holes filled; the shapes read in its place are `found`'s elements of that colour drawn
    alone (so their order does not hide one under another) with the image's other colours removed (so what covers a
    mark in the image covers them too). A mark with no shape read in its place is left to the stray-marks check."""
    masks = colour_masks(rgb)
    worst = None
    for colour in CHANNEL:
        read = [d.element for d in found if d.colour == colour]
        if not read:  # no shape of this colour read anywhere: its marks, if any, are stray marks
            continue
        others = np.logical_or.reduce([m for c, m in masks.items() if c != colour])
        drawn = colour_masks(np.asarray(renderer.render(read, size=rgb.shape[0]), dtype=np.float32))[colour] & ~others
        labels, count = ndimage.label(masks[colour], structure=np.ones((3, 3), dtype=bool))
        for index in range(1, count + 1):
            mark = ndimage.binary_fill_holes(labels == index)
            if mark.sum() < MIN_AREA:
                continue
            shapes = ndimage.binary_fill_holes(drawn & ndimage.binary_dilation(mark, iterations=3))
            if shapes.sum() < MIN_AREA:  # nothing read here: a stray mark (step 3's), such as a JPEG fringe
                continue
            elongation = _elongation(mark)
            ratio = elongation / _elongation(shapes)
            if worst is None or ratio > worst[2]:
                worst = (colour, elongation, ratio)
    return worst
