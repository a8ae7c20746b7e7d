#!/usr/bin/env python
"""The reliability benchmark's groups with other shapes beside the pair, as files for `reliability --images`.

    python benchmarks/extras_drawings.py [--out benchmarks/extras_drawings] [--per-group 10]
    python -m originality.experiments.reliability --images benchmarks/extras_drawings

The benchmark's queries hold their group's pair and nothing else (`dataset.query`: COMMON a circle and a square,
RARE a circle and a triangle, UNSEEN a square and a triangle). The world's training images of a pair also hold up
to two other shapes beside it (a hexagon or a star, `dataset.sample_elements`), and a person who draws "an image
that contains the pair" may draw those too. Here each of the test split's pairs (`SPLITS["test"]`, the same
shapes and colours as the benchmark's query of that index) gets one other shape (even indices) or two (odd ones),
a big full hexagon or star of any colour, as in training; the positions are drawn again for all of them
(`renderer.place`), and the world's renderer draws them as it varied its training drawings (`Variation`). Writes
`<group>/<index>.png` and `captions.json` (file -> caption), and prints how many of them the redraw's reading reads
right and the world check takes (no model).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from detector_programs import read_right  # noqa: E402 - this folder's script, run beside it
from originality.experiments.reliability import GROUPS, SPLITS  # noqa: E402
from originality.shapes import dataset  # noqa: E402
from originality.shapes.detector import FOREIGN_READING  # noqa: E402
from originality.shapes.renderer import COLOURS, Element, Variation, caption, place  # noqa: E402
from originality.shapes.scope import check_in_world  # noqa: E402


def layout(group: str, index: int) -> tuple[Element, ...]:
    """The test split's pair of `group` at `index` with one other shape (even index) or two (odd), placed anew."""
    rng = random.Random(f"extras-{group}-{index}")
    pair = [(e.shape, e.colour, e.size, e.texture) for e in dataset.query(group, SPLITS["test"], index).elements]
    others = [(rng.choice(dataset.FILLERS), rng.choice(COLOURS), "big", "full") for _ in range(1 + index % 2)]
    specs = pair + others
    rng.shuffle(specs)
    return tuple(place(specs, rng))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "extras_drawings")
    ap.add_argument("--per-group", type=int, default=10)
    args = ap.parse_args(argv)
    captions, right, taken = {}, 0, 0
    for group in GROUPS:
        (args.out / group).mkdir(parents=True, exist_ok=True)
        for index in range(args.per_group):
            elements = layout(group, index)
            image = Variation().render(elements, random.Random(f"extras-drawing-{group}-{index}"))
            name = f"{group}/{index:02d}.png"
            image.save(args.out / name)
            captions[name] = caption(elements)
            right += read_right(image, elements, FOREIGN_READING)[0]
            taken += check_in_world(image).ok
    (args.out / "captions.json").write_text(json.dumps(captions, indent=1) + "\n")
    print(f"wrote {len(captions)} drawings to {args.out}: the redraw's reading reads {right} right, the world "
          f"check takes {taken}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
