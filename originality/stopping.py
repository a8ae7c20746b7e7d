"""When to stop one token length's inversion: a fixed number of steps, or when it has converged.

The convergence test follows DVAR (Voronov et al., "Is This Loss Informative? Faster
Text-to-Image Customization by Tracking Objective Dynamics", NeurIPS 2023): the training loss of
textual inversion is too noisy to watch (every step draws new timesteps and noise), but the same
loss on one *fixed* batch (same latents, noise, timesteps and prompts every time) is a smooth
function of the learned rows alone. Evaluated every `every` steps, it falls and then flattens;
DVAR stops when the variance of its last `window` values is below `ratio` times the variance of
all of them (their `VarEarlyStopper`, eps 0.15). A relative-improvement window was the other
candidate; the variance ratio was kept because it needs no scale (the loss level differs from
model to model and image to image, the ratio does not) and it is the published criterion.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .labels import can_still_pass

# Why a length's inversion stopped (TokenResult.stop_reason).
STOP_STEP_CAP = "step cap"  # ran all `steps`
STOP_CONVERGED = "converged"  # the fixed-batch loss stopped moving (DVAR)
STOP_PROBE = "probe passed"  # the first reconstructions, drawn during the inversion, already passed (`ReconstructionProbe`)


@dataclass(frozen=True)
class EarlyStopping:
    """Settings of the DVAR test. Cost: one forward pass at `batch_size` every `every` steps
    (about a tenth of a training step's work per step at every=10, batch as in training)."""

    every: int = 10  # evaluate the fixed-batch loss every this many steps
    window: int = 8  # evaluations in the variance window
    ratio: float = 0.15  # stop when var(window) < ratio * var(all evaluations), DVAR's eps
    min_steps: int = 0  # never stop before this many steps

    def tracker(self) -> "Convergence":
        return Convergence(self)


@dataclass
class Convergence:
    """The evaluation losses of one inversion and the DVAR decision over them."""

    rule: EarlyStopping
    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)

    def due(self, step: int) -> bool:
        """Whether step `step` (1-based, after its update) is an evaluation step."""
        return step % self.rule.every == 0

    def normalised_variance(self) -> float:
        """var(last `window` losses) / var(all losses); 1.0 until there are more than `window`."""
        if len(self.losses) <= self.rule.window:
            return 1.0
        total = float(np.var(self.losses))
        if total == 0.0:
            return 0.0
        return float(np.var(self.losses[-self.rule.window:])) / total

    def update(self, step: int, loss: float) -> bool:
        """Record the fixed-batch loss after step `step`; True when the inversion should stop."""
        self.steps.append(step)
        self.losses.append(float(loss))
        full = len(self.losses) > self.rule.window
        return full and step >= self.rule.min_steps and self.normalised_variance() < self.rule.ratio


@dataclass
class ReconstructionProbe:
    """Stop a length's inversion as soon as the length already passes.

    Every `every` steps, the first `size` reconstructions are drawn from the tokens as they are; when their
    mean distance is at or below `threshold`, the rest of the `total` are drawn too (batch by batch, given up
    as soon as the mean can no longer reach the threshold), and the inversion stops only when all `total`
    pass: the length is judged on the same number of images as without a probe, and a probe that is lucky
    on its first images costs some generation but never the length. `draw(start, count)` makes images
    start .. start+count-1 of the set (their seeds), `score(images)` their distances (lower = closer); a
    passing probe's images are the length's reconstructions, so they are not drawn twice.
    """

    every: int
    size: int
    total: int
    batch: int
    threshold: float
    draw: Callable[[int, int], list]
    score: Callable[[list], list]
    images: list = field(default_factory=list)  # the passing probe's images and distances (empty until then)
    distances: list[float] = field(default_factory=list)
    history: list[tuple[int, float, int]] = field(default_factory=list)  # (step, mean distance, images drawn)

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def passes(self, step: int) -> bool:
        """Draw and score the probe after step `step`; True when all `total` reconstructions pass."""
        images = list(self.draw(0, self.size))
        distances = [float(d) for d in self.score(images)]
        if can_still_pass(distances, len(distances), self.threshold):  # the first ones pass: do they all?
            while len(images) < self.total and can_still_pass(distances, self.total, self.threshold):
                more = list(self.draw(len(images), min(self.batch, self.total - len(images))))
                distances += [float(d) for d in self.score(more)]
                images += more
        self.history.append((step, float(np.mean(distances)), len(images)))
        passed = len(images) == self.total and can_still_pass(distances, self.total, self.threshold)
        if passed:
            self.images, self.distances = images, distances
        return passed
