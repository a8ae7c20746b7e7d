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

import numpy as np

# Why a length's inversion stopped (TokenResult.stop_reason).
STOP_STEP_CAP = "step cap"  # ran all `steps`
STOP_CONVERGED = "converged"  # the fixed-batch loss stopped moving (DVAR)


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
