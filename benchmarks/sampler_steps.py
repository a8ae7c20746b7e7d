#!/usr/bin/env python
"""Do the judged distances move with the reconstruction sampler's step count? (issue #28, point 3)

    python benchmarks/sampler_steps.py [--per-group 4] [--lengths 3] [--steps 5 8 10 14 20] [--split dev]
                                       [--shard K/N] [--threads 1] [--out benchmarks/sampler_steps]
    python benchmarks/sampler_steps.py --summary benchmarks/sampler_steps/*.json

Shapes world, shipped model, the reliability benchmark's varied drawings (`--split dev`: where settings are
chosen). Per drawing and token length m = 1..--lengths: one inversion with the `fast` preset (the analysis'
seeds), then the length's reconstructions drawn from those very tokens with the same prompt and latent seeds at
each --steps count of the multistep DPM solver, each scored with the world's distance. What changes between the
columns is the sampler's step count alone.

The summary, per step count against the largest: mean |difference| of a length's mean distance, the share of
lengths whose pass/fail at the world's threshold is the same, the share of images whose own distance is
unchanged, and the generation's seconds per image (one process, --threads threads). Resumable and sharded like
the reliability benchmark: each (drawing, m) is written as it finishes; shards write their own files.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from statistics import mean

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def measure(args) -> int:
    import torch

    from originality import AnalysisConfig
    from originality.analysis import generate, iter_length, prepare
    from originality.experiments.evaluate import load_shapes_world
    from originality.experiments.figure6 import parse_shard, query_image
    from originality.experiments.reliability import SPLITS
    from originality.inversion import TokenSession
    from originality.record import image_seed
    from originality.shapes import SHAPES_MODEL_DIR

    torch.set_num_threads(args.threads)
    model = load_shapes_world(SHAPES_MODEL_DIR)
    config = AnalysisConfig.preset("fast", max_tokens=args.lengths)
    shard = parse_shard(args.shard) if args.shard else None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / (f"{args.split}-{shard[0]}-of-{shard[1]}.json" if shard else f"{args.split}.json")
    data = json.loads(path.read_text()) if path.is_file() else {
        "split": args.split, "steps": args.steps, "threads": args.threads, "preset": "fast", "cases": []}
    if data["steps"] != args.steps:
        raise SystemExit(f"{path} holds other --steps; give another --out")
    done = {(c["group"], c["index"], c["m"]) for c in data["cases"]}
    todo = [(g, i) for i in range(args.per_group) for g in ("common", "rare", "unseen")]
    if shard:
        todo = todo[shard[0] - 1::shard[1]]
    for group, index in todo:
        caption, image = query_image(group, SPLITS[args.split], index, varied=True)
        prepared = None
        for m in range(1, args.lengths + 1):
            if (group, index, m) in done:
                continue
            prepared = prepared or prepare(image, config, model)
            t0 = time.perf_counter()
            run = iter_length(prepared, model, m)
            while True:  # the length as the analysis runs it; its result holds the kept tokens
                try:
                    next(run)
                except StopIteration as stop:
                    result = stop.value
                    break
            case = {"group": group, "index": index, "caption": caption, "m": m,
                    "threshold": prepared.config.threshold, "inversion_s": round(time.perf_counter() - t0, 1),
                    "distances": {}, "seconds_per_image": {}}
            with model.lock, TokenSession(model.pipeline) as session:
                placeholder = session.add(f"<s{m}>", m, prepared.init_id)
                session.set_embeddings(placeholder, result.embeddings)
                prompt = prepared.config.reconstruction_prompt.format(placeholder.token)
                for steps in args.steps:
                    t1 = time.perf_counter()
                    images = generate(session.pipeline, prompt, prepared.config.num_reconstructions,
                                      seed=image_seed(prepared.config.seed),
                                      config=prepared.config.replace(num_inference_steps=steps),
                                      resolution=model.resolution)
                    seconds = time.perf_counter() - t1
                    case["distances"][str(steps)] = [round(float(d), 4) for d in model.distance(prepared.query,
                                                                                                images)]
                    case["seconds_per_image"][str(steps)] = round(seconds / len(images), 3)
            data["cases"].append(case)
            path.write_text(json.dumps(data, indent=1) + "\n")
            means = {s: round(mean(d), 3) for s, d in case["distances"].items()}
            print(f"{group:<7s} #{index} m={m} {means}", flush=True)
    return 0


def summarize(paths: list[str]) -> list[str]:
    from originality.labels import distance_passes

    cases = [c for p in paths for c in json.loads(Path(p).read_text())["cases"]]
    if not cases:
        return ["no cases"]
    steps = sorted({int(s) for c in cases for s in c["distances"]})
    ref = str(steps[-1])
    lines = [f"{len(cases)} lengths ({len({(c['group'], c['index']) for c in cases})} drawings), "
             f"against {ref} sampler steps:",
             f"{'steps':>5s}  {'mean |d mean|':>13s}  {'same pass/fail':>14s}  {'same image distance':>19s}  "
             f"{'s per image':>11s}"]
    for s in map(str, steps):
        diffs = [abs(mean(c["distances"][s]) - mean(c["distances"][ref])) for c in cases]
        same = [distance_passes(mean(c["distances"][s]), c["threshold"])
                == distance_passes(mean(c["distances"][ref]), c["threshold"]) for c in cases]
        images = [a == b for c in cases for a, b in zip(c["distances"][s], c["distances"][ref])]
        rate = mean(c["seconds_per_image"][s] for c in cases)
        lines.append(f"{s:>5s}  {mean(diffs):13.3f}  {sum(same):>7d}/{len(same):<6d}  "
                     f"{sum(images):>9d}/{len(images):<9d}  {rate:11.3f}")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-group", type=int, default=4)
    ap.add_argument("--lengths", type=int, default=3, help="token lengths 1..N (default: %(default)s)")
    ap.add_argument("--steps", type=int, nargs="+", default=[5, 8, 10, 14, 20])
    ap.add_argument("--split", choices=("dev", "test"), default="dev")
    ap.add_argument("--shard", default=None, help="K/N: every N-th drawing from the K-th")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "sampler_steps"))
    ap.add_argument("--summary", nargs="+", default=None, help="print the summary of these result files")
    args = ap.parse_args(argv)
    if args.summary:
        print("\n".join(summarize(args.summary)))
        return 0
    args.steps = sorted(set(args.steps))
    return measure(args)


if __name__ == "__main__":
    sys.exit(main())
