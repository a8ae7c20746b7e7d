"""Where a shapes-world label's noise comes from, and which world default would steady it.

    PYTHONPATH=. python benchmarks/noise_budget.py [--per-group 3] [--lengths 1 2] [--seeds 0 1]
        [--guidance 3 5 7] [--reconstructions 16] [--query-seed 7] [--threads 1] [--out benchmarks/noise_budget.json]

A length's label is "mean element distance of N reconstructions <= threshold". That mean moves
for two reasons: the reconstructions are N draws (reconstruction noise), and another inversion
seed learns other tokens (inversion noise). This script separates the two and tries the two
world defaults that act on them without retraining: more reconstructions and a higher
classifier-free guidance (reconstructions that follow the tokens more closely).

For each varied drawing (`figure6.query_image(group, --query-seed, i, varied=True)`; seed 7, so
not figure 6's images), each length m and each inversion seed s, the tokens are learned once
under the `fast` preset and --reconstructions images are drawn from them at every --guidance
(latent seeds 1000 s + i, so the guidance values share latents). Every distance goes to --out
(resumable); the summary prints, per guidance:
- the mean distance per group and length (how far apart the groups are),
- the reconstruction standard error of an 8-image mean, and the seed-to-seed spread of a
  length's mean over all images (what inversion adds),
- how often two seeds give the same pass/fail at a length, with the first 8 images and with all.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path


def summarise(data: dict, threshold: float) -> list[str]:
    rows = data["rows"]
    lines = []
    groups = list(dict.fromkeys(r["group"] for r in rows))
    lengths = sorted({r["m"] for r in rows})
    seeds = sorted({r["seed"] for r in rows})
    for g_scale in sorted({float(k) for r in rows for k in r["distances"]}):
        key = f"{g_scale:g}"
        lines.append(f"guidance {key}")
        for m in lengths:
            for group in groups:
                sel = [r for r in rows if r["group"] == group and r["m"] == m and key in r["distances"]]
                if not sel:
                    continue
                means = [statistics.fmean(r["distances"][key]) for r in sel]
                means8 = [statistics.fmean(r["distances"][key][:8]) for r in sel]
                se8 = [statistics.stdev(r["distances"][key]) / 8 ** 0.5 for r in sel if len(r["distances"][key]) > 1]
                lines.append(f"  m={m} {group.upper():<7s} mean {statistics.fmean(means):.3f}  "
                             f"pass (all) {sum(x <= threshold for x in means)}/{len(means)}  "
                             f"pass (8) {sum(x <= threshold for x in means8)}/{len(means8)}  "
                             f"SE of an 8-image mean {statistics.fmean(se8):.3f}")
            # seed pairs: the same image and length under two inversion seeds
            pairs = []
            for r in rows:
                if r["m"] != m or r["seed"] != seeds[0] or key not in r["distances"]:
                    continue
                for other in rows:
                    if (other["m"] == m and other["group"] == r["group"] and other["index"] == r["index"]
                            and other["seed"] != r["seed"] and key in other["distances"]):
                        pairs.append((r["distances"][key], other["distances"][key]))
            if pairs:
                diff = [statistics.fmean(a) - statistics.fmean(b) for a, b in pairs]
                same_all = sum((statistics.fmean(a) <= threshold) == (statistics.fmean(b) <= threshold) for a, b in pairs)
                same8 = sum((statistics.fmean(a[:8]) <= threshold) == (statistics.fmean(b[:8]) <= threshold)
                            for a, b in pairs)
                spread = (statistics.fmean(d * d for d in diff) / 2) ** 0.5
                lines.append(f"  m={m} seed pairs {len(pairs)}: same pass/fail (8 images) {same8}/{len(pairs)}, "
                             f"(all {len(pairs[0][0])}) {same_all}/{len(pairs)}; sd of a mean between seeds "
                             f"{spread:.3f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-group", type=int, default=3)
    ap.add_argument("--groups", nargs="+", default=["common", "rare", "unseen"])
    ap.add_argument("--lengths", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--guidance", nargs="+", type=float, default=[3.0, 5.0, 7.0])
    ap.add_argument("--reconstructions", type=int, default=16)
    ap.add_argument("--query-seed", type=int, default=7)
    ap.add_argument("--model", default="assets/shapes-model")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="benchmarks/noise_budget.json")
    ap.add_argument("--summary-only", action="store_true")
    args = ap.parse_args(argv)

    out = Path(args.out)
    data = json.loads(out.read_text()) if out.is_file() else {"settings": vars(args), "rows": []}
    if args.summary_only:
        print("\n".join(summarise(data, 0.3)))
        return 0

    import torch

    from originality.analysis import generate, inversion_seed, prepare
    from originality.config import AnalysisConfig
    from originality.inversion import TokenSession, encode_query, invert
    from originality.experiments.evaluate import load_shapes_world
    from originality.experiments.figure6 import query_image

    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_shapes_world(args.model, "cpu")
    done = {(r["group"], r["index"], r["m"], r["seed"]) for r in data["rows"]}
    for i in range(args.per_group):
        for group in args.groups:
            caption, image = query_image(group, args.query_seed, i, varied=True)
            for s in args.seeds:
                prepared = prepare(image, AnalysisConfig.preset("fast", seed=s), model)
                config, query = prepared.config, prepared.query
                for m in args.lengths:
                    if (group, i, m, s) in done:
                        continue
                    t0 = time.perf_counter()
                    with TokenSession(model.pipeline) as session:
                        pipe = session.pipeline
                        latent_mean, latent_std = encode_query(pipe, query)
                        placeholder = session.add(f"<s{m}>", m, prepared.init_id)
                        for _ in invert(pipe, latent_mean, latent_std, placeholder, prepared.templates,
                                        steps=config.steps, batch_size=config.batch_size,
                                        learning_rate=config.learning_rate, seed=inversion_seed(s, m, query),
                                        lr_schedule=config.lr_schedule):
                            pass
                        prompt = config.reconstruction_prompt.format(placeholder.token)
                        distances = {}
                        for g_scale in args.guidance:
                            images = generate(pipe, prompt, args.reconstructions, seed=1000 * s,
                                              config=config.replace(guidance_scale=g_scale),
                                              resolution=model.resolution)
                            distances[f"{g_scale:g}"] = [round(float(d), 4) for d in model.distance(query, images)]
                    data["rows"].append({"group": group, "index": i, "caption": caption, "m": m, "seed": s,
                                         "distances": distances})
                    tmp = out.with_name(out.name + ".tmp")
                    tmp.write_text(json.dumps(data, indent=1) + "\n")
                    os.replace(tmp, out)
                    means = " ".join(f"g{k} {statistics.fmean(v):.2f}" for k, v in distances.items())
                    print(f"{group:<7s} #{i} m={m} seed {s}: {means}  ({time.perf_counter() - t0:.0f}s)", flush=True)
    print("\n".join(summarise(data, 0.3)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
