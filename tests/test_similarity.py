"""Copy and style similarity to reference images (`originality.similarity`), offline.

DCR's chunked rule on hand-made vectors; the Stable Diffusion world's backbones (DINO ViT-B/16's layout as
a transformers `ViTModel`, CLIP's as a `CLIPVisionModelWithProjection`) loaded by the real code from
random-weight folders written with `save_pretrained`; the shapes world's layout match on rendered images;
references through the analysis, the report folder, the run store, the record and the HTML report. The
`real_weights` test uses the released DINO (skipped unless ORIGINALITY_REAL_WEIGHTS=1 and it is cached).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from offline_models import make_tiny_clip, make_tiny_dino
from originality import AnalysisConfig, analyze, citation, similarity
from originality.images import ImageInputError
from originality.report import Report
from originality.shapes import renderer
from originality.shapes.detector import Detection
from originality.shapes.judges import LayoutSimilarity
from originality.similarity import (COPY_BACKBONE, BackboneSimilarity, chunked_similarity, compare, load_references)
from originality.app.store import RunStore
from originality.worlds import get_world

TINY = AnalysisConfig.preset("fast", max_tokens=1, steps=2, batch_size=2, num_reconstructions=2,
                             num_inference_steps=2)


@pytest.fixture(scope="module", autouse=True)
def _one_cpu_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _noise(seed: int, size=(80, 64)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _shapes(*elements) -> Image.Image:
    return renderer.render([renderer.Element(*e) for e in elements])


# --------------------------------------------------------------------------- DCR's rule


def test_chunked_similarity_is_the_largest_cosine_of_corresponding_chunks():
    x1, x2 = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    a = torch.cat([x1, x2])[None]  # (1, 6): two chunks of 3
    partial = torch.cat([x1, torch.tensor([0.0, 0.0, 1.0])])[None]  # the first chunk copied, the second not
    # an image against itself: the maximum, 1, whatever the chunking
    assert chunked_similarity(a, a, 2).item() == pytest.approx(1.0)
    assert chunked_similarity(a, a, 1).item() == pytest.approx(1.0)
    # one chunk is the plain cosine of the whole vectors
    glob = torch.nn.functional.cosine_similarity(a, partial).item()
    assert chunked_similarity(a, partial, 1).item() == pytest.approx(glob) == pytest.approx(0.5)
    # a copied part: its chunk matches exactly, above the global cosine
    chunked = chunked_similarity(a, partial, 2).item()
    assert chunked == pytest.approx(1.0) and chunked > glob
    # corresponding chunks only: the same part in another chunk is not a match
    swapped = torch.cat([torch.tensor([0.0, 0.0, 1.0]), x1])[None]
    assert chunked_similarity(a, swapped, 2).item() == pytest.approx(0.0)
    # per chunk normalised: scale does not matter; opposite vectors give -1
    assert chunked_similarity(a, 7 * a, 2).item() == pytest.approx(1.0)
    assert chunked_similarity(a, -a, 2).item() == pytest.approx(-1.0)


def test_chunked_similarity_shapes_and_errors():
    a, b = torch.randn(3, 12), torch.randn(5, 12)
    out = chunked_similarity(a, b, 4)
    assert out.shape == (3, 5) and bool(((out >= -1) & (out <= 1)).all())
    with pytest.raises(ValueError, match="chunks must divide the embedding size 12, got 5"):
        chunked_similarity(a, b, 5)
    with pytest.raises(ValueError, match="embeddings must be"):
        chunked_similarity(a, torch.randn(5, 8), 1)


# --------------------------------------------------------------------------- the backbones, random weights


@pytest.fixture(scope="module")
def backbone_dirs(tmp_path_factory):
    """A DINO-layout ViTModel (no pooler, as facebook/dino-vitb16) and a CLIP model, tiny and random, each saved
    with its image processor as the Hub holds them."""
    root = tmp_path_factory.mktemp("backbones")
    make_tiny_dino(root / "dino")
    make_tiny_clip(root / "clip")
    return root / "dino", root / "clip"


@pytest.fixture(scope="module")
def judge(backbone_dirs):
    dino, clip = backbone_dirs
    return BackboneSimilarity(device="cpu", dtype=torch.float32, copy_model_id=str(dino), style_model_id=str(clip))


def test_backbones_load_lazily_once_and_score_an_image_highest_against_itself(judge, monkeypatch):
    from transformers import ViTModel

    loads = []
    real = ViTModel.from_pretrained.__func__

    def counting(cls, *args, **kwargs):
        loads.append(args)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(ViTModel, "from_pretrained", classmethod(counting))
    assert judge._copy_model is None and judge._style_model is None  # nothing loaded when built
    images = [_noise(0), _noise(1), _noise(2, (50, 90)).convert("L").convert("RGB")]
    for _ in range(2):
        copy = judge.copy(images, images)
    style = judge.style(images, images)
    assert len(loads) == 1  # loaded once, on first use
    for table in (copy, style):
        assert len(table) == 3 and all(len(row) == 3 for row in table)
        for i, row in enumerate(table):
            assert all(-1.0 - 1e-6 <= v <= 1.0 + 1e-6 for v in row)
            assert row[i] == pytest.approx(1.0, abs=1e-5) and row[i] == pytest.approx(max(row), abs=1e-6)
    # the copy embedding is the CLS token and the 2x2 regions: 5 chunks of the hidden size
    assert judge.copy_embeddings(images[:1]).shape == (1, 5 * 32)
    # the style embedding is CLIP's own image embedding, its projection as saved (not re-initialised)
    clip, processor = make_tiny_clip()
    with torch.no_grad():
        expected = clip.get_image_features(**processor(images=images[:1], return_tensors="pt"))
    expected = expected if isinstance(expected, torch.Tensor) else expected.pooler_output
    assert torch.allclose(judge.style_embeddings(images[:1]), expected, atol=1e-5)


def test_backbones_are_recorded(judge, backbone_dirs):
    info = judge.backbones()
    assert info["copy"]["id"] == str(backbone_dirs[0]) and info["copy"]["source"] == "local folder"
    assert len(info["copy"]["content_sha256"]) == 64 and info["style"]["id"] == str(backbone_dirs[1])
    assert "CLIP ViT-L/14" in judge.style_note and "CSD" in judge.style_note


def test_the_stable_diffusion_world_uses_dino_and_clip_l14():
    """The SD world names no judge of its own (`World.similarity` None): the engine's `judge_for` builds the
    backbone judge, once per (world, device, dtype)."""
    built = similarity.judge_for(get_world("sd"), device="cpu", dtype="test-dtype")
    assert similarity.judge_for("stable-diffusion", device="cpu", dtype="test-dtype") is built
    assert isinstance(built, BackboneSimilarity)
    assert (built.copy_model_id, built.style_model_id) == ("facebook/dino-vitb16", "openai/clip-vit-large-patch14")
    assert built._copy_model is None  # nothing loaded until used


def test_a_backbone_that_cannot_load_leaves_the_score_and_says_why(tmp_path):
    missing = BackboneSimilarity(copy_model_id=str(tmp_path / "nothing-here"), style_model_id=str(tmp_path / "no"))
    ref = similarity.Reference("a.png", _noise(0))
    sim = compare(missing, _noise(1), [ref], {1: [_noise(2)]}, copy_line=0.5)
    assert sim.references == [] and "could not load" in sim.error and "a.png" not in sim.error
    assert sim.lines() == [f"similarity to the references not measured: {sim.error}"]


# --------------------------------------------------------------------------- the shapes world


def _det(shape="circle", colour="red", size="big", texture="full", x=20.0, y=20.0) -> Detection:
    return Detection(shape, colour, size, texture, x, y, 100)


def test_layout_match_counts_the_same_elements_at_the_same_places():
    match = LayoutSimilarity().layout_match
    a = [_det(), _det("square", "blue", x=44, y=44)]
    assert match(a, a) == 1.0 and match([], []) == 1.0 and match(a, []) == 0.0
    assert match(a, [_det(x=22, y=21)]) == pytest.approx(2 / 3)  # one of two, 2.2 px off: F1 = 2*1/(2+1)
    assert match(a, [_det(x=30, y=20), _det("square", "blue", x=44, y=44)]) == pytest.approx(0.5)  # moved 10 px
    assert match(a, [_det(colour="green"), _det("square", "blue", "small", x=44, y=44)]) == 0.0  # colour, size


def test_shapes_world_compares_layouts_and_has_no_style():
    query = _shapes(("circle", "red", "big", "full", 20, 20), ("square", "blue", "big", "full", 44, 44))
    moved = _shapes(("circle", "red", "big", "full", 44, 20), ("square", "blue", "big", "full", 20, 44))
    half = _shapes(("circle", "red", "big", "full", 20, 20), ("triangle", "green", "big", "full", 44, 44))
    refs = [similarity.Reference(n, im) for n, im in (("same.png", query), ("moved.png", moved), ("half.png", half))]
    sim = compare(get_world("shapes").similarity(device="cpu", dtype=None), query, refs, {1: [half, half], 2: [moved]},
                  copy_line=0.5)
    assert [r.copy for r in sim.references] == [1.0, 0.0, 0.5]
    assert [r.copied for r in sim.references] == [True, False, True]
    assert all(r.style is None for r in sim.references) and sim.style_measure is None
    assert "style does not apply in the shapes world" in sim.style_note
    assert sim.nearest == 0
    assert [(n.num_tokens, n.name, n.copy, n.query_copy) for n in sim.lengths] == [(1, "half.png", 1.0, 0.5),
                                                                                   (2, "moved.png", 1.0, 0.0)]
    assert sim.lengths[0].drifts  # the reconstructions are closer to half.png than the query itself
    text = "\n".join(sim.lines())
    assert "reference same.png: copy 1.000 (at or above the copy line 0.5), style n/a" in text
    assert "style: style does not apply" in text


def test_a_wide_reference_is_read_as_its_centre_square_as_a_query_is(tmp_path):
    query = _shapes(("circle", "red", "big", "full", 20, 20), ("square", "blue", "big", "full", 44, 44))
    # the query's drawing in the middle of a page three times as wide, with a green star outside that square
    page = Image.new("RGB", (192, 64), "white")
    page.paste(query, (64, 0))
    page.paste(_shapes(("star", "green", "big", "full", 32, 32)), (0, 0))
    page.save(tmp_path / "page.png")
    world = get_world("shapes")
    refs = similarity.load_references([tmp_path / "page.png"], AnalysisConfig.preset("fast"), world=world)
    sim = compare(world.similarity(device="cpu", dtype=None), query, refs, {}, copy_line=1.0)
    assert [r.copy for r in sim.references] == [1.0]  # squashed, its shapes were a third as wide and elsewhere


# --------------------------------------------------------------------------- the references as input


def test_references_get_the_querys_messages_naming_the_file(tmp_path):
    shapes = get_world("shapes")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.png").write_text("not an image")
    _noise(0, (128, 128)).save(tmp_path / "photo.png")
    with pytest.raises(ImageInputError, match=r"reference image 'empty.png': the file is empty"):
        load_references([str(tmp_path / "empty.png")], TINY, shapes)
    with pytest.raises(ImageInputError, match=r"reference image 'notes.png': not an image") as err:
        load_references([str(tmp_path / "notes.png")], TINY, shapes)
    assert str(tmp_path) not in str(err.value)  # the file's name, not the folder it was uploaded to
    with pytest.raises(ImageInputError, match=r"reference image 'photo.png': .*white background"):
        load_references([str(tmp_path / "photo.png")], TINY, shapes)  # the world's own check, as for the query
    assert len(load_references([str(tmp_path / "photo.png")], TINY.replace(world_check="off"), shapes)) == 1
    with pytest.raises(ImageInputError, match="reference image 'photo.png': the file is too large"):
        load_references([str(tmp_path / "photo.png")], TINY, shapes, max_bytes=10)


def test_too_many_references_are_refused_and_none_load_nothing(tmp_path):
    _shapes(("circle", "red", "big", "full", 20, 20)).save(tmp_path / "a.png")
    with pytest.raises(ValueError, match=r"too many reference images: 3 given, at most 2 \(max_references\)"):
        load_references([str(tmp_path / "a.png")] * 3, TINY.replace(max_references=2))
    assert load_references(None, TINY) == [] and load_references([], TINY) == []
    refs = load_references([str(tmp_path / "a.png"), Image.open(tmp_path / "a.png")], TINY)
    assert [r.name for r in refs] == ["a.png", "reference 2"] and refs[0].source["sha256"]
    assert load_references(refs, TINY) == refs  # loaded references pass through
    assert similarity.expand_references([tmp_path]) == [str(tmp_path / "a.png")]
    with pytest.raises(ValueError, match="reference .*nowhere: no such file or folder"):
        similarity.expand_references([tmp_path / "nowhere"])


# --------------------------------------------------------------------------- through the analysis and the report


@pytest.fixture(scope="module")
def runs(tiny_shapes_model, tmp_path_factory):
    """The same analysis without and with references: (plain report, report with references, reference paths)."""
    from originality.models import load_model

    folder = tmp_path_factory.mktemp("refs")
    query = _shapes(("circle", "red", "big", "full", 20, 20), ("square", "blue", "big", "full", 44, 44))
    query.save(folder / "query.png")
    _shapes(("triangle", "green", "big", "full", 30, 30)).save(folder / "other.png")
    model = load_model(str(tiny_shapes_model), device="cpu")
    refs = [str(folder / "query.png"), str(folder / "other.png")]
    return analyze(folder / "query.png", TINY, model), analyze(folder / "query.png", TINY, model,
                                                                references=refs), refs


def test_references_do_not_change_the_score(runs):
    plain, with_refs, _ = runs
    assert plain.similarity is None and "similarity" not in plain.summary()
    assert with_refs.label == plain.label and with_refs.score == plain.score
    assert [r.distances for r in with_refs.results] == [r.distances for r in plain.results]
    assert [r.copy for r in with_refs.similarity.references] == [1.0, 0.0]
    assert [n.num_tokens for n in with_refs.similarity.lengths] == [r.num_tokens for r in with_refs.results]


def test_references_are_in_the_record(runs):
    _, report, refs = runs
    record = report.record["similarity"]
    assert [r["name"] for r in record["references"]] == ["query.png", "other.png"]
    assert record["references"][0]["sha256"] == report.record["input"]["sha256"]
    assert "shapes detector" in record["backbones"]["copy"]["id"]


def test_references_survive_a_report_reload_and_a_share_link(runs, tmp_path):
    _, report, _ = runs
    folder = report.save(tmp_path / "run")
    assert sorted(p.name for p in (folder / "references").iterdir()) == ["reference_0.png", "reference_1.png"]
    meta = json.loads((folder / "report.json").read_text())
    assert meta["format_version"] == 2 and meta["similarity"]["nearest"] == 0
    for loaded in (Report.load(folder), RunStore(tmp_path / "store").load(RunStore(tmp_path / "store").save(report))):
        assert loaded.similarity.to_dict() == report.similarity.to_dict()
        assert [im.size for im in loaded.similarity.images] == [im.size for im in report.similarity.images]
        assert loaded.summary() == report.summary()


def test_old_reports_without_references_still_load(runs, tmp_path):
    plain, _, _ = runs
    folder = plain.save(tmp_path / "old")
    assert not (folder / "references").exists() and Report.load(folder).similarity is None


def test_the_html_report_and_the_page_show_the_nearest_reference(runs):
    from originality import html_report
    from originality.app import views

    plain, report, _ = runs
    page = html_report.render(report)
    assert "Similarity to the images you named" in page and "query.png: copy 1.000" in page
    assert "not a\nlegal judgement" in page and citation.DCR.url in page and citation.CSD.url in page
    assert "Similarity to the images you named" not in html_report.render(plain)
    pair = views.similarity_pair(report)
    assert pair[0][1] == "your image" and pair[1][1] == "query.png: copy 1.00 · style n/a"
    md = views.verdict_markdown(report)
    assert "Similarity to your references" in md and "query\\.png" in md and "style does not apply" in md
    assert views.similarity_pair(plain) is None and "references" not in views.verdict_markdown(plain)


def test_the_readme_cites_both_papers_and_says_what_the_numbers_are_not():
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert citation.DCR.text in readme and citation.CSD.text in readme
    assert "--reference" in readme and "not proof" in readme


# --------------------------------------------------------------------------- real weights


def _cached(model_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(model_id, "config.json"), str)


@pytest.mark.real_weights
def test_a_pasted_crop_scores_above_an_unrelated_image_with_real_dino():
    if not _cached(COPY_BACKBONE):
        pytest.skip(f"{COPY_BACKBONE} is not in the Hugging Face cache")
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 224, dtype=np.float32)
    source = Image.fromarray(np.stack([np.add.outer(ramp, ramp) / 2, np.outer(np.sin(ramp / 9) * 127 + 128,
                                       np.ones(224)), np.full((224, 224), 60.0)], -1).astype(np.uint8))
    other = Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8))
    pasted = other.copy()
    pasted.paste(source.crop((0, 0, 112, 112)), (0, 0))  # the source's top-left quarter, in place
    unrelated = Image.fromarray(np.full((224, 224, 3), (30, 160, 90), dtype=np.uint8))
    scores = BackboneSimilarity().copy([pasted, unrelated], [source])
    assert scores[0][0] > scores[1][0] and not math.isnan(scores[0][0])


def test_the_copy_line_is_the_worlds_unless_set(tiny_shapes_model):
    """Blank copy_line: the world's (DCR's 0.5 for Stable Diffusion's features; 1 for the shapes layout match,
    where sharing one of two elements is 0.5 and not a copy); a value given is kept."""
    from originality.analysis import resolve_config
    from originality.models import load_model
    from originality.worlds import get_world

    assert get_world("stable-diffusion").copy_line == 0.5
    model = load_model(str(tiny_shapes_model), device="cpu")
    assert resolve_config(AnalysisConfig.preset("fast"), model).copy_line == 1.0
    assert resolve_config(AnalysisConfig.preset("fast", copy_line=0.8), model).copy_line == 0.8
