"""How sure a score is: the statistics of a length's distances (mean, spread, the interval of the mean,
its probability of passing) and the continuous score built from them.

A label is one draw: N reconstructions per length, one inversion seed. A careful reader needs to know how
close the deciding mean was to the threshold; the interval comes from the reconstructions already made.
How the label moves with other inversion seeds is `labels.LabelDistribution`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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


def undecided(distances: list[float], threshold: float, level: float = CONFIDENCE) -> bool:
    """Whether the `level` interval of the mean of `distances` (`mean_interval`) still contains `threshold`: the
    sequential reconstructions' rule (`max_reconstructions`) draws more while it does. True below two distances."""
    interval = mean_interval(distances, level)
    return interval is None or interval.low <= threshold <= interval.high


def doubt_line(distances: list[float], threshold: float, doubt_images: int) -> float:
    """The mean distance a length must not exceed under the benefit of the doubt with a fixed margin
    (`doubt_images` > 0): `threshold` plus the half width of the `CONFIDENCE` interval that a mean of
    `doubt_images` reconstructions with these distances' spread would have. With `doubt_images` 0, or fewer than
    two distances, `threshold` itself. The sequential reconstructions draw while their own interval holds this
    line (`decision_line`), so more images narrow the coin toss around it without moving it; the interval of the
    images drawn (`doubt_images` 0) moves it down towards the threshold as they narrow."""
    if doubt_images <= 0 or len(distances) < 2:
        return threshold
    from scipy.stats import t  # noqa: PLC0415  (only when a length is judged)

    sd = mean_and_std(distances)[1]
    return threshold + float(t.ppf(0.5 + CONFIDENCE / 2, max(doubt_images, 2) - 1)) * sd / math.sqrt(doubt_images)


def decision_line(distances: list[float], threshold: float, undecided_as: str = "mean", doubt_images: int = 0) -> float:
    """What the sequential reconstructions test their interval against (`undecided`): the fixed-margin line of
    `doubt_line` under "pass" with `doubt_images`, else the threshold."""
    return doubt_line(distances, threshold, doubt_images) if undecided_as == "pass" else threshold


def distances_pass(distances: list[float], threshold: float, undecided_as: str = "mean", doubt_images: int = 0) -> bool:
    """The distance half of a length's pass rule (`labels.length_passes` adds the in-distribution check), over the
    reconstructions' distances (lower = closer). "mean": their mean is at or below `threshold`
    (`labels.distance_passes`); "pass": unless the `CONFIDENCE` interval of the mean lies wholly above it, i.e. a
    length passes when its mean does or when the interval still holds the threshold (`UNDECIDED_AS`). Below two
    distances there is no interval and both rules compare the mean. `doubt_images` > 0 (with "pass"): the mean at or
    below `doubt_line`, a margin of fixed width above the threshold."""
    if undecided_as not in UNDECIDED_AS:
        raise ValueError(f"undecided_as must be one of {', '.join(UNDECIDED_AS)}, got {undecided_as!r}")
    mean = mean_and_std(distances)[0]
    if distance_passes(mean, threshold):
        return True
    if undecided_as == "mean":
        return False
    if doubt_images > 0:
        return distance_passes(mean, doubt_line(distances, threshold, doubt_images))
    interval = mean_interval(distances)
    return interval is not None and interval.low <= threshold


def passed_on_doubt(distances: list[float], threshold: float, distance_passed: bool | None) -> bool:
    """Whether a length's distances passed although their mean lies above `threshold` (the "pass" rule's benefit
    of the doubt): what every shell says beside the mean, so that "0.34 > 0.3" is never shown as a pass unexplained."""
    return bool(distance_passed) and bool(distances) and not distance_passes(mean_and_std(distances)[0], threshold)


def threshold_comparison(distances: list[float], threshold: float, distance_passed: bool | None,
                         doubt_images: int = 0) -> str:
    """How a length's mean distance stands to the threshold, for people: '≤ 0.3', '> 0.3', or, for a length that
    passed on the benefit of the doubt (`passed_on_doubt`), '> 0.3, but its 95% interval holds it (benefit of the
    doubt)'; with a fixed margin (`doubt_images`), '> 0.3, but within the margin of 24 images' 95% interval (up to
    0.41; benefit of the doubt)'."""
    sign = "≤" if distance_passes(mean_and_std(distances)[0], threshold) else ">"
    doubt = ""
    if passed_on_doubt(distances, threshold, distance_passed):
        doubt = (f", but within the margin of {doubt_images} images' {CONFIDENCE:.0%} interval (up to "
                 f"{doubt_line(distances, threshold, doubt_images):.2f}; benefit of the doubt)" if doubt_images > 0
                 else f", but its {CONFIDENCE:.0%} interval holds it (benefit of the doubt)")
    return f"{sign} {threshold:g}{doubt}"


def benefit_of_doubt(doubt_images: int = 0) -> str:
    """The "pass" rule in words for people (the printable report, beside "at most the threshold"), with the
    plain doubt or a fixed margin of `doubt_images` images."""
    if doubt_images > 0:
        return (f"or its average lies within the margin that the {CONFIDENCE:.0%} interval of {doubt_images} "
                "redrawings' average would have above it: the benefit of the doubt, so that only a length shown to "
                "miss by more fails")
    return BENEFIT_OF_DOUBT


def pass_probability(distances: list[float], threshold: float, undecided_as: str = "mean", doubt_images: int = 0
                     ) -> float:
    """How likely these tokens' length passes, in [0, 1], from the Student-t sampling distribution of the mean
    (as `mean_interval`): "mean", the probability that the true mean distance is at or below `threshold`; "pass",
    that a rerun's interval would reach down to it (the true mean is at or below `threshold` plus the interval's
    half width, the rule's effective line), or with `doubt_images` that the true mean is at or below `doubt_line`.
    1 or 0 where the distances have no spread (or fewer than two)."""
    n = len(distances)
    if n == 0:
        return 0.0
    mean, sd = mean_and_std(distances)
    if sd == 0.0 or n < 2:
        return 1.0 if distance_passes(mean, threshold) else 0.0
    from scipy.stats import t  # noqa: PLC0415  (only when a report is built)

    if undecided_as == "pass" and doubt_images > 0:
        return float(t.cdf((doubt_line(distances, threshold, doubt_images) - mean) / (sd / math.sqrt(n)), n - 1))
    shift = float(t.ppf(0.5 + CONFIDENCE / 2, n - 1)) if undecided_as == "pass" else 0.0
    return float(t.cdf((threshold - mean) / (sd / math.sqrt(n)) + shift, n - 1))


def expected_length(results, threshold: float, max_tokens: int, undecided_as: str = "mean", doubt_images: int = 0
                    ) -> float:
    """The continuous score: the expected first passing length, in [1, max_tokens + 1] ("M+" counts as M + 1),
    given each length's probability of passing (`pass_probability` of its distances under the `undecided_as`
    rule and `doubt_images`, times 0 when its in-distribution check failed). Lengths after the last one tried (a
    run stops at its first pass) count as passing. Lower = more familiar, as the label; unlike the label it moves
    little when a deciding mean sits near the threshold. `results`: `report.TokenResult`s in order (anything with
    `num_tokens`, `distances`, `check_passed` and `check_scores`)."""
    expected, none_yet = 0.0, 1.0
    for m in range(1, max_tokens + 1):
        r = next((r for r in results if r.num_tokens == m), None)
        if r is None:
            p = 1.0
        else:
            p = (pass_probability(r.distances, threshold, undecided_as, doubt_images)
                 if r.check_passed or not r.check_scores else 0.0)
        expected += m * none_yet * p
        none_yet *= 1.0 - p
    return expected + (max_tokens + 1) * none_yet
