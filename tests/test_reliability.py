"""The test-retest benchmark (`python -m originality.experiments.reliability`): its statistics on known
numbers, and a tiny run end to end (resumable, each run with its own seed)."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from originality.config import AnalysisConfig
from originality.experiments import reliability
from originality.record import repeat_seed
from originality.repeatability import Repeatability


def test_icc_2_1_matches_shrout_and_fleiss():
    # Shrout & Fleiss (1979), Table 2: six targets rated by four judges; ICC(2,1) = 0.29
    table = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]], float)
    assert reliability.icc_2_1(table) == pytest.approx(0.29, abs=0.005)
    assert reliability.icc_2_1(np.array([[1, 1], [2, 2], [5, 5]], float)) == pytest.approx(1.0)
    assert reliability.icc_2_1(np.ones((3, 2))) is None and reliability.icc_2_1(np.ones((1, 2))) is None


def test_fleiss_kappa_corrects_agreement_for_chance_by_hand():
    # two runs (Scott's pi): 3 of 4 items agree; pooled labels 1 x3, 2 x5: chance (3/8)^2 + (5/8)^2 = 0.53125
    assert reliability.fleiss_kappa([[1, 1], [1, 2], [2, 2], [2, 2]]) == pytest.approx((0.75 - 0.53125) / 0.46875)
    # three runs: items agree 1/3 and 1 (pairs of runs alike); pooled 1 x2, 2 x4: chance 5/9
    assert reliability.fleiss_kappa([[1, 1, 2], [2, 2, 2]]) == pytest.approx(0.25)
    assert reliability.fleiss_kappa([[1, 1], [2, 2]]) == 1.0 and reliability.fleiss_kappa([[1, 2], [2, 1]]) == -1.0
    # agreement that chance alone gives: most labels 1, the one disagreement where a 2 turns up
    assert reliability.fleiss_kappa([[1, 1]] * 8 + [[1, 2]]) < 0.0
    assert reliability.fleiss_kappa([[1, 1], [1, 1]]) is None and reliability.fleiss_kappa([]) is None


def test_intervals_resample_drawings_with_their_replicates():
    def image(group, index, labels, replicate):
        return {"group": group, "index": index, "replicate": replicate, "split": "test",
                "runs": {str(r): run_record(label, float(label)) for r, label in enumerate(labels)}}

    # eight drawings, each run twice with two sets of seeds: two of them flip in both replicates
    images = [image(("common", "unseen")[i % 2], i, ("1", "2") if i < 2 else (str(1 + i % 2),) * 2, rep)
              for i in range(8) for rep in (0, 1)]
    data = {"runs": 2, "groups": ["common", "unseen"], "config": {"max_tokens": 5}, "name": "x", "split": "test",
            "images": images, "pooled_from": ["a.json", "b.json"]}
    spans = reliability.intervals(data, resamples=400)
    figures = reliability.summarize(data)["all"]
    assert figures["same_label"] == 0.75
    low, high = spans["same_label"]
    # a drawing's replicates are drawn together, so the share moves in steps of one drawing in eight
    assert low < 0.75 < high and {round(8 * low, 6) % 1, round(8 * high, 6) % 1} == {0.0}
    assert spans["within_one"] == (1.0, 1.0)
    assert "95% intervals, resampling the 8 drawings with their replicates: same label" in \
        "\n".join(reliability.summary_lines(data))


def run_record(label: str, continuous: float) -> dict:
    return {"label": label, "continuous": continuous, "passes": 100, "seconds": 1.0}


def test_summary_counts_agreement_within_one_and_order():
    data = {"runs": 2, "groups": ["common", "unseen"], "config": {"max_tokens": 5}, "name": "x", "split": "test",
            "images": [
                {"group": "common", "index": 0, "runs": {"0": run_record("1", 1.1), "1": run_record("1", 1.2)}},
                {"group": "common", "index": 1, "runs": {"0": run_record("1", 1.4), "1": run_record("2", 1.8)}},
                {"group": "unseen", "index": 0, "runs": {"0": run_record("5+", 5.8), "1": run_record("3", 3.5)}},
                {"group": "unseen", "index": 1, "runs": {"0": run_record("4", 4.1)}},  # one run: not counted
            ]}
    s = reliability.summarize(data)
    assert s["all"]["images"] == 3 and s["common"]["images"] == 2 and s["unseen"]["images"] == 1
    assert s["all"]["same_label"] == pytest.approx(1 / 3) and s["all"]["within_one"] == pytest.approx(2 / 3)
    assert s["common"]["same_label"] == 0.5 and s["common"]["within_one"] == 1.0
    assert s["all"]["spearman_label"] > 0.8 and s["all"]["median_label"] == 1.5  # "5+" counts as 6
    assert "ALL" in "\n".join(reliability.summary_lines(data))


def test_the_one_token_gate_counts_runs_that_pass_at_the_first_length():
    data = {"runs": 2, "groups": ["common", "unseen"], "config": {"max_tokens": 5}, "name": "x", "split": "test",
            "images": [
                {"group": "common", "index": 0, "runs": {"0": run_record("1", 1.1), "1": run_record("1", 1.2)}},
                {"group": "common", "index": 1, "runs": {"0": run_record("1", 1.4), "1": run_record("2", 1.8)}},
                {"group": "common", "index": 2, "runs": {"0": run_record("1", 1.0)}},  # one run: not counted
                {"group": "unseen", "index": 0, "runs": {"0": run_record("5+", 5.8), "1": run_record("3", 3.5)}},
            ]}
    assert reliability.one_token_passes(data) == {"common": 0.75, "unseen": 0.0}
    assert "COMMON 75%, UNSEEN 0% (gate: COMMON >= 90%, not met)" in "\n".join(reliability.summary_lines(data))
    data["images"][1]["runs"]["1"]["label"] = "1"
    assert "(gate: COMMON >= 90%, met)" in "\n".join(reliability.summary_lines(data))


def test_coin_tosses_count_the_lengths_whose_interval_still_holds_the_threshold():
    def run(*lengths):
        return {"label": "2", "continuous": 2.0, "passes": 1, "seconds": 1.0,
                "lengths": [{"m": m, "distances": list(d)} for m, d in enumerate(lengths, 1)]}

    decided_fail, at_threshold, decided_pass = [0.9, 0.8, 0.9, 0.8], [0.0, 0.6, 0.0, 0.6], [0.0, 0.1, 0.0, 0.1]
    data = {"runs": 2, "groups": ["common"], "config": {"max_tokens": 5, "threshold": 0.3}, "name": "x",
            "split": "test", "images": [
                {"group": "common", "index": 0, "runs": {"0": run(decided_fail, decided_pass),
                                                         "1": run(at_threshold, decided_pass)}},
                {"group": "common", "index": 1, "runs": {"0": run(at_threshold)}},  # one run: not counted
            ]}
    assert reliability.coin_tosses(data) == {"lengths": 0.25, "count": 4, "runs": 0.5}
    assert "25% of 4 lengths; runs with one: 50%" in "\n".join(reliability.summary_lines(data))
    # under a fixed doubt the test is the interval against the doubt's line: 8 images at mean 0.25 hold 0.3 in their
    # interval (0.16-0.34) but not the line of 24 images' margin (0.345), so that length is decided there
    near = [0.15, 0.35] * 4
    data["images"][0]["runs"]["0"] = run(near, decided_pass)
    assert reliability.coin_tosses(data) == {"lengths": 0.5, "count": 4, "runs": 1.0}
    data["config"].update(undecided_as="pass", doubt_images=24)
    assert reliability.coin_tosses(data) == {"lengths": 0.25, "count": 4, "runs": 0.5}
    assert "the doubt's line (24 images' margin) inside" in "\n".join(reliability.summary_lines(data))


def test_two_settings_compared_on_the_drawings_both_completed(tmp_path, capsys):
    def result(name, split, labels):
        # labels: per drawing, the two runs' labels; drawings alternate COMMON / UNSEEN, the continuous score = label
        images = [{"group": ("common", "unseen")[i % 2], "index": i // 2,
                   "runs": {str(r): run_record(label, float(label.rstrip("+"))) for r, label in enumerate(pair)}}
                  for i, pair in enumerate(labels)]
        return {"runs": 2, "groups": ["common", "unseen"], "config": {"max_tokens": 5}, "name": name, "split": split,
                "images": images}

    same = [("1", "1"), ("4", "4"), ("1", "1"), ("3", "3"), ("2", "2"), ("5", "5")]
    reference = result("ref", "dev", same)
    assert reliability.compare(reference, reference)["same_label"] == {
        "value": 1.0, "reference": 1.0, "difference": 0.0, "interval": (0.0, 0.0)}
    # one drawing of six flips, and a seventh drawing the reference never completed does not count
    new = result("new", "dev", [("1", "2"), *same[1:], ("1", "1")])
    new["images"].append({"group": "common", "index": 9, "runs": {"0": run_record("1", 1.0)}})
    out = reliability.compare(new, reference, resamples=500)
    assert out["images"] == 6
    assert out["same_label"]["difference"] == pytest.approx(-1 / 6)
    low, high = out["same_label"]["interval"]
    assert low < -1 / 6 < high <= 0.0  # a resample without the flipped drawing shows no difference
    assert out["mean_passes"]["difference"] == 0.0
    with pytest.raises(ValueError, match="different splits"):
        reliability.compare(result("t", "test", same), reference)
    # from the command line
    for name, data in (("new", new), ("ref", reference)):
        (tmp_path / f"{name}.json").write_text(json.dumps(data))
    assert reliability.main(["--summary", str(tmp_path / "new.json"), "--against", str(tmp_path / "ref.json")]) == 0
    printed = capsys.readouterr().out
    assert "new against ref (dev, the 6 drawings both completed" in printed
    assert "same_label" in printed and "-0.17 (" in printed


def test_recorded_runs_judged_again_with_the_benefit_of_the_doubt(tmp_path, capsys):
    config = {"max_tokens": 5, "threshold": 0.3, "num_inference_steps": 2, "guidance_scale": 3.0, "batch_size": 2,
              "restarts": 2, "selection_images": 1}  # a length: 10 per restart's inversion, 4 per image

    def length(m, distances, restarts=None):
        out = {"m": m, "distances": distances, "distance_passed": sum(distances) / len(distances) <= 0.3,
               "check_passed": True, "steps_used": 5}
        return out if restarts is None else dict(out, selection_distances=[[0.5]] * restarts)

    held, missed, close = [0.0, 0.6, 0.2, 0.5], [0.8, 0.9, 0.8, 0.9], [0.1, 0.2, 0.1, 0.2]  # held: mean 0.33
    runs = {"0": {"label": "2", "score": 2, "continuous": 2.0, "seconds": 1.0,
                  "passes": 2 * 14 + 4 * 4 + 1 * 14 + 4 * 4,
                  "lengths": [length(1, held, 2), length(2, close, 1)]},
            "1": {"label": "2", "score": 2, "continuous": 2.0, "passes": 14 + 16 + 14 + 16, "seconds": 1.0,
                  "lengths": [length(1, missed, 1), length(2, close, 1)]}}
    data = {"runs": 2, "groups": ["common"], "config": config, "name": "x", "split": "test",
            "images": [{"group": "common", "index": 0, "runs": runs}]}
    again = reliability.rejudged(data, "pass")
    first, second = again["images"][0]["runs"]["0"], again["images"][0]["runs"]["1"]
    assert first["label"] == "1" and first["score"] == 1 and len(first["lengths"]) == 1
    assert first["passes"] == 2 * 14 + 4 * 4 and first["continuous"] < 2.0
    assert second == dict(runs["1"], continuous=second["continuous"])  # shown to miss at m = 1: the run is unchanged
    assert again["config"]["undecided_as"] == "pass" and data["config"].get("undecided_as") is None
    # named for the settings it now has: steady's own rule drops the override, another preset's gains it
    assert reliability.rejudged_name("steady-undecided_as=mean", "pass") == "steady"
    assert reliability.rejudged_name("fast", "pass") == "fast-undecided_as=pass"
    # records from before the selection distances were kept: the restarts' share of the passes spread evenly
    old = json.loads(json.dumps(data))
    for x in old["images"][0]["runs"]["0"]["lengths"]:
        del x["selection_distances"]
    estimate = reliability.rejudged(old, "pass")["images"][0]["runs"]["0"]
    assert estimate["passes_estimated"] and estimate["passes"] == 16 + 1.5 * 14
    # from the command line, as a summary
    path = tmp_path / "x-test.json"
    path.write_text(json.dumps(data))
    assert reliability.main(["--summary", str(path), "--undecided-as", "pass"]) == 0
    assert "called passes (undecided_as 'pass')" in capsys.readouterr().out


def test_flip_causes_tell_different_inversions_from_sampling():
    def run(label, *lengths):
        return {"label": label, "continuous": 2.0, "passes": 1, "seconds": 1.0,
                "lengths": [{"m": m, "distances": d, "distance_passed": p, "check_passed": c}
                            for m, (d, p, c) in enumerate(lengths, 1)]}

    far_pass, far_fail = ([0.0, 0.1, 0.0, 0.1] * 3, True, True), ([0.6, 0.7, 0.6, 0.7] * 3, False, True)
    near_pass, near_fail = ([0.0, 0.6, 0.2, 0.4], True, True), ([0.2, 0.6, 0.2, 0.5], False, True)
    check_fail = ([0.0, 0.1, 0.0, 0.1], True, False)
    data = {"runs": 2, "groups": ["common"], "config": {"max_tokens": 5, "threshold": 0.3}, "name": "x",
            "split": "test", "images": [
                {"group": "common", "index": 0, "runs": {"0": run("1", far_pass), "1": run("2", far_fail, far_pass)}},
                {"group": "common", "index": 1, "runs": {"0": run("1", near_pass), "1": run("2", near_fail, far_pass)}},
                {"group": "common", "index": 2, "runs": {"0": run("1", far_pass), "1": run("2", check_fail, far_pass)}},
                {"group": "common", "index": 3, "runs": {"0": run("1", far_pass), "1": run("1", far_pass)}},
            ]}
    assert reliability.flip_causes(data) == {"flips": 3, "inversion": 1, "sampling": 1, "check": 1}
    assert "labels that differ: 3;" in "\n".join(reliability.summary_lines(data))


def test_length_noise_splits_a_lengths_movement_between_runs():
    def run(*lengths):
        return {"label": "5+", "continuous": 6.0, "passes": 1, "seconds": 1.0,
                "lengths": [{"m": m, "distances": d} for m, d in enumerate(lengths, 1)]}

    data = {"images": [
        # m = 1: means 0.2 and 0.6, (0.4)^2 = 0.16 apart; each run's sampling variance 0.02 / 2 = 0.01
        {"group": "common", "index": 0, "runs": {"0": run([0.1, 0.3], [0.5, 0.5]), "1": run([0.5, 0.7])}},
        # m = 1 again: the same means, no sampling spread; its m = 2 has no partner (run 1 stopped at m = 1)
        {"group": "rare", "index": 0, "runs": {"0": run([0.4, 0.4]), "1": run([0.4, 0.4])}},
        {"group": "rare", "index": 1, "runs": {"0": run([0.9, 0.1])}},  # one run: not a pair
    ]}
    noise = reliability.length_noise(data)
    assert list(noise) == [1] and noise[1]["pairs"] == 2
    assert noise[1]["sd"] == pytest.approx((0.16 / 2 / 2) ** 0.5)  # E[diff^2] = (0.16 + 0) / 2, sd = sqrt(E / 2)
    assert noise[1]["sampling"] == pytest.approx((0.02 / 2) / (0.16 / 2))
    data["name"], data["split"], data["runs"], data["config"], data["groups"] = "x", "test", 2, {"max_tokens": 5}, []
    assert "m=1 sd 0.200 (12% sampling, 2 pairs)" in "\n".join(reliability.summary_lines(data))


def test_a_tiny_run_is_independent_per_run_and_resumable(tiny_shapes_model, tmp_path, capsys):
    args = ["--model", str(tiny_shapes_model), "--out", str(tmp_path), "--per-group", "1", "--groups", "common",
            "--preset", "fast",
            "--device", "cpu", "--dtype", "float32",
            "--set", "steps=2", "max_tokens=1", "num_reconstructions=2", "num_inference_steps=2", "batch_size=2",
            "world_check=\"off\"", "--name", "tiny"]
    assert reliability.main(args) == 0
    data = json.loads((tmp_path / "tiny-test.json").read_text())
    runs = data["images"][0]["runs"]
    assert set(runs) == {"0", "1"} and data["layout_seed"] == reliability.SPLITS["test"]
    for record in runs.values():
        assert record["label"] in ("1", "1+") and 1.0 <= record["continuous"] <= 2.0 and record["passes"] > 0
        assert len(record["lengths"][0]["distances"]) == 2
        assert (record["device"], record["dtype"]) == ("cpu", "float32")  # where it ran, for GPU and CPU runs
    # each run is its own analysis seed (its own inversion noise and reconstruction latents), apart from any
    # seed a `seeds` K run of the other would use
    assert [runs[r]["seed"] for r in ("0", "1")] == [0, reliability.RUN_SEED_STRIDE]
    assert reliability.RUN_SEED_STRIDE > data["config"]["seeds"]
    capsys.readouterr()
    assert reliability.main(args) == 0  # a rerun finds both runs done and analyses nothing
    assert " run " not in capsys.readouterr().out
    assert reliability.main([*args[:-2], "--name", "tiny", "--runs", "3"]) == 2  # other settings: refused
    assert reliability.main([*args, "--drawing", "other"]) == 2  # another program's drawings: another result
    assert "holds other settings" in capsys.readouterr().err
    # a file written before a setting existed (no `average_tail` in its config) resumes, and is rewritten whole;
    # the same file with that setting at another value is another setting
    path = tmp_path / "tiny-test.json"
    older = json.loads(path.read_text())
    del older["config"]["average_tail"]
    del older["drawing"]  # and before the drawing could be chosen: the world's varied drawings
    del older["images"][0]["runs"]["1"]
    path.write_text(json.dumps(older))
    capsys.readouterr()
    assert reliability.main(args) == 0
    assert capsys.readouterr().out.count(" run ") == 1  # only the missing run is analysed
    assert json.loads(path.read_text())["config"]["average_tail"] == 0
    assert reliability.main([*args, "--set", "average_tail=0.5"]) == 2


def test_replicates_pool_into_one_result_compared_replicate_with_replicate(tmp_path, capsys, monkeypatch):
    config = AnalysisConfig.preset("steady").to_dict()

    def result(name, labels, seed=0, **changes):
        # labels: per drawing, the two runs' labels; drawings cycle COMMON / RARE / UNSEEN, continuous = label
        images = [{"group": ("common", "rare", "unseen")[i % 3], "index": i // 3, "caption": "",
                   "runs": {str(r): run_record(label, float(label)) for r, label in enumerate(pair)}}
                  for i, pair in enumerate(labels)]
        return {"runs": 2, "groups": ["common", "rare", "unseen"], "config": dict(config, seed=seed, **changes),
                "name": name, "split": "test", "images": images, "format_version": 1}

    first = result("steady", [("1", "1"), ("2", "2"), ("4", "4"), ("1", "2"), ("2", "2"), ("3", "3")])
    again = result("steady-seed=2", [("1", "1"), ("1", "3"), ("4", "4"), ("1", "1"), ("2", "2"), ("3", "3")], seed=2)
    both = reliability.pooled([first, again], ["a.json", "b.json"])
    overall = reliability.summarize(both)["all"]
    # each of the six drawings once per replicate: 12 pairs of runs, 10 of them with one label, 11 within one
    assert overall["images"] == 12
    assert overall["same_label"] == pytest.approx(10 / 12) and overall["within_one"] == pytest.approx(11 / 12)
    assert both["name"] == "steady" and both["split"] == "test"

    # published: the figures say how many drawings and how many sets of seeds, and a report reads them so
    entry = reliability.published_entry(both, "a.json + b.json")
    figures = entry["figures"]
    assert (figures["images"], figures["drawings"], figures["replicates"]) == (12, 6, 2)
    sentence = Repeatability(world="shapes", name="steady", **figures).sentence()
    assert "6 drawings of the shapes world, each analysed 4 times (twice with each of 2 sets of seeds)" in sentence
    assert "about 8 times in 10" in sentence

    # a result on another program's drawings is not published as the setting's figures, nor pooled with them
    other = dict(again, drawing="other")
    with pytest.raises(ValueError, match="other drawings are a check of how far they carry"):
        reliability.published_entry(other, "o.json")
    with pytest.raises(ValueError, match=r"o.json is not a replicate of a.json \(other drawing\)"):
        reliability.pooled([first, other], ["a.json", "o.json"])
    assert "test, other drawings, 2 runs" in reliability.summary_lines(other)[0]

    # a result under other measured settings is not a replicate
    with pytest.raises(ValueError, match="c.json is not a replicate of a.json .other measured settings"):
        reliability.pooled([first, result("other", [("1", "1")] * 6, steps=20)], ["a.json", "c.json"])

    # against a pooled reference, replicate with replicate; the bootstrap resamples the six drawings
    reference = reliability.pooled([result("ref", [("1", "1")] * 6), result("ref", [("1", "1")] * 6, seed=2)],
                                   ["r.json", "s.json"])
    out = reliability.compare(both, reference, resamples=300)
    assert (out["images"], out["drawings"]) == (12, 6)
    assert out["same_label"]["difference"] == pytest.approx(10 / 12 - 1)
    low, high = out["same_label"]["interval"]
    assert low < 10 / 12 - 1 < high <= 0.0

    # from the command line
    paths = {}
    for name, data in (("a", first), ("b", again), ("r", result("ref", [("1", "1")] * 6)),
                       ("s", result("ref", [("1", "1")] * 6, seed=2))):
        paths[name] = str(tmp_path / f"{name}.json")
        (tmp_path / f"{name}.json").write_text(json.dumps(data))
    assert reliability.main(["--summary", paths["a"], paths["b"], "--pool",
                             "--against", paths["r"], paths["s"]]) == 0
    printed = capsys.readouterr().out
    assert "pooled: 2 replicates" in printed and "the 12 pairs of runs both completed, on 6 drawings" in printed
    assert reliability.main(["--summary", paths["a"], paths["r"], "--pool"]) == 0  # the same settings, named apart
    assert reliability.main(["--summary", paths["a"], str(tmp_path / "missing.json"), "--pool"]) == 2
    assert "missing.json" in capsys.readouterr().err

    # published from the command line: the entry carries the interval the summary printed, bootstrapped once
    entries, calls = [], []
    bootstrap = reliability.intervals
    monkeypatch.setattr(reliability, "publish", entries.append)
    monkeypatch.setattr(reliability, "intervals", lambda data: calls.append(data) or bootstrap(data, resamples=300))
    assert reliability.main(["--summary", paths["a"], paths["b"], "--pool", "--publish"]) == 0
    low, high = entries[0]["figures"]["same_label_interval"]
    assert len(calls) == 1 and f"same label {low:.0%}-{high:.0%}" in capsys.readouterr().out


def test_clear_and_close_calls_split_how_often_a_rerun_repeats_the_label():
    sure, never, coin = [0.1, 0.1], [0.9, 0.9], [0.2, 0.4]  # threshold 0.3; coin: the mean on the threshold

    def run(label, *lengths):
        return {"label": label, "score": int(label), "continuous": 1.0, "passes": 1, "seconds": 1.0,
                "lengths": [{"m": m, "distances": d, "check_passed": True, "distance_passed": m == len(lengths)}
                            for m, d in enumerate(lengths, 1)]}

    config = AnalysisConfig.preset("fast", threshold=0.3).to_dict()
    data = {"runs": 2, "groups": ["common", "rare", "unseen"], "config": config, "name": "x", "split": "test",
            "images": [
                # both runs far from the line, the same label: two clear calls that repeat
                {"group": "common", "index": 0, "runs": {"0": run("1", sure), "1": run("1", sure)}},
                # run 0 failed a coin toss at m = 1 (its label 2 had half a chance): a close call; run 1 a clear 1
                {"group": "rare", "index": 0, "runs": {"0": run("2", coin, sure), "1": run("1", sure)}},
                {"group": "unseen", "index": 0, "runs": {"0": run("3", never, never, sure),
                                                          "1": run("3", never, never, sure)}},
            ]}
    data["images"] += [dict(img, index=1) for img in data["images"]]  # twice over: enough drawings to publish
    assert reliability.run_label_probability(data["images"][1]["runs"]["0"], config) == pytest.approx(0.5)
    figures = reliability.summarize(data)["all"]
    assert figures["clear_share"] == pytest.approx(5 / 6)
    assert figures["same_label_clear"] == pytest.approx(4 / 5) and figures["same_label_close"] == 0.0
    assert "clear calls (a run's own label probability >= 95%): 83% of runs; a rerun gave the same label after a " \
           "clear call 80%, after a close call 0%" in "\n".join(reliability.summary_lines(data))
    published = reliability.published_entry(data, "x.json")["figures"]
    assert (published["clear_share"], published["same_label_close"]) == (pytest.approx(5 / 6), 0.0)
    assert Repeatability(world="shapes", name="x", **published).same_label_clear == pytest.approx(4 / 5)


def test_second_opinions_added_to_a_recorded_result_are_the_engine_s_own(tiny_shapes_model, tmp_path, capsys,
                                                                          monkeypatch):
    from originality import analysis
    from originality.labels import first_pass

    # random weights give no close call: every "M+" run asks for one here, through the lengths but the last (a second
    # run shorter than max_tokens, whose record must still be the engine's)
    monkeypatch.setattr(analysis, "needs_second_opinion", lambda results, config: (
        config.max_tokens - 1 if config.second_opinion and first_pass(results) is None else 0))
    common = ["--model", str(tiny_shapes_model), "--out", str(tmp_path), "--per-group", "1", "--groups", "common",
              "--preset", "fast",
              "--device", "cpu", "--dtype", "float32"]
    tiny = ["steps=2", "max_tokens=2", "num_reconstructions=2", "num_inference_steps=2", "batch_size=2",
            "world_check=\"off\"", "threshold=0.01"]
    assert reliability.main([*common, "--set", *tiny, "--name", "tiny"]) == 0
    assert reliability.main([*common, "--set", *tiny, "second_opinion=true", "--name", "direct"]) == 0
    assert reliability.main([*common, "--second-opinions-of", str(tmp_path / "tiny-test.json")]) == 0
    derived = json.loads((tmp_path / "tiny-second_opinion=True-test.json").read_text())
    direct = json.loads((tmp_path / "direct-test.json").read_text())
    assert derived["config"] == direct["config"] and derived["config"]["second_opinion"] is True
    for run, same in zip(derived["images"][0]["runs"].values(), direct["images"][0]["runs"].values()):
        assert run["second_opinion"] is not None and run["second_opinion"]["seed"] == repeat_seed(run["seed"], 1)
        for key in ("label", "score", "passes", "second_opinion", "lengths"):
            assert run[key] == same[key], key
        # the derived continuous score takes in the second opinion, from the first run's distances as recorded (5
        # digits)
        assert run["continuous"] == pytest.approx(same["continuous"], abs=1e-4)
    # resumable: a rerun adds nothing; a result that already ran with it is refused
    capsys.readouterr()
    assert reliability.main([*common, "--second-opinions-of", str(tmp_path / "tiny-test.json")]) == 0
    assert " run " not in capsys.readouterr().out
    assert reliability.main([*common, "--second-opinions-of", str(tmp_path / "direct-test.json")]) == 2
    # a file of that name with other settings is not resumed into
    path = tmp_path / "tiny-second_opinion=True-test.json"
    path.write_text(json.dumps(dict(derived, config=dict(derived["config"], threshold=0.5))))
    assert reliability.main([*common, "--second-opinions-of", str(tmp_path / "tiny-test.json")]) == 2
    assert "holds other settings" in capsys.readouterr().err


def _world_drawings(folder, groups: dict[str, int]) -> None:
    """`groups[g]` of the test split's layouts of each group g, drawn by the world's renderer into `folder/g/`."""
    from originality.experiments.figure6 import query_image

    for group, count in groups.items():
        (folder / group).mkdir(parents=True)
        for index in range(count):
            query_image(group, reliability.SPLITS["test"], index, "exact")[1].save(folder / group / f"{index}.png")


TINY = ["steps=2", "max_tokens=1", "num_reconstructions=2", "num_inference_steps=2", "batch_size=2"]


def test_your_own_images_are_measured_from_their_group_folders(tiny_shapes_model, tmp_path, capsys):
    folder = tmp_path / "mine"
    _world_drawings(folder, {"common": 2, "unseen": 1})
    (folder / "notes.txt").write_text("not an image, and not in a group: not read")
    args = ["--images", str(folder), "--model", str(tiny_shapes_model), "--out", str(tmp_path / "out"),
            "--preset", "fast",
            "--device", "cpu", "--dtype", "float32", "--set", *TINY, "--name", "mine"]
    assert reliability.main(args) == 0
    out = capsys.readouterr().out
    data = json.loads((tmp_path / "out" / "mine-files.json").read_text())
    assert data["split"] == reliability.FILES_SPLIT and data["images_from"] == str(folder)
    assert data["files"] == {f: hashlib.sha256((folder / f).read_bytes()).hexdigest()
                             for f in ("common/0.png", "common/1.png", "unseen/0.png")}
    assert sorted((img["group"], img["index"], img["file"]) for img in data["images"]) == [
        ("common", 0, "common/0.png"), ("common", 1, "common/1.png"), ("unseen", 0, "unseen/0.png")]
    for img in data["images"]:
        assert [img["runs"][r]["seed"] for r in ("0", "1")] == [0, reliability.RUN_SEED_STRIDE]
    assert "common/1.png run 1 ->" in out and f"the images in {folder}" in out and data["world"] == "shapes"
    assert "(gate: COMMON >= 90%" in out  # the shapes model's one-token gate
    assert "UNSEEN" in out and "ALL       3" in out  # the groups' figures and the overall ones
    # resumable; a folder whose images changed is another benchmark, refused rather than mixed in
    assert reliability.main(args) == 0 and " run " not in capsys.readouterr().out
    (folder / "common" / "1.png").write_bytes((folder / "unseen" / "0.png").read_bytes())
    assert reliability.main(args) == 2 and "holds other settings (its images" in capsys.readouterr().err
    # never published: the published figures are the benchmark's test split
    assert reliability.main(["--summary", str(tmp_path / "out" / "mine-files.json"), "--publish"]) == 2
    assert "only test-split results are published" in capsys.readouterr().err
    # the summary names the images a rerun moved
    moved = json.loads((tmp_path / "out" / "mine-files.json").read_text())
    assert "images whose runs gave other labels" not in out  # both runs of each gave one label
    image = next(img for img in moved["images"] if img["file"] == "unseen/0.png")
    image["runs"]["1"]["label"] = "1" if image["runs"]["0"]["label"] != "1" else "2"
    (tmp_path / "moved.json").write_text(json.dumps(moved))
    assert reliability.main(["--summary", str(tmp_path / "moved.json")]) == 0
    labels = " / ".join(image["runs"][r]["label"] for r in ("0", "1"))
    assert f"images whose runs gave other labels: unseen/0.png {labels}\n" in capsys.readouterr().out


def test_the_settings_measured_by_default_are_the_ones_the_app_and_the_cli_use():
    from originality.config import DEFAULT_PRESET

    assert reliability.build_parser().parse_args(["--images", "mine"]).preset == DEFAULT_PRESET


def test_a_folder_s_groups_are_found_as_people_name_and_copy_them(tmp_path):
    """Group folders in capitals (the issue writes COMMON, RARE, UNSEEN) and a folder unzipped or copied from a Mac
    (a __MACOSX/ folder, ._name.png files beside the images) are read as their groups' images, and nothing else."""
    folder = tmp_path / "mine"
    _world_drawings(folder, {"common": 2, "unseen": 1})
    (folder / "common").rename(folder / "COMMON")
    (folder / "unseen").rename(folder / "Unseen")
    (folder / "COMMON" / "._0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (folder / "__MACOSX" / "COMMON").mkdir(parents=True)
    (folder / "__MACOSX" / "COMMON" / "._0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (folder / ".ipynb_checkpoints").mkdir()
    queries = reliability.folder_queries(folder, list(reliability.GROUPS))
    assert queries == [("common", 0, "COMMON/0.png"), ("unseen", 0, "Unseen/0.png"), ("common", 1, "COMMON/1.png")]
    (folder / "common").mkdir()  # two folders of one group: which one is meant is not guessed
    with pytest.raises(ValueError, match="one subfolder per group, found COMMON and common"):
        reliability.folder_queries(folder, list(reliability.GROUPS))


def test_a_folder_s_unusable_images_are_refused_before_any_model_loads(tmp_path, capsys, monkeypatch):
    from originality import models

    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("a model loaded"))
    folder = tmp_path / "mine"
    _world_drawings(folder, {"common": 1})
    (folder / "rare").mkdir()
    (folder / "rare" / "broken.png").write_bytes(b"not a png")
    Image.new("RGB", (64, 64), (90, 140, 60)).save(folder / "rare" / "meadow.png")
    assert reliability.main(["--images", str(folder), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "2 of the 3 images" in err and "(shapes world)" in err
    assert "rare/broken.png: not an image" in err and "rare/meadow.png: The image is not on a white background" in err
    assert "common/0.png" not in err
    (folder / "drafts").mkdir()
    assert reliability.main(["--images", str(folder), "--out", str(tmp_path / "out")]) == 2
    assert "subfolders must be named after the groups (common, rare, unseen)" in capsys.readouterr().err
    for stray in ("drafts", "rare"):
        shutil.rmtree(folder / stray)
    assert reliability.main(["--images", str(folder), "--split", "dev"]) == 2  # the benchmark's own layouts
    assert reliability.main(["--images", str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_a_folder_of_images_is_measured_in_the_stable_diffusion_world_too(tiny_sd_world, tmp_path, capsys,
                                                                           monkeypatch):
    from conftest import tiny_sd_options

    from originality import models

    load = models.load_model
    monkeypatch.setattr(models, "load_model", lambda model_id, device=None, dtype=None: load(
        model_id, **dict(tiny_sd_options(tiny_sd_world), dtype=dtype)))  # offline DreamSim and CLIP
    folder = tmp_path / "photos"
    (folder / "rare").mkdir(parents=True)
    rng = np.random.RandomState(0)
    Image.fromarray(rng.randint(0, 255, (80, 96, 3), dtype=np.uint8)).save(folder / "rare" / "a.jpg")
    model = tmp_path / "tiny-sd"  # its own name: a model loaded here is not the one other modules load lazily
    model.symlink_to(tiny_sd_world / "tiny-sd", target_is_directory=True)
    model = str(model)
    assert reliability.main(["--images", str(folder), "--model", model, "--out", str(tmp_path / "out"),
                             "--preset", "fast", "--set", *TINY, "num_edits=1", "--name", "sd"]) == 0
    data = json.loads((tmp_path / "out" / "sd-files.json").read_text())
    assert data["model_marker"] == {"model": model} and data["config"]["domain"] is not None
    runs = data["images"][0]["runs"]
    assert set(runs) == {"0", "1"} and all(len(run["lengths"][0]["distances"]) == 2 for run in runs.values())
    out = capsys.readouterr().out
    assert "RARE" in out and data["world"] == "stable-diffusion"
    assert "runs passing at m=1" in out and "gate" not in out  # the one-token gate is the shapes model's
