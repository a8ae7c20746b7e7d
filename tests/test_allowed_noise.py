"""benchmarks/allowed_noise.py: labels simulated on recorded curves under added noise."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import allowed_noise  # noqa: E402


def _result(curves: list[list[float]]) -> dict:
    """A reliability result whose drawings ran every length of `curves` in two runs, at those means."""
    def run(curve):
        return {"lengths": [{"m": m, "distances": [d, d]} for m, d in enumerate(curve, start=1)]}
    return {"config": {"max_tokens": 3}, "images": [{"runs": {"0": run(c), "1": run(c)}} for c in curves]}


def test_curves_average_the_runs_and_count_unreached_lengths_as_passing():
    result = _result([[0.6, 0.2, 0.1]])
    result["images"][0]["runs"]["1"]["lengths"][0]["distances"] = [0.4, 0.4]
    del result["images"][0]["runs"]["0"]["lengths"][2], result["images"][0]["runs"]["1"]["lengths"][2]
    result["images"].append({"runs": {"0": {"lengths": []}}})  # one run only: left out
    assert allowed_noise.curves_of(result, 3).tolist() == [[0.5, 0.2, 0.0]]


def test_labels_agree_far_from_the_line_and_toss_a_coin_on_it():
    rng = np.random.default_rng(0)
    clear = np.array([[0.8, 0.1, 0.1], [0.9, 0.9, 0.9]])
    a = allowed_noise.simulated_labels(clear, 0.3, 0.02, 500, rng)
    assert (a == np.array([2, 4])).all()  # the first length under the line; none: max_tokens + 1
    on_the_line = np.array([[0.3, 0.0, 0.0]])
    a, b = (allowed_noise.simulated_labels(on_the_line, 0.3, 0.05, 4000, rng) for _ in range(2))
    assert set(np.unique(a)) == {1, 2} and 0.4 < np.mean(a == b) < 0.6
