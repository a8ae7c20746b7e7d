"""The shapes world's layouts drawn by another program: matplotlib, with conventions of its own.

The world's own drawings (`renderer.render`, and `renderer.Variation`'s shades, radii, edges, blur and JPEG, which
the shipped model was fine-tuned on) all come from one renderer. A person who draws "a red circle and a blue square"
with another tool at the world's sizes makes other choices, and the benchmark asks whether the score survives
them (`reliability --drawing other`). The choices here are the plain ones of a plotting library, each where a
drawing program could differ from this project's renderer:

- colours: matplotlib's named `red` (255, 0, 0), `green` (0, 128, 0) and `blue` (0, 0, 255), where the world's
  are (220, 30, 30), (30, 160, 30) and (30, 30, 220);
- every polygon inscribed in the element's circle (the world's radius for its size): the square's side is
  r·√2 (the renderer draws it 1.15 times that), the triangle is centred on the circle (the renderer centres its
  bounding box), the hexagon has a vertex on top (the renderer's has a flat top) and the star's inner radius is
  the regular pentagram's 0.382 r (the renderer's 0.45 r);
- an empty element's outline is matplotlib's stroke, centred on the edge, 0.2 r wide (the renderer's band lies
  inside the edge);
- matplotlib's own anti-aliasing (Agg), at 64 px.

Positions, shapes, colour words, sizes and textures are the layout's, so a drawing here and the world's drawing of
one layout have one caption.
"""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend is chosen before pyplot is imported
from matplotlib.colors import to_rgb  # noqa: E402
from matplotlib.patches import Circle, Polygon  # noqa: E402
from PIL import Image  # noqa: E402

from ..shapes.renderer import IMAGE_SIZE, RADIUS, STROKE_FRACTION, Element  # noqa: E402

# The regular pentagram's inner radius, as a share of its outer one.
STAR_INNER = math.sin(math.radians(18)) / math.sin(math.radians(54))


def outline(shape: str, x: float, y: float, r: float) -> list[tuple[float, float]] | None:
    """The vertices of `shape` inscribed in the circle (x, y, r), a vertex on top (y grows downwards); None for a
    circle."""
    if shape == "circle":
        return None
    if shape == "star":
        radii = [r if k % 2 == 0 else STAR_INNER * r for k in range(10)]
        return [(x + radius * math.cos(math.radians(90 + 36 * k)), y - radius * math.sin(math.radians(90 + 36 * k)))
                for k, radius in enumerate(radii)]
    corners = {"square": 4, "triangle": 3, "hexagon": 6}[shape]
    start = 45 if shape == "square" else 90  # the square sits on a side, the others on their lowest vertex or side
    return [(x + r * math.cos(math.radians(start + 360 * k / corners)),
             y - r * math.sin(math.radians(start + 360 * k / corners))) for k in range(corners)]


def draw(elements: list[Element] | tuple[Element, ...], size: int = IMAGE_SIZE) -> Image.Image:
    """`elements` drawn by matplotlib on a white canvas of `size` px (RGB); their `rgb` and `scale` are ignored:
    the colour is matplotlib's named one and the radius the size word's."""
    figure = plt.figure(figsize=(1, 1), dpi=size)
    try:
        axes = figure.add_axes((0, 0, 1, 1))
        axes.set_xlim(0, IMAGE_SIZE)
        axes.set_ylim(IMAGE_SIZE, 0)
        axes.axis("off")
        for e in elements:
            colour = to_rgb(e.colour)
            r = RADIUS[e.size]
            full = e.texture == "full"
            # An outline's stroke is in points: 72 a figure inch, which is IMAGE_SIZE world pixels here.
            style = dict(facecolor=colour if full else "none", edgecolor=colour,
                         linewidth=0 if full else STROKE_FRACTION * r * 72 / IMAGE_SIZE)
            vertices = outline(e.shape, e.x, e.y, r)
            axes.add_patch(Circle((e.x, e.y), r, **style) if vertices is None else Polygon(vertices, closed=True,
                                                                                            **style))
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=size, facecolor="white")
    finally:
        plt.close(figure)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
