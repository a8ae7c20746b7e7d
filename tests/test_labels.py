"""The label arithmetic (`originality.labels`), the pass rule (`uncertainty.PassRule`) and the continuous score
(`uncertainty.expected_length`):
one home for each rule, checked on scripted numbers."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from originality.labels import (can_still_pass, distance_passes, first_pass, is_familiar, label_for, label_rank,
                                length_passes, median_label, median_score, score_of)
from originality.config import AnalysisConfig
from originality.repeatability import MEASURED
from originality.uncertainty import (BENEFIT_OF_DOUBT, PassRule, either_run_passes, expected_first_pass,
                                     expected_length, label_probability, length_probabilities, mean_and_std,
                                     mean_interval)

MEAN, PASS, FIXED = PassRule(0.3), PassRule(0.3, "pass"), PassRule(0.3, "pass", 24)  # the three rules at 0.3


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


def test_the_pass_probability_is_the_t_probability_of_the_mean_at_or_below_the_threshold():
    assert MEAN.probability([0.2, 0.2]) == 1.0 and MEAN.probability([0.4, 0.4]) == 0.0
    assert MEAN.probability([0.2, 0.4]) == pytest.approx(0.5)  # the mean sits on the threshold
    assert 0.5 < MEAN.probability([0.1, 0.2, 0.3, 0.4]) < 1.0  # mean 0.25, below
    assert MEAN.probability([]) == 0.0
    assert mean_and_std([0.1, 0.3]) == pytest.approx((0.2, 0.1414213))


def test_expected_length_weighs_each_length_by_its_chance_of_passing():
    sure, never, coin = [0.1, 0.1], [0.9, 0.9], [0.2, 0.4]
    assert expected_length([length(1, sure)], MEAN, 5) == 1.0
    assert expected_length([length(1, never), length(2, sure)], MEAN, 5) == 2.0
    # a coin toss at m = 1 (mean on the threshold), a sure pass at 2: half 1, half 2
    assert expected_length([length(1, coin), length(2, sure)], MEAN, 5) == pytest.approx(1.5)
    # the run stopped at a pass at m = 1 that was a coin toss: the lengths not tried count as passing
    assert expected_length([length(1, coin)], MEAN, 5) == pytest.approx(1.5)
    # a failed check makes the length fail whatever the distances; nothing passes: "5+" counts as 6
    assert expected_length([length(m, sure, check_passed=False) for m in range(1, 6)], MEAN, 5) == 6.0
    # edits not checked (the reconstructions already failed): the length's chance is its distances'
    assert expected_length([length(1, coin, check_passed=False, check_scores=()), length(2, sure)], MEAN, 5) == \
        pytest.approx(1.5)


def test_with_a_second_opinion_the_continuous_score_is_the_first_length_either_run_passes():
    sure, never, coin = [0.1, 0.1], [0.9, 0.9], [0.2, 0.4]
    first = [length(1, coin), length(2, sure)]  # label 2, a coin toss at 1: expected length 1.5
    # a second opinion through m = 1 that passes for sure: the score is 1, and so is the expected length
    found = SimpleNamespace(score=1, pass_probabilities={1: 1.0})
    assert expected_length(first, MEAN, 5, found) == 1.0
    # one that fails m = 1 as a coin toss too: m = 1 fails only where both fail (a quarter), so 0.75 * 1 + 0.25 * 2
    tossed = SimpleNamespace(score=None, pass_probabilities={1: 0.5})
    assert either_run_passes([0.5, 1.0, 1.0], tossed.pass_probabilities, None) == [0.75, 1.0, 1.0]
    assert expected_length(first, MEAN, 5, tossed) == pytest.approx(1.25)
    # a sure fail adds nothing; a report from before pass_probabilities keeps the first run's
    assert expected_length(first, MEAN, 5, SimpleNamespace(score=None, pass_probabilities={1: 0.0})) == \
        pytest.approx(1.5)
    assert expected_length(first, MEAN, 5, SimpleNamespace(score=1, pass_probabilities=None)) == pytest.approx(1.5)
    # "5+" by a hair, and a second run that passes m = 2 as a coin toss and stops there: after its pass it counts as
    # passing, as a run's own untried lengths do; a length it did not reach before its pass is no evidence
    almost = [length(m, never) for m in range(1, 5)] + [length(5, coin)]
    assert either_run_passes([0.0, 0.0, 0.0, 0.0, 0.5], {1: 0.0, 2: 0.5}, 2) == [0.0, 0.5, 1.0, 1.0, 1.0]
    assert expected_length(almost, MEAN, 5, SimpleNamespace(score=2, pass_probabilities={1: 0.0, 2: 0.5})) == \
        pytest.approx(2.5)
    assert either_run_passes([0.0, 0.2], {}, None) == pytest.approx([0.0, 0.2])
    assert expected_first_pass([0.0, 0.0]) == 3.0 and expected_first_pass([]) == 1.0


def test_a_labels_own_probability_multiplies_the_chances_of_the_lengths_before_and_at_it():
    sure, never, coin, likely = [0.1, 0.1], [0.9, 0.9], [0.2, 0.4], [0.1, 0.2, 0.3, 0.4]
    p_likely = MEAN.probability(likely)
    assert 0.5 < p_likely < 1.0
    # far from the line at every length: a clear call
    assert label_probability([length(1, never), length(2, sure)], MEAN, 5, 2) == 1.0
    # a coin toss failed at m = 1 before a sure pass: the label 2 had half a chance
    assert label_probability([length(1, coin), length(2, sure)], MEAN, 5, 2) == pytest.approx(0.5)
    # the label's own length passed by a likely, not a sure, margin
    assert label_probability([length(1, never), length(2, likely)], MEAN, 5, 2) == pytest.approx(p_likely)
    # "5+": every length's chance of failing; a failed check fails its length whatever the distances
    fails = [length(m, never) for m in range(1, 5)] + [length(5, coin)]
    assert label_probability(fails, MEAN, 5, None) == pytest.approx(0.5)
    assert label_probability([length(m, sure, check_passed=False) for m in range(1, 6)], MEAN, 5, None) == 1.0
    # the lengths' chances are the ones the continuous score weighs: lengths after the last tried count as passing
    assert length_probabilities([length(1, coin)], MEAN, 3) == [pytest.approx(0.5), 1.0, 1.0]
    assert expected_length([length(1, coin)], MEAN, 3) == pytest.approx(1.5)


def test_an_undecided_length_is_called_by_its_mean_or_passed_on_the_benefit_of_the_doubt():
    # mean 0.35 over 8 images of coarse element distances: the 95% interval (about 0.17-0.53) holds 0.3
    held = [0.0, 0.5, 0.2, 0.6, 0.5, 0.0, 0.6, 0.4]
    assert mean_interval(held).low < 0.3 < mean_and_std(held)[0]
    assert not MEAN.passes(held) and PASS.passes(held)
    # shown to miss: the interval lies wholly above the threshold, a fail under both rules
    missed = [0.5, 0.6, 0.5, 0.6, 0.5, 0.6, 0.5, 0.6]
    assert not MEAN.passes(missed) and not PASS.passes(missed)
    # a mean at or below the threshold passes under both; one distance has no interval: the mean decides
    assert PASS.passes([0.1, 0.3, 0.2]) and MEAN.passes([0.1, 0.3, 0.2])
    assert not PASS.passes([0.9]) and PASS.passes([0.3])
    with pytest.raises(ValueError, match="undecided_as must be one of mean, pass"):
        PassRule(0.3, "maybe")
    # what the shells print beside the mean
    assert PASS.passed_on_doubt(held, True) and not PASS.passed_on_doubt(held, False)
    assert not PASS.passed_on_doubt([0.1, 0.2], True)
    assert PASS.comparison([0.1, 0.2], True) == "≤ 0.3"
    assert PASS.comparison(missed, False) == "> 0.3"
    assert PASS.comparison(held, True) == "> 0.3, but its 95% interval holds it (benefit of the doubt)"


def test_the_continuous_score_follows_the_rule_that_decides_the_lengths():
    held = [0.0, 0.5, 0.2, 0.6, 0.5, 0.0, 0.6, 0.4]  # mean 0.35, interval holds 0.3
    strict, lenient = MEAN.probability(held), PASS.probability(held)
    assert strict < 0.5 < lenient < 1.0  # the mean is above the line; the rule's line is the interval's reach
    # at the rule's own line (mean = threshold + the interval's half width) a rerun passes half the time
    interval = mean_interval(held)
    shifted = [d + 0.3 + (interval.mean - interval.low) - interval.mean for d in held]
    assert PASS.probability(shifted) == pytest.approx(0.5, abs=1e-6)
    # no spread: both rules compare the mean
    assert PASS.probability([0.4, 0.4]) == 0.0 and PASS.probability([0.2, 0.2]) == 1.0
    sure = [0.1, 0.1]
    assert expected_length([length(1, held), length(2, sure)], PASS, 5) == pytest.approx(2 - lenient)
    assert expected_length([length(1, held), length(2, sure)], MEAN, 5) == pytest.approx(2 - strict)


def test_the_doubt_with_a_fixed_margin_keeps_its_line_where_more_images_would_move_the_intervals():
    # coarse element distances, mean 0.38, sd 0.27 or so: the line of 24 images' interval sits at about 0.41
    few = [0.0, 0.6, 0.2, 0.7, 0.4, 0.0, 0.6, 0.5]
    line = FIXED.line(few)
    mean, sd = mean_and_std(few)
    assert line == pytest.approx(0.3 + 2.0687 * sd / 24 ** 0.5, abs=1e-4) and mean < line
    assert FIXED.passes(few)
    # twelve times the same draws: their own interval no longer reaches 0.3 (the plain doubt now fails), while the
    # fixed margin's line stays where 24 images put it (the spread barely changes) and the length still passes
    many = few * 12
    assert mean_interval(many).low > 0.3 and not PASS.passes(many)
    assert FIXED.line(many) == pytest.approx(line, rel=0.1) and FIXED.passes(many)
    # a mean above the line fails; at or below the threshold passes whatever the margin
    assert not FIXED.passes([d + 0.2 for d in many])
    assert FIXED.passes([0.1, 0.2, 0.3])
    # 0 is the plain doubt; the mean rule has no margin; what the sequential rule tests its interval against
    assert PASS.line(few) == 0.3 and PassRule(0.3, "mean", 24).line(few) == 0.3 and FIXED.line(few) == line
    assert FIXED.undecided(few) and not PASS.undecided([0.0, 0.1] * 12)  # the sequential rule tests the line
    # the continuous score follows the same line: a rerun whose mean sits on it passes half the time
    on_line = [d - mean + FIXED.line(many) for d in many]
    assert FIXED.probability(on_line) == pytest.approx(0.5, abs=0.02)
    assert FIXED.probability(many) > 0.5 > PASS.probability(many)
    # what the shells say: the margin and its line, not an interval that no longer holds the threshold
    assert FIXED.comparison(many, True) == (
        f"> 0.3, but within the margin of 24 images' 95% interval (up to {FIXED.line(many):.2f}; benefit of "
        "the doubt)")
    # a length that fails by the margin is told its line, not only the threshold it lies above
    beyond = [d + 0.2 for d in many]
    assert FIXED.comparison(beyond, False) == \
        f"> 0.3, beyond the margin of 24 images' 95% interval (up to {FIXED.line(beyond):.2f})"
    assert PASS.comparison(beyond, False) == "> 0.3" and FIXED.comparison([0.9], False) == "> 0.3"
    assert "24 redrawings" in FIXED.doubt_in_words() and PASS.doubt_in_words() == BENEFIT_OF_DOUBT
    assert MEAN.doubt_in_words() == "" and not PassRule(0.3, "mean", 24).fixed_margin


def test_the_setting_is_checked_and_counts_as_measured():
    assert "undecided_as" in MEASURED
    AnalysisConfig.preset("steady", undecided_as="pass").validate()
    with pytest.raises(ValueError, match="undecided_as must be one of"):
        AnalysisConfig.preset("steady", undecided_as="maybe").validate()
    with pytest.raises(ValueError, match="undecided_as 'pass' cannot be combined with decide_early"):
        AnalysisConfig.preset("adaptive", undecided_as="pass").validate()
    assert "doubt_images" in MEASURED
    AnalysisConfig.preset("steady", doubt_images=24).validate()
    with pytest.raises(ValueError, match="only undecided_as 'pass' gives"):
        AnalysisConfig.preset("fast", doubt_images=24).validate()
