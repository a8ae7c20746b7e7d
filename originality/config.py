"""Typed settings of an analysis, the `paper` and `fast` presets, and domain presets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

# Domain preset -> initial word of the learned tokens (Haviv et al. 2024, Sec. 5).
DOMAINS: dict[str, str] = {
    "house": "house",
    "painting": "painting",
    "dog": "dog",
    "cat": "cat",
    "bird": "bird",
    "sport": "sport",
    "person": "person",
}
# Domains whose inversion uses the art templates instead of the object templates.
ART_DOMAINS = frozenset({"painting"})
# Learning-rate schedules of the inversion, named as in diffusers' textual_inversion.py
# (--lr_scheduler); the decaying ones go from learning_rate to 0 over the steps.
LR_SCHEDULES = ("constant", "linear", "cosine")


@dataclass(frozen=True)
class AnalysisConfig:
    """Every setting of one progressive analysis. `None` means "the model world's default".

    Build one with `AnalysisConfig.preset("fast", threshold=0.3)`; every field can be
    overridden.
    """

    # Domain preset (house, painting, dog, cat, bird, sport, person) or any single-token
    # word of the model's tokenizer; it initialises the learned tokens. None: the world's default.
    domain: str | None = None
    max_tokens: int = 5  # try m = 1 .. max_tokens learned tokens; none passing -> "max_tokens+"
    # Inversion (multi-token textual inversion on the query image)
    steps: int = 2000  # optimisation steps per token length
    batch_size: int = 20  # noisy copies of the query per step
    learning_rate: float = 5e-4
    lr_schedule: str = "constant"  # constant, linear or cosine (decay to 0 over `steps`)
    # Reconstruction: images from `reconstruction_prompt` scored against the query
    num_reconstructions: int = 20
    num_inference_steps: int = 35
    guidance_scale: float | None = None  # None: the world's default (7.5 for SD)
    reconstruction_prompt: str = "a photo of {}"
    # Mean distance at or below which a reconstruction counts as good. None: the world's
    # default (DreamSim 0.45 for SD, element distance 0.3 for shapes; see README).
    threshold: float | None = None
    # Editability (in-distribution) check
    edit_prompt: str = "cat in {}"
    edit_subject: str = "cat"  # what the check looks for in the edits
    num_edits: int = 8
    edit_pass_fraction: float = 0.5  # the check passes when at least this share of edits passes
    # Generate and check the edits even for a length whose reconstruction already failed (its
    # decision cannot change); False skips them, which saves num_edits generations per failed length.
    always_check_edits: bool = False
    # Reproducibility and batching
    seed: int = 0
    generation_batch_size: int = 8  # images per denoising batch when generating
    # Inversion micro-batch: each step's batch runs in chunks of this size with gradient
    # accumulation (same update, less memory). None: automatic (whole batch, halved on out-of-memory).
    micro_batch_size: int | None = None

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "AnalysisConfig":
        if name not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {name!r}")
        return replace(PRESETS[name], **overrides)

    def replace(self, **overrides: Any) -> "AnalysisConfig":
        return replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AnalysisConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def validate(self) -> None:
        """Raise ValueError naming the first bad field and its value."""
        positive_ints = ("max_tokens", "steps", "batch_size", "num_reconstructions", "num_inference_steps",
                         "num_edits", "generation_batch_size")
        for name in positive_ints:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.micro_batch_size is not None and (not isinstance(self.micro_batch_size, int)
                                                   or isinstance(self.micro_batch_size, bool)
                                                   or self.micro_batch_size < 1):
            raise ValueError(f"micro_batch_size must be a positive integer or None, got {self.micro_batch_size!r}")
        if self.max_tokens > 16:
            raise ValueError(f"max_tokens must be at most 16, got {self.max_tokens}")
        if not (isinstance(self.learning_rate, (int, float)) and 0 < self.learning_rate <= 1):
            raise ValueError(f"learning_rate must be in (0, 1], got {self.learning_rate!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if self.threshold is not None and not 0 <= self.threshold <= 2:
            raise ValueError(f"threshold must be between 0 and 2, got {self.threshold!r}")
        if self.guidance_scale is not None and not 0 <= self.guidance_scale <= 50:
            raise ValueError(f"guidance_scale must be between 0 and 50, got {self.guidance_scale!r}")
        if not 0 <= self.edit_pass_fraction <= 1:
            raise ValueError(f"edit_pass_fraction must be between 0 and 1, got {self.edit_pass_fraction!r}")
        for name in ("reconstruction_prompt", "edit_prompt"):
            value = getattr(self, name)
            if not isinstance(value, str) or value.count("{}") != 1:
                raise ValueError(f"{name} must contain exactly one '{{}}' for the learned tokens, got {value!r}")
        if self.domain is not None and (not isinstance(self.domain, str) or not self.domain.strip()
                                        or len(self.domain.split()) != 1):
            raise ValueError(f"domain must be a preset ({', '.join(DOMAINS)}) or one word, got {self.domain!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")


PRESETS: dict[str, AnalysisConfig] = {
    # Haviv et al. 2024: batch 20, lr 5e-4, 2000 steps, 20 reconstructions, 35 inference steps.
    "paper": AnalysisConfig(),
    # About a minute per image on one GPU, and within 60 s on a 2-core CPU for the shapes
    # world: 10x the learning rate buys ~13x fewer steps; fewer images and sampler steps.
    "fast": AnalysisConfig(
        steps=150, batch_size=8, learning_rate=5e-3, num_reconstructions=8, num_inference_steps=20, num_edits=4
    ),
}
