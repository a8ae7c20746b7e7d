"""Typed results of an analysis and their folder format.

A report folder holds:
    report.json                      settings, score, per-length numbers
    query.png                        the image the model was shown
    given.png                        the image as given, when the model was shown the world's drawing of it (redraw)
    m{m}/learned_embeds.safetensors  diffusers textual-inversion format, one per length
    m{m}/reconstruction_{i}.png
    m{m}/edit_{i}.png
    references/reference_{i}.png     the reference images the query was compared with (only when given)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from .gpu_costs import results_passes
from .labels import LabelDistribution, first_pass, is_familiar, label_for, length_passes
from .similarity import Similarity
from .repeatability import Repeatability, expected_repeatability, label_chance, unmeasured_sentence
from .uncertainty import (MeanInterval, PassRule, expected_first_pass, expected_length, label_probability,
                          length_probabilities, mean_and_std, mean_interval)

# 2: the in-distribution check's fields are check_* (were edit_*), reconstruction_passed is
# distance_passed, and check_scored says which images the check scored. `Report.load` reads both.
FORMAT_VERSION = 2
# What the in-distribution check scored: the edits ("cat in S*", Stable Diffusion) or the
# reconstructions themselves (the shapes world's layout check).
# Within format 2, "similarity" (copy and style similarity to reference images) was added as an optional key:
# absent when no reference was given, so older reports and older readers are unaffected.
SCORED_EDITS = "edits"
SCORED_RECONSTRUCTIONS = "reconstructions"


def save_embeddings(path: str | os.PathLike, token: str, embeddings: torch.Tensor) -> None:
    """Write `{token: (m, dim)}` in the diffusers textual-inversion format."""
    save_file({token: embeddings.detach().float().cpu().contiguous()}, str(path))


@dataclass
class TokenResult:
    """Everything measured for one token length m."""

    num_tokens: int
    token: str  # placeholder base token, e.g. "<s3>"; the prompt text is token, token_1, ...
    embeddings: torch.Tensor  # (m, dim) float32
    losses: list[float]  # inversion loss per step
    reconstructions: list[Image.Image]
    distances: list[float]  # one per reconstruction; lower = closer to the query
    edits: list[Image.Image]  # "cat in S*" images; empty where the check scores the reconstructions
    check_scores: list[float]  # per checked image in [0, 1] (CLIP: P(subject present)); see check_scored
    distance_passed: bool  # by the config's `uncertainty.PassRule`
    check_passed: bool  # the in-distribution check
    check_detail: str = ""
    check_scored: str = SCORED_EDITS  # which images check_scores belong to: SCORED_EDITS or SCORED_RECONSTRUCTIONS
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    inversion_seed: int | None = None  # analysis.inversion_seed(config seed, m, query)
    steps_used: int | None = None  # inversion steps run (<= config steps; fewer when early stopping stopped it)
    stop_reason: str = ""  # why the inversion stopped: stopping.STOP_STEP_CAP or STOP_CONVERGED ("": not recorded)
    warm_start: bool = False  # the first m-1 tokens started from length m-1's (token_init "previous")
    # Reconstruction probes drawn during the inversion (`probe_every`): (step, mean distance, images drawn) each
    probes: list[tuple[int, float, int]] = field(default_factory=list)
    # Every inversion of this length (`restarts`), in order: {"restart", "seed", "steps", "stop_reason",
    # "selection_distances"}; the kept one is `kept_restart`. Empty with one inversion (and in older reports).
    restarts: list[dict] = field(default_factory=list)
    kept_restart: int = 0

    @property
    def passed(self) -> bool:
        return length_passes(self.distance_passed, self.check_passed)

    @property
    def mean_distance(self) -> float:
        return mean_and_std(self.distances)[0]

    @property
    def std_distance(self) -> float:
        return mean_and_std(self.distances)[1]

    def distance_interval(self) -> MeanInterval | None:
        """The interval of the mean distance over the reconstructions (None for fewer than two)."""
        return mean_interval(self.distances)

    @property
    def prompt_tokens(self) -> str:
        return " ".join([self.token] + [f"{self.token}_{i}" for i in range(1, self.num_tokens)])

    def summary(self) -> dict[str, Any]:
        return {
            "num_tokens": self.num_tokens,
            "token": self.token,
            "mean_distance": self.mean_distance,
            "std_distance": self.std_distance,
            "distance_ci": (ci.to_dict() if (ci := self.distance_interval()) else None),
            "distances": self.distances,
            "check_scores": self.check_scores,
            "check_scored": self.check_scored,
            "distance_passed": self.distance_passed,
            "check_passed": self.check_passed,
            "check_detail": self.check_detail,
            "passed": self.passed,
            "final_loss": self.losses[-1] if self.losses else None,
            "losses": self.losses,
            "timings": self.timings,
            "inversion_seed": self.inversion_seed,
            "steps_used": self.steps_used,
            "stop_reason": self.stop_reason,
            "warm_start": self.warm_start,
            "probes": [list(p) for p in self.probes],
            "restarts": self.restarts,
            "kept_restart": self.kept_restart,
        }


def drawn_note(drawn: int, planned: int | None) -> str:
    """'decided after 3 of 8 reconstructions' when a length stopped drawing early (`decide_early`), else ''."""
    return f"decided after {drawn} of {planned} reconstructions" if planned and drawn < planned else ""


@dataclass(frozen=True)
class SeedRun:
    """One inversion seed's run of the stop rule (the `seeds` setting): its score (None: no length
    passed), the mean distance of each length it tried and its expected length
    (`uncertainty.expected_length`; None in reports written before it existed)."""

    seed: int
    score: int | None
    mean_distances: dict[int, float]
    expected_length: float | None = None
    passes: int | None = None  # its UNet sample-passes (`gpu_costs.results_passes`); None in older reports
    # each length it tried: its probability of passing (`uncertainty.length_probabilities`); None in older reports
    pass_probabilities: dict[int, float] | None = None

    @classmethod
    def of(cls, seed: int, results: list["TokenResult"], config) -> "SeedRun":
        """The run of `results` under `config` (an `AnalysisConfig`: its pass rule and max_tokens)."""
        rule = config.pass_rule()
        probabilities = length_probabilities(results, rule, config.max_tokens)
        return cls(seed, first_pass(results), {r.num_tokens: r.mean_distance for r in results},
                   expected_first_pass(probabilities), results_passes(results, config.to_dict()),
                   {r.num_tokens: probabilities[r.num_tokens - 1] for r in results})

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "score": self.score,
                "mean_distances": {str(m): d for m, d in self.mean_distances.items()},
                "expected_length": self.expected_length, "passes": self.passes,
                "pass_probabilities": (None if self.pass_probabilities is None else
                                       {str(m): p for m, p in self.pass_probabilities.items()})}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SeedRun":
        probabilities = d.get("pass_probabilities")
        return cls(d["seed"], d["score"], {int(m): v for m, v in d.get("mean_distances", {}).items()},
                   d.get("expected_length"), d.get("passes"),
                   None if probabilities is None else {int(m): p for m, p in probabilities.items()})


# The note of a query that `redraw` "on" leaves as given: nothing in it could be read (`analysis.redrawn`).
NOTHING_TO_REDRAW = "The image was analysed as given: nothing in it could be read to redraw."


@dataclass
class Report:
    """The outcome of a progressive analysis of one image.

    `score` is the first token length whose reconstruction and edit both passed, or
    None when none within `max_tokens` did (shown as "5+" by `label`). A lower score
    means the image is more familiar to the model; a higher one, more original. With the
    `seeds` setting (K > 1 `seed_runs`) it is the median of the K seeds' scores
    (`labels.median_score`), and `results` are still the first seed's lengths
    (`seeds_note` says so when the two differ).
    """

    query: Image.Image
    results: list[TokenResult]
    score: int | None
    max_tokens: int
    threshold: float
    config: dict[str, Any]
    model: dict[str, Any]  # name, world, distance and check names
    created: str = ""
    total_seconds: float = 0.0
    record: dict[str, Any] = field(default_factory=dict)  # reproducibility record (originality.record)
    notes: list[str] = field(default_factory=list)  # what the engine decided for the user, in sentences
    domain_pick: dict[str, Any] | None = None  # automatic domain pick: {"domain", "probabilities"}
    threshold_source: str = ""  # where `threshold` came from: setting, world default, calibration
    seed_runs: list[SeedRun] = field(default_factory=list)  # with the `seeds` setting: every seed's run, this one first
    # with the `second_opinion` setting, where this run's label was a close call: the lengths below it under another
    # seed (its score None: none of them passed); the score is the lower of the two labels
    second_opinion: SeedRun | None = None
    similarity: Similarity | None = None  # copy and style similarity to reference images (None: none given)
    # the image as given, when the model was shown another drawing of it (`redraw`); None: `query` is the image given
    given_image: Image.Image | None = None

    @property
    def label(self) -> str:
        return label_for(self.score, self.max_tokens)

    @property
    def query_caption(self) -> str:
        """What the query beside the images is called: the user's image, or the world's drawing of it (`redraw`;
        under redraw "on" an image with nothing to read stays as given, and its notes say so)."""
        redrawn = self.config.get("redraw") == "on" and NOTHING_TO_REDRAW not in self.notes
        return ("your image, as the world draws it" if redrawn
                else "your image's centre square" if self.upload_cropped else "your image")

    @property
    def given_caption(self) -> str:
        """What `given_image` is called: the upload, or its centre square, which is all an analysis sees of a
        non-square upload (`images.centre_square`)."""
        return "your image's centre square, as given" if self.upload_cropped else "your image, as given"

    @property
    def upload_cropped(self) -> bool:
        """Whether the upload was not square, so only its centre square was analysed (the record keeps the upload's
        size since 2026-12-07; False for older records)."""
        upload = self.record.get("input") or {}
        return bool(upload.get("width")) and upload.get("width") != upload.get("height")

    @property
    def pass_rule(self) -> PassRule:
        """The distance half of the pass rule this run was judged by (its threshold and recorded settings)."""
        return PassRule.recorded(self.config, self.threshold)

    @property
    def expected_length(self) -> float:
        """The continuous score beside the label: the expected first passing length, in [1, max_tokens + 1]
        ("M+" counts as M + 1), from each length's probability of passing (`uncertainty.expected_length`);
        with a second opinion, of a length that either run passes, as the label is the lower of the two (reports
        written before `SeedRun.pass_probabilities`: the first run's); with the `seeds` setting, its mean over the
        seeds. Lower = more familiar, as the label; it moves less than the label when a deciding mean sits near
        the threshold."""
        per_seed = [r.expected_length for r in self.seed_runs]
        if len(per_seed) > 1 and None not in per_seed:
            return sum(per_seed) / len(per_seed)
        return expected_length(self.results, self.pass_rule, self.max_tokens, self.second_opinion)

    def expected_length_sentence(self) -> str:
        """The continuous score in words for people (the page, the share page and the printable report)."""
        interval = self.expected_length_interval()
        rerun = f" (a rerun is expected between {interval[0]:.1f} and {interval[1]:.1f})" if interval else ""
        opinion = self.second_opinion
        either = (" (a length passes where this run or its second opinion passes it)"
                  if opinion is not None and opinion.pass_probabilities is not None else "")
        return (f"Expected length {self.expected_length:.2f}{rerun} on a scale of 1 to {self.max_tokens + 1} "
                f"({self.max_tokens + 1} = no length up to {self.max_tokens} passes): the first passing length "
                f"that each length's chance of passing predicts{either}, so a length that passed or failed by a hair "
                "counts as the near coin toss it was. Lower = more familiar.")

    @property
    def repeatability(self) -> Repeatability | None:
        """The reliability benchmark's test-retest figures for this report's world and settings
        (`repeatability.expected_repeatability`); None when they have not been benchmarked."""
        return expected_repeatability(self.model.get("world", ""), self.config)

    def expected_length_interval(self) -> tuple[float, float] | None:
        """Where a rerun's expected length is expected to land: this one +- 2 SEM of the benchmark
        (`repeatability`), within [1, max_tokens + 1]; None when the settings have not been benchmarked."""
        figures = self.repeatability
        if figures is None or figures.sem is None:
            return None
        return (max(1.0, self.expected_length - 2 * figures.sem),
                min(self.max_tokens + 1.0, self.expected_length + 2 * figures.sem))

    @property
    def label_probability(self) -> float | None:
        """How likely this run's own lengths were to give its label, in [0, 1] (`uncertainty.label_probability`):
        near 1 a clear call, lower a close call, which a rerun repeats less often (`uncertainty.CLEAR_CALL`).
        None with the `seeds` setting, whose label is the median of several runs."""
        if len(self.seed_runs) > 1:
            return None
        return label_probability(self.results, self.pass_rule, self.max_tokens, self.score)

    def rerun_sentence(self) -> str:
        """How repeatable this label is expected to be, in words for people (every shell shows it): the benchmark's
        figures for these settings, and whether this label was a clear or a close call (and what a second opinion
        on a close call found)."""
        figures = self.repeatability
        if self.second_opinion is None:
            return (figures.sentence(self.label_probability) if figures
                    else unmeasured_sentence(self.model.get("world", "this")))
        rest = figures.sentence() if figures else unmeasured_sentence(self.model.get("world", "this"))
        return f"{self.second_opinion_sentence()} {rest}"

    def second_opinion_sentence(self) -> str:
        """What the second opinion on a close call found, in words for people ('' without one)."""
        second = self.second_opinion
        if second is None:
            return ""
        first = first_pass(self.results)
        tried = self.max_tokens if first is None else first - 1
        asked = (f"this run's label ({label_for(first, self.max_tokens)}) was a close call "
                 f"({label_chance(self.label_probability or 0.0)}), so a second run with seed {second.seed} "
                 f"tried the shorter lengths (1 to {tried})")
        if second.score is None:
            return f"Second opinion: {asked} and found none that passes, so the label stands."
        distance = second.mean_distances.get(second.score)
        at = f" (mean distance {distance:.3f})" if distance is not None else ""
        return (f"Second opinion: {asked} and found one at {second.score} token{'s' if second.score > 1 else ''}{at}, "
                f"so the score is {self.label}: the score asks whether some description that short exists.")

    @property
    def label_distribution(self) -> LabelDistribution | None:
        """The label over the inversion seeds, or None for one seed."""
        if len(self.seed_runs) < 2:
            return None
        return LabelDistribution(tuple(label_for(r.score, self.max_tokens) for r in self.seed_runs),
                                 tuple(r.seed for r in self.seed_runs))

    def seeds_note(self) -> str:
        """With the seeds setting, when the score (the median over the seeds) is not what the first seed's
        lengths (the report's rows) gave: a sentence saying so; else ''."""
        if len(self.seed_runs) < 2 or self.seed_runs[0].score == self.score:
            return ""
        first = self.seed_runs[0]
        return f"The lengths shown are seed {first.seed}'s run, which gave {label_for(first.score, self.max_tokens)}."

    @property
    def verdict(self) -> str:
        """One plain-language line for people."""
        if self.score is None:
            return (f"Original: no description of up to {self.max_tokens} learned tokens reproduces it "
                    f"({self.label}).")
        if is_familiar(self.score):
            return "Familiar: one learned token is enough for the model to reproduce it (1)."
        return f"Original: the model needs {self.score} learned tokens to reproduce it ({self.label})."

    def summary(self) -> dict[str, Any]:
        out = {
            "format_version": FORMAT_VERSION,
            "score": self.score,
            "label": self.label,
            "verdict": self.verdict,
            "expected_length": self.expected_length,
            "expected_length_interval": self.expected_length_interval(),
            "label_probability": self.label_probability,
            "repeatability": (figures.to_dict() if (figures := self.repeatability) else None),
            "max_tokens": self.max_tokens,
            "threshold": self.threshold,
            "config": self.config,
            "model": self.model,
            "created": self.created,
            "total_seconds": self.total_seconds,
            "notes": self.notes,
            "domain_pick": self.domain_pick,
            "threshold_source": self.threshold_source,
            "label_distribution": self.label_distribution.to_dict() if self.label_distribution else None,
            "seed_runs": [r.to_dict() for r in self.seed_runs],
            "second_opinion": self.second_opinion.to_dict() if self.second_opinion else None,
            "results": [r.summary() for r in self.results],
            "record": self.record,
        }
        if self.similarity is not None:
            out["similarity"] = self.similarity.to_dict()
        return out

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the report folder atomically (a temporary sibling renamed into place)."""
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            self.query.save(tmp / "query.png")
            if self.given_image is not None:
                self.given_image.save(tmp / "given.png")
            for r in self.results:
                sub = tmp / f"m{r.num_tokens}"
                sub.mkdir()
                save_embeddings(sub / "learned_embeds.safetensors", r.token, r.embeddings)
                for i, im in enumerate(r.reconstructions):
                    im.save(sub / f"reconstruction_{i}.png")
                for i, im in enumerate(r.edits):
                    im.save(sub / f"edit_{i}.png")
            if self.similarity is not None and self.similarity.images:
                (tmp / "references").mkdir()
                for i, im in enumerate(self.similarity.images):
                    im.save(tmp / "references" / f"reference_{i}.png")
            (tmp / "report.json").write_text(json.dumps(self.summary(), indent=2) + "\n")
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "Report":
        folder = Path(folder)
        meta_path = folder / "report.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"no report.json in {folder}")
        meta = json.loads(meta_path.read_text())
        version = meta.get("format_version", 1)
        if version > FORMAT_VERSION:
            raise ValueError(f"{folder} holds a report of format {version}; this version of originality reads "
                             f"formats up to {FORMAT_VERSION} (update it)")
        results = [_load_result(folder / f"m{r['num_tokens']}", _upgrade(r, version)) for r in meta["results"]]
        return cls(
            query=_open(folder / "query.png"),
            results=results,
            score=meta["score"],
            max_tokens=meta["max_tokens"],
            threshold=meta["threshold"],
            config=meta["config"],
            model=meta["model"],
            created=meta.get("created", ""),
            total_seconds=meta.get("total_seconds", 0.0),
            record=meta.get("record") or {},  # absent in reports written before the record existed
            notes=meta.get("notes", []),
            domain_pick=meta.get("domain_pick"),
            threshold_source=meta.get("threshold_source", ""),
            seed_runs=[SeedRun.from_dict(r) for r in meta.get("seed_runs", [])],  # absent before the seeds setting
            second_opinion=SeedRun.from_dict(meta["second_opinion"]) if meta.get("second_opinion") else None,
            similarity=_load_similarity(folder, meta.get("similarity")),
            given_image=_open(folder / "given.png") if (folder / "given.png").is_file() else None,
        )


def _load_similarity(folder: Path, data: dict[str, Any] | None) -> Similarity | None:
    """The similarity of a report folder (None in reports without references)."""
    if not data:
        return None
    images = sorted((folder / "references").glob("reference_*.png"), key=lambda p: int(p.stem.split("_")[1]))
    return Similarity.from_dict(data, [_open(p) for p in images])


def _upgrade(r: dict[str, Any], version: int) -> dict[str, Any]:
    """A result's summary in today's format (format 1 named the check's fields edit_*)."""
    if version >= 2:
        return r
    r = dict(r)
    r["check_scores"] = r.pop("edit_scores")
    r["distance_passed"] = r.pop("reconstruction_passed")
    r["check_passed"] = r.pop("edit_passed")
    r["check_detail"] = r.pop("edit_detail", "")
    # Format 1 did not say: its checks scored the edits when there were any, else the reconstructions.
    r["check_scored"] = None
    return r


def _load_result(sub: Path, r: dict[str, Any]) -> TokenResult:
    edits = _load_images(sub, "edit", len(list(sub.glob("edit_*.png"))))
    scored = r["check_scored"] or (SCORED_EDITS if edits else SCORED_RECONSTRUCTIONS)
    return TokenResult(
        num_tokens=r["num_tokens"],
        token=r["token"],
        embeddings=load_file(str(sub / "learned_embeds.safetensors"))[r["token"]],
        losses=r["losses"],
        reconstructions=_load_images(sub, "reconstruction", len(r["distances"])),
        distances=r["distances"],
        edits=edits,
        check_scores=r["check_scores"],
        distance_passed=r["distance_passed"],
        check_passed=r["check_passed"],
        check_detail=r.get("check_detail", ""),
        check_scored=scored,
        timings=r.get("timings", {}),
        inversion_seed=r.get("inversion_seed"),
        steps_used=r.get("steps_used", len(r["losses"]) or None),  # older reports: one loss per step
        stop_reason=r.get("stop_reason", ""),
        warm_start=r.get("warm_start", False),
        probes=[tuple(p) for p in r.get("probes", [])],
        restarts=list(r.get("restarts", [])), kept_restart=r.get("kept_restart", 0),
    )


def _open(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def _load_images(folder: Path, stem: str, n: int) -> list[Image.Image]:
    return [_open(folder / f"{stem}_{i}.png") for i in range(n)]
