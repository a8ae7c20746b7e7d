"""Calibrate the shapes world's distance threshold from what the model draws for its own words.

    python -m originality.experiments.shapes_threshold [--model assets/shapes-model] [--per-group 12]
                                           [--images 8] [--quantile 0.8] [--out outputs/calibrate]

The threshold answers "how close must the reconstructions be for the learned tokens to count as
a description of the query?". The best description the model has of a query is its true caption,
so this script renders figure-6 style query images (`dataset.query`, the same generator as
figure6.py but from its own seed so it never reuses figure-6 queries), generates --images
images from "a photo of <true caption>" (the analysis' reconstruction prompt, the analysis'
sampler settings) and measures their mean element distance to the query, per query.

The suggested threshold is the --quantile (default 0.8) of those per-query means over the
COMMON group: learned tokens pass when they reconstruct the query as well as the true caption
does for 80% of familiar images (the rule behind models.SHAPES_THRESHOLD). The mean is printed
beside it; a threshold at the mean would reject the true caption's own reconstructions for
about half of the COMMON images, so a length's pass would be a coin toss at caption quality.
RARE and UNSEEN are measured too, as a check on the model: if their true captions reconstruct
as well as COMMON ones, the model has no notion of rarity for a threshold to separate.

Writes --out/calibration.json (settings, per-query means, per-group summary, suggestion).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any


from ..calibrate import quantile, quantile_key  # noqa: F401 - the rule shared with every world
from ..config import PRESETS, AnalysisConfig
from ..shapes import SHAPES_MODEL_DIR
from ..shapes import WORLD as SHAPES
from .figure6 import GROUPS, query_image

# Query images of the calibration never coincide with figure-6 queries (which use --seed 0).
CALIBRATION_SEED = 104_729


def true_caption_distances(model, config: AnalysisConfig, group: str, per_group: int, images: int,
                           seed: int = CALIBRATION_SEED) -> list[dict[str, Any]]:
    """Per query of `group`: its caption and the element distances of `images` true-caption generations."""
    from ..analysis import generate  # noqa: PLC0415 - start-up: loads torch/numpy only when used

    rows = []
    for i in range(per_group):
        text, image = query_image(group, seed, i)
        generated = generate(model.pipeline, config.reconstruction_prompt.format(text), images,
                             seed=config.seed + 100 * i, config=config, resolution=model.resolution)
        distances = [float(d) for d in model.distance(image, generated)]
        rows.append({"group": group, "index": i, "caption": text, "distances": distances,
                     "mean": statistics.fmean(distances)})
    return rows


# The element distance of an image that misses one element of a two-element query (1 - F1 = 1 - 2/3): the
# smallest error a reconstruction of a pair can make.
ONE_MISS = 1.0 / 3.0


def summarise(rows: list[dict[str, Any]], q: float) -> dict[str, dict[str, float]]:
    out = {}
    for group in dict.fromkeys(r["group"] for r in rows):
        means = [r["mean"] for r in rows if r["group"] == group]
        out[group] = {"queries": len(means), "mean": statistics.fmean(means), "median": quantile(means, 0.5),
                      quantile_key(q): quantile(means, q)}
    return out


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m originality.experiments.shapes_threshold", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(SHAPES_MODEL_DIR), help="shapes-world pipeline folder (default: %(default)s)")
    ap.add_argument("--per-group", type=int, default=12, help="query images per group (default: %(default)s)")
    ap.add_argument("--images", type=int, default=8, help="true-caption generations per query (default: %(default)s)")
    ap.add_argument("--quantile", type=float, default=0.8,
                    help="quantile of the COMMON per-query means suggested as the threshold "
                         "(default: %(default)s)")
    ap.add_argument("--preset", default="fast", choices=sorted(PRESETS),
                    help="preset whose sampler settings generate (default: %(default)s)")
    ap.add_argument("--groups", nargs="+", default=list(GROUPS), choices=GROUPS, help="groups to measure")
    ap.add_argument("--out", default="outputs/calibrate", help="output folder (default: %(default)s)")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    from ..analysis import resolve_config  # noqa: PLC0415 - start-up: loads torch/numpy only when used
    from .evaluate import load_shapes_world  # noqa: PLC0415 - start-up: loads torch/numpy only when used

    try:
        if args.per_group < 1 or args.images < 1:
            raise ValueError("--per-group and --images must be positive integers")
        if not 0.0 < args.quantile <= 1.0:
            raise ValueError(f"--quantile must be in (0, 1], got {args.quantile}")
        if "common" not in args.groups:
            raise ValueError("--groups must include common: the threshold is calibrated on it")
        model = load_shapes_world(args.model, args.device)
        config = resolve_config(AnalysisConfig.preset(args.preset, num_reconstructions=args.images), model)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for group in args.groups:
        rows += true_caption_distances(model, config, group, args.per_group, args.images)
        print(f"  {group.upper():<7s} done ({time.perf_counter() - started:.0f}s)", flush=True)
    summary = summarise(rows, args.quantile)
    suggested = summary["common"][quantile_key(args.quantile)]
    payload = {"model": str(args.model), "model_marker": json.loads((Path(args.model) / SHAPES.marker).read_text()),
               "settings": {"per_group": args.per_group, "images": args.images, "quantile": args.quantile,
                            "preset": args.preset, "seed": CALIBRATION_SEED,
                            "num_inference_steps": config.num_inference_steps,
                            "guidance_scale": config.guidance_scale,
                            "prompt": config.reconstruction_prompt},
               "groups": summary, "suggested_threshold": suggested, "queries": rows,
               "seconds": time.perf_counter() - started}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "calibration.json").write_text(json.dumps(payload, indent=2) + "\n")

    q = quantile_key(args.quantile)
    print(f"\nmean element distance of true-caption generations per query ({args.images} images each)")
    print(f"{'group':<8s} {'queries':>7s} {'mean':>6s} {'median':>6s} {q:>6s}")
    for group, s in summary.items():
        print(f"{group:<8s} {s['queries']:7d} {s['mean']:6.3f} {s['median']:6.3f} {s[q]:6.3f}")
    print(f"\nsuggested threshold: {suggested:.3f} (lets {args.quantile:.0%} of COMMON queries' true captions "
          f"pass; their mean is {summary['common']['mean']:.3f})")
    if suggested < ONE_MISS / args.images:
        print(f"note: the true captions reconstruct COMMON queries almost perfectly ({suggested:.3f} is below one "
              f"missed element in one of {args.images} images, {ONE_MISS / args.images:.3f}), a quality no learned "
              "token reaches: this rule no longer bounds the threshold. Use the m = 1 inversion distances of "
              "familiar images instead: `python -m originality calibrate <folder of COMMON drawings> --model "
              f"{args.model}`")
    print(f"wrote {out / 'calibration.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
