"""The shapes world: a renderer and captions for the paper's synthetic framework.

An image is a white canvas holding a few geometric elements. Each element is a
(shape, colour, size, texture) tuple at a position; the caption lists the
elements in the paper's format: "big red full circle and big blue full square".
"""

from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "hexagon", "star")
COLOURS = ("red", "green", "blue")
SIZES = ("big", "small")
TEXTURES = ("full", "empty")

IMAGE_SIZE = 64
# Radius of the circle each shape is inscribed in, in pixels of a 64 px canvas.
RADIUS = {"big": 10.0, "small": 5.5}
# Saturated colours far from white and from each other, so that the detector can
# tell them apart even on blurry generations.
RGB = {"red": (220, 30, 30), "green": (30, 160, 30), "blue": (30, 30, 220)}
BACKGROUND = (255, 255, 255)
# Rendering at this multiple of the final size and downsampling gives anti-aliased edges.
SUPERSAMPLE = 4
# Two elements may overlap by at most this many pixels (of a 64 px canvas).
OVERLAP_TOLERANCE = 1.0
# Outline width of an "empty" element as a fraction of its radius: 2 px for a big
# element, 1.1 px for a small one (a 2 px outline fills a small star or triangle).
STROKE_FRACTION = 0.2
# How far a square's corners lie from its centre, in radii (drawn slightly larger than inscribed, so that squares
# are not tiny); no shape reaches further (a triangle's corners: 1.146).
REACH = 1.15


@dataclass(frozen=True)
class Element:
    """One element of a shapes-world image; (x, y) is its centre in pixels."""

    shape: str
    colour: str
    size: str = "big"
    texture: str = "full"
    x: float = IMAGE_SIZE / 2
    y: float = IMAGE_SIZE / 2
    # How this element is drawn, within what its caption says: its exact RGB (None: the
    # nominal `RGB[colour]`) and its radius as a multiple of the size word's `RADIUS`.
    rgb: tuple[int, int, int] | None = None
    scale: float = 1.0
    # Degrees the shape is turned anticlockwise about its centre; the world draws every shape at 0 (a hexagon with a
    # flat top). Other programs draw a hexagon with a vertex on top (30), which the detector also reads.
    turn: float = 0.0
    # An empty element's outline width as a fraction of its radius; the world draws `STROKE_FRACTION`, other
    # programs thinner or thicker outlines, which the redraw's reading also tries (`detector.FOREIGN_READING`).
    stroke: float = STROKE_FRACTION

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("shape", self.shape, SHAPES),
            ("colour", self.colour, COLOURS),
            ("size", self.size, SIZES),
            ("texture", self.texture, TEXTURES),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")

    @property
    def radius(self) -> float:
        return RADIUS[self.size] * self.scale

    @property
    def fill(self) -> tuple[int, int, int]:
        return self.rgb if self.rgb is not None else RGB[self.colour]

    @property
    def words(self) -> str:
        return f"{self.size} {self.colour} {self.texture} {self.shape}"


def caption(elements: list[Element] | tuple[Element, ...]) -> str:
    """The paper's caption format; an empty image has the empty caption."""
    return " and ".join(e.words for e in elements)


def shape_polygon(shape: str, cx: float, cy: float, r: float, turn: float = 0.0) -> list[tuple[float, float]] | None:
    """Vertices of `shape` inscribed in the circle (cx, cy, r), turned `turn` degrees anticlockwise about (cx, cy);
    None for a circle."""
    if shape == "circle":
        return None
    poly = _upright_polygon(shape, cx, cy, r)
    if not turn:
        return poly
    c, s = math.cos(math.radians(turn)), math.sin(math.radians(turn))
    # y grows downwards, so an anticlockwise turn on screen is (dx c + dy s, -dx s + dy c)
    return [(cx + (x - cx) * c + (y - cy) * s, cy - (x - cx) * s + (y - cy) * c) for x, y in poly]


def _upright_polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        h = r / math.sqrt(2) * REACH
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":
        # Apex up; shifted down so that its bounding box is centred on (cx, cy).
        pts = [(cx + r * math.cos(math.radians(a)), cy - r * math.sin(math.radians(a))) for a in (90, 210, 330)]
        shift = r * (1 - 0.5) / 2  # bbox spans cy - r .. cy + r/2
        return [(x, y + shift) for x, y in pts]
    if shape == "hexagon":
        return [(cx + r * math.cos(math.radians(a)), cy + r * math.sin(math.radians(a))) for a in range(0, 360, 60)]
    if shape == "star":
        pts = []
        for i in range(10):
            rad = r if i % 2 == 0 else r * 0.45
            a = math.radians(90 + 36 * i)
            pts.append((cx + rad * math.cos(a), cy - rad * math.sin(a)))
        return pts
    raise ValueError(f"unknown shape {shape!r}")


def _draw(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill, turn: float = 0.0) -> None:
    poly = shape_polygon(shape, cx, cy, r, turn)
    if poly is None:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        draw.polygon(poly, fill=fill)


def _outline(shape: str, cx: float, cy: float, r: float, width: float, turn: float = 0.0
             ) -> tuple[Image.Image, tuple[int, int]]:
    """Mask ("L") of the band of the filled shape within `width` pixels of its edge, and the canvas position of the
    mask's top left corner.

    This is the shape's outline drawn inwards, so an empty element has the same
    silhouette as a full one. Pillow's own wide polygon outlines break on the
    concave star (gaps, stray strokes inside), hence the distance transform.
    """
    # Drawn on a local canvas with a blank margin (integer offset: same pixels), so
    # that the edge of the image does not count as the shape's edge.
    m = int(math.ceil(r + width)) + 2
    ox, oy = int(math.floor(cx)) - m, int(math.floor(cy)) - m
    distance = _distance_inside(shape, cx - ox, cy - oy, r, turn, m)
    band = (distance > 0) & (distance <= width)
    return Image.fromarray(band.astype(np.uint8) * 255), (ox, oy)


@lru_cache(maxsize=64)
def _distance_inside(shape: str, cx: float, cy: float, r: float, turn: float, m: int) -> np.ndarray:
    """Each pixel's distance to the nearest pixel outside the filled shape (0 outside it), on a local canvas of
    2m + 1 pixels; the same drawing for every outline width, so the detector's templates of one shape at several
    widths share it."""
    from scipy import ndimage  # noqa: PLC0415 - start-up: scipy, only empty elements need it

    local = Image.new("L", (2 * m + 1, 2 * m + 1), 0)
    _draw(ImageDraw.Draw(local), shape, cx, cy, r, 255, turn)
    inside = np.asarray(local) >= 128
    distance = ndimage.distance_transform_edt(inside)
    distance.flags.writeable = False
    return distance


def render(elements: list[Element] | tuple[Element, ...], size: int = IMAGE_SIZE, supersample: bool = True,
           window: tuple[int, int, int] | None = None) -> Image.Image:
    """Render elements on a white canvas of `size` x `size` pixels (RGB).

    `supersample=False` draws plain rasterised (aliased) edges, as most drawing programs do. `window` = (x0, y0,
    side) returns only that square of the canvas, the same pixels as `render(...).crop((x0, y0, x0 + side, y0 +
    side))` for less work (the detector's templates).
    """
    k = SUPERSAMPLE if supersample else 1
    s = k * size / IMAGE_SIZE
    canvas = Image.new("RGB", (k * size, k * size), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for e in elements:
        colour = e.fill
        cx, cy, r = e.x * s, e.y * s, e.radius * s
        if e.texture == "full":
            _draw(draw, e.shape, cx, cy, r, colour, e.turn)
        else:
            # an aliased outline thinner than a pixel would vanish, so it is at least one pixel wide
            band, corner = _outline(e.shape, cx, cy, r, max(e.stroke * r, 1.0), e.turn)
            canvas.paste(Image.new("RGB", band.size, colour), corner, mask=band)
    if window is not None:
        # Cut on whole blocks of the supersampled canvas: each pixel is the average of the same k x k block as in
        # the whole canvas's reduction.
        x0, y0, side = window
        canvas, size = canvas.crop((k * x0, k * y0, k * (x0 + side), k * (y0 + side))), side
    return canvas.resize((size, size), Image.BOX) if k > 1 else canvas


@dataclass(frozen=True)
class Variation:
    """How far a drawing may stray from the exact render and still show what its caption says.

    A person calls every shade within `shade` levels per channel of the nominal colour by the
    colour's name, and every radius within `radius` (relative) of the size word's the same
    size; edges may be anti-aliased or plain; a few images are slightly blurred or JPEG
    compressed. Training on this spread makes the model's words categories, not pixel values.
    """

    shade: int = 32  # max shift per channel, in grey levels
    radius: float = 0.10  # max relative radius change
    plain_edges: float = 0.5  # probability of aliased edges
    blur: float = 0.15  # probability of a Gaussian blur of radius up to `max_blur` px
    max_blur: float = 0.6
    jpeg: float = 0.15  # probability of JPEG compression at quality 70..95

    def vary(self, elements: list[Element] | tuple[Element, ...], rng: random.Random) -> list[Element]:
        """The same elements with a shade and radius drawn per element (captions unchanged)."""
        out = []
        for e in elements:
            rgb = tuple(min(255, max(0, c + rng.randint(-self.shade, self.shade))) for c in RGB[e.colour])
            out.append(replace(e, rgb=rgb, scale=1.0 + rng.uniform(-self.radius, self.radius)))
        return _without_overlap(out)

    def render(self, elements: list[Element] | tuple[Element, ...], rng: random.Random, size: int = IMAGE_SIZE) -> Image.Image:
        """A varied drawing of `elements`: `vary`, then edges, blur and compression drawn from `rng`."""
        varied = self.vary(elements, rng)
        image = render(varied, size, supersample=rng.random() >= self.plain_edges)
        if rng.random() < self.blur:
            from PIL import ImageFilter  # noqa: PLC0415 - start-up: only varied drawings blur

            image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, self.max_blur) * size / IMAGE_SIZE))
        if rng.random() < self.jpeg:
            image = jpeg(image, rng.randint(70, 95))
        return image


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    """`image` after a round trip through JPEG at `quality` (1..95), as RGB."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def _without_overlap(elements: list[Element]) -> list[Element]:
    """Grown elements that would overlap beyond `OVERLAP_TOLERANCE` go back to their nominal radius."""
    out = list(elements)
    for i, a in enumerate(out):
        for j in range(i):
            b = out[j]
            if math.hypot(a.x - b.x, a.y - b.y) < a.radius + b.radius - OVERLAP_TOLERANCE:
                out[i] = a = replace(a, scale=min(a.scale, 1.0))
                out[j] = replace(b, scale=min(b.scale, 1.0))
    return out


def shape_mask(shape: str, width: int, height: int) -> np.ndarray:
    """Boolean mask of a filled `shape` stretched to a width x height box (detector templates)."""
    k = SUPERSAMPLE
    canvas = Image.new("L", (width * k, height * k), 0)
    draw = ImageDraw.Draw(canvas)
    r = 100.0
    poly = shape_polygon(shape, 0.0, 0.0, r)
    if poly is None:
        poly = [(r * math.cos(a), r * math.sin(a)) for a in np.linspace(0, 2 * math.pi, 64, endpoint=False)]
    xs, ys = [p[0] for p in poly], [p[1] for p in poly]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    scaled = [((x - x0) / (x1 - x0) * width * k, (y - y0) / (y1 - y0) * height * k) for x, y in poly]
    draw.polygon(scaled, fill=255)
    return np.asarray(canvas.resize((width, height), Image.BOX)) >= 128


def place(
    specs: list[tuple[str, str, str, str]], rng: random.Random, size: int = IMAGE_SIZE, max_tries: int = 1000
) -> list[Element]:
    """Give each (shape, colour, size, texture) spec a uniform random position, without overlaps."""
    placed: list[Element] = []
    for shape, colour, sz, texture in specs:
        r = RADIUS[sz]
        for _ in range(max_tries):
            x = rng.uniform(r + 1, size - r - 1)
            y = rng.uniform(r + 1, size - r - 1)
            if all(math.hypot(x - o.x, y - o.y) >= r + o.radius - OVERLAP_TOLERANCE for o in placed):
                placed.append(Element(shape, colour, sz, texture, x, y))
                break
        else:
            raise ValueError(f"could not place {len(specs)} elements on a {size} px canvas without overlap")
    return placed
