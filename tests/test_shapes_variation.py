"""Varied drawings of the shapes world: what a person would not notice, the model must not either."""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from originality.shapes import dataset, detector, renderer
from originality.shapes.scope import MAX_STRETCH, check_in_world
from originality.experiments.figure6 import query_image
from originality.shapes.redraw import redraw
from originality.shapes.renderer import Element, Variation

ASSETS = Path(__file__).resolve().parents[1] / "assets"


def test_vary_stays_in_range_and_keeps_the_caption():
    v = Variation()
    rng = random.Random(1)
    for i in range(200):
        elements = dataset.sample(3, i).elements
        varied = v.vary(elements, rng)
        assert renderer.caption(varied) == renderer.caption(elements)
        for e, o in zip(varied, elements):
            assert (e.x, e.y) == (o.x, o.y)
            assert all(abs(c - n) <= v.shade for c, n in zip(e.rgb, renderer.RGB[e.colour]))
            assert 1 - v.radius <= e.scale <= 1 + v.radius
        for a, b in itertools.combinations(varied, 2):
            assert math.hypot(a.x - b.x, a.y - b.y) >= a.radius + b.radius - renderer.OVERLAP_TOLERANCE - 1e-9


def test_vary_uses_the_whole_range():
    v = Variation()
    rng = random.Random(2)
    shifts, scales = [], []
    for _ in range(300):
        (e,) = v.vary([Element("circle", "green")], rng)
        shifts.append(e.rgb[1] - renderer.RGB["green"][1])
        scales.append(e.scale)
    assert min(shifts) <= -v.shade + 4 and max(shifts) >= v.shade - 4
    assert min(scales) < 1 - 0.8 * v.radius and max(scales) > 1 + 0.8 * v.radius


def test_dataset_items_are_the_same_with_and_without_variation():
    """The variation draws from its own generator: groups, captions and positions do not move."""
    ds_exact, ds_varied = dataset.ShapesDataset(50, seed=4), dataset.ShapesDataset(50, seed=4, variation=Variation())
    differs = 0
    for i in range(50):
        (x0, c0), (x1, c1) = ds_exact[i], ds_varied[i]
        assert c0 == c1
        differs += int(not np.allclose(x0.numpy(), x1.numpy()))
    assert differs >= 40  # the non-empty images are drawn differently
    # and a drawing is a pure function of (seed, index)
    assert np.array_equal(ds_varied[7][0].numpy(), ds_varied[7][0].numpy())


def _extreme_drawings(element: Element, v: Variation):
    """Drawings of one element at the corners of the variation range (shade, radius, edges, blur, JPEG)."""
    from PIL import ImageFilter

    nominal = renderer.RGB[element.colour]
    for sign, scale, plain, post in itertools.product((-1, 1), (1 - v.radius, 1 + v.radius), (False, True),
                                                      ("none", "blur", "jpeg")):
        rgb = tuple(min(255, max(0, c + sign * v.shade * (1 if k == renderer.COLOURS.index(element.colour) else -1)))
                    for k, c in enumerate(nominal))
        image = renderer.render([replace(element, rgb=rgb, scale=scale)], supersample=not plain)
        if post == "blur":
            image = image.filter(ImageFilter.GaussianBlur(v.max_blur))
        elif post == "jpeg":
            image = renderer.jpeg(image, 70)
        yield (sign, scale, plain, post), image


def test_detector_reads_varied_renders():
    """Every shape x colour x size x texture at the extremes of the variation range.

    Outlines ("empty") are 1-2 px lines: aliased, blurred or JPEG-compressed ones lose their
    shape at 64 px (a hexagon's ring is within a pixel of a circle's), so they are held to the
    anti-aliased drawings only; the world's training images and queries are full elements.
    Big elements must be read exactly; small ones at the corners of the range (radius -10%
    and blurred, or the lightest shade) may be misread in at most 1% of the drawings.
    """
    v = Variation()
    misses, n = [], 0
    for shape, colour, size, texture in itertools.product(renderer.SHAPES, renderer.COLOURS, renderer.SIZES, renderer.TEXTURES):
        element = Element(shape, colour, size, texture, 31.3, 32.6)
        for how, image in _extreme_drawings(element, v):
            if texture == "empty" and (how[2] or how[3] != "none"):
                continue
            n += 1
            keys = [d.key for d in detector.detect(image)]
            if keys != [(shape, colour, size, texture)]:
                misses.append((shape, colour, size, texture, how, keys))
    assert n == 840
    assert not [m for m in misses if m[2] == "big"], misses
    assert len(misses) <= 0.01 * n, misses


def test_another_programs_drawings_read_as_their_captions_say():
    """matplotlib's drawings (`other_program`: its own colours, inscribed polygons, strokes centred on the edge) of
    every shape (its hexagon has a vertex on top, the world's a flat top), alone in every colour, size and texture,
    and of the three query pairs of both splits: the detector reads their captions and the world check lets them
    in."""
    from originality.experiments.other_program import draw
    from originality.experiments.reliability import SPLITS

    for shape, colour, size, texture in itertools.product(renderer.SHAPES, renderer.COLOURS, renderer.SIZES,
                                                          renderer.TEXTURES):
        image = draw([Element(shape, colour, size, texture, 30.3, 33.7)])
        assert [d.key for d in detector.detect(image)] == [(shape, colour, size, texture)]
        assert check_in_world(image).ok
    for group, seed, index in itertools.product(("common", "rare", "unseen"), SPLITS.values(), range(4)):
        query = dataset.query(group, seed, index)
        image = draw(query.elements)
        assert sorted(d.key for d in detector.detect(image)) == sorted(
            (e.shape, e.colour, e.size, e.texture) for e in query.elements)
        assert check_in_world(image).ok and image.size == (64, 64)


def test_a_third_programs_drawings_read_as_their_captions_say():
    """PIL's drawings (`pil_program`: `regular_polygon`'s inscribed polygons, outlines a quarter of the radius wide,
    inside the edge) in each palette, anti-aliased and aliased: every element alone and the query layouts of both
    splits read as their captions under the redraw's reading, and the world check lets them in."""
    from originality.experiments.pil_program import PALETTES, draw
    from originality.experiments.reliability import SPLITS

    for palette, supersample in itertools.product(PALETTES, (1, 4)):
        for shape, colour, size, texture in itertools.product(renderer.SHAPES, renderer.COLOURS, renderer.SIZES,
                                                              renderer.TEXTURES):
            image = draw([Element(shape, colour, size, texture, 30.3, 33.7)], palette, supersample)
            found = detector.detect(image, reading=detector.FOREIGN_READING)
            assert [d.key for d in found] == [(shape, colour, size, texture)], (palette, supersample)
            assert check_in_world(image).ok
    for group, seed, index in itertools.product(("common", "rare", "unseen"), SPLITS.values(), range(3)):
        query = dataset.query(group, seed, index)
        found = detector.detect(draw(query.elements), reading=detector.FOREIGN_READING)
        assert sorted(d.key for d in found) == sorted((e.shape, e.colour, e.size, e.texture) for e in query.elements)


def test_a_program_the_reading_was_not_tuned_on_reads_as_its_captions_say():
    """`box_program` (numpy; shapes fill their box, so its squares are 1.23 times the world's; the Tableau palette;
    2 px outlines centred on the edge) was written after the redraw's reading was tuned: the query layouts of both
    splits and every full element alone read as their captions under the redraw's reading, and the world check lets
    them in. (Its small empty squares, triangles and stars read as big: a fixed 2 px outline centred on a small
    square's edge spans 9-13 px across, nearer a big square at 0.8 of its radius with the world's outline than any
    small one the reading tries.)"""
    from originality.experiments.box_program import draw
    from originality.experiments.reliability import SPLITS

    for shape, colour, size in itertools.product(renderer.SHAPES, renderer.COLOURS, renderer.SIZES):
        image = draw([Element(shape, colour, size, "full", 30.3, 33.7)])
        found = detector.detect(image, reading=detector.FOREIGN_READING)
        assert [d.key for d in found] == [(shape, colour, size, "full")]
        assert check_in_world(image).ok
    for group, seed, index in itertools.product(("common", "rare", "unseen"), SPLITS.values(), range(4)):
        query = dataset.query(group, seed, index)
        image = draw(query.elements)
        found = detector.detect(image, reading=detector.FOREIGN_READING)
        assert sorted(d.key for d in found) == sorted((e.shape, e.colour, e.size, e.texture) for e in query.elements)
        assert check_in_world(image).ok


@pytest.mark.parametrize("turn", [10, 45, -60])
def test_the_redraws_reading_takes_turned_polygons(turn):
    """Every polygon turned (PIL's drawings with the world's outline width, and the renderer's; a triangle turned
    60 degrees points down) is read as itself by the redraw's reading, at the turn drawn (to within 5 degrees, given
    the shape's symmetry), and redrawn upright; the judge's reading (upright templates, and a hexagon on a vertex)
    misreads some, which is why the redraw reads more widely. (The PIL program turns its stars the other way. With
    its own quarter-radius outline, a small empty triangle turned 45 degrees keeps too small a hole and reads as full:
    `benchmarks/detector_programs.py`.)"""
    from originality.experiments.pil_program import draw
    from originality.shapes.redraw import redraw

    judge_right = 0
    for shape, size, texture in itertools.product(("square", "triangle", "hexagon", "star"), renderer.SIZES,
                                                  renderer.TEXTURES):
        e = Element(shape, "blue", size, texture, 31.2, 33.4)
        for image, drawn_turn in ((draw([e], turn=turn, outline=renderer.STROKE_FRACTION),
                                   -turn if shape == "star" else turn),
                                  (renderer.render([replace(e, turn=turn)]), turn)):
            found = detector.detect(image, reading=detector.FOREIGN_READING)
            assert [d.key for d in found] == [(shape, "blue", size, texture)], (e, turn)
            period = 360 / {"square": 4, "triangle": 3, "hexagon": 6, "star": 5}[shape]
            gap = (found[0].element.turn - drawn_turn) % period
            assert min(gap, period - gap) <= 5, (e, turn, found[0].element.turn)
            assert [d.key for d in detector.detect(redraw(image))] == [(shape, "blue", size, texture)]
            judge_right += [d.key for d in detector.detect(image)] == [(shape, "blue", size, texture)]
    assert judge_right < 32


@pytest.mark.parametrize("radius", [0.72, 0.75, 0.8])
def test_the_redraws_reading_takes_other_radii(radius):
    """The query layouts of both splits drawn by the renderer with every radius 0.72, 0.75 or 0.8 times its size
    word's (another program's idea of big and small): the redraw's reading reads their captions, the judge's (radii
    0.86 to 1.14) misreads some. At 0.72 a big shape is 7.2 px across its circle, nearer the small word's 5.5 px than
    the split at their geometric mean allowed (none of the 60 read right); the split leans big."""
    from originality.experiments.reliability import SPLITS

    judge_right = n = 0
    for group, seed, index in itertools.product(("common", "rare", "unseen"), SPLITS.values(), range(4)):
        elements = [replace(e, scale=radius) for e in dataset.query(group, seed, index).elements]
        image = renderer.render(elements)
        want = sorted((e.shape, e.colour, e.size, e.texture) for e in elements)
        assert sorted(d.key for d in detector.detect(image, reading=detector.FOREIGN_READING)) == want, elements
        judge_right += sorted(d.key for d in detector.detect(image)) == want
        n += 1
    assert judge_right < n


@pytest.mark.parametrize("radius", [1.5, 1.75])
def test_big_shapes_drawn_past_the_worlds_radii_read_as_themselves_and_pass_the_check(radius):
    """Every big shape, full and empty, drawn alone at 1.5 or 1.75 times the world's radius (a program whose "big"
    fills more of the canvas), and a square beside a triangle at 1.5: the redraw's reading reads each as itself and
    the world check takes it. Before the reading's radii reached past 1.3, a big square read as a circle and a big
    empty circle was not found at all."""
    drawings = [[Element(shape, "green", "big", texture, 32.4, 31.6, scale=radius)]
                for shape, texture in itertools.product(renderer.SHAPES, renderer.TEXTURES)]
    drawings.append([Element("square", "red", "big", "full", 17.5, 18.0, scale=1.5),
                     Element("triangle", "blue", "big", "full", 45.0, 46.0, scale=1.5)])
    for elements in drawings:
        image = renderer.render(elements)
        want = sorted((e.shape, e.colour, e.size, e.texture) for e in elements)
        assert sorted(d.key for d in detector.detect(image, reading=detector.FOREIGN_READING)) == want, elements
        assert check_in_world(image).ok, (elements, check_in_world(image).reason)
        assert sorted(d.key for d in detector.detect(redraw(image))) == want, elements


@pytest.mark.parametrize("overlap", [3, 5])
def test_two_shapes_of_one_colour_that_overlap_read_as_two(overlap):
    """Two big shapes of one colour pushed into each other by 3 or 5 px (the world's never overlap by more than a
    pixel; another program's may): the redraw's reading reads both, and the redraw draws both, so that its reading
    reads both again (the judge's reading never looks for two in one blob). Before the reading tried a blob as two
    shapes, a circle with a triangle's or a square's corner in it (no neck to split at) read as one circle."""
    r = renderer.RADIUS["big"]
    pairs = [("circle", "triangle", "full"), ("circle", "triangle", "empty"), ("square", "triangle", "full"),
             ("circle", "square", "full"), ("hexagon", "star", "full"), ("triangle", "triangle", "full")]
    for (first, second, texture), colour in itertools.product(pairs, ("red", "blue")):
        elements = [Element(first, colour, "big", "full", 20.3, 30.6),
                    Element(second, colour, "big", texture, 20.3 + 2 * r - overlap, 33.1)]
        image = renderer.render(elements)
        want = sorted((e.shape, e.colour, e.size, e.texture) for e in elements)
        assert sorted(d.key for d in detector.detect(image, reading=detector.FOREIGN_READING)) == want, elements
        if texture == "full":  # an empty triangle read 1 px off, redrawn, overlaps deeper (6 px at 5), and reads as one
            assert sorted(d.key for d in detector.detect(redraw(image), reading=detector.FOREIGN_READING)) == want


@pytest.mark.parametrize("under, over", [((31.9, 14.6), (43.2, 26.0)), ((25.4, 32.7), (37.5, 43.3))])
def test_a_shape_partly_hidden_by_one_of_another_colour_reads_as_itself(under, over):
    """A big green triangle with a big red or blue circle or square drawn over its corner, 4 px deep (two of the
    benchmark's layouts, pushed together): the redraw's reading reads the triangle, not the part of it that shows.
    Before it counted the other colour as possibly hiding it, the triangle read as a small circle or hexagon."""
    for top, colour in itertools.product(("circle", "square"), ("red", "blue")):
        elements = [Element("triangle", "green", "big", "full", *under), Element(top, colour, "big", "full", *over)]
        want = sorted((e.shape, e.colour, e.size, e.texture) for e in elements)
        found = detector.detect(renderer.render(elements), reading=detector.FOREIGN_READING)
        assert sorted(d.key for d in found) == want, elements


@pytest.mark.parametrize("outline, supersample", [(0.0, 1), (0.15, 4), (0.3, 4), (0.35, 1)])
def test_the_redraws_reading_takes_other_outline_widths(outline, supersample):
    """Empty circles, squares and hexagons outlined from one pixel to 0.35 of their radius: the redraw's reading
    (`FOREIGN_READING`: outlines tried from 0.1 to 0.4 of the radius) reads every one; where the outline is thicker
    than the world's, the judge's reading (the world's outline alone) misses some, which is why the redraw reads
    more widely."""
    from originality.experiments.pil_program import draw

    drawn = [(Element(shape, colour, size, "empty", x, y), draw([Element(shape, colour, size, "empty", x, y)],
                                                              supersample=supersample, outline=outline))
             for shape, colour, size, (x, y) in itertools.product(("circle", "square", "hexagon"), renderer.COLOURS,
                                                                  renderer.SIZES, ((30.3, 33.7), (21.6, 40.2)))]
    for e, image in drawn:
        found = detector.detect(image, reading=detector.FOREIGN_READING)
        assert [d.key for d in found] == [(e.shape, e.colour, e.size, "empty")], (e, outline, supersample)
    if outline >= 0.3:
        assert not all([d.key for d in detector.detect(image)] == [(e.shape, e.colour, e.size, "empty")]
                       for e, image in drawn)


def test_the_redraws_reading_keeps_the_worlds_drawings_as_the_judge_reads_them():
    """On the world's own varied drawings (the benchmark's queries) the wider reading changes nothing: every element
    is read as the judge reads it, in the same place, so a redrawn world drawing is the same query as before."""
    from originality.experiments.reliability import SPLITS

    for group, index in itertools.product(("common", "rare", "unseen"), range(4)):
        image = query_image(group, SPLITS["test"], index, "varied")[1]
        assert detector.detect(image, reading=detector.FOREIGN_READING) == detector.detect(image)


def test_in_world_check_accepts_world_images_exact_and_varied():
    rng = random.Random(5)
    for group in ("common", "rare", "unseen"):
        q = dataset.query(group, 0, 3)
        assert check_in_world(renderer.render(q.elements)).ok
        assert check_in_world(Variation().render(q.elements, rng)).ok
        assert check_in_world(renderer.render(q.elements, size=256)).ok


def test_a_drawing_framed_or_on_a_plots_axes_passes_the_check_and_redraws_without_the_lines():
    from PIL import ImageDraw

    elements = dataset.query("rare", 0, 2).elements
    want = sorted((e.shape, e.colour, e.size, e.texture) for e in elements)
    for style in ("frame", "axes", "grid"):
        drawing = renderer.render(elements, size=256)
        pen = ImageDraw.Draw(drawing)
        if style == "frame":
            pen.rectangle([0, 0, 255, 255], outline=(0, 0, 0), width=2)
        elif style == "axes":  # an axes box inside the canvas, with ticks outside it
            pen.rectangle([12, 12, 243, 243], outline=(0, 0, 0), width=2)
            for t in range(12, 244, 46):
                pen.line([t, 243, t, 249], fill=(0, 0, 0), width=2)
                pen.line([6, t, 12, t], fill=(0, 0, 0), width=2)
        else:
            for t in range(0, 256, 32):
                pen.line([t, 0, t, 255], fill=(120, 120, 120), width=2)
                pen.line([0, t, 255, t], fill=(120, 120, 120), width=2)
        assert check_in_world(drawing).ok, style
        drawn = redraw(drawing.resize((64, 64), Image.LANCZOS))
        assert sorted(d.key for d in detector.detect(drawn)) == want, style
        grey = np.asarray(drawn, dtype=int)
        assert not ((grey.max(axis=2) - grey.min(axis=2) < 40) & (grey.min(axis=2) < 200)).any(), style  # no lines
    # a band is not a line: a drawing on a page with a thick black bar across it is still refused
    barred = renderer.render(elements, size=256)
    ImageDraw.Draw(barred).rectangle([0, 100, 255, 130], fill=(0, 0, 0))
    assert not check_in_world(barred).ok


def test_in_world_check_refuses_a_painting_a_blank_and_other_hues():
    painting = Image.open(ASSETS / "examples" / "sd_painting.png").convert("RGB")
    fit = check_in_world(painting)
    assert not fit.ok and "white background" in fit.reason and "Stable Diffusion" in fit.message()
    blank = check_in_world(Image.new("RGB", (64, 64), "white"))
    assert not blank.ok and "No coloured shape" in blank.reason
    yellow = renderer.render([Element("circle", "red", rgb=(230, 220, 20)), Element("square", "blue", x=12, y=12)])
    assert not check_in_world(yellow).ok
    # hues people name otherwise, though their brightest channel is a world colour's: matplotlib's orange, pink and
    # purple, CSS hot pink (all but the pink passed before session 32); and the blues they still call blue:
    # matplotlib's default blue, deep sky blue (refused before)
    for rgb, named_blue in (((255, 127, 14), False), ((227, 119, 194), False), ((148, 103, 189), False),
                            ((255, 105, 180), False), ((31, 119, 180), True), ((0, 191, 255), True)):
        drawing = renderer.render([Element("circle", "red", "big", "full", 24.0, 30.0, rgb=rgb),
                                   Element("square", "green", "big", "full", 44.0, 36.0)])
        fit = check_in_world(drawing)
        assert fit.ok == named_blue, (rgb, fit.reason)
        assert named_blue or "colours other than red, green and blue" in fit.reason
    # a photo-like image: smooth noise in every colour
    noise = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    photo = Image.fromarray(noise).resize((256, 256), Image.BICUBIC)
    assert not check_in_world(photo).ok


def test_in_world_check_refuses_stretched_shapes_and_takes_the_worlds_turned_or_partly_hidden_ones():
    """Ellipses, bars, crescents and half discs are no shape of this world, which draws only shapes as wide one way
    as any other; before the check measured a mark's elongation they passed, and the redraw drew each as the nearest
    world shape (an ellipse as a circle). Turned polygons, a shape partly under another colour, and two of one colour
    pushed into each other are the world's, and pass."""
    from PIL import ImageDraw

    def drawn(paint) -> Image.Image:
        canvas = Image.new("RGB", (256, 256), "white")
        paint(ImageDraw.Draw(canvas))
        return canvas

    red, blue = (230, 20, 20), (20, 20, 230)
    foreign = {
        "2:1 ellipse": lambda pen: pen.ellipse([80, 104, 176, 152], fill=red),
        "3:2 ellipse beside a square": lambda pen: (pen.ellipse([70, 100, 190, 180], fill=red),
                                                    pen.rectangle([20, 20, 60, 60], fill=blue)),
        "crescent": lambda pen: (pen.ellipse([88, 88, 168, 168], fill=red), pen.ellipse([112, 88, 192, 168],
                                                                                         fill="white")),
        "half disc": lambda pen: pen.pieslice([88, 88, 168, 168], 0, 180, fill=blue),
    }
    for name, paint in foreign.items():
        fit = check_in_world(drawn(paint))
        assert not fit.ok and "times as long as it is wide" in fit.reason and "hexagons and stars" in fit.reason, name
        assert fit.stretch > MAX_STRETCH, name
    bar = check_in_world(drawn(lambda pen: pen.line([(40, 128), (216, 128)], fill=blue, width=10)))
    assert not bar.ok and "match none of this world's shapes" in bar.reason
    # the world's own shapes, turned, partly hidden, or of one colour and pushed together, as drawn elsewhere
    from originality.experiments.pil_program import draw

    r = renderer.RADIUS["big"]
    kept = [draw([Element(shape, "green", "big", "full", 30.2, 33.5)], turn=turn)
            for shape, turn in itertools.product(("square", "triangle", "hexagon", "star"), (10, 30, 45))]
    kept += [renderer.render([Element("triangle", "green", "big", "full", 31.9, 14.6),
                              Element(top, "red", "big", "full", 43.2, 26.0)]) for top in ("circle", "square")]
    kept += [renderer.render([Element(first, "blue", "big", "full", 20.3, 30.6),
                              Element(second, "blue", "big", "full", 20.3 + 2 * r - 5, 33.1)])
             for first, second in (("circle", "triangle"), ("square", "triangle"), ("hexagon", "star"))]
    for image in kept:
        fit = check_in_world(image)
        assert fit.ok and fit.stretch <= MAX_STRETCH, (fit.reason, fit.stretch)

def test_the_world_check_runs_before_any_model_work_and_can_be_switched_off():
    from originality import AnalysisConfig, check_inputs
    from originality.images import ImageInputError
    from originality.worlds import get_world

    shapes = get_world("shapes")
    painting = Image.open(ASSETS / "examples" / "sd_painting.png").convert("RGB")
    config = AnalysisConfig.preset("fast")
    with pytest.raises(ImageInputError, match="only knows a few coloured shapes"):
        check_inputs(painting, config, world=shapes)
    with pytest.raises(ImageInputError, match="No coloured shape"):
        check_inputs(Image.new("RGB", (64, 64), "white"), config, world=shapes)
    valid = renderer.render(dataset.query("common", 0, 1).elements)
    assert check_inputs(valid, config, world=shapes)[0].size == (64, 64)
    assert check_inputs(painting, config.replace(world_check="off"), world=shapes)[0] is not None
    # Stable Diffusion judges any picture
    assert check_inputs(painting, config, world=get_world("stable-diffusion"))[0] is not None


def test_the_world_check_sees_the_centre_square_the_analysis_sees():
    from originality import AnalysisConfig, check_inputs
    from originality.images import ImageInputError
    from originality.worlds import get_world

    shapes, config = get_world("shapes"), AnalysisConfig.preset("fast")
    drawing = np.asarray(renderer.render(dataset.query("common", 0, 1).elements, size=128))
    # a screenshot: the drawing with black bars left and right; squashed whole, it is not on white
    letterboxed = np.zeros((128, 384, 3), np.uint8)
    letterboxed[:, 128:256] = drawing
    assert not check_in_world(Image.fromarray(letterboxed)).ok
    assert check_inputs(Image.fromarray(letterboxed), config, world=shapes)[0].size == (384, 128)
    # shapes only outside the centre square: the analysis would see none, and the message says why
    beside = np.full((128, 384, 3), 255, np.uint8)
    beside[:, :128] = drawing
    with pytest.raises(ImageInputError, match=r"No coloured shape.*only its centre square \(128x128 px\)"):
        check_inputs(Image.fromarray(beside), config, world=shapes)


def test_cli_refuses_a_photo_for_the_shapes_world_before_loading_it(tmp_path, capsys, tiny_shapes_model):
    from originality import cli

    photo = tmp_path / "photo.png"
    Image.open(ASSETS / "examples" / "sd_house.png").save(photo)
    code = cli.main(["analyze", str(photo), "--model", str(tiny_shapes_model), "--steps", "1", "--max-tokens", "1",
                     "--reconstructions", "2", "--inference-steps", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "Stable Diffusion on a GPU" in err and "Traceback" not in err
