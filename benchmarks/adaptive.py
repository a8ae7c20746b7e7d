"""Adaptive inversion against fixed-step presets on the shapes world: work, time and label agreement.

    python benchmarks/adaptive.py --per-group 10 --presets fast adaptive long --reference long [--varied]
                                  [--out benchmarks/adaptive.json] [--threads 1] [--shard K/N]

For --per-group figure-6 queries of each group (COMMON, RARE, UNSEEN; `--varied`: drawn as another
program would, `renderer.Variation`), each preset analyses each image once. Per analysis it records
the label, the inversion steps each length used and why it stopped, the wall time and the UNet
sample-passes:

    passes = sum over lengths of  steps_used * batch_size                  (inversion: forward + backward)
                                + evaluations * batch_size                   (early stopping's fixed batch)
                                + (reconstructions + edits + images drawn by probes and not kept)
                                  * inference_steps * (2 with guidance, else 1)

The reference (`--reference`, default "long": fast's settings with 2x its steps and no early
stopping; run only when it is also in --presets) stands in for the paper preset, which costs 8-60 min
per image on a 2-core CPU; its labels are what the others are compared with. "PRESET-seed+K" runs
the preset with --seed + K: with K = 1..5 the summary adds how the label moves with the seed and
whether the median label of three seeds is steadier than one. Results go to --out after every analysis
(resumable: a rerun skips what is there; other settings in the same file are refused).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from originality import gpu_costs  # noqa: E402
from originality.gpu_costs import unet_passes  # noqa: E402
from originality.config import PRESETS, AnalysisConfig  # noqa: E402
from originality.labels import label_rank, median_label  # noqa: E402
from originality.experiments.figure6 import rank_correlation  # noqa: E402

GROUPS = ("common", "rare", "unseen")
BASELINE = "fast"  # the fixed-step preset the adaptive one replaces
# Settings measured beside the presets: the reference, and the adaptive preset with one more option each.
REFERENCES = {"long": lambda: AnalysisConfig.preset("fast", steps=300)}
VARIANTS = {"adaptive-probe": lambda: AnalysisConfig.preset("adaptive", probe_every=20),
            "adaptive-warm": lambda: AnalysisConfig.preset("adaptive", token_init="previous"),
            # session 9's adaptive preset: DVAR alone, which stopped most lengths at its earliest (35 steps)
            "adaptive-nofloor": lambda: AnalysisConfig.preset("adaptive", early_stop_min_steps=0),
            "adaptive-nofloor-probe": lambda: AnalysisConfig.preset("adaptive", early_stop_min_steps=0, probe_every=20),
            "adaptive-nofloor-warm": lambda: AnalysisConfig.preset("adaptive", early_stop_min_steps=0,
                                                                   token_init="previous"),
            **REFERENCES}
# "PRESET-seed+K": the preset with --seed + K, how often a label survives a rerun at all (the agreement no
# other setting can be expected to beat), and with several K the label over seeds (`seed_summary`)
SEED_VARIANTS = [f"{p}-seed+{k}" for p in ("fast", "adaptive", "adaptive-nofloor") for k in range(1, 6)]


def seed_offset(name: str) -> int:
    """K of a "PRESET-seed+K" setting, else 0."""
    return int(name.rsplit("-seed+", 1)[1]) if "-seed+" in name else 0


def preset_config(name: str) -> AnalysisConfig:
    name = name.rsplit("-seed+", 1)[0]
    return VARIANTS[name]() if name in VARIANTS else AnalysisConfig.preset(name)


def projected_gpu_seconds(steps: list[int], config: AnalysisConfig) -> float:
    """One analysis's lengths (`steps`: the inversion steps of each) priced at Stable Diffusion 1.4's GPU costs
    (`originality.gpu_costs`: an estimate until `benchmarks/gpu_bench.py --update-costs` has run on a GPU), with
    every length's reconstructions counted (an upper bound where `decide_early` drew fewer). A projection of what
    the settings would cost there if SD converged in as many steps as the shapes world, not a measurement."""
    return sum(gpu_costs.seconds(n, config.batch_size, config.num_reconstructions, config.num_inference_steps)
               for n in steps)


def record(report, seconds: float) -> dict:
    return {"label": report.label, "seconds": round(seconds, 2), "passes": unet_passes(report),

            "steps": [r.steps_used for r in report.results], "stops": [r.stop_reason for r in report.results],
            "distances": [round(r.mean_distance, 4) for r in report.results]}


def summary(data: dict, presets: list[str], reference: str) -> list[str]:
    lines = []
    runs = data["runs"]
    keys = sorted({k.split("|", 1)[1] for k in runs})
    ref = {k: runs.get(f"{reference}|{k}") for k in keys}
    for p in presets + [reference]:
        done = [k for k in keys if f"{p}|{k}" in runs]
        if not done:
            continue
        rows = [runs[f"{p}|{k}"] for k in done]
        passes = sum(r["passes"] for r in rows) / len(rows)
        line = (f"{p:>9}: {len(rows)} images, mean {passes:,.0f} UNet sample-passes, median {median(r['seconds'] for r in rows):.1f} s, "
                f"max {max(r['seconds'] for r in rows):.1f} s")
        steps = [n for r in rows for n in r["steps"][1:]]
        if steps:
            line += f"; mean {sum(steps) / len(steps):.0f} steps per length m >= 2"
        for other in dict.fromkeys([reference, BASELINE, p.rsplit("-", 1)[0]]):  # a variant: also its preset
            both = [k for k in done if f"{other}|{k}" in runs]
            if p == other or not both:
                continue
            theirs = [runs[f"{other}|{k}"] for k in both]
            ours = [runs[f"{p}|{k}"]["label"] for k in both]
            agree = sum(a == t["label"] for a, t in zip(ours, theirs))
            near = sum(abs(label_rank(a) - label_rank(t["label"])) <= 1 for a, t in zip(ours, theirs))
            ratio = sum(t["passes"] for t in theirs) / max(1, sum(runs[f"{p}|{k}"]["passes"] for k in both))
            line += (f"; same label as {other}: {agree}/{len(both)} (within one: {near}); "
                     f"{ratio:.2f}x fewer passes than {other}")
        gpu = [projected_gpu_seconds(r["steps"], preset_config(p)) for r in rows]
        line += f"; SD 1.4 GPU projection (gpu_costs.json): mean {sum(gpu) / len(gpu):.0f} s"
        m1 = [r["seconds"] for r in rows if r["label"] == "1"]
        if m1:
            line += f"; images stopping at m = 1: median {median(m1):.1f} s"
        lines.append(line)
        for g in GROUPS:
            labels = [runs[f"{p}|{k}"]["label"] for k in done if k.startswith(g)]
            if labels:
                lines.append(f"{'':>11}{g}: {' '.join(labels)}")
        rho = rank_correlation([k.split("-")[0] for k in done], [runs[f"{p}|{k}"]["label"] for k in done])
        if rho is not None:
            lines.append(f"{'':>11}Spearman rank correlation of label vs group: {rho:.3f}")
    return lines


def seed_summary(data: dict, preset: str) -> list[str]:
    """How a preset's label moves with the inversion seed, over the images run with seeds +0..+5 of it:
    one seed's label against another's, all three of seeds +0..+2 alike, and the median label of three
    seeds (+0..+2 against +3..+5), with the figure-6 ordering (Spearman) of each."""
    runs = data["runs"]
    names = [preset] + [f"{preset}-seed+{k}" for k in range(1, 6)]
    keys = sorted({k.split("|", 1)[1] for k in runs})
    labels = {k: [runs[f"{n}|{k}"]["label"] if f"{n}|{k}" in runs else None for n in names] for k in keys}
    lines = []
    pairs = [(a[i], a[j]) for a in labels.values() for i in range(6) for j in range(i + 1, 6) if a[i] and a[j]]
    if pairs:
        same = sum(x == y for x, y in pairs)
        near = sum(abs(label_rank(x) - label_rank(y)) <= 1 for x, y in pairs)
        lines.append(f"{preset}: one seed against another: same label in {same}/{len(pairs)} pairs "
                     f"({same / len(pairs):.0%}), within one {near / len(pairs):.0%}")
    three = {k: a[:3] for k, a in labels.items() if all(a[:3])}
    if three:
        alike = sum(len(set(a)) == 1 for a in three.values())
        medians = {k: median_label(a) for k, a in three.items()}
        groups = [k.split("-")[0] for k in three]
        rho1 = rank_correlation(groups, [a[0] for a in three.values()])
        rho3 = rank_correlation(groups, list(medians.values()))
        lines.append(f"{preset}: seeds +0..+2 give one label on {alike}/{len(three)} images; Spearman of label "
                     f"vs group: seed +0 alone {rho1:.3f}, median of three {rho3:.3f}")
        for g in GROUPS:
            ms = [medians[k] for k in three if k.startswith(g)]
            if ms:
                lines.append(f"{'':>11}{g} median of three: {' '.join(ms)} (median {median(label_rank(x) for x in ms):g})")
    six = {k: a for k, a in labels.items() if all(a)}
    if six:
        same = sum(median_label(a[:3]) == median_label(a[3:]) for a in six.values())
        near = sum(abs(label_rank(median_label(a[:3])) - label_rank(median_label(a[3:]))) <= 1 for a in six.values())
        lines.append(f"{preset}: median of seeds +0..+2 against median of +3..+5: same on {same}/{len(six)} "
                     f"images (within one: {near})")
    return lines


def same_colour(group: str, index: int, seed: int) -> bool:
    """Whether a figure-6 query's two elements share a colour (the caption's colour words)."""
    from originality.shapes import renderer  # noqa: PLC0415
    from originality.experiments.figure6 import query_image  # noqa: PLC0415

    words = query_image(group, seed, index)[0].split()
    return len({w for w in words if w in renderer.RGB}) == 1


def figure6_summary(data: dict, preset: str) -> list[str]:
    """Figure 6 from the benchmark's runs: per group the label counts (1..5, 5+), the median and the
    same-colour / mixed-colour split, for seed +0 alone and for the median label of seeds +0..+2."""
    runs = data["runs"]
    seed = data["settings"]["seed"]
    names = [preset] + [f"{preset}-seed+{k}" for k in (1, 2)]
    keys = sorted({k.split("|", 1)[1] for k in runs if k.startswith(f"{preset}|")})
    lines = []
    for title, pick in (("seed +0", lambda k: runs[f"{preset}|{k}"]["label"]),
                        ("median of seeds +0..+2", lambda k: median_label([runs[f"{n}|{k}"]["label"] for n in names])
                         if all(f"{n}|{k}" in runs for n in names) else None)):
        labels = {k: pick(k) for k in keys}
        labels = {k: v for k, v in labels.items() if v}
        if not labels:
            continue
        lines.append(f"{preset}, figure 6 ({title}, {len(labels)} images):")
        for g in GROUPS:
            mine = {k: v for k, v in labels.items() if k.startswith(g)}
            if not mine:
                continue
            counts = Counter(mine.values())
            hist = "/".join(str(counts.get(x, 0)) for x in [*map(str, range(1, 6)), "5+"])
            split = {True: [], False: []}
            for k, v in mine.items():
                split[same_colour(g, int(k.split("-")[1]), seed)].append(v)
            lines.append(f"{'':>4}{g}: {hist} (1/2/3/4/5/5+), median {median(label_rank(v) for v in mine.values()):g}; "
                         f"same colour {' '.join(split[True]) or '-'}; mixed {' '.join(split[False]) or '-'}")
        rho = rank_correlation([k.split("-")[0] for k in labels], list(labels.values()))
        lines.append(f"{'':>4}Spearman rank correlation of label vs group: {rho:.3f}")
    return lines


def print_summary(data: dict, presets: list[str], reference: str) -> None:
    """The summary, then for each preset run with "-seed+K" settings its seed and figure-6 summaries."""
    print("\n".join(summary(data, presets, reference)))
    for p in dict.fromkeys(n.rsplit("-seed+", 1)[0] for n in presets if "-seed+" in n):
        print("\n".join(seed_summary(data, p) + figure6_summary(data, p)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-group", type=int, default=10)
    ap.add_argument("--presets", nargs="+", default=["fast", "adaptive"], choices=sorted(set(PRESETS) | set(VARIANTS) | set(SEED_VARIANTS)))
    ap.add_argument("--reference", default="long", choices=sorted(set(PRESETS) | set(REFERENCES)))
    ap.add_argument("--varied", action="store_true", help="varied drawings instead of the renderer's exact pixels")
    ap.add_argument("--model", default="shapes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "adaptive.json"))
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--shard", default=None, help="K/N: every N-th image from the K-th (parallel processes)")
    ap.add_argument("--summary", action="store_true", help="print the summary of --out and exit")
    ap.add_argument("--by-image", action="store_true", help="all presets of one image before the next image")
    args = ap.parse_args(argv)

    out = Path(args.out)
    # --per-group only chooses images (keys name them), so a file can grow from 10 to 20 per group
    settings = {"varied": args.varied, "model": args.model, "seed": args.seed}
    data = json.loads(out.read_text()) if out.is_file() else {"settings": settings, "runs": {}}
    data["settings"].pop("per_group", None)  # files written before it was dropped from the settings
    if data["settings"] != settings:
        ap.error(f"{out} holds other settings ({data['settings']}); use another --out")
    if args.summary:
        print_summary(data, args.presets, args.reference)
        return 0

    import torch

    from originality import analyze, load_model
    from originality.experiments.figure6 import query_image

    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.model, device="cpu")
    jobs = [(g, i) for i in range(args.per_group) for g in GROUPS]
    if args.shard:
        k, n = (int(x) for x in args.shard.split("/"))
        jobs = jobs[k - 1::n]
    # preset by preset over all images, so a stopped run has whole columns to compare; --by-image: image by
    # image, so that it has whole rows (every preset of some images: what the seed summary needs)
    order = (((p, job) for job in jobs for p in args.presets) if args.by_image else
             ((p, job) for p in args.presets for job in jobs))
    for preset, (group, index) in order:
        _, image = query_image(group, args.seed, index, varied=args.varied)
        key = f"{preset}|{group}-{index:02d}"
        if key in data["runs"]:
            continue
        t0 = time.perf_counter()
        report = analyze(image, preset_config(preset).replace(seed=args.seed + seed_offset(preset)), model)
        data["runs"][key] = record(report, time.perf_counter() - t0)
        print(key, data["runs"][key], flush=True)
        # re-read before writing: shards share the file
        current = json.loads(out.read_text()) if out.is_file() else {"settings": settings, "runs": {}}
        current["runs"].update(data["runs"])
        data = current
        tmp = out.with_suffix(f".{os.getpid()}.tmp")  # one per shard
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        tmp.replace(out)
    print_summary(data, args.presets, args.reference)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
