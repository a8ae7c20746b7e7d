"""Per-unit GPU costs of an analysis, in one file the GPU benchmark can update.

`gpu_costs.json` holds the seconds of GPU time per inversion sample (one UNet forward + backward
of one noisy copy), per generated image and denoising step (with classifier-free guidance), and a
fixed overhead per token length, plus where they come from (`source`: an estimate, or the GPU,
dtype and date of a `benchmarks/gpu_bench.py --update-costs` run). The ZeroGPU reservation of the
app (app.gpu_seconds) is built from them.
"""

from __future__ import annotations

import json
from pathlib import Path

from .stopping import STOP_PROBE

COSTS_FILE = Path(__file__).with_name("gpu_costs.json")


def load_costs(path: str | Path = COSTS_FILE) -> dict:
    """The cost table: overhead_s, s_per_sample, s_per_image_step, source."""
    data = json.loads(Path(path).read_text())
    for key in ("overhead_s", "s_per_sample", "s_per_image_step"):
        if not isinstance(data.get(key), (int, float)) or data[key] < 0:
            raise ValueError(f"{path}: {key} must be a non-negative number, got {data.get(key)!r}")
    return data


def rates(path: str | Path = COSTS_FILE) -> tuple[float, float, float]:
    """(overhead_s, s_per_sample, s_per_image_step)."""
    c = load_costs(path)
    return float(c["overhead_s"]), float(c["s_per_sample"]), float(c["s_per_image_step"])


def seconds(steps: int, batch_size: int, images: int, inference_steps: int, path: str | Path = COSTS_FILE) -> float:
    """Projected GPU seconds of one token length: inversion, then `images` generations."""
    overhead, per_sample, per_image_step = rates(path)
    return overhead + per_sample * steps * batch_size + per_image_step * images * inference_steps


def length_work(config, inversion_steps: int | None = None, m: int = 1) -> tuple[int, int]:
    """The most work token length `m` can do under `config` (an `AnalysisConfig`), as (inversion steps at
    `batch_size`, generated images at `num_inference_steps`): every restart's inversion (`inversion_steps`, from
    `config.most_inversion_steps`: fewer for a length that starts warm or reuses nested inversions; None: `m`'s
    from scratch), its selection images when it runs several (`config.restarts_at`), the most reconstructions the
    sequential rule may draw (`max_reconstructions`) and the edits. The first length's is the most any length does."""
    images = max(config.num_reconstructions, config.max_reconstructions) + config.num_edits
    restarts = config.restarts_at(m)
    if restarts > 1:
        images += restarts * config.selection_images
    return (config.most_inversion_steps(m) if inversion_steps is None else inversion_steps), images


def length_seconds(config, path: str | Path = COSTS_FILE, inversion_steps: int | None = None, m: int = 1) -> float:
    """Projected GPU seconds of token length `m` at most (`length_work` at the table's rates): the ZeroGPU
    reservation."""
    steps, images = length_work(config, inversion_steps, m)
    return seconds(steps, config.batch_size, images, config.num_inference_steps, path)


def image_passes(config: dict) -> int:
    """UNet sample-passes of one generated image under `config` (a resolved `AnalysisConfig.to_dict()`): one per
    denoising step, two with classifier-free guidance."""
    return config["num_inference_steps"] * (2 if (config.get("guidance_scale") or 0) > 1 else 1)


def unet_passes(report) -> int:
    """UNet sample-passes of one analysis (`report.Report`), the work measure that does not depend on the machine:
    its lengths' (`results_passes`), and the other runs' that its score rests on (the `seeds` setting's further
    seeds, a second opinion) where the report recorded them (`SeedRun.passes`)."""
    second = getattr(report, "second_opinion", None)
    others = [*getattr(report, "seed_runs", [])[1:], *([second] if second is not None else [])]
    return results_passes(report.results, report.config) + sum(run.passes or 0 for run in others)


def results_passes(results, c: dict) -> int:
    """UNet sample-passes of one run's lengths (`report.TokenResult`s) under the resolved settings `c`:

        sum over lengths of  (steps_used + early-stopping evaluations) * batch_size     (inversion: forward + backward;
                                                                                    every restart's)
                           + (reconstructions + edits + restarts' selection images + images drawn by probes
                              and not kept)
                             * inference_steps * (2 with guidance, else 1)
    """
    per_image = image_passes(c)
    total = 0
    for r in results:
        # every inversion of the length (`restarts`), and the selection images drawn to choose among them
        inversions = [t["steps"] for t in r.restarts] or [r.steps_used or len(r.losses)]
        for steps in inversions:
            evaluations = (steps // c["early_stop_every"] + 1) if c.get("early_stop_every") else 0
            total += (steps + evaluations) * c["batch_size"]
        selection = sum(len(t["selection_distances"]) for t in r.restarts)
        kept_from_probe = len(r.reconstructions) if r.stop_reason == STOP_PROBE else 0
        total += (len(r.reconstructions) + len(r.edits) + selection + sum(p[2] for p in r.probes)
                  - kept_from_probe) * per_image
    return total
