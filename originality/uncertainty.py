"""How sure a score is: the statistics of a length's distances (mean, spread, the interval of the mean,
its probability of passing) and the continuous score built from them.

A label is one draw: N reconstructions per length, one inversion seed. A careful reader needs to know how
close the deciding mean was to the threshold; the interval comes from the reconstructions already made.
How the label moves with other inversion seeds is `labels.LabelDistribution`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from .labels import distance_passes

CONFIDENCE = 0.95

# How a length is called whose interval still holds the threshold at its last reconstruction (the `undecided_as`
# setting): "mean", the side its mean fell on (the paper's rule, a coin toss for a mean at the threshold), or "pass",
# the benefit of the doubt: the score asks whether *some* m-token description reproduces the image, and an interval
# that holds the threshold does not show that these tokens do not, so only a length shown to miss fails.
UNDECIDED_AS = ("mean", "pass")
# the "pass" rule in words for people (the printable report, beside "at most the threshold")
BENEFIT_OF_DOUBT = ("or, where the redrawings leave it in doubt, the 95% interval of their average still reaches "
                    "down to it: the benefit of the doubt, so that only a length shown to miss fails")


def mean_and_std(values: list[float]) -> tuple[float, float]:
    """Mean (nan when empty) and sample standard deviation (0 below two values)."""
    n = len(values)
    if n == 0:
        return math.nan, 0.0
    mu = sum(values) / n
    if n < 2:
        return mu, 0.0
    return mu, math.sqrt(sum((v - mu) ** 2 for v in values) / (n - 1))


@dataclass(frozen=True)
class MeanInterval:
    """A two-sided `level` confidence interval of a mean distance (same units and direction: lower = closer)."""

    mean: float
    low: float
    high: float
    level: float = CONFIDENCE
    n: int = 0

    def span(self, digits: int = 2, dash: str = "-") -> str:
        """'95% CI 0.11-0.26' (`digits` decimals; `dash` "–" for typeset pages)."""
        return f"{self.level:.0%} CI {self.low:.{digits}f}{dash}{self.high:.{digits}f}"

    def describe(self, threshold: float | None = None) -> str:
        """'0.18, 95% CI 0.11-0.26, threshold 0.30'."""
        text = f"{self.mean:.2f}, {self.span()}"
        return text + (f", threshold {threshold:.2f}" if threshold is not None else "")

    def to_dict(self) -> dict:
        return {"mean": self.mean, "low": self.low, "high": self.high, "level": self.level, "n": self.n}


def mean_interval(distances: list[float], level: float = CONFIDENCE, bounds: tuple[float, float] | None = None
                  ) -> MeanInterval | None:
    """Student-t interval of the mean of `distances` (None for fewer than two), clipped to `bounds`
    (default: 0 to the larger of 1 and the largest distance; both worlds' distances are >= 0, about <= 1).

    The reconstructions of one length are independent draws given the learned tokens, so
    their mean's standard error is s / sqrt(n). With a handful of reconstructions and a
    bounded distance the t interval is approximate; it says how far the mean could move
    with other reconstruction seeds, not with other inversion seeds (that is `label_distribution`).
    """
    n = len(distances)
    if n < 2:
        return None
    from scipy.stats import t  # noqa: PLC0415  (only when a report is built)

    bounds = bounds or (0.0, max(1.0, max(distances)))
    mean, sd = mean_and_std(distances)
    half = float(t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return MeanInterval(mean, max(bounds[0], mean - half), min(bounds[1], mean + half), level, n)


def undecided(distances: list[float], line: float, level: float = CONFIDENCE) -> bool:
    """Whether the `level` interval of the mean of `distances` (`mean_interval`) still contains `line` (a pass
    rule's `PassRule.line`): the sequential reconstructions (`max_reconstructions`) draw more while it does. True
    below two distances."""
    interval = mean_interval(distances, level)
    return interval is None or interval.low <= line <= interval.high


@dataclass(frozen=True)
class PassRule:
    """The distance half of a length's pass rule (`labels.length_passes` adds the in-distribution check), one value
    for the engine, every shell and the benchmark. Distances: the reconstructions' distances to the query, lower =
    closer, about 0 to 1.

    `threshold`: the mean distance at or below which a length passes. `undecided_as` (`UNDECIDED_AS`): how a length
    is called whose `CONFIDENCE` interval still holds the threshold at its last reconstruction, "mean" (the side its
    mean fell on, the paper's rule) or "pass" (the benefit of the doubt: it fails only when the interval lies wholly
    above the threshold). `doubt_images` N > 0 (with "pass"): the doubt as a margin of fixed width, the half width
    of the interval a mean of N reconstructions with the drawn ones' spread would have, so that more images narrow
    the coin toss around that line without moving it (the interval of the images drawn, N = 0, moves the line down
    towards the threshold as they narrow)."""

    threshold: float
    undecided_as: str = "mean"
    doubt_images: int = 0

    def __post_init__(self) -> None:
        if self.undecided_as not in UNDECIDED_AS:
            raise ValueError(f"undecided_as must be one of {', '.join(UNDECIDED_AS)}, got {self.undecided_as!r}")

    @classmethod
    def recorded(cls, config: Mapping[str, Any], threshold: float) -> PassRule:
        """The rule that recorded settings (`AnalysisConfig.to_dict()`, as report.json and the benchmark keep them)
        name, with the resolved `threshold`; records from before a setting existed count it at its default (the mean
        rule, no fixed margin)."""
        return cls(float(threshold), config.get("undecided_as") or "mean", int(config.get("doubt_images") or 0))

    @property
    def fixed_margin(self) -> bool:
        """Whether the doubt is a margin of fixed width (`doubt_images` with "pass")."""
        return self.undecided_as == "pass" and self.doubt_images > 0

    def line(self, distances: list[float]) -> float:
        """The mean distance the rule compares against: the threshold, or under a fixed margin the threshold plus
        the half width of the `CONFIDENCE` interval of `doubt_images` reconstructions with these distances' spread
        (the threshold itself below two distances). The sequential reconstructions draw while their interval
        still holds this line (`undecided`)."""
        if not self.fixed_margin or len(distances) < 2:
            return self.threshold
        from scipy.stats import t  # noqa: PLC0415  (only when a length is judged)

        sd = mean_and_std(distances)[1]
        n = self.doubt_images
        return self.threshold + float(t.ppf(0.5 + CONFIDENCE / 2, max(n, 2) - 1)) * sd / math.sqrt(n)

    def undecided(self, distances: list[float]) -> bool:
        """Whether the interval of these distances' mean still holds the rule's `line`: the sequential
        reconstructions (`max_reconstructions`) draw more while it does."""
        return undecided(distances, self.line(distances))

    def passes(self, distances: list[float]) -> bool:
        """Whether a length with these distances passes: the mean at or below the threshold
        (`labels.distance_passes`); under "pass" also while the interval of the mean still holds the threshold, or,
        with a fixed margin, the mean at or below `line`. Below two distances there is no interval and every rule
        compares the mean."""
        mean = mean_and_std(distances)[0]
        if distance_passes(mean, self.threshold):
            return True
        if self.undecided_as == "mean":
            return False
        if self.fixed_margin:
            return distance_passes(mean, self.line(distances))
        interval = mean_interval(distances)
        return interval is not None and interval.low <= self.threshold

    def probability(self, distances: list[float]) -> float:
        """How likely these tokens' length passes, in [0, 1], from the Student-t sampling distribution of the mean
        (as `mean_interval`): "mean", the probability that the true mean distance is at or below the threshold;
        "pass", that a rerun's interval would reach down to it (the true mean at or below the threshold plus the
        interval's half width, the rule's effective line), or with a fixed margin that the true mean is at or below
        `line`. 1 or 0 where the distances have no spread (or fewer than two)."""
        n = len(distances)
        if n == 0:
            return 0.0
        mean, sd = mean_and_std(distances)
        if sd == 0.0 or n < 2:
            return 1.0 if distance_passes(mean, self.threshold) else 0.0
        from scipy.stats import t  # noqa: PLC0415  (only when a report is built)

        if self.fixed_margin:
            return float(t.cdf((self.line(distances) - mean) / (sd / math.sqrt(n)), n - 1))
        shift = float(t.ppf(0.5 + CONFIDENCE / 2, n - 1)) if self.undecided_as == "pass" else 0.0
        return float(t.cdf((self.threshold - mean) / (sd / math.sqrt(n)) + shift, n - 1))

    def passed_on_doubt(self, distances: list[float], distance_passed: bool | None) -> bool:
        """Whether a length's distances passed although their mean lies above the threshold (the benefit of the
        doubt): what every shell says beside the mean, so that "0.34 > 0.3" is never shown as a pass unexplained."""
        return bool(distance_passed) and bool(distances) and not distance_passes(mean_and_std(distances)[0],
                                                                                 self.threshold)

    def comparison(self, distances: list[float], distance_passed: bool | None) -> str:
        """How a length's mean distance stands to the threshold, for people: '≤ 0.3', '> 0.3', or, for a length
        that passed on the benefit of the doubt, '> 0.3, but its 95% interval holds it (benefit of the doubt)';
        with a fixed margin, '> 0.3, but within the margin of 24 images' 95% interval (up to 0.41; benefit of the
        doubt)', and for a length that failed by it '> 0.3, beyond the margin of 24 images' 95% interval (up to
        0.41)', since its line is not the threshold."""
        sign = "≤" if distance_passes(mean_and_std(distances)[0], self.threshold) else ">"
        margin = f"the margin of {self.doubt_images} images' {CONFIDENCE:.0%} interval (up to "
        doubt = ""
        if self.passed_on_doubt(distances, distance_passed):
            doubt = (f", but within {margin}{self.line(distances):.2f}; benefit of the doubt)" if self.fixed_margin
                     else f", but its {CONFIDENCE:.0%} interval holds it (benefit of the doubt)")
        elif self.fixed_margin and len(distances) >= 2 and sign == ">" and distance_passed is False:
            doubt = f", beyond {margin}{self.line(distances):.2f})"
        return f"{sign} {self.threshold:g}{doubt}"

    def doubt_in_words(self) -> str:
        """The benefit of the doubt in words for people (the printable report, beside "at most the threshold");
        empty under the mean rule."""
        if self.undecided_as != "pass":
            return ""
        if self.fixed_margin:
            return (f"or its average lies within the margin that the {CONFIDENCE:.0%} interval of {self.doubt_images} "
                    "redrawings' average would have above it: the benefit of the doubt, so that only a length shown "
                    "to miss by more fails")
        return BENEFIT_OF_DOUBT


# A label is a clear call when its run's own lengths gave it at least this probability
# (`label_probability`), a close call below it. Chosen on the dev split (session 24, `steady`, two sets
# of seeds, 120 runs): runs at or above it repeated their label 90% of the time, the others 61% (at 0.9: 86% / 62%;
# at 0.8: 85% / 57%); the test split gives the published figures.
CLEAR_CALL = 0.95


def is_clear_call(label_probability: float) -> bool:
    """Whether a label whose run gave it `label_probability` (in [0, 1]) is a clear call (`CLEAR_CALL`)."""
    return label_probability >= CLEAR_CALL


def length_probabilities(results, rule: PassRule, max_tokens: int) -> list[float]:
    """Each length's probability of passing, m = 1 .. max_tokens, in [0, 1]: `PassRule.probability` of its distances,
    0 when its in-distribution check failed; 1 for a length after the last one tried (a run stops at its first
    pass). `results`: `report.TokenResult`s in order (anything with `num_tokens`, `distances`, `check_passed` and
    `check_scores`)."""
    out = []
    for m in range(1, max_tokens + 1):
        r = next((r for r in results if r.num_tokens == m), None)
        if r is None:
            out.append(1.0)
        else:
            out.append(rule.probability(r.distances) if r.check_passed or not r.check_scores else 0.0)
    return out


def expected_first_pass(probabilities: list[float]) -> float:
    """The expected first passing length, in [1, M + 1], of a run whose lengths m = 1 .. M pass with
    `probabilities` (each in [0, 1]); no length passing counts as M + 1."""
    expected, none_yet = 0.0, 1.0
    for m, p in enumerate(probabilities, start=1):
        expected += m * none_yet * p
        none_yet *= 1.0 - p
    return expected + (len(probabilities) + 1) * none_yet


def either_run_passes(first: list[float], second: Mapping[int, float], second_score: int | None) -> list[float]:
    """Each length's probability that a run or its second opinion passes it, in [0, 1]: `first`, the run's
    `length_probabilities` (m = 1 .. M); `second`, the second opinion's probability of each length it tried
    (`report.SeedRun.pass_probabilities`), and `second_score`, its first passing length (None: none). The two runs
    are independent draws (other seeds), so a length fails only where both fail; a length the second opinion did
    not try counts as passing after its pass (it stopped there, as `length_probabilities` counts a run) and as no
    evidence before. The first passing length of the result is the lower of the two labels (`labels.lower_score`)."""
    out = []
    for m, p in enumerate(first, start=1):
        q = second.get(m, 1.0 if second_score is not None and m > second_score else 0.0)
        out.append(1.0 - (1.0 - p) * (1.0 - q))
    return out


def expected_length(results, rule: PassRule, max_tokens: int, second_opinion=None) -> float:
    """The continuous score: the expected first passing length, in [1, max_tokens + 1] ("M+" counts as M + 1),
    given each length's probability of passing (`length_probabilities`); with a `second_opinion` (a
    `report.SeedRun` with `pass_probabilities`), of a length that either run passes (`either_run_passes`), as the
    label is the lower of the two. Lower = more familiar, as the label; unlike the label it moves little when a
    deciding mean sits near the threshold."""
    probabilities = length_probabilities(results, rule, max_tokens)
    if second_opinion is not None and second_opinion.pass_probabilities is not None:
        probabilities = either_run_passes(probabilities, second_opinion.pass_probabilities, second_opinion.score)
    return expected_first_pass(probabilities)


def label_probability(results, rule: PassRule, max_tokens: int, score: int | None) -> float:
    """How likely a run's own lengths were to give its label, in [0, 1]: its first passing length's probability of
    passing times every earlier length's of failing; for "M+" (`score` None), every length's of failing
    (`length_probabilities`). Near 1: every length was decided far from its line, a clear call; lower: a length
    was decided near it, a close call, which a rerun repeats less often (`CLEAR_CALL`)."""
    probabilities = length_probabilities(results, rule, max_tokens)
    last = max_tokens if score is None else score
    out = 1.0
    for m, p in enumerate(probabilities[:last], start=1):
        out *= p if m == score else 1.0 - p
    return out
