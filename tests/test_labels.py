"""The label arithmetic (`originality.labels`) and the continuous score (`uncertainty.expected_length`):
one home for each rule, checked on scripted numbers."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from originality.labels import (can_still_pass, distance_passes, first_pass, is_familiar, label_for, label_rank,
                                length_passes, median_label, median_score, score_of)
from originality.uncertainty import expected_length, mean_and_std, pass_probability


def length(m: int, distances: list[float], check_passed: bool = True, check_scores=(1.0,)):
    return SimpleNamespace(num_tokens=m, distances=distances, check_passed=check_passed,
                           check_scores=list(check_scores))


def test_threshold_comparison_pass_rule_and_stop_rule():
    assert distance_passes(0.3, 0.3) and not distance_passes(0.3001, 0.3)  # at the threshold passes
    # decide-early: 3 of 8 drawn at 0.8 can no longer reach 0.3 even if the other 5 were 0
    assert not can_still_pass([0.8, 0.8, 0.8], 8, 0.3) and can_still_pass([0.8, 0.0, 0.0], 8, 0.3)
    assert length_passes(True, True) and not length_passes(True, False) and not length_passes(None, True)
    results = [SimpleNamespace(num_tokens=m, passed=p) for m, p in ((1, False), (2, True), (3, True))]
    assert first_pass(results) == 2 and first_pass(results[:1]) is None
    assert is_familiar(1) and not is_familiar(2) and not is_familiar(None)


def test_labels_and_their_medians():
    assert label_for(None, 5) == "5+" and label_for(3, 5) == "3" and score_of("5+") is None and score_of("3") == 3
    assert sorted(["5+", "2", "5", "1"], key=label_rank) == ["1", "2", "5", "5+"]
    assert median_label(["1", "3", "5+"]) == "3" and median_label(["1", "5+"]) == "5+"  # even: the upper middle
    assert median_score([1, None, 3]) == 3 and median_score([2, None]) is None and median_score([2, 1, 2]) == 2


def test_pass_probability_is_the_t_probability_of_the_mean_at_or_below_the_threshold():
    assert pass_probability([0.2, 0.2], 0.3) == 1.0 and pass_probability([0.4, 0.4], 0.3) == 0.0
    assert pass_probability([0.2, 0.4], 0.3) == pytest.approx(0.5)  # the mean sits on the threshold
    assert 0.5 < pass_probability([0.1, 0.2, 0.3, 0.4], 0.3) < 1.0  # mean 0.25, below
    assert pass_probability([], 0.3) == 0.0
    assert mean_and_std([0.1, 0.3]) == pytest.approx((0.2, 0.1414213))


def test_expected_length_weighs_each_length_by_its_chance_of_passing():
    sure, never, coin = [0.1, 0.1], [0.9, 0.9], [0.2, 0.4]
    assert expected_length([length(1, sure)], 0.3, 5) == 1.0
    assert expected_length([length(1, never), length(2, sure)], 0.3, 5) == 2.0
    # a coin toss at m = 1 (mean on the threshold), a sure pass at 2: half 1, half 2
    assert expected_length([length(1, coin), length(2, sure)], 0.3, 5) == pytest.approx(1.5)
    # the run stopped at a pass at m = 1 that was a coin toss: the lengths not tried count as passing
    assert expected_length([length(1, coin)], 0.3, 5) == pytest.approx(1.5)
    # a failed check makes the length fail whatever the distances; nothing passes: "5+" counts as 6
    assert expected_length([length(m, sure, check_passed=False) for m in range(1, 6)], 0.3, 5) == 6.0
    # edits not checked (the reconstructions already failed): the length's chance is its distances'
    assert expected_length([length(1, coin, check_passed=False, check_scores=()), length(2, sure)], 0.3, 5) == \
        pytest.approx(1.5)
