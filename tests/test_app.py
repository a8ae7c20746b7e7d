"""The web app's handlers, called directly (no server): a tiny random shapes-world model, tiny settings."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import json
import math
import os
import pickle
import re
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest
from hostile_files import bad_files, odd_files
from matplotlib.figure import Figure
from PIL import Image

import originality.models as models
from originality import AnalysisConfig, gpu_costs, worlds
from originality.app import views, zerogpu
from originality.config import PRESETS
from originality.config import settings as schema
from originality.images import load_image, prepare_image
from originality.record import repeat_seed
from originality.app.store import RunStore, set_default_store

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "assets" / "examples" / "shapes_common.png"
# the Advanced fields as the form sends them (blank: the preset's or the world's value)
TINY = dict(max_tokens=2, steps=2, batch_size=2, learning_rate=None, num_reconstructions=2, num_inference_steps=2,
            guidance_scale=None, threshold=None, edit_prompt="", edit_subject="", seed=0, lr_schedule="")
PAGE = "http://example.test/space/"


@pytest.fixture(scope="module")
def app():
    before = set(models._CACHE)
    module = importlib.import_module("app")
    assert set(models._CACHE) == before, "importing app.py must not load a model"
    assert not module.demo.is_running
    return module


@pytest.fixture
def env(app, tiny_shapes_model, tmp_path, monkeypatch):
    monkeypatch.setenv("ORIGINALITY_MODEL", str(tiny_shapes_model))
    monkeypatch.delenv("ORIGINALITY_RUN_TIMEOUT", raising=False)
    monkeypatch.setattr(app, "DEFAULTS", {})
    monkeypatch.setattr(app, "DOWNLOAD_DIR", tmp_path / "downloads")
    store = RunStore(tmp_path / "data")
    set_default_store(store)
    yield store
    set_default_store(None)


def request(**kwargs):
    kwargs.setdefault("headers", {"referer": PAGE + "?__theme=light"})
    kwargs.setdefault("query_params", {})
    return gr.Request(**kwargs)


def run(app, image=EXAMPLE, world="shapes", domain="default", word="", preset="fast", **overrides):
    settings = {**TINY, **overrides}
    return list(app.run_analysis(str(image), world, domain, word, preset, settings, request=request()))


def refusal(app, **kwargs) -> tuple[str, str]:
    """(the status line left in the page, the popup's message) of a run that is refused."""
    image = kwargs.pop("image", EXAMPLE)
    stream = app.run_analysis(None if image is None else str(image), kwargs.pop("world", "shapes"),
                              kwargs.pop("domain", "default"), kwargs.pop("word", ""), "fast", {**TINY, **kwargs},
                              request=request())
    with pytest.warns(UserWarning) as caught:  # gr.Warning outside a server
        updates = list(stream)
    assert updates[-1][app.ui.status].startswith("⚠️")
    return updates[-1][app.ui.status], str(caught[-1].message)


def merged(updates: list[dict]) -> dict:
    out: dict = {}
    for u in updates:
        out.update(u)
    return out


def test_import_loads_no_model(app):
    # the `app` fixture checks that importing app.py loaded no model and launched nothing
    assert len(app.ui.rows) == app.MAX_ROWS and app.ui.verdict in app.ui.outputs


def test_the_image_reaches_the_engine_as_uploaded(app, tmp_path):
    """The analysis events take their inputs unprocessed (Gradio's gr.Image would decode the upload first)."""
    runs = [fn for fn in app.demo.fns.values() if fn.name in ("_on_run", "analyze_api")]
    assert len(runs) == 2 and not any(fn.preprocess for fn in runs)
    assert app.uploaded_file({"path": "/up/x.png", "url": "http://h/x.png", "orig_name": "x.png"}) == "/up/x.png"
    assert app.uploaded_file(None) is None and app.uploaded_file("x.png") == "x.png"


def test_run_streams_and_ends_with_verdict_and_share_link(app, env):
    updates = run(app)
    ui = app.ui
    statuses = [u[ui.status] for u in updates if ui.status in u]
    assert statuses[0] == "Loading the model…"
    assert any("m=1: step 1/2" in s for s in statuses) and any("m=2: step 2/2" in s for s in statuses)
    assert any(isinstance(u.get(ui.curve), Figure) for u in updates)
    final = updates[-1]
    verdict = final[ui.verdict]
    assert verdict.startswith("## Original") or verdict.startswith("## Familiar")
    share = final[ui.share]
    assert share.startswith(PAGE + "?run=")
    run_id = share.split("?run=")[1]
    report = env.load(run_id)
    assert report.verdict in verdict  # what is stored is what was shown
    assert env.info(run_id)["preset"] == "fast"
    # one visible row per tried length, galleries captioned with distances and the layout check
    state = merged(updates)
    for m in range(1, len(report.results) + 1):
        assert state[ui.rows[m - 1]].visible is True
        captions = [c for _, c in state[ui.recon[m - 1]]]
        assert len(captions) == 2 and all(c.startswith("d=") and c.endswith(("moved", "copy")) for c in captions)
        assert state[ui.edit_col[m - 1]].visible is False  # the shapes world checks reconstructions, not edits
        assert "layout check" in state[ui.row_md[m - 1]]
    # the slider shows the query against its closest reconstruction
    query, recon = final[ui.slider]
    assert query.size == recon.size == (64, 64)
    # downloads: report.json, learned embeddings per m, a zip of the whole run
    names = [Path(p).name for p in final[ui.files]]
    assert names[:2] == ["report.json", "report.html"] and names[-1] == f"originality-run-{run_id}.zip"
    html = Path(final[ui.files][1]).read_text(encoding="utf-8")
    assert report.verdict in html and html.count('src="data:image/') == 1 + 3 * len(report.results)
    # the reproducibility record is shown, and is the stored one
    assert final[ui.record] == report.record and final[ui.record]["query"]["sha256"] in html
    assert "learned_embeds_m1.safetensors" in names
    with zipfile.ZipFile(final[ui.files][-1]) as zf:
        assert f"originality-run-{run_id}/m1/learned_embeds.safetensors" in zf.namelist()
        assert f"originality-run-{run_id}/query.png" in zf.namelist()


def test_more_seeds_stream_their_progress_and_the_label_over_seeds(app, env):
    """The Advanced panel's seeds: the page streams the repeats' progress in the status line (not as rows),
    and the verdict, the stored run and its share page give the label over the seeds."""
    updates = run(app, seeds=2, max_tokens=1)
    ui = app.ui
    statuses = [u[ui.status] for u in updates if ui.status in u]
    assert any(s.startswith("seed 2 of 2: m=1: step 1/2") for s in statuses)
    run_id = updates[-1][ui.share].split("?run=")[1]
    report = env.load(run_id)
    assert [r.seed for r in report.seed_runs] == [0, repeat_seed(0, 1)]  # TINY seed, then its first repeat
    assert len(report.results) == 1  # the repeat's lengths are not the page's rows
    line = f"Over 2 inversion seeds:** {report.label_distribution.describe()}"
    assert line in updates[-1][ui.verdict] and line in app.show_run(run_id, request())[ui.verdict]


def test_share_link_reopens_the_same_result_without_recomputing(app, env, monkeypatch):
    final = run(app)[-1]
    run_id = final[app.ui.share].split("?run=")[1]

    def no_engine(*args, **kwargs):
        raise AssertionError("a shared run must not be recomputed")

    monkeypatch.setattr(zerogpu, "engine_length", no_engine)
    ui = app.ui
    page = app.on_page_load(request(query_params={"run": run_id}))
    assert page[ui.verdict] == final[ui.verdict]
    assert page[ui.share] == final[ui.share]
    assert page[ui.record] == final[ui.record] and page[ui.record]["seeds"]["inversion"]
    assert isinstance(page[ui.curve], Figure)
    assert page[ui.rows[0]].visible is True and len(page[ui.recon[0]]) == 2
    assert "not recomputed" in page[ui.status]
    # the settings of the run are restored into the form
    assert page[ui.world] == "shapes" and page[ui.domain] == "default" and page[ui.preset] == "fast"
    advanced = dict(zip(app.ADVANCED_NAMES, [page[c] for c in ui.advanced]))
    assert advanced["max_tokens"] == "2" and advanced["steps"] == "2" and advanced["num_reconstructions"] == "2"
    assert advanced["learning_rate"] == "0.005" and advanced["edit_prompt"] == "cat in {}"
    assert advanced["lr_schedule"] == "constant"
    assert page[ui.image].size == (64, 64)
    # and the API endpoint gives the same summary
    api = app.load_run_api(run_id)
    assert api["run_id"] == run_id and api["summary"]["verdict"] in final[ui.verdict]


def test_download_folders_are_pruned_to_the_newest(app, env, monkeypatch):
    monkeypatch.setattr(app, "DOWNLOAD_KEEP", 1)
    first = run(app, max_tokens=1)[-1][app.ui.share].split("?run=")[1]
    first_files = app.download_files(first)
    assert all(Path(p).is_file() for p in first_files)
    second = run(app, max_tokens=1, seed=1)[-1][app.ui.share].split("?run=")[1]
    assert second != first
    assert [p.name for p in app.DOWNLOAD_DIR.iterdir()] == [second]
    # an evicted folder is rebuilt from the run store on the next request
    assert [Path(p).name for p in app.download_files(first)] == [Path(p).name for p in first_files]
    assert (app.DOWNLOAD_DIR / first).is_dir() and not (app.DOWNLOAD_DIR / second).exists()


def test_no_run_parameter_changes_nothing(app, env):
    for page in (app.on_page_load(request()), app.on_page_load(None)):
        assert list(page) == [app.ui.status] and page[app.ui.status] == gr.skip()


@pytest.mark.parametrize("bad, message", [
    ("../../etc", "not a run id"),
    ("abc", "not a run id"),
    ("A" * 22, "no stored run has the id"),
])
def test_bad_share_id_gives_a_clear_message(app, env, bad, message):
    page = app.on_page_load(request(query_params={"run": bad}))
    assert set(page) == {app.ui.status}
    assert "Could not open the shared run" in page[app.ui.status] and message in page[app.ui.status]
    with pytest.raises(gr.Error) as info:
        app.load_run_api(bad)
    assert message in info.value.message


def test_bad_files_get_the_engines_message_in_the_error_and_the_status_line(app, env, tmp_path):
    for name, (path, message) in bad_files(tmp_path).items():
        status, error = refusal(app, image=path)
        assert message in error and status.startswith("⚠️") and views.plain(message) in status, name
    assert env.list_recent() == []


def test_odd_images_are_scored_as_the_cli_loads_them(app, env, tmp_path):
    """The app hands the file to `load_image` as it is: transparency on white, 16 bit, CMYK, EXIF orientation."""
    for name, path in odd_files(tmp_path).items():
        # grey copies are not shapes-world images: the world check is off, the input path is under test
        updates = run(app, image=path, max_tokens=1, steps=1, num_reconstructions=1, world_check="off")
        run_id = updates[-1][app.ui.share].split("=")[1]
        stored = np.asarray(Image.open(env.runs_dir / run_id / "query.png").convert("RGB"))
        assert np.array_equal(stored, np.asarray(prepare_image(load_image(str(path)), 64))), name
    assert env.load(run_id).record["query"]["sha256"]  # the input hashed as given


def test_upload_limit_is_the_apps_message(app, env, monkeypatch):
    monkeypatch.setattr(app, "UPLOAD_LIMIT", EXAMPLE.stat().st_size - 1)
    status, error = refusal(app)
    assert "file is too large" in error and "the limit is" in error and "too large" in status


def test_missing_image_is_refused_in_the_status_line(app, env):
    status, message = refusal(app, image=None)
    assert "Upload an image" in message and "Upload an image" in status


def test_every_preset_runs_within_the_public_bounds():
    # a preset the page offers that broke a public bound would refuse every visitor's run (and the default's, the
    # app's start): 12 selection images in `steady` once met a bound of 8
    for name, config in PRESETS.items():
        config.validate(public=True)
        assert AnalysisConfig.from_dict({}, base=config, public=True) == config, name


def test_every_numeric_setting_has_a_public_maximum_that_the_app_applies(app, env):
    numeric = [s for s in schema() if s.kind in (int, float)]
    assert numeric and all(s.public_max is not None for s in numeric)
    for s in numeric:
        if s.label:  # a field of the Advanced panel: refused by the form, naming the field and the bound
            bound = int(s.public_max) if s.kind is int else s.public_max
            status, error = refusal(app, **{s.name: bound + 1 if s.kind is int else bound * 2 + 1})
            assert s.name in error.lower() and f"{bound}" in error, error  # floats: their [low, high] message
    with pytest.raises(gr.Error, match="Steps must be at most 2000 on this public server, got 1000000000"):
        list(app.analyze_api(str(EXAMPLE), "shapes", "default", "", "fast", '{"steps": 1000000000}'))
    with pytest.raises(gr.Error, match="Num_reconstructions must be at most 20"):
        list(app.analyze_api(str(EXAMPLE), "shapes", "default", "", "fast", '{"num_reconstructions": 1000000}'))
    with pytest.raises(gr.Error, match="Batch_size must be at most 20"):
        list(app.analyze_api(str(EXAMPLE), "shapes", "default", "", "fast", '{"batch_size": 4096}'))
    # the command line and the Python API keep researcher-sized limits; both presets fit the public ones
    assert AnalysisConfig.from_dict({"steps": 1_000_000, "batch_size": 4096}).steps == 1_000_000
    for preset in ("fast", "paper"):
        AnalysisConfig.preset(preset).validate(public=True)


INJECTIONS = ["[log in again](https://evil.example/login) <h1>X</h1>", "<script>alert(1)</script>AAAAAAAAAAAAAAAA",
              "<img src=x onerror=alert(1)>https://evil.example", "AAAAAAAAAAAAAAAAAAAAAAAA\n# heading **bold**"]


@pytest.mark.parametrize("bad", INJECTIONS)
def test_what_a_visitor_types_is_never_markdown_or_html(app, env, bad):
    page = app.on_page_load(request(query_params={"run": bad}))
    status = page[app.ui.status]
    assert "not a run id" in status
    for piece in ("[", "]", "(", ")", "<", ">", ":", "#", "*"):
        assert piece not in status.replace("\\" + piece, "")  # every one escaped
    with pytest.raises(gr.Error) as info:
        app.load_run_api(bad)
    assert "<" not in info.value.message  # the popup renders HTML
    status, error = refusal(app, domain="custom", word=bad.replace(" ", "")[:40])
    assert "<" not in error and "<" not in status.replace("\\<", "")


def test_plain_keeps_the_text_and_escapes_every_mark():
    import markdown_it  # what Gradio's Markdown follows: CommonMark

    for text in INJECTIONS:
        assert "://" not in views.plain(text) and "www." not in views.plain(text)  # no autolink can form
        html = markdown_it.MarkdownIt("commonmark").render(views.plain(text))
        assert "<a " not in html and "<h1>" not in html and "<script" not in html and "<img" not in html
        assert html.strip() == f"<p>{views.toast(text)}</p>"  # the same text, as text


def test_examples_the_server_cannot_run_are_left_out(app, monkeypatch):
    monkeypatch.setattr(worlds.sd, "sd_available", lambda model_id=None: False)  # the SD world's own module
    monkeypatch.delenv("ORIGINALITY_MODEL", raising=False)
    _, labels = views.examples_table(app.EXAMPLES_DIR)
    assert labels and not any(label.startswith("SD") for label in labels)
    monkeypatch.setattr(worlds.sd, "sd_available", lambda model_id=None: True)
    assert any(label.startswith("SD") for label in views.examples_table(app.EXAMPLES_DIR)[1])


@pytest.mark.parametrize("word, message", [
    ("zebra", "not in this model's vocabulary"),
    ("two words", "one word"),
    ("", "type the custom domain word"),
])
def test_custom_domain_must_be_one_known_token(app, env, word, message):
    status, popup = refusal(app, domain="custom", word=word)
    assert message.lower() in popup.lower()


def test_custom_domain_that_is_one_token_runs(app, env):
    final = run(app, domain="custom", word="circle", max_tokens=1)[-1]
    run_id = final[app.ui.share].split("?run=")[1]
    assert env.load(run_id).config["domain"] == "circle"


def test_bad_advanced_value_is_refused_with_its_message(app, env):
    assert re.search("(?i)max tokens.*whole number", refusal(app, max_tokens=1.5)[1])
    assert "Learning_rate must be in" in refusal(app, learning_rate=5.0)[1]
    assert "Lr_schedule must be one of constant, linear, cosine, got 'exponential'" in \
        refusal(app, lr_schedule="exponential")[1]


def test_unavailable_world_is_a_gradio_error(app, env, monkeypatch):
    monkeypatch.setattr(worlds.sd, "sd_available", lambda: False)
    monkeypatch.delenv("ORIGINALITY_MODEL")
    status, message = refusal(app, world="sd")  # the status line says it, not "Loading the model…"
    assert "needs a CUDA GPU" in message and "needs a CUDA GPU" in status
    shapes = worlds.get_world("shapes")
    monkeypatch.setitem(worlds._WORLDS, "shapes", dataclasses.replace(shapes, default_model=str(env.root / "none")))
    assert "shapes-world model is not installed" in refusal(app, world="shapes")[1]


def test_time_limit_stops_the_run_with_a_message(app, env, monkeypatch):
    monkeypatch.setenv("ORIGINALITY_RUN_TIMEOUT", "0")
    status, error = refusal(app)
    assert "took longer than the 0 s limit" in error and "took longer than the 0 s limit" in status
    assert env.list_recent() == []
    # the stopped run released the model: the next run works
    monkeypatch.setenv("ORIGINALITY_RUN_TIMEOUT", "900")
    assert run(app, max_tokens=1)[-1][app.ui.share]


def test_closing_the_stream_cancels_and_frees_the_model(app, env, tiny_shapes_model):
    stream = app.run_analysis(str(EXAMPLE), "shapes", "default", "", "fast", {**TINY, "steps": 50})
    for update in stream:
        if "step 1/50" in str(update.get(app.ui.status, "")):
            break
    stream.close()  # what Gradio does on Cancel
    model = models.load_model(str(tiny_shapes_model))
    assert not model.lock.locked()
    assert env.list_recent() == []


def test_gallery_click_selects_the_slider_pair(app, env):
    final = run(app)[-1]
    images = final[app.ui.images]
    select = app._make_select(1, "recon")
    out = select(images, gr.SelectData(None, {"index": 1, "value": None, "selected": True}))
    assert isinstance(out, gr.ImageSlider)
    assert "reconstruction #2 (m = 1)" in out.label


def test_analyze_api_returns_summary_and_share_id(app, env):
    out = list(app.analyze_api(str(EXAMPLE), "shapes", "default", "", "fast",
                               '{"max_tokens": 1, "steps": 2, "batch_size": 2, "num_reconstructions": 2, '
                               '"num_inference_steps": 2}', request()))[-1]
    assert out["summary"]["label"] in ("1", "1+") and out["summary"]["max_tokens"] == 1
    assert out["share_url"] == PAGE + "?run=" + out["run_id"]
    assert env.load(out["run_id"]).label == out["summary"]["label"]
    with pytest.raises(gr.Error, match="Unknown setting"):
        list(app.analyze_api(str(EXAMPLE), "shapes", "default", "", "fast", '{"stepz": 2}', None))
    with pytest.raises(gr.Error, match="JSON object"):
        list(app.analyze_api(str(EXAMPLE), "shapes", "default", "", "fast", "[1, 2]", None))


# --------------------------------------------------------------------------- small pieces


def test_build_config_layers(app, monkeypatch):
    monkeypatch.setattr(app, "DEFAULTS", {"steps": 7, "num_edits": 3})
    c = app.build_config("paper", "default", "", {"max_tokens": None, "steps": "", "seed": 4.0})
    assert (c.steps, c.num_edits, c.seed, c.batch_size, c.domain) == (7, 3, 4, 20, None)
    c = app.build_config("fast", "dog", "ignored", {"steps": 9, "lr_schedule": " cosine "})
    assert (c.steps, c.domain, c.batch_size, c.lr_schedule) == (9, "dog", 8, "cosine")
    with pytest.raises(gr.Error, match="(?i)preset must be one of"):
        app.build_config("slow", "default", "", {})
    with pytest.raises(gr.Error, match="steps"):
        app.build_config("fast", "default", "", '{"steps": "many"}')


def test_parse_defaults(app, monkeypatch):
    """ORIGINALITY_DEFAULTS as app.py reads it (`app.parse_defaults`, what DEFAULTS comes from): checked against the
    public server's limits, not only the researcher-sized ones of the command line."""
    parse_defaults = app.parse_defaults
    assert parse_defaults("") == {} and parse_defaults(None) == {} and parse_defaults("  ") == {}
    assert parse_defaults('{"max_tokens": 2, "num_edits": 2}') == {"max_tokens": 2, "num_edits": 2}
    with pytest.raises(ValueError, match="ORIGINALITY_DEFAULTS is not valid JSON"):
        parse_defaults("{max_tokens: 2}")
    with pytest.raises(ValueError, match="unknown settings"):
        parse_defaults('{"tokens": 2}')
    with pytest.raises(ValueError, match="max_tokens must be"):
        parse_defaults('{"max_tokens": 0}')
    # public maxima: each numeric setting at its public maximum is accepted, one above is refused, even where the
    # command line's own bound allows it (max_tokens: 16 for the CLI, 8 here; steps: no CLI bound, 2000 here)
    for s in schema():
        if s.kind not in (int, float) or s.public_max is None:
            continue
        top = int(s.public_max) if s.kind is int else s.public_max
        above = top + 1 if s.kind is int else top * 2 + 1
        if s.high is not None and above > s.high:
            continue  # refused by the general bound too: not what is under test
        # the reconstruction probe judges a length on the images it stopped at, so it goes with one restart; the
        # doubt's margin is the benefit of the doubt's, so it goes with undecided_as 'pass'
        alone = {"probe_every": {"restarts": 1}, "doubt_images": {"undecided_as": "pass"}}.get(s.name, {})
        assert parse_defaults(json.dumps({s.name: top, **alone})) == {s.name: top, **alone}
        AnalysisConfig.from_dict({s.name: above, **alone})  # allowed off the public server ...
        with pytest.raises(ValueError, match=f"{s.name} must be at most {top} on this public server"):
            parse_defaults(json.dumps({s.name: above, **alone}))  # ... refused by the app
    with pytest.raises(ValueError, match="max_tokens must be at most 8 on this public server, got 16"):
        parse_defaults('{"max_tokens": 16}')
    # and app.py reads its DEFAULTS with it: with a too large value the app refuses to start (a fresh copy of the
    # module, executed beside the one under test; it stops at DEFAULTS, before building the page)
    monkeypatch.setenv("ORIGINALITY_DEFAULTS", '{"steps": 5000}')
    spec = importlib.util.spec_from_file_location("app_with_bad_defaults", ROOT / "app.py")
    with pytest.raises(ValueError, match="steps must be at most 2000 on this public server"):
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


def test_share_url(app):
    assert app.share_url(None, "X" * 22) == "?run=" + "X" * 22
    assert app.share_url(request(headers={"referer": "https://a.hf.space/?run=old#x"}), "id") == \
        "https://a.hf.space/?run=id"
    assert app.share_url(request(headers={}, url="http://h:7860/gradio_api/queue/join?x=1"), "id") == \
        "http://h:7860/?run=id"


def test_world_resolution(tiny_shapes_model, monkeypatch):
    """The app's model world choice, from the registry: $ORIGINALITY_MODEL serves the world it belongs to."""
    monkeypatch.setenv("ORIGINALITY_MODEL", str(tiny_shapes_model))
    assert worlds.world_model_id(worlds.get_world("shapes")) == str(tiny_shapes_model)
    assert worlds.world_model_id(worlds.get_world("sd")) == models.SD_MODEL_ID
    world, why = worlds.default_world()
    assert (world.name, why) == ("shapes", f"set by ORIGINALITY_MODEL ({tiny_shapes_model})")
    monkeypatch.setenv("ORIGINALITY_MODEL", "someone/custom-sd")
    assert worlds.world_model_id(worlds.get_world("sd")) == "someone/custom-sd"
    assert worlds.world_model_id(worlds.get_world("shapes")) == str(worlds.get_world("shapes").default_model)
    with pytest.raises(ValueError, match="unknown model world"):
        worlds.get_world("dalle")


def test_edit_gallery_captions_for_an_edit_check(app):
    """Stable Diffusion's check scores edits ("cat in S*"): they get their own gallery, captioned P(cat)."""
    from PIL import Image

    im = Image.new("RGB", (64, 64))
    view = views.RunView(query=im, config={"edit_subject": "cat", "threshold": 0.45, "max_tokens": 3},
                         model={"world": "stable-diffusion", "in_distribution": "clip-edit", "distance": "dreamsim"})
    lv = view.length(1)
    lv.reconstructions, lv.distances, lv.mean, lv.std, lv.distance_passed = [im, im], [0.3, 0.4], 0.35, 0.07, True
    lv.edits, lv.check_scores, lv.check_scored = [im, im], [0.93, 0.2], "edits"
    lv.check_passed, lv.check_detail, lv.done = True, "1/2 edits show a cat", True
    ups = app._row_updates(view, 1)
    assert [c for _, c in ups[app.ui.edits[0]]] == ["P(cat)=0.93", "P(cat)=0.20"]
    assert [c for _, c in ups[app.ui.recon[0]]] == ["d=0.30", "d=0.40"]
    assert ups[app.ui.edit_col[0]].visible is True
    assert "edit check: 1/2 edits show a cat (pass)" in ups[app.ui.row_md[0]]
    assert ups[app.ui.row_md[0]].endswith("**passes**")
    assert isinstance(views.curve_figure(view), Figure)


def test_gallery_images_are_written_once_however_often_a_gallery_is_updated(app, tmp_path, monkeypatch):
    """A run re-sends a length's galleries with every event of that length and at the end. Handed PIL images,
    Gradio rewrote each image's cache file on every update, truncating files the browser was fetching (the
    clean-clone CI run's browser test then waited for reconstructions that never loaded). Gallery items are
    files written once: the same path on every update, and Gradio's cached copy is never rewritten."""
    import numpy as np
    from PIL import Image

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    ims = [Image.fromarray(np.full((64, 64, 3), 40 * i, np.uint8)) for i in range(3)]
    view = views.RunView(query=ims[0], config={"threshold": 0.3, "max_tokens": 1},
                         model={"world": "shapes", "in_distribution": "layout-variation", "distance": "element"})
    lv = view.length(1)
    lv.reconstructions, lv.distances = ims, [0.1, 0.2, 0.3]
    first = app._row_updates(view, 1)[app.ui.recon[0]]
    again = app._row_updates(view, 1)[app.ui.recon[0]]
    assert [p for p, _ in first] == [p for p, _ in again] and len({p for p, _ in first}) == 3
    for (path, _), im in zip(first, ims):
        assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), np.asarray(im))
    written = {p: os.stat(p).st_ino for p, _ in first}
    gallery = gr.Gallery(format="png")
    cached = [item.image.path for item in gallery.postprocess(first).root]
    stamps = [os.stat(c).st_ino for c in cached]
    cached_again = [item.image.path for item in gallery.postprocess(again).root]
    assert cached_again == cached and [os.stat(c).st_ino for c in cached] == stamps
    assert {p: os.stat(p).st_ino for p, _ in again} == written


@pytest.fixture
def gallery_tmp(tmp_path, monkeypatch):
    """The gallery's folders in a temp directory of the test's own (a sweep also visits earlier processes' folders,
    which the machine's temp directory may hold)."""
    monkeypatch.setattr(views.tempfile, "tempdir", str(tmp_path))
    views._gallery_dir.cache_clear()
    yield tmp_path
    views._gallery_dir.cache_clear()


def test_served_files_are_swept_once_a_day_old(app, gallery_tmp):
    """A Space runs for weeks: the gallery's files not handed out for a day are deleted, an image whose file went
    is written again when next shown, and Gradio's own cache is swept the same way."""
    import numpy as np
    from PIL import Image

    old, kept = (Image.fromarray(np.full((8, 8, 3), v, np.uint8)) for v in (11, 12))
    old_path, kept_path = views.gallery_file(old), views.gallery_file(kept)
    day = views.FILE_MAX_AGE_S
    for path in (old_path, kept_path):
        os.utime(path, (time.time() - day - 60,) * 2)
    assert views.gallery_file(kept) == kept_path  # shown again: handed out now, so it stays
    assert views.sweep_gallery() == 1 and not os.path.exists(old_path) and os.path.exists(kept_path)
    again = views.gallery_file(old)
    assert again == old_path and np.array_equal(np.asarray(Image.open(again).convert("RGB")), np.asarray(old))
    assert app.demo.delete_cache == (views.FILE_SWEEP_EVERY_S, day)


def test_gallery_folders_of_earlier_app_processes_are_swept(app, gallery_tmp):
    """Each app process has its own gallery folder; a restarted app leaves the last one behind. Its day-old files
    go with the next sweep and the folder with them, while a folder with fresh files (a live process) stays."""
    import numpy as np
    from PIL import Image

    tmp_path = gallery_tmp
    day = views.FILE_MAX_AGE_S
    dead, live = tmp_path / f"{views.GALLERY_PREFIX}dead", tmp_path / f"{views.GALLERY_PREFIX}live"
    for folder in (dead, live):
        folder.mkdir()
        (folder / "a.png").write_bytes(b"png")
    os.utime(dead / "a.png", (time.time() - day - 60,) * 2)
    ours = views.gallery_file(Image.fromarray(np.full((8, 8, 3), 7, np.uint8)))
    assert views.sweep_gallery() == 1
    assert not dead.exists() and (live / "a.png").exists() and os.path.exists(ours)
    # a sweep by another process that removed our (then empty) folder does not stop the next image
    for path in Path(ours).parent.iterdir():
        path.unlink()
    Path(ours).parent.rmdir()
    again = views.gallery_file(Image.fromarray(np.full((8, 8, 3), 9, np.uint8)))
    assert os.path.exists(again)


def use_cost_table(monkeypatch, folder: Path, **rates: float) -> None:
    """Make the reservation read a cost table with these rates (in place of originality/gpu_costs.json)."""
    from originality import gpu_costs

    path = folder / "gpu_costs.json"
    path.write_text(json.dumps({**rates, "source": "test"}))
    real = gpu_costs.load_costs
    monkeypatch.setattr(gpu_costs, "load_costs", lambda *_: real(path))
    monkeypatch.delenv("ORIGINALITY_GPU_MAX_SECONDS", raising=False)


def test_gpu_reservation_follows_the_cost_table(monkeypatch, tmp_path):
    """The reservation is the documented formula on the rates of originality/gpu_costs.json (estimated or measured),
    rounded up and capped: the expectation is computed here from the rates in the file, so re-measured costs
    (`benchmarks/gpu_bench.py --update-costs`) keep it true."""
    from originality import gpu_costs

    monkeypatch.delenv("ORIGINALITY_GPU_MAX_SECONDS", raising=False)
    table = json.loads(gpu_costs.COSTS_FILE.read_text())
    overhead, per_sample, per_image_step = table["overhead_s"], table["s_per_sample"], table["s_per_image_step"]
    for preset in ("fast", "adaptive", "paper"):
        c = AnalysisConfig.preset(preset)
        estimate = (overhead + per_sample * c.steps * c.batch_size
                    + per_image_step * (c.num_reconstructions + c.num_edits) * c.num_inference_steps)
        assert zerogpu.gpu_seconds(c.to_dict()) == min(300, math.ceil(estimate)), preset
    # known rates, known reservations: the estimate the table shipped with gives the fast preset
    # 30 + 0.04 * 150 * 8 + 0.03 * (8 + 4) * 20 = 85.2 -> 86 s and the paper preset the 300 s cap
    fast, paper = AnalysisConfig.preset("fast").to_dict(), AnalysisConfig.preset("paper").to_dict()
    use_cost_table(monkeypatch, tmp_path, overhead_s=30.0, s_per_sample=0.04, s_per_image_step=0.03)
    assert zerogpu.gpu_seconds(fast) == 86 and zerogpu.gpu_seconds(paper) == 300
    monkeypatch.setenv("ORIGINALITY_GPU_MAX_SECONDS", "60")
    assert zerogpu.gpu_seconds(fast) == 60
    # other rates, another reservation: 10 + 0.01 * 150 * 8 = 22; 10 + 0.5 * 1200 = 610 -> the cap
    use_cost_table(monkeypatch, tmp_path, overhead_s=10, s_per_sample=0.01, s_per_image_step=0)
    assert zerogpu.gpu_seconds(fast) == 22
    use_cost_table(monkeypatch, tmp_path, overhead_s=10, s_per_sample=0.5, s_per_image_step=0)
    assert zerogpu.gpu_seconds(fast) == 300


def test_gpu_call_uses_spaces_when_present(app, env, monkeypatch, tmp_path):
    """ZeroGPU: with the `spaces` package, ONE spaces.GPU call per token length, each reserved for a
    duration sized from the settings; arguments and streamed events must survive pickling (a forked
    worker). Without `spaces`, functions are left as they are."""
    calls = []

    class FakeSpaces:
        """Like spaces.GPU: the duration callable gets each call's arguments; the generator runs
        "elsewhere", so arguments and every yielded event go through pickle."""

        @staticmethod
        def GPU(duration=None):
            def wrap(fn):
                def call(*args):
                    calls.append((fn.__name__, args, duration(*args) if callable(duration) else duration))
                    out = fn(*pickle.loads(pickle.dumps(args)))
                    if inspect.isgenerator(out):
                        return (pickle.loads(pickle.dumps(event)) for event in out)
                    return pickle.loads(pickle.dumps(out))
                return call
            return wrap

    def fn(image, config, model_id, m):
        yield "event"

    # the reservation's arithmetic on a known cost table (gpu_costs.json's first estimate), whatever rates
    # `benchmarks/gpu_bench.py --update-costs` has measured since; test_gpu_reservation_follows_the_cost_table
    # checks the shipped table
    use_cost_table(monkeypatch, tmp_path, overhead_s=30.0, s_per_sample=0.04, s_per_image_step=0.03)
    assert zerogpu.gpu_call(fn) is fn  # no `spaces` here
    monkeypatch.setattr(zerogpu, "spaces", FakeSpaces)
    monkeypatch.setattr(zerogpu, "engine_prepare", zerogpu.gpu_call(zerogpu.prepare_call, zerogpu.PREPARE_GPU_S))
    monkeypatch.setattr(zerogpu, "engine_length", zerogpu.gpu_call(zerogpu.length_events))

    # max tokens 2 and a threshold no reconstruction meets: step 1, then both lengths, three GPU calls
    updates = run(app, threshold="0")
    assert [name for name, _, _ in calls] == ["prepare_call", "length_events", "length_events"]
    assert calls[0][2] == zerogpu.PREPARE_GPU_S and isinstance(calls[0][1][1], dict)  # settings travel as a dict
    assert [args[2] for _, args, _ in calls[1:]] == [1, 2]
    for _, (prepared, model_id, m, previous), seconds in calls[1:]:
        assert isinstance(model_id, str) and previous is None  # no warm start asked for (token_init "domain")
        # tiny settings: 30 + 0.04 * 2 * 2 + 0.03 * (2 + 4) * 2 = 30.52 -> 31 s
        assert seconds == zerogpu.gpu_seconds(prepared.config.to_dict()) == 31
    run_id = updates[-1][app.ui.share].split("?run=")[1]
    report = env.load(run_id)
    assert report.score is None and [r.num_tokens for r in report.results] == [1, 2]
    statuses = [u[app.ui.status] for u in updates if app.ui.status in u]
    assert sum(s.startswith("Running on") for s in statuses) == 1  # one Started for the whole run

    # the reservation follows the settings, within the cap (the formula: test_gpu_reservation_follows_the_cost_table)
    fast = AnalysisConfig.preset("fast")
    assert zerogpu._gpu_duration(SimpleNamespace(config=fast), "m", 3) == zerogpu.gpu_seconds(fast.to_dict()) == 86
    # m = 2 runs one inversion: fast's work and 96 images (no second opinion: a whole run is its five lengths once)
    until = AnalysisConfig.preset("steady", restarts_until=1, second_opinion=False)
    assert zerogpu._gpu_duration(SimpleNamespace(config=until), "m", 1) == zerogpu.gpu_seconds(until.to_dict())
    assert zerogpu._gpu_duration(SimpleNamespace(config=until), "m", 2) == math.ceil(gpu_costs.seconds(150, 8, 100, 20))
    assert zerogpu.run_gpu_seconds(until.to_dict()) == zerogpu.PREPARE_GPU_S + zerogpu.gpu_seconds(until.to_dict()) + \
        4 * math.ceil(gpu_costs.seconds(150, 8, 100, 20))
    assert zerogpu.run_gpu_seconds(fast.to_dict(), 2) == zerogpu.PREPARE_GPU_S + 2 * 86
    monkeypatch.setenv("ORIGINALITY_GPU_MAX_SECONDS", "60")
    assert zerogpu._gpu_duration(SimpleNamespace(config=fast), "m", 3) == 60


def test_a_share_link_made_before_the_format_change_still_opens(app, env):
    """A run stored by the code of report format 1 (edit_* names) opens from its share link."""
    import shutil

    run_id = "format1run" + "A" * 12
    shutil.copytree(ROOT / "tests" / "data" / "report-format1", env.runs_dir / run_id)
    assert env.rebuild_index() == 1
    page = app.on_page_load(request(query_params={"run": run_id}))
    assert page[app.ui.verdict].startswith("## Original") and "not recomputed" in page[app.ui.status]
    assert page[app.ui.rows[1]].visible is True
    captions = [c for _, c in page[app.ui.recon[0]]]
    assert len(captions) == 2 and all(c.endswith(("moved", "copy")) for c in captions)
    assert "layout check" in page[app.ui.row_md[0]] and page[app.ui.world] == "shapes"


def test_server_address_follows_gradio_variables(app, monkeypatch):
    for name in ("GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT", "PORT"):
        monkeypatch.delenv(name, raising=False)
    assert app.server_address() == ("0.0.0.0", 7860)
    monkeypatch.setenv("PORT", "8000")
    assert app.server_address() == ("0.0.0.0", 8000)
    monkeypatch.setenv("GRADIO_SERVER_PORT", "22300")
    monkeypatch.setenv("GRADIO_SERVER_NAME", "127.0.0.1")
    assert app.server_address() == ("127.0.0.1", 22300)


def test_references_show_beside_the_verdict_and_survive_the_share_link(app, env, tmp_path):
    from originality.shapes.renderer import Element, render

    render([Element("circle", "red", x=20, y=20)]).save(tmp_path / "mine.png")
    updates = list(app.run_analysis(str(EXAMPLE), "shapes", "default", "", "fast", {**TINY, "max_tokens": 1},
                                    request=request(), references=[{"path": str(EXAMPLE)}, str(tmp_path / "mine.png")]))
    final, ui = merged(updates), app.ui
    assert final[ui.similarity].visible is True
    value = final[ui.similarity].value
    captions = [item["caption"] for item in value]
    assert captions == ["your image", "shapes_common.png: copy 1.00 · style n/a"]
    assert "Similarity to your references" in final[ui.verdict] and "mine\\.png" in final[ui.verdict]
    assert "nearest reference" in final[ui.row_md[0]]
    page = app.show_run(final[ui.share].split("?run=")[1], request())
    assert page[ui.verdict] == final[ui.verdict] and page[ui.similarity].visible is True
    # without references: nothing shown
    plain_run = merged(run(app, max_tokens=1))
    assert plain_run[ui.similarity].visible is False and "references" not in plain_run[ui.verdict]


def test_bad_or_too_many_references_get_a_clear_message(app, env, tmp_path):
    (tmp_path / "broken.png").write_text("not an image")
    stream = app.run_analysis(str(EXAMPLE), "shapes", "default", "", "fast", TINY, request=request(),
                              references=[str(tmp_path / "broken.png")])
    with pytest.warns(UserWarning):
        status = list(stream)[-1][app.ui.status]
    assert "Reference image 'broken.png'" in status.replace("\\", "") and str(tmp_path) not in status
    with pytest.raises(gr.Error, match="Too many reference images: 9 given, at most 8"):
        list(app.analyze_api(str(EXAMPLE), "shapes", "default", "", "fast", "{}", None, [str(EXAMPLE)] * 9))


def test_analyze_api_takes_references_as_an_optional_last_input(app, env):
    out = list(app.analyze_api(str(EXAMPLE), "shapes", "default", "", "fast", '{"max_tokens": 1, "steps": 2, '
                               '"batch_size": 2, "num_reconstructions": 2, "num_inference_steps": 2}', request(),
                               [str(EXAMPLE)]))
    summary = out[-1]["summary"]
    assert summary["similarity"]["references"][0]["copy"] == 1.0 and summary["similarity"]["nearest"] == 0
    fn = next(fn for fn in app.demo.fns.values() if fn.name == "analyze_api")
    assert fn.inputs[-1] is app.ui.references  # after the six inputs of earlier clients (gr.Request is not one)
