"""The printable report: valid, self-contained HTML (every image embedded, nothing fetched), every
part a reader needs, user strings escaped; Chromium prints it to a PDF."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser

import pytest
import torch
from PIL import Image

from originality import AnalysisConfig, analyze, citation, html_report, load_model
from originality.report import Report, TokenResult
from originality.shapes.renderer import Element, render

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
# SVG elements written self-closed (<line .../>) are reported by html.parser as start+end tags.
EVIL = '<script>alert("x")</script>'


class Structure(HTMLParser):
    """Checks nesting (every non-void element closed in order) and collects images, links and text."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[str] = []
        self.images: list[dict] = []
        self.links: list[str] = []
        self.resources: list[str] = []  # src/href of anything that a browser would fetch
        self.text: list[str] = []
        self.doctype = False

    def handle_decl(self, decl):
        self.doctype = self.doctype or decl.lower() == "doctype html"

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.images.append(attrs)
        if tag == "a" and "href" in attrs:
            self.links.append(attrs["href"])
        for key in ("src", "srcset", "poster", "data"):
            if key in attrs:
                self.resources.append(attrs[key])
        if tag == "link" and "href" in attrs:
            self.resources.append(attrs["href"])
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
            return
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse(text: str) -> Structure:
    parser = Structure()
    parser.feed(text)
    parser.close()
    return parser


def image(color: str, size: int = 64) -> Image.Image:
    return Image.new("RGB", (size, size), color)


@pytest.fixture(scope="module")
def crafted() -> Report:
    """A Stable-Diffusion-like report built by hand: edits, a pass at m = 2, hostile strings in the settings."""
    def length(m, distances, passed, scores):
        return TokenResult(num_tokens=m, token=f"<s{m}>", embeddings=torch.zeros(m, 8), losses=[0.3, 0.2],
                           reconstructions=[image("red", 512), image("blue", 512), image("green", 512)],
                           distances=distances, edits=[image("white", 512), image("black", 512)], check_scores=scores,
                           distance_passed=passed, check_passed=passed, check_detail=f"1/2 edits show a {EVIL}")
    config = AnalysisConfig.preset("fast", domain="painting", threshold=0.45, guidance_scale=7.5,
                                   edit_subject=EVIL).to_dict()
    return Report(query=image("gray", 512), results=[length(1, [0.6, 0.5, 0.55], False, [0.1, 0.2]),
                                                     length(2, [0.4, 0.3, 0.35], True, [0.9, 0.8])],
                  score=2, max_tokens=5, threshold=0.45, config=config,
                  model={"name": f"my/model{EVIL}", "world": "stable-diffusion", "distance": "dreamsim",
                         "in_distribution": "clip-edit"},
                  created="2026-01-02T03:04:05+00:00", record={"record_version": 1, "model": {"id": EVIL}})


def test_html_is_valid_and_self_contained(crafted):
    text = html_report.render(crafted)
    doc = parse(text)
    assert doc.doctype and doc.tags[0] == "html"
    assert doc.errors == [] and doc.stack == [], (doc.errors, doc.stack)
    assert "script" not in doc.tags and "link" not in doc.tags and "iframe" not in doc.tags
    # every image embedded: the query, then per length the query again, 3 reconstructions and 2 edits
    assert len(doc.images) == 1 + 2 * (1 + 3 + 2)
    assert all(im["src"].startswith(("data:image/png;base64,", "data:image/jpeg;base64,")) for im in doc.images)
    assert all(im.get("alt") for im in doc.images)
    assert all(r.startswith("data:") for r in doc.resources)
    assert doc.links and set(doc.links) == {citation.URL}  # the only link: the paper
    assert "url(" not in text and "@import" not in text  # no fetched fonts or backgrounds
    assert "svg" in doc.tags and doc.tags.count("circle") >= 3  # the curve: 2 points and the score ring


def test_html_says_what_a_reader_needs(crafted):
    words = " ".join(" ".join(parse(html_report.render(crafted)).text).split())
    assert "Score: 2" in words and "Original to this model" in words
    assert "needed 2 learned tokens" in words
    assert "not a legal opinion" in words and "not proof of copying" in words
    assert "how familiar the image is to this model" in words
    assert "Edit check" in words and "P(" in words
    assert "mean distance 0.550" in words and "mean distance 0.350" in words
    assert "DreamSim" in words and "threshold 0.45" in words
    assert citation.TITLE in words and "Bermano" in words
    assert "Reproducibility record" in words and "python -m originality reproduce" in words
    assert "learning_rate" in words and "0.005" in words  # the settings


def test_the_label_over_seeds_is_shown_everywhere_a_score_is(crafted):
    """With the seeds setting the HTML report, the page's verdict (also the share page's) and the CLI's score
    line give the label over the seeds and say whether the seeds agree; one seed: none of it."""
    import dataclasses

    from originality.cli import score_line
    from originality.report import SeedRun
    from originality.app.views import verdict_markdown

    assert "seeds" not in score_line(crafted) and "inversion seeds" not in verdict_markdown(crafted)
    assert "inversion seeds" not in " ".join(parse(html_report.render(crafted)).text)
    split = dataclasses.replace(crafted, seed_runs=[SeedRun(0, 2, {1: 0.55, 2: 0.35}), SeedRun(1, 2, {1: 0.5, 2: 0.3}),
                                                    SeedRun(2, None, {m: 0.6 for m in range(1, 6)})])
    words = " ".join(" ".join(parse(html_report.render(split)).text).split())
    assert "Over 3 inversion seeds: 2 in 2 of 3 seeds (5+ in 1) (seeds 0, 1, 2): the seeds disagree" in words
    assert "2 in 2 of 3 seeds (5+ in 1)" in verdict_markdown(split)
    assert score_line(split).endswith("over seeds: 2 in 2 of 3 seeds (5+ in 1)")
    agree = dataclasses.replace(crafted, seed_runs=[SeedRun(s, 2, {2: 0.3}) for s in (0, 1)])
    assert "every seed gave the same score" in " ".join(parse(html_report.render(agree)).text)


def test_the_expected_length_is_shown_everywhere_a_score_is(crafted):
    """The continuous score beside the label: the HTML report, the page's (and share page's) verdict, the CLI's
    score line and report.json give the same number, computed from the lengths' distances."""
    from originality.app.views import verdict_markdown
    from originality.cli import score_line
    from originality.uncertainty import expected_length

    value = expected_length(crafted.results, crafted.pass_rule, crafted.max_tokens)
    assert crafted.expected_length == value and 1.0 <= value <= crafted.max_tokens + 1
    shown = f"Expected length {value:.2f} on a scale of 1 to {crafted.max_tokens + 1}"
    assert shown in " ".join(" ".join(parse(html_report.render(crafted)).text).split())
    assert shown in verdict_markdown(crafted)
    assert score_line(crafted).endswith(f"expected length {value:.2f}")
    assert crafted.summary()["expected_length"] == value


def test_user_strings_are_escaped(crafted):
    text = html_report.render(crafted)
    assert "<script" not in text
    assert "&lt;script&gt;" in text
    doc = parse(text)
    assert EVIL in " ".join(doc.text)  # shown as text, not run


def test_report_of_a_real_run_prints_to_pdf(tiny_shapes_model, tmp_path):
    model = load_model(str(tiny_shapes_model), device="cpu")
    query = render([Element("circle", "red", x=20, y=20), Element("square", "blue", x=44, y=44)])
    config = AnalysisConfig.preset("fast", max_tokens=2, steps=2, batch_size=2, num_reconstructions=2,
                                   num_inference_steps=2)
    report = analyze(query, config, model)
    path = html_report.write(report, tmp_path / "out" / "report.html", run_dir="runs/x")
    doc = parse(path.read_text(encoding="utf-8"))
    assert doc.errors == [] and doc.stack == []
    assert len(doc.images) == 1 + sum(1 + len(r.reconstructions) + len(r.edits) for r in report.results)
    words = " ".join(" ".join(doc.text).split())
    for key in ("input.sha256", "query.sha256", "model.content_sha256", "software.torch", "runtime.device",
                "seeds.inversion.1", "threshold.source"):
        assert key in words, f"the record's {key} is not in the report"
    assert report.record["query"]["sha256"] in words
    assert "Layout check" in words and "python -m originality reproduce runs/x" in words  # World.check_name

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed")
    pdf = tmp_path / "report.pdf"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-pdf-header-footer",
                    f"--print-to-pdf={pdf}", path.as_uri()], capture_output=True, timeout=120, check=True)
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF") and len(data) > 20_000
    assert data.count(b"/Type /Page") - data.count(b"/Type /Pages") >= 2  # more than one printed page
