"""The two small interfaces every model world plugs into, and their Stable Diffusion versions.

- A `DistanceMetric` scores reconstructions against the query: lower = closer.
- An `InDistributionCheck` decides whether the learned tokens are a concept the
  model can use (editability), not a copy of the query's pixels.

The Stable Diffusion world uses DreamSim (`DreamSimDistance`) and a zero-shot CLIP
check that the edit prompt's subject is present (`ClipEditCheck`). The shapes world
has its own pair in `originality.shapes.judges`.
"""

from __future__ import annotations

import logging
import os
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

import torch
from PIL import Image

from .config import DOMAINS

logger = logging.getLogger(__name__)


@dataclass
class CheckResult:
    """Outcome of an in-distribution check.

    `scores` holds one number in [0, 1] per checked image (for the CLIP check, the
    probability that the subject is present), shown next to each image in the UI.
    """

    passed: bool
    scores: list[float]
    detail: str = ""


@runtime_checkable
class DistanceMetric(Protocol):
    name: str

    def __call__(self, query: Image.Image, images: list[Image.Image]) -> list[float]:
        """One distance per image, lower = more similar to the query."""
        ...


@runtime_checkable
class InDistributionCheck(Protocol):
    name: str
    # True when the check needs the edit images ("cat in S*"); False when it judges
    # the reconstructions alone (the shapes world's layout check).
    uses_edits: bool

    def __call__(
        self,
        query: Image.Image,
        reconstructions: list[Image.Image],
        edits: list[Image.Image],
        *,
        subject: str,
        pass_fraction: float,
        domain: str | None = None,
    ) -> CheckResult:
        """`domain`: the word the learned tokens started from (the CLIP check lists it among
        the alternatives, so an edit that shows only the domain's subject fails)."""
        ...


def default_cache_dir(kind: str) -> Path:
    """A writable cache folder: $ORIGINALITY_CACHE/<kind>, else ~/.cache/originality/<kind>."""
    root = os.environ.get("ORIGINALITY_CACHE") or Path.home() / ".cache" / "originality"
    return Path(root) / kind


_DOWNLOAD_ERRORS = (OSError, zipfile.BadZipFile)  # URLError and HTTPError are OSErrors


@dataclass
class DreamSimDistance:
    """DreamSim perceptual distance (Fu et al. 2023) from the `dreamsim` package.

    Inputs are PIL images of any size (DreamSim resizes to 224 px); the distance is
    1 - cosine similarity of the embeddings: 0 = same image, higher = more different.
    Weights are loaded lazily from `cache_dir` and downloaded there on first use
    when the machine has network.
    """

    dreamsim_type: str = "ensemble"
    device: torch.device | str = "cpu"
    cache_dir: Path | str | None = None
    batch_size: int = 16
    name: str = field(init=False, default="dreamsim")
    _model: object = field(init=False, default=None, repr=False)
    _preprocess: object = field(init=False, default=None, repr=False)

    def load(self) -> None:
        """Read the weights now (once; later calls do nothing). The first distance does it otherwise; a server
        calls it at start-up so that no visitor's run reads them (`originality.app.startup`)."""
        if self._model is not None:
            return
        cache_dir = Path(self.cache_dir) if self.cache_dir is not None else default_cache_dir("dreamsim")
        cache_dir.mkdir(parents=True, exist_ok=True)
        from dreamsim import dreamsim  # noqa: PLC0415 - start-up: dreamsim, only when the metric is used

        logger.info("loading DreamSim (%s) from %s", self.dreamsim_type, cache_dir)
        hub_dir = torch.hub.get_dir()  # dreamsim points torch.hub at its cache for DINO; undo that after
        try:
            with warnings.catch_warnings():
                # dreamsim wraps the model with peft twice by design; peft warns about it.
                warnings.filterwarnings("ignore", message=".*Already found a `peft_config`.*")
                model, preprocess = dreamsim(pretrained=True, device=str(self.device), cache_dir=str(cache_dir),
                                             dreamsim_type=self.dreamsim_type)
        except _DOWNLOAD_ERRORS as err:
            raise RuntimeError(
                f"Could not load the DreamSim '{self.dreamsim_type}' weights from {cache_dir} ({err}). "
                "They are downloaded there on first use, which needs network access. Run once on a "
                "machine with network, or copy a filled DreamSim cache folder to that path (or point "
                "cache_dir / $ORIGINALITY_CACHE at one)."
            ) from err
        finally:
            torch.hub.set_dir(hub_dir)
        self._model, self._preprocess = model, preprocess

    def __call__(self, query: Image.Image, images: list[Image.Image]) -> list[float]:
        if not images:
            return []
        self.load()
        device = torch.device(self.device)
        distances: list[float] = []
        with torch.no_grad():
            q = self._preprocess(query).to(device)
            for start in range(0, len(images), self.batch_size):
                batch = torch.cat([self._preprocess(im) for im in images[start:start + self.batch_size]]).to(device)
                d = self._model(q.expand(len(batch), -1, -1, -1), batch)
                distances.extend(float(x) for x in d.reshape(-1).float().cpu())
        return distances


@dataclass
class ClipEditCheck:
    """Zero-shot CLIP check that the edit prompt's subject is in each edit image.

    Each image gets P(subject) from a softmax over the prompts "a photo of a {subject}",
    a few subject-free alternatives, and "a photo of a {word}" for the domain word and
    every other preset domain word (`alternatives`): an edit "cat in S*" that shows only
    the house S* started from must lose to "a photo of a house". The check passes when at
    least `pass_fraction` of the images have P(subject) >= 0.5.

    The model is loaded lazily from `model_id`, unless an already built `model` and
    `processor` are given.
    """

    model_id: str = "openai/clip-vit-base-patch32"
    device: torch.device | str = "cpu"
    dtype: torch.dtype = torch.float32
    model: object = field(default=None, repr=False)
    processor: object = field(default=None, repr=False)
    name: str = field(init=False, default="clip-edit")
    uses_edits: bool = field(init=False, default=True)
    _ready: bool = field(init=False, default=False, repr=False)

    # The subject-free alternatives the subject prompt competes with.
    NEGATIVE_PROMPTS: ClassVar[tuple[str, ...]] = ("a photo", "a photo of an object", "a photo of a scene")
    THRESHOLD: ClassVar[float] = 0.5

    def load(self) -> None:
        """Read the weights now (once; later calls do nothing). The first check does it otherwise; a server
        calls it at start-up so that no visitor's run reads them (`originality.app.startup`)."""
        if self._ready:
            return
        if self.model is None:
            from transformers import CLIPModel  # noqa: PLC0415 - start-up: transformers only when used

            logger.info("loading CLIP model %s", self.model_id)
            self.model = CLIPModel.from_pretrained(self.model_id)
        if self.processor is None:
            from transformers import CLIPProcessor  # noqa: PLC0415 - start-up: transformers only when used

            self.processor = CLIPProcessor.from_pretrained(self.model_id)
        self.model = self.model.to(device=torch.device(self.device), dtype=self.dtype).eval()
        self._ready = True

    @staticmethod
    def alternatives(subject: str, domain: str | None = None) -> list[str]:
        """The prompts P(subject) competes with: generic ones, the domain word's and every preset word's."""

        words = ([domain] if domain else []) + list(DOMAINS.values())
        words = [w for w in dict.fromkeys(words) if w.lower() != subject.lower()]
        return [*ClipEditCheck.NEGATIVE_PROMPTS, *(subject_prompt(w) for w in words)]

    def probabilities(self, images: list[Image.Image], prompts: list[str]) -> list[list[float]]:
        """Softmax over `prompts` for each image: (n_images, n_prompts) as lists."""
        if not images:
            return []
        self.load()
        inputs = self.processor(text=prompts, images=[im.convert("RGB") for im in images],
                                return_tensors="pt", padding=True)
        device = torch.device(self.device)
        inputs = {k: (v.to(device=device, dtype=self.dtype) if v.is_floating_point() else v.to(device))
                  for k, v in inputs.items()}
        with torch.no_grad():
            logits = self.model(**inputs).logits_per_image  # (n_images, n_prompts)
        return logits.float().softmax(dim=-1).cpu().tolist()

    def subject_probabilities(self, images: list[Image.Image], subject: str, domain: str | None = None) -> list[float]:
        """P(subject) for each image: softmax over the subject prompt and its `alternatives`."""
        prompts = [subject_prompt(subject), *self.alternatives(subject, domain)]
        return [row[0] for row in self.probabilities(images, prompts)]

    def __call__(
        self,
        query: Image.Image,
        reconstructions: list[Image.Image],
        edits: list[Image.Image],
        *,
        subject: str,
        pass_fraction: float,
        domain: str | None = None,
    ) -> CheckResult:
        if not edits:
            return CheckResult(passed=False, scores=[],
                               detail=f"no edit images to check for a {subject}; the check cannot pass")
        if domain is not None and domain.lower() == subject.lower():
            raise ValueError(f"the edit subject {subject!r} is the domain word: the check could not fail; "
                             "choose another edit subject (analysis.edit_subject_for switches it)")
        scores = self.subject_probabilities(edits, subject, domain)
        hits = sum(p >= self.THRESHOLD for p in scores)
        passed = hits / len(scores) >= pass_fraction
        against = f"vs {domain} and the other domains" if domain else "vs the preset domains"
        detail = f"{hits}/{len(scores)} edits show a {subject} (P >= {self.THRESHOLD:g}, {against})"
        return CheckResult(passed=passed, scores=scores, detail=detail)


def subject_prompt(word: str) -> str:
    """CLIP prompt for a subject or domain word ("painting" is a kind of image, not a thing in a photo)."""
    return "a painting" if word == "painting" else f"a photo of a {word}"
