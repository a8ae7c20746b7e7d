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
from .stopping import STOP_CONVERGED, STOP_PROBE, STOP_STEP_CAP, EarlyStopping, ReconstructionProbe

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
    `probe_distance` is the mean distance of a reconstruction probe drawn after the step
    (`stopping.ReconstructionProbe`), where one was. `stop_reason` is set on a length's last
    step (`stopping.STOP_*`).
    """

    num_tokens: int
    step: int
    total: int
    loss: float
    learning_rate: float | None = None
    eval_loss: float | None = None
    stop_reason: str | None = None
    probe_distance: float | None = None
    restart: int = 0  # which of the length's inversions (`restarts` setting; 0 the first) this step belongs to


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

    def rows(self, placeholder: Placeholder) -> torch.Tensor:
        """The placeholder's rows as they are now ((m, dim), a copy)."""
        return self.text_encoder.get_input_embeddings().weight[list(placeholder.ids)].detach().clone()

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
    averaged_steps: int = 0,
    early_stopping: EarlyStopping | None = None,
    micro_batch_size: int | None = None,
    probe: ReconstructionProbe | None = None,
    prefixes: bool = False,
) -> Iterator[InversionStep]:
    """Learn the placeholder rows on the query; yields one event per step.

    `prefixes` trains every prefix of the placeholder's m tokens to stand alone (`token_init` "nested"): each
    noisy copy's prompt holds the first k tokens, k drawn uniformly from 1..m with the template, so the first k
    rows are a k-token description of the query for every k, from one optimisation (nested dropout over token
    positions). Without it every prompt holds all m tokens.

    At most `steps` steps; with `early_stopping`, fewer once the loss on a fixed evaluation
    batch (drawn from `seed`, the same batch at every evaluation) has converged (DVAR, see
    `stopping`); with a `probe`, also once its reconstructions drawn from the rows so far pass
    (the pipeline reads the rows being learned while the probe draws). The last event's
    `stop_reason` says which.

    Returns (as the generator's return value, so `emb = yield from invert(...)`)
    the learned embeddings, float32 tensor (m, dim) on the CPU. The pipeline's
    modules are frozen and left as they were, except the placeholder rows, which
    hold the result afterwards. `lr_schedule` "linear" / "cosine" decays the rate to 0
    over the steps, as diffusers' textual_inversion.py can (on the shapes world the
    `fast` preset reconstructed worse with "linear": benchmarks/RESULTS.md, session 3).
    `averaged_steps` k > 0 returns the mean of the rows after each of the last k of the `steps` steps instead of
    the last rows (tail averaging); an inversion stopped early averages what it ran of that window, or returns
    its last rows if it stopped before the window.

    `micro_batch_size` splits each step's batch into chunks whose gradients are
    accumulated (same update as the whole batch, less memory); None: the whole batch
    at once. A float16 UNet gets a dynamic loss scale (`LossScale`); the learned rows
    and the optimiser stay float32 whatever the frozen modules use.
    """
    text_encoder, unet = pipeline.text_encoder, pipeline.unet
    device = unet.device
    noise_scheduler = DDPMScheduler.from_config(pipeline.scheduler.config)

    base = text_encoder.get_input_embeddings()
    learned = nn.Parameter(base.weight[list(placeholder.ids)].detach().to(device, LEARNED_DTYPE).clone())
    optimizer = torch.optim.AdamW([learned], lr=learning_rate, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(lr_schedule, steps))
    scale = LossScale.for_dtype(unet.dtype)
    # All prompts tokenised once: (T, L), or (m T, L) with every prefix
    template_ids = tokenize(pipeline.tokenizer, prompt_texts(placeholder, templates, prefixes), device)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    target = LossTarget(pipeline, noise_scheduler, latent_mean.to(device), latent_std.to(device), template_ids)

    was_training = (text_encoder.training, unet.training)
    text_encoder.eval()
    unet.eval()
    text_encoder.requires_grad_(False)
    unet.requires_grad_(False)
    text_encoder.set_input_embeddings(PlaceholderEmbedding(base, placeholder.ids, learned))
    convergence = early_stopping.tracker() if early_stopping else None

    def fixed_batch_loss() -> float:
        fixed = torch.Generator(device="cpu").manual_seed(seed ^ EVAL_SEED_MASK)
        with torch.no_grad():
            return float(denoising_loss(target, fixed, batch_size))

    micro, automatic = micro_batch_size, micro_batch_size is None
    average_from = steps - averaged_steps + 1 if averaged_steps > 0 else steps + 1  # first step in the average
    tail_sum, tail_count = torch.zeros_like(learned), 0
    try:
        if convergence is not None:
            convergence.update(0, fixed_batch_loss())  # the start, so a fall from it counts
        for step in range(1, steps + 1):
            loss, micro = accumulate_gradients(target, target.sample(generator, batch_size), learned,
                                               micro_batch_size=micro, scale=scale, automatic=automatic)
            used_lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if step >= average_from:
                tail_sum += learned.detach()
                tail_count += 1
            eval_loss, reason = None, (STOP_STEP_CAP if step == steps else None)
            if convergence is not None and convergence.due(step):
                eval_loss = fixed_batch_loss()
                if convergence.update(step, eval_loss):
                    reason = STOP_CONVERGED
            probe_distance = None
            if probe is not None and reason is None and probe.due(step):
                if probe.passes(step):
                    reason = STOP_PROBE
                probe_distance = probe.history[-1][1]  # mean over the images the probe drew
            yield InversionStep(placeholder.num_tokens, step, steps, loss, used_lr, eval_loss, reason, probe_distance)
            if reason is not None:
                break
    finally:
        text_encoder.set_input_embeddings(base)
        text_encoder.train(was_training[0])
        unet.train(was_training[1])
    result = tail_sum / tail_count if tail_count else learned.detach()
    with torch.no_grad():
        base.weight[list(placeholder.ids)] = result.to(base.weight.dtype)
    return result.float().cpu()


def prompt_texts(placeholder: Placeholder, templates, prefixes: bool = False) -> list[str]:
    """The inversion's prompts: each template with the placeholder's tokens; with `prefixes`, each template with
    each prefix of them (1..m tokens; the k-token prompts first), whose pick per noisy copy is uniform."""
    if not prefixes:
        return [t.format(placeholder.text) for t in templates]
    return [t.format(" ".join(placeholder.tokens[:k])) for k in range(1, placeholder.num_tokens + 1)
            for t in templates]


def lr_factor(schedule: str, steps: int):
    """Multiplier of the learning rate at step i (0-based), as diffusers' get_scheduler without warm-up."""
    if schedule == "constant":
        return lambda i: 1.0
    if schedule == "linear":
        return lambda i: max(0.0, (steps - i) / steps)
    if schedule == "cosine":
        return lambda i: 0.5 * (1.0 + math.cos(math.pi * min(i, steps) / steps))
    raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {schedule!r}")


@dataclass
class LossScale:
    """Dynamic loss scale for float16 backward passes (as torch.amp.GradScaler, for one parameter).

    The denoising loss is a mean over batch x C x h x w elements, so its gradient per
    element is ~1e-6 at batch 20 and 64x64 latents: below float16's normal range
    (6e-5), where the UNet's backward pass loses most of its bits. The loss is multiplied
    by `value` before the backward pass and the gradient divided by it after; a gradient
    that overflowed (inf/nan) halves the scale and the step is recomputed on the same batch.
    bfloat16 and float32 have float32's range and need no scale (`value` 1).
    """

    value: float = 1.0
    min_value: float = 1.0

    @classmethod
    def for_dtype(cls, dtype: torch.dtype) -> "LossScale":
        return cls(FP16_LOSS_SCALE) if dtype == torch.float16 else cls(1.0)


# Initial float16 loss scale: 2**16 brings the per-element gradient of the loss (~1e-6, see
# LossScale) to ~0.1, well inside float16's range; overflows halve it.
FP16_LOSS_SCALE = 2.0**16


@dataclass(frozen=True)
class NoiseBatch:
    """The random draws of one inversion step (all from the CPU generator): latent noise,
    diffusion noise, timesteps and template picks, each with the batch as first dimension."""

    eps_latent: torch.Tensor
    noise: torch.Tensor
    timesteps: torch.Tensor
    picks: torch.Tensor

    def __len__(self) -> int:
        return self.timesteps.shape[0]

    def chunk(self, start: int, stop: int) -> "NoiseBatch":
        return NoiseBatch(self.eps_latent[start:stop], self.noise[start:stop], self.timesteps[start:stop],
                          self.picks[start:stop])


def sample_batch(noise_scheduler: DDPMScheduler, num_templates: int, generator: torch.Generator, batch_size: int,
                 latent_shape) -> NoiseBatch:
    """Draw one step's randomness on the CPU, so a seed gives the same batch on every device
    and whatever the micro-batching."""
    shape = (batch_size, *latent_shape)
    eps_latent = torch.randn(shape, generator=generator)
    noise = torch.randn(shape, generator=generator)
    t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (batch_size,), generator=generator)
    pick = torch.randint(0, num_templates, (batch_size,), generator=generator)
    return NoiseBatch(eps_latent, noise, t, pick)


@dataclass(frozen=True)
class LossTarget:
    """What the denoising loss compares against: the frozen pipeline, its training noise
    scheduler, the query's scaled latent distribution (mean, std: (1, C, h, w)) and the
    tokenised prompt templates (T, L)."""

    pipeline: StableDiffusionPipeline
    noise_scheduler: DDPMScheduler
    mean: torch.Tensor
    std: torch.Tensor
    template_ids: torch.Tensor

    def sample(self, generator: torch.Generator, batch_size: int) -> NoiseBatch:
        return sample_batch(self.noise_scheduler, self.template_ids.shape[0], generator, batch_size,
                            self.mean.shape[1:])


def accumulate_gradients(
    target: LossTarget,
    batch: NoiseBatch,
    learned: torch.Tensor,
    *,
    micro_batch_size: int | None = None,
    scale: LossScale | None = None,
    automatic: bool | None = None,
) -> tuple[float, int]:
    """Backward pass of the batch's mean denoising loss into `learned.grad`; returns the loss
    and the micro-batch size used.

    The batch runs in chunks of `micro_batch_size` (None: all at once), each chunk's loss
    weighted by its share of the batch, so the accumulated gradient is the whole batch's.
    `automatic` (default: when `micro_batch_size` is None) halves the chunks on an
    out-of-memory error and recomputes. With a loss `scale` > 1 the gradient is unscaled
    before returning; on overflow the scale halves and the batch is recomputed.
    """
    scale = scale or LossScale()
    automatic = micro_batch_size is None if automatic is None else automatic
    n = len(batch)
    size = n if micro_batch_size is None else max(1, min(int(micro_batch_size), n))
    while True:
        learned.grad = None
        total = 0.0
        try:
            for start in range(0, n, size):
                part = batch.chunk(start, min(n, start + size))
                loss = batch_loss(target, part) * (len(part) / n)
                (loss * scale.value).backward()
                total += float(loss.detach())
        except torch.OutOfMemoryError:
            if not automatic or size == 1:
                raise
            size = math.ceil(size / 2)
            learned.grad = None
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            logger.info("out of memory at micro-batch %d; trying %d", size * 2, size)
            continue
        grad = learned.grad
        if grad is None:
            raise RuntimeError("the learned rows got no gradient: the prompts do not contain the placeholder tokens")
        if torch.isfinite(grad).all():
            if scale.value != 1.0:
                grad.div_(scale.value)
            return total, size
        if scale.value <= scale.min_value:
            raise FloatingPointError("the inversion's gradient is not finite even without loss scaling")
        scale.value = max(scale.min_value, scale.value / 2)
        logger.info("float16 gradient overflowed; loss scale lowered to %g", scale.value)


def batch_loss(target: LossTarget, batch: NoiseBatch) -> torch.Tensor:
    """The frozen model's denoising loss (float32 scalar) on the noisy copies of the query drawn in `batch`.

    `batch.picks` selects one of the target's prompt templates per copy. The text encoder runs in its own
    dtype (float32 where the loader keeps it so), the UNet in its own; the loss is computed
    in float32.
    """
    pipeline, noise_scheduler, mean, std = target.pipeline, target.noise_scheduler, target.mean, target.std
    text_encoder, unet = pipeline.text_encoder, pipeline.unet
    device = unet.device
    t = batch.timesteps.to(device)
    latents = (mean + std * batch.eps_latent.to(device)).to(unet.dtype)  # (B, C, h, w)
    noise = batch.noise.to(device, unet.dtype)
    noisy = noise_scheduler.add_noise(latents, noise, t)
    hidden = text_encoder(target.template_ids[batch.picks.to(device)])[0]  # (B, L, D)
    pred = unet(noisy, t, hidden.to(unet.dtype)).sample
    if noise_scheduler.config.prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, t)
    else:
        target = noise
    return F.mse_loss(pred.float(), target.float())


def denoising_loss(target: LossTarget, generator: torch.Generator, batch_size: int) -> torch.Tensor:
    """The denoising loss on `batch_size` noisy copies drawn from `generator` (see `batch_loss`)."""
    return batch_loss(target, target.sample(generator, batch_size))


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
    device = pipeline.unet.device
    target = LossTarget(pipeline, noise_scheduler, latent_mean.to(device), latent_std.to(device), ids)
    return float(denoising_loss(target, generator, batch_size))

