"""How repeatable is the score? Test-retest of the shapes world on varied drawings, or of any world on your images.

    python -m originality.experiments.reliability [--preset steady] [--set key=value ...] [--split test]
                                             [--per-group 10] [--runs 2] [--out outputs/reliability]
                                             [--shard K/N] [--threads 1] [--drawing other]
    python -m originality.experiments.reliability --images FOLDER [--model MODEL] [--preset steady] [--runs 2]
    python -m originality.experiments.reliability --summary FILE.json [FILE.json ...] [--undecided-as pass]
                                             [--pool] [--against REFERENCE.json [...]] [--publish]

Each of --per-group varied drawings per group (COMMON, RARE, UNSEEN; `figure6.query_image`: the world's renderer
straying in shade, radius, edges, blur and compression as in training; `--drawing other`: the same layouts drawn
by another program, `other_program` (matplotlib), `--drawing pil`, `pil_program` (PIL), or `--drawing box`,
`box_program` (numpy, shapes filling their box), with conventions the model never saw) is analysed --runs times, fully
independently: run r uses the analysis seed
`seed + r * RUN_SEED_STRIDE`, so it draws its own inversion noise and its own reconstruction latents (what
two runs of the CLI with different `--seed` do). Printed per group and overall (terms:
`../shared/RELIABILITY.md`):

- **same label**: share of images whose runs all gave one label; **within one**: every pair of runs at
  most one length apart ("5+" counts as max_tokens + 1);
- **ICC(2,1)** of the label as a number and of the continuous score (`uncertainty.expected_length`);
- **Spearman** of the label and of the continuous score against the group (COMMON < RARE < UNSEEN),
  over every run;
- medians of the label per group, and the mean **UNet sample-passes** per analysis (`gpu_costs.unet_passes`);
- per token length, how far its mean distance moves between the two runs and the share of that which the
  reconstructions' sampling explains (`length_noise`): the rest is the inversion's, which more reconstructions
  cannot remove.

Splits: `dev` (layout seed 211) is where settings are chosen; `test` (layout seed 307) is what the
figures report; neither holds training items (`dataset.query`).

`--images FOLDER` measures the same on your own images instead: those in FOLDER/common/, FOLDER/rare/ and
FOLDER/unseen/ (any of them; the group orders them from familiar to original for the Spearman figures), each
analysed --runs times as the CLI analyses a file, in the world of `--model` (the bundled shapes model by default; a
Stable Diffusion folder or Hub id on a GPU). Every image is checked first as an upload is (readable, and one the
world can judge), and the run refuses to start while any fails, naming each. The result is of the split "files"
(`<name>-files.json`, never published) and records every file's sha256, so a resumed run or a merged shard holds
the same images.

`--undecided-as pass` with `--summary` judges the recorded runs again under that rule (`rejudged`; exact, since
the draws do not depend on it).
`--against REFERENCE.json` with `--summary` compares each result with the reference on the drawings both completed:
both figures, their difference and its 95% paired bootstrap interval over the drawings (`compare`), since with 30
drawings a share moves 3.3 points per drawing and two settings are often not told apart.
`--pool` summarises the files as replicates of one setting (the same measured settings with other seeds):
each drawing counts once per replicate, and `--against` with as many reference files compares replicate with
replicate, resampling drawings (`pooled`).
`--publish` writes a test-split result's overall figures into `originality/repeatability.json`, which is
what every report with those settings says of how repeatable its label is (`repeatability`).

Everything needed to recompute any summary is kept per analysis (each length's distances and checks),
in --out/<name>-<split>.json, rewritten after every analysis (resumable: a rerun skips what is there;
other settings in the same file are refused). `--shard K/N` analyses every N-th image from the K-th into
--out/shards/K-of-N/; a later run without --shard merges the shards with the same settings.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from statistics import median
from types import SimpleNamespace
from typing import Any

import numpy as np

from ..labels import first_pass, label_for, label_rank, length_passes, lower_score, score_of
from .figure6 import DRAWINGS, parse_shard, query_image, same_settings, spearman
from ..config import DEFAULT_PRESET, DTYPE_CHOICES, PRESETS, AnalysisConfig
from ..gpu_costs import image_passes, unet_passes
from ..images import is_hidden, list_images
from ..provenance import input_sha256
from ..record import SECOND_OPINION_REPEAT, repeat_seed
from ..repeatability import TABLE_FILE, matches, publish
from ..shapes import SHAPES_MODEL_DIR, WORLD_SHAPES, model_marker
from ..uncertainty import (CLEAR_CALL, UNDECIDED_AS, PassRule, expected_length, is_clear_call,
                           label_probability)
from ..worlds import world_of_model

GROUPS = ("common", "rare", "unseen")
SPLITS = {"dev": 211, "test": 307}
# run r's analysis seed is seed + r * 1000, so that pairs of runs with seed 0, 1, 2, ... (`--set seed=K`) never share
# a run; a run's repeats (second opinion, `seeds`) have seeds of their own (`record.repeat_seed`)
RUN_SEED_STRIDE = 1000
FILES_SPLIT = "files"  # the split of a result of a folder's images (`--images`): neither where settings are chosen
# nor what the benchmark's figures report, so never published
FORMAT_VERSION = 1
MOVED_SHOWN = 12  # a folder's images whose runs gave other labels, named in its summary


def analysis_record(report, seconds: float) -> dict[str, Any]:
    """What the benchmark keeps of one analysis: enough to recompute every summary (and any continuous score)."""
    return {
        "label": report.label,
        "score": report.score,
        "seed": report.config["seed"],
        "continuous": report.expected_length,
        "seconds": round(seconds, 2),
        "passes": unet_passes(report),
        # where it ran: float32 on a GPU gives the CPU's figures, its half precisions need not
        "device": report.model.get("device"),
        "dtype": report.model.get("dtype"),
        "labels_over_seeds": list(report.label_distribution.labels) if report.label_distribution else None,
        # a close call's second opinion (the `second_opinion` setting): its seed and score; `lengths` stay the first
        # run's
        "second_opinion": report.second_opinion.to_dict() if report.second_opinion else None,
        "lengths": [{"m": r.num_tokens, "distances": [round(d, 5) for d in r.distances],
                     "distance_passed": r.distance_passed, "check_passed": r.check_passed,
                     "steps_used": r.steps_used, "kept_restart": r.kept_restart,
                     "selection_distances": [t["selection_distances"] for t in r.restarts]} for r in report.results],
    }


# ---------------------------------------------------------------------------- statistics

def icc_2_1(table: np.ndarray) -> float | None:
    """ICC(2,1) (two-way random, absolute agreement, single measurement; Shrout & Fleiss 1979) of an
    (items, runs) table; None when it is undefined (fewer than 2 items or runs, or no variance at all)."""
    n, k = table.shape
    if n < 2 or k < 2:
        return None
    grand = table.mean()
    ms_r = k * ((table.mean(axis=1) - grand) ** 2).sum() / (n - 1)
    ms_c = n * ((table.mean(axis=0) - grand) ** 2).sum() / (k - 1)
    resid = table - table.mean(axis=1, keepdims=True) - table.mean(axis=0, keepdims=True) + grand
    ms_e = (resid ** 2).sum() / ((n - 1) * (k - 1))
    denom = ms_r + (k - 1) * ms_e + k * (ms_c - ms_e) / n
    return None if denom <= 0 else float((ms_r - ms_e) / denom)


def fleiss_kappa(labels: list[list]) -> float | None:
    """Fleiss' kappa of items each labelled by k >= 2 runs (`labels`: one list of k labels an item): agreement
    corrected for what labels drawn at random from their pooled frequencies would reach, 1 = every item the same in
    every run, 0 = no better than chance. With k = 2 it is Scott's pi, which suits test-retest: two runs of one
    setting are interchangeable, so the chance level pools their labels. None when undefined (no items, fewer
    than 2 runs, or a single label in all)."""
    if not labels or len(labels[0]) < 2:
        return None
    k = len(labels[0])
    counts: dict[Any, int] = {}
    observed = 0.0
    for item in labels:
        seen = {label: item.count(label) for label in set(item)}
        observed += sum(c * (c - 1) for c in seen.values()) / (k * (k - 1))
        for label, c in seen.items():
            counts[label] = counts.get(label, 0) + c
    observed /= len(labels)
    total = len(labels) * k
    chance = sum((c / total) ** 2 for c in counts.values())
    return None if chance >= 1 else float((observed - chance) / (1 - chance))


def complete_images(data: dict, group: str | None = None) -> list[dict]:
    """The images (of `group`, or all) every run of which is done: the ones the figures count."""
    return [img for img in data["images"] if (group is None or img["group"] == group)
            and all(str(r) in img["runs"] for r in range(data["runs"]))]


def summarize(data: dict) -> dict[str, Any]:
    """The benchmark's figures, per group and overall, over the images every run of which is done."""
    out: dict[str, Any] = {}
    for scope in (*data["groups"], "all"):
        images = complete_images(data, None if scope == "all" else scope)
        if images:
            out[scope] = {**figures_of(images, data["runs"]), **call_figures(images, data["runs"], data["config"])}
    return out


def recorded_results(lengths: list[dict]) -> list[SimpleNamespace]:
    """A run's recorded lengths as the engine's judges read `report.TokenResult`s (`num_tokens`, `distances`,
    `check_passed`, `passed`; `check_scores` [1.0], so a failed check fails its length): what
    `uncertainty.expected_length`, `uncertainty.label_probability`, `labels.first_pass` and
    `analysis.needs_second_opinion` take."""
    return [SimpleNamespace(num_tokens=x["m"], distances=x["distances"], check_passed=x.get("check_passed", True),
                            check_scores=[1.0],
                            passed=length_passes(x.get("distance_passed"), x.get("check_passed", True)))
            for x in lengths]


def run_label_probability(run: dict, config: dict) -> float | None:
    """A recorded run's probability of its own label (`uncertainty.label_probability`), from its lengths' distances
    and checks, under the pass rule of the settings it ran with (`config`); None for a record without its lengths
    or threshold."""
    if "lengths" not in run or config.get("threshold") is None:
        return None
    rule = PassRule.recorded(config, config["threshold"])
    scored = recorded_results(run["lengths"])
    # with a second opinion the label may be the second run's: the call is the first run's, on its own label
    score = first_pass(scored) if run.get("second_opinion") else score_of(run["label"])
    return label_probability(scored, rule, config["max_tokens"], score)


def call_figures(images: list[dict], runs: int, config: dict) -> dict[str, Any]:
    """How often a rerun gave the same label after a clear and after a close call (`uncertainty.is_clear_call`
    of the run's `run_label_probability`): `clear_share`, the share of runs that were clear calls, and
    `same_label_clear` / `same_label_close`, the mean share of a run's other runs with its label, over the clear
    and the close calls (None where there are none, or a single run)."""
    clear: list[float] = []
    close: list[float] = []
    for img in images if runs > 1 else []:
        labels = [img["runs"][str(r)]["label"] for r in range(runs)]
        for r in range(runs):
            probability = run_label_probability(img["runs"][str(r)], config)
            if probability is None:
                continue
            agree = sum(labels[s] == labels[r] for s in range(runs) if s != r) / (runs - 1)
            (clear if is_clear_call(probability) else close).append(agree)
    total = len(clear) + len(close)
    return {"clear_share": len(clear) / total if total else None,
            "same_label_clear": float(np.mean(clear)) if clear else None,
            "same_label_close": float(np.mean(close)) if close else None}


def figures_of(images: list[dict], runs: int) -> dict[str, Any]:
    """The figures of `summarize` over `images` (each with `runs` complete runs; at least one image)."""
    labels = [[label_rank(img["runs"][str(r)]["label"]) for r in range(runs)] for img in images]
    cont = [[img["runs"][str(r)]["continuous"] for r in range(runs)] for img in images]
    groups = [GROUPS.index(img["group"]) for img in images for _ in range(runs)]
    icc_label, icc_cont = icc_2_1(np.array(labels, float)), icc_2_1(np.array(cont, float))
    cont_sd = float(np.std(np.array(cont, float), ddof=1)) if len(images) > 1 else None
    return {
        "images": len(images),
        "same_label": sum(len(set(ls)) == 1 for ls in labels) / len(images),
        "within_one": sum(max(ls) - min(ls) <= 1 for ls in labels) / len(images),
        "kappa": fleiss_kappa(labels),
        "icc_label": icc_label,
        "icc_continuous": icc_cont,
        # standard error of measurement of the continuous score: a rerun lands within about 2 SEM
        "sem_continuous": (cont_sd * math.sqrt(max(0.0, 1 - icc_cont))
                           if cont_sd is not None and icc_cont is not None else None),
        "spearman_label": spearman(groups, [v for ls in labels for v in ls]),
        "spearman_continuous": spearman(groups, [v for cs in cont for v in cs]),
        "median_label": median(v for ls in labels for v in ls),
        "mean_continuous": float(np.mean(cont)),
        "mean_passes": float(np.mean([img["runs"][str(r)]["passes"] for img in images for r in range(runs)])),
        "mean_seconds": float(np.mean([img["runs"][str(r)]["seconds"] for img in images for r in range(runs)])),
    }


def length_noise(data: dict) -> dict[int, dict[str, float]]:
    """How far one length's mean distance moves between two runs, and how much of that reconstruction sampling
    explains: per token length m, over the images whose runs 0 and 1 both ran m: `pairs`, `sd` (the between-run
    sd of one run's mean, sqrt(E[(mean0 - mean1)^2] / 2)) and `sampling` (the share of E[(mean0 - mean1)^2] that
    the reconstructions' own sampling, s0^2/n0 + s1^2/n1, accounts for, at most 1). The rest comes from the
    inversion (and, with a warm start, from the lengths before): more reconstructions cannot remove it.
    Lengths a run reaches depend on its earlier ones, so the pairs at m > 1 are the images both runs got that far."""
    by_m: dict[int, list[tuple[float, float]]] = {}
    for img in data["images"]:
        runs = img["runs"]
        if "0" not in runs or "1" not in runs:
            continue
        for length in runs["0"].get("lengths", []):
            other = next((x for x in runs["1"].get("lengths", []) if x["m"] == length["m"]), None)
            a, b = np.asarray(length["distances"], float), np.asarray(other["distances"] if other else [], float)
            if len(a) < 2 or len(b) < 2:
                continue
            sampling = a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)
            by_m.setdefault(length["m"], []).append(((a.mean() - b.mean()) ** 2, sampling))
    out = {}
    for m, pairs in sorted(by_m.items()):
        squared, sampling = np.mean([p[0] for p in pairs]), np.mean([p[1] for p in pairs])
        out[m] = {"pairs": len(pairs), "sd": float(math.sqrt(squared / 2)),
                  "sampling": float(min(1.0, sampling / squared)) if squared > 0 else 1.0}
    return out


def coin_tosses(data: dict) -> dict[str, float]:
    """How much of a result the threshold decided by chance, over the images every run of which is done:
    `lengths`, the share of recorded lengths whose 95% interval of the mean still held the line they are decided at
    (the threshold, or the doubt's fixed line: `uncertainty.PassRule.line`) at their last
    reconstruction (`PassRule.undecided`, the sequential rule's test: their pass or fail is the side the mean
    fell on), and `runs`, the share of runs with at least one such length (their label could have gone either way
    at that length). `count`: how many lengths."""
    threshold = data["config"].get("threshold")  # resolved in every result file; absent only in hand-made data
    if threshold is None:
        return {}
    runs = [img["runs"][str(r)] for img in complete_images(data) for r in range(data["runs"])]
    rule = PassRule.recorded(data["config"], threshold)
    flags = [[rule.undecided(length["distances"]) for length in run.get("lengths", [])] for run in runs]
    lengths = [f for fs in flags for f in fs]
    if not lengths:
        return {}
    return {"lengths": sum(lengths) / len(lengths), "count": len(lengths),
            "runs": sum(any(fs) for fs in flags) / len(flags)}


def flip_causes(data: dict) -> dict[str, int]:
    """Why two runs of one drawing gave different labels, over the images every run of which is done (runs 0 and 1):
    at the first length both ran whose pass differs, `inversion` when the two means differ by more than their
    reconstructions' sampling explains (Welch's t-test at 5%: the two runs' tokens reproduce the drawing at different
    distances, which more reconstructions cannot change) and `sampling` when they do not (one mean sits near the
    rule's line: a coin toss); `check` when the distances agree on the pass and the in-distribution check does not.
    `flips`: the images whose labels differ."""
    from scipy.stats import ttest_ind  # noqa: PLC0415  (only for a summary)

    out = {"flips": 0, "inversion": 0, "sampling": 0, "check": 0}
    for img in complete_images(data):
        a, b = img["runs"]["0"], img["runs"]["1"]
        if a["label"] == b["label"]:
            continue
        out["flips"] += 1
        by_m = {x["m"]: x for x in b.get("lengths", [])}
        for x in a.get("lengths", []):
            y = by_m.get(x["m"])
            if y is None or length_passes(x["distance_passed"], x["check_passed"]) == length_passes(
                    y["distance_passed"], y["check_passed"]):
                continue
            if x["distance_passed"] == y["distance_passed"]:
                out["check"] += 1
            else:
                test = ttest_ind(x["distances"], y["distances"], equal_var=False)
                out["inversion" if test.pvalue < 0.05 else "sampling"] += 1
            break
    return out


ONE_TOKEN_GATE = 0.9  # the model's quality gate (#27): one-token inversions of COMMON drawings pass this often


def one_token_passes(data: dict) -> dict[str, float]:
    """Per group, the share of runs (of images every run of which is done) whose first length, m = 1, passed:
    label 1, i.e. one learned token reproduced the drawing and passed the edit check. The shapes model's gate is
    COMMON >= ONE_TOKEN_GATE: familiar drawings must be one token to the model, whatever the settings decide
    after that; RARE and UNSEEN show whether it passes everything (a model that cannot tell them apart)."""
    out = {}
    for group in data["groups"]:
        labels = [img["runs"][str(r)]["label"] for img in complete_images(data, group) for r in range(data["runs"])]
        if labels:
            out[group] = sum(label_rank(label) == 1 for label in labels) / len(labels)
    return out


def recorded_length_passes(length: dict, config: dict) -> tuple[int, int]:
    """UNet sample-passes of one recorded length (`gpu_costs.unet_passes`'s sum for it), as (reconstructions', each
    restart's): the reconstructions, and per restart its inversion at `steps_used` (restarts run the same steps
    when early stopping is off) and its selection images (drawn when the length ran several inversions: its
    recorded restarts, or in records from before they were kept, `restarts` > 1)."""
    per_image = image_passes(config)
    recorded = length.get("selection_distances")
    several = bool(recorded) if recorded is not None else config.get("restarts", 1) > 1
    selection = config["selection_images"] if several else 0
    return len(length["distances"]) * per_image, length["steps_used"] * config["batch_size"] + selection * per_image


def rejudged_name(name: str, undecided_as: str) -> str:
    """The setting's name (preset, then each override, as `main` names a run) once judged by `undecided_as`: the
    recorded rule's override dropped, the new one added unless it is the preset's own ("steady-undecided_as=mean"
    -> "steady", since steady calls an undecided length a pass; "fast" -> "fast-undecided_as=pass")."""
    parts = [p for p in name.split("-") if not p.startswith("undecided_as=")]
    preset = PRESETS.get(parts[0])
    if preset is None or preset.undecided_as != undecided_as:
        parts.append(f"undecided_as={undecided_as}")
    return "-".join(parts)


def rejudged(data: dict, undecided_as: str) -> dict:
    """`data` as its analyses would have come out had they called an undecided length by `undecided_as` (the
    setting): each run's recorded lengths judged again (`uncertainty.PassRule.passes` with the recorded check),
    stopped at the first that passes, its label, continuous score and UNet passes recomputed.

    Exact, not a simulation, when the new rule passes every length the recorded one passed and each length's check
    was computed whatever its distances (the shapes world judges its reconstructions, not edits): what a length
    draws (its restarts, chosen by their selection mean under either rule, and its sequential reconstructions,
    drawn while the interval holds the threshold) does not depend on the rule, and the new run stops at or before
    the recorded one's stop, so every length it needs was recorded. Hence only "mean" -> "pass". Records from
    before the selection distances were kept give the passes of a shortened run as an estimate (`passes_estimated`,
    the recorded restarts spread evenly over the lengths)."""
    recorded = data["config"].get("undecided_as", "mean")
    if (recorded, undecided_as) != ("mean", "pass"):
        raise ValueError(f"only results recorded with undecided_as 'mean' can be rejudged, and only to 'pass' "
                         f"(these are {recorded!r}, asked {undecided_as!r}): a stricter rule would need lengths the "
                         "recorded runs never ran")
    if data["config"].get("second_opinion"):
        raise ValueError("results recorded with a second opinion cannot be rejudged: which runs ask for one, and what "
                         "it finds, depend on the rule")
    config = dict(data["config"], undecided_as=undecided_as)
    rule, max_tokens = PassRule.recorded(config, config["threshold"]), config["max_tokens"]
    out = dict(data, config=config, name=rejudged_name(data["name"], undecided_as),
               rejudged_from=data["name"], images=[])
    for img in data["images"]:
        runs = {}
        for key, run in img["runs"].items():
            lengths = [dict(length, distance_passed=rule.passes(length["distances"]))
                       for length in run["lengths"]]
            stop = next((i for i, x in enumerate(lengths) if length_passes(x["distance_passed"], x["check_passed"])),
                        None)
            kept = lengths if stop is None else lengths[:stop + 1]
            scored = recorded_results(kept)
            passes, estimated = run["passes"], False
            if len(kept) < len(lengths):
                work = [recorded_length_passes(x, config) for x in lengths]
                if all("selection_distances" in x for x in lengths) or config.get("restarts", 1) == 1:
                    passes = sum(images + per_restart * max(1, len(x.get("selection_distances") or []))
                                 for x, (images, per_restart) in zip(kept, work))
                else:  # how many restarts each length ran was not recorded: their total, spread evenly
                    restarts = (run["passes"] - sum(w[0] for w in work)) / work[0][1]
                    passes = round(sum(w[0] for w in work[:len(kept)]) + restarts * work[0][1] * len(kept) / len(work))
                    estimated = True
            label = str(kept[-1]["m"]) if stop is not None else f"{max_tokens}+"
            runs[key] = dict(run, label=label, score=kept[-1]["m"] if stop is not None else None, lengths=kept,
                             continuous=expected_length(scored, rule, max_tokens), passes=passes,
                             **({"passes_estimated": True} if estimated else {}))
        out["images"].append(dict(img, runs=runs))
    return out


def with_second_opinion(run: dict, config: AnalysisConfig, image, model) -> dict:
    """A recorded run of `config` without a second opinion (`AnalysisConfig.second_opinion`), as it comes out with
    one: where `analysis.needs_second_opinion` asks for it, the lengths below the label under the run's first
    repeat seed (`record.repeat_seed`) are analysed here (`model`) and the label is the lower one. Exact, not a
    simulation: the first run is the recorded one (the engine's first run under the same seed), and the second is
    the engine's own second opinion, since a length depends on its seed, its number and the lengths before it, not
    on how many may follow."""
    from ..analysis import analyze, needs_second_opinion  # noqa: PLC0415 - start-up: loads torch only when used
    from ..report import SeedRun  # noqa: PLC0415 - start-up: loads torch only when used

    first = recorded_results(run["lengths"])
    below = needs_second_opinion(first, config)
    if not below:
        return dict(run, second_opinion=None)
    t0 = time.perf_counter()
    seed = repeat_seed(run["seed"], SECOND_OPINION_REPEAT)  # the engine's second opinion's seed
    second = analyze(image, config.replace(seed=seed, max_tokens=below, second_opinion=False), model)
    opinion = SeedRun.of(seed, second.results, config)  # as `analysis.iter_score` records it, under all max_tokens
    score = lower_score(score_of(run["label"]), opinion.score)
    continuous = expected_length(first, config.pass_rule(), config.max_tokens, opinion)
    return dict(run, label=label_for(score, config.max_tokens), score=score, continuous=continuous,
                passes=run["passes"] + opinion.passes, seconds=round(run["seconds"] + time.perf_counter() - t0, 2),
                second_opinion=opinion.to_dict())


POOLED_KEYS = ("format_version", "drawing", "files", "runs", "groups", "model_marker")


def pooled(results: list[dict], sources: list[str]) -> dict[str, Any]:
    """Replicates of one setting (the same measured settings, `repeatability.MEASURED`, run again with other seeds,
    or on the other split) as one result: every result's images side by side, each marked with its `replicate`
    (its place in `results`) and its `split`; named and configured as the first. Every figure of `summarize`
    then counts each drawing once per replicate (`images`: the pairs of runs), and `compare` resamples drawings
    with their replicates. Raises ValueError when a result is not a replicate of the first (`sources` name them)."""
    first = results[0]
    for data, source in zip(results[1:], sources[1:]):
        problems = [k for k in POOLED_KEYS if result_entry(data, k) != result_entry(first, k)]
        if not matches(data["config"], first["config"]):
            problems.append("measured settings")
        if problems:
            raise ValueError(f"{source} is not a replicate of {sources[0]} (other {', '.join(problems)})")
    splits = list(dict.fromkeys(data["split"] for data in results))
    images = [dict(img, split=data["split"], replicate=i) for i, data in enumerate(results) for img in data["images"]]
    return dict(first, split="+".join(splits), images=images, pooled_from=list(sources))


def drawing_of(img: dict, data: dict) -> tuple[str, str, int]:
    """Which drawing an image entry of `data` is: (split, group, index); a pooled result (`pooled`) holds each
    drawing once per replicate, and may hold both splits."""
    return img.get("split", data["split"]), img["group"], img["index"]


def drawings_in(data: dict) -> int:
    """How many drawings the complete images of `data` hold (a pooled result holds each once per replicate)."""
    return len({drawing_of(img, data) for img in complete_images(data)})


def run_pair(img: dict, data: dict) -> tuple[tuple[str, str, int], int]:
    """Which runs of which drawing an image entry of `data` holds: (`drawing_of`, its replicate; 0 unpooled)."""
    return drawing_of(img, data), img.get("replicate", 0)


def published_entry(data: dict, source: str, spans: dict | None = None) -> dict[str, Any]:
    """The `repeatability.json` entry of a result: its settings and overall figures. Only a complete test-split
    run is published (the dev split is where settings are chosen, so its figures flatter them). `spans`: the
    result's `intervals`, when already computed (they take seconds on a pooled result)."""
    if data["split"] != "test":
        raise ValueError(f"{source}: only test-split results are published (this one is {data['split']})")
    if drawing_program(data) != "varied":
        raise ValueError(f"{source}: its queries are {drawing_program(data)} drawings; a setting's published figures "
                         "are on the world's varied drawings, and other drawings are a check of how far they carry")
    overall = summarize(data).get("all")
    if overall is None or overall["images"] < len(data["groups"]) * 2:
        raise ValueError(f"{source}: too few complete images to publish ({overall and overall['images']})")
    replicates = len(data.get("pooled_from", [source]))
    drawings = drawings_in(data)
    return {"world": result_entry(data, "world"), "name": data["name"], "config": data["config"],
            "figures": {"images": overall["images"], "same_label": overall["same_label"],
                        "within_one": overall["within_one"], "icc": overall["icc_continuous"],
                        "sem": overall["sem_continuous"], "source": source,
                        "drawings": drawings, "replicates": replicates, "clear_share": overall["clear_share"],
                        "same_label_clear": overall["same_label_clear"],
                        "same_label_close": overall["same_label_close"], "kappa": overall["kappa"],
                        "same_label_interval": (spans or intervals(data))["same_label"]}}


def summary_lines(data: dict, name: str = "", spans: dict | None = None) -> list[str]:
    """The printed summary of a result; `spans` as in `published_entry`."""
    def f(v, fmt="{:.2f}"):
        return "-" if v is None else fmt.format(v)

    if data["split"] == FILES_SPLIT:
        drawn = f", the images in {data.get('images_from')}"
    else:
        drawn = "" if drawing_program(data) == "varied" else f", {drawing_program(data)} drawings"
    most = data["config"]["max_tokens"]
    lines = [f"{name or data['name']} ({data['split']}{drawn}, {data['runs']} runs, max_tokens {most} -> "
             f"'{most + 1}' = {most}+)"]
    if data.get("pooled_from"):
        lines.append(f"  pooled: {len(data['pooled_from'])} replicates, each drawing counted once per replicate "
                     f"({', '.join(data['pooled_from'])})")
    lines.append(f"  {'group':<7s} {'n':>3s} {'same':>5s} {'<=1':>5s} {'kappa':>5s} {'ICC lab':>7s} {'ICC cont':>8s} "
                 f"{'SEM':>5s} {'rho lab':>7s} {'rho cont':>8s} {'med':>4s} {'mean c':>6s} {'passes':>7s} {'sec':>5s}")
    figures = summarize(data)
    for scope, s in figures.items():
        lines.append(f"  {scope.upper():<7s} {s['images']:>3d} {s['same_label']:>5.0%} {s['within_one']:>5.0%} "
                     f"{f(s['kappa']):>5s} {f(s['icc_label']):>7s} {f(s['icc_continuous']):>8s} "
                     f"{f(s['sem_continuous']):>5s} "
                     f"{f(s['spearman_label']):>7s} {f(s['spearman_continuous']):>8s} {s['median_label']:>4g} "
                     f"{s['mean_continuous']:>6.2f} {s['mean_passes']:>7.0f} {s['mean_seconds']:>5.0f}")
    drawings = drawings_in(data)
    if drawings >= 2 and data["runs"] >= 2:
        spans = spans or intervals(data)
        shown = {"same_label": ("same label", "{:.0%}"), "within_one": ("within one", "{:.0%}"),
                 "kappa": ("kappa", "{:.2f}"), "icc_continuous": ("ICC cont", "{:.2f}"),
                 "spearman_continuous": ("rho cont", "{:.2f}")}
        replicates = " with their replicates" if data.get("pooled_from") else ""
        lines.append(f"  95% intervals, resampling the {drawings} drawings{replicates}: " + ", ".join(
            f"{label} {fmt.format(spans[name][0])}-{fmt.format(spans[name][1])}"
            for name, (label, fmt) in shown.items() if spans[name] is not None))
    calls = figures.get("all", {})
    if calls.get("clear_share") is not None:
        lines.append(f"  clear calls (a run's own label probability >= {CLEAR_CALL:.0%}): {calls['clear_share']:.0%} "
                     "of runs; "
                     f"a rerun gave the same label after a clear call {f(calls['same_label_clear'], '{:.0%}')}, "
                     f"after a close call {f(calls['same_label_close'], '{:.0%}')}")
    one = one_token_passes(data)
    if one:
        met = "met" if one.get("common", 0.0) >= ONE_TOKEN_GATE else "not met"
        # the gate is the shapes model's (a familiar pair must be one token to it); a folder's images in another
        # world have no such gate
        gated = "common" in one and result_entry(data, "world") == WORLD_SHAPES
        verdict = f" (gate: COMMON >= {ONE_TOKEN_GATE:.0%}, {met})" if gated else ""
        lines.append("  runs passing at m=1: " + ", ".join(f"{g.upper()} {v:.0%}" for g, v in one.items()) + verdict)
    tosses = coin_tosses(data)
    if tosses:
        rule = PassRule.recorded(data["config"], data["config"]["threshold"])
        # the doubt's fixed line decides an undecided length, as the mean rule's threshold does
        line = f"the doubt's line ({rule.doubt_images} images' margin)" if rule.fixed_margin else "the threshold"
        called = ("decided by the side of that line the mean fell on" if rule.fixed_margin
                  else "called passes (undecided_as 'pass')" if rule.undecided_as == "pass"
                  else "decided by the side the mean fell on")
        lines.append(f"  undecided at their last image ({line} inside the 95% interval; {called}): "
                     f"{tosses['lengths']:.0%} of {tosses['count']} lengths; runs with one: {tosses['runs']:.0%}")
    causes = flip_causes(data) if data["runs"] >= 2 else {}
    if causes.get("flips"):
        lines.append(f"  labels that differ: {causes['flips']}; at the first length that differs, the two means apart "
                     f"by more than sampling (different inversions) {causes['inversion']}, within it (a coin toss at "
                     f"the line) {causes['sampling']}, the check {causes['check']}")
    moved = [img for img in complete_images(data) if "file" in img
             and len({img["runs"][str(r)]["label"] for r in range(data["runs"])}) > 1]
    if moved:  # your own images: which of them a rerun moved
        shown = "; ".join(f"{img['file']} " + " / ".join(img["runs"][str(r)]["label"] for r in range(data["runs"]))
                          for img in moved[:MOVED_SHOWN])
        more = f"; and {len(moved) - MOVED_SHOWN} more" if len(moved) > MOVED_SHOWN else ""
        lines.append(f"  images whose runs gave other labels: {shown}{more}")
    noise = length_noise(data)
    if noise:
        lines.append("  a length's mean between two runs: " + ", ".join(
            f"m={m} sd {n['sd']:.3f} ({n['sampling']:.0%} sampling, {n['pairs']} pairs)" for m, n in noise.items()))
    return lines


COMPARED = ("same_label", "within_one", "icc_continuous", "spearman_continuous", "mean_passes")
INTERVALS = ("same_label", "within_one", "kappa", "icc_continuous", "spearman_continuous")


def by_drawing(keys: list[tuple]) -> dict[tuple, list[tuple]]:
    """Keys (drawing, replicate), `drawing` a `drawing_of` triple, grouped by drawing: the unit a bootstrap
    resamples, since replicates of one drawing are not independent evidence."""
    out: dict[tuple, list[tuple]] = {}
    for k in keys:
        out.setdefault(k[0], []).append(k)
    return out


def drawing_resamples(pairs_of: dict[tuple, list[tuple]], resamples: int, seed: int):
    """Bootstrap samples of the drawings of `pairs_of` (`by_drawing`): each as many drawings as there are, drawn
    with replacement (seeded by `seed`), each with all its replicates; a sample of a single group is skipped,
    since the Spearman against the group needs two. Yields lists of keys."""
    drawings = list(pairs_of)
    rng = np.random.default_rng(seed)
    for _ in range(resamples):
        sample = [k for i in rng.integers(0, len(drawings), len(drawings)) for k in pairs_of[drawings[i]]]
        if len({k[0][1] for k in sample}) >= 2:
            yield sample


def intervals(data: dict, resamples: int = 2000, seed: int = 0) -> dict[str, tuple[float, float] | None]:
    """95% percentile bootstrap intervals of the overall figures of `INTERVALS` (`figures_of` over the complete
    images), resampling the drawings with their replicates (`drawing_resamples`): how far 30 drawings pin a
    figure down. None for a figure that is undefined in every sample."""
    images = {run_pair(img, data): img for img in complete_images(data)}
    draws: dict[str, list[float]] = {name: [] for name in INTERVALS}
    for sample in drawing_resamples(by_drawing(list(images)), resamples, seed):
        figures = figures_of([images[k] for k in sample], data["runs"])
        for name in INTERVALS:
            if figures[name] is not None:
                draws[name].append(figures[name])
    return {name: (tuple(float(v) for v in np.percentile(values, [2.5, 97.5])) if values else None)
            for name, values in draws.items()}


def compare(data: dict, reference: dict, resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """How `data` differs from `reference` on the drawings both completed (same split), with the uncertainty of
    30 drawings said: per figure of `COMPARED`, both values, their difference (data minus reference) and its 95%
    paired bootstrap interval (`resamples` draws of the drawings with replacement, the same draw for both, seeded
    by `seed`). Raises ValueError for other splits or no common drawing. Two settings whose interval holds 0 are
    not shown apart by these drawings; a difference is a lead until one is not."""
    if data["split"] != reference["split"]:
        raise ValueError(f"the results are on different splits ({data['split']} and {reference['split']}): "
                         "only the same drawings can be compared")

    ours = {run_pair(img, data): img for img in complete_images(data)}
    theirs = {run_pair(img, reference): img for img in complete_images(reference)}
    common = [k for k in ours if k in theirs]
    if not common:
        raise ValueError("no drawing is complete in both results")
    pairs_of = by_drawing(common)

    def figures(keys) -> tuple[dict, dict]:
        return (figures_of([ours[k] for k in keys], data["runs"]),
                figures_of([theirs[k] for k in keys], reference["runs"]))

    new, ref = figures(common)
    draws: dict[str, list[float]] = {name: [] for name in COMPARED}
    for sample in drawing_resamples(pairs_of, resamples, seed):
        a, b = figures(sample)
        for name in COMPARED:
            if a[name] is not None and b[name] is not None:
                draws[name].append(a[name] - b[name])
    out: dict[str, Any] = {"images": len(common), "drawings": len(pairs_of)}
    for name in COMPARED:
        diff = None if new[name] is None or ref[name] is None else new[name] - ref[name]
        low, high = (np.percentile(draws[name], [2.5, 97.5]) if draws[name] else (None, None))
        out[name] = {"value": new[name], "reference": ref[name], "difference": diff,
                     "interval": None if low is None else (float(low), float(high))}
    return out


def comparison_lines(data: dict, reference: dict) -> list[str]:
    """`compare` as printed by `--summary FILE --against REFERENCE`."""
    result = compare(data, reference)
    both = (f"the {result['images']} drawings both completed" if result["images"] == result["drawings"] else
            f"the {result['images']} pairs of runs both completed, on {result['drawings']} drawings")
    lines = [f"{data['name']} against {reference['name']} ({data['split']}, {both}; 95% paired bootstrap "
             "intervals of the difference over the drawings)"]
    for name in COMPARED:
        r = result[name]
        if r["difference"] is None:
            continue
        fmt = "{:+.0f}" if name == "mean_passes" else "{:+.2f}"
        value = "{:.0f}" if name == "mean_passes" else "{:.2f}"
        span = ("" if r["interval"] is None
                else f" ({fmt.format(r['interval'][0])} to {fmt.format(r['interval'][1])})")
        lines.append(f"  {name:<20s} {value.format(r['value']):>7s} against {value.format(r['reference']):>7s}: "
                     f"{fmt.format(r['difference'])}{span}")
    return lines


# ---------------------------------------------------------------------------- runs

def parse_set(items: list[str]) -> dict[str, Any]:
    """['steps=80', 'decide_early=true'] -> {'steps': 80, 'decide_early': True} (JSON values, else strings)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item}: expected key=value")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def folder_queries(folder: Path, groups: list[str], per_group: int | None = None) -> list[tuple[str, int, str]]:
    """(group, index, file) of the images in `folder`'s group subfolders (`folder/common/*.png`, `folder/rare/`,
    `folder/unseen/`, in any case; `images.list_images`; hidden folders such as a zip's `__MACOSX/` are passed
    over), `index` an image's place in its subfolder sorted by name (at most
    `per_group` of each) and `file` its path relative to `folder`, in the order the benchmark analyses them (the
    first of every group, then the second, ...). Raises ValueError naming what is missing, or a subfolder that names
    no group (the group is what the Spearman figures order the images by)."""
    if not folder.is_dir():
        raise ValueError(f"--images {folder}: no such folder")
    subfolders = sorted(p.name for p in folder.iterdir() if p.is_dir() and not is_hidden(p.name))
    strays = [name for name in subfolders if name.lower() not in GROUPS]
    if strays:
        raise ValueError(f"--images {folder}: its subfolders must be named after the groups ({', '.join(GROUPS)}), "
                         f"which order the images from familiar to original; found {', '.join(strays)}")
    # a group's folder in any case (COMMON/, Common/), as people write the groups' names; one folder per group
    named = {g: [name for name in subfolders if name.lower() == g] for g in GROUPS}
    twice = [" and ".join(names) for names in named.values() if len(names) > 1]
    if twice:
        raise ValueError(f"--images {folder}: one subfolder per group, found {'; '.join(twice)}")
    group_folder = {g: names[0] for g, names in named.items() if names}
    listed = {g: list_images(folder / group_folder[g])[:per_group] if g in group_folder else [] for g in groups}
    if not any(listed.values()):
        raise ValueError(f"--images {folder}: no images in {', '.join(f'{g}/' for g in groups)} (put each image in "
                         "the subfolder of its group; the images directly in the folder are not read)")
    most = max(len(found) for found in listed.values())
    return [(g, i, f"{group_folder[g]}/{listed[g][i].name}") for i in range(most) for g in groups
            if i < len(listed[g])]


def folder_fingerprint(folder: Path, queries: list[tuple[str, int, str]]) -> dict[str, str]:
    """file -> its sha256, for every query of `folder_queries`: what a result of a folder's images must resume
    with (a file replaced or renamed is another benchmark)."""
    return {file: input_sha256(folder / file)["sha256"] for _, _, file in queries}


def query_of(data: dict, group: str, index: int, file: str | None = None) -> tuple[str | None, Any]:
    """(caption, image) of a result's query: the file (a path, analysed as the CLI would) of a folder's result,
    without a caption; else the benchmark's drawing of the layout (`figure6.query_image`)."""
    if file is not None:
        return None, str(Path(data["images_from"]) / file)
    return query_image(group, data["layout_seed"], index, drawing_program(data))


def _image(data: dict, group: str, index: int, caption: str | None, file: str | None = None) -> dict:
    img = next((x for x in data["images"] if x["group"] == group and x["index"] == index), None)
    if img is None:
        img = {"group": group, "index": index, "caption": caption, "runs": {}}
        if file is not None:
            img["file"] = file
        data["images"].append(img)
    return img


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


SETTINGS_KEYS = ("format_version", "split", "layout_seed", "drawing", "files", "runs", "config", "model_marker")


# Entries a result file gained after some were written, with the value those files ran with: results from before
# the drawing could be chosen are of the world's varied drawings; none from before `--images` is of a folder, and all
# of them are of the shapes world.
RESULT_DEFAULTS = {"drawing": "varied", "files": None, "world": WORLD_SHAPES}


def result_entry(data: dict, key: str) -> Any:
    """A result's top-level entry `key`, or the value it ran with when it was written before the entry existed."""
    return data.get(key, RESULT_DEFAULTS.get(key))


def drawing_program(data: dict) -> str:
    """How a result's queries were drawn (`figure6.DRAWINGS`)."""
    return result_entry(data, "drawing")


def settings_of(data: dict) -> dict[str, Any]:
    """The entries of a result that a run resuming or merging into it must share (`SETTINGS_KEYS`)."""
    return {k: result_entry(data, k) for k in SETTINGS_KEYS}


def merge_shards(data: dict, out: Path, stem: str) -> list[str]:
    lines = []
    for path in sorted(out.glob(f"shards/*/{stem}.json")):
        shard = json.loads(path.read_text())
        if not same_settings(settings_of(shard), settings_of(data)):
            lines.append(f"skipped {path} (other settings)")
            continue
        added = 0
        for img in shard["images"]:
            mine = _image(data, img["group"], img["index"], img["caption"], img.get("file"))
            new = {r: v for r, v in img["runs"].items() if r not in mine["runs"]}
            mine["runs"].update(new)
            added += len(new)
        lines.append(f"merged {added} analyses from {path}")
    return lines


def open_result(out: Path, stem: str, shard: tuple[int, int] | None, fresh: bool, data: dict) -> tuple[Path, dict]:
    """The result file a run writes (`out/<stem>.json`, a shard's under `out/shards/K-of-N/`) and what it holds:
    `data`, a new result, or the file's analyses so far when it resumes one of the same settings (`SETTINGS_KEYS`;
    its `config` then becomes `data`'s, should it predate a setting). Unsharded, every shard's analyses are merged
    in and the file is written. Raises ValueError when the file holds other settings."""
    run_dir = out / "shards" / f"{shard[0]}-of-{shard[1]}" if shard else out
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / f"{stem}.json"
    if path.is_file() and not fresh:
        old = json.loads(path.read_text())
        ours = settings_of(data)
        differ = [k for k, v in settings_of(old).items() if not same_settings({k: v}, {k: ours[k]})]
        if differ:
            named = ", ".join("its images (a file changed, came or went)" if k == "files" else k for k in differ)
            raise ValueError(f"{path} holds other settings ({named}); use another --name/--out or --fresh")
        data = {**old, "config": data["config"]}
    if not shard:
        for line in merge_shards(data, out, stem):
            print(line, flush=True)
        _write_json(path, data)
    return path, data


def recorded_marker(model_id: str) -> dict[str, Any]:
    """What a result records of its model, to tell models apart: a shapes model's marker (how it was trained,
    whatever path spelled its folder), else its id."""
    return model_marker(model_id) or {"model": model_id}


def shard_of(todo: list, shard: tuple[int, int] | None) -> list:
    """Shard K of N's share of `todo` (every N-th item from the K-th); all of it unsharded."""
    return todo[shard[0] - 1:: shard[1]] if shard else todo


def build_parser() -> argparse.ArgumentParser:

    ap = argparse.ArgumentParser(prog="python -m originality.experiments.reliability", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default=DEFAULT_PRESET, choices=sorted(PRESETS),
                    help=f"the settings measured (default: {DEFAULT_PRESET}, the one the app and the CLI use)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override settings of the preset")
    ap.add_argument("--name", default=None, help="the setting's name in the output (default: preset and --set); "
                                                  "with --summary, the name the results are printed and published "
                                                  "under (e.g. the preset a setting became)")
    ap.add_argument("--split", default=None, choices=sorted(SPLITS), help="the benchmark's layouts (default: test)")
    ap.add_argument("--images", default=None, metavar="FOLDER",
                    help="your own images instead of the benchmark's drawings, in FOLDER/common/, FOLDER/rare/ and "
                         "FOLDER/unseen/ (any of them; the group orders them from familiar to original), each "
                         "analysed --runs times as the CLI would; with --model, in any world (Stable Diffusion on a "
                         "GPU too)")
    ap.add_argument("--drawing", default=None, choices=DRAWINGS,
                    help="how the queries are drawn: the world's renderer, varied as in training (the benchmark's "
                         "drawings), exactly, or by another program (other: matplotlib; pil: PIL's ImageDraw; box: "
                         "a numpy rasteriser whose shapes fill their box; each with conventions of its own); a "
                         "drawing other than varied is named in the result's name")
    ap.add_argument("--per-group", type=int, default=None,
                    help="drawings per group (default: 10); with --images, at most this many of each group's images "
                         "(default: all)")
    ap.add_argument("--runs", type=int, default=2, help="independent analyses per image (default: 2)")
    ap.add_argument("--model", default=None, help="shapes model folder (default: the bundled one); with --images, "
                                                   "any model the CLI takes (a shapes folder, a Stable Diffusion "
                                                   "folder or Hub id)")
    ap.add_argument("--out", default="outputs/reliability")
    ap.add_argument("--groups", nargs="+", default=list(GROUPS), choices=GROUPS)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    ap.add_argument("--dtype", default=None, choices=DTYPE_CHOICES,
                    help="the frozen modules' precision (default: float32 on the CPU, bfloat16 on a GPU); "
                         "float32 on a GPU gives the CPU's figures")
    ap.add_argument("--shard", default=None, metavar="K/N")
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--summary", nargs="+", default=None, metavar="FILE", help="print the summary of result files")
    ap.add_argument("--undecided-as", default=None, choices=UNDECIDED_AS,
                    help="with --summary: judge the recorded runs again, calling an undecided length by this rule "
                         "(`rejudged`: exact from 'mean' to 'pass' on the shapes world)")
    ap.add_argument("--against", default=None, nargs="+", metavar="FILE",
                    help="with --summary: compare each result with this one on the drawings both completed, with "
                         "95%% paired bootstrap intervals of the differences (`compare`); several files are "
                         "replicates of the reference, pooled (`pooled`) and matched in order with --pool's")
    ap.add_argument("--pool", action="store_true",
                    help="with --summary: the files are replicates of one setting (other seeds, or the other "
                         "split): summarise them as one result (`pooled`), each drawing counted once per replicate")
    ap.add_argument("--second-opinions-of", default=None, metavar="FILE",
                    help="a result of a setting without second_opinion: write it as it comes out with one "
                         "(`with_second_opinion`: the recorded runs, and the second opinions they ask for run here) to "
                         "--out/<its name>-second_opinion=True-<split>.json; resumable, shardable like a run")
    ap.add_argument("--publish", action="store_true",
                    help="with --summary: write each (test-split) result's figures into originality/repeatability.json")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.summary:
        def read(path: str) -> dict:
            data = json.loads(Path(path).read_text())
            if args.undecided_as and args.undecided_as != data["config"].get("undecided_as", "mean"):
                data = rejudged(data, args.undecided_as)
            return data

        def read_all(paths: list[str]) -> dict:
            results = []
            for path in paths:
                try:
                    results.append(read(path))
                except (OSError, ValueError) as err:
                    raise ValueError(f"{path}: {err}") from err
            return pooled(results, paths) if len(results) > 1 else results[0]

        try:
            reference = read_all(args.against) if args.against else None
            results = ([(" + ".join(args.summary), read_all(args.summary))] if args.pool
                       else [(path, read_all([path])) for path in args.summary])
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        for path, data in results:
            if args.name:
                data = dict(data, name=args.name)
            if data.get("rejudged_from"):
                path = f"{path} (rejudged: undecided_as {args.undecided_as})"
            spans = intervals(data) if args.publish else None  # computed once for the summary and the entry
            print("\n".join(summary_lines(data, spans=spans)))
            if reference is not None:
                try:
                    print("\n".join(comparison_lines(data, reference)))
                except ValueError as err:
                    print(f"error: {path} against {' + '.join(args.against)}: {err}", file=sys.stderr)
                    return 2
            if args.publish:
                try:
                    publish(published_entry(data, str(path), spans))
                except ValueError as err:
                    print(f"error: {err}", file=sys.stderr)
                    return 2
                print(f"published {data['name']} to {TABLE_FILE}")
        return 0
    from ..analysis import analyze, resolve_config  # noqa: PLC0415 - start-up: torch only when used

    if args.threads:
        import torch  # noqa: PLC0415 - start-up: torch only when used

        torch.set_num_threads(args.threads)
    if args.second_opinions_of:
        return second_opinions_main(args)
    try:
        overrides = parse_set(args.set)
        shard = parse_shard(args.shard)
        base_config = AnalysisConfig.preset(args.preset, **overrides)
        todo, data = (folder_benchmark(args, base_config) if args.images
                      else generated_benchmark(args))
    except (ValueError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    model_id = args.model or str(SHAPES_MODEL_DIR)
    try:
        model = load_run_model(args, model_id, any_world=bool(args.images))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    base = resolve_config(base_config, model)
    name = args.name or "-".join([args.preset] + [f"{k}={v}" for k, v in overrides.items()] + data.pop("named"))
    data = {"format_version": FORMAT_VERSION, "name": name, "world": model.world.name, **data, "runs": args.runs,
            "config": base.to_dict(),
            "model_marker": recorded_marker(model_id), "groups": list(args.groups), "images": []}
    try:
        path, data = open_result(Path(args.out), f"{name}-{data['split']}", shard, args.fresh, data)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for g, i, file in shard_of(todo, shard):
        caption, image = query_of(data, g, i, file)
        img = _image(data, g, i, caption, file)
        for r in range(args.runs):
            if str(r) in img["runs"]:
                continue
            t0 = time.perf_counter()
            report = analyze(image, base.replace(seed=base.seed + r * RUN_SEED_STRIDE), model)
            img["runs"][str(r)] = analysis_record(report, time.perf_counter() - t0)
            _write_json(path, data)
            print(f"  {g.upper():<7s} {file or f'#{i:<3d}'} run {r} -> {report.label:>3s} "
                  f"({img['runs'][str(r)]['continuous']:.2f}, {time.perf_counter() - t0:.0f}s)", flush=True)
    print()
    print("\n".join(summary_lines(data)))
    return 0


def generated_benchmark(args: argparse.Namespace) -> tuple[list[tuple[str, int, None]], dict[str, Any]]:
    """The benchmark's own drawings: (group, index, None) of each query to analyse, and the result's entries that
    say which (`split`, `layout_seed`, `drawing`; `named`: what the default name adds)."""
    split, drawing = args.split or "test", args.drawing or "varied"
    todo = [(g, i, None) for i in range(10 if args.per_group is None else args.per_group) for g in args.groups]
    return todo, {"split": split, "layout_seed": SPLITS[split], "drawing": drawing,
                  "named": [] if drawing == "varied" else [f"drawing={drawing}"]}


def folder_benchmark(args: argparse.Namespace, config: AnalysisConfig) -> tuple[list[tuple], dict[str, Any]]:
    """`--images FOLDER`: (group, index, file) of each image to analyse (`folder_queries`), and the result's
    entries that say which (`split` "files", the folder and its files' `folder_fingerprint`). Every image is checked
    as the CLI checks an upload (`analysis.check_inputs`: readable, and one the model's world can judge) before any
    model loads; ValueError lists every image that fails."""
    if args.split or args.drawing:
        raise ValueError("--images analyses the folder's images: --split and --drawing choose the benchmark's own")
    from ..analysis import check_inputs  # noqa: PLC0415 - start-up: torch only when used

    folder = Path(args.images)
    queries = folder_queries(folder, list(args.groups), args.per_group)
    world = world_of_model(args.model or str(SHAPES_MODEL_DIR))
    problems = []
    for _, _, file in queries:
        try:
            check_inputs(str(folder / file), config, world=world)
        except ValueError as err:
            problems.append(f"  {file}: {err}")
    if problems:
        raise ValueError(f"{len(problems)} of the {len(queries)} images in {folder} cannot be analysed "
                         f"({world.name} world):\n" + "\n".join(problems))
    return queries, {"split": FILES_SPLIT, "layout_seed": None, "drawing": FILES_SPLIT,
                     "files": folder_fingerprint(folder, queries), "images_from": str(folder),
                     "named": [f"images={folder.resolve().name}"]}


def load_run_model(args: argparse.Namespace, model_id: str, any_world: bool):
    """The model a run analyses with (`--device`, `--dtype`): for a folder's images any world's, else a shapes
    world's (`evaluate.load_shapes_world`, which refuses another). Raises ValueError with a message for people."""
    from ..models import load_model  # noqa: PLC0415 - start-up: torch only when used
    from .evaluate import load_shapes_world  # noqa: PLC0415 - start-up, as above

    if any_world:
        return load_model(model_id, device=args.device, dtype=args.dtype)
    return load_shapes_world(model_id, args.device, args.dtype)


def second_opinions_main(args: argparse.Namespace) -> int:
    """`--second-opinions-of FILE`: FILE's runs as they come out with a second opinion (`with_second_opinion`)."""
    source = json.loads(Path(args.second_opinions_of).read_text())
    if source["config"].get("second_opinion"):
        print(f"error: {args.second_opinions_of} already ran with second_opinion", file=sys.stderr)
        return 2
    config = AnalysisConfig.from_dict(dict(AnalysisConfig.recorded(source["config"]), second_opinion=True))
    model_id = args.model or str(SHAPES_MODEL_DIR)
    model = load_run_model(args, model_id, any_world=source["split"] == FILES_SPLIT)
    if recorded_marker(model_id) != source["model_marker"]:
        print(f"error: {args.second_opinions_of} was recorded with another model", file=sys.stderr)
        return 2
    name = f"{source['name']}-second_opinion=True"
    data = dict(source, name=name, config=config.to_dict(), second_opinions_of=args.second_opinions_of, images=[])
    try:
        shard = parse_shard(args.shard)
        path, data = open_result(Path(args.out), f"{name}-{source['split']}", shard, args.fresh, data)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    todo = sorted(source["images"], key=lambda img: (img["index"], GROUPS.index(img["group"])))
    for recorded in shard_of(todo, shard):
        caption, image = query_of(source, recorded["group"], recorded["index"], recorded.get("file"))
        img = _image(data, recorded["group"], recorded["index"], caption, recorded.get("file"))
        for r, run in sorted(recorded["runs"].items()):
            if r in img["runs"]:
                continue
            img["runs"][r] = with_second_opinion(run, config, image, model)
            _write_json(path, data)
            second = img["runs"][r]["second_opinion"]
            said = ("as recorded" if second is None else "a second opinion found none shorter"
                    if second["score"] is None else f"a second opinion found {second['score']}")
            print(f"  {recorded['group'].upper():<7s} #{recorded['index']:<3d} run {r} -> {img['runs'][r]['label']:>3s}"
                  f" ({said})", flush=True)
    print()
    print("\n".join(summary_lines(data)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
