"""Write the web app's example images into assets/examples/ (deterministic; rerun to regenerate).

    python assets/make_examples.py

shapes_common.png / shapes_rare.png / shapes_unseen.png
    Query images of the shapes world (64 x 64, exactly what the model sees): the pair
    (circle, square) is common in its training data, (circle, triangle) rare and
    (square, triangle) never seen together (`originality.shapes.dataset.query`).
sd_house.png / sd_painting.png
    Simple 512 x 512 pictures for Stable Diffusion, drawn here with Pillow (no photo or
    artwork of anyone else); see LICENSE.md.
"""

from __future__ import annotations

import math
import random
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from originality.shapes.dataset import query  # noqa: E402
from originality.shapes.renderer import render  # noqa: E402

OUT = Path(__file__).resolve().parent / "examples"
SHAPES_SEED = 0
SHAPES_INDEX = 0


def shapes_examples() -> dict[str, Image.Image]:
    return {f"shapes_{group}.png": render(query(group, SHAPES_SEED, SHAPES_INDEX).elements)
            for group in ("common", "rare", "unseen")}


def _gradient(size: int, top: tuple[int, int, int], bottom: tuple[int, int, int]) -> Image.Image:
    img = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(img)
    for y in range(size):
        t = y / (size - 1)
        draw.line([(0, y), (size, y)], fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom)))
    return img


def house(size: int = 512) -> Image.Image:
    """A red-roofed house on a lawn under a blue sky."""
    img = _gradient(size, (110, 170, 235), (200, 225, 250))
    d = ImageDraw.Draw(img)
    d.ellipse([400, 40, 470, 110], fill=(255, 220, 90))  # sun
    for cx, cy in ((110, 90), (250, 60)):  # clouds
        for dx, dy, r in ((0, 0, 28), (30, 5, 24), (-28, 8, 22), (12, -14, 22)):
            d.ellipse([cx + dx - r, cy + dy - r, cx + dx + r, cy + dy + r], fill=(250, 250, 252))
    d.rectangle([0, 380, size, size], fill=(90, 160, 70))  # lawn
    d.rectangle([140, 240, 380, 400], fill=(235, 215, 175), outline=(120, 90, 60), width=3)  # walls
    d.polygon([(120, 245), (260, 140), (400, 245)], fill=(170, 50, 40), outline=(100, 30, 25))  # roof
    d.rectangle([320, 160, 345, 215], fill=(120, 70, 50))  # chimney
    d.rectangle([235, 310, 285, 400], fill=(110, 70, 40))  # door
    d.ellipse([273, 352, 280, 359], fill=(230, 200, 80))
    for x0 in (165, 310):  # windows
        d.rectangle([x0, 275, x0 + 50, 325], fill=(170, 210, 240), outline=(255, 255, 255), width=4)
        d.line([(x0 + 25, 275), (x0 + 25, 325)], fill=(255, 255, 255), width=3)
        d.line([(x0, 300), (x0 + 50, 300)], fill=(255, 255, 255), width=3)
    d.polygon([(250, 400), (270, 400), (300, size), (220, size)], fill=(200, 185, 150))  # path
    for x in range(20, 130, 22):  # fence
        d.rectangle([x, 350, x + 10, 395], fill=(245, 245, 240))
    d.line([(15, 362), (135, 362)], fill=(245, 245, 240), width=5)
    return img


def painting(size: int = 512, seed: int = 7) -> Image.Image:
    """An impressionist-style landscape: sunset sky, rolling hills, short brush strokes."""
    rng = random.Random(seed)
    img = _gradient(size, (250, 150, 80), (255, 220, 150))
    d = ImageDraw.Draw(img)
    d.ellipse([300, 170, 380, 250], fill=(255, 240, 190))
    hills = [(300, (120, 110, 160)), (360, (70, 120, 90)), (420, (50, 95, 60))]
    for base, colour in hills:
        phase, amp = rng.uniform(0, 6.28), rng.uniform(18, 35)
        pts = [(x, base + amp * math.sin(x / 70 + phase)) for x in range(0, size + 8, 8)]
        d.polygon(pts + [(size, size), (0, size)], fill=colour)
    strokes = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    s = ImageDraw.Draw(strokes)
    for _ in range(2600):  # brush strokes tinted by the colour underneath
        x, y = rng.uniform(0, size), rng.uniform(0, size)
        r, g, b = img.getpixel((int(x) % size, int(y) % size))
        j = rng.randint(-28, 28)
        angle = rng.uniform(-0.5, 0.5) if y < 300 else rng.uniform(-1.2, 1.2)
        length = rng.uniform(6, 16)
        x2, y2 = x + length * math.cos(angle), y + length * math.sin(angle)
        s.line([(x, y), (x2, y2)], fill=(max(0, min(255, r + j)), max(0, min(255, g + j)),
                                        max(0, min(255, b + j)), 190), width=rng.randint(3, 6))
    img = Image.alpha_composite(img.convert("RGBA"), strokes).convert("RGB")
    return img.filter(ImageFilter.SMOOTH)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    images = dict(shapes_examples())
    images["sd_house.png"] = house()
    images["sd_painting.png"] = painting()
    for name, im in images.items():
        im.save(OUT / name, optimize=True)
        print(f"wrote {OUT / name} ({im.size[0]}x{im.size[1]})")


if __name__ == "__main__":
    main()
