"""Calibrate a model world's distance threshold from images known to be familiar to the model.

    python -m originality calibrate FAMILIAR/ --model CompVis/stable-diffusion-v1-4 [--original ORIGINAL/]

The threshold answers "how close must the reconstructions be for the learned tokens to count as
a description of the image?". Images the model has certainly seen the like of many times (the
paper's examples: famous paintings, landmark photos) should pass at m = 1. For each image of
FAMILIAR this runs the analysis' m = 1 inversion and reconstructions (no edits) and records the
mean distance; the suggested threshold is the --quantile (default 0.8) of those means, the same
rule as the shapes world's calibration (`originality.experiments.shapes_threshold`): learned tokens pass when
they reconstruct as well as one token does for 80% of familiar images. With --original (images the
user knows the model cannot have seen), their m = 1 distances are measured too and the
separation is reported: how many of them the suggested threshold would pass at m = 1, and the
AUC of "familiar scores lower".

Writes --out/calibration.json; pass the threshold to analyses with --threshold (their reports
then record `threshold_source: "setting"`).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import numpy as np


def quantile(values: list[float], q: float) -> float:
    """numpy's (linear-interpolation) quantile, with errors that name the problem."""
    if not values:
        raise ValueError("quantile of no values")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {q}")
    return float(np.quantile(values, q))


def quantile_key(q: float) -> str:
    """Name of the quantile's entry in a group summary: 0.8 -> "q80"."""
    return f"q{round(q * 100)}"


def one_token_distances(model, images: list[Path], config, progress=None) -> list[dict[str, Any]]:
    """Per image: the m = 1 reconstructions' distances to it (the analysis' own steps 1-5).

    The analysis runs with threshold 0 so the length "fails" and its edits are skipped: only
    the distances are wanted here.
    """
    from .analysis import iter_length, prepare  # noqa: PLC0415 - start-up: loads torch/numpy only when used
    from .inversion import InversionStep  # noqa: PLC0415 - start-up: loads torch/numpy only when used

    rows = []
    run_config = config.replace(max_tokens=1, threshold=0.0, always_check_edits=False)
    for i, path in enumerate(images):
        prepared = prepare(str(path), run_config, model)
        result = None
        for event in iter_length(prepared, model, 1):
            if not isinstance(event, InversionStep):
                result = getattr(event, "result", result)
        rows.append({"image": path.name, "domain": prepared.config.domain, "distances": result.distances,
                     "mean": result.mean_distance})
        if progress:
            progress(i + 1, len(images), path.name, result.mean_distance)
    return rows


def auc_lower(familiar: list[float], original: list[float]) -> float:
    """P(a familiar image's distance < an original one's), ties counting half (Mann-Whitney AUC)."""
    wins = sum((f < o) + 0.5 * (f == o) for f in familiar for o in original)
    return wins / (len(familiar) * len(original))


def summarise(familiar: list[float], original: list[float] | None, q: float) -> dict[str, Any]:
    """The m = 1 distance distribution of the familiar images, the suggestion, and the separation."""
    suggested = quantile(familiar, q)
    out: dict[str, Any] = {
        "familiar": {"images": len(familiar), "mean": statistics.fmean(familiar), "median": quantile(familiar, 0.5),
                     quantile_key(q): suggested, "min": min(familiar), "max": max(familiar)},
        "suggested_threshold": suggested,
        "rule": f"the {q:g} quantile of the familiar images' m = 1 mean distances",
    }
    if original:
        out["original"] = {"images": len(original), "mean": statistics.fmean(original),
                           "median": quantile(original, 0.5), "min": min(original), "max": max(original),
                           "pass_at_m1": sum(v <= suggested for v in original) / len(original)}
        out["auc_familiar_lower"] = auc_lower(familiar, original)
    return out
