#!/usr/bin/env python
"""The reliability benchmark's 30 test layouts drawn as SVG by a program written blind, rasterised by Chromium.

    python benchmarks/svg_drawings.py [--out benchmarks/svg_drawings]      # needs Debian's chromium
    python -m originality.experiments.reliability --images benchmarks/svg_drawings --preset steady
    python benchmarks/svg_drawings.py --variants      # how the reading and the world check take other conventions

A stand-in for the held-out drawings the targets are checked on, made the way an outside checker would hand them
over: files in a folder per group (`reliability --images`). Written in session 37, after the detector's reading was
last tuned, with conventions of a person drawing in SVG, unlike the world's renderer and the other four programs
(matplotlib, PIL, the box program): a 300 px canvas; the CSS colours crimson, seagreen and dodgerblue; a circle of
radius r (the world's radius for the size word, scaled); a square of side 1.5 r; an equilateral triangle, point up,
of circumradius 1.2 r; a hexagon with a vertex on top, circumradius 1.05 r; a five-pointed star, point up, outer
radius 1.2 r and inner 0.42 of it; Chromium's (Skia's) anti-aliasing. Writes `<group>/<index>.png` and
`captions.json` (file -> the layout's caption).

`--variants` draws the 30 layouts in other conventions (`VARIANTS`: canvas sizes, strokes, colours, polygon sizes
and turns, no anti-aliasing, JPEG) and prints, for each, how many the redraw's reading reads right (every element's
shape, colour, size and texture) and how many the world check takes. No model; a minute or two.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from originality.experiments.reliability import GROUPS, SPLITS  # noqa: E402
from originality.shapes import dataset  # noqa: E402
from originality.shapes.detector import FOREIGN_READING, detect  # noqa: E402
from originality.shapes.renderer import IMAGE_SIZE, RADIUS, Element  # noqa: E402
from originality.shapes.scope import check_in_world  # noqa: E402

CSS = {"red": "crimson", "green": "seagreen", "blue": "dodgerblue"}


@dataclass(frozen=True)
class Style:
    """How the program draws: sizes as multiples of the world's radius r for the size word."""

    size: int = 300  # px of the canvas
    colours: dict[str, str] = field(default_factory=lambda: dict(CSS))
    square: float = 1.5  # side
    triangle: float = 1.2  # circumradius
    triangle_turn: float = 90  # degrees of its first corner (90: point up)
    hexagon: float = 1.05  # circumradius
    hexagon_turn: float = 90  # 90: a vertex on top; 0: a flat top
    star: float = 1.2  # outer radius
    star_inner: float = 0.42  # inner radius, of the outer
    radius_scale: float = 1.0  # every shape's r
    stroke: str = ""  # e.g. 'stroke="black" stroke-width="3"'
    background: str = "white"


def _regular(x: float, y: float, radius: float, corners: int, start: float = 90) -> list[tuple[float, float]]:
    """Corners of a regular polygon about (x, y), the first at `start` degrees (anticlockwise; y grows down)."""
    return [(x + radius * math.cos(math.radians(start + 360 * k / corners)),
             y - radius * math.sin(math.radians(start + 360 * k / corners))) for k in range(corners)]


def element_svg(e: Element, style: Style = Style()) -> str:
    """One element as an SVG shape on the style's canvas."""
    scale = style.size / IMAGE_SIZE
    x, y, fill = e.x * scale, e.y * scale, f'fill="{style.colours[e.colour]}" {style.stroke}'.strip()
    r = RADIUS[e.size] * scale * style.radius_scale
    if e.shape == "circle":
        return f'<circle cx="{x:.2f}" cy="{y:.2f}" r="{r:.2f}" {fill}/>'
    if e.shape == "square":
        side = style.square * r
        return (f'<rect x="{x - side / 2:.2f}" y="{y - side / 2:.2f}" width="{side:.2f}" height="{side:.2f}" '
                f'{fill}/>')
    if e.shape == "triangle":
        corners = _regular(x, y, style.triangle * r, 3, style.triangle_turn)
    elif e.shape == "hexagon":
        corners = _regular(x, y, style.hexagon * r, 6, style.hexagon_turn)
    else:
        outer = style.star * r
        points, dents = _regular(x, y, outer, 5), _regular(x, y, style.star_inner * outer, 5, 90 + 36)
        corners = [p for pair in zip(points, dents) for p in pair]
    return f'<polygon points="{" ".join(f"{a:.2f},{b:.2f}" for a, b in corners)}" {fill}/>'


def layout_svg(elements, style: Style = Style()) -> str:
    """A layout's elements as one SVG document."""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{style.size}" height="{style.size}" '
            f'style="display:block;background:{style.background}">' + "".join(element_svg(e, style) for e in elements)
            + "</svg>")


def _screenshot(body: str, width: int, height: int, png: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "page.html"
        page.write_text(f'<html><body style="margin:0;overflow:hidden;background:white">{body}</body></html>')
        subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--screenshot={png}", f"--window-size={width},{height}", "--force-device-scale-factor=1",
                        f"file://{page}"], check=True, capture_output=True, timeout=120)


def rasterise(svg: str, png: Path, size: int) -> None:
    """An SVG document's size x size screenshot by headless Chromium, written to `png`."""
    _screenshot(svg, size, size, png)


def rasterise_many(svgs: list[str], size: int, columns: int = 6) -> list[Image.Image]:
    """Several SVG documents of one size in one Chromium screenshot (a grid), cut apart."""
    rows = -(-len(svgs) // columns)
    body = "".join(f'<div style="position:absolute;left:{k % columns * size}px;top:{k // columns * size}px">{s}</div>'
                   for k, s in enumerate(svgs))
    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "grid.png"
        _screenshot(body, columns * size, rows * size, png)
        grid = Image.open(png).convert("RGB")
    return [grid.crop((k % columns * size, k // columns * size, (k % columns + 1) * size, (k // columns + 1) * size))
            for k in range(len(svgs))]


def layouts(per_group: int = 10) -> list[tuple[str, int, dataset.Sample]]:
    """(group, index, sample) of the reliability benchmark's test layouts."""
    return [(g, i, dataset.query(g, SPLITS["test"], i)) for g in GROUPS for i in range(per_group)]


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


VARIANTS: dict[str, tuple[Style, Callable | None]] = {
    "as in the folder (300 px)": (Style(), None),
    "JPEG 60": (Style(), lambda im: _jpeg(im, 60)),
    "128 px": (Style(size=128), None),
    "1024 px": (Style(size=1024), None),
    "no anti-aliasing": (Style(stroke='shape-rendering="crispEdges"'), None),
    "fill 60% opaque": (Style(stroke='fill-opacity="0.6"'), None),
    "edged in black, 3 px": (Style(stroke='stroke="black" stroke-width="3"'), None),
    "CSS red, green, blue": (Style(colours={"red": "red", "green": "green", "blue": "blue"}), None),
    "CSS tomato, limegreen, royalblue": (Style(colours={"red": "tomato", "green": "limegreen",
                                                        "blue": "royalblue"}), None),
    "off-white canvas (#f4f4f4)": (Style(background="#f4f4f4"), None),
    "square filling its box (side 2 r)": (Style(square=2.0), None),
    "square of side 1.2 r": (Style(square=1.2), None),
    "triangle point down": (Style(triangle_turn=270), None),
    "triangle of circumradius r": (Style(triangle=1.0), None),
    "hexagon with a flat top": (Style(hexagon_turn=0), None),
    "star inner 0.38 (a pentagram)": (Style(star_inner=0.38), None),
    "star inner 0.55": (Style(star_inner=0.55), None),
    "square inscribed (side 1.41 r)": (Style(square=2 ** 0.5), None),
    "every radius x0.85, square inscribed": (Style(square=2 ** 0.5, radius_scale=0.85), None),
    "every radius x0.8": (Style(radius_scale=0.8), None),
    "every radius x0.75": (Style(radius_scale=0.75), None),
    "every radius x1.25": (Style(radius_scale=1.25), None),
}


def measure_variants() -> dict[str, dict]:
    """Per variant: drawings the redraw reads right, drawings the world check takes, and the misread ones."""
    found: dict[str, dict] = {}
    items = layouts()
    print(f"{'the 30 test layouts drawn in SVG':36s} {'read right':>10s} {'taken':>6s}  misread (what was read)")
    for name, (style, after) in VARIANTS.items():
        images = rasterise_many([layout_svg(sample.elements, style) for _, _, sample in items], style.size)
        right, taken, misread = 0, 0, []
        for (group, index, sample), image in zip(items, images):
            image = after(image) if after else image
            want = sorted((e.shape, e.colour, e.size, e.texture) for e in sample.elements)
            small = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
            got = sorted(d.key for d in detect(small, reading=FOREIGN_READING))
            right += got == want
            taken += check_in_world(image).ok
            if got != want:
                misread.append(f"{group} {index}: {', '.join(f'{k[2]} {k[1]} {k[0]}' for k in got)}")
        found[name] = {"read_right": right, "taken": taken, "drawings": len(items), "misread": misread}
        shown = "; ".join(misread[:2]) + (f"; +{len(misread) - 2}" if len(misread) > 2 else "")
        print(f"{name:36s} {right:>7d}/{len(items)} {taken:>3d}/{len(items)}  {shown}", flush=True)
    return found


def write_folder(out: Path, per_group: int) -> None:
    captions = {}
    for group, index, sample in layouts(per_group):
        (out / group).mkdir(parents=True, exist_ok=True)
        name = f"{group}/{index:02d}.png"
        rasterise(layout_svg(sample.elements), out / name, Style().size)
        captions[name] = sample.caption
    (out / "captions.json").write_text(json.dumps(captions, indent=1) + "\n")
    print(f"wrote {len(captions)} drawings to {out}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "svg_drawings"))
    ap.add_argument("--per-group", type=int, default=10)
    ap.add_argument("--variants", action="store_true", help="measure the reading on other conventions instead")
    args = ap.parse_args(argv)
    if args.variants:
        measure_variants()
    else:
        write_folder(Path(args.out), args.per_group)
    return 0


if __name__ == "__main__":
    sys.exit(main())
