"""The progressive loop: events, the stop rule, reproducibility, cancellation, the report folder."""

import dataclasses
import html
import time

import numpy as np
import pytest
import torch
from PIL import Image

from originality import (
    AnalysisConfig,
    CheckReady,
    DeadlineExceeded,
    Decision,
    DistancesReady,
    Generating,
    InversionStep,
    LengthDone,
    OriginalityModel,
    ReconstructionsReady,
    Report,
    SeedProgress,
    Started,
    analyze,
    check_inputs,
    decide,
    iter_analyze,
    iter_length,
    prepare,
)
from originality import analysis
from originality.analysis import inversion_seed
from originality.record import repeat_seed
from originality.config import DEFAULT_PRESET
from originality.images import ImageInputError, crop_note
from originality.inversion import TokenSession, encode_query, invert
from originality.metrics import CheckResult
from originality.sd import WORLD as SD_WORLD
from originality.testing import drain, tiny_sd_pipeline


class ScriptedDistance:
    """Distance whose value per token length is set by the test (the decision logic is under test)."""

    name = "scripted"

    def __init__(self, by_length):
        self.by_length, self.calls = by_length, 0

    def __call__(self, query, images):
        self.calls += 1
        return [self.by_length[self.calls - 1]] * len(images)


class ScriptedCheck:
    name = "scripted-check"
    uses_edits = True

    def __init__(self, by_length):
        self.by_length, self.calls = by_length, 0

    def __call__(self, query, reconstructions, edits, *, subject, pass_fraction, domain=None):
        self.calls += 1
        ok = self.by_length[self.calls - 1]
        return CheckResult(ok, [1.0 if ok else 0.0] * len(edits), f"{subject}: {ok}")


@pytest.fixture(scope="module")
def pipe():
    return tiny_sd_pipeline(seed=0)


def make_model(pipe, distances, checks, threshold=0.5):
    return OriginalityModel(
        pipeline=pipe, name="tiny-sd", world=dataclasses.replace(SD_WORLD, threshold=threshold, guidance_scale=2.0),
        distance=ScriptedDistance(distances), in_distribution=ScriptedCheck(checks),
    )


# always_check_edits: the scripted checks answer one entry per length, so every length runs its check
TINY = AnalysisConfig.preset("fast", steps=2, batch_size=2, num_reconstructions=2, num_edits=2,
                             num_inference_steps=2, max_tokens=3, always_check_edits=True)


@pytest.fixture
def query():
    arr = np.full((96, 128, 3), 240, np.uint8)
    arr[20:70, 30:90] = (30, 60, 200)
    return Image.fromarray(arr)


def test_stops_at_first_length_passing_both(pipe, query):
    # m=1: distance fails; m=2: distance passes but the edit fails; m=3: both pass
    model = make_model(pipe, [0.9, 0.3, 0.4], [True, False, True])
    events = list(iter_analyze(query, TINY, model))
    report = events[-1].report
    assert report.score == 3 and report.label == "3"
    assert [r.passed for r in report.results] == [False, False, True]
    assert [r.distance_passed for r in report.results] == [False, True, True]
    assert model.distance.calls == 3


def test_stops_early_and_reports_max_plus_when_nothing_passes(pipe, query):
    model = make_model(pipe, [0.2, 0.1, 0.1], [True, True, True])
    report = analyze(query, TINY, model)
    assert report.score == 1 and len(report.results) == 1 and "Familiar" in report.verdict

    model = make_model(pipe, [0.9, 0.8, 0.7], [True, True, True])
    report = analyze(query, TINY, model)
    assert report.score is None and report.label == "3+" and len(report.results) == 3
    assert "Original" in report.verdict


def test_threshold_is_inclusive_and_configurable(pipe, query):
    model = make_model(pipe, [0.5], [True])
    assert analyze(query, TINY.replace(max_tokens=1), model).score == 1  # mean == threshold passes
    model = make_model(pipe, [0.5], [True])
    assert analyze(query, TINY.replace(max_tokens=1, threshold=0.49), model).score is None


def test_event_stream_covers_every_stage_in_order(pipe, query):
    model = make_model(pipe, [0.9, 0.1], [True, True])
    events = list(iter_analyze(query, TINY, model))
    kinds = [type(e) for e in events]
    assert kinds[0] is Started and kinds[-1] is Decision
    per_length = [InversionStep, InversionStep, Generating, ReconstructionsReady, DistancesReady, Generating,
                  CheckReady, LengthDone]
    assert kinds[1:-1] == per_length * 2
    assert events[0].query.size == (64, 64)  # normalised to the model's resolution
    assert events[0].config.domain == "house" and events[0].config.threshold == 0.5
    assert (events[3].num_tokens, events[3].what, events[3].done, events[3].total) == (1, "reconstructions", 2, 2)
    recon = events[4]
    assert recon.num_tokens == 1 and len(recon.images) == 2 and recon.images[0].size == (64, 64)
    assert events[6].what == "edits" and len(events[7].images) == 2  # edits
    result = events[-2].result
    assert set(result.timings) == {"inversion", "reconstruction", "distance", "edit_check"}
    assert len(result.losses) == 2 and result.embeddings.shape == (2, 32)


def test_same_seed_same_images_and_embeddings(pipe, query):
    a = analyze(query, TINY.replace(max_tokens=1), make_model(pipe, [0.1], [True]))
    b = analyze(query, TINY.replace(max_tokens=1), make_model(pipe, [0.1], [True]))
    assert torch.equal(a.results[0].embeddings, b.results[0].embeddings)
    assert all(np.array_equal(np.asarray(x), np.asarray(y))
               for x, y in zip(a.results[0].reconstructions, b.results[0].reconstructions))
    c = analyze(query, TINY.replace(max_tokens=1, seed=5), make_model(pipe, [0.1], [True]))
    assert not torch.equal(a.results[0].embeddings, c.results[0].embeddings)


def test_inversion_seed_depends_on_the_query_so_images_do_not_share_inversion_noise(pipe, query):
    other = query.copy()
    other.putpixel((64, 48), (0, 0, 0))  # one pixel differs, in the part the centre crop keeps
    prepared = prepare(query, TINY, make_model(pipe, [0.1], [True]))
    queries = (prepared.query, prepare(other, TINY, make_model(pipe, [0.1], [True])).query)
    seeds = {inversion_seed(s, m, q) for s in (0, 1) for m in (1, 2, 3) for q in queries}
    assert len(seeds) == 12 and all(0 <= s < 2**63 for s in seeds)
    assert inversion_seed(0, 2, queries[0]) == inversion_seed(0, 2, queries[0].copy())  # pixels, not the object

    a = analyze(query, TINY.replace(max_tokens=2), make_model(pipe, [0.9, 0.1], [True, True]))
    b = analyze(other, TINY.replace(max_tokens=2), make_model(pipe, [0.9, 0.1], [True, True]))
    assert [r.inversion_seed for r in a.results] == [inversion_seed(0, m, a.query) for m in (1, 2)]
    assert [r.inversion_seed for r in a.results] != [r.inversion_seed for r in b.results]
    # the recorded seed is the one the inversion ran with: rerunning invert by hand gives the same tokens
    with TokenSession(pipe) as session:
        mean, std = encode_query(session.pipeline, a.query)
        placeholder = session.add("<s1>", 1, prepared.init_id)
        _, learned = drain(invert(session.pipeline, mean, std, placeholder, prepared.templates, steps=TINY.steps,
                                  batch_size=TINY.batch_size, learning_rate=TINY.learning_rate,
                                  seed=a.results[0].inversion_seed))
    assert torch.equal(learned, a.results[0].embeddings)


def test_cancelling_mid_run_leaves_the_model_reusable(pipe, query):
    rows = pipe.text_encoder.get_input_embeddings().weight.shape[0]
    model = make_model(pipe, [0.9, 0.1], [True, True])
    run = iter_analyze(query, TINY.replace(steps=50), model)
    for event in run:
        if isinstance(event, InversionStep) and event.step == 3:
            break
    run.close()
    assert not model.lock.locked()
    assert pipe.text_encoder.get_input_embeddings().weight.shape[0] == rows
    assert analyze(query, TINY, make_model(pipe, [0.1], [True])).score == 1


def test_cancelling_between_generation_batches_stops_generating(pipe, query, monkeypatch):
    """One `Generating` per batch: closing the run there stops it before the next batch is drawn."""
    calls = []
    real = type(pipe).__call__

    def counting(self, **kwargs):
        calls.append(len(kwargs["prompt"]))
        return real(self, **kwargs)

    monkeypatch.setattr(type(pipe), "__call__", counting)
    config = TINY.replace(max_tokens=1, num_reconstructions=3, num_edits=2, generation_batch_size=1)
    events = [e for e in iter_analyze(query, config, make_model(pipe, [0.1], [True])) if isinstance(e, Generating)]
    assert [(e.what, e.done, e.total) for e in events] == [("reconstructions", 1, 3), ("reconstructions", 2, 3),
                                                          ("reconstructions", 3, 3), ("edits", 1, 2), ("edits", 2, 2)]
    assert calls == [1] * 5
    calls.clear()
    rows = pipe.text_encoder.get_input_embeddings().weight.shape[0]
    model = make_model(pipe, [0.1], [True])
    run = iter_analyze(query, config, model)
    for event in run:
        if isinstance(event, Generating):
            break
    run.close()
    assert calls == [1] and not model.lock.locked()
    assert pipe.text_encoder.get_input_embeddings().weight.shape[0] == rows


def test_lengths_run_separately_give_the_same_report(pipe, query):
    """prepare + iter_length per m (as one ZeroGPU call per length does) + decide == iter_analyze."""
    whole = list(iter_analyze(query, TINY, make_model(pipe, [0.9, 0.8, 0.3], [True, True, True])))
    expected = whole[-1].report

    model = make_model(pipe, [0.9, 0.8, 0.3], [True, True, True])
    results, events = [], []
    for m in range(1, TINY.max_tokens + 1):
        prepared = prepare(query, TINY, model)  # redone per call, like a fresh GPU worker
        for event in iter_length(prepared, model, m):
            events.append(event)
            if isinstance(event, LengthDone):
                results.append(event.result)
        assert not model.lock.locked()
        if results[-1].passed:
            break
    report = decide(prepared, results, total_seconds=1.5)

    assert [type(e) for e in events] == [type(e) for e in whole[1:-1]]  # same stream, minus Started/Decision
    assert prepared.started().config == whole[0].config
    assert (report.score, report.label, report.max_tokens, report.threshold) == (3, "3", 3, 0.5)
    assert (report.score, report.config, report.model) == (expected.score, expected.config, expected.model)
    assert report.total_seconds == 1.5
    assert len(report.results) == len(expected.results) == 3
    for a, b in zip(report.results, expected.results):
        assert (a.num_tokens, a.token, a.distances, a.losses) == (b.num_tokens, b.token, b.distances, b.losses)
        assert (a.passed, a.check_scores) == (b.passed, b.check_scores)
        assert torch.equal(a.embeddings, b.embeddings)
        assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a.reconstructions, b.reconstructions))
    assert np.array_equal(np.asarray(report.query), np.asarray(expected.query))
    # the stop rule alone: the first passing length, else None ("max_tokens+")
    assert decide(prepared, report.results[:2]).score is None and decide(prepared, report.results[:2]).label == "3+"
    with pytest.raises(ValueError, match="token length"):
        next(iter_length(prepared, model, 4))


def test_bad_inputs_fail_before_any_work(pipe, query, tmp_path):
    model = make_model(pipe, [0.1], [True])
    with pytest.raises(ValueError, match="single token"):
        next(iter_analyze(query, TINY.replace(domain="skyscraperish"), model))
    with pytest.raises(ValueError, match="steps"):
        next(iter_analyze(query, TINY.replace(steps=0), model))
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageInputError, match="empty"):
        next(iter_analyze(empty, TINY, model))
    assert model.distance.calls == 0


def test_report_folder_round_trips(pipe, query, tmp_path):
    report = analyze(query, TINY, make_model(pipe, [0.9, 0.2], [True, True]))
    folder = report.save(tmp_path / "run")
    assert (folder / "m2" / "learned_embeds.safetensors").is_file()
    assert (folder / "m1" / "reconstruction_1.png").is_file() and (folder / "m1" / "edit_0.png").is_file()
    loaded = Report.load(folder)
    assert loaded.summary() == report.summary()
    for a, b in zip(loaded.results, report.results):
        assert torch.equal(a.embeddings, b.embeddings)
        assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a.reconstructions, b.reconstructions))
        assert len(a.edits) == len(b.edits)
    assert np.array_equal(np.asarray(loaded.query), np.asarray(report.query))
    assert not list(tmp_path.glob(".run.*"))  # no temporary folder left behind
    # saved embeddings load into a fresh pipeline the diffusers way
    fresh = tiny_sd_pipeline(seed=0)
    fresh.load_textual_inversion(str(folder / "m2" / "learned_embeds.safetensors"))
    assert "<s2>_1" in fresh.tokenizer.get_vocab()


def test_config_presets_and_validation():
    fast, paper = AnalysisConfig.preset("fast"), AnalysisConfig.preset("paper")
    assert (paper.batch_size, paper.learning_rate, paper.steps, paper.num_reconstructions,
            paper.num_inference_steps) == (20, 5e-4, 2000, 20, 35)
    assert fast.steps < paper.steps and AnalysisConfig.preset("fast", steps=7).steps == 7
    assert AnalysisConfig.from_dict(fast.to_dict()) == fast
    with pytest.raises(ValueError, match="preset must be one of"):
        AnalysisConfig.preset("slow")
    for bad, match in [(dict(threshold=-1), "threshold"), (dict(max_tokens=0), "max_tokens"),
                       (dict(edit_prompt="a cat"), "edit_prompt"), (dict(domain="two words"), "domain"),
                       (dict(learning_rate=0), "learning_rate"), (dict(seed=-3), "seed"),
                       (dict(lr_schedule="step"), "lr_schedule")]:
        with pytest.raises(ValueError, match=match):
            fast.replace(**bad).validate()


def test_a_pluggable_length_runner_gets_the_same_stop_rule(pipe, query):
    """iter_analyze(runner=...) (the app's ZeroGPU path: one call to prepare, then one per length, each
    receiving the resolved `Prepared` through pickle as a forked worker does) gives the same events and
    report as the in-process loop, prepares once and stops at the first pass."""
    import pickle

    whole = list(iter_analyze(query, TINY, make_model(pipe, [0.9, 0.3, 0.1], [True, True, True])))
    model = make_model(pipe, [0.9, 0.3, 0.1], [True, True, True])
    calls = []

    class Remote:
        world = analysis.get_world(model.world) if isinstance(model.world, str) else model.world

        def prepare(self, image, config, source):
            calls.append("prepare")
            return pickle.loads(pickle.dumps(analysis.prepare_checked(image, config, model, source)))

        def run_length(self, prepared, m):
            calls.append(m)
            yield from iter_length(pickle.loads(pickle.dumps(prepared)), model, m)

        def compare(self, *args):
            raise AssertionError("no references were given")

    remote = list(iter_analyze(query, TINY, runner=Remote()))
    assert calls == ["prepare", 1, 2]  # prepared once; length 2 passes: no third call
    assert [type(e) for e in remote] == [type(e) for e in whole]
    assert remote[-1].report.score == whole[-1].report.score == 2
    assert remote[-1].report.config == whole[-1].report.config
    assert [r.distances for r in remote[-1].report.results] == [r.distances for r in whole[-1].report.results]


def test_one_analysis_checks_its_inputs_once(pipe, query, monkeypatch):
    """One path: a whole analysis (two seeds, so the stop rule runs twice) validates the settings once,
    decodes the image once and runs the world's check of the image once."""
    counts = {"validate": 0, "load_image": 0}
    validate, load_image = AnalysisConfig.validate, analysis.load_image

    def counted_validate(self):
        counts["validate"] += 1
        return validate(self)

    def counted_load(image):
        counts["load_image"] += 1
        return load_image(image)

    monkeypatch.setattr(AnalysisConfig, "validate", counted_validate)
    monkeypatch.setattr(analysis, "load_image", counted_load)
    report = analyze(query, TINY.replace(seeds=2), make_model(pipe, [0.9, 0.3, 0.9, 0.3], [True] * 4))
    assert report.label == "2" and len(report.seed_runs) == 2
    assert counts == {"validate": 1, "load_image": 1}


def test_more_seeds_give_the_label_over_seeds_and_keep_the_first_run(pipe, query, tmp_path):
    """seeds=3: the stop rule runs again under seed 0's repeats 1 and 2 (`record.repeat_seed`; events wrapped in
    SeedProgress, not rows of the report); the report keeps seed 0's lengths and score and gives the label over
    the three seeds, which survives a save and load. Seed 0: 2; repeat 1: 1; repeat 2: 3+."""
    model = make_model(pipe, [0.9, 0.1, 0.2, 0.9, 0.8, 0.7], [True] * 6)
    events = list(iter_analyze(query, TINY.replace(seeds=3), model))
    report = events[-1].report
    assert report.score == 2 and [r.num_tokens for r in report.results] == [1, 2]
    wrapped = [e for e in events if isinstance(e, SeedProgress)]
    assert {(e.seed, e.index, e.total) for e in wrapped} == {(repeat_seed(0, 1), 2, 3), (repeat_seed(0, 2), 3, 3)}
    assert not any(isinstance(e, (Started, Decision)) for e in wrapped)
    assert [isinstance(e.event, LengthDone) for e in wrapped].count(True) == 1 + 3
    dist = report.label_distribution
    assert dist.labels == ("2", "1", "3+") and dist.seeds == (0, repeat_seed(0, 1), repeat_seed(0, 2))
    assert dist.median == "2" and dist.describe() == "median 2 of 3 seeds (1 in 1, 2 in 1, 3+ in 1)"
    assert [r.mean_distances for r in report.seed_runs] == [{1: 0.9, 2: 0.1}, {1: 0.2}, {1: 0.9, 2: 0.8, 3: 0.7}]
    again = Report.load(report.save(tmp_path / "run"))
    assert again.label_distribution == dist and again.summary()["label_distribution"]["counts"] == dist.counts
    # one seed (the default): one run of the stop rule, no repeats, so no label over seeds
    single_model = make_model(pipe, [0.1], [True])
    assert TINY.seeds == 1
    single = analyze(query, TINY, single_model)
    assert single.score == 1 and single_model.distance.calls == 1
    assert single.seed_runs == [] and single.label_distribution is None


def test_over_several_seeds_the_score_is_their_median(pipe, query, tmp_path):
    """Seed 0 passes at m = 1, seed 1 never (3+), seed 2 at m = 2: the score is the median, 2; the rows
    stay seed 0's, and every shell says which run the rows are."""
    from originality.cli import score_line
    from originality.html_report import render
    from originality.app.views import verdict_markdown

    model = make_model(pipe, [0.1, 0.9, 0.8, 0.7, 0.9, 0.1], [True] * 6)
    report = analyze(query, TINY.replace(seeds=3), model)
    assert [r.score for r in report.seed_runs] == [1, None, 2]
    assert report.score == 2 and report.label == "2" and [r.num_tokens for r in report.results] == [1]
    note = "The lengths shown are seed 0's run, which gave 1."
    assert note in report.seeds_note() and note in score_line(report) and note in verdict_markdown(report)
    assert html.escape(note) in render(report)
    again = Report.load(report.save(tmp_path / "run"))
    assert again.score == 2 and again.seed_runs == report.seed_runs


def test_deadline_stops_the_run_and_frees_the_model(pipe, query):
    model = make_model(pipe, [0.9, 0.9, 0.9], [True, True, True])
    events = iter_analyze(query, TINY, model, deadline=time.monotonic() - 1)
    assert isinstance(next(events), Started)
    with pytest.raises(DeadlineExceeded):
        list(events)
    assert not model.lock.locked() and model.distance.calls == 0


def test_check_inputs_needs_no_model(monkeypatch, query, tmp_path):
    """The one input check: image and settings without loading anything; prepare calls it first."""
    import originality.analysis as analysis

    monkeypatch.setattr(analysis, "load_model", lambda *a, **k: pytest.fail("check_inputs must not load a model"))
    image, config = check_inputs(query, TINY)
    assert image.size == query.size and config == TINY
    assert check_inputs(None, None)[1] == AnalysisConfig.preset(DEFAULT_PRESET)
    with pytest.raises(ValueError, match="steps"):
        check_inputs(query, TINY.replace(steps=0))
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ImageInputError):
        check_inputs(tmp_path / "notes.png", TINY)
    with pytest.raises(ImageInputError):  # prepare checks before it would load a model
        prepare(tmp_path / "notes.png", TINY)


def test_check_inputs_with_a_model_fills_the_world_defaults(pipe, query):
    model = make_model(pipe, [0.1], [True], threshold=0.25)
    _, config = check_inputs(None, TINY, model)
    assert (config.domain, config.threshold, config.guidance_scale) == ("house", 0.25, 2.0)
    with pytest.raises(ValueError, match="single token"):
        check_inputs(None, TINY.replace(domain="skyscraperish"), model)


def test_a_world_without_a_drawing_of_its_own_records_redraw_off_and_keeps_the_query(pipe, query):
    prepared = prepare(query, TINY.replace(redraw="on"), make_model(pipe, [0.1], [True]))
    assert prepared.config.redraw == "off" and prepared.notes == (crop_note(query.size),)  # nothing on redrawing
    as_given = prepare(query, TINY, make_model(pipe, [0.1], [True])).query
    assert np.array_equal(np.asarray(prepared.query), np.asarray(as_given))
