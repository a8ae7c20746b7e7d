"""The shapes world's own drawing of a query (`shapes.redraw`, `AnalysisConfig.redraw`): what the detector reads,
drawn by the renderer, so that the model is shown the world's drawing whatever program drew the image."""

from __future__ import annotations

import io
import itertools
import shutil

import numpy as np
import pytest
from PIL import Image

from originality import AnalysisConfig, analyze, html_report, prepare
from originality.app.views import form_values
from originality.config import DEFAULT_PRESET
from originality.experiments.figure6 import query_image
from originality.experiments.other_program import draw as other_program_draw
from originality.experiments.reliability import SPLITS
from originality.images import prepare_image
from originality.models import load_model
from originality.repeatability import expected_repeatability
from originality.report import Report
from originality.reproduce import reproduce
from originality.shapes import dataset, renderer
from originality.shapes.detector import detect
from originality.shapes.redraw import redraw

E = renderer.Element


def _keys(elements) -> list[tuple[str, str, str, str]]:
    return sorted((e.shape, e.colour, e.size, e.texture) for e in elements)


def test_a_hexagon_on_a_vertex_reads_as_a_hexagon_and_says_so():
    """The world draws a hexagon on a side; other programs stand it on a vertex (turned 30 degrees)."""
    for size, texture in itertools.product(renderer.SIZES, renderer.TEXTURES):
        found = detect(renderer.render([E("hexagon", "blue", size, texture, 30.4, 33.1, turn=30.0)]))
        assert [d.key for d in found] == [("hexagon", "blue", size, texture)]
        assert found[0].element.turn == 30.0
        upright = detect(renderer.render([E("hexagon", "blue", size, texture, 30.4, 33.1)]))
        assert upright[0].element.turn == 0.0


def test_redraw_is_the_renderers_drawing_of_what_is_read():
    """Another program's drawing (pure colours, inscribed squares 13% smaller, a hexagon on a vertex) comes back as the
    renderer's exact drawing: the same elements, the nominal colours, the size words' radii, upright."""
    elements = [E("square", "red", "big", "full", 18.2, 20.6), E("hexagon", "green", "big", "empty", 44.7, 43.1),
                E("circle", "blue", "small", "full", 47.3, 15.2)]
    given = other_program_draw(elements)
    drawn = redraw(given)
    assert drawn.size == (64, 64)
    read = detect(drawn)
    assert _keys(read) == _keys(elements)
    assert all(d.element.scale == 1.0 and d.element.turn == 0.0 for d in read)
    # the square's core is the nominal red now, not the program's pure red
    assert np.asarray(given)[20, 18].tolist() == [255, 0, 0]
    assert np.asarray(drawn)[20, 18].tolist() == list(renderer.RGB["red"])
    # as given, the square was read smaller than any the world draws and the hexagon turned
    as_given = {d.shape: d.element for d in detect(given)}
    assert as_given["square"].scale < 0.9 and as_given["hexagon"].turn == 30.0


def test_redraw_keeps_the_layout_of_the_worlds_drawings():
    """Queries of both splits drawn by the renderer, exact or varied, redraw to their own layout: the same elements,
    each within a pixel of where it was drawn (positions are read to about 0.3 px)."""
    for (group, index), seed in itertools.product(itertools.product(("common", "rare", "unseen"), range(3)),
                                                  SPLITS.values()):
        elements = dataset.query(group, seed, index).elements
        for drawing in ("exact", "varied"):
            read = detect(redraw(query_image(group, seed, index, drawing)[1]))
            assert _keys(read) == _keys(elements), (group, seed, index, drawing)
            for e in elements:
                assert min(np.hypot(d.element.x - e.x, d.element.y - e.y) for d in read
                           if d.key == (e.shape, e.colour, e.size, e.texture)) < 1.0, (group, seed, index, drawing)


def test_nothing_read_nothing_redrawn():
    assert redraw(Image.new("RGB", (64, 64), "white")) is None


def test_the_engine_shows_the_model_the_redrawn_query_and_says_so(tiny_shapes_model):
    model = load_model(str(tiny_shapes_model), device="cpu")
    given = other_program_draw([E("square", "red", "big", "full", 30.2, 31.6)])
    on = prepare(given, AnalysisConfig.preset("fast", redraw="on"), model)
    assert np.array_equal(np.asarray(on.query), np.asarray(redraw(given)))
    assert any("own drawing" in note for note in on.notes)
    assert on.config.redraw == "on"
    off = prepare(given, AnalysisConfig.preset("fast", redraw="off"), model)
    assert np.array_equal(np.asarray(off.query), np.asarray(given)) and not off.notes


def test_the_default_preset_redraws_and_quotes_its_own_published_figures(tiny_shapes_model):
    """`steady` shows the model the world's drawing (session 29), and a report finds the shipped table's figures for
    what was analysed: the redrawn ones by default, the as-given ones under redraw off."""
    model = load_model(str(tiny_shapes_model), device="cpu")
    given = other_program_draw([E("circle", "green", "big", "full", 20.5, 40.2),
                                E("square", "blue", "big", "full", 44.0, 22.3)])
    default = prepare(given, AnalysisConfig.preset(DEFAULT_PRESET), model)
    assert default.config.redraw == "on"
    assert np.array_equal(np.asarray(default.query), np.asarray(redraw(given)))
    as_given = prepare(given, AnalysisConfig.preset(DEFAULT_PRESET, redraw="off"), model)
    assert np.array_equal(np.asarray(as_given.query), np.asarray(given))
    redrawn_figures = expected_repeatability("shapes", default.config.to_dict())
    given_figures = expected_repeatability("shapes", as_given.config.to_dict())
    assert redrawn_figures.name == DEFAULT_PRESET and given_figures.name == f"{DEFAULT_PRESET}-redraw=off"
    assert redrawn_figures.source != given_figures.source


def test_a_report_of_a_redrawn_query_shows_and_names_the_drawing(tiny_shapes_model):
    model = load_model(str(tiny_shapes_model), device="cpu")
    given = other_program_draw([E("star", "blue", "big", "full", 33.2, 30.1)])
    config = AnalysisConfig.preset("fast", redraw="on", max_tokens=1, steps=1, num_reconstructions=1,
                                   max_reconstructions=1, num_inference_steps=1)
    report = analyze(given, config, model)
    assert np.array_equal(np.asarray(report.query), np.asarray(redraw(given)))
    assert report.query_caption == "your image, as the world draws it"
    assert any("own drawing" in note for note in report.notes)
    page = html_report.render(report)
    assert "your image, as the world draws it" in page and "own drawing" in page
    assert "your image, as given" in page  # the upload is shown beside what the model was shown
    as_given = analyze(given, config.replace(redraw="off"), model)
    assert as_given.query_caption == "your image" and as_given.given_image is None
    assert "your image, as given" not in html_report.render(as_given)


def test_a_non_square_upload_is_named_as_its_centre_square(tiny_shapes_model, tmp_path):
    model = load_model(str(tiny_shapes_model), device="cpu")
    drawing = np.asarray(other_program_draw([E("star", "blue", "big", "full", 33.2, 30.1)]).convert("RGB"))
    page = np.full((drawing.shape[0], 3 * drawing.shape[1], 3), 255, np.uint8)  # white margins left and right
    page[:, drawing.shape[1]:2 * drawing.shape[1]] = drawing
    config = AnalysisConfig.preset("fast", redraw="on", max_tokens=1, steps=1, num_reconstructions=1,
                                   max_reconstructions=1, num_inference_steps=1)
    report = analyze(Image.fromarray(page), config, model)
    assert (report.record["input"]["width"], report.record["input"]["height"]) == (page.shape[1], page.shape[0])
    assert report.given_caption == "your image's centre square, as given"
    assert "your image&#x27;s centre square, as given" in html_report.render(report)
    # the caption survives a save, and an unredrawn run names the analysed image the same way
    assert Report.load(report.save(tmp_path / "run")).given_caption == report.given_caption
    assert analyze(Image.fromarray(page), config.replace(redraw="off"), model).query_caption == (
        "your image's centre square")
    square = analyze(Image.fromarray(drawing), config, model)
    assert square.given_caption == "your image, as given" and "centre square" not in html_report.render(square)

def test_a_redrawn_report_keeps_the_image_as_given(tiny_shapes_model, tmp_path):
    model = load_model(str(tiny_shapes_model), device="cpu")
    given = other_program_draw([E("triangle", "red", "big", "full", 28.3, 35.7)])
    config = AnalysisConfig.preset("fast", redraw="on", max_tokens=1, steps=1, num_reconstructions=1,
                                   max_reconstructions=1, num_inference_steps=1)
    report = analyze(given, config, model)
    assert np.array_equal(np.asarray(report.given_image), np.asarray(prepare_image(given, model.resolution)))
    loaded = Report.load(report.save(tmp_path / "run"))
    assert np.array_equal(np.asarray(loaded.given_image), np.asarray(report.given_image))
    assert np.array_equal(np.asarray(loaded.query), np.asarray(redraw(given)))
    # a shared run's form shows the image as the visitor gave it (the same settings redraw it again)
    assert np.array_equal(np.asarray(form_values(loaded, None, [])["image"]), np.asarray(report.given_image))
    # a report written before the image as given was kept still loads, without it
    (tmp_path / "run" / "given.png").unlink()
    assert Report.load(tmp_path / "run").given_image is None


def test_an_image_with_nothing_to_read_is_analysed_and_named_as_given(tiny_shapes_model):
    model = load_model(str(tiny_shapes_model), device="cpu")
    blank = Image.new("RGB", (64, 64), "white")
    config = AnalysisConfig.preset("fast", redraw="on", world_check="off", max_tokens=1, steps=1,
                                   num_reconstructions=1, max_reconstructions=1, num_inference_steps=1)
    report = analyze(blank, config, model)
    assert np.array_equal(np.asarray(report.query), np.asarray(blank))
    assert any("nothing in it could be read" in note for note in report.notes)
    assert report.query_caption == "your image" and report.config["redraw"] == "on"


def test_a_large_compressed_drawing_redraws_to_the_same_elements():
    """Another program's drawing at 512 px, saved as JPEG at quality 50: the query the model is shown holds the same
    elements, drawn as the world draws them."""
    for group, index in itertools.product(("common", "rare", "unseen"), range(2)):
        elements = dataset.query(group, 307, index).elements
        buffer = io.BytesIO()
        other_program_draw(elements, size=512).save(buffer, "JPEG", quality=50)
        drawn = redraw(prepare_image(buffer.getvalue(), 64))
        assert _keys(detect(drawn)) == _keys(elements), (group, index)
        # the JPEG's blocks of off-colours are gone: most coloured pixels are exactly a nominal colour again
        pixels = np.asarray(drawn).reshape(-1, 3)
        coloured = pixels.min(axis=1) < 200
        nominal = np.zeros(len(pixels), dtype=bool)
        for rgb in renderer.RGB.values():
            nominal |= (pixels == rgb).all(axis=1)
        assert nominal.sum() > 0.6 * coloured.sum(), (group, index)


def test_a_redrawn_run_reproduces_number_for_number(tiny_shapes_model, tmp_path):
    """Drawing a drawing again can move a shape by a fraction of a pixel (another query, other seeds), so the rerun
    starts from the image as given (given.png); a redrawn run saved before given.png was kept reruns on the drawing
    the model saw, with redraw off. Either way the same pixels reach the model and the numbers agree."""
    model = load_model(str(tiny_shapes_model), device="cpu")
    given = other_program_draw([E("square", "green", "big", "full", 21.3, 40.6),
                                E("star", "red", "big", "full", 43.1, 20.2)])
    assert not np.array_equal(np.asarray(redraw(redraw(given))), np.asarray(redraw(given)))  # the case that matters
    config = AnalysisConfig.preset("fast", redraw="on", max_tokens=2, steps=2, batch_size=2, num_reconstructions=2,
                                   max_reconstructions=2, num_inference_steps=2, num_edits=1)
    run_dir = analyze(given, config, model).save(tmp_path / "run")
    for rerun in (reproduce(run_dir, device="cpu"), reproduce(_without_given(run_dir, tmp_path), device="cpu")):
        assert rerun.labels_match and rerun.max_difference == 0
        assert np.array_equal(np.asarray(rerun.new.query), np.asarray(rerun.recorded.query))


def test_a_run_whose_image_the_redraw_now_reads_otherwise_reruns_on_what_the_model_saw(tiny_shapes_model, tmp_path,
                                                                                     caplog):
    """When the redraw reads a run's image as given otherwise than the run did (the detector changed since, here
    stood in for by another drawing in given.png), the rerun is shown the run's query.png, the drawing the model saw
    (checked against the record), with redraw off, and says so; the numbers agree. A query.png that is not the
    recorded drawing is still refused."""
    model = load_model(str(tiny_shapes_model), device="cpu")
    config = AnalysisConfig.preset("fast", redraw="on", max_tokens=1, steps=2, batch_size=2, num_reconstructions=2,
                                   max_reconstructions=2, num_inference_steps=2, num_edits=1)
    run_dir = analyze(other_program_draw([E("circle", "blue", "big", "full", 24.2, 38.7)]), config, model).save(
        tmp_path / "run")
    other_program_draw([E("square", "red", "small", "full", 40.1, 22.3)]).save(run_dir / "given.png")
    with caplog.at_level("WARNING", logger="originality.reproduce"):
        rerun = reproduce(run_dir, device="cpu")
    assert rerun.labels_match and rerun.max_difference == 0
    assert np.array_equal(np.asarray(rerun.new.query), np.asarray(rerun.recorded.query))
    assert "reads this run's image as given (given.png) otherwise" in caplog.text
    Image.new("RGB", (64, 64), "white").save(run_dir / "query.png")
    with pytest.raises(ValueError, match="differs from the one this run analysed"):
        reproduce(run_dir, device="cpu")


def _without_given(run_dir, tmp_path):
    old = tmp_path / "old-run"
    shutil.copytree(run_dir, old)
    (old / "given.png").unlink()
    return old
