"""The shapes world's layouts drawn by a third program: PIL's `ImageDraw`, with its own plain conventions.

A second stand-in for the drawings the targets are checked on (made by a program this project does not have),
beside `other_program` (matplotlib). Where it differs from the world's renderer and from matplotlib:

- colours from a palette (`PALETTES`): pure (255, 0, 0)..., CSS named colours (crimson, forestgreen, royalblue),
  light or dark ones, where the world's are (220, 30, 30), (30, 160, 30), (30, 30, 220); the canvas may be
  off-white, and a full shape may be edged in black;
- polygons from `ImageDraw.regular_polygon`, inscribed in the element's circle (the square's side is r·√2, the
  renderer draws it 1.15 times that), a hexagon with a vertex on top, a triangle centred on its circle, a star
  with the regular pentagram's inner radius;
- an empty element's outline is PIL's, drawn inside the edge, `outline` times the radius wide (default a quarter;
  the world's: a fifth);
- edges drawn `supersample` times larger and reduced with a Lanczos filter (4), or aliased (1).

`outline`, `radius_scale` and `turn` draw further from the world's conventions (thin or thick outlines, larger or
smaller shapes, turned ones); `benchmarks/detector_programs.py` measures where the detector, and so the redraw,
stops reading them right.
"""

from __future__ import annotations

import math

from PIL import Image, ImageDraw

from ..shapes.renderer import IMAGE_SIZE, RADIUS, Element
from .other_program import STAR_INNER

PALETTES: dict[str, dict[str, tuple[int, int, int]]] = {
    "pure": {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)},
    "css": {"red": (220, 20, 60), "green": (34, 139, 34), "blue": (65, 105, 225)},
    "light": {"red": (240, 80, 80), "green": (80, 200, 80), "blue": (80, 80, 240)},
    "dark": {"red": (139, 0, 0), "green": (0, 100, 0), "blue": (0, 0, 139)},  # CSS darkred, darkgreen, darkblue
}
# An empty element's outline width, as a share of its radius (PIL's `width`, in pixels, is this times the radius).
OUTLINE_FRACTION = 0.25
SIDES = {"square": 4, "triangle": 3, "hexagon": 6}


def star(x: float, y: float, r: float, turn: float = 0.0) -> list[tuple[float, float]]:
    """A five-pointed star's ten vertices, a point on top when `turn` is 0 (degrees, clockwise on screen)."""
    radii = [r if k % 2 == 0 else STAR_INNER * r for k in range(10)]
    return [(x + radius * math.cos(math.radians(-90 + 36 * k + turn)),
             y + radius * math.sin(math.radians(-90 + 36 * k + turn))) for k, radius in enumerate(radii)]


def draw(elements: list[Element] | tuple[Element, ...], palette: str = "pure", supersample: int = 4,
         radius_scale: float = 1.0, turn: float = 0.0, outline: float = OUTLINE_FRACTION, black_edge: float = 0.0,
         background: tuple[int, int, int] = (255, 255, 255), size: int = IMAGE_SIZE) -> Image.Image:
    """`elements` drawn by PIL on a white canvas, `size` px square (RGB). Each element's `rgb`, `scale`, `turn` and
    `stroke` are ignored: its colour is `PALETTES[palette]`'s, its radius the size word's times `radius_scale`, an
    empty one's outline `outline` times its radius wide (at least a canvas pixel), a full one edged in black
    `black_edge` px wide (of the 64 px frame; 0: none), and every polygon is turned by `turn` degrees."""
    if palette not in PALETTES:
        raise ValueError(f"palette must be one of {', '.join(PALETTES)}, got {palette!r}")
    big = size * supersample
    k = big / IMAGE_SIZE  # layout pixels to canvas pixels
    canvas = Image.new("RGB", (big, big), background)
    pen = ImageDraw.Draw(canvas)
    for e in elements:
        r, x, y = RADIUS[e.size] * radius_scale * k, e.x * k, e.y * k
        colour = PALETTES[palette][e.colour]
        if e.texture == "empty":
            style = {"outline": colour, "width": max(1, round(outline * r))}
        elif black_edge:
            style = {"fill": colour, "outline": (0, 0, 0), "width": max(1, round(black_edge * k))}
        else:
            style = {"fill": colour}
        if e.shape == "circle":
            pen.ellipse([x - r, y - r, x + r, y + r], **style)
        elif e.shape == "star":
            pen.polygon(star(x, y, r, turn), **style)
        else:
            pen.regular_polygon((x, y, r), SIDES[e.shape], rotation=turn, **style)
    return canvas.resize((size, size), Image.LANCZOS) if supersample > 1 else canvas
