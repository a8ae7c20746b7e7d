"""The label arithmetic: when a length passes, which length is the score, and how labels are written,
ordered and summarised. One home for each rule, so the engine, the reports and every shell agree.

A score is the first token length whose reconstructions and in-distribution check both pass (an int in
1..max_tokens), or None when none did; its label is "3" or "5+" ("max_tokens+"). Lower = more familiar to
the model; a score of 1 is what "familiar" means.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence, TypeVar

T = TypeVar("T")


def distance_passes(mean_distance: float, threshold: float) -> bool:
    """The threshold comparison: a mean distance at or below the threshold passes (lower = closer)."""
    return mean_distance <= threshold


def can_still_pass(distances: Sequence[float], total: int, threshold: float) -> bool:
    """With `distances` drawn of `total` planned (distances are >= 0), whether the mean of all `total` can
    still pass: true when even zeros for every image still to come would not keep it above the threshold."""
    return distance_passes(sum(distances) / total, threshold)


def length_passes(distance_passed: bool | None, check_passed: bool | None) -> bool:
    """The pass rule of one token length: its distance and its in-distribution check both pass."""
    return bool(distance_passed and check_passed)


def first_pass(results) -> int | None:
    """The stop rule's score: the token length of the first result (`.num_tokens`, `.passed`) that passed;
    None when none did."""
    return next((r.num_tokens for r in results if r.passed), None)


def is_familiar(score: int | None) -> bool:
    """A score of 1: one learned token reproduces the image."""
    return score == 1


def label_for(score: int | None, max_tokens: int) -> str:
    """The label people read: the score, or "M+" when no length up to M passed."""
    return str(score) if score is not None else f"{max_tokens}+"


def score_of(label: str) -> int | None:
    """The score a label shows: "3" -> 3, "5+" -> None (no length passed); the inverse of `label_for`."""
    return None if label.endswith("+") else int(label)


def label_rank(label: str) -> int:
    """A label as a number for ordering: "3" -> 3, "5+" -> 6 (more than any length tried)."""
    return int(label[:-1]) + 1 if label.endswith("+") else int(label)


def _middle(items: Iterable[T], key: Callable[[T], float]) -> T:
    """The middle item by `key`; with an even number the upper of the two middle ones, so that a tie leans
    to "original" rather than claim a familiarity the items do not share."""
    ordered = sorted(items, key=key)
    return ordered[len(ordered) // 2]


def median_label(labels: Iterable[str]) -> str:
    """The middle label by length ("5+" above 5; `_middle`). A label is ordinal, so the median, not the
    most frequent label, is its summary: for 1, 3 and 5+ it is 3. `labels` must not be empty."""
    return _middle(labels, label_rank)


def median_score(scores: Iterable[int | None]) -> int | None:
    """`median_label` on scores (None, "no length passed", above every length)."""
    return _middle(scores, lambda s: float("inf") if s is None else s)


def lower_score(a: int | None, b: int | None) -> int | None:
    """The shorter of two scores (None, "no length passed", above every length): a second opinion's answer to
    whether some shorter description exists."""
    return a if b is None or (a is not None and a <= b) else b


@dataclass(frozen=True)
class LabelDistribution:
    """Labels of one image over several inversion seeds."""

    labels: tuple[str, ...]  # one per seed, in seed order
    seeds: tuple[int, ...]

    @property
    def counts(self) -> dict[str, int]:
        """How many seeds gave each label, shortest length first ("5+" last)."""
        counts = Counter(self.labels)
        return {label: counts[label] for label in sorted(counts, key=label_rank)}

    @property
    def median(self) -> str:
        """The seeds' summary label (`median_label`)."""
        return median_label(self.labels)

    @property
    def unanimous(self) -> bool:
        return len(set(self.labels)) == 1

    def describe(self) -> str:
        """'2 in 3 of 3 seeds', '2 in 2 of 3 seeds (5+ in 1)', or 'median 3 of 3 seeds (1 in 1, 3 in 1, 5+ in 1)'
        when no label has more than half of the seeds."""
        counts = self.counts
        top = self.median
        if counts[top] * 2 > len(self.labels):
            rest = ", ".join(f"{label} in {n}" for label, n in counts.items() if label != top)
            return f"{top} in {counts[top]} of {len(self.labels)} seeds" + (f" ({rest})" if rest else "")
        return f"median {top} of {len(self.labels)} seeds (" + ", ".join(f"{label} in {n}" for label, n in counts.items()) + ")"

    def to_dict(self) -> dict:
        return {"labels": list(self.labels), "seeds": list(self.seeds), "counts": self.counts,
                "median": self.median}
