"""The time-left estimate (`originality.eta`) on scripted timings: engine events fed with a fake clock, the
rates and the seconds left worked out by hand from the script."""

from __future__ import annotations

import dataclasses
import typing
from types import SimpleNamespace

import pytest

from originality import analysis, eta, gpu_costs
from originality.analysis import (CheckReady, Decision, DistancesReady, Generating, LengthDone, ReconstructionsReady,
                                  SeedProgress, Started)
from originality.config import AnalysisConfig
from originality.eta import Estimate, Rates, RunTimer, brief, describe, duration, stored_rates
from originality.inversion import InversionStep

# steps 10 x batch 2 = 20 samples per length; 4 reconstructions + 2 edits of 5 denoising steps = 30 image-steps
CONFIG = AnalysisConfig.preset("fast", steps=10, batch_size=2, num_reconstructions=4, num_edits=2,
                               num_inference_steps=5, generation_batch_size=2, max_tokens=3, threshold=0.3)
SD_GPU = {"world": "stable-diffusion", "device": "cuda:0"}
SHAPES_CPU = {"world": "shapes", "device": "cpu"}
STORED = Rates(per_sample=1.0, per_image_step=1.0, per_length=10.0, source="test")


class Script:
    """Feeds events to a `RunTimer` on a fake clock: `feed(event, seconds)` = the event arrives that much later."""

    def __init__(self, timer: RunTimer):
        self.timer, self.now = timer, 100.0

    def feed(self, event, seconds: float = 0.0) -> Estimate | None:
        self.now += seconds
        self.timer.observe(event, self.now)
        return self.timer.estimate()

    def length(self, m: int, *, step_s: float, first_s: float, image_s: float, passed: bool = False,
               steps: int = 10, wrap=lambda e: e) -> None:
        """One length: `steps` inversion steps (the first `first_s` after the previous event, then `step_s`
        apart), the reconstructions and edits two at a time (`image_s` per batch), then the check and the end."""
        self.feed(wrap(InversionStep(m, 1, steps, 0.5)), first_s)
        for step in range(2, steps + 1):
            self.feed(wrap(InversionStep(m, step, steps, 0.5)), step_s)
        for done in (2, 4):
            self.feed(wrap(Generating(m, "reconstructions", done, 4)), image_s)
        self.feed(wrap(ReconstructionsReady(m, [])))
        self.feed(wrap(DistancesReady(m, [0.2] * 4, 0.2, 0.0, True)))
        self.feed(wrap(Generating(m, "edits", 2, 2)), image_s)
        self.feed(wrap(CheckReady(m, [], [1.0, 1.0], passed, "", "edits")), 1.0)
        self.feed(wrap(LengthDone(SimpleNamespace(num_tokens=m, passed=passed))))


def test_every_event_the_timer_reads_is_an_engine_event():
    names = {t.__name__ for t in typing.get_args(analysis.Event)}
    assert set(eta._HANDLERS) <= names, set(eta._HANDLERS) - names
    assert "SeedProgress" in names  # unwrapped by RunTimer.observe


def test_stored_rates_stand_in_until_this_run_has_measured_its_own():
    script = Script(RunTimer(stored=STORED))
    assert script.feed(Started(None, CONFIG, SD_GPU)) is None  # no length started yet
    first = script.feed(InversionStep(1, 1, 10, 0.5), 3.0)
    # stored: 9 steps x 2 samples x 1 s + 6 images x 5 steps x 1 s + (10 - 3 s of fixed cost spent) = 18 + 30 + 7
    assert first.m == 1 and not first.measured
    assert first.length_s == pytest.approx(55.0)
    # two more lengths at worst, each 20 + 30 + 10 s
    assert first.total_s == pytest.approx(55.0 + 2 * 60.0)
    # one measured step: 0.5 s per step of 2 samples replaces the stored 1 s per sample
    second = script.feed(InversionStep(1, 2, 10, 0.5), 0.5)
    assert second.length_s == pytest.approx(8 * 2 * 0.25 + 30 + 7)


def test_the_first_length_calibrates_the_rest():
    script = Script(RunTimer(stored=STORED))
    script.feed(Started(None, CONFIG, SD_GPU))
    script.length(1, step_s=0.5, first_s=3.0, image_s=2.0)
    # measured: 9 step intervals of 0.5 s over 18 samples; 3 batches of 2 images x 5 steps in 6 s;
    # fixed cost 3 s (setup and first step) + 1 s (the check) = 4 s
    rates = script.timer.rates()
    assert rates.per_sample == pytest.approx(4.5 / 18)
    assert rates.per_image_step == pytest.approx(6.0 / 30)
    assert rates.per_length == pytest.approx(4.0)
    assert rates.source == eta.MEASURED
    est = script.feed(InversionStep(2, 1, 10, 0.5), 3.0)
    per_length = 20 * 0.25 + 30 * 0.2 + 4.0  # 15 s
    assert est.measured and est.m == 2
    # this length: 9 steps, 6 images, its fixed cost less the 3 s spent; then m = 3 at worst
    assert est.length_s == pytest.approx(9 * 2 * 0.25 + 30 * 0.2 + 1.0)
    assert est.total_s == pytest.approx(est.length_s + per_length)
    assert describe(est) == "about 10 s left for m = 2, at most about 25 s if it goes on to m = 3"
    assert brief(est) == "10 s (m=2), <= 25 s to m=3"  # the CLI bar's


def test_the_estimate_counts_down_within_a_length_and_ends_with_the_run():
    script = Script(RunTimer(stored=STORED))
    script.feed(Started(None, CONFIG, SD_GPU))
    script.length(1, step_s=0.5, first_s=3.0, image_s=2.0)
    script.length(2, step_s=0.5, first_s=3.0, image_s=2.0)
    lefts = [script.feed(InversionStep(3, step, 10, 0.5), 0.5 if step > 1 else 3.0).length_s for step in range(1, 11)]
    assert lefts == sorted(lefts, reverse=True) and lefts[0] > lefts[-1]
    last = script.feed(Generating(3, "reconstructions", 2, 4), 2.0)
    assert not last.more_lengths  # m = 3 is the last length
    assert describe(last) == "a few seconds left for m = 3"
    # its distance failed: the edits are skipped, so only 2 reconstructions and the fixed cost remain
    script.feed(Generating(3, "reconstructions", 4, 4), 2.0)
    skipped = script.feed(DistancesReady(3, [0.9] * 4, 0.9, 0.0, False))
    assert skipped.length_s == pytest.approx(max(0.0, script.timer.rates().per_length - 3.0))
    script.feed(CheckReady(3, [], [], False, "skipped", "edits"))
    script.feed(LengthDone(SimpleNamespace(num_tokens=3, passed=False)))
    assert script.feed(Decision(None)) is None


@pytest.mark.skipif("restarts" not in {f.name for f in dataclasses.fields(AnalysisConfig)},
                    reason="the engine has no restarts setting yet")
def test_restarts_selection_images_and_growing_image_counts_are_counted():
    config = CONFIG.replace(restarts=2, selection_images=2)
    script = Script(RunTimer(stored=STORED))
    script.feed(Started(None, config, SD_GPU))
    for step in range(1, 11):
        est = script.feed(InversionStep(1, step, 10, 0.5), 1.0)
    # measured 0.5 s per sample (9 s over 18); left: the second inversion's 20 samples, 2 + 2 selection images,
    # 4 reconstructions and 2 edits at the stored 1 s per image-step, the fixed cost less the 1 s spent
    assert est.length_s == pytest.approx(20 * 0.5 + 10 * 5 * 1.0 + 9.0)
    est = script.feed(Generating(1, "selection images", 2, 2), 1.0)  # 1 s for 10 image-steps
    assert est.length_s == pytest.approx(20 * 0.5 + 8 * 5 * 0.1 + 9.0)
    est = script.feed(InversionStep(1, 1, 10, 0.5, restart=1), 1.0)  # the second inversion
    assert est.length_s == pytest.approx(9 * 2 * 0.5 + 8 * 5 * 0.1 + 9.0)
    for step in range(2, 11):
        script.feed(InversionStep(1, step, 10, 0.5, restart=1), 1.0)
    script.feed(Generating(1, "selection images", 2, 2), 1.0)
    script.feed(Generating(1, "reconstructions", 2, 4), 1.0)
    grown = script.feed(Generating(1, "reconstructions", 4, 8), 1.0)  # undecided: up to 8 drawn
    # left: 4 reconstructions and 2 edits; later lengths plan 2 inversions, 2 x 2 selection images and 8 too
    assert grown.length_s == pytest.approx(6 * 5 * 0.1 + 9.0)
    whole = 2 * 20 * 0.5 + (2 * 2 + 8 + 2) * 5 * 0.1 + 10.0
    assert grown.total_s == pytest.approx(grown.length_s + 2 * whole)


def test_lengths_past_restarts_until_are_counted_with_one_inversion():
    config = CONFIG.replace(restarts=2, selection_images=2, restarts_until=1)
    script = Script(RunTimer(stored=STORED))
    script.feed(Started(None, config, SD_GPU))
    first = script.feed(InversionStep(1, 1, 10, 0.5), 3.0)
    # m = 1: 9 steps + the second inversion's 10 (x 2 samples), 2 x 2 selection images, 4 reconstructions, 2 edits
    assert first.length_s == pytest.approx(19 * 2 + 10 * 5 + 7.0)
    # m = 2 and 3 at worst: one inversion each (20 samples), no selection images, 4 + 2 images, the fixed 10 s
    assert first.total_s == pytest.approx(first.length_s + 2 * (20 + 6 * 5 + 10.0))


def test_a_step_number_that_goes_back_is_another_inversion_not_a_crash():
    script = Script(RunTimer(stored=STORED))
    script.feed(Started(None, CONFIG, SD_GPU))
    for step in (1, 2, 3, 1, 2):
        est = script.feed(InversionStep(1, step, 10, 0.5), 1.0)
    # 4 step intervals of 1 s: 2 + 2 + 2 (step 1 again) + 2 samples; 8 steps of this inversion left
    assert script.timer.rates().per_sample == pytest.approx(4.0 / 8)
    assert est.length_s == pytest.approx(8 * 2 * 0.5 + 6 * 5 * 1.0 + 9.0)


def test_further_seeds_count_in_the_worst_case():
    config = CONFIG.replace(seeds=3)
    script = Script(RunTimer(stored=STORED))
    script.feed(Started(None, config, SD_GPU))
    script.length(1, step_s=0.5, first_s=3.0, image_s=2.0, passed=True)  # seed 1 stops at m = 1
    per_length = 15.0  # as measured in test_the_first_length_calibrates_the_rest
    est = script.feed(SeedProgress(1, 2, 3, InversionStep(1, 1, 10, 0.5)), 3.0)
    assert est.seeds == 3 and est.m == 1
    # seed 2: this length and 2 more; seed 3: all 3 lengths
    assert est.total_s == pytest.approx(est.length_s + (2 + 3) * per_length)
    assert describe(est).endswith("if every seed goes on to m = 3")


def test_later_lengths_that_start_warm_count_their_own_steps():
    """With token_init 'previous' and warm_steps, every length after the first runs warm_steps inversion steps:
    the worst case counts those, not `steps`."""
    config = CONFIG.replace(token_init="previous", warm_steps=4)
    script = Script(RunTimer(stored=STORED))
    script.feed(Started(None, config, SD_GPU))
    script.length(1, step_s=0.5, first_s=3.0, image_s=2.0)
    est = script.feed(InversionStep(2, 1, 4, 0.5), 3.0)
    # measured as in test_the_first_length_calibrates_the_rest: 0.25 s a sample, 0.2 s an image step, 4 s a length;
    # m = 2 has 3 of its 4 steps left, m = 3 runs 4 steps at batch 2
    assert est.length_s == pytest.approx(3 * 2 * 0.25 + 30 * 0.2 + 1.0)
    assert est.total_s == pytest.approx(est.length_s + 4 * 2 * 0.25 + 30 * 0.2 + 4.0)


def test_later_lengths_that_reuse_a_nested_inversion_count_no_inversion():
    """With token_init 'nested' the first length's inversion serves every length: after it, the worst case counts
    each later length's images and fixed cost only."""
    config = CONFIG.replace(token_init="nested")
    script = Script(RunTimer(stored=STORED))
    script.feed(Started(None, config, SD_GPU))
    script.length(1, step_s=0.5, first_s=3.0, image_s=2.0)
    est = script.feed(Generating(2, "reconstructions", 2, 4), 2.0)
    # measured: 0.25 s a sample, 0.2 s an image step, 4 s a length; m = 2 has 2 reconstructions and 2 edits left
    # (20 image steps) and its whole fixed cost (the 2 s so far were its images), m = 3 draws 4 + 2 images and runs
    # no inversion
    assert est.length_s == pytest.approx(20 * 0.2 + 4.0)
    assert est.total_s == pytest.approx(est.length_s + 30 * 0.2 + 4.0)


def test_stored_rates_of_the_worlds():
    assert stored_rates("shapes", "cpu") is eta.SHAPES_CPU is eta.CPU_RATES["shapes"]
    overhead, per_sample, per_image_step = gpu_costs.rates()
    gpu = stored_rates("stable-diffusion", "cuda:0")
    assert (gpu.per_length, gpu.per_sample, gpu.per_image_step) == (overhead, per_sample, per_image_step)
    assert stored_rates("stable-diffusion", "cpu") is None


def test_nothing_stored_no_estimate_until_the_rates_are_measured():
    script = Script(RunTimer())  # Stable Diffusion on a CPU: no stored rates
    script.feed(Started(None, CONFIG, {"world": "stable-diffusion", "device": "cpu"}))
    assert script.timer.stored is None
    assert script.feed(InversionStep(1, 1, 10, 0.5), 3.0) is None
    assert script.feed(InversionStep(1, 2, 10, 0.5), 0.5) is None  # the image rate is not known yet
    assert script.feed(Generating(1, "reconstructions", 2, 4), 2.0) is not None


def test_a_started_event_picks_the_worlds_stored_rates():
    timer = RunTimer()
    timer.observe(Started(None, CONFIG, SHAPES_CPU), 0.0)
    assert timer.stored is eta.SHAPES_CPU
    timer.observe(InversionStep(1, 1, 10, 0.5), 1.0)
    assert not timer.estimate().measured and describe(timer.estimate()).endswith("(a first guess)")
    assert brief(timer.estimate()).endswith(", guess")


@pytest.mark.parametrize("seconds, text", [(3, "a few seconds"), (42, "40 s"), (58, "1 min"), (170, "3 min"),
                                           (3599, "1 h 00 min"), (4800, "1 h 20 min")])
def test_durations_for_people(seconds, text):
    assert duration(seconds) == text


def test_short_waits_are_said_without_about():
    est = Estimate(m=1, length_s=4.0, total_s=8.0, max_tokens=2, seeds=1, measured=True)
    assert describe(est) == "a few seconds left for m = 1, at most a few seconds if it goes on to m = 2"
    assert describe(Estimate(m=2, length_s=130.0, total_s=130.0, max_tokens=2, seeds=1, measured=False)) == \
        "about 2 min left for m = 2 (a first guess)"


def test_the_estimate_imports_no_shell_no_gradio_and_no_torch():
    import subprocess
    import sys

    code = ("import sys, originality.eta; bad = [m for m in sys.modules if m.split('.')[0] in ('gradio', 'torch') "
            "or m.startswith(('originality.app', 'originality.cli', 'originality.analysis'))]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
