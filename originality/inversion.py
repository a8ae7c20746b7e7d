"""Multi-token textual inversion on a frozen Stable Diffusion pipeline.

Conventions follow diffusers' textual inversion (examples/textual_inversion and
loaders/textual_inversion.py): a length-m concept is the tokens `<tok>`, `<tok>_1`,
..., `<tok>_{m-1}`, each initialised from an initializer token, and exported as
`{"<tok>": tensor(m, dim)}` in safetensors so `pipe.load_textual_inversion(path)`
loads it back.

Unlike the diffusers training script, which optimises the whole embedding matrix
and copies the original rows back after every step, only an (m, dim) parameter is
optimised here: the text encoder's embedding module is wrapped so that placeholder
ids read from that parameter. No other row can change, the optimiser state is m
rows instead of the vocabulary, and the query is encoded to latents once.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, StableDiffusionPipeline
from PIL import Image
from torch import nn

from .config import LR_SCHEDULES
from .device import LEARNED_DTYPE
from .stopping import STOP_CONVERGED, STOP_STEP_CAP, EarlyStopping

# XORed into an inversion's seed to seed its fixed evaluation batch: a batch of its own, not the
# first training batch (which the rows have been fitted to first).
EVAL_SEED_MASK = 0x5EED_E7A1

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Placeholder:
    """The m learned tokens of one length: `<tok>`, `<tok>_1`, ... and their ids."""

    token: str
    tokens: tuple[str, ...]
    ids: tuple[int, ...]

    @property
    def text(self) -> str:
        """The tokens as they appear in a prompt: "<tok> <tok>_1 <tok>_2"."""
        return " ".join(self.tokens)

    @property
    def num_tokens(self) -> int:
        return len(self.tokens)


@dataclass(frozen=True)
class InversionStep:
    """Progress event: optimisation step `step` of `total` for length `num_tokens`.

    `loss` is that step's denoising loss and `learning_rate` the rate the step used.
    `eval_loss` is the fixed-batch loss after the step where early stopping evaluated it;
    `stop_reason` is set on a length's last step (`stopping.STOP_*`).
    """

    num_tokens: int
    step: int
    total: int
    loss: float
    learning_rate: float | None = None
    eval_loss: float | None = None
    stop_reason: str | None = None


def initializer_id(tokenizer, word: str) -> int:
    """Id of `word`, which must be exactly one token of the tokenizer."""
    ids = tokenizer.encode(word, add_special_tokens=False)
    if len(ids) != 1:
        pieces = tokenizer.convert_ids_to_tokens(ids)
        raise ValueError(
            f"the domain word {word!r} is {len(ids)} tokens for this model's tokenizer ({pieces}); "
            "choose a word that is a single token, e.g. house, painting, dog"
        )
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is not None and ids[0] == unk:
        raise ValueError(f"the domain word {word!r} is not in this model's vocabulary")
    return ids[0]


class TokenSession:
    """Placeholder tokens for one analysis, without leaving a trace on the shared model.

    The tokenizer is copied (added tokens cannot be removed from a fast tokenizer) and
    the shared text encoder's embedding matrix grows for the session and shrinks back
    to its original rows on `close()`. `pipeline` is a view that shares every module
    with the loaded one but uses the session's tokenizer.
    """

    def __init__(self, pipeline: StableDiffusionPipeline):
        self.text_encoder = pipeline.text_encoder
        self.tokenizer = copy.deepcopy(pipeline.tokenizer)
        self.original_rows = self.text_encoder.get_input_embeddings().weight.shape[0]
        self.pipeline = StableDiffusionPipeline(
            vae=pipeline.vae,
            text_encoder=pipeline.text_encoder,
            tokenizer=self.tokenizer,
            unet=pipeline.unet,
            scheduler=pipeline.scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        self.pipeline.set_progress_bar_config(disable=True)

    def add(self, token: str, num_tokens: int, init_id: int) -> Placeholder:
        """Add `token`, `token`_1, ... (num_tokens in all), each initialised from row `init_id`."""
        tokens = tuple([token] + [f"{token}_{i}" for i in range(1, num_tokens)])
        added = self.tokenizer.add_tokens(list(tokens))
        if added != num_tokens:
            raise ValueError(f"placeholder tokens {tokens} clash with the tokenizer's vocabulary")
        ids = tuple(self.tokenizer.convert_tokens_to_ids(list(tokens)))
        self.text_encoder.resize_token_embeddings(len(self.tokenizer), mean_resizing=False)
        weight = self.text_encoder.get_input_embeddings().weight
        with torch.no_grad():
            weight[list(ids)] = weight[init_id].clone()
        return Placeholder(token, tokens, ids)

    def set_rows(self, placeholder: Placeholder, rows: torch.Tensor) -> None:
        """Start the first len(rows) tokens of `placeholder` from `rows` ((k, dim), k <= m); the rest keep theirs."""
        weight = self.text_encoder.get_input_embeddings().weight
        with torch.no_grad():
            weight[list(placeholder.ids[:len(rows)])] = rows.to(weight.device, weight.dtype)

    def set_embeddings(self, placeholder: Placeholder, embeddings: torch.Tensor) -> None:
        weight = self.text_encoder.get_input_embeddings().weight
        with torch.no_grad():
            weight[list(placeholder.ids)] = embeddings.to(weight.device, weight.dtype)

    def close(self) -> None:
        if self.text_encoder.get_input_embeddings().weight.shape[0] != self.original_rows:
            self.text_encoder.resize_token_embeddings(self.original_rows, mean_resizing=False)

    def __enter__(self) -> "TokenSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class PlaceholderEmbedding(nn.Module):
    """Token embedding whose placeholder rows come from a separate learned parameter."""

    def __init__(self, base: nn.Embedding, ids: tuple[int, ...], learned: nn.Parameter):
        super().__init__()
        self.base = base
        self.learned = learned
        self.register_buffer("lookup", torch.full((base.num_embeddings,), -1, dtype=torch.long, device=learned.device))
        self.lookup[list(ids)] = torch.arange(len(ids), device=learned.device)
        # transformers reads these off the embedding module in a few places
        self.num_embeddings, self.embedding_dim = base.num_embeddings, base.embedding_dim
        self.weight = base.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        out = self.base(input_ids)  # (B, L, D)
        slot = self.lookup[input_ids]  # (B, L): -1 or index into `learned`
        learned = self.learned.to(out.dtype)[slot.clamp(min=0)]
        return torch.where((slot >= 0).unsqueeze(-1), learned, out)


@torch.no_grad()
def encode_query(pipeline: StableDiffusionPipeline, image: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of the query's scaled latent distribution, each (1, C, h, w) float32.

    Computed once per analysis: each inversion step samples mean + std * noise
    instead of running the VAE encoder again.
    """
    vae = pipeline.vae
    pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0)
    pixels = pixels.permute(2, 0, 1).unsqueeze(0).to(vae.device, vae.dtype)  # (1, 3, H, W) in [-1, 1]
    dist = vae.encode(pixels).latent_dist
    sf = vae.config.scaling_factor
    return (dist.mean.float() * sf), (dist.std.float() * sf)


def tokenize(tokenizer, prompts: list[str], device: torch.device) -> torch.Tensor:
    return tokenizer(
        prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids.to(device)


def invert(
    pipeline: StableDiffusionPipeline,
    latent_mean: torch.Tensor,
    latent_std: torch.Tensor,
    placeholder: Placeholder,
    templates: tuple[str, ...] | list[str],
    *,
    steps: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    lr_schedule: str = "constant",
    early_stopping: EarlyStopping | None = None,
) -> Iterator[InversionStep]:
    """Learn the placeholder rows on the query; yields one event per step.

    At most `steps` steps; with `early_stopping`, fewer once the loss on a fixed evaluation
    batch (drawn from `seed`, the same batch at every evaluation) has converged (DVAR, see
    `stopping`). The last event's `stop_reason` says which.

    Returns (as the generator's return value, so `emb = yield from invert(...)`)
    the learned embeddings, float32 tensor (m, dim) on the CPU. The pipeline's
    modules are frozen and left as they were, except the placeholder rows, which
    hold the result afterwards. `lr_schedule` "linear" / "cosine" decays the rate to 0
    over the steps, as diffusers' textual_inversion.py can (on the shapes world the
    `fast` preset reconstructed worse with "linear": benchmarks/RESULTS.md, session 3).
    """
    text_encoder, unet = pipeline.text_encoder, pipeline.unet
    device = unet.device
    noise_scheduler = DDPMScheduler.from_config(pipeline.scheduler.config)

    base = text_encoder.get_input_embeddings()
    learned = nn.Parameter(base.weight[list(placeholder.ids)].detach().to(device, LEARNED_DTYPE).clone())
    optimizer = torch.optim.AdamW([learned], lr=learning_rate, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(lr_schedule, steps))
    # All templates tokenised once: (T, L)
    template_ids = tokenize(pipeline.tokenizer, [t.format(placeholder.text) for t in templates], device)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    mean = latent_mean.to(device)
    std = latent_std.to(device)

    was_training = (text_encoder.training, unet.training)
    text_encoder.eval()
    unet.eval()
    text_encoder.requires_grad_(False)
    unet.requires_grad_(False)
    text_encoder.set_input_embeddings(PlaceholderEmbedding(base, placeholder.ids, learned))
    convergence = early_stopping.tracker() if early_stopping else None

    def fixed_batch_loss() -> float:
        with torch.no_grad():
            fixed = torch.Generator(device="cpu").manual_seed(seed ^ EVAL_SEED_MASK)
            return float(denoising_loss(pipeline, noise_scheduler, mean, std, template_ids, fixed, batch_size))

    try:
        if convergence is not None:
            convergence.update(0, fixed_batch_loss())  # the start, so a fall from it counts
        for step in range(1, steps + 1):
            loss = denoising_loss(pipeline, noise_scheduler, mean, std, template_ids, generator, batch_size)
            loss.backward()
            used_lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            eval_loss, reason = None, (STOP_STEP_CAP if step == steps else None)
            if convergence is not None and convergence.due(step):
                eval_loss = fixed_batch_loss()
                if convergence.update(step, eval_loss):
                    reason = STOP_CONVERGED
            yield InversionStep(placeholder.num_tokens, step, steps, float(loss.detach()), used_lr, eval_loss, reason)
            if reason is not None:
                break
    finally:
        text_encoder.set_input_embeddings(base)
        text_encoder.train(was_training[0])
        unet.train(was_training[1])
    with torch.no_grad():
        base.weight[list(placeholder.ids)] = learned.detach().to(base.weight.dtype)
    return learned.detach().float().cpu()


def lr_factor(schedule: str, steps: int):
    """Multiplier of the learning rate at step i (0-based), as diffusers' get_scheduler without warm-up."""
    if schedule == "constant":
        return lambda i: 1.0
    if schedule == "linear":
        return lambda i: max(0.0, (steps - i) / steps)
    if schedule == "cosine":
        return lambda i: 0.5 * (1.0 + math.cos(math.pi * min(i, steps) / steps))
    raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {schedule!r}")


def denoising_loss(
    pipeline: StableDiffusionPipeline,
    noise_scheduler: DDPMScheduler,
    mean: torch.Tensor,
    std: torch.Tensor,
    template_ids: torch.Tensor,
    generator: torch.Generator,
    batch_size: int,
) -> torch.Tensor:
    """The frozen model's denoising loss on `batch_size` noisy copies of the query.

    mean, std: (1, C, h, w) scaled latent distribution of the query; template_ids:
    (T, L) tokenised prompts, one drawn per copy. All randomness comes from the CPU
    `generator`, so a seed gives the same batch on every device.
    """
    text_encoder, unet = pipeline.text_encoder, pipeline.unet
    device = unet.device
    shape = (batch_size, *mean.shape[1:])
    eps_latent = torch.randn(shape, generator=generator).to(device)
    noise = torch.randn(shape, generator=generator).to(device, unet.dtype)
    t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (batch_size,), generator=generator).to(device)
    pick = torch.randint(0, template_ids.shape[0], (batch_size,), generator=generator).to(device)
    latents = (mean + std * eps_latent).to(unet.dtype)  # (B, C, h, w)
    noisy = noise_scheduler.add_noise(latents, noise, t)
    hidden = text_encoder(template_ids[pick])[0]  # (B, L, D)
    pred = unet(noisy, t, hidden.to(unet.dtype)).sample
    if noise_scheduler.config.prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, t)
    else:
        target = noise
    return F.mse_loss(pred.float(), target.float())


@torch.no_grad()
def evaluation_loss(
    pipeline: StableDiffusionPipeline,
    latent_mean: torch.Tensor,
    latent_std: torch.Tensor,
    placeholder: Placeholder,
    templates: tuple[str, ...] | list[str],
    *,
    batch_size: int = 16,
    seed: int = 12345,
) -> float:
    """Denoising loss of the current placeholder rows on a fixed seeded batch (lower = better fit)."""
    noise_scheduler = DDPMScheduler.from_config(pipeline.scheduler.config)
    ids = tokenize(pipeline.tokenizer, [t.format(placeholder.text) for t in templates], pipeline.unet.device)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return float(denoising_loss(pipeline, noise_scheduler, latent_mean.to(pipeline.unet.device),
                                latent_std.to(pipeline.unet.device), ids, generator, batch_size))
