"""The reproducibility record: complete in every report, true to the files it hashes, saved and
loaded with report.json; the citation is the same everywhere."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from originality import AnalysisConfig, analyze, citation, load_model
from originality.provenance import folder_sha256, pixels_sha256
from originality.record import model_source
from originality.report import Report
from originality.shapes.renderer import Element, render
from originality.worlds import get_world

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(max_tokens=2, steps=2, batch_size=2, num_reconstructions=2, num_inference_steps=2, num_edits=1)


@pytest.fixture(scope="module")
def run(tiny_shapes_model, tmp_path_factory):
    """(image path, report) of a tiny analysis on a random-weight shapes model, threshold left to the world."""
    folder = tmp_path_factory.mktemp("record")
    image = folder / "upload.png"
    render([Element("circle", "red", x=20, y=20), Element("square", "blue", x=44, y=44)]).resize((96, 80)).save(image)
    model = load_model(str(tiny_shapes_model), device="cpu")
    return image, analyze(str(image), AnalysisConfig.preset("fast", **TINY), model)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_record_is_complete(run, tiny_shapes_model):
    image, report = run
    record = report.record
    assert record["record_version"] == 1
    assert record["input"] == {"kind": "file", "name": "upload.png", "sha256": sha256(image),
                               "bytes": image.stat().st_size, "width": 96, "height": 80}
    assert record["query"]["sha256"] == pixels_sha256(report.query)
    assert (record["query"]["width"], record["query"]["height"]) == report.query.size == (64, 64)
    model = record["model"]
    assert model["id"] == str(tiny_shapes_model) and model["source"] == "local folder"
    assert model["content_sha256"] == folder_sha256(tiny_shapes_model) and model["bundled"] is False
    assert record["runtime"] == {"device": "cpu", "dtype": "float32", "gpu": None, "cuda": None}
    software = record["software"]
    for package in ("python", "torch", "diffusers", "transformers", "dreamsim", "originality"):
        assert software[package], f"no version of {package}"
    assert software["git_commit"] is None or len(software["git_commit"]) == 40
    seeds = record["seeds"]
    assert seeds["config"] == 0
    assert seeds["inversion"] == {str(r.num_tokens): r.inversion_seed for r in report.results}
    assert all(isinstance(s, int) for s in seeds["inversion"].values()) and len(seeds["inversion"]) >= 1
    assert seeds["reconstruction"] == "image i (from 0) of every length: seed 0 + i"
    assert seeds["edit"] == "image i (from 0) of every length: seed 10000 + i"
    assert record["threshold"]["value"] == report.threshold == 0.3
    assert "default of the shapes world" in record["threshold"]["source"]


def test_each_analysis_seed_draws_its_own_latents():
    from originality.record import image_seed

    n = 20  # the most reconstructions a run may ask for (and edits: 16)
    drawn = [set(range(image_seed(s, what), image_seed(s, what) + n)) for s in range(4) for what in
             ("reconstruction", "edit")]
    assert all(a.isdisjoint(b) for i, a in enumerate(drawn) for b in drawn[i + 1:])
    assert image_seed(0) == 0 and image_seed(0, "edit") == 10_000  # seed 0 draws what it always drew
    with pytest.raises(ValueError, match="reconstruction"):
        image_seed(0, "probe")


def test_an_analysis_repeats_under_seeds_no_rerun_of_it_is_given():
    """The repeats of an analysis (second opinion, `seeds`) run under seeds apart from the ones a person reruns it
    with (0, 1, 2, ..., and the reliability benchmark's seed + 1000 r), each its own, and within the app's seed box."""
    from originality.record import repeat_seed

    typed = range(0, 20_000)
    per_seed = [[repeat_seed(s, k) for k in range(1, 10)] for s in typed]
    repeats = [r for each in per_seed for r in each]
    assert set(repeats).isdisjoint(typed) and all(2**31 <= r < 2**32 for r in repeats)
    # one analysis's repeats are each their own, and so are those of the runs a person or the benchmark compares
    assert all(len(set(each)) == 9 for each in per_seed)
    compared = [repeat_seed(s + 1000 * r, k) for s in range(10) for r in range(3) for k in range(1, 10)]
    assert len(set(compared)) == len(compared)
    assert [repeat_seed(7, k) for k in range(3)] == [7, repeat_seed(7, 1), repeat_seed(7, 2)]  # repeat 0 is the seed
    assert repeat_seed(0, 1) == repeat_seed(0, 1) != repeat_seed(1, 1)


def test_record_is_saved_and_loaded_and_matches_the_saved_query(run, tmp_path):
    _, report = run
    folder = report.save(tmp_path / "run")
    meta = json.loads((folder / "report.json").read_text())
    assert meta["record"] == json.loads(json.dumps(report.record))
    # query.png read back has exactly the pixels the record hashed
    with Image.open(folder / "query.png") as im:
        assert hashlib.sha256(np.asarray(im.convert("RGB")).tobytes()).hexdigest() == report.record["query"]["sha256"]
    assert Report.load(folder).record == meta["record"]
    # a report written before the record existed still loads, with an empty record
    del meta["record"]
    (folder / "report.json").write_text(json.dumps(meta))
    assert Report.load(folder).record == {}


def test_threshold_set_by_the_user_is_recorded_as_such(tiny_shapes_model):
    model = load_model(str(tiny_shapes_model), device="cpu")
    image = render([Element("triangle", "green", x=30, y=30)])
    report = analyze(image, AnalysisConfig.preset("fast", **{**TINY, "max_tokens": 1}, threshold=0.9), model)
    assert report.record["threshold"] == {"value": 0.9, "source": "set for this run (threshold setting)"}
    assert report.record["input"]["sha256"] is None  # an in-memory image has no file to hash


def test_folder_hash_changes_with_any_file(tmp_path):
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "weights.bin").write_bytes(b"\x00" * 100)
    (tmp_path / "model_index.json").write_text("{}")
    first = folder_sha256(tmp_path)
    assert folder_sha256(tmp_path) == first
    (tmp_path / "unet" / "weights.bin").write_bytes(b"\x00" * 99 + b"\x01")
    assert folder_sha256(tmp_path) != first


def test_hub_revision_comes_from_the_snapshot_path():
    commit = "133a221b8aa7292a167afc5127cb63fb5005638b"
    unet = SimpleNamespace(config={"_name_or_path": f"/cache/models--CompVis--stable-diffusion-v1-4/snapshots/"
                                                    f"{commit}/unet"})
    pipe = SimpleNamespace(name_or_path="CompVis/stable-diffusion-v1-4", config={}, unet=unet)
    info = model_source(SimpleNamespace(pipeline=pipe, name="CompVis/stable-diffusion-v1-4",
                                        world=get_world("stable-diffusion")))
    assert info["source"] == "hub" and info["revision"] == commit and info["content_sha256"] is None


PATCHED = dict(URL="https://example.test/the-paper", SHORT="Somebody 1999",
               TEXT="Somebody (1999). A Stand-in Title. arXiv:0000.00000.", ARXIV_ID="0000.00000")


def test_one_citation_everywhere():
    """The README quotes the one citation; the app's intro, the printable report and --help show it."""
    from originality.app import views
    from originality.html_report import render

    assert citation.ARXIV_ID == "2408.08184" and citation.URL.endswith("2408.08184")
    readme = (ROOT / "README.md").read_text()
    assert citation.URL in readme and citation.TEXT in readme and "2410.03657" not in readme
    assert citation.URL in views.INTRO and citation.markdown() in views.INTRO
    html = render(Report.load(ROOT / "tests" / "data" / "report-format1"))
    assert citation.URL in html and citation.BIBTEX.splitlines()[1].strip() in html
    for text in (views.INTRO, html):  # the method's paper is the only one linked there
        assert set(re.findall(r"arxiv\.org/abs/([0-9.]+)", text)) == {citation.ARXIV_ID}
    help_text = subprocess.run([sys.executable, "-m", "originality", "--help"], cwd=ROOT, capture_output=True,
                               text=True, timeout=120).stdout
    help_text = " ".join(help_text.split())  # argparse wraps the epilog
    assert citation.URL in help_text and citation.TEXT in help_text and "Sarfaty" in help_text


def test_every_shell_takes_the_citation_from_the_one_module(monkeypatch, capsys):
    """Change `originality.citation` and the page's intro, the printable report and --help change with it: none
    keeps a copy of the reference of its own."""
    from originality.cli import main
    from originality.html_report import render

    for name, value in PATCHED.items():
        monkeypatch.setattr(citation, name, value)
    assert main(["--help"]) == 0
    help_text = " ".join(capsys.readouterr().out.split())  # argparse wraps the epilog
    assert PATCHED["URL"] in help_text and PATCHED["TEXT"] in help_text and "2408.08184" not in help_text
    html = render(Report.load(ROOT / "tests" / "data" / "report-format1"))
    assert f'href="{PATCHED["URL"]}"' in html and "arXiv:0000.00000" in html
    # the intro is built when the app's views are imported: a fresh interpreter with the patched module
    code = ("import originality.citation as c; " + "; ".join(f"c.{k} = {v!r}" for k, v in PATCHED.items())
            + "; from originality.app import views; print(views.INTRO)")
    intro = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert intro.returncode == 0, intro.stderr[-2000:]
    assert f"[{PATCHED['SHORT']}]({PATCHED['URL']})" in intro.stdout and "2408.08184" not in intro.stdout
