"""Early stopping of one length's inversion: the DVAR variance test and its hook in `invert`."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from originality.inversion import TokenSession, encode_query, initializer_id, invert
from originality.stopping import STOP_CONVERGED, STOP_STEP_CAP, EarlyStopping
from originality.templates import OBJECT_TEMPLATES
from originality.uncertainty import PassRule
from originality.testing import drain, tiny_sd_pipeline


def _stop_step(losses, rule: EarlyStopping):
    tracker = rule.tracker()
    for i, loss in enumerate(losses):
        if tracker.update(i * rule.every, loss):
            return i * rule.every
    return None


def test_a_falling_then_flat_loss_stops_once_flat():
    rule = EarlyStopping(every=10, window=5, ratio=0.15)
    falling_then_flat = [1.0 / (1 + i) if i < 10 else 0.1 + 1e-4 * (i % 2) for i in range(40)]
    stop = _stop_step(falling_then_flat, rule)
    assert stop is not None and stop <= 150  # at the latest a window into the plateau
    fallen = (falling_then_flat[0] - falling_then_flat[stop // 10]) / (falling_then_flat[0] - 0.1)
    assert fallen > 0.9  # but not before most of the fall is done


def test_a_steady_fall_stops_only_once_the_window_is_a_small_part_of_the_history():
    # DVAR's known limit: for a straight line var(last w) / var(all n) = (w^2 - 1) / (n^2 - 1), below
    # 0.15 from n = 13 evaluations at w = 5. The step cap bounds such a run anyway.
    tracker = EarlyStopping(every=10, window=5, ratio=0.15).tracker()
    decisions = [tracker.update(10 * i, 1.0 - 0.02 * i) for i in range(14)]
    assert decisions.index(True) == 12
    assert tracker.normalised_variance() == pytest.approx(24 / (14 ** 2 - 1))


def test_the_ratio_is_scale_free_and_min_steps_holds():
    rule = EarlyStopping(every=10, window=5, ratio=0.15)
    curve = [np.exp(-i / 3) + 1e-3 * np.sin(i) for i in range(40)]
    assert _stop_step(curve, rule) == _stop_step([1000 * c + 7 for c in curve], rule)
    late = EarlyStopping(every=10, window=5, ratio=0.15, min_steps=300)
    assert _stop_step(curve, late) == 300


def test_no_decision_before_the_window_is_full():
    tracker = EarlyStopping(every=1, window=4, ratio=0.99).tracker()
    assert [tracker.update(i, 1.0 / (i + 1)) for i in range(4)] == [False] * 4
    assert tracker.normalised_variance() == 1.0


@pytest.fixture(scope="module")
def session_inputs():
    pipe = tiny_sd_pipeline(seed=0)
    arr = np.full((64, 64, 3), 255, np.uint8)
    arr[16:48, 8:40] = (200, 30, 30)
    mean, std = encode_query(pipe, Image.fromarray(arr))
    return pipe, mean, std


def _run(session_inputs, steps, early_stopping=None):
    pipe, mean, std = session_inputs
    with TokenSession(pipe) as session:
        ph = session.add("<s2>", 2, initializer_id(session.tokenizer, "house"))
        return drain(invert(session.pipeline, mean, std, ph, OBJECT_TEMPLATES, steps=steps, batch_size=2,
                            learning_rate=5e-2, seed=3, early_stopping=early_stopping))


def test_invert_stops_when_converged_and_says_why(session_inputs):
    # a ratio no variance can reach from above: converged at the first evaluation after the window
    events, learned = _run(session_inputs, 50, EarlyStopping(every=2, window=2, ratio=1e9))
    assert [e.step for e in events] == [1, 2, 3, 4]
    assert events[-1].stop_reason == STOP_CONVERGED and all(e.stop_reason is None for e in events[:-1])
    assert [e.eval_loss is not None for e in events] == [False, True, False, True]
    # evaluating does not disturb the training noise: the same rows as a plain 4-step run
    plain_events, plain = _run(session_inputs, 4)
    assert torch.equal(learned, plain)
    assert plain_events[-1].stop_reason == STOP_STEP_CAP and plain_events[-1].eval_loss is None


def test_the_settings_floor_keeps_a_converged_length_running(session_inputs):
    """early_stop_min_steps reaches the rule: a loss that counts as converged at once still runs to the floor."""
    from originality import AnalysisConfig

    rule = AnalysisConfig(early_stop_every=2, early_stop_window=2, early_stop_ratio=1.0 - 1e-9,
                          early_stop_min_steps=8).early_stopping()
    events, _ = _run(session_inputs, 50, replace(rule, ratio=1e9))
    assert [e.step for e in events] == list(range(1, 9)) and events[-1].stop_reason == STOP_CONVERGED


def test_invert_runs_to_the_cap_when_the_loss_keeps_moving(session_inputs):
    events, _ = _run(session_inputs, 6, EarlyStopping(every=2, window=2, ratio=0.0))
    assert len(events) == 6 and events[-1].stop_reason == STOP_STEP_CAP


# --------------------------------------------------------------------------- in the analysis


def _scripted_model(pipe, distances):
    from test_analysis import make_model  # noqa: PLC0415

    return make_model(pipe, distances, [True] * len(distances))


def test_adaptive_preset_records_steps_and_stop_reason_per_length(session_inputs, tmp_path):
    from originality import AnalysisConfig, Report, analyze
    from originality.cli import length_line

    pipe = session_inputs[0]
    query = Image.fromarray(np.full((64, 64, 3), 200, np.uint8))
    config = AnalysisConfig.preset("adaptive", batch_size=2, num_reconstructions=3, num_inference_steps=2,
                                   max_tokens=2, steps=40, early_stop_every=2, early_stop_window=2,
                                   early_stop_ratio=1.0 - 1e-9)
    report = analyze(query, config, _scripted_model(pipe, [0.9, 0.9]))
    for r in report.results:
        assert r.stop_reason in (STOP_CONVERGED, STOP_STEP_CAP) and r.steps_used == len(r.losses) <= 40
        assert (r.steps_used < 40) == (r.stop_reason == STOP_CONVERGED)
        assert f"steps {r.steps_used} ({r.stop_reason})" in length_line(r, report.pass_rule)
        assert "95% CI" in length_line(r, report.pass_rule)
    report.save(tmp_path / "run")
    again = Report.load(tmp_path / "run")
    assert [(r.steps_used, r.stop_reason) for r in again.results] == \
        [(r.steps_used, r.stop_reason) for r in report.results]
    ci = again.summary()["results"][0]["distance_ci"]
    assert ci["low"] <= ci["mean"] <= ci["high"] and ci["n"] == 3


def test_warm_start_starts_length_m_from_length_m_minus_1(session_inputs):
    from originality import AnalysisConfig, analyze

    pipe = session_inputs[0]
    query = Image.fromarray(np.full((64, 64, 3), 200, np.uint8))
    base = dict(steps=1, batch_size=2, num_reconstructions=2, num_inference_steps=2, max_tokens=2,
                learning_rate=0.5)
    cold = analyze(query, AnalysisConfig.preset("fast", **base), _scripted_model(pipe, [0.9, 0.9]))
    warm = analyze(query, AnalysisConfig.preset("fast", token_init="previous", **base),
                   _scripted_model(pipe, [0.9, 0.9]))
    assert [r.warm_start for r in warm.results] == [False, True]
    assert not any(r.warm_start for r in cold.results)
    assert torch.equal(cold.results[0].embeddings, warm.results[0].embeddings)  # length 1 starts the same
    # one step at a large rate moves each row far from the domain word: the warm length-2 rows differ from
    # the cold ones, and its first row stays nearer length 1's learned row than to the domain word's
    house = pipe.text_encoder.get_input_embeddings().weight[
        pipe.tokenizer.convert_tokens_to_ids("house</w>")].detach().float()
    first = warm.results[1].embeddings[0]
    assert not torch.equal(warm.results[1].embeddings, cold.results[1].embeddings)
    assert (first - warm.results[0].embeddings[0]).norm() < (first - house).norm()


def test_mean_interval_is_the_student_t_interval():
    from originality.uncertainty import mean_interval

    ci = mean_interval([0.1, 0.2, 0.3])
    # mean 0.2, s = 0.1, t(0.975, 2) = 4.3027: half-width 0.2484, clipped at 0
    assert ci.mean == pytest.approx(0.2) and ci.low == 0.0 and ci.high == pytest.approx(0.2 + 0.24841, abs=1e-4)
    assert mean_interval([0.3]) is None
    assert ci.describe(0.3) == "0.20, 95% CI 0.00-0.45, threshold 0.30"


def test_the_label_over_seeds_is_the_median_by_length():
    """The label is ordinal: its summary over seeds is the middle one ("5+" above 5), not whichever
    of several single labels came first; an even count takes the upper middle (the more original)."""
    from originality.labels import LabelDistribution

    spread = LabelDistribution(("5+", "1", "3"), (0, 1, 2))
    assert spread.median == "3" and not spread.unanimous
    assert spread.counts == {"1": 1, "3": 1, "5+": 1}
    assert spread.describe() == "median 3 of 3 seeds (1 in 1, 3 in 1, 5+ in 1)"
    assert LabelDistribution(("5+", "1", "1"), (0, 1, 2)).describe() == "1 in 2 of 3 seeds (5+ in 1)"
    assert LabelDistribution(("2", "1"), (0, 1)).median == "2"
    same = LabelDistribution(("2", "2", "2"), (4, 5, 6))
    assert same.unanimous and same.describe() == "2 in 3 of 3 seeds" and same.to_dict()["median"] == "2"


# --------------------------------------------------------------------------- the reconstruction probe


def _probe(distances, total=4, size=2, batch=1, threshold=0.5):
    """A probe over scripted per-image distances (image i has distances[i]); records what it drew."""
    from originality.stopping import ReconstructionProbe

    drawn = []

    def draw(start, count):
        drawn.append((start, count))
        return list(range(start, start + count))

    probe = ReconstructionProbe(every=5, size=size, total=total, batch=batch, threshold=threshold, draw=draw,
                                score=lambda images: [distances[i] for i in images])
    return probe, drawn


def test_a_probe_whose_first_images_fail_draws_no_more():
    probe, drawn = _probe([0.9, 0.8, 0.0, 0.0])
    assert not probe.passes(5)
    assert drawn == [(0, 2)] and probe.images == [] and probe.history == [(5, pytest.approx(0.85), 2)]


def test_a_probe_stops_only_when_the_whole_set_passes():
    probe, drawn = _probe([0.0, 0.1, 0.2, 0.3])  # mean 0.15 over all four
    assert probe.passes(10)
    assert drawn == [(0, 2), (2, 1), (3, 1)]  # the first two, then the rest in batches, with their seeds
    assert probe.images == [0, 1, 2, 3] and probe.distances == [0.0, 0.1, 0.2, 0.3]
    # lucky first images, then the set cannot pass any more: it gives up without drawing the last one
    probe, drawn = _probe([0.0, 0.2, 1.9, 0.0])  # 2.1 > 0.5 * 4 after three
    assert not probe.passes(5) and drawn == [(0, 2), (2, 1)] and probe.images == []
    assert not probe.due(4) and probe.due(10)


def test_invert_stops_when_the_probe_passes(session_inputs):
    from originality.stopping import STOP_PROBE

    pipe, mean, std = session_inputs
    calls = []

    class Always:
        every = 3

        def due(self, step):
            return step % self.every == 0

        def passes(self, step):
            calls.append(step)
            self.history = [(step, 0.1, 2)]
            return len(calls) == 2

    with TokenSession(pipe) as session:
        ph = session.add("<s1>", 1, initializer_id(session.tokenizer, "house"))
        events, _ = drain(invert(session.pipeline, mean, std, ph, OBJECT_TEMPLATES, steps=20, batch_size=2,
                                 learning_rate=5e-2, seed=3, probe=Always()))
    assert calls == [3, 6] and [e.step for e in events] == list(range(1, 7))
    assert events[-1].stop_reason == STOP_PROBE and events[2].probe_distance == 0.1
    assert events[1].probe_distance is None


def test_a_passing_probe_is_the_lengths_reconstructions(session_inputs):
    from originality import AnalysisConfig, analyze
    from originality.analysis import generate
    from originality.stopping import STOP_PROBE

    pipe = session_inputs[0]
    query = Image.fromarray(np.full((64, 64, 3), 200, np.uint8))
    config = AnalysisConfig.preset("fast", steps=30, batch_size=2, num_reconstructions=3, num_inference_steps=2,
                                   max_tokens=1, probe_every=4, probe_size=1, generation_batch_size=2)
    model = _scripted_model(pipe, [0.1] * 10)  # every image at distance 0.1 <= threshold 0.5
    report = analyze(query, config, model)
    (r,) = report.results
    assert (r.steps_used, r.stop_reason, len(r.reconstructions)) == (4, STOP_PROBE, 3)
    assert r.probes == [(4, pytest.approx(0.1), 3)] and report.label == "1"
    assert model.distance.calls == 2  # the probe's first image, then the other two in one batch: none drawn again
    # the images are what the final tokens draw, image i from the latent seed image_seed(0) + i = i
    with TokenSession(pipe) as session:
        ph = session.add(r.token, 1, 0)
        session.set_embeddings(ph, r.embeddings)
        again = generate(session.pipeline, f"a photo of {r.token}", 3, seed=0,
                         config=report_config(report), resolution=64)
    for a, b in zip(again, r.reconstructions):
        assert np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max() <= 1


def report_config(report):
    from originality import AnalysisConfig

    return AnalysisConfig.from_dict(report.config)


def test_decide_early_stops_drawing_once_a_length_cannot_pass(session_inputs):
    from originality import AnalysisConfig, Generating, iter_analyze

    pipe = session_inputs[0]
    query = Image.fromarray(np.full((64, 64, 3), 200, np.uint8))
    config = AnalysisConfig.preset("fast", steps=1, batch_size=2, num_reconstructions=4, num_inference_steps=2,
                                   max_tokens=1, generation_batch_size=1, decide_early=True)
    # 0.9 each, threshold 0.5 over 4 images: after 3 the sum 2.7 > 2.0, so the 4th cannot save it
    events = list(iter_analyze(query, config, _scripted_model(pipe, [0.9] * 10)))
    drawn = [e.done for e in events if isinstance(e, Generating) and e.what == "reconstructions"]
    (r,) = events[-1].report.results
    assert drawn == [1, 2, 3] and len(r.distances) == 3 and not r.distance_passed
    from originality.cli import length_line
    from originality.app.views import RunView, row_header

    assert "decided after 3 of 4 reconstructions" in length_line(r, PassRule(0.5), config.num_reconstructions)
    view = RunView.from_report(events[-1].report)
    assert "decided after 3 of 4 reconstructions" in row_header(view, view.lengths[1])
    from originality.html_report import render

    assert "Learned in 1 step (step cap); decided after 3 of 4 reconstructions." in render(events[-1].report)
    full = list(iter_analyze(query, config.replace(decide_early=False), _scripted_model(pipe, [0.9] * 10)))
    assert len(full[-1].report.results[0].distances) == 4 and full[-1].report.label == events[-1].report.label
