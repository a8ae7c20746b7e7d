"""Rerun a saved analysis from its reproducibility record and compare, token length by token length.

    python -m originality reproduce runs/photo            # exit 0 when the labels match
    result = reproduce("runs/photo"); print(result.labels_match)

The rerun starts from the run folder's query.png: the normalised query, the exact pixels the model
saw (checked against the record's `query.sha256`). The original file is not needed, and is not kept
in the run folder (it may be large, or carry metadata such as GPS positions that a shared run should
not publish); `image=` reruns from it instead, and checks it against the record's `input.sha256`
first. A run whose model was shown the world's own drawing of the image (`redraw` "on") reruns from
given.png, the normalised image as given, which the same settings redraw to the same pixels; a
redrawn run saved before given.png was kept reruns on query.png with redraw off, since drawing a
drawing again can move a shape by a fraction of a pixel, and so does a run whose given.png the
redraw now reads otherwise (its detector has changed since; a warning says so). Settings are the
recorded ones (with the world's defaults filled in); the model is the recorded one (its folder's
content hash or Hub revision checked); the device and dtype are the recorded ones unless given. On
the same device and software the numbers must agree; anything that differs from the record is
listed in `warnings`.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from .analysis import analyze, redrawn
from .config import AnalysisConfig
from .images import prepare_image
from .provenance import input_sha256, pixels_sha256
from .record import SECOND_OPINION_REPEAT, repeat_seed
from .report import Report

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LengthComparison:
    """One token length: the recorded and the new mean distance and pass/fail (None: not tried)."""

    num_tokens: int
    recorded_distance: float | None
    new_distance: float | None
    recorded_passed: bool | None
    new_passed: bool | None

    @property
    def matches(self) -> bool:
        return self.recorded_passed == self.new_passed


@dataclass
class Reproduction:
    recorded: Report
    new: Report
    lengths: list[LengthComparison]
    warnings: list[str] = field(default_factory=list)

    @property
    def labels_match(self) -> bool:
        return self.recorded.label == self.new.label

    @property
    def max_difference(self) -> float:
        """Largest |recorded - new| mean distance over the lengths both runs tried (0 when none)."""
        diffs = [abs(c.recorded_distance - c.new_distance) for c in self.lengths
                 if c.recorded_distance is not None and c.new_distance is not None]
        return max(diffs, default=0.0)


def compare(recorded: Report, new: Report) -> list[LengthComparison]:
    old = {r.num_tokens: r for r in recorded.results}
    now = {r.num_tokens: r for r in new.results}
    out = []
    for m in sorted(set(old) | set(now)):
        a, b = old.get(m), now.get(m)
        out.append(LengthComparison(m, a.mean_distance if a else None, b.mean_distance if b else None,
                                    a.passed if a else None, b.passed if b else None))
    return out


def recorded_model(report: Report, override: str | None) -> str:
    """The model to rerun with: `override`, else the recorded id (the bundled shapes model by name)."""
    if override:
        return override
    info = report.record.get("model") or {}
    model_id = info.get("id")
    if info.get("bundled"):
        return "shapes"  # the recorded path is that of the machine it ran on; the bundled model is here too
    if not model_id:
        raise ValueError("this run has no reproducibility record (it was saved by an older version); "
                         "give the model with --model")
    if info.get("source") == "local folder" and not Path(model_id).is_dir():
        raise ValueError(f"the recorded model folder {model_id} is not here; give its copy with --model")
    return model_id


def check_against_record(record: dict, new: dict) -> list[str]:
    """What differs between two records' model, runtime, software and image seeding (empty: nothing)."""
    warnings = []
    for section, keys in (("model", ("revision", "content_sha256")), ("runtime", ("device", "dtype", "gpu")),
                          ("software", ("torch", "diffusers", "transformers", "dreamsim", "originality",
                                        "git_commit"))):
        old, now = record.get(section) or {}, new.get(section) or {}
        for key in keys:
            if old.get(key) != now.get(key):
                warnings.append(f"{section}.{key}: recorded {old.get(key)!r}, now {now.get(key)!r}")
    # how generated images are seeded changed once (record.image_seed); a record says which way it drew them
    old, now = record.get("seeds") or {}, new.get("seeds") or {}
    for key in ("reconstruction", "edit"):
        if key in old and key in now and old[key] != now[key]:
            warnings.append(f"seeds.{key}: recorded {old[key]!r}, now {now[key]!r} (this version seeds generated "
                            "images differently, so the new images differ)")
    return warnings


def repeat_seed_warnings(recorded: Report, seed: int) -> list[str]:
    """Where the recorded run's repeats under the analysis seed `seed` (a close call's second opinion is repeat 1,
    the `seeds` setting's are 1 .. K-1) ran under other seeds than this version gives them (`record.repeat_seed`;
    seed + k before 2026-12-08), so that their lengths, and the label they decided, may differ on the rerun."""
    ran = [(k, run.seed, f"seeds setting's repeat {k}") for k, run in enumerate(recorded.seed_runs[1:], start=1)]
    if recorded.second_opinion is not None:
        ran.append((SECOND_OPINION_REPEAT, recorded.second_opinion.seed, "second opinion"))
    return [f"seeds: the {what} ran under seed {old}, this version runs it under {repeat_seed(seed, k)} (it "
            "draws a run's repeats from its seed since 2026-12-08), so its lengths and the label may differ"
            for k, old, what in ran if old != repeat_seed(seed, k)]


def reproduce(
    run_dir: str | os.PathLike,
    *,
    image: str | os.PathLike | None = None,
    model: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
) -> Reproduction:
    """Rerun the analysis saved in `run_dir` and compare it with the recorded one (see the module doc).

    Raises ValueError when the image is not the recorded one (a different file or different
    pixels) or when the model cannot be found.
    """
    from .models import load_model  # noqa: PLC0415 - start-up: loads torch/numpy only when used

    # 1. Read the run and its record
    recorded = Report.load(run_dir)
    record = recorded.record
    config = AnalysisConfig.from_dict(recorded.config)
    source = Path(image) if image is not None else Path(run_dir) / "query.png"
    if image is None and config.redraw == "on":
        if (Path(run_dir) / "given.png").is_file():
            source = Path(run_dir) / "given.png"
        else:
            logger.warning("this run kept no image as given (given.png): rerunning on the drawing the model saw, "
                           "with redraw off")
            config = config.replace(redraw="off")
    if image is not None and (record.get("input") or {}).get("sha256"):
        got = input_sha256(source)["sha256"]
        if got != record["input"]["sha256"]:
            raise ValueError(f"{image} is not the file this run analysed (sha256 {got[:12]}…, recorded "
                             f"{record['input']['sha256'][:12]}…)")
    # 2. The model, on the recorded device and dtype unless told otherwise
    runtime = record.get("runtime") or {}
    device = device or runtime.get("device")
    if device and device.startswith("cuda"):
        import torch  # noqa: PLC0415 - start-up: torch only when used

        if not torch.cuda.is_available():
            logger.warning("the run was on %s; no GPU here, rerunning on cpu", device)
            device = "cpu"
    loaded = load_model(recorded_model(recorded, model), device=device, dtype=dtype or runtime.get("dtype"))
    # 3. The same pixels: the normalised query, redrawn as the run redrew it, must hash to the recorded one (and so
    # must the run folder's query.png, when the rerun starts from the image as given)
    want = (record.get("query") or {}).get("sha256")
    shown = Path(run_dir) / "query.png"
    query = redrawn(prepare_image(source, loaded.resolution), config, loaded.world)[0]
    seen = prepare_image(shown, loaded.resolution) if image is None and source != shown else None
    if seen is not None and want and pixels_sha256(query) != want and pixels_sha256(seen) == want:
        # The redraw reads the image as given otherwise than when the run was made (its detector has changed
        # since); the drawing the model saw is the run folder's query.png, so the rerun is shown that.
        logger.warning("the redraw now reads this run's image as given (given.png) otherwise than the run did: "
                       "rerunning on the drawing the model saw (query.png), with redraw off")
        source, config, query, seen = shown, config.replace(redraw="off"), seen, None
    checked = [(source, query)] + ([(shown, seen)] if seen is not None else [])
    for path, query in checked:
        if want and pixels_sha256(query) != want:
            raise ValueError(f"the normalised image from {path} differs from the one this run analysed "
                             f"(query sha256 {pixels_sha256(query)[:12]}…, recorded {want[:12]}…)")
    # 4. Rerun with the recorded settings
    new = analyze(str(source), config, loaded)
    # 5. Compare
    warnings = check_against_record(record, new.record) if record else [
        "this run has no reproducibility record: only its settings were reused"]
    warnings += repeat_seed_warnings(recorded, config.seed)
    return Reproduction(recorded, new, compare(recorded, new), warnings)


def format_lines(result: Reproduction) -> list[str]:
    """The table `python -m originality reproduce` prints."""
    def cell(distance: float | None, passed: bool | None) -> str:
        if distance is None:
            return f"{'not tried':>14}"
        shown = "nan" if math.isnan(distance) else f"{distance:.4f}"
        return f"{shown:>8} {'pass' if passed else 'fail':>5}"

    lines = [f"{'m':>3}  {'recorded':>14}  {'new':>14}"]
    for c in result.lengths:
        mark = "" if c.matches else "  <- differs"
        lines.append(f"{c.num_tokens:>3}  {cell(c.recorded_distance, c.recorded_passed)}  "
                     f"{cell(c.new_distance, c.new_passed)}{mark}")
    lines.append(f"label: recorded {result.recorded.label}, new {result.new.label} -> "
                 f"{'match' if result.labels_match else 'DIFFERENT'} (largest distance difference "
                 f"{result.max_difference:.2g})")
    return lines
