"""The settings schema of an analysis: typed fields with their help, CLI flag, app label and bounds.

`AnalysisConfig` is the one table of settings. Each field's metadata (`setting(...)`) says
what it means (`help`), how the command line names it (`flag`), how the app's Advanced panel
labels it (`label`; None: not shown there) and its bounds; `cli` builds its options and `app`
its Advanced panel from `settings()`, and `from_dict` is the one strict parser of overrides.
Importing this module is cheap (no torch): the CLI's --help reads it.
"""

from __future__ import annotations

import json
import math
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from .uncertainty import UNDECIDED_AS, PassRule

# Domain preset -> initial word of the learned tokens (Haviv et al. 2024, Sec. 5).
DOMAINS: dict[str, str] = {
    "house": "house",
    "painting": "painting",
    "dog": "dog",
    "cat": "cat",
    "bird": "bird",
    "sport": "sport",
    "person": "person",
}
# Domains whose inversion uses the art templates instead of the object templates.
ART_DOMAINS = frozenset({"painting"})
# Learning-rate schedules of the inversion, named as in diffusers' textual_inversion.py
# (--lr_scheduler); the decaying ones go from learning_rate to 0 over the steps.
LR_SCHEDULES = ("constant", "linear", "cosine")
# Where the tokens of length m start (`AnalysisConfig.token_init`).
TOKEN_INITS = ("domain", "previous", "nested")
# The frozen modules' precisions a user can ask for by name (device.DTYPES maps them, aliases too).
DTYPE_CHOICES = ("float32", "float16", "bfloat16")


def setting(default: Any, help: str, *, flag: str | None = None, label: str | None = None,
            metavar: str | None = None, choices: tuple | None = None, low: float | None = None,
            high: float | None = None, low_open: bool = False, world_default: bool = False,
            public_max: float | None = None) -> Any:
    """A dataclass field with its schema: help, CLI flag (default --field-name), app label
    (None: not in the Advanced panel), metavar, choices, bounds [low, high] ((low, high] with
    low_open), whether None means "the model world's default", and the upper bound of the public
    web app (`public_max`, default `high`; `validate(public=True)`), which the CLI and API do not apply."""
    meta = dict(help=help, flag=flag, label=label, metavar=metavar, choices=choices, low=low, high=high,
                low_open=low_open, world_default=world_default, public_max=public_max if public_max is not None
                else high)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Setting:
    """One field of `AnalysisConfig` as the CLI and the app see it."""

    name: str
    kind: type  # bool, int, float or str (None allowed when `optional`)
    optional: bool
    default: Any
    help: str
    flag: str
    label: str | None
    metavar: str | None
    choices: tuple | None
    low: float | None
    high: float | None
    low_open: bool
    world_default: bool
    public_max: float | None  # the public web app's upper bound (numbers only)

    def parse(self, value: Any) -> Any:
        """`value` (text from a form or the command line, or a JSON value) as this setting's type."""
        where = self.label or self.name
        if self.kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("true", "yes", "on", "1"):
                return True
            if text in ("false", "no", "off", "0"):
                return False
            raise ValueError(f"{where} must be true or false, got {value!r}")
        if self.kind is int:
            number = value.strip() if isinstance(value, str) else value
            try:
                number = float(number)
            except (TypeError, ValueError) as err:
                raise ValueError(f"{where} must be a whole number, got {value!r}") from err
            if isinstance(value, bool) or not number.is_integer():
                raise ValueError(f"{where} must be a whole number, got {value!r}")
            return int(number)
        if self.kind is float:
            try:
                return float(value)
            except (TypeError, ValueError) as err:
                raise ValueError(f"{where} must be a number, got {value!r}") from err
        return str(value).strip()

    def check(self, value: Any, public: bool = False) -> None:
        """Raise ValueError naming the field when `value` is outside its type or bounds (`public`: also
        above `public_max`, the public web app's limit)."""
        if value is None and self.optional:
            return
        if self.kind is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{self.name} must be true or false, got {value!r}")
        elif self.kind is int:
            if not isinstance(value, int) or isinstance(value, bool) or (self.low is not None and value < self.low):
                what = "a positive integer" if self.low == 1 else "a non-negative integer"
                raise ValueError(f"{self.name} must be {what}, got {value!r}")
            if self.high is not None and value > self.high:
                raise ValueError(f"{self.name} must be at most {self.high}, got {value}")
        elif self.kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
            if ok and self.low is not None:
                ok = value > self.low if self.low_open else value >= self.low
            if ok and self.high is not None:
                ok = value <= self.high
            if not ok:
                span = f"in ({self.low:g}, {self.high:g}]" if self.low_open else \
                    f"between {self.low:g} and {self.high:g}"
                raise ValueError(f"{self.name} must be {span}, got {value!r}")
        elif self.choices is not None and value not in self.choices:
            raise ValueError(f"{self.name} must be one of {', '.join(self.choices)}, got {value!r}")
        if public and self.public_max is not None and value > self.public_max:
            bound = int(self.public_max) if self.kind is int else self.public_max
            raise ValueError(f"{self.name} must be at most {bound} on this public server, got {value} "
                             "(the command line and Python API allow more)")


@dataclass(frozen=True)
class AnalysisConfig:
    """Every setting of one progressive analysis. `None` means "the model world's default".

    Build one with `AnalysisConfig.preset("fast", threshold=0.3)`; every field can be
    overridden. Each field's metadata is its schema (see `setting` and `settings()`).
    """

    domain: str | None = setting(
        None, "domain preset (house, painting, dog, cat, bird, sport, person) or any single-token word of the "
              "model's tokenizer; the learned tokens start from it", metavar="WORD", world_default=True)
    max_tokens: int = setting(5, "try m = 1 .. M learned tokens; none passing gives the label M+",
                              metavar="M", label="max tokens (m = 1 … M)", low=1, high=16,
                              public_max=8)
    # Inversion (multi-token textual inversion on the query image)
    steps: int = setting(2000, "inversion optimisation steps per token length", metavar="N",
                         label="inversion steps per m", low=1, public_max=2000)
    batch_size: int = setting(20, "noisy copies of the image per inversion step", metavar="N", label="batch size",
                              low=1, public_max=20)
    learning_rate: float = setting(5e-4, "inversion learning rate", metavar="F", label="learning rate",
                                   low=0, high=1, low_open=True)
    lr_schedule: str = setting(
        "constant", "inversion learning-rate schedule; linear and cosine decay to 0 over the steps",
        label="learning-rate schedule (constant / linear / cosine)", choices=LR_SCHEDULES)
    average_tail: float = setting(
        0.0, "share of each inversion's last steps whose learned tokens are averaged into its result (tail "
             "averaging, Polyak-Ruppert: the average of the iterates of a noisy optimisation sits nearer its optimum, "
             "and nearer another run's, than the last one); 0: the last step's tokens, as the paper", metavar="F",
        low=0, high=0.9)
    # Early stopping (DVAR, see `stopping`): `steps` becomes a cap
    early_stop_every: int = setting(
        0, "evaluate the loss on a fixed batch every N inversion steps and stop a length once it has converged "
           "(DVAR); 0: run all the steps", metavar="N", label="early stopping: check every N steps (0: off)", low=0,
        public_max=2000)
    early_stop_window: int = setting(8, "early stopping: evaluations in the variance window", metavar="N", low=2,
                                     public_max=200)
    early_stop_ratio: float = setting(0.15, "early stopping: converged when the window's variance is below this "
                                            "share of all evaluations' variance (DVAR's eps)", metavar="F",
                                      low=0, high=1, low_open=True)
    early_stop_min_steps: int = setting(0, "early stopping: never stop a length before this many steps (the "
                                           "fixed-batch loss can look flat while the reconstructions still improve)",
                                        metavar="N", low=0, public_max=2000)
    # The reconstruction probe (`stopping.ReconstructionProbe`): a length may stop as soon as it already passes
    probe_every: int = setting(
        0, "every N inversion steps, draw the length's first few reconstructions (probe size) from the tokens so far; "
           "when they pass, draw the rest, and stop the inversion if all pass (they are the length's "
           "reconstructions, judged as without a probe); 0: off", metavar="N",
        label="reconstruction probe: every N steps (0: off)", low=0, public_max=2000)
    probe_size: int = setting(2, "reconstructions in each probe (at most the reconstructions)", metavar="N", low=1,
                              public_max=20)
    decide_early: bool = setting(
        False, "stop drawing a length's reconstructions once their mean distance can no longer reach the threshold "
               "(even if every image still to come were at distance 0): the same decision from fewer images on a "
               "length that fails; its curve point is then the mean of the images drawn",
        label="stop drawing reconstructions once a length has failed")
    token_init: str = setting(
        "domain", "where the tokens of length m come from: 'domain' (an inversion of m tokens from the domain word, "
                  "as the paper), 'previous' (one that starts from length m-1's learned tokens plus one from the domain "
                  "word) or 'nested' (one inversion of max_tokens tokens whose every prefix is trained to stand alone, "
                  "run once at the first length; length m is its first m tokens)",
        label="token start (domain / previous / nested)", choices=TOKEN_INITS)
    warm_steps: int = setting(
        0, "inversion steps of a length that starts from the previous length's tokens (token_init 'previous', "
           "m > 1), which begins near where it ends; 0: `steps` as every other length", metavar="N",
        label="inversion steps of a warm-started length (0: steps)", low=0, public_max=2000)
    # Restarts (`analysis.invert_with_restarts`): an optimisation that failed is no evidence that no m-token
    # description exists, so a length may run several and keep one, chosen on images it is not judged on.
    restarts: int = setting(
        1, "inversions per token length, each from its own seed; the length keeps the one whose selection images "
           "(drawn apart from the reconstructions it is judged on) come closest to the query, and stops restarting "
           "once one's selection images pass; 1: one inversion, as the paper", metavar="R",
        label="restarts per length (keep the best)", low=1, high=8, public_max=3)
    restarts_until: int = setting(
        0, "the longest token length that restarts: longer lengths run one inversion; 0: every length restarts",
        metavar="M", label="restart up to length (0: every length)", low=0, high=100, public_max=8)
    selection_images: int = setting(4, "images drawn from each restart's tokens to choose among the restarts (never "
                                       "judged)", metavar="N", low=1, high=64, public_max=16)
    # Reconstruction: images from `reconstruction_prompt` scored against the query
    num_reconstructions: int = setting(20, "images generated from 'a photo of S*' and scored against the query",
                                       flag="--reconstructions", metavar="N", label="reconstructions", low=1,
                                       public_max=20)
    max_reconstructions: int = setting(
        0, "sequential reconstructions: while the 95% interval of a length's mean distance still contains the "
           "threshold, draw another batch, up to this many in all; 0 (or fewer than `reconstructions`): exactly "
           "`reconstructions`", metavar="N",
        label="most reconstructions while undecided (0: fixed)", low=0, high=1000, public_max=96)
    undecided_as: str = setting(
        "mean", "how a length is called whose 95% interval of the mean distance still holds the threshold at its "
                "last reconstruction: 'mean', the side its mean fell on (the paper's rule); 'pass', the benefit of "
                "the doubt, so that only a length whose interval lies wholly above the threshold fails",
        label="an undecided length is called by (mean / pass)", choices=UNDECIDED_AS)
    doubt_images: int = setting(
        0, "with undecided_as 'pass': the benefit of the doubt is the 95% interval's half width of this many "
           "reconstructions (from the spread of those drawn), a fixed margin above the threshold that a length's mean "
           "must not exceed, and sequential reconstructions draw while their own interval still holds that line; "
           "0: the interval of the reconstructions drawn, a margin that narrows as more are drawn", metavar="N",
        label="the doubt's margin in images (0: the images drawn)", low=0, high=1000, public_max=64)
    num_inference_steps: int = setting(35, "denoising steps per generated image", flag="--inference-steps",
                                       metavar="N", label="inference steps", low=1, public_max=50)
    guidance_scale: float | None = setting(None, "classifier-free guidance when generating", metavar="F",
                                           label="guidance scale", low=0, high=50, world_default=True)
    reconstruction_prompt: str = setting("a photo of {}", "prompt of the reconstructions; {} stands for the "
                                         "learned tokens", metavar="TEXT")
    # Mean distance at or below which a reconstruction counts as good (docs/threshold-and-calibration.md).
    threshold: float | None = setting(None, "mean distance at or below which the reconstructions count as the "
                                      "image", metavar="F", label="distance threshold", low=0, high=2,
                                      world_default=True)
    # The in-distribution check (Stable Diffusion: are the edits "cat in S*" really of a cat?)
    edit_prompt: str = setting("cat in {}", "prompt of the editability check; {} stands for the learned tokens",
                               metavar="TEXT", label="edit prompt ({} = the learned tokens)")
    edit_subject: str = setting("cat", "what the editability check looks for in the edits", metavar="WORD",
                                label="edit subject")
    num_edits: int = setting(8, "images generated for the editability check", flag="--edits", metavar="N", low=1, public_max=16)
    edit_pass_fraction: float = setting(0.5, "the check passes when at least this share of the edits passes",
                                        metavar="F", low=0, high=1)
    # Generate and check the edits even for a length whose reconstruction already failed (its
    # decision cannot change); False skips them, which saves num_edits generations per failed length.
    always_check_edits: bool = setting(False, "generate and check the edits even for a length whose reconstruction "
                                              "already failed (its decision cannot change)")
    world_check: str = setting(
        "on", "refuse images the model world cannot judge (the shapes world: anything but a few red, green or "
              "blue shapes on white) before any work; 'off' lets a researcher score them anyway",
        choices=("on", "off"))
    # The world's own drawing of the query (`World.redraw`; the shapes world: what its detector reads, drawn by its
    # renderer), so that a score does not depend on the program that drew the image; a world without one ignores it.
    # Off here, on in `steady`: on another program's drawings (the category the held-out checks come from) it made a
    # rerun agree more often and kept the groups' order; on the world's own drawings its effects reverse between the
    # splits (docs/settings.md, "The world's own drawing").
    redraw: str = setting(
        "off", "analyse the world's own drawing of what the image shows instead of its pixels (the shapes world: the "
               "shapes its detector reads, each in its colour's and size's standard drawing, in place), so that two "
               "drawings of one layout are one query (for images another program drew: a rerun agrees more often); "
               "'off' analyses the pixels as given",
        choices=("on", "off"), label="redraw the image as the world draws it")
    # Similarity to reference images the user names (`originality.similarity`), beside the score; they change
    # neither the score nor the stop rule.
    copy_line: float | None = setting(
        None, "copy similarity at or above which a reference is flagged as a likely copy; blank: the world's (Stable "
              "Diffusion 0.5, DCR's: 1.88% of its generations scored above it, and above it the copies were obvious; "
              "shapes 1: every element in place)", metavar="F", label="copy line (references)", low=-1, high=1,
        world_default=True)
    max_references: int = setting(8, "most reference images one analysis compares the query with", metavar="N",
                                  low=1, high=256, public_max=8)
    # Reproducibility and batching
    seed: int = setting(0, "random seed of inversion and generation", metavar="N", label="seed", low=0,
                    public_max=2**32 - 1)
    seeds: int = setting(
        1, "inversion seeds: K > 1 reruns the stop rule under K-1 further seeds drawn from the seed, none that a "
           "rerun with another seed uses (each from m = 1 to its own first pass, so up to K times the work); the "
           "score is the median of the K labels, reported with their spread, e.g. '2 in 2 of 3 seeds (5+ in 1)'",
        metavar="K", label="seeds (score: median over K seeds)", low=1, high=10, public_max=3)
    # A close call (`uncertainty.is_clear_call`) is where a rerun most often disagrees, mostly because its inversion
    # finds other tokens; the score asks whether *some* description of that length exists, so a second run that
    # finds a shorter one answers it (`analysis.iter_score`).
    second_opinion: bool = setting(
        False, "a label above 1 that is a close call (its reconstructions gave it less than a 95% chance) gets a "
               "second opinion: the stop rule again under a further seed drawn from the seed (as with seeds), "
               "through the lengths below that label only; the score is the lower of the two labels (with seeds > 1 "
               "the median over the seeds stands instead)",
        label="second opinion on a close call")
    generation_batch_size: int = setting(8, "images per denoising batch when generating", metavar="N", low=1,
                                       public_max=8)
    micro_batch_size: int | None = setting(
        None, "inversion micro-batch: each step's batch runs in chunks of this size with gradient accumulation "
              "(same update, less memory); blank/None: automatic (the whole batch, halved on out-of-memory)",
        metavar="N", low=1, public_max=20)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "AnalysisConfig":
        if name not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {name!r}")
        return replace(PRESETS[name], **overrides)

    def replace(self, **overrides: Any) -> "AnalysisConfig":
        return replace(self, **overrides)

    def early_stopping(self):
        """The early-stopping rule of these settings (`stopping.EarlyStopping`), None when off."""
        if not self.early_stop_every:
            return None
        from .stopping import EarlyStopping  # noqa: PLC0415  (numpy: not for the CLI's --help)

        return EarlyStopping(every=self.early_stop_every, window=self.early_stop_window, ratio=self.early_stop_ratio,
                             min_steps=self.early_stop_min_steps)

    def probe(self, draw, score):
        """The reconstruction probe of these settings (`stopping.ReconstructionProbe`) over `draw` and `score`,
        None when off. Needs the threshold filled in."""
        if not self.probe_every:
            return None
        from .stopping import ReconstructionProbe  # noqa: PLC0415 - start-up: loads torch/numpy only when used

        return ReconstructionProbe(every=self.probe_every, size=min(self.probe_size, self.num_reconstructions),
                                   total=self.num_reconstructions, batch=self.generation_batch_size,
                                   threshold=self.threshold, draw=draw, score=score)

    def pass_rule(self) -> PassRule:
        """The distance half of these settings' pass rule (`uncertainty.PassRule`: threshold, `undecided_as`,
        `doubt_images`). Needs the threshold filled in (the world's default, as `analysis.resolve_config` does)."""
        if self.threshold is None:
            raise ValueError("the pass rule needs a threshold: fill in the world's default first")
        return PassRule(self.threshold, self.undecided_as, self.doubt_images)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def recorded(cls, data: dict[str, Any]) -> dict[str, Any]:
        """A settings dict recorded by an earlier version (a report's or a result file's `config`) with every setting
        added since at its default: a setting is introduced with the default that leaves an analysis as it was, so a
        record without it ran with that value."""
        return {**cls().to_dict(), **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, base: "AnalysisConfig | None" = None,
                  where: str = "settings", public: bool = False) -> "AnalysisConfig":
        """The one strict parser of overrides: `base` (default: the field defaults) with `data` on top.

        Unknown keys are refused with a message naming them and the known ones; values are
        parsed to their field's type (text from a form is fine) and the result is validated
        (`public`: within the public web app's limits too).
        """
        if not isinstance(data, dict):
            raise ValueError(f"{where} must be a JSON object of AnalysisConfig fields, got {data!r}")
        schema = {s.name: s for s in settings()}
        unknown = sorted(set(data) - set(schema))
        if unknown:
            raise ValueError(f"unknown settings {', '.join(map(repr, unknown))} "
                             f"in {where}; known: {', '.join(schema)}")
        parsed = {k: (None if v is None else schema[k].parse(v)) for k, v in data.items()}
        config = replace(base, **parsed) if base is not None else cls(**parsed)
        config.validate(public=public)
        return config

    @classmethod
    def from_json(cls, text: str | None, *, where: str = "settings", public: bool = False) -> dict[str, Any]:
        """Overrides given as a JSON object (blank: none), checked with `from_dict`; returns the dict."""
        if not text or not text.strip():
            return {}
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{where} is not valid JSON ({err}): {text!r}") from err
        cls.from_dict(data, base=PRESETS[DEFAULT_PRESET], where=where, public=public)
        return data

    def starts_warm(self, m: int, previous_rows: int | None) -> bool:
        """Whether length `m` starts from the previous length's tokens: token_init 'previous', m > 1, and the m - 1
        rows learned for length m - 1 at hand (`previous_rows`: how many; None when none were kept)."""
        return self.token_init == "previous" and previous_rows is not None and previous_rows == m - 1 > 0

    def inversion_steps(self, warm: bool) -> int:
        """Inversion steps of one length: `warm_steps` for a warm-started one (`warm`: it starts from the previous
        length's tokens) when set, else `steps`."""
        return self.warm_steps if warm and self.warm_steps else self.steps

    def averaged_steps(self, steps: int) -> int:
        """How many of an inversion's last `steps` steps have their tokens averaged into its result (`average_tail`);
        0: none, the last step's tokens."""
        return round(self.average_tail * steps)

    def restarts_at(self, m: int) -> int:
        """Inversions token length `m` may run: `restarts`, or one past `restarts_until` (when set)."""
        return self.restarts if not self.restarts_until or m <= self.restarts_until else 1

    def most_inversion_steps(self, m: int, previous_rows: int | None = None, nested_runs: int = 0) -> int:
        """The most inversion steps (each at `batch_size`) length `m` can run over all its restarts: the work the
        ZeroGPU reservation, the cost projection and the time left count. `previous_rows`: the rows kept from
        length m - 1 (None: none); `nested_runs`: the nested inversions (token_init 'nested') already run under
        this seed, which later lengths reuse instead of inverting again."""
        if self.token_init == "nested":
            return max(0, self.restarts_at(m) - nested_runs) * self.steps
        return self.restarts_at(m) * self.inversion_steps(self.starts_warm(m, previous_rows))

    def projected_inversion_steps(self, m: int) -> int:
        """`most_inversion_steps` of length `m` in a run that got that far: it starts warm where the settings say
        (the previous length's rows are at hand), and every nested inversion ran at the first length. What the
        time-left estimate and a whole run's ZeroGPU reservation count for lengths not started yet."""
        return self.most_inversion_steps(m, m - 1 if m > 1 else None, self.restarts if m > 1 else 0)

    def validate(self, public: bool = False) -> None:
        """Raise ValueError naming the first bad field and its value (`public`: the public app's limits too)."""
        for s in settings():
            s.check(getattr(self, s.name), public)
        for name in ("reconstruction_prompt", "edit_prompt"):
            value = getattr(self, name)
            if not isinstance(value, str) or value.count("{}") != 1:
                raise ValueError(f"{name} must contain exactly one '{{}}' for the learned tokens, got {value!r}")
        if self.restarts > 1 and self.probe_every:
            raise ValueError("restarts > 1 cannot be combined with the reconstruction probe (probe_every): the probe "
                             "would judge a restart on the images it stopped at; set restarts to 1 or probe_every to 0")
        if self.undecided_as == "pass" and self.decide_early:
            raise ValueError("undecided_as 'pass' cannot be combined with decide_early: decide_early stops drawing "
                             "once the mean cannot reach the threshold, which under 'pass' does not decide the length; "
                             "set decide_early to false or undecided_as to 'mean'")
        if self.doubt_images and self.undecided_as != "pass":
            raise ValueError(f"doubt_images ({self.doubt_images}) sets the benefit of the doubt's margin, which only "
                             "undecided_as 'pass' gives; set undecided_as to 'pass' or doubt_images to 0")
        if self.token_init == "nested" and self.probe_every:
            raise ValueError("token_init 'nested' cannot be combined with the reconstruction probe (probe_every): the "
                             "probe draws one length's images while the inversion learns every length's tokens; set "
                             "probe_every to 0 or token_init to 'domain'")
        if self.domain is not None and (not isinstance(self.domain, str) or not self.domain.strip()
                                        or len(self.domain.split()) != 1):
            raise ValueError(f"domain must be a preset ({', '.join(DOMAINS)}) or one word, got {self.domain!r}")


_SETTINGS: tuple[Setting, ...] = ()


def settings() -> tuple[Setting, ...]:
    """The schema of every `AnalysisConfig` field, in field order."""
    global _SETTINGS
    if not _SETTINGS:
        hints = typing.get_type_hints(AnalysisConfig)
        out = []
        for f in fields(AnalysisConfig):
            args = [a for a in typing.get_args(hints[f.name]) if a is not type(None)]
            kind = args[0] if args else hints[f.name]
            meta = dict(f.metadata)
            meta["flag"] = meta["flag"] or "--" + f.name.replace("_", "-")
            out.append(Setting(name=f.name, kind=kind, optional=bool(args), default=f.default, **meta))
        _SETTINGS = tuple(out)
    return _SETTINGS


def preset_values(name: str, each: str = "{value} with {preset}", sep: str = ", ") -> str:
    """A field's value in each preset, for help texts: '150 with fast, 2000 with paper' (`each` joined by
    `sep`, the default preset first), or just the value when the presets agree."""
    values = {p: getattr(c, name) for p, c in PRESETS.items()}
    if len(set(map(repr, values.values()))) == 1:
        return str(next(iter(values.values())))
    order = [DEFAULT_PRESET] + [p for p in values if p != DEFAULT_PRESET]
    return sep.join(each.format(value=values[p], preset=p) for p in order)


def advanced_settings() -> tuple[Setting, ...]:
    """The settings the app shows under Advanced: those with a label."""
    return tuple(s for s in settings() if s.label)


# The preset the app, the command line, the API and `analyze()` start from when none is named: the one that repeats
# best within 3x fast's work on the reliability benchmark (steady: same label on a rerun 82% on the test split,
# five pairs of runs of 30 drawings, against fast's 27% on one pair; within one length 99% against 63%; 2.2x
# fast's UNet passes; on another program's drawings (matplotlib, four pairs) 82% and 99%; benchmarks/RESULTS.md,
# sessions 13, 17, 21, 23-29, 34, 36).
DEFAULT_PRESET = "steady"

PRESETS: dict[str, AnalysisConfig] = {
    # Haviv et al. 2024: batch 20, lr 5e-4, 2000 steps, 20 reconstructions, 35 inference steps.
    "paper": AnalysisConfig(),
    # About a minute per image on one GPU, and within 60 s on a 2-core CPU for the shapes
    # world: 10x the learning rate buys ~13x fewer steps; fewer images and sampler steps.
    "fast": AnalysisConfig(
        steps=150, batch_size=8, learning_rate=5e-3, num_reconstructions=8, num_inference_steps=20, num_edits=4
    ),
    # fast's judges; 3x fast's learning rate, a cap of 2x fast's steps, and early stopping: each length runs
    # until its fixed-batch loss has converged (DVAR, checked every 5 steps over a window of 6 checks), but not
    # before 80 steps: without that floor DVAR stopped most shapes-world lengths at 35-50 steps, where the m = 1
    # reconstructions were 0.10 further from the query than fast's (same seeds, 30 images); the floor halves
    # that gap without closing it (COMMON 0.32 against fast's 0.26: benchmarks/RESULTS.md, session 10).
    # A failing length stops drawing reconstructions once the decision is known (in batches of 4). See
    # docs/adaptive-inversion.md for what it saves and how often it agrees with the fixed-step presets.
    # fast's judges and steps, built to repeat (issue #27, benchmarks/RESULTS.md): each length keeps the better of
    # two inversions (chosen on 12 selection images apart from the judged ones), starts from the previous length's
    # tokens (a monotone search), draws more reconstructions while its interval still holds the threshold, and
    # calls a length still undecided after them a pass (the benefit of the doubt: by its mean, 42% of the lengths
    # were coin tosses; with the doubt a rerun's label agreed on 63% / 83% of the test / dev drawings against
    # 50% / 60%, for 19-27% fewer UNet passes; session 17). 12 selection images instead of 4 (session 21, by a
    # criterion written before its runs): over 90 pairs of runs on 60 drawings a rerun's label agreed on 72%
    # against 67%, within one length on 91% against 93%, for 22% more UNet passes, and a label that moves is
    # nearly always a coin toss at the line (21 of 25) rather than another inversion. A fixed margin for the doubt
    # (24 images' half width, up to 96 reconstructions; sessions 22-23, by a criterion written before its runs): the
    # plain doubt's line fell towards the threshold as images were drawn; over the two test pairs a rerun's label
    # agreed on 72% against 67%, within one length on 92% against 88%, for 16% more UNet passes (a third test pair,
    # session 24, gave 47%: pooled over three, 63%). A second opinion on a close call (session 24, by a criterion
    # written before its runs): over the same three test pairs a rerun's label agreed on 71% against 63%, within one
    # length on 97% against 90%, for 22% more UNet passes (2.7x fast's). The world's own drawing of the query
    # (`redraw`, session 29, by a criterion written before its last runs): on another program's drawings, over two
    # pairs of runs, a rerun's label agreed on 82% against 63% as given, within one length on 98% against 92%, the
    # expected length ordered the groups at 0.57 against 0.33, for 39% fewer UNet passes; on the world's own
    # drawings, over both splits, 83% against 75% and 0.59 against 0.66 (2.2x fast's passes on the test split).
    "steady": AnalysisConfig(
        steps=150, batch_size=8, learning_rate=5e-3, num_reconstructions=8, num_inference_steps=20, num_edits=4,
        token_init="previous", restarts=2, selection_images=12, max_reconstructions=96, undecided_as="pass",
        doubt_images=24, second_opinion=True, redraw="on",
    ),
    "adaptive": AnalysisConfig(
        steps=300, batch_size=8, learning_rate=1.5e-2, num_reconstructions=8, num_inference_steps=20, num_edits=4,
        early_stop_every=5, early_stop_window=6, early_stop_min_steps=80, decide_early=True, generation_batch_size=4,
    ),
}
