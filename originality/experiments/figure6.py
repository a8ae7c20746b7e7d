"""Reproduce Fig. 6 of Haviv et al. 2024: tokens needed per image, by frequency in training.

    python -m originality.experiments.figure6 --per-group 20 [--preset fast] [--model assets/shapes-model]
                                         [--seed 0] [--out outputs/figure6] [--compare-preset paper]

For each group COMMON (circle + square), RARE (circle + triangle) and UNSEEN
(square + triangle), --per-group new query images are rendered with
`dataset.query(group, seed, i)` (never training items) and analysed with
`originality.analysis.analyze` under the preset (max 5 tokens). The minimum token
count of each image (its score, or "5+" when no length passed) is recorded.

Writes to --out:
- figure6.json, rewritten after every image: the settings, and per image its
  group, caption, label, mean distance per token length and seconds. A rerun of
  the same command skips the images already there (resumable); different settings
  in the same folder are refused (use another --out, or --fresh to start over).
- figure6.png: the paper's histogram, counts per token count 1..5 and "+",
  grouped bars COMMON / RARE / UNSEEN (figure6_<preset>.png for --compare-preset).
- queries/<group>_<i>.png: the query images.

With --compare-preset the other preset analyses the same images too, and the
agreement rate (share of images given the same label by both) goes into the JSON.

Parallel runs: `--shard K/N` analyses every N-th image starting at the K-th and
writes to --out/shards/K-of-N/ (one process per core or GPU, e.g. on 2 cores
`for k in 1 2; do ... --shard $k/2 --threads 1 & done; wait`). A later run
without --shard on the same --out folds every shard with the same settings into
figure6.json, analyses whatever is still missing, and draws the histogram.
--steps, --max-tokens, --reconstructions, --inference-steps, --batch-size,
--learning-rate and --lr-schedule override both presets (smoke runs, preset studies).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import time
from collections import Counter

import numpy as np
from pathlib import Path
from typing import Any

from ..config import PRESETS, AnalysisConfig
from ..labels import label_rank, median_label
from ..shapes import SHAPES_MODEL_DIR, dataset, model_marker
from ..shapes.renderer import COLOURS, Variation, render

logger = logging.getLogger(__name__)

GROUPS = ("common", "rare", "unseen")
# 2: each token length's inversion seed depends on the query (analysis.inversion_seed); version-1
# results came from one seed per length for every image and cannot be mixed with newer ones.
FORMAT_VERSION = 2
JSON_NAME = "figure6.json"
# The AnalysisConfig fields this command can override in every preset it runs (smoke runs).
OVERRIDES = ("max_tokens", "steps", "batch_size", "learning_rate", "lr_schedule", "num_reconstructions",
             "num_inference_steps")
GROUP_COLOURS = {"common": "#4C72B0", "rare": "#DD8452", "unseen": "#C44E52"}


# How a query is drawn: the renderer's exact pixels, a varied drawing of the world's renderer (`renderer.Variation`,
# what the shipped model was fine-tuned on) or another program's drawing (`other_program`: matplotlib; `pil_program`:
# PIL's ImageDraw, pure colours; `box_program`: a numpy rasteriser whose shapes fill their box, written after the
# detector's wide reading was tuned on the first two; each with conventions of its own).
DRAWINGS = ("exact", "varied", "other", "pil", "box")


def query_image(group: str, seed: int, index: int, drawing: str = "exact"):
    """(caption, image) of the figure-6 query `index` of `group`, drawn as `drawing` says (`DRAWINGS`).

    A varied drawing (`renderer.Variation`: another shade, radius, edges, blur or compression) is the world's
    renderer straying as it did in training; its draws depend on the image only. The other program's drawing of
    the same layout (`other_program.draw`) makes choices the model never saw (colours, polygon sizes, edges).
    """
    sample = dataset.query(group, seed, index)
    if drawing == "exact":
        return sample.caption, render(sample.elements)
    if drawing == "varied":
        return sample.caption, Variation().render(sample.elements, random.Random(f"query-{group}-{seed}-{index}"))
    if drawing == "other":
        from .other_program import draw  # noqa: PLC0415 - start-up: matplotlib only for these drawings

        return sample.caption, draw(sample.elements)
    if drawing == "pil":
        from .pil_program import draw as pil_draw  # noqa: PLC0415 - start-up, as above

        return sample.caption, pil_draw(sample.elements)
    if drawing == "box":
        from .box_program import draw as box_draw  # noqa: PLC0415 - start-up, as above

        return sample.caption, box_draw(sample.elements)
    raise ValueError(f"drawing must be one of {', '.join(DRAWINGS)}, got {drawing!r}")


def image_record(group: str, index: int, caption: str, report, seconds: float) -> dict[str, Any]:
    """What figure6.json keeps of one analysed image."""
    return {
        "group": group,
        "index": index,
        "caption": caption,
        "score": report.score,
        "label": report.label,
        "mean_distance": {str(r.num_tokens): r.mean_distance for r in report.results},
        # figure6.json's own field names (format 2 of that file), kept so that earlier results still merge
        "reconstruction_passed": {str(r.num_tokens): r.distance_passed for r in report.results},
        "edit_passed": {str(r.num_tokens): r.check_passed for r in report.results},
        "seconds": seconds,
    }


def histogram_labels(max_tokens: int) -> list[str]:
    return [str(m) for m in range(1, max_tokens + 1)] + [f"{max_tokens}+"]


def counts(images: list[dict], max_tokens: int, groups=GROUPS) -> dict[str, dict[str, int]]:
    """Per group: how many images got each label (1..max_tokens, 'max_tokens+')."""
    out = {}
    for g in groups:
        c = Counter(im["label"] for im in images if im["group"] == g)
        out[g] = {label: c.get(label, 0) for label in histogram_labels(max_tokens)}
    return out


def spearman(x, y) -> float | None:
    """Spearman's rank correlation of two sequences of numbers, ties at their mean rank, in [-1, 1]; None when
    either side has a single value."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return None

    def ranks(v):
        order = v.argsort(kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=float)
        return np.array([r[v == value].mean() for value in v])  # ties share their mean rank

    return float(np.corrcoef(ranks(x), ranks(y))[0, 1])


def rank_correlation(groups: list[str], labels: list[str]) -> float | None:
    """Spearman's rank correlation of label vs group (COMMON < RARE < UNSEEN), ties at their mean rank, in
    [-1, 1]: 1 when every COMMON label is below every RARE one and those below every UNSEEN one. None when
    either side has a single value."""
    return spearman([GROUPS.index(g) for g in groups], [label_rank(label) for label in labels])


def colour_kind(caption: str) -> str:
    """"same colour" when every colour word of the caption is one colour, else "mixed colours": the model
    draws same-colour pairs right far more often, so figure 6 reads differently for the two."""
    return "same colour" if len(set(caption.split()) & set(COLOURS)) <= 1 else "mixed colours"


def colour_split_lines(images: list[dict], groups: list[str]) -> list[str]:
    """Per group, the labels of same-colour and of mixed-colour images in order, with their median."""
    lines = []
    for g in groups:
        parts = []
        for kind in ("same colour", "mixed colours"):
            labels = sorted((im["label"] for im in images if im["group"] == g and colour_kind(im["caption"]) == kind),
                            key=label_rank)
            if labels:
                parts.append(f"{kind} ({len(labels)}): {' '.join(labels)}, median {median_label(labels)}")
        lines.append(f"  {g.upper():<8s} " + "; ".join(parts))
    return lines


def agreement(a: list[dict], b: list[dict]) -> dict[str, Any]:
    """Share of images (by group and index) that both runs labelled the same, overall and per group."""
    la = {(im["group"], im["index"]): im["label"] for im in a}
    lb = {(im["group"], im["index"]): im["label"] for im in b}
    both = sorted(set(la) & set(lb), key=lambda k: (GROUPS.index(k[0]) if k[0] in GROUPS else 99, k[1]))
    same = [k for k in both if la[k] == lb[k]]
    per_group = {}
    for g in dict.fromkeys(k[0] for k in both):
        n = sum(k[0] == g for k in both)
        s = sum(k[0] == g for k in same)
        per_group[g] = {"n": n, "same": s, "rate": s / n}
    return {"n": len(both), "same": len(same), "rate": len(same) / len(both) if both else None,
            "per_group": per_group}


def plot_histogram(images: list[dict], max_tokens: int, path: Path, title: str, groups=GROUPS) -> None:
    """Grouped bars like the paper's Fig. 6: x = token count 1..max_tokens and '+', one bar per group."""
    import matplotlib  # noqa: PLC0415 - start-up: only when used

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - start-up: only when used
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415 - start-up: only when used

    labels = histogram_labels(max_tokens)
    table = counts(images, max_tokens, groups)
    width = 0.8 / len(groups)
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=150)
    for k, g in enumerate(groups):
        xs = [i + (k - (len(groups) - 1) / 2) * width for i in range(len(labels))]
        ys = [table[g][label] for label in labels]
        ax.bar(xs, ys, width=width, label=f"{g.upper()} ({sum(ys)})", color=GROUP_COLOURS.get(g))
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels[:-1] + ["+"])
    ax.set_xlabel("minimum number of tokens")
    ax.set_ylabel("images")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title, fontsize=10)
    ax.legend(frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'K/N' -> (K, N) with 1 <= K <= N; None stays None."""
    if text is None:
        return None
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard {text}: expected K/N, e.g. 1/2") from None
    if not 1 <= k <= n:
        raise ValueError(f"--shard {text}: K must be between 1 and N")
    return k, n


def same_settings(record: dict, settings: dict) -> bool:
    """Whether a result file or shard (`record`) ran with `settings` (the top-level entries that must match); a
    `config` recorded before a setting existed counts that setting at its default (`AnalysisConfig.recorded`), so
    adding a setting does not orphan the results and shards written before it."""
    def normal(key: str, value: Any) -> Any:
        return AnalysisConfig.recorded(value) if key == "config" and isinstance(value, dict) else value
    return all(normal(k, record.get(k)) == normal(k, v) for k, v in settings.items())


def settings_problems(old: dict, seed: int, marker: dict, configs: dict, varied: bool = False) -> list[str]:
    """Why an existing figure6.json cannot be continued (or merged) under these settings."""
    problems = []
    if bool(old.get("varied", False)) != varied:
        problems.append("exact renders vs varied drawings")
    if old.get("format_version") != FORMAT_VERSION:
        problems.append(f"an older version of the analysis (format {old.get('format_version')}, now {FORMAT_VERSION})")
    if old.get("seed") != seed:
        problems.append(f"seed {old.get('seed')} vs {seed}")
    if old.get("model_marker") != marker:
        problems.append("a different model")
    for p, run in old.get("runs", {}).items():
        if p in configs and AnalysisConfig.recorded(run["config"]) != configs[p].to_dict():
            problems.append(f"other settings for preset {p}")
    return problems


def merge_shards(data: dict, out: Path, seed: int, marker: dict, configs: dict, varied: bool = False) -> list[str]:
    """Fold the images of out/shards/*/figure6.json into data; returns one line per shard read or refused."""
    lines = []
    for path in sorted(out.glob(f"shards/*/{JSON_NAME}")):
        shard = json.loads(path.read_text())
        problems = settings_problems(shard, seed, marker, configs, varied)
        if problems:
            lines.append(f"skipped {path} ({', '.join(problems)})")
            continue
        added = 0
        for p, run in shard.get("runs", {}).items():
            if p not in data["runs"]:
                continue
            have = {(im["group"], im["index"]) for im in data["runs"][p]["images"]}
            new = [im for im in run["images"] if (im["group"], im["index"]) not in have]
            data["runs"][p]["images"].extend(new)
            added += len(new)
        data["groups"] = list(dict.fromkeys(data["groups"] + shard.get("groups", [])))
        data["per_group"] = max(data["per_group"], shard.get("per_group", 0))
        lines.append(f"merged {added} image result(s) from {path}")
    order = {g: k for k, g in enumerate(GROUPS)}
    for run in data["runs"].values():
        run["images"].sort(key=lambda im: (im["index"], order.get(im["group"], 99)))
    return lines


def summary_lines(data: dict) -> list[str]:
    lines = []
    for preset, run in data["runs"].items():
        max_tokens = run["config"]["max_tokens"]
        labels = histogram_labels(max_tokens)
        table = counts(run["images"], max_tokens, data["groups"])
        c = run["config"]
        lines.append(f"preset {preset}: {c['steps']} steps x batch {c['batch_size']}, "
                     f"{c['num_reconstructions']} reconstructions, threshold {c['threshold']}")
        lines.append(f"  {'group':<8s} {'n':>3s} " + " ".join(f"{label:>4s}" for label in labels)
                     + f" {'mean score*':>11s} {'s/image':>8s}")
        for g in data["groups"]:
            ims = [im for im in run["images"] if im["group"] == g]
            scores = [im["score"] if im["score"] is not None else max_tokens + 1 for im in ims]
            mean = f"{sum(scores) / len(scores):.2f}" if scores else "-"
            secs = f"{sum(im['seconds'] for im in ims) / len(ims):.1f}" if ims else "-"
            lines.append(f"  {g.upper():<8s} {len(ims):3d} " + " ".join(f"{table[g][label]:4d}" for label in labels)
                         + f" {mean:>11s} {secs:>8s}")
        lines.append(f"  (* '{max_tokens}+' counted as {max_tokens + 1})")
        rho = rank_correlation([im["group"] for im in run["images"]], [im["label"] for im in run["images"]])
        if rho is not None:
            lines.append(f"  Spearman rank correlation of label vs group: {rho:.3f} ({len(run['images'])} images)")
        lines.append("  by colours (labels in order):")
        lines.extend(colour_split_lines(run["images"], data["groups"]))
    if data.get("agreement"):
        a = data["agreement"]
        rate = "-" if a["rate"] is None else f"{a['rate']:.0%}"
        per = ", ".join(f"{g} {v['same']}/{v['n']}" for g, v in a["per_group"].items())
        lines.append(f"agreement {' vs '.join(a['presets'])}: {a['same']}/{a['n']} images = {rate} ({per})")
    return lines


def build_parser() -> argparse.ArgumentParser:
    from ..cli import add_setting_options  # noqa: PLC0415 - start-up: loads torch/numpy only when used

    ap = argparse.ArgumentParser(prog="python -m originality.experiments.figure6", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-group", type=int, default=20, help="query images per group (default: %(default)s, "
                    "as in the paper)")
    ap.add_argument("--preset", default="fast", choices=sorted(PRESETS), help="analysis preset (default: fast)")
    ap.add_argument("--compare-preset", default=None, choices=sorted(PRESETS),
                    help="also analyse every image with this preset and report the agreement (default: none)")
    ap.add_argument("--model", default=str(SHAPES_MODEL_DIR), help="shapes-world pipeline folder (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the query images and of the analysis (default: 0)")
    ap.add_argument("--out", default="outputs/figure6", help="output folder (default: %(default)s)")
    ap.add_argument("--groups", nargs="+", default=list(GROUPS), choices=GROUPS, help="groups to run (default: all)")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    ap.add_argument("--images", nargs="+", default=None, metavar="GROUP:INDEX",
                    help="analyse only these images, e.g. common:4 rare:5 (default: all of --per-group; used to "
                         "run the slow --compare-preset on a subset)")
    ap.add_argument("--shard", default=None, metavar="K/N",
                    help="analyse only every N-th image from the K-th, into --out/shards/K-of-N (parallel runs; "
                         "a later run without --shard merges them)")
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads for torch (default: torch's choice; use 1 per process for parallel shards)")
    ap.add_argument("--fresh", action="store_true", help="discard an existing figure6.json in --out")
    ap.add_argument("--varied", action="store_true",
                    help="draw each query as another program would (renderer.Variation: shade, radius, edges, blur, "
                         "JPEG) instead of the renderer's exact pixels")
    ap.add_argument("--save-reports", action="store_true",
                    help="also save every report folder under --out/reports/<preset>/<group>_<i>")
    add_setting_options(ap.add_argument_group("overrides of both presets (smoke runs)"), OVERRIDES)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    from ..analysis import analyze, check_inputs  # noqa: PLC0415 - start-up: loads torch/numpy only when used
    from ..cli import overrides_from_args  # noqa: PLC0415 - start-up: loads torch/numpy only when used
    from .evaluate import load_shapes_world  # noqa: PLC0415 - start-up: loads torch/numpy only when used

    # 1. Check inputs and settings
    presets = [args.preset] + ([args.compare_preset] if args.compare_preset and args.compare_preset != args.preset
                               else [])
    overrides = {**overrides_from_args(args, OVERRIDES), "seed": args.seed}
    out = Path(args.out)
    try:
        shard = parse_shard(args.shard)
        if args.threads is not None and args.threads < 1:
            raise ValueError(f"--threads must be a positive integer, got {args.threads}")
        if args.per_group < 1:
            raise ValueError(f"--per-group must be a positive integer, got {args.per_group}")
        chosen = set(args.images or [])
        known = {f"{g}:{i}" for i in range(args.per_group) for g in args.groups}
        if chosen - known:
            raise ValueError(f"--images {' '.join(sorted(chosen - known))}: not among the images of --groups "
                             f"and --per-group (GROUP:INDEX, index < {args.per_group})")
        configs = {p: AnalysisConfig.from_dict(overrides, base=PRESETS[p], where="the options") for p in presets}
        model = load_shapes_world(args.model, args.device)
        configs = {p: check_inputs(None, c, model)[1] for p, c in configs.items()}
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.threads:
        import torch  # noqa: PLC0415 - start-up: torch only when used

        torch.set_num_threads(args.threads)
    run_dir = out / "shards" / f"{shard[0]}-of-{shard[1]}" if shard else out
    json_path = run_dir / JSON_NAME

    # 2. Load or start figure6.json; refuse to mix settings
    marker = model_marker(args.model)
    data: dict[str, Any] = {"format_version": FORMAT_VERSION, "model": str(args.model), "model_marker": marker,
                            "seed": args.seed, "groups": list(args.groups), "per_group": args.per_group,
                            "varied": args.varied, "runs": {}, "agreement": None}
    if json_path.is_file() and not args.fresh:
        old = json.loads(json_path.read_text())
        problems = settings_problems(old, args.seed, marker, configs, args.varied)
        if problems:
            print(f"error: {json_path} was written with {', '.join(problems)}; use another --out or --fresh",
                  file=sys.stderr)
            return 2
        data["runs"] = old.get("runs", {})
        data["agreement"] = old.get("agreement")
        data["groups"] = list(dict.fromkeys(old.get("groups", []) + list(args.groups)))
        data["per_group"] = max(old.get("per_group", 0), args.per_group)
    for p, c in configs.items():
        data["runs"].setdefault(p, {"config": c.to_dict(), "images": []})
    if not shard:
        for line in merge_shards(data, out, args.seed, marker, configs, args.varied):
            print(line, flush=True)
    run_dir.mkdir(parents=True, exist_ok=True)

    # 3. Analyse, interleaving groups so that an interrupted run stays balanced
    todo = [(i, g) for i in range(args.per_group) for g in args.groups]
    if args.images is not None:
        todo = [(i, g) for i, g in todo if f"{g}:{i}" in chosen]
    if shard:
        todo = todo[shard[0] - 1 :: shard[1]]
    print(f"model {args.model} on {model.device}; presets {', '.join(presets)}; "
          f"{len(todo)} images ({args.per_group} per group)", flush=True)
    interrupted = False
    try:
        for i, g in todo:
            caption, image = query_image(g, args.seed, i, "varied" if args.varied else "exact")
            qpath = out / "queries" / f"{g}_{i:02d}.png"
            if not qpath.exists():
                qpath.parent.mkdir(parents=True, exist_ok=True)
                image.save(qpath)
            for p in presets:
                run = data["runs"][p]
                if any(im["group"] == g and im["index"] == i for im in run["images"]):
                    continue
                t0 = time.perf_counter()
                report = analyze(image, configs[p], model)
                seconds = time.perf_counter() - t0
                run["images"].append(image_record(g, i, caption, report, seconds))
                if args.save_reports:
                    report.save(out / "reports" / p / f"{g}_{i:02d}")
                if len(presets) > 1:
                    data["agreement"] = {"presets": presets, **agreement(*(data["runs"][q]["images"]
                                                                          for q in presets))}
                _write_json(json_path, data)
                dists = " ".join(f"{v:.2f}" for v in report_distances(run["images"][-1]))
                print(f"  {p:<6s} {g.upper():<7s} #{i:<3d} {caption:<48s} -> {report.label:>3s}  "
                      f"distances [{dists}]  {seconds:.1f}s", flush=True)
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted; figure6.json holds every finished image, rerun to resume", file=sys.stderr)

    # 4. Figures and summary
    pair = presets if len(presets) > 1 else (data.get("agreement") or {}).get("presets")
    if pair and all(q in data["runs"] for q in pair):  # refresh: this run may have added images to one side
        data["agreement"] = {"presets": pair, **agreement(*(data["runs"][q]["images"] for q in pair))}
    _write_json(json_path, data)
    for p in presets:
        run = data["runs"][p]
        name = "figure6.png" if p == args.preset else f"figure6_{p}.png"
        n = Counter(im["group"] for im in run["images"])
        per = ", ".join(f"{n.get(g, 0)} {g}" for g in data["groups"])
        plot_histogram(run["images"], run["config"]["max_tokens"], run_dir / name,
                       f"Minimum tokens to reconstruct ({p} preset; {per})", data["groups"])
    print()
    print("\n".join(summary_lines({**data, "runs": {p: data["runs"][p] for p in presets}})))
    print(f"wrote {json_path} and the histogram(s) in {run_dir}")
    return 130 if interrupted else 0


def report_distances(record: dict) -> list[float]:
    return [record["mean_distance"][k] for k in sorted(record["mean_distance"], key=int)]


if __name__ == "__main__":
    sys.exit(main())
