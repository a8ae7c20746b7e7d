#!/usr/bin/env python
"""Which drawings does the detector read right? (issue #27: the category the targets are checked on)

    python benchmarks/detector_programs.py [--out benchmarks/detector_programs.json]

`steady` redraws every query as the world draws what the detector reads (`shapes.redraw`), so a drawing it
misreads is scored as another image. The targets are checked on drawings made by a program this project does not
have; this measures how far the reading carries. Two sets of drawings: the reliability benchmark's 60 layouts
(both splits, 10 per group), and the 60 elements of the world's vocabulary alone (5 shapes x 3 colours x 2 sizes x
2 textures, each at a seeded position), drawn:

1. by the world's renderer (exact, and varied as in training), by matplotlib (`other_program`) and by PIL
   (`pil_program`: four palettes, anti-aliased or aliased; an off-white canvas; full shapes edged in black) at the
   world's sizes, upright;
2. PIL's pure-colour drawing at 256 and 512 px, and after JPEG at quality 75;
3. further from the world's conventions: PIL's outlines thinner or thicker, the renderer's shapes at other radii
   (at 1.5 and 1.75 of the size word's, moved apart into the canvas's corners: a small shape drawn that large is a
   big one, so those rows' single small elements are misread by construction), the renderer's pairs pushed 3 and
   5 px into each other (a single element stays as the exact row draws it), PIL's at 0.8, 0.85 and 1.15 of the size
   word's radius, and PIL's polygons turned;
4. by a program written after the redraw's reading was tuned on the rows above (`box_program`: numpy, shapes
   filling their box, the Tableau palette, 2 px outlines), as drawn, at 256 px and after JPEG: how far the reading
   carries to conventions it was not tuned on.

5. the world check (`shapes.scope.check_in_world`) on each: how many drawings read right it refuses, and its
   `stretch` (a mark's elongation over the world shapes read in its place; refused above `MAX_STRETCH`); and on
   shapes this world does not draw (ellipses, crescents, half discs, ...; `foreign_shapes`), which it should refuse.

A drawing is read right when the detector's (shape, colour, size, texture) of every element equal the caption's.
Two readings: the judge's (`detect` with the world's own outline width, what scores reconstructions and a query
analysed as given) and the redraw's (`detect(..., reading=FOREIGN_READING)`, what `steady` shows the model).
Printed and written per drawing and set: drawings read right (of 60) by each reading, which shapes the redraw's
misreadings held, and how much a drawing and its redrawing overlap (`mask_iou`: the lowest for drawings the redraw
reads right, the highest for ones it misreads; were the two apart, a pixel check could warn of a misreading). No
model, no randomness beyond the seeded layouts, positions and varied drawings; about ten minutes on one core
(session 31, beside two benchmark shards).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from originality.experiments import box_program, other_program, pil_program  # noqa: E402
from originality.experiments.figure6 import GROUPS, query_image  # noqa: E402
from originality.experiments.reliability import SPLITS  # noqa: E402
from originality.shapes import dataset, renderer  # noqa: E402
from originality.shapes.detector import FOREIGN_READING, WORLD_READING, Reading, detect  # noqa: E402
from originality.shapes.redraw import redraw  # noqa: E402
from originality.shapes.scope import MAX_STRETCH, check_in_world  # noqa: E402

PER_GROUP = 10
RENDERER_SCALES = (0.72, 0.75, 0.8, 0.84, 0.88, 1.12, 1.16, 1.2, 1.25)
LARGER_SCALES = (1.5, 1.75)  # past the world's radii by more than its variation; drawn apart, in the corners
PUSHES = (3, 5)  # px (of 64) by which a layout's two elements are pushed into each other
PIL_RADIUS_SCALES = (0.8, 0.85, 1.15)
PIL_TURNS = (10, 30, 45)
PIL_OUTLINES = (0.1, 0.15, 0.3, 0.35)


def drawings() -> dict[str, tuple[str, Callable]]:
    """name -> (kind, how to draw a layout's elements); kind says which step of the docstring it belongs to."""
    ways: dict[str, tuple[str, Callable]] = {
        "world exact": ("world's sizes", lambda els: renderer.render(els)),
        "world varied": ("world's sizes", None),  # the benchmark's own varied drawing, seeded per query
        "matplotlib": ("world's sizes", other_program.draw),
    }
    for palette in pil_program.PALETTES:
        for supersample, edges in ((4, "anti-aliased"), (1, "aliased")):
            ways[f"PIL {palette}, {edges}"] = ("world's sizes", lambda els, p=palette, s=supersample:
                                               pil_program.draw(els, palette=p, supersample=s))
    ways["PIL pure, aliased, 1 px outline"] = ("world's sizes", lambda els: pil_program.draw(els, supersample=1,
                                                                                          outline=0.0))
    ways["PIL pure, off-white canvas (235)"] = ("world's sizes", lambda els: pil_program.draw(els,
                                                                                           background=(235,) * 3))
    ways["PIL pure, full shapes edged in black"] = ("world's sizes", lambda els: pil_program.draw(els, black_edge=1))
    ways["PIL pure, 256 px"] = ("resized or compressed", lambda els: pil_program.draw(els, size=256))
    ways["PIL pure, 512 px"] = ("resized or compressed", lambda els: pil_program.draw(els, size=512))
    ways["PIL pure, JPEG 75"] = ("resized or compressed", lambda els: renderer.jpeg(pil_program.draw(els), 75))
    for outline in PIL_OUTLINES:
        for supersample, edges in ((4, "anti-aliased"), (1, "aliased")):
            ways[f"PIL pure, {edges}, outline {outline} r"] = (
                "other outlines", lambda els, w=outline, s=supersample: pil_program.draw(els, supersample=s, outline=w))
    for scale in RENDERER_SCALES:
        ways[f"world, radius x{scale}"] = ("outside the conventions", lambda els, k=scale:
                                           renderer.render([replace(e, scale=k) for e in els]))
    for scale in LARGER_SCALES:
        ways[f"world, radius x{scale}, apart"] = ("outside the conventions", lambda els, k=scale:
                                                  renderer.render(apart(els, k)))
    for push in PUSHES:
        ways[f"world, pushed {push} px into each other"] = ("outside the conventions", lambda els, k=push:
                                                           renderer.render(pushed(els, k)))
    for scale in PIL_RADIUS_SCALES:
        ways[f"PIL pure, radius x{scale}"] = ("outside the conventions", lambda els, k=scale:
                                              pil_program.draw(els, radius_scale=k))
    for turn in PIL_TURNS:
        ways[f"PIL pure, turned {turn} deg"] = ("outside the conventions", lambda els, t=turn:
                                                pil_program.draw(els, turn=t))
    held_out = "a program written after the reading was tuned"
    ways["numpy, shapes filling their box"] = (held_out, box_program.draw)
    ways["numpy, filling their box, 256 px"] = (held_out, lambda els: box_program.draw(els, size=256))
    ways["numpy, filling their box, JPEG 75"] = (held_out, lambda els: renderer.jpeg(box_program.draw(els), 75))
    return ways


def apart(elements, scale: float) -> list[renderer.Element]:
    """`elements` at `scale` times their radius, moved into the canvas's corners (top left, bottom right, top right,
    bottom left) so that big ones drawn that large do not overlap; one alone stays where it is, inside the canvas."""
    out = []
    for k, e in enumerate(elements):
        near = e.radius * scale + 1  # the nearest a centre may come to the canvas's edge
        far = renderer.IMAGE_SIZE - near
        if len(elements) > 1:
            x, y = ((near, near), (far, far), (far, near), (near, far))[k]
        else:
            x, y = min(max(e.x, near), far), min(max(e.y, near), far)
        out.append(replace(e, x=x, y=y, scale=scale))
    return out


def pushed(elements, overlap: float) -> list[renderer.Element]:
    """Two elements moved along the line between their centres until their circles overlap by `overlap` px (the
    world's never overlap by more than `renderer.OVERLAP_TOLERANCE`); one alone stays as it is."""
    if len(elements) != 2:
        return list(elements)
    a, b = elements
    dx, dy = b.x - a.x, b.y - a.y
    apart_by = math.hypot(dx, dy)
    move = (apart_by - a.radius - b.radius + overlap) / 2 / apart_by
    return [replace(a, x=a.x + dx * move, y=a.y + dy * move), replace(b, x=b.x - dx * move, y=b.y - dy * move)]


def layouts() -> list[tuple[str, str, int, tuple[renderer.Element, ...]]]:
    """(split, group, index, elements) of the reliability benchmark's queries, both splits."""
    return [(split, g, i, tuple(dataset.query(g, seed, i).elements))
            for split, seed in SPLITS.items() for g in GROUPS for i in range(PER_GROUP)]


def single_elements() -> list[tuple[str, str, int, tuple[renderer.Element, ...]]]:
    """Every element of the vocabulary alone, at a position drawn from a fixed seed (away from the border)."""
    rng = random.Random(0)
    return [("alone", "-", k, (renderer.Element(shape, colour, size, texture, rng.uniform(16, 48),
                                                rng.uniform(16, 48)),))
            for k, (shape, colour, size, texture) in enumerate(
                (sh, c, si, t) for sh in renderer.SHAPES for c in renderer.COLOURS for si in renderer.SIZES
                for t in renderer.TEXTURES)]


def read_right(image, elements, reading: Reading = WORLD_READING) -> tuple[bool, Counter]:
    """Whether the detector, looking as `reading` says, reads `elements` in `image`, and the shapes of the elements
    it missed."""
    found = detect(image, reading=reading)
    got = Counter(d.key for d in found)
    want = Counter((e.shape, e.colour, e.size, e.texture) for e in elements)
    return got == want, Counter(key[0] for key in (want - got).elements())


def mask_iou(image, other) -> float:
    """Overlap (0..1) of two drawings' coloured pixels, colour by colour, at 64 px."""
    def masks(im):
        rgb = np.asarray(im.convert("RGB").resize((renderer.IMAGE_SIZE,) * 2), dtype=np.float32)
        coloured = rgb.max(axis=2) - rgb.min(axis=2) >= 60
        return [coloured & (rgb.argmax(axis=2) == channel) for channel in range(3)]

    pairs = list(zip(masks(image), masks(other)))
    return float(sum((a & b).sum() for a, b in pairs) / max(1, sum((a | b).sum() for a, b in pairs)))


def measure() -> dict:
    results = {}
    sets = {"layouts": layouts(), "alone": single_elements()}
    print(f"{'drawing':40s} {'layouts: judge / redraw':>24s} {'alone: judge / redraw':>22s} {'refused':>8s}  "
          "redraw missed (alone)")
    for name, (kind, how) in drawings().items():
        entry = {"kind": kind}
        for set_name, items in sets.items():
            judge = redrawn = 0
            missed = Counter()
            refused: dict[bool, int] = {True: 0, False: 0}  # by the world check, read right or not
            stretch: list[float] = []  # the check's `stretch` of the drawings read right
            overlap: dict[bool, list[float]] = {True: [], False: []}
            for split, group, index, elements in items:
                if how is None:  # the benchmark's varied drawing, or the renderer's own variation for one element
                    image = (query_image(group, SPLITS[split], index, "varied")[1] if split in SPLITS else
                             renderer.Variation().render(elements, random.Random(f"alone-{index}")))
                else:
                    image = how(elements)
                judge += read_right(image, elements)[0]
                ok, lost = read_right(image, elements, FOREIGN_READING)
                redrawn += ok
                missed += lost
                fit = check_in_world(image)
                refused[ok] += not fit.ok
                if ok and fit.stretch is not None:
                    stretch.append(fit.stretch)
                drawn = redraw(image)
                overlap[ok].append(0.0 if drawn is None else mask_iou(image, drawn))
            entry[set_name] = {"drawings": len(items), "judge_read_right": judge, "redraw_read_right": redrawn,
                               "redraw_missed_shapes": dict(missed), "check_refused_read_right": refused[True],
                               "check_refused_misread": refused[False],
                               "stretch_highest_read_right": round(max(stretch), 3) if stretch else None,
                               "mask_iou_lowest_read_right": round(min(overlap[True]), 3) if overlap[True] else None,
                               "mask_iou_highest_misread": round(max(overlap[False]), 3) if overlap[False] else None}
        results[name] = entry
        lay, alone = entry["layouts"], entry["alone"]
        print(f"{name:40s} {lay['judge_read_right']:>14d} / {lay['redraw_read_right']:<7d} "
              f"{alone['judge_read_right']:>12d} / {alone['redraw_read_right']:<7d} "
              f"{lay['check_refused_read_right'] + alone['check_refused_read_right']:>8d}  "
              f"{alone['redraw_missed_shapes'] or ''}", flush=True)
    right = [e[k]["mask_iou_lowest_read_right"] for e in results.values() if e["kind"] == "world's sizes"
             for k in sets if e[k]["mask_iou_lowest_read_right"] is not None]
    wrong = [e[k]["mask_iou_highest_misread"] for e in results.values() for k in sets
             if e[k]["mask_iou_highest_misread"] is not None]
    print(f"drawing against its redrawing (colour-mask IoU): read right at the world's sizes down to {min(right):.2f}, "
          f"misread up to {max(wrong):.2f}")
    read_right_count = sum(e[k]["redraw_read_right"] for e in results.values() for k in sets)
    stretches = [e[k]["stretch_highest_read_right"] for e in results.values() for k in sets
                 if e[k]["stretch_highest_read_right"] is not None]
    print(f"the world check on the {read_right_count} drawings read right: refused "
          f"{sum(e[k]['check_refused_read_right'] for e in results.values() for k in sets)}, stretch at most "
          f"{max(stretches):.2f} (refused above {MAX_STRETCH})")
    return results


def foreign_shapes() -> dict[str, Callable]:
    """name -> a 256 px drawing of a shape this world does not draw, in a world colour on white (an ellipse at
    several aspect ratios, a rectangle, a crescent, a half disc, a rhombus, a right triangle, a trapezoid, a pentagon,
    an octagon, a bar), at two radii (24 and 40 px of 256)."""
    from PIL import Image, ImageDraw  # noqa: PLC0415 - only this set draws by hand

    red, green, blue = (230, 20, 20), (20, 180, 20), (20, 20, 230)

    def canvas(paint) -> Callable:
        def draw():
            image = Image.new("RGB", (256, 256), "white")
            paint(ImageDraw.Draw(image))
            return image
        return draw

    ways: dict[str, Callable] = {}
    c = 128
    for r in (24, 40):
        for ratio in (1.25, 1.4, 1.6, 2.0, 3.0):
            ways[f"ellipse {ratio}:1, r {r}"] = canvas(lambda pen, r=r, k=ratio: pen.ellipse(
                [c - r * k, c - r, c + r * k, c + r], fill=red))
            ways[f"rectangle {ratio}:1, r {r}"] = canvas(lambda pen, r=r, k=ratio: pen.rectangle(
                [c - r * k, c - r, c + r * k, c + r], fill=green))
        ways[f"crescent, r {r}"] = canvas(lambda pen, r=r: (pen.ellipse([c - r, c - r, c + r, c + r], fill=red),
                                                            pen.ellipse([c - 0.4 * r, c - r, c + 1.6 * r, c + r],
                                                                        fill="white")))
        ways[f"half disc, r {r}"] = canvas(lambda pen, r=r: pen.pieslice([c - r, c - r, c + r, c + r], 0, 180,
                                                                         fill=blue))
        ways[f"rhombus, r {r}"] = canvas(lambda pen, r=r: pen.polygon(
            [(c, c - r), (c + 0.6 * r, c), (c, c + r), (c - 0.6 * r, c)], fill=red))
        ways[f"right triangle, r {r}"] = canvas(lambda pen, r=r: pen.polygon(
            [(c - r, c + r), (c + r, c + r), (c - r, c - r)], fill=green))
        ways[f"trapezoid, r {r}"] = canvas(lambda pen, r=r: pen.polygon(
            [(c - r, c - r), (c + r, c - 0.5 * r), (c + r, c + 0.5 * r), (c - r, c + r)], fill=blue))
        ways[f"pentagon, r {r}"] = canvas(lambda pen, r=r: pen.regular_polygon((c, c, r), 5, fill=green))
        ways[f"octagon, r {r}"] = canvas(lambda pen, r=r: pen.regular_polygon((c, c, r), 8, fill=red))
    ways["bar"] = canvas(lambda pen: pen.line([(40, c), (216, c)], fill=blue, width=10))
    return ways


def measure_foreign() -> dict:
    """The world check on `foreign_shapes`: taken or refused, and its `stretch`."""
    out = {}
    print(f"\n{'a shape this world does not draw':40s} {'check':>8s} {'stretch':>8s}")
    for name, draw in foreign_shapes().items():
        fit = check_in_world(draw())
        out[name] = {"taken": fit.ok, "stretch": None if fit.stretch is None else round(fit.stretch, 3),
                     "reason": fit.reason}
        shown = "-" if fit.stretch is None else f"{fit.stretch:.2f}"
        print(f"{name:40s} {'taken' if fit.ok else 'refused':>8s} {shown:>8s}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "detector_programs.json"))
    args = ap.parse_args(argv)
    results = measure()
    foreign = measure_foreign()
    Path(args.out).write_text(json.dumps({"layouts": "reliability benchmark, both splits, 10 per group",
                                          "alone": "every element of the vocabulary alone, seeded positions",
                                          "foreign_reading": FOREIGN_READING._asdict(), "max_stretch": MAX_STRETCH,
                                          "drawings": results, "foreign_shapes": foreign},
                                         indent=1) + "\n")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
