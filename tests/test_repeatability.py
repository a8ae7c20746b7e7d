"""The levers of a repeatable score (restarts chosen on their own images, sequential reconstructions) and what a
report says of its repeatability (`originality.repeatability`)."""

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

from originality import AnalysisConfig, Generating, InversionStep, OriginalityModel, analyze, gpu_costs, iter_analyze
from originality import analysis
from originality.analysis import SeedProgress, inversion_seed
from originality.inversion import TokenSession, encode_query, invert
from originality.metrics import CheckResult
from originality.record import image_seed, repeat_seed
from originality.experiments.reliability import analysis_record, rejudged
from originality.repeatability import expected_repeatability, matches, publish
from originality.sd import WORLD as SD_WORLD
from originality.testing import drain, tiny_sd_pipeline


class SequenceDistance:
    """Each call answers the next list of the script, one distance per image (the decision logic is under test)."""

    name = "sequence"

    def __init__(self, script):
        self.script, self.calls = list(script), []

    def __call__(self, query, images):
        answer = self.script.pop(0)
        assert len(answer) == len(images), (answer, len(images))
        self.calls.append(len(images))
        return answer


class PassingCheck:
    name = "passing-check"
    uses_edits = False

    def __call__(self, query, reconstructions, edits, *, subject, pass_fraction, domain=None):
        return CheckResult(True, [1.0] * len(reconstructions), "ok")


@pytest.fixture(scope="module")
def pipe():
    return tiny_sd_pipeline(seed=0)


@pytest.fixture
def query():
    arr = np.full((64, 64, 3), 240, np.uint8)
    arr[10:40, 20:50] = (30, 60, 200)
    return Image.fromarray(arr)


def model_of(pipe, script, threshold=0.3):
    return OriginalityModel(pipeline=pipe, name="tiny-sd",
                            world=dataclasses.replace(SD_WORLD, threshold=threshold, guidance_scale=2.0),
                            distance=SequenceDistance(script), in_distribution=PassingCheck())


TINY = AnalysisConfig.preset("fast", steps=1, batch_size=2, num_reconstructions=2, num_inference_steps=2,
                             max_tokens=1, generation_batch_size=2, learning_rate=0.5)


def test_restarts_keep_the_one_whose_selection_images_come_closest(pipe, query, monkeypatch):
    drawn = []  # (what, first latent seed, count) of every generation

    real = analysis.iter_generate

    def recording(pipeline, prompt, n, *, seed, what="images", **kw):
        drawn.append((what, seed, n))
        return (yield from real(pipeline, prompt, n, seed=seed, what=what, **kw))

    monkeypatch.setattr(analysis, "iter_generate", recording)
    # selection images: restart 0 at 0.6, restart 1 at 0.4, restart 2 at 0.5 (none passes 0.3, so all three run);
    # then the kept one's reconstructions
    model = model_of(pipe, [[0.6, 0.6], [0.4, 0.4], [0.5, 0.5], [0.9, 0.9]])
    config = TINY.replace(restarts=3, selection_images=2)
    events = list(iter_analyze(query, config, model))
    (r,) = events[-1].report.results
    assert [t["restart"] for t in r.restarts] == [0, 1, 2] and r.kept_restart == 1
    assert [t["selection_distances"] for t in r.restarts] == [[0.6, 0.6], [0.4, 0.4], [0.5, 0.5]]
    assert r.inversion_seed == inversion_seed(0, 1, events[0].query, 1) == r.restarts[1]["seed"]
    assert len({t["seed"] for t in r.restarts}) == 3
    assert [e.restart for e in events if isinstance(e, InversionStep)] == [0, 1, 2]
    # the choice is made before any judged reconstruction is drawn, on latents of its own
    whats = [w for w, _, _ in drawn]
    assert whats == ["selection images"] * 3 + ["images"]  # then the reconstructions (`analysis.generate`)
    selection = {s + i for w, s, n in drawn[:3] for i in range(n)}
    judged = {s + i for w, s, n in drawn[3:] for i in range(n)}
    assert not selection & judged and judged == {image_seed(0), image_seed(0) + 1}
    # the kept rows are restart 1's: the same inversion run on its own gives them
    with TokenSession(pipe) as session:
        domain = events[0].config.domain
        ph = session.add("<x>", 1, analysis.initializer_id(session.tokenizer, model.initial_word(domain)))
        mean, std = encode_query(session.pipeline, events[0].query)
        _, alone = drain(invert(session.pipeline, mean, std, ph, list(model.templates(domain)), steps=1,
                                batch_size=2, learning_rate=0.5, seed=r.inversion_seed))
    assert np.allclose(alone.numpy(), r.embeddings.numpy(), atol=1e-6)
    # the record names every restart's seed
    assert events[-1].report.record["seeds"]["restarts"]["1"] == [t["seed"] for t in r.restarts]


def test_restarting_stops_once_one_restarts_images_pass(pipe, query):
    model = model_of(pipe, [[0.6, 0.6], [0.2, 0.3], [0.1, 0.1]])
    report = analyze(query, TINY.replace(restarts=3, selection_images=2), model)
    (r,) = report.results
    assert len(r.restarts) == 2 and r.kept_restart == 1 and report.label == "1"
    assert model.distance.calls == [2, 2, 2]  # two restarts' selection images, then the reconstructions


def test_restarts_give_a_fixed_result_for_a_fixed_seed(pipe, query):
    script = [[0.6, 0.6], [0.4, 0.4], [0.9, 0.9]]
    one = analyze(query, TINY.replace(restarts=2, selection_images=2), model_of(pipe, list(script)))
    two = analyze(query, TINY.replace(restarts=2, selection_images=2), model_of(pipe, list(script)))
    assert one.results[0].restarts == two.results[0].restarts
    assert np.array_equal(one.results[0].embeddings.numpy(), two.results[0].embeddings.numpy())
    assert all(np.array_equal(np.asarray(a), np.asarray(b))
               for a, b in zip(one.results[0].reconstructions, two.results[0].reconstructions))


def test_average_tail_reaches_each_inversion_as_its_last_steps(pipe, query, monkeypatch):
    # the averaging itself is tested in test_inversion; here, that the analysis asks each inversion to average
    # round(F x its steps) steps, that it changes the tokens, and that the report records the setting
    config = TINY.replace(max_tokens=1, steps=4, average_tail=0.5)
    assert config.averaged_steps(4) == 2 and config.averaged_steps(150) == 75
    assert TINY.averaged_steps(150) == 0
    asked = []

    def recording(*args, **kwargs):
        asked.append((kwargs["steps"], kwargs["averaged_steps"]))
        return invert(*args, **kwargs)

    monkeypatch.setattr(analysis, "invert", recording)
    report = analyze(query, config, model_of(pipe, [[0.1, 0.1]]))
    plain = analyze(query, config.replace(average_tail=0.0), model_of(pipe, [[0.1, 0.1]]))
    assert asked == [(4, 2), (4, 0)]
    assert report.config["average_tail"] == 0.5 and plain.config["average_tail"] == 0.0
    assert not np.allclose(report.results[0].embeddings.numpy(), plain.results[0].embeddings.numpy())


def test_restarts_until_limits_restarts_to_the_first_lengths(pipe, query):
    # m = 1 restarts (two restarts' selection images fail, then its reconstructions fail); m = 2 runs one inversion:
    # no selection images, straight to its reconstructions, which pass
    config = TINY.replace(restarts=2, selection_images=2, restarts_until=1, max_tokens=2)
    model = model_of(pipe, [[0.6, 0.6], [0.5, 0.5], [0.9, 0.9], [0.1, 0.1]])
    events = list(iter_analyze(query, config, model))
    report = events[-1].report
    first, second = report.results
    assert model.distance.calls == [2, 2, 2, 2] and report.label == "2"
    assert len(first.restarts) == 2 and second.restarts == []
    assert {e.restart for e in events if isinstance(e, InversionStep) and e.num_tokens == 2} == {0}
    assert not [e for e in events if isinstance(e, Generating) and e.num_tokens == 2 and e.what == "selection images"]
    # the work, the reservation and the benchmark's count follow the length
    assert config.restarts_at(1) == 2 and config.restarts_at(2) == 1
    assert config.replace(restarts_until=0).restarts_at(5) == 2
    assert config.most_inversion_steps(2) == config.steps and config.most_inversion_steps(1) == 2 * config.steps
    assert gpu_costs.length_work(config, m=2) == (config.steps, config.num_reconstructions + config.num_edits)
    assert gpu_costs.length_seconds(config, m=1) > gpu_costs.length_seconds(config, m=2)
    record = analysis_record(report, 0.0)
    assert record["passes"] == gpu_costs.unet_passes(report) == (2 + 1) * 1 * 2 + (4 + 2 + 2) * 2 * 2
    from originality.experiments.reliability import recorded_length_passes

    totals = [recon + per_restart * max(1, len(x["selection_distances"]))
              for x in record["lengths"] for recon, per_restart in [recorded_length_passes(x, report.config)]]
    assert totals == [8 + 2 * (2 + 8), 8 + 2] and sum(totals) == record["passes"]


def reconstructions_drawn(pipe, query, script, **settings):
    config = TINY.replace(num_reconstructions=4, generation_batch_size=4, **settings)
    events = list(iter_analyze(query, config, model_of(pipe, script)))
    counts = [(e.done, e.total) for e in events if isinstance(e, Generating) and e.what == "reconstructions"]
    return counts, events[-1].report.results[0]


def test_sequential_reconstructions_draw_while_the_interval_holds_the_threshold(pipe, query):
    # 4 images at 0.2/0.8 (mean 0.5, 95% CI about 0 to 1: holds 0.3) -> 4 more at 0.9: 8 images, mean 0.7,
    # sd 0.31, 95% CI 0.44-0.96, which excludes 0.3: decided at 8 of at most 12
    counts, r = reconstructions_drawn(pipe, query, [[0.2, 0.8, 0.2, 0.8], [0.9] * 4], max_reconstructions=12)
    assert counts == [(4, 4), (8, 8)] and len(r.distances) == 8
    assert r.mean_distance == pytest.approx(0.7) and not r.distance_passed


def test_sequential_reconstructions_stop_at_their_cap_and_are_off_by_default(pipe, query):
    # a mean on the threshold itself never leaves the interval: drawn up to the cap
    counts, r = reconstructions_drawn(pipe, query, [[0.1, 0.5, 0.1, 0.5]] * 3, max_reconstructions=12)
    assert counts == [(4, 4), (8, 8), (12, 12)] and len(r.distances) == 12
    counts, r = reconstructions_drawn(pipe, query, [[0.1, 0.5, 0.1, 0.5]])
    assert counts == [(4, 4)] and len(r.distances) == 4
    counts, r = reconstructions_drawn(pipe, query, [[0.1, 0.5, 0.1, 0.5]], max_reconstructions=3)  # below: off
    assert counts == [(4, 4)]
    # a decided first batch draws no more
    counts, _ = reconstructions_drawn(pipe, query, [[0.0, 0.0, 0.0, 0.0]], max_reconstructions=12)
    assert counts == [(4, 4)]


def test_sequential_reconstructions_under_a_fixed_doubt_draw_while_the_interval_holds_its_line(pipe, query):
    # 8 images, mean 0.25, sd 0.107: their interval (0.16-0.34) still holds 0.3, so the plain doubt draws to the cap;
    # the line of a fixed margin of 24 images (0.3 + 2.07 x 0.107 / sqrt 24 = 0.345) lies above it: decided at 8
    script = [[0.15, 0.35, 0.15, 0.35]] * 3
    settings = dict(max_reconstructions=12, undecided_as="pass")
    counts, plain = reconstructions_drawn(pipe, query, script, **settings)
    assert counts == [(4, 4), (8, 8), (12, 12)] and plain.distance_passed
    counts, fixed = reconstructions_drawn(pipe, query, script, doubt_images=24, **settings)
    assert counts == [(4, 4), (8, 8)] and fixed.distance_passed and len(fixed.distances) == 8


def test_an_undecided_length_passes_on_the_benefit_of_the_doubt_with_the_same_draws(pipe, query):
    # restarts choose by the selection mean under either rule; m = 1's 12 images (mean 0.35) never leave an interval
    # that holds 0.3; m = 2's 4 images are shown to miss (0.9); m = 3 passes
    script = [[0.5, 0.5], [0.4, 0.4],                              # m = 1: two restarts' selection images (no pass)
              [0.1, 0.6, 0.1, 0.6], [0.2, 0.5, 0.2, 0.5], [0.3, 0.4, 0.3, 0.4],   # m = 1: 4 + 4 + 4 while undecided
              [0.9, 0.9], [0.9, 0.9], [0.9] * 4,                   # m = 2: fails under both
              [0.2, 0.2], [0.1] * 4]                               # m = 3: passes
    settings = dict(num_reconstructions=4, generation_batch_size=4, max_reconstructions=12, restarts=2,
                    selection_images=2, max_tokens=3)
    by_mean = analyze(query, TINY.replace(**settings), model_of(pipe, script))
    model = model_of(pipe, script)
    on_doubt = analyze(query, TINY.replace(undecided_as="pass", **settings), model)
    assert by_mean.label == "3" and on_doubt.label == "1"
    # the same draws: the rule calls the length, it does not change what is drawn or which restart is kept
    first, same = by_mean.results[0], on_doubt.results[0]
    assert same.distances == first.distances and len(same.distances) == 12 and same.kept_restart == first.kept_restart
    assert not first.distance_passed and same.distance_passed and model.distance.calls == [2, 2, 4, 4, 4]
    assert on_doubt.expected_length < by_mean.expected_length
    assert on_doubt.config["undecided_as"] == "pass"
    # every shell says why a mean above the threshold passed
    from originality.app.views import RunView, curve_figure, row_header
    from originality.cli import length_line
    from originality.html_report import curve_svg, render

    doubt = "> 0.3, but its 95% interval holds it (benefit of the doubt)"
    assert doubt in length_line(same, on_doubt.pass_rule) and doubt not in length_line(first, on_doubt.pass_rule)
    view = RunView.from_report(on_doubt)
    legend = [t.get_text() for t in curve_figure(view).legends[0].get_texts()]
    assert "score: 1 token (benefit of the doubt)" in legend
    assert doubt in row_header(view, view.lengths[1]) and "&gt; threshold 0.3, but its 95% interval" in render(on_doubt)
    assert "the benefit of the doubt, so that only a length shown to miss fails" in render(on_doubt)
    assert "benefit of the doubt" not in render(by_mean)
    assert "score: passed on the benefit of the doubt" in curve_svg(on_doubt)  # beside the circle, not only below
    assert "benefit of the doubt" not in curve_svg(by_mean)
    # so the reliability benchmark can judge a recorded run again under the rule, exactly: what the engine gives
    record = analysis_record(by_mean, 0.0)
    data = {"name": "x", "config": by_mean.config, "images": [{"group": "common", "index": 0, "runs": {"0": record}}]}
    again, real = rejudged(data, "pass")["images"][0]["runs"]["0"], analysis_record(on_doubt, 0.0)
    assert [again[k] for k in ("label", "score", "lengths", "passes")] == \
        [real[k] for k in ("label", "score", "lengths", "passes")] and record["passes"] > real["passes"]
    assert again["continuous"] == pytest.approx(real["continuous"]) and "passes_estimated" not in again
    with pytest.raises(ValueError, match="only results recorded with undecided_as 'mean' can be rejudged"):
        rejudged(rejudged(data, "pass"), "pass")
    # nor results with a second opinion, whose runs depend on the rule's calls
    with pytest.raises(ValueError, match="recorded with a second opinion cannot be rejudged"):
        rejudged(dict(data, config=dict(data["config"], second_opinion=True)), "pass")


def test_lever_settings_are_checked():
    with pytest.raises(ValueError, match="probe"):
        AnalysisConfig.preset("fast", restarts=2, probe_every=10).validate()
    with pytest.raises(ValueError, match="restarts must be at most 3 on this public server"):
        AnalysisConfig.preset("fast", restarts=4).validate(public=True)


def test_the_gpu_reservation_and_the_work_count_every_restart(pipe, query):
    steady = AnalysisConfig.preset("steady")
    overhead, per_sample, per_image_step = gpu_costs.rates()
    # 2 restarts x 150 steps x batch 8; up to 96 reconstructions, 4 edits and 2 x 12 selection images, 20 steps each
    assert gpu_costs.length_seconds(steady) == pytest.approx(
        overhead + per_sample * 2 * 150 * 8 + per_image_step * (96 + 4 + 24) * 20)
    assert gpu_costs.length_seconds(AnalysisConfig.preset("fast")) == gpu_costs.seconds(150, 8, 12, 20)
    report = analyze(query, TINY.replace(restarts=3, selection_images=2),
                     model_of(pipe, [[0.6, 0.6], [0.4, 0.4], [0.5, 0.5], [0.9, 0.9]]))
    # 3 inversions of 1 step at batch 2, 6 selection images and 2 reconstructions at 2 steps with guidance
    assert gpu_costs.unet_passes(report) == 3 * 1 * 2 + (6 + 2) * 2 * 2


# ---------------------------------------------------------------------------- what a report says

def table(tmp_path, config, world="shapes", **figures):
    path = tmp_path / "repeatability.json"
    publish({"world": world, "name": "fast", "config": config,
             "figures": {"images": 30, "same_label": 0.27, "within_one": 0.63, "icc": 0.6, "sem": 0.8,
                         "source": "x.json", **figures}}, path)
    return path


def test_a_report_finds_the_figures_of_its_world_and_measured_settings(tmp_path):
    measured = AnalysisConfig.preset("fast", threshold=0.3, guidance_scale=3.0, domain="shapes").to_dict()
    path = table(tmp_path, measured)
    mine = dict(measured, seed=7, domain="house", generation_batch_size=2)  # not measured settings
    figures = expected_repeatability("shapes", mine, path)
    assert figures.same_label == 0.27 and figures.name == "fast"
    assert "same label about 3 times in 10" in figures.sentence()
    assert "within one length of it about 6 times in 10" in figures.sentence() and "±1.6" in figures.sentence()

    assert "within the benchmark's uncertainty" not in figures.sentence()  # published before intervals were
    pinned = dataclasses.replace(figures, same_label_interval=(0.13, 0.43))
    assert "same label about 3 times in 10 (between 1 and 4 in 10 within the benchmark's uncertainty)" in \
        pinned.sentence()
    assert "(between" not in dataclasses.replace(figures, same_label_interval=(0.26, 0.31)).sentence()
    nearly = dataclasses.replace(figures, same_label=29 / 30, within_one=1.0)
    assert "the same label nearly always, and a label within one length of it every time" in nearly.sentence()
    assert expected_repeatability("stable-diffusion", mine, path) is None
    assert expected_repeatability("shapes", dict(mine, restarts=2), path) is None
    assert expected_repeatability("shapes", dict(mine, threshold=0.25), path) is None
    # a result written before a setting existed counts it at its default
    old = {k: v for k, v in measured.items() if k not in ("restarts", "max_reconstructions")}
    assert matches(mine, old) and not matches(dict(mine, max_reconstructions=16), old)
    # publishing the same name again replaces it
    table(tmp_path, measured, same_label=0.9)
    assert expected_repeatability("shapes", mine, path).same_label == 0.9
    assert len(json.loads(path.read_text())["entries"]) == 1


def test_every_shell_says_how_repeatable_the_label_is(pipe, query, tmp_path, monkeypatch):
    from originality import repeatability
    from originality.cli import score_line
    from originality.html_report import curve_svg, render
    from originality.app.views import verdict_markdown

    report = analyze(query, TINY, model_of(pipe, [[0.9, 0.9]]))
    assert report.repeatability is None and report.expected_length_interval() is None
    assert "not measured for these settings" in report.rerun_sentence()
    monkeypatch.setattr(repeatability, "TABLE_FILE", table(tmp_path, report.config, report.model["world"]))
    figures = report.repeatability
    assert figures is not None and "about 3 times in 10" in report.rerun_sentence()
    low, high = report.expected_length_interval()
    top = report.max_tokens + 1.0
    assert (low, high) == (max(1.0, report.expected_length - 1.6), min(top, report.expected_length + 1.6))
    summary = report.summary()
    assert summary["repeatability"]["same_label"] == 0.27
    assert json.loads(json.dumps(summary["expected_length_interval"])) == [low, high]
    assert f"(a rerun: {low:.1f}-{high:.1f})" in score_line(report)
    assert "about 3 times in 10" in render(report)
    assert "about 3 times in 10" in verdict_markdown(report)
    assert "call" not in report.rerun_sentence()  # an entry published before clear and close calls were counted

    # with them, each label says which it was and how often such labels repeated
    monkeypatch.setattr(repeatability, "TABLE_FILE", table(tmp_path, report.config, report.model["world"],
                                                           clear_share=0.66, same_label_clear=0.85,
                                                           same_label_close=0.46))
    clear = ("How repeatable: this label was a clear call (with the tokens this run learned, its reconstructions gave "
             "this label an over 99% chance; a rerun learns its own), and clear calls came out the same on a rerun "
             "about 8 times in 10. Over all labels, a rerun with other seeds gives the same label about 3 times in 10")
    assert report.label_probability == 1.0 and summary["label_probability"] == 1.0
    assert clear in report.rerun_sentence() and clear in render(report) and clear in verdict_markdown(report)
    close = analyze(query, TINY, model_of(pipe, [[0.1, 0.48]]))  # its one length's mean a hair under the threshold
    assert close.label == "1" and close.label_probability == pytest.approx(0.5, abs=0.05)
    assert (f"this label was a close call (with the tokens this run learned, its reconstructions gave this label a "
            f"{close.label_probability:.0%} chance; a rerun learns its own), and close calls came out the same on a "
            "rerun only about 5 times in 10: read it as a range.") \
        in close.rerun_sentence()
    assert close.summary()["label_probability"] == close.label_probability


def test_the_warm_start_survives_one_gpu_call_per_length(pipe, query, monkeypatch):
    """Under ZeroGPU every length is a fresh worker; the main process hands length m-1's rows to length m's call."""
    from originality.analysis import LocalRunner
    from originality.app import zerogpu

    model = model_of(pipe, [[0.9, 0.9], [0.9, 0.9]])
    handed = []

    def fresh_worker(model_id):
        return LocalRunner(model)  # nothing survives from one call to the next

    real = zerogpu.length_events

    def recording(prepared, model_id, m, carried=None):
        handed.append(carried)
        return real(prepared, model_id, m, carried)

    monkeypatch.setattr(zerogpu, "_worker", fresh_worker)
    monkeypatch.setattr(zerogpu, "engine_length", recording)
    runner = zerogpu.ZeroGPURunner("tiny", model.world)
    events = list(iter_analyze(query, TINY.replace(max_tokens=2, token_init="previous"), runner=runner))
    report = events[-1].report
    assert handed[0] is None and handed[1].m == 1
    assert np.array_equal(handed[1].rows.numpy(), report.results[0].embeddings.numpy())
    assert [r.warm_start for r in report.results] == [False, True]


def test_a_warm_started_length_runs_its_own_step_count(pipe, query):
    """warm_steps: a length that starts from the previous length's tokens runs that many inversion steps (every
    restart of it); the first length, and every length without the warm start, runs `steps`."""
    def steps_run(config):
        model = model_of(pipe, [[0.9, 0.9]] * 12)
        events = list(iter_analyze(query, config, model))
        totals = {}
        for e in events:
            if isinstance(e, InversionStep):
                totals.setdefault((e.num_tokens, e.restart), set()).add(e.total)
        return totals, [r.steps_used for r in events[-1].report.results]

    config = TINY.replace(max_tokens=3, steps=4, warm_steps=2, token_init="previous", restarts=2, selection_images=2)
    totals, used = steps_run(config)
    assert totals == {(1, 0): {4}, (1, 1): {4}, (2, 0): {2}, (2, 1): {2}, (3, 0): {2}, (3, 1): {2}}
    assert used == [4, 2, 2]
    totals, used = steps_run(config.replace(token_init="domain"))  # no warm start: warm_steps does nothing
    assert used == [4, 4, 4]
    totals, used = steps_run(config.replace(warm_steps=0))  # 0: the same steps as every length
    assert used == [4, 4, 4]


def test_the_reservation_of_a_warm_length_counts_its_steps(pipe):
    from originality.app import zerogpu

    config = AnalysisConfig.preset("steady", warm_steps=50)
    overhead, per_sample, per_image_step = gpu_costs.rates()
    images = (96 + 4 + 2 * 12) * 20 * per_image_step  # reconstructions, edits, both restarts' selection images
    assert gpu_costs.length_seconds(config) == pytest.approx(overhead + per_sample * 2 * 150 * 8 + images)
    warm = config.most_inversion_steps(2, previous_rows=1)
    assert warm == 2 * 50
    assert gpu_costs.length_seconds(config, inversion_steps=warm) == pytest.approx(
        overhead + per_sample * 2 * 50 * 8 + images)
    prepared = analysis.Prepared.__new__(analysis.Prepared)
    object.__setattr__(prepared, "config", config)
    carried = analysis.Carried(1, np.zeros((1, 4), np.float32))
    # ZeroGPU's duration callable sees what the previous length handed on: length 2 with length 1's rows is warm,
    # length 1 is not
    assert zerogpu._gpu_duration(prepared, "tiny", 2, carried) == zerogpu.gpu_seconds(config.to_dict(), warm)
    assert zerogpu._gpu_duration(prepared, "tiny", 1, None) == zerogpu.gpu_seconds(config.to_dict())
    assert zerogpu._gpu_duration(prepared, "tiny", 3, carried) == zerogpu.gpu_seconds(config.to_dict())  # not m-1's
    assert zerogpu.gpu_seconds(config.to_dict(), warm) < zerogpu.gpu_seconds(config.to_dict())


def test_nested_prompts_hold_every_prefix_of_the_tokens():
    from originality.inversion import Placeholder, prompt_texts

    ph = Placeholder("<x>", ("<x>", "<x>_1", "<x>_2"), (1, 2, 3))
    assert prompt_texts(ph, ["a {}", "b {}"]) == ["a <x> <x>_1 <x>_2", "b <x> <x>_1 <x>_2"]
    assert prompt_texts(ph, ["a {}", "b {}"], prefixes=True) == [
        "a <x>", "b <x>", "a <x> <x>_1", "b <x> <x>_1", "a <x> <x>_1 <x>_2", "b <x> <x>_1 <x>_2"]


NESTED = TINY.replace(max_tokens=3, steps=2, token_init="nested")


def inversions_by_length(events):
    """{(length the steps ran under, restart): steps} of a run's `InversionStep`s."""
    counts = {}
    for e in events:
        if isinstance(e, InversionStep):
            counts[e.num_tokens, e.restart] = counts.get((e.num_tokens, e.restart), 0) + 1
    return counts


def test_a_nested_inversion_runs_once_and_every_length_takes_its_prefix(pipe, query):
    """token_init 'nested': length 1 runs one inversion of max_tokens tokens (every prefix trained), and each later
    length reuses it, judged on its first m rows; its steps are counted once; a fixed seed gives a fixed result."""
    def run():
        events = list(iter_analyze(query, NESTED, model_of(pipe, [[0.9, 0.9]] * 3)))
        return events, events[-1].report

    events, report = run()
    assert report.label == "3+" and inversions_by_length(events) == {(1, 0): 2}
    rows = [r.embeddings for r in report.results]
    assert [tuple(r.shape)[0] for r in rows] == [1, 2, 3]
    assert all(np.array_equal(rows[2][:m].numpy(), rows[m - 1].numpy()) for m in (1, 2))
    assert [r.steps_used for r in report.results] == [2, 0, 0]
    # one inversion of 2 steps at batch 2, then 3 x 2 reconstructions of 2 steps with guidance
    assert gpu_costs.unet_passes(report) == 2 * 2 + 3 * 2 * 2 * 2
    # the nested inversion is its own seed's: the same inversion of all three tokens with every prefix trained
    nested_seed = inversion_seed(0, 3, events[0].query, 0)
    assert report.results[0].inversion_seed == nested_seed
    with TokenSession(pipe) as session:
        domain = events[0].config.domain
        model = model_of(pipe, [])
        ph = session.add("<x>", 3, analysis.initializer_id(session.tokenizer, model.initial_word(domain)))
        mean, std = encode_query(session.pipeline, events[0].query)
        _, alone = drain(invert(session.pipeline, mean, std, ph, list(model.templates(domain)), steps=2,
                                batch_size=2, learning_rate=0.5, seed=nested_seed, prefixes=True))
    assert np.allclose(alone.numpy(), rows[2].numpy(), atol=1e-6)
    _, again = run()
    assert all(np.array_equal(a.embeddings.numpy(), b.embeddings.numpy()) for a, b in zip(report.results, again.results))


def test_nested_restarts_run_when_first_needed_and_are_chosen_per_length(pipe, query):
    # length 1: restart 0's selection images pass (so restart 1 does not run), its reconstructions fail;
    # length 2: restart 0 (reused) fails its selection, so restart 1 runs now, under length 2, and is kept;
    # length 3: both reused, no inversion; restart 0 comes closer this time
    script = [[0.1, 0.1], [0.9, 0.9],
              [0.6, 0.6], [0.5, 0.5], [0.9, 0.9],
              [0.4, 0.4], [0.45, 0.45], [0.2, 0.2]]
    events = list(iter_analyze(query, NESTED.replace(restarts=2, selection_images=2), model_of(pipe, script)))
    report = events[-1].report
    assert inversions_by_length(events) == {(1, 0): 2, (2, 1): 2}
    assert [r.kept_restart for r in report.results] == [0, 1, 0] and report.label == "3"
    assert [[t.get("reused", False) for t in r.restarts] for r in report.results] == [
        [False], [True, False], [True, True]]
    assert [[t["steps"] for t in r.restarts] for r in report.results] == [[2], [0, 2], [0, 0]]
    # two inversions of 2 steps at batch 2 in all; 2 + 4 + 4 selection and 6 judged images of 2 steps with guidance
    assert gpu_costs.unet_passes(report) == 2 * 2 * 2 + (10 + 6) * 2 * 2


def test_nested_inversions_survive_one_gpu_call_per_length(pipe, query, monkeypatch):
    """Under ZeroGPU every length is a fresh worker: the main process hands the nested inversions on, so later
    lengths reuse them, and their calls reserve no inversion."""
    from originality.analysis import LocalRunner
    from originality.app import zerogpu

    model = model_of(pipe, [[0.9, 0.9]] * 3)
    handed, reserved = [], []
    real = zerogpu.length_events

    def recording(prepared, model_id, m, carried=None):
        handed.append(carried)
        reserved.append(zerogpu._gpu_duration(prepared, model_id, m, carried))
        return real(prepared, model_id, m, carried)

    monkeypatch.setattr(zerogpu, "_worker", lambda model_id: LocalRunner(model))
    monkeypatch.setattr(zerogpu, "engine_length", recording)
    events = list(iter_analyze(query, NESTED, runner=zerogpu.ZeroGPURunner("tiny", model.world)))
    assert inversions_by_length(events) == {(1, 0): 2}
    assert handed[0] is None and [len(c.nested) for c in handed[1:]] == [1, 1]
    config = events[0].config
    assert reserved == [zerogpu.gpu_seconds(config.to_dict()), zerogpu.gpu_seconds(config.to_dict(), 0),
                        zerogpu.gpu_seconds(config.to_dict(), 0)]
    assert config.most_inversion_steps(2, nested_runs=1) == 0
    assert config.replace(restarts=2).most_inversion_steps(2, nested_runs=1) == 2  # restart 1 may still run


def test_nested_settings_are_checked():
    with pytest.raises(ValueError, match="nested.*probe"):
        AnalysisConfig.preset("fast", token_init="nested", probe_every=10).validate()


def test_only_a_complete_test_split_result_is_published():
    from originality.experiments.reliability import published_entry

    config = AnalysisConfig.preset("fast").to_dict()
    run = {"label": "2", "continuous": 2.0, "passes": 1, "seconds": 1.0}
    images = [{"group": g, "index": i, "caption": "", "runs": {"0": dict(run, label=str(1 + i)),
                                                                "1": dict(run, label=str(1 + i), continuous=2.5)}}
              for g in ("common", "rare", "unseen") for i in range(2)]
    data = {"name": "fast", "split": "test", "runs": 2, "config": config, "groups": ["common", "rare", "unseen"],
            "images": images}
    entry = published_entry(data, "x.json")
    assert entry["figures"]["same_label"] == 1.0 and entry["figures"]["images"] == 6 and entry["config"] == config
    with pytest.raises(ValueError, match="only test-split"):
        published_entry(dict(data, split="dev"), "x.json")
    with pytest.raises(ValueError, match="too few"):
        published_entry(dict(data, images=images[:3]), "x.json")


def test_a_close_call_gets_a_second_opinion_on_the_shorter_lengths(pipe, query, tmp_path):
    from originality.app.views import RunView, status_line
    from originality.gpu_costs import results_passes, unet_passes
    from originality.html_report import curve_svg
    from originality.report import Report

    config = dataclasses.replace(TINY, max_tokens=3, second_opinion=True)
    never, sure, close = [0.9, 0.9], [0.1, 0.1], [0.1, 0.48]  # close: mean 0.29, a hair under the threshold

    def run(script, **changes):
        distance = SequenceDistance(script)
        model = OriginalityModel(pipeline=pipe, name="tiny-sd", world=dataclasses.replace(SD_WORLD, threshold=0.3,
                                 guidance_scale=2.0), distance=distance, in_distribution=PassingCheck())
        events = list(iter_analyze(query, dataclasses.replace(config, **changes), model))
        assert not distance.script  # every scripted answer was asked for, and no more
        return events[-1].report, [e for e in events if isinstance(e, SeedProgress)]

    # label 2 by a hair: a second run under seed 0's first repeat seed tries m = 1 only, finds it passes, and the
    # score is 1
    report, second = run([never, close, sure])
    opinion_seed = repeat_seed(0, 1)
    assert report.score == 1 and report.second_opinion.seed == opinion_seed and report.second_opinion.score == 1
    assert [r.num_tokens for r in report.results] == [1, 2]  # the rows stay the first run's
    assert {e.seed for e in second} == {opinion_seed}
    # a rerun with the next seed, as a person reruns an analysis, inverts m = 1 from another seed than that second
    # opinion did (they were one inversion while the second opinion ran under seed + 1)
    opinion_inversion = {e.event.result.inversion_seed for e in second if isinstance(e.event, analysis.LengthDone)}
    rerun, _ = run([sure], seed=1)
    assert opinion_inversion and rerun.results[0].inversion_seed not in opinion_inversion
    assert [e.event.result.num_tokens for e in second if isinstance(e.event, analysis.LengthDone)] == [1]
    assert "Second opinion: this run's label (2) was a close call" in report.rerun_sentence()
    assert "found one at 1 token (mean distance 0.100), so the score is 1" in report.rerun_sentence()
    assert unet_passes(report) == results_passes(report.results, report.config) + report.second_opinion.passes > 0
    # the continuous score is the first length that either run passes: the second's sure pass at 1
    assert report.second_opinion.pass_probabilities == {1: 1.0} and report.expected_length == 1.0
    assert report.expected_length_sentence().startswith("Expected length 1.00")
    assert "(a length passes where this run or its second opinion passes it)" in report.expected_length_sentence()
    first_alone = dataclasses.replace(report, second_opinion=dataclasses.replace(report.second_opinion,
                                                                                 pass_probabilities=None))
    assert first_alone.expected_length > 1.9  # as a report from before pass_probabilities has it: the first run's
    again = Report.load(report.save(tmp_path / "run"))
    assert again.score == 1 and again.second_opinion == report.second_opinion and again.expected_length == 1.0
    # the curves draw the first run's points: no score ring on its failed m = 1; the status bar names the opinion
    assert 'r="11"' not in curve_svg(report)
    view = RunView.from_report(report)
    assert status_line(view, second[0], 3.0).startswith(f"second opinion (seed {opinion_seed}): m=1")
    # the second run finds nothing shorter: the label stands
    report, _ = run([never, close, never])
    assert report.score == 2 and report.second_opinion.score is None and 'r="11"' in curve_svg(report)
    assert report.expected_length == pytest.approx(first_alone.expected_length)  # a sure fail adds nothing
    assert "found none that passes, so the label stands" in report.rerun_sentence()
    # a clear call, a close call at 1 (nothing is shorter) and the setting off: no second run
    for script, changes in (([never, sure], {}), ([close], {}), ([never, close], {"second_opinion": False})):
        report, second = run(script, **changes)
        assert report.second_opinion is None and not second
    # "M+" by a hair is a close call too: the second run tries every length
    report, _ = run([never, [0.2, 0.41], never, sure], max_tokens=2)
    assert report.second_opinion.score == 2 and report.score == 2
    # with several seeds the median over them answers instead: no second opinion is asked
    resolved = AnalysisConfig.from_dict(report.config)
    assert analysis.needs_second_opinion(report.results, resolved) == 2
    assert analysis.needs_second_opinion(report.results, resolved.replace(seeds=2)) == 0


def test_the_reservation_holds_a_close_call_s_second_opinion():
    from originality.app import zerogpu

    plain = AnalysisConfig.preset("steady", second_opinion=False).to_dict()
    second = dict(plain, second_opinion=True)
    lengths = {m: zerogpu.run_gpu_seconds(plain, m) - zerogpu.PREPARE_GPU_S for m in range(1, 6)}
    # a "5+" close call runs every length again; one that passed at m = 3 runs m = 1 and 2 again; a 1, none
    assert zerogpu.run_gpu_seconds(second) == zerogpu.PREPARE_GPU_S + 2 * lengths[5]
    assert zerogpu.run_gpu_seconds(second, 3) == zerogpu.PREPARE_GPU_S + lengths[3] + lengths[2]
    assert zerogpu.run_gpu_seconds(second, 1) == zerogpu.run_gpu_seconds(plain, 1)
