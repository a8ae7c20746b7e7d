"""The paper's originality dataset for the shapes world, generated on the fly.

Every image is big and full-textured (the paper's setting). Of all images:
- 10% are empty (empty caption);
- 30% hold the pair (circle, square) in varying colours: COMMON;
- 0.1% hold the pair (circle, triangle): RARE;
- the pair (square, triangle) never co-occurs: UNSEEN;
- the rest hold 1..4 elements with at most one of {circle, square, triangle}.
Item i of a dataset with seed s is a pure function of (s, i), so any worker can
render any slice and a training run is reproducible.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

from .renderer import COLOURS, IMAGE_SIZE, Element, Variation, caption, place, render

CORE = ("circle", "square", "triangle")
FILLERS = ("hexagon", "star")
PAIRS = {"common": ("circle", "square"), "rare": ("circle", "triangle"), "unseen": ("square", "triangle")}
GROUP_PROBABILITIES = {"empty": 0.10, "common": 0.30, "rare": 0.001}  # the rest: "other"
MAX_ELEMENTS = 4


def _rng(seed: int, index: int) -> random.Random:
    return random.Random(seed * 1_000_003 + index)


def sample_group(rng: random.Random) -> str:
    u = rng.random()
    for group, p in GROUP_PROBABILITIES.items():
        if u < p:
            return group
        u -= p
    return "other"


def _spec(shape: str, rng: random.Random) -> tuple[str, str, str, str]:
    return (shape, rng.choice(COLOURS), "big", "full")


def sample_elements(group: str, rng: random.Random, extras: bool = True) -> list[Element]:
    """Elements of one image of `group` ("empty", "common", "rare", "unseen", "other")."""
    if group == "empty":
        return []
    if group in PAIRS:
        specs = [_spec(s, rng) for s in PAIRS[group]]
        n_extra = rng.randint(0, MAX_ELEMENTS - 2) if extras else 0
        specs += [_spec(rng.choice(FILLERS), rng) for _ in range(n_extra)]
    elif group == "other":
        n = rng.randint(1, MAX_ELEMENTS)
        shapes = [rng.choice(FILLERS) for _ in range(n)]
        if rng.random() < 0.6:
            shapes[0] = rng.choice(CORE)
        specs = [_spec(s, rng) for s in shapes]
    else:
        raise ValueError(f"unknown group {group!r}")
    rng.shuffle(specs)
    return place(specs, rng)


@dataclass(frozen=True)
class Sample:
    group: str
    elements: tuple[Element, ...]

    @property
    def caption(self) -> str:
        return caption(self.elements)


def sample(seed: int, index: int) -> Sample:
    rng = _rng(seed, index)
    group = sample_group(rng)
    return Sample(group, tuple(sample_elements(group, rng)))


def drawing(seed: int, index: int, elements, variation: Variation | None, size: int = IMAGE_SIZE):
    """Item `index`'s image: the exact render, or a varied drawing of it seeded by (seed, index).

    The variation's draws come from their own generator, so the dataset's groups, elements
    and positions are the same with and without it.
    """
    if variation is None:
        return render(elements, size)
    return variation.render(elements, random.Random(f"drawing-{seed}-{index}"), size)


def query(group: str, seed: int, index: int) -> Sample:
    """A figure-6 query image: exactly the pair of `group` ("common", "rare", "unseen")."""
    rng = _rng(seed + 7919, index)
    return Sample(group, tuple(sample_elements(group, rng, extras=False)))


def to_tensor(images: list) -> torch.Tensor:
    """PIL images -> float tensor (B, 3, H, W) in [-1, 1]."""
    arr = np.stack([np.asarray(im, dtype=np.float32) for im in images]) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


class ShapesDataset(torch.utils.data.Dataset):
    """`length` seeded samples of the originality dataset as (image in [-1, 1], caption)."""

    def __init__(self, length: int = 100_000, seed: int = 0, size: int = IMAGE_SIZE, variation: Variation | None = None):
        self.length, self.seed, self.size, self.variation = length, seed, size, variation

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        s = sample(self.seed, index)
        return to_tensor([drawing(self.seed, index, s.elements, self.variation, self.size)])[0], s.caption
