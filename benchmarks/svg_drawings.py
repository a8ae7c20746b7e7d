#!/usr/bin/env python
"""The reliability benchmark's 30 test layouts drawn as SVG by a program written blind, rasterised by Chromium.

    python benchmarks/svg_drawings.py [--out benchmarks/svg_drawings]      # needs Debian's chromium
    python -m originality.experiments.reliability --images benchmarks/svg_drawings --preset steady

A stand-in for the held-out drawings the targets are checked on, made the way an outside checker would hand them
over: files in a folder per group (`reliability --images`). Written in session 37, after the detector's reading was
last tuned, with conventions of a person drawing in SVG, unlike the world's renderer and the other four programs
(matplotlib, PIL, the box program): a 300 px canvas; the CSS colours crimson, seagreen and dodgerblue; a circle of
radius r (the world's radius for the size word, scaled); a square of side 1.5 r; an equilateral triangle, point up,
of circumradius 1.2 r; a hexagon with a vertex on top, circumradius 1.05 r; a five-pointed star, point up, outer
radius 1.2 r and inner 0.42 of it; Chromium's (Skia's) anti-aliasing. Writes `<group>/<index>.png` and
`captions.json` (file -> the layout's caption).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from originality.experiments.reliability import GROUPS, SPLITS  # noqa: E402
from originality.shapes import dataset  # noqa: E402
from originality.shapes.renderer import IMAGE_SIZE, RADIUS, Element  # noqa: E402

SIZE = 300  # px of the canvas
CSS = {"red": "crimson", "green": "seagreen", "blue": "dodgerblue"}


def _regular(x: float, y: float, radius: float, corners: int, start: float = 90) -> list[tuple[float, float]]:
    """Corners of a regular polygon about (x, y), the first at `start` degrees (anticlockwise; y grows down)."""
    return [(x + radius * math.cos(math.radians(start + 360 * k / corners)),
             y - radius * math.sin(math.radians(start + 360 * k / corners))) for k in range(corners)]


def element_svg(e: Element) -> str:
    """One element as an SVG shape on the SIZE px canvas."""
    scale = SIZE / IMAGE_SIZE
    x, y, r, fill = e.x * scale, e.y * scale, RADIUS[e.size] * scale, CSS[e.colour]
    if e.shape == "circle":
        return f'<circle cx="{x:.2f}" cy="{y:.2f}" r="{r:.2f}" fill="{fill}"/>'
    if e.shape == "square":
        side = 1.5 * r
        return (f'<rect x="{x - side / 2:.2f}" y="{y - side / 2:.2f}" width="{side:.2f}" height="{side:.2f}" '
                f'fill="{fill}"/>')
    if e.shape == "triangle":
        corners = _regular(x, y, 1.2 * r, 3)
    elif e.shape == "hexagon":
        corners = _regular(x, y, 1.05 * r, 6)
    else:
        points, dents = _regular(x, y, 1.2 * r, 5), _regular(x, y, 0.42 * 1.2 * r, 5, 90 + 36)
        corners = [p for pair in zip(points, dents) for p in pair]
    return f'<polygon points="{" ".join(f"{a:.2f},{b:.2f}" for a, b in corners)}" fill="{fill}"/>'


def rasterise(svg: str, png: Path) -> None:
    """An SVG document's SIZE x SIZE screenshot by headless Chromium."""
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "page.html"
        page.write_text(f'<html><body style="margin:0;overflow:hidden;background:white">{svg}</body></html>')
        subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--screenshot={png}", f"--window-size={SIZE},{SIZE}", "--force-device-scale-factor=1",
                        f"file://{page}"], check=True, capture_output=True, timeout=120)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "svg_drawings"))
    ap.add_argument("--per-group", type=int, default=10)
    args = ap.parse_args(argv)
    out, captions = Path(args.out), {}
    for group in GROUPS:
        (out / group).mkdir(parents=True, exist_ok=True)
        for index in range(args.per_group):
            sample = dataset.query(group, SPLITS["test"], index)
            svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{SIZE}" height="{SIZE}" style="display:block">'
                   + "".join(element_svg(e) for e in sample.elements) + "</svg>")
            name = f"{group}/{index:02d}.png"
            rasterise(svg, out / name)
            captions[name] = sample.caption
    (out / "captions.json").write_text(json.dumps(captions, indent=1) + "\n")
    print(f"wrote {len(captions)} drawings to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
