"""How repeatable a label is expected to be: the reliability benchmark's figures for a world and its settings,
and what a report says of them to a reader.

`repeatability.json` (beside this file) holds one entry per benchmarked setting, written by
`python -m originality.experiments.reliability --summary FILE [FILE ...] [--pool] --publish` from a result file
(or, with `--pool`, from replicates of one setting with other seeds): the world, the setting's name
(a preset), the resolved settings it ran with, and its test-retest figures (terms: `../shared/RELIABILITY.md`).
A report finds the entry whose settings match its own on every setting that changes what is measured
(`MEASURED`); other settings get no figure, and the report says so rather than borrow one.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from .config import AnalysisConfig
from .uncertainty import is_clear_call

TABLE_FILE = Path(__file__).with_name("repeatability.json")

# The settings that change what a score measures (the work per length, the judges, the rule); the others (seed,
# domain, batching, references, ...) do not, so a report under other values of them still matches an entry.
MEASURED = (
    "max_tokens", "steps", "batch_size", "learning_rate", "lr_schedule", "average_tail", "early_stop_every",
    "early_stop_window", "early_stop_ratio", "early_stop_min_steps", "probe_every", "probe_size", "decide_early",
    "token_init", "warm_steps", "restarts", "restarts_until", "selection_images", "num_reconstructions",
    "max_reconstructions", "undecided_as", "doubt_images", "num_inference_steps", "guidance_scale",
    "reconstruction_prompt", "threshold", "num_edits", "edit_pass_fraction", "seeds", "second_opinion", "redraw",
)


@dataclass(frozen=True)
class Repeatability:
    """Test-retest figures of one setting in one world: two fully independent runs (other inversion seeds, other
    reconstruction latents) of each of `images` varied drawings.

    `same_label` and `within_one` are shares of the drawings in [0, 1]; `icc` is ICC(2,1) of the expected length
    (the continuous score); `sem` its standard error of measurement in token lengths (a rerun lands within
    about +- 2 SEM of a score); `source` the result file(s) it was computed from. With `replicates` > 1 the
    benchmark ran twice per drawing `replicates` times over (other seeds each time) and the figures pool the
    `images` pairs of runs over its `drawings` drawings. `clear_share` is the share of runs whose label was a clear
    call (`is_clear_call`), `same_label_clear` and `same_label_close` how often a rerun gave the same label after a
    clear and after a close call (shares of runs in [0, 1]; None in entries published before they existed).
    `kappa` is Fleiss' kappa of the labels (agreement beyond chance, 1 = perfect, 0 = chance) and
    `same_label_interval` the 95% bootstrap interval of `same_label` over the drawings (None in older entries)."""

    world: str
    name: str
    images: int
    same_label: float
    within_one: float
    icc: float
    sem: float
    source: str
    drawings: int | None = None
    replicates: int = 1
    clear_share: float | None = None
    same_label_clear: float | None = None
    same_label_close: float | None = None
    kappa: float | None = None
    same_label_interval: tuple[float, float] | None = None

    def sentence(self, label_probability: float | None = None) -> str:
        """The figures in words a non-specialist reads; with `label_probability` (this label's, in [0, 1]) it opens
        with whether this label was a clear or a close call and how often such labels repeated."""
        call = self._call(label_probability)
        return (f"How repeatable: {call}{'Over all labels, a' if call else 'a'} rerun with other seeds gives the same "
                f"label {_how_often(self.same_label)}{self._pinned()}, and a label within one length of it "
                f"{_how_often(self.within_one)}; the expected length of a rerun lands within about "
                f"±{2 * self.sem:.1f} of this one (the reliability benchmark: {self.drawings or self.images} "
                f"drawings of the {self.world} world, each analysed {self._how_many_times()} with the {self.name} "
                "settings).")

    def _pinned(self) -> str:
        """How far the benchmark's drawings pin `same_label` down, in tenths: ' (between 7 and 9 in 10 within the
        benchmark's uncertainty)'; '' where it has no interval or both ends round alike."""
        if self.same_label_interval is None:
            return ""
        low, high = (int(round(10 * v)) for v in self.same_label_interval)
        return "" if low == high else f" (between {low} and {high} in 10 within the benchmark's uncertainty)"

    def _call(self, label_probability: float | None) -> str:
        if label_probability is None or self.same_label_clear is None or self.same_label_close is None:
            return ""
        chance = label_chance(label_probability)
        if is_clear_call(label_probability):
            return (f"this label was a clear call ({chance}), and clear calls came out the same on a rerun "
                    f"{_how_often(self.same_label_clear)}. ")
        return (f"this label was a close call ({chance}), and close calls came out the same on a rerun only "
                f"{_how_often(self.same_label_close)}: read it as a range. ")

    def _how_many_times(self) -> str:
        if self.replicates == 1:
            return "twice"
        return f"{2 * self.replicates} times (twice with each of {self.replicates} sets of seeds)"

    def to_dict(self) -> dict:
        return asdict(self)


def label_chance(probability: float) -> str:
    """What a run's `label_probability` (in [0, 1]) says, in words: 'with the tokens this run learned, its
    reconstructions gave this label an over 99% chance; a rerun learns its own'. The second half is why a clear call
    repeats less often than its chance: the probability covers the reconstructions' sampling, not the inversion's."""
    return (f"with the tokens this run learned, its reconstructions gave this label {chance_in_words(probability)} "
            "chance; a rerun learns its own")


def chance_in_words(probability: float) -> str:
    """'a 71%', 'an over 99%', 'an under 1%': a probability in words that never rounds a near-certainty to 100%."""
    if probability > 0.99:
        return "an over 99%"
    if probability < 0.01:
        return "an under 1%"
    return f"{'an' if f'{probability:.0%}'.startswith(('8', '11', '18')) else 'a'} {probability:.0%}"


def _how_often(share: float) -> str:
    """A share of the benchmark's drawings in words: 'about 6 times in 10'; 'nearly always' where it rounds to 10
    without being all of them (29 of 30 is not 'about 10 in 10'); 'every time' for all of them."""
    if share >= 1:
        return "every time"
    tenths = int(round(10 * share))
    return "nearly always" if tenths >= 10 else f"about {tenths} times in 10"


def load_table(path: str | Path | None = None) -> list[dict]:
    """The published entries of the table at `path` (default `TABLE_FILE`): [{"world", "name", "config",
    "figures": {...}}]; [] when the file is absent."""
    path = Path(path or TABLE_FILE)
    return json.loads(path.read_text())["entries"] if path.is_file() else []


def matches(config: dict, measured: dict) -> bool:
    """Whether `config` (a resolved `AnalysisConfig.to_dict()`) equals `measured` on every `MEASURED` setting (a
    setting missing from either, as in results written before it existed, counts as its default)."""
    config, measured = AnalysisConfig.recorded(config), AnalysisConfig.recorded(measured)
    return all(config[k] == measured[k] for k in MEASURED)


def expected_repeatability(world: str, config: dict, path: str | Path | None = None) -> Repeatability | None:
    """The benchmark's figures for `world` under `config`'s measured settings, or None when that setting has not
    been benchmarked in that world."""
    for entry in load_table(path):
        if entry["world"] == world and matches(config, entry["config"]):
            return Repeatability(world=world, name=entry["name"], **entry["figures"])
    return None


def unmeasured_sentence(world: str) -> str:
    """What a report says when its world and settings have no benchmark figures."""
    return (f"How repeatable: not measured for these settings in the {world} world (the reliability benchmark "
            "has figures for the shapes world's presets); run the analysis again with another --seed, or use "
            "--seeds 3, to see how much the label moves.")


def publish(entry: dict, path: str | Path | None = None) -> list[dict]:
    """Add or replace (same world and name) `entry` in the table at `path` (default `TABLE_FILE`); returns the
    new entries."""
    entries = [e for e in load_table(path) if (e["world"], e["name"]) != (entry["world"], entry["name"])]
    entries.append(entry)
    entries.sort(key=lambda e: (e["world"], e["name"]))
    Path(path or TABLE_FILE).write_text(json.dumps({"entries": entries}, indent=1) + "\n")
    return entries
