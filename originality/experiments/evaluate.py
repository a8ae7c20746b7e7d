"""Quality gate for a shapes-world model: does it draw the combinations it has seen?

    python -m originality.experiments.evaluate [--model assets/shapes-model] [--per-prompt 8] [--seed 0]
                                          [--out outputs/evaluate]

The originality analysis is only meaningful on a model that renders what it saw
in training. This script prompts the model with SEEN combinations and lets the
rule-based detector read every image:

- singles: every big full element on its own, 5 shapes x 3 colours = 15 prompts
  ("big red full circle");
- common pairs: the COMMON pair (circle, square) in several colour combinations
  ("big red full circle and big blue full square"), all 9 by default or a seeded
  subset (--common-combos).

An image is *exact* when the detector finds exactly the prompted elements (the
multiset of (shape, colour, size, texture)), and *loosely* right when the
multisets of (shape, colour) agree. Target: at least 80% exact per group; the
script prints PASS / FAIL per group and exits 0 either way unless --strict.

Generation goes through `originality.analysis.generate` on a model loaded by
`originality.models.load_model`, i.e. the very code path the analysis uses, with
the sampler settings of an `AnalysisConfig` preset (default: fast).

It also prints how well the text encoder binds colours to shapes (`model.colour_binding`),
the usual cause of pairs drawn with their colours swapped.

Writes to --out: results.json (settings, per-group and per-prompt accuracy, every
image's detections, the colour binding) and grid.png (one row per prompt, the prompt at left; green
frame = exact, orange = right shapes and colours only, red = wrong).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ..config import DTYPE_CHOICES, PRESETS, AnalysisConfig
from ..shapes import SHAPES_MODEL_DIR
from ..shapes import WORLD as SHAPES_WORLD
from ..shapes.detector import detect
from ..shapes.model import colour_binding
from ..shapes.renderer import COLOURS, SHAPES, Element, caption

logger = logging.getLogger(__name__)

TARGET = 0.8  # exact accuracy each group must reach
COMMON_PAIR = ("circle", "square")
Key = tuple[str, str, str, str]  # (shape, colour, size, texture)


@dataclass
class PromptSpec:
    """One evaluation prompt: its group, the elements it asks for, and the text sent to the model."""

    group: str  # "singles" or "common pairs"
    elements: tuple[Key, ...]
    prompt: str  # caption, possibly wrapped in a template

    @property
    def caption(self) -> str:
        return caption([Element(*k) for k in self.elements])


@dataclass
class PromptResult:
    spec: PromptSpec
    seeds: list[int]
    detections: list[list[Key]] = field(default_factory=list)  # per image, detected keys

    def exact(self) -> list[bool]:
        want = Counter(self.spec.elements)
        return [Counter(d) == want for d in self.detections]

    def loose(self) -> list[bool]:
        want = Counter((s, c) for s, c, _, _ in self.spec.elements)
        return [Counter((s, c) for s, c, _, _ in d) == want for d in self.detections]


def seen_prompts(common_combos: int = 9, seed: int = 0, template: str | None = None) -> list[PromptSpec]:
    """The prompts of the gate: 15 singles, then `common_combos` colourings of the COMMON pair.

    With fewer than all 9 colourings a subset is drawn with `random.Random(seed)`.
    `template` (e.g. "a photo of {}") wraps every caption.
    """
    if not 1 <= common_combos <= len(COLOURS) ** 2:
        raise ValueError(f"common_combos must be between 1 and {len(COLOURS) ** 2}, got {common_combos}")
    if template is not None and template.count("{}") != 1:
        raise ValueError(f"template must contain exactly one '{{}}', got {template!r}")

    def spec(group: str, elements: tuple[Key, ...]) -> PromptSpec:
        text = caption([Element(*k) for k in elements])
        return PromptSpec(group, elements, template.format(text) if template else text)

    specs = [spec("singles", ((shape, colour, "big", "full"),)) for shape in SHAPES for colour in COLOURS]
    combos = list(itertools.product(COLOURS, COLOURS))
    if common_combos < len(combos):
        combos = sorted(random.Random(seed).sample(combos, common_combos), key=combos.index)
    for c1, c2 in combos:
        specs.append(spec("common pairs", ((COMMON_PAIR[0], c1, "big", "full"), (COMMON_PAIR[1], c2, "big", "full"))))
    return specs


def evaluate(model, specs: list[PromptSpec], config: AnalysisConfig, per_prompt: int, seed: int = 0,
             on_prompt=None) -> tuple[list[PromptResult], dict[str, list[Image.Image]]]:
    """Generate `per_prompt` images per prompt and detect their elements.

    Prompt k's image i comes from seed `seed + 1000 * k + i`. Returns the results and
    the images (by prompt text). `config` must be resolved (guidance scale filled in).
    """
    from ..analysis import generate  # noqa: PLC0415 - start-up: loads torch/numpy only when used

    results, images = [], {}
    for k, spec in enumerate(specs):
        base = seed + 1000 * k
        t0 = time.perf_counter()
        ims = generate(model.pipeline, spec.prompt, per_prompt, seed=base, config=config, resolution=model.resolution)
        result = PromptResult(spec, [base + i for i in range(per_prompt)])
        result.detections = [[d.key for d in detect(im)] for im in ims]
        results.append(result)
        images[spec.prompt] = ims
        if on_prompt is not None:
            on_prompt(k, result, time.perf_counter() - t0)
    return results, images


def _rate(flags: list[bool]) -> float:
    return sum(flags) / len(flags) if flags else float("nan")


def group_summary(results: list[PromptResult], target: float = TARGET) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for group in dict.fromkeys(r.spec.group for r in results):
        rs = [r for r in results if r.spec.group == group]
        exact = [x for r in rs for x in r.exact()]
        loose = [x for r in rs for x in r.loose()]
        out[group] = {
            "prompts": len(rs),
            "images": len(exact),
            "exact": _rate(exact),
            "loose": _rate(loose),
            "target": target,
            "passed": _rate(exact) >= target,
        }
    return out


def prompt_summary(r: PromptResult) -> dict:
    return {
        "group": r.spec.group,
        "prompt": r.spec.prompt,
        "expected": [list(k) for k in r.spec.elements],
        "exact": _rate(r.exact()),
        "loose": _rate(r.loose()),
        "images": [
            {"seed": s, "detected": [list(k) for k in d], "exact": e, "loose": lo}
            for s, d, e, lo in zip(r.seeds, r.detections, r.exact(), r.loose())
        ],
    }


# --------------------------------------------------------------------------- grid


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


FRAME = {"exact": (30, 170, 30), "loose": (240, 150, 0), "wrong": (210, 30, 30)}


def sample_grid(results: list[PromptResult], images: dict[str, list[Image.Image]], columns: int = 8,
                scale: int = 2, label_width: int = 320) -> Image.Image:
    """Rows = prompts (text at left), columns = the first `columns` images, framed by verdict."""
    cell = 64 * scale
    pad = 4  # frame width
    n_cols = max(1, min(columns, max((len(v) for v in images.values()), default=1)))
    header = 28
    width = label_width + n_cols * (cell + 2 * pad)
    height = header + len(results) * (cell + 2 * pad)
    grid = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    font, small = _font(15), _font(12)
    draw.text((8, 6), "frame: green = exact elements, orange = shapes+colours only, red = wrong", fill=(0, 0, 0),
              font=small)
    for row, r in enumerate(results):
        y = header + row * (cell + 2 * pad)
        text = r.spec.prompt.replace(" and ", "\nand ")
        draw.multiline_text((8, y + 8), text, fill=(0, 0, 0), font=font, spacing=4)
        draw.text((8, y + cell - 12), f"{r.spec.group}: exact {_rate(r.exact()):.0%}, loose {_rate(r.loose()):.0%}",
                  fill=(90, 90, 90), font=small)
        for col, (im, exact, loose) in enumerate(zip(images[r.spec.prompt], r.exact(), r.loose())):
            if col >= n_cols:
                break
            x = label_width + col * (cell + 2 * pad)
            colour = FRAME["exact" if exact else "loose" if loose else "wrong"]
            draw.rectangle([x, y, x + cell + 2 * pad - 1, y + cell + 2 * pad - 1], fill=colour)
            grid.paste(im.convert("RGB").resize((cell, cell), Image.NEAREST), (x + pad, y + pad))
    return grid


# --------------------------------------------------------------------------- CLI


def load_shapes_world(path: str | Path, device: str | None = None, dtype: str | None = None):
    """load_model(path), refusing anything but a shapes-world folder with a clear ValueError."""
    from ..models import load_model  # noqa: PLC0415 - start-up: loads torch/numpy only when used

    if not Path(path).is_dir():
        raise ValueError(f"no model folder at {path} (train one with python -m originality.experiments.train)")
    model = load_model(str(Path(path)), device=device, dtype=dtype)
    if model.world is not SHAPES_WORLD:
        raise ValueError(f"{path} is not a shapes-world model (no {SHAPES_WORLD.marker} marker)")
    return model


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m originality.experiments.evaluate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(SHAPES_MODEL_DIR), help="shapes-world pipeline folder (default: %(default)s)")
    ap.add_argument("--per-prompt", type=int, default=8, help="images per prompt (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="base seed; prompt k image i uses seed + 1000k + i (default: 0)")
    ap.add_argument("--out", default="outputs/evaluate", help="folder for results.json and grid.png (default: %(default)s)")
    ap.add_argument("--common-combos", type=int, default=9,
                    help="colourings of the COMMON pair (circle, square) to test: 9 = all, fewer = a subset drawn "
                         "with --seed (default: %(default)s)")
    ap.add_argument("--wrap", nargs="?", const="a photo of {}", default=None, metavar="TEMPLATE",
                    help='wrap every caption in a template; without a value "a photo of {}" (default: bare captions)')
    ap.add_argument("--preset", default="fast", choices=sorted(PRESETS),
                    help="AnalysisConfig preset whose sampler settings are used (default: %(default)s)")
    ap.add_argument("--inference-steps", type=int, default=None,
                    help="denoising steps per image (default: the preset's, "
                         + ", ".join(f"{PRESETS[p].num_inference_steps} for {p}" for p in sorted(PRESETS)) + ")")
    ap.add_argument("--guidance-scale", type=float, default=None,
                    help="classifier-free guidance (default: the shapes world's, models.SHAPES_GUIDANCE)")
    ap.add_argument("--generation-batch-size", type=int, default=None, help="images per denoising batch "
                    "(default: the preset's)")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    ap.add_argument("--dtype", default=None, choices=DTYPE_CHOICES,
                    help="the frozen modules' precision (default: float32 on the CPU, bfloat16 on a GPU)")
    ap.add_argument("--columns", type=int, default=8, help="images per prompt shown in grid.png (default: 8)")
    ap.add_argument("--target", type=float, default=TARGET, help="exact accuracy each group must reach (default: 0.8)")
    ap.add_argument("--strict", action="store_true", help="exit with status 1 when a group misses the target")
    ap.add_argument("--quiet", action="store_true", help="no per-prompt progress lines")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(asctime)s %(message)s")
    from ..analysis import resolve_config  # noqa: PLC0415 - start-up: loads torch/numpy only when used

    # 1. Check inputs
    if args.per_prompt < 1:
        print(f"error: --per-prompt must be a positive integer, got {args.per_prompt}", file=sys.stderr)
        return 2
    try:
        specs = seen_prompts(args.common_combos, args.seed, args.wrap)
        overrides = {k: v for k, v in (("num_inference_steps", args.inference_steps),
                                       ("guidance_scale", args.guidance_scale),
                                       ("generation_batch_size", args.generation_batch_size)) if v is not None}
        config = AnalysisConfig.preset(args.preset, seed=args.seed, **overrides)
        config.validate()
        # 2. Load the model exactly as the analysis does
        model = load_shapes_world(args.model, args.device, args.dtype)
        config = resolve_config(config, model)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    # 3. Generate and detect
    print(f"model {args.model} on {model.device}; {len(specs)} prompts x {args.per_prompt} images; "
          f"{config.num_inference_steps} inference steps, guidance {config.guidance_scale:g}", flush=True)
    started = time.perf_counter()

    def progress(k: int, r: PromptResult, seconds: float) -> None:
        if not args.quiet:
            print(f"  [{k + 1:2d}/{len(specs)}] {r.spec.prompt:<50s} exact {_rate(r.exact()):4.0%}  "
                  f"loose {_rate(r.loose()):4.0%}  ({seconds:.1f}s)", flush=True)

    results, images = evaluate(model, specs, config, args.per_prompt, args.seed, on_prompt=progress)
    seconds = time.perf_counter() - started

    # 4. Report
    groups = group_summary(results, args.target)
    binding = colour_binding(model.pipeline.tokenizer, model.pipeline.text_encoder)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "model": str(args.model),
        "model_info": model.describe(),
        "settings": {"per_prompt": args.per_prompt, "seed": args.seed, "common_combos": args.common_combos,
                     "template": args.wrap, "preset": args.preset,
                     "num_inference_steps": config.num_inference_steps, "guidance_scale": config.guidance_scale,
                     "generation_batch_size": config.generation_batch_size},
        "target": args.target,
        "groups": groups,
        "passed": all(g["passed"] for g in groups.values()),
        "prompts": [prompt_summary(r) for r in results],
        "text_colour_binding": binding,
        "seconds": seconds,
    }
    (out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    sample_grid(results, images, columns=args.columns).save(out / "grid.png")

    print()
    print(f"{'prompt':<52s} {'exact':>6s} {'loose':>6s}")
    for r in results:
        print(f"{r.spec.prompt:<52s} {_rate(r.exact()):6.0%} {_rate(r.loose()):6.0%}")
    print()
    print(f"{'group':<14s} {'prompts':>7s} {'images':>7s} {'exact':>7s} {'loose':>7s}  target")
    for name, g in groups.items():
        verdict = "PASS" if g["passed"] else "FAIL"
        print(f"{name:<14s} {g['prompts']:7d} {g['images']:7d} {g['exact']:7.1%} {g['loose']:7.1%}  "
              f">= {args.target:.0%} exact: {verdict}")
    print(f"\ntext encoder colour binding (R^2 of a shape word's state): own colour {binding['own']:.2f}, "
          f"other shape's colour {binding['other']:.2f}")
    print(f"\n{sum(len(r.detections) for r in results)} images in {seconds:.1f}s; "
          f"wrote {out / 'results.json'} and {out / 'grid.png'}")
    return 1 if args.strict and not payload["passed"] else 0


if __name__ == "__main__":
    sys.exit(main())
