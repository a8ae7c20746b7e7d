"""Does the score survive a redraw? The same layouts drawn several ways a person calls the same image.

    python -m originality.experiments.robustness --per-group 4 [--preset fast] [--seeds 3]
                                            [--model assets/shapes-model] [--out outputs/robustness]

For each group (COMMON, RARE, UNSEEN) --per-group held-out layouts (`dataset.query`, seed
--layout-seed, never training items) are drawn in every way of `SAME_IMAGE_DRAWINGS`, and each drawing
is analysed under the preset. The exact drawing is also analysed with --seeds analysis seeds.
Printed per group: the share of layouts that got one label in every drawing (redraw
agreement) and in every seed (seed agreement), and the labels themselves.

Writes --out/robustness.json after every analysis; a rerun with the same settings skips what
is there (resumable), other settings are refused (use another --out or --fresh). The exact
drawing under the preset's own seed is the same analysis as seed 0 of --seeds, so it runs once.

Parallel runs: `--shard K/N` analyses every N-th layout starting at the K-th and writes to
--out/shards/K-of-N/ (e.g. on 2 cores `for k in 1 2; do ... --shard $k/2 --threads 1 & done; wait`);
a later run without --shard on the same --out folds every shard with the same settings in,
analyses whatever is still missing and prints the summary.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

from ..config import PRESETS, AnalysisConfig
from ..shapes import SHAPES_MODEL_DIR, dataset, model_marker, renderer
from .figure6 import parse_shard, same_settings

GROUPS = ("common", "rare", "unseen")
FORMAT_VERSION = 1


def _shade(elements, rng: random.Random):
    """Each element's colour shifted by up to 20 levels per channel (inside the world's range)."""
    return renderer.render([replace(e, rgb=tuple(min(255, max(0, c + rng.randint(-20, 20))) for c in renderer.RGB[e.colour]))
                         for e in elements])


# name -> how to draw a layout (elements, rng) -> image. What another drawing program does with
# the world's own sizes: another shade, a slightly larger radius, aliased edges, another
# resolution, lossy compression.
SAME_IMAGE_DRAWINGS: dict[str, Callable] = {
    "exact": lambda els, rng: renderer.render(els),
    "shade": _shade,
    "radius+8%": lambda els, rng: renderer.render([replace(e, scale=1.08) for e in els]),
    "plain-edges": lambda els, rng: renderer.render(els, supersample=False),
    "256px": lambda els, rng: renderer.render(els, size=256),
    "jpeg85": lambda els, rng: renderer.jpeg(renderer.render(els), 85),
}


def layout_agreement(labels: dict[str, str]) -> bool:
    """One label over every drawing (or seed) of a layout."""
    return len(set(labels.values())) == 1


def summary_lines(data: dict) -> list[str]:
    lines = []
    for g in data["groups"]:
        layouts = [lay for lay in data["layouts"] if lay["group"] == g]
        full = [lay for lay in layouts if len(lay["drawings"]) == len(SAME_IMAGE_DRAWINGS)]
        seeded = [lay for lay in layouts if len(lay["seeds"]) == data["seeds"]]
        redraw = sum(layout_agreement(lay["drawings"]) for lay in full)
        seeds = sum(layout_agreement(lay["seeds"]) for lay in seeded)
        lines.append(f"{g.upper():<7s} redraw agreement {redraw}/{len(full)}   seed agreement {seeds}/{len(seeded)}")
        for lay in layouts:
            drawn = " ".join(f"{k}={v}" for k, v in lay["drawings"].items())
            seeded_labels = " ".join(lay["seeds"].values())
            lines.append(f"   #{lay['index']:<3d} {lay['caption']:<44s} {drawn}   seeds: {seeded_labels}")
    full = [lay for lay in data["layouts"] if len(lay["drawings"]) == len(SAME_IMAGE_DRAWINGS)]
    seeded = [lay for lay in data["layouts"] if len(lay["seeds"]) == data["seeds"]]
    if full:
        lines.append(f"all groups: redraw agreement {sum(layout_agreement(x['drawings']) for x in full)}/{len(full)}, "
                     f"seed agreement {sum(layout_agreement(x['seeds']) for x in seeded)}/{len(seeded)}")
    return lines


def merge_shards(data: dict, out: Path, settings: dict) -> list[str]:
    """Fold the layouts of out/shards/*/robustness.json with the same `settings` into data (labels already in
    data win); one line per shard read or refused."""
    lines = []
    for path in sorted(out.glob("shards/*/robustness.json")):
        shard = json.loads(path.read_text())
        if not same_settings(shard, settings):
            lines.append(f"skipped {path} (other settings)")
            continue
        added = 0
        for lay in shard["layouts"]:
            mine = _layout(data, lay["group"], lay["index"], lay["caption"])
            for kind in ("drawings", "seeds"):
                new = {k: v for k, v in lay[kind].items() if k not in mine[kind]}
                mine[kind].update(new)
                added += len(new)
        data["groups"] = list(dict.fromkeys(data["groups"] + shard["groups"]))
        lines.append(f"merged {added} label(s) from {path}")
    return lines


def _layout(data: dict, group: str, index: int, caption: str) -> dict:
    """data's record of one layout, added when missing."""
    lay = next((x for x in data["layouts"] if x["group"] == group and x["index"] == index), None)
    if lay is None:
        lay = {"group": group, "index": index, "caption": caption, "drawings": {}, "seeds": {}}
        data["layouts"].append(lay)
    return lay


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def build_parser() -> argparse.ArgumentParser:

    ap = argparse.ArgumentParser(prog="python -m originality.experiments.robustness", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-group", type=int, default=4, help="layouts per group (default: %(default)s)")
    ap.add_argument("--preset", default="fast", choices=sorted(PRESETS))
    ap.add_argument("--seeds", type=int, default=3, help="analysis seeds of the exact drawing (default: 3)")
    ap.add_argument("--layout-seed", type=int, default=101, help="seed of the held-out layouts (default: 101)")
    ap.add_argument("--model", default=str(SHAPES_MODEL_DIR))
    ap.add_argument("--out", default="outputs/robustness")
    ap.add_argument("--groups", nargs="+", default=list(GROUPS), choices=GROUPS)
    ap.add_argument("--drawings", nargs="+", default=list(SAME_IMAGE_DRAWINGS), choices=list(SAME_IMAGE_DRAWINGS))
    ap.add_argument("--device", default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--shard", default=None, metavar="K/N",
                    help="analyse every N-th layout from the K-th, into --out/shards/K-of-N (parallel runs)")
    ap.add_argument("--steps", type=int, default=None, help="override the preset's inversion steps (smoke runs)")
    ap.add_argument("--reconstructions", type=int, default=None, help="override the preset's reconstructions")
    ap.add_argument("--max-tokens", type=int, default=None, help="override the preset's max tokens")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..analysis import analyze, resolve_config  # noqa: PLC0415 - start-up: loads torch/numpy only when used
    from .evaluate import load_shapes_world  # noqa: PLC0415 - start-up: loads torch/numpy only when used

    if args.threads:
        import torch  # noqa: PLC0415 - start-up: torch only when used

        torch.set_num_threads(args.threads)
    overrides = {k: v for k, v in (("steps", args.steps), ("num_reconstructions", args.reconstructions),
                                   ("max_tokens", args.max_tokens)) if v is not None}
    try:
        shard = parse_shard(args.shard)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    model = load_shapes_world(args.model, args.device)
    base = resolve_config(AnalysisConfig.preset(args.preset, **overrides), model)
    out = Path(args.out)
    run_dir = out / "shards" / f"{shard[0]}-of-{shard[1]}" if shard else out
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "robustness.json"
    settings = {"format_version": FORMAT_VERSION, "preset": args.preset, "config": base.to_dict(),
                "layout_seed": args.layout_seed, "seeds": args.seeds, "model_marker": model_marker(args.model)}
    data = {**settings, "model": str(args.model), "groups": list(args.groups), "layouts": []}
    if path.is_file() and not args.fresh:
        old = json.loads(path.read_text())
        if not same_settings(old, settings):
            print(f"error: {path} holds other settings; use another --out or --fresh", file=sys.stderr)
            return 2
        data = old
        data["groups"] = list(dict.fromkeys(old["groups"] + list(args.groups)))
    if not shard:
        for line in merge_shards(data, out, settings):
            print(line, flush=True)
        _write_json(path, data)
    todo = [(i, g) for i in range(args.per_group) for g in args.groups]
    if shard:
        todo = todo[shard[0] - 1 :: shard[1]]
    for i, g in todo:
        sample = dataset.query(g, args.layout_seed, i)
        lay = _layout(data, g, i, sample.caption)
        jobs = ([("drawings", name, base.seed) for name in args.drawings]
                + [("seeds", str(s), s) for s in range(args.seeds)])
        for kind, name, seed in jobs:
            if name in lay[kind]:
                continue
            if kind == "seeds" and seed == base.seed and "exact" in lay["drawings"]:
                lay[kind][name] = lay["drawings"]["exact"]  # the same analysis: same image, settings, seed
                continue
            how = name if kind == "drawings" else "exact"
            image = SAME_IMAGE_DRAWINGS[how](sample.elements, random.Random(f"{g}-{i}-{how}"))
            t0 = time.perf_counter()
            report = analyze(image, replace(base, seed=seed), model)
            lay[kind][name] = report.label
            _write_json(path, data)
            print(f"  {g.upper():<7s} #{i:<3d} {kind[:-1]:<7s} {name:<12s} -> {report.label:>3s} "
                  f"({time.perf_counter() - t0:.0f}s)", flush=True)
    print()
    print("\n".join(summary_lines(data)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
