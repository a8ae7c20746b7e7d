"""Tests of the shapes-world tools: the quality gate (`evaluate`) and the Fig. 6 script (`figure6`).

The scoring logic is checked with stand-in pipelines that draw captions with the
world's own renderer (a perfect model, and one that draws everything small); the
two command lines run end to end on a randomly initialised shapes pipeline.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from originality.config import AnalysisConfig
from originality.shapes import renderer
from originality.experiments import shapes_threshold as calibrate, evaluate, figure6, robustness
from originality.shapes.judges import ElementDistance


class RenderingPipeline:
    """Stands in for a StableDiffusionPipeline: draws the caption's elements at seeded positions."""

    def __init__(self, size: str | None = None, keep: int | None = None):
        self.size = size  # force every element to this size (a model that gets sizes wrong)
        self.keep = keep  # draw only the first `keep` elements (a model that drops elements)

    def __call__(self, prompt, generator, **kwargs):
        images = []
        for text, g in zip(prompt, generator):
            text = text.split(" of ")[-1]  # drop a template such as "a photo of {}"
            specs = [tuple(part.split()) for part in text.split(" and ")]
            specs = [(shape, colour, self.size or size, texture) for size, colour, texture, shape in specs]
            specs = specs[: self.keep]
            rng = random.Random(int(torch.randint(0, 2**31, (1,), generator=g)))
            images.append(renderer.render(renderer.place(specs, rng)))
        return SimpleNamespace(images=images)


@dataclass
class FakeModel:
    pipeline: RenderingPipeline
    resolution: int = 64
    distance: ElementDistance = field(default_factory=ElementDistance)


CONFIG = AnalysisConfig.preset("fast", guidance_scale=3.0, generation_batch_size=3)


# --------------------------------------------------------------------------- evaluate


def test_seen_prompts() -> None:
    specs = evaluate.seen_prompts()
    singles = [s for s in specs if s.group == "singles"]
    pairs = [s for s in specs if s.group == "common pairs"]
    assert len(singles) == 15 and len(pairs) == 9
    assert singles[0].prompt == "big red full circle"
    assert {s.prompt for s in singles} == {f"big {c} full {s}" for s in renderer.SHAPES for c in renderer.COLOURS}
    assert "big green full circle and big blue full square" in {s.prompt for s in pairs}
    assert all(s.prompt == s.caption for s in specs)
    # a seeded subset of the colourings, and a template around every caption
    subset = evaluate.seen_prompts(common_combos=4, seed=1, template="a photo of {}")
    assert len(subset) == 19 and subset[0].prompt == "a photo of big red full circle"
    assert [s.prompt for s in subset] == [s.prompt for s in evaluate.seen_prompts(4, 1, "a photo of {}")]
    assert subset[-1].caption in {s.prompt for s in pairs}
    with pytest.raises(ValueError, match="common_combos"):
        evaluate.seen_prompts(common_combos=10)
    with pytest.raises(ValueError, match="template"):
        evaluate.seen_prompts(template="a photo of")


@pytest.mark.parametrize("template", [None, "a photo of {}"])
def test_a_perfect_model_passes(template) -> None:
    specs = evaluate.seen_prompts(common_combos=3, template=template)
    results, images = evaluate.evaluate(FakeModel(RenderingPipeline()), specs, CONFIG, per_prompt=2, seed=0)
    assert [r.seeds for r in results[:2]] == [[0, 1], [1000, 1001]]
    groups = evaluate.group_summary(results)
    assert groups["singles"] == {"prompts": 15, "images": 30, "exact": 1.0, "loose": 1.0, "target": 0.8,
                                 "passed": True}
    assert groups["common pairs"]["exact"] == 1.0 and groups["common pairs"]["passed"]
    summary = evaluate.prompt_summary(results[-1])
    assert summary["images"][0]["detected"] and summary["exact"] == 1.0
    json.dumps(summary)
    grid = evaluate.sample_grid(results, images, columns=8)
    assert grid.size[1] > 18 * 64 and grid.size[0] > 2 * 128


def test_wrong_sizes_are_loose_but_not_exact() -> None:
    specs = evaluate.seen_prompts(common_combos=1)[:3] + evaluate.seen_prompts(common_combos=1)[-1:]
    results, _ = evaluate.evaluate(FakeModel(RenderingPipeline(size="small")), specs, CONFIG, per_prompt=2)
    groups = evaluate.group_summary(results)
    assert groups["singles"]["exact"] == 0.0 and groups["singles"]["loose"] == 1.0
    assert not groups["singles"]["passed"]


def test_exact_and_loose_matching() -> None:
    spec = evaluate.seen_prompts()[-1]  # a common pair
    r = evaluate.PromptResult(spec, [0, 1, 2, 3])
    right = list(spec.elements)
    r.detections = [right[::-1], right + [("star", "red", "big", "full")],
                    [(s, c, "small", t) for s, c, _, t in right], right[:1]]
    assert r.exact() == [True, False, False, False]
    assert r.loose() == [True, False, True, False]


# --------------------------------------------------------------------------- figure6


def _record(group: str, index: int, label: str) -> dict:
    score = None if label.endswith("+") else int(label)
    return {"group": group, "index": index, "label": label, "score": score, "seconds": 1.0,
            "mean_distance": {"1": 0.5}}


def test_counts_and_agreement() -> None:
    a = [_record("common", 0, "1"), _record("common", 1, "1"), _record("rare", 0, "3"), _record("unseen", 0, "5+")]
    b = [_record("common", 0, "1"), _record("common", 1, "2"), _record("rare", 0, "3")]
    assert figure6.histogram_labels(5) == ["1", "2", "3", "4", "5", "5+"]
    table = figure6.counts(a, 5)
    assert table["common"]["1"] == 2 and table["rare"]["3"] == 1 and table["unseen"]["5+"] == 1
    assert sum(table["unseen"].values()) == 1
    agree = figure6.agreement(a, b)
    assert (agree["n"], agree["same"]) == (3, 2) and agree["rate"] == pytest.approx(2 / 3)
    assert agree["per_group"]["common"] == {"n": 2, "same": 1, "rate": 0.5}
    assert figure6.agreement(a, [])["rate"] is None


def test_histogram_png(tmp_path: Path) -> None:
    images = [_record(g, i, lab) for i, (g, lab) in enumerate([("common", "1"), ("rare", "2"), ("unseen", "5+")])]
    figure6.plot_histogram(images, 5, tmp_path / "h.png", "test")
    with Image.open(tmp_path / "h.png") as im:
        assert im.size[0] > 400


def test_queries() -> None:
    caption, image = figure6.query_image("unseen", 0, 3)
    assert "square" in caption and "triangle" in caption and image.size == (64, 64)
    assert figure6.query_image("unseen", 0, 3)[1].tobytes() == image.tobytes()
    # one layout, a drawing of it each way: one caption, other pixels
    drawings = {d: figure6.query_image("unseen", 0, 3, d) for d in figure6.DRAWINGS}
    assert {c for c, _ in drawings.values()} == {caption}
    assert len({im.tobytes() for _, im in drawings.values()}) == len(figure6.DRAWINGS) == 5
    with pytest.raises(ValueError, match="drawing must be one of exact, varied, other, pil, box"):
        figure6.query_image("unseen", 0, 3, "sketched")


# --------------------------------------------------------------------------- both command lines, random weights


@pytest.fixture(scope="module")
def random_model(tiny_shapes_model) -> Path:
    return tiny_shapes_model


@pytest.mark.slow
def test_evaluate_cli_on_random_weights(random_model: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "eval"
    args = ["--model", str(random_model), "--per-prompt", "1", "--inference-steps", "1", "--common-combos", "1",
            "--out", str(out), "--device", "cpu", "--quiet"]
    assert evaluate.main(args) == 0
    text = capsys.readouterr().out
    assert "singles" in text and "FAIL" in text  # random weights draw no shapes
    data = json.loads((out / "results.json").read_text())
    assert len(data["prompts"]) == 16 and data["settings"]["num_inference_steps"] == 1
    assert data["settings"]["guidance_scale"] == 3.0 and data["passed"] is False
    assert (out / "grid.png").is_file()
    binding = data["text_colour_binding"]
    assert set(binding) == {"own", "other"} and all(0.0 <= v <= 1.0 for v in binding.values())
    assert "colour binding" in text
    assert evaluate.main([*args, "--strict"]) == 1
    assert evaluate.main(["--model", str(tmp_path / "missing"), "--out", str(out)]) == 2


@pytest.mark.slow
def test_figure6_cli_on_random_weights(random_model: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "fig6"
    args = ["--model", str(random_model), "--per-group", "1", "--steps", "1", "--max-tokens", "2",
            "--reconstructions", "1", "--inference-steps", "1", "--batch-size", "1", "--out", str(out),
            "--device", "cpu", "--groups", "common", "unseen", "--compare-preset", "paper"]
    assert figure6.main(args) == 0
    data = json.loads((out / "figure6.json").read_text())
    fast = data["runs"]["fast"]["images"]
    assert [(im["group"], im["index"]) for im in fast] == [("common", 0), ("unseen", 0)]
    assert all(im["label"] in ("1", "2", "2+") and set(im["mean_distance"]) <= {"1", "2"} for im in fast)
    assert data["runs"]["paper"]["config"]["learning_rate"] == 5e-4 and len(data["runs"]["paper"]["images"]) == 2
    assert data["agreement"]["n"] == 2 and data["agreement"]["presets"] == ["fast", "paper"]
    assert (out / "figure6.png").is_file() and (out / "figure6_paper.png").is_file()
    assert (out / "queries" / "unseen_00.png").is_file()
    capsys.readouterr()
    # a rerun resumes: nothing left to analyse
    assert figure6.main(args) == 0
    assert "->" not in capsys.readouterr().out
    assert json.loads((out / "figure6.json").read_text())["runs"]["fast"]["images"] == fast
    # other settings in the same folder are refused
    assert figure6.main([*args[:-2], "--steps", "2"]) == 2
    # and so are results of an older version of the analysis
    saved = (out / "figure6.json").read_text()
    (out / "figure6.json").write_text(saved.replace('"format_version": 2', '"format_version": 1', 1))
    capsys.readouterr()
    assert figure6.main(args) == 2
    assert "older version of the analysis" in capsys.readouterr().err
    (out / "figure6.json").write_text(saved)
    # --images runs only the chosen images, here one more of a larger --per-group
    more = [a if a != "1" or args[k - 1] != "--per-group" else "2" for k, a in enumerate(args)]
    assert figure6.main([*more, "--images", "unseen:1"]) == 0
    data = json.loads((out / "figure6.json").read_text())
    for preset in ("fast", "paper"):
        assert [(im["group"], im["index"]) for im in data["runs"][preset]["images"]] == [
            ("common", 0), ("unseen", 0), ("unseen", 1)]
    assert data["agreement"]["n"] == 3
    capsys.readouterr()
    assert figure6.main([*more, "--images", "rare:0"]) == 2  # rare is not among --groups
    assert "--images rare:0" in capsys.readouterr().err


def test_parse_shard() -> None:
    assert figure6.parse_shard(None) is None and figure6.parse_shard("2/3") == (2, 3)
    for bad in ("0/2", "3/2", "x", "1/2/3"):
        with pytest.raises(ValueError, match="--shard"):
            figure6.parse_shard(bad)


@pytest.fixture
def keep_torch_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)  # --threads sets it for the whole process


def test_figure6_shards_merge(random_model: Path, tmp_path: Path, capsys, keep_torch_threads) -> None:
    out = tmp_path / "fig6"
    args = ["--model", str(random_model), "--per-group", "2", "--steps", "1", "--max-tokens", "1",
            "--reconstructions", "1", "--inference-steps", "1", "--batch-size", "1", "--out", str(out),
            "--device", "cpu", "--groups", "common", "unseen", "--threads", "1"]
    done = {}
    for k in (1, 2):
        assert figure6.main([*args, "--shard", f"{k}/2"]) == 0
        shard = json.loads((out / "shards" / f"{k}-of-2" / "figure6.json").read_text())
        done[k] = [(im["group"], im["index"]) for im in shard["runs"]["fast"]["images"]]
    # every 2nd of the interleaved list (common 0, unseen 0, common 1, unseen 1)
    assert done == {1: [("common", 0), ("common", 1)], 2: [("unseen", 0), ("unseen", 1)]}
    assert not (out / "figure6.json").exists()
    # a shard written with other settings is refused, not mixed in
    other = out / "shards" / "9-of-9" / "figure6.json"
    other.parent.mkdir(parents=True)
    stale = json.loads((out / "shards" / "1-of-2" / "figure6.json").read_text())
    stale["seed"] = 7
    other.write_text(json.dumps(stale))
    capsys.readouterr()
    assert figure6.main(args) == 0
    text = capsys.readouterr().out
    assert "->" not in text  # nothing left to analyse: the shards hold every image
    assert "merged 2 image result(s)" in text and "skipped" in text and "seed 7 vs 0" in text
    data = json.loads((out / "figure6.json").read_text())
    assert [(im["group"], im["index"]) for im in data["runs"]["fast"]["images"]] == [
        ("common", 0), ("unseen", 0), ("common", 1), ("unseen", 1)]
    assert (out / "figure6.png").is_file()
    assert figure6.main([*args, "--shard", "3/2"]) == 2
    assert figure6.main([*args, "--threads", "0"]) == 2


def test_robustness_shards_merge_and_seed_zero_is_the_exact_drawing(random_model: Path, tmp_path: Path, capsys,
                                                                    keep_torch_threads) -> None:
    out = tmp_path / "redraw"
    args = ["--model", str(random_model), "--per-group", "1", "--steps", "1", "--max-tokens", "1",
            "--reconstructions", "1", "--out", str(out), "--device", "cpu", "--groups", "common", "unseen",
            "--drawings", "exact", "jpeg85", "--seeds", "2", "--threads", "1"]
    for k in (1, 2):
        assert robustness.main([*args, "--shard", f"{k}/2"]) == 0
    text = capsys.readouterr().out
    # per layout: two drawings and one more seed; seed 0 of the exact drawing is not analysed twice
    assert text.count("->") == 2 * 3 and "seed    0" not in text
    shard = json.loads((out / "shards" / "1-of-2" / "robustness.json").read_text())
    assert [(lay["group"], lay["index"]) for lay in shard["layouts"]] == [("common", 0)]
    lay = shard["layouts"][0]
    assert set(lay["drawings"]) == {"exact", "jpeg85"} and lay["seeds"]["0"] == lay["drawings"]["exact"]
    # a shard written with other settings is refused, not mixed in
    stale = dict(shard, layout_seed=5)
    (out / "shards" / "9-of-9").mkdir()
    (out / "shards" / "9-of-9" / "robustness.json").write_text(json.dumps(stale))
    assert robustness.main(args) == 0
    text = capsys.readouterr().out
    assert "->" not in text  # the shards hold every label
    assert text.count("merged 4 label(s)") == 2 and "skipped" in text
    data = json.loads((out / "robustness.json").read_text())
    assert sorted((lay["group"], lay["index"]) for lay in data["layouts"]) == [("common", 0), ("unseen", 0)]
    assert "COMMON  redraw agreement" in text and "UNSEEN  redraw agreement" in text
    # the same model spelled another way is the same setting (the model is told by its marker)
    other_spelling = [f"{random_model}/." if a == str(random_model) else a for a in args]
    assert robustness.main(other_spelling) == 0
    assert "->" not in capsys.readouterr().out
    assert robustness.main([*args, "--shard", "3/2"]) == 2


# --------------------------------------------------------------------------- calibrate


def test_quantile_matches_linear_interpolation() -> None:
    values = [0.5, 0.1, 0.3, 0.2]
    assert calibrate.quantile(values, 0.0) == 0.1 and calibrate.quantile(values, 1.0) == 0.5
    assert calibrate.quantile(values, 0.5) == pytest.approx(0.25)
    assert calibrate.quantile(values, 0.8) == pytest.approx(float(torch.quantile(torch.tensor(values), 0.8)))
    with pytest.raises(ValueError):
        calibrate.quantile([], 0.5)


def test_true_caption_distances_measure_the_model() -> None:
    perfect = calibrate.true_caption_distances(FakeModel(RenderingPipeline()), CONFIG, "rare", 2, 3)
    assert [r["index"] for r in perfect] == [0, 1] and all(len(r["distances"]) == 3 for r in perfect)
    assert all(r["mean"] == 0.0 for r in perfect)  # its own words reconstruct every query
    # a model that draws only the first element of a pair: F1 = 2/3, distance 1/3
    dropping = calibrate.true_caption_distances(FakeModel(RenderingPipeline(keep=1)), CONFIG, "common", 2, 3)
    assert all(r["mean"] == pytest.approx(1 / 3) for r in dropping)
    summary = calibrate.summarise(perfect + dropping, 0.8)
    assert summary["rare"]["q80"] == 0.0 and summary["common"]["q80"] == pytest.approx(1 / 3)
    # its queries come from its own seed, never figure 6's
    assert perfect[1]["caption"] == figure6.query_image("rare", calibrate.CALIBRATION_SEED, 1)[0]


@pytest.mark.slow
def test_calibrate_cli_on_random_weights(random_model: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cal"
    args = ["--model", str(random_model), "--per-group", "2", "--images", "1", "--groups", "common", "unseen",
            "--out", str(out), "--device", "cpu"]
    assert calibrate.main(args) == 0
    data = json.loads((out / "calibration.json").read_text())
    assert [(r["group"], r["index"]) for r in data["queries"]] == [("common", 0), ("common", 1), ("unseen", 0),
                                                                   ("unseen", 1)]
    common = [r["mean"] for r in data["queries"] if r["group"] == "common"]
    assert data["suggested_threshold"] == pytest.approx(calibrate.quantile(common, 0.8))
    assert data["suggested_threshold"] == pytest.approx(min(common) + 0.8 * (max(common) - min(common)))
    assert "suggested threshold" in capsys.readouterr().out
    assert calibrate.main([*args[:-4], "--groups", "rare", "--out", str(out)]) == 2
    assert calibrate.main([*args, "--quantile", "0"]) == 2


def test_calibrate_says_when_true_captions_are_too_good_to_bound_the_threshold(random_model: Path, tmp_path: Path,
                                                                               capsys, monkeypatch) -> None:
    def perfect(model, config, group, per_group, images):
        return [{"group": group, "index": i, "mean": 0.0} for i in range(per_group)]

    monkeypatch.setattr(calibrate, "true_caption_distances", perfect)
    args = ["--model", str(random_model), "--per-group", "2", "--images", "4", "--groups", "common",
            "--out", str(tmp_path / "cal"), "--device", "cpu"]
    assert calibrate.main(args) == 0
    out = capsys.readouterr().out
    assert "suggested threshold: 0.000" in out and "no longer bounds the threshold" in out
    assert "python -m originality calibrate" in out


def test_rank_correlation_of_label_vs_group_is_spearmans():
    import numpy as np

    groups = ["common", "common", "rare", "rare", "unseen", "unseen"]
    ordered = figure6.rank_correlation(groups, ["1", "1", "2", "3", "5", "5+"])
    assert ordered == pytest.approx(np.corrcoef([1.5, 1.5, 3.5, 3.5, 5.5, 5.5], [1.5, 1.5, 3, 4, 5, 6])[0, 1])
    assert ordered > 0.95
    assert figure6.rank_correlation(groups, ["5+", "5", "3", "3", "1", "1"]) < -0.9
    assert figure6.rank_correlation(groups, ["2"] * 6) is None
    # ties at their mean rank, as scipy.stats.spearmanr: the Pearson correlation of the rank vectors
    labels = ["1", "5+", "1", "2", "5+", "3"]
    ranks_g, ranks_l = np.array([1.5, 1.5, 3.5, 3.5, 5.5, 5.5]), np.array([1.5, 5.5, 1.5, 3, 5.5, 4])
    assert figure6.rank_correlation(groups, labels) == pytest.approx(np.corrcoef(ranks_g, ranks_l)[0, 1])
    assert figure6.label_rank("5+") == 6 and figure6.label_rank("2") == 2


def test_figure6_splits_labels_by_the_colours_of_the_pair():
    assert figure6.colour_kind("big red full circle and big red full square") == "same colour"
    assert figure6.colour_kind("big green full circle and big red full square") == "mixed colours"
    images = [{"group": "common", "caption": "big red full circle and big red full square", "label": lab}
              for lab in ("3", "1", "1")]
    images += [{"group": "common", "caption": "big blue full circle and big red full square", "label": lab}
               for lab in ("5+", "2")]
    images.append({"group": "rare", "caption": "big red full circle and big green full star", "label": "4"})
    lines = figure6.colour_split_lines(images, ["common", "rare", "unseen"])
    assert lines[0].split() == ["COMMON", "same", "colour", "(3):", "1", "1", "3,", "median", "1;",
                                "mixed", "colours", "(2):", "2", "5+,", "median", "5+"]
    assert "same colour" not in lines[1] and "mixed colours (1): 4, median 4" in lines[1]
    assert lines[2].split() == ["UNSEEN"]
