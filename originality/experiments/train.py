"""Train the shapes world's model from scratch: the VAE, then the UNet and text encoder.

    python -m originality.experiments.train --out assets/shapes-model

Time-boxed (--max-minutes) and resumable: checkpoints go to --checkpoint-dir every
few minutes, and a rerun of the same command continues where the last one stopped.
Training item i is a pure function of (seed, i) and the noise of step s is drawn
from a generator seeded with (seed, s), so a resumed run is the same run.

Besides the diffusion loss, a small auxiliary loss (--binding-weight, from step
--binding-from) asks each shape word's text state to name its own colour
(`BindingHead`); without it the jointly trained text encoder mixed the caption's
colours and the model swapped colours between shapes.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..device import pick_device
from ..shapes import is_shapes_model, model_marker
from ..shapes import model as shapes_model
from ..shapes.dataset import drawing, sample, to_tensor
from ..shapes.renderer import COLOURS, SHAPES, Variation

logger = logging.getLogger(__name__)


def batch_of(seed: int, start: int, size: int, variation: Variation | None = None) -> tuple[torch.Tensor, list[str]]:
    items = [sample(seed, i) for i in range(start, start + size)]
    images = [drawing(seed, i, s.elements, variation) for i, s in zip(range(start, start + size), items)]
    return to_tensor(images), [s.caption for s in items]


class StepBatches(torch.utils.data.Dataset):
    """Step s's training batch, `batch_of(seed, s * size, size, variation)`, for a DataLoader whose workers
    render ahead of the GPU (rendering 64 drawings takes ~50 ms of one core, longer than a GPU step). The
    batch of a step is the same whichever process renders it."""

    def __init__(self, seed: int, size: int, variation: Variation | None, start: int, stop: int):
        self.seed, self.size, self.variation, self.start, self.stop = seed, size, variation, start, stop

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, list[str]]:
        return batch_of(self.seed, (self.start + k) * self.size, self.size, self.variation)


def training_batches(args, start: int):
    """The batches of steps start .. args.steps - 1 in order, rendered by --data-workers processes (0: here)."""
    steps = StepBatches(args.seed, args.batch, _variation(args), start, args.steps)
    if args.data_workers == 0:
        return (steps[k] for k in range(len(steps)))
    return iter(torch.utils.data.DataLoader(steps, batch_size=None, num_workers=args.data_workers,
                                            prefetch_factor=4, worker_init_fn=_one_thread))


def _one_thread(_worker: int) -> None:
    torch.set_num_threads(1)  # workers render; torch's own threads would only contend for the cores


def prepare_captions(captions: list[str], rng: random.Random, drop: float = 0.1) -> list[str]:
    """Caption augmentation: templates for "a photo of S*", the initial word, and drops for guidance."""
    out = []
    for c in captions:
        u = rng.random()
        if c and u < 0.05:
            c = shapes_model.INITIAL_WORD
        if c and rng.random() < 0.5:
            c = rng.choice(shapes_model.SHAPES_TEMPLATES).format(c)
        if rng.random() < drop:
            c = ""
        out.append(c)
    return out


class BindingHead(torch.nn.Module):
    """Reads a shape word's hidden state and names that element's colour.

    Trained jointly from scratch on the diffusion loss alone, the text encoder left every
    shape word a bag of the caption's colours (a linear fit on the "circle" state explained
    its own colour and the other shape's colour equally, R^2 0.5 each), and the UNet swapped
    colours between shapes. This auxiliary loss asks the text side to bind each colour to
    its shape; it uses the caption's grammar only, no visual knowledge.
    """

    def __init__(self, hidden: int):
        super().__init__()
        self.colour = torch.nn.Linear(hidden, len(COLOURS))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.colour(hidden)


def binding_targets(input_ids: torch.Tensor, tokenizer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rows, positions, colour indices) of every shape word, whose colour is the word two before it.

    Captions say "<size> <colour> <texture> <shape>" for every element; a shape word without a
    colour there (the initial word, a learned token) is left out.
    """
    shape_ids = set(tokenizer.convert_tokens_to_ids(list(SHAPES)))
    colour_of = {i: k for k, i in enumerate(tokenizer.convert_tokens_to_ids(list(COLOURS)))}
    rows, cols, colours = [], [], []
    for r, ids in enumerate(input_ids.tolist()):
        for p in range(2, len(ids)):
            if ids[p] in shape_ids and ids[p - 2] in colour_of:
                rows.append(r)
                cols.append(p)
                colours.append(colour_of[ids[p - 2]])
    return torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long), torch.tensor(colours, dtype=torch.long)


def binding_loss(head: BindingHead, hidden: torch.Tensor, input_ids: torch.Tensor, tokenizer) -> torch.Tensor:
    rows, cols, colours = binding_targets(input_ids, tokenizer)
    if len(rows) == 0:
        return hidden.sum() * 0.0
    logits = head(hidden[rows.to(hidden.device), cols.to(hidden.device)])
    return F.cross_entropy(logits.float(), colours.to(hidden.device))


def _variation(args) -> Variation | None:
    """The drawing variation of this run's training images (None: the exact renders)."""
    return Variation() if args.vary else None


INIT_PARTS = ("unet", "text_encoder", "vae")


def load_initial_weights(components: dict, path: str, parts: tuple[str, ...] = INIT_PARTS) -> float | None:
    """Start `parts` from a saved pipeline's weights (fine-tuning; the others keep their fresh initialisation,
    e.g. a text encoder of another depth); returns the saved latent scaling factor when the VAE is among them."""
    from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: PLC0415 - start-up: diffusers only when used
    from transformers import BertModel  # noqa: PLC0415 - start-up: transformers only when used

    classes = {"unet": UNet2DConditionModel, "text_encoder": BertModel, "vae": AutoencoderKL}
    factor = None
    for name in parts:
        loaded = classes[name].from_pretrained(Path(path) / name)
        components[name].load_state_dict(loaded.state_dict())
        if name == "vae":
            factor = loaded.config.scaling_factor
    return factor


def _save_ckpt(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def train_vae(vae, args, device, ckpt_dir: Path) -> None:
    ckpt = ckpt_dir / "vae.pt"
    start = 0
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr)
    if ckpt.exists():
        state = torch.load(ckpt, map_location="cpu")
        vae.load_state_dict(state["vae"])
        opt.load_state_dict(state["opt"])
        start = state["step"]
    if start >= args.vae_steps:
        if not ckpt.exists() and args.vae_steps > 0:
            raise FileNotFoundError(ckpt)
        return
    vae.train()
    last_save = time.time()
    for step in range(start, args.vae_steps):
        images, _ = batch_of(args.seed + 1, step * args.vae_batch, args.vae_batch, _variation(args))
        images = images.to(device)
        g = torch.Generator(device="cpu").manual_seed(args.seed * 100_003 + step)
        posterior = vae.encode(images).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=g).to(device)
        recon = vae.decode(z).sample
        loss = F.mse_loss(recon, images) + args.vae_kl * posterior.kl().mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % 50 == 0:
            logger.info("vae step %d/%d loss %.5f", step, args.vae_steps, loss.item())
        if time.time() - last_save > 120 or step == args.vae_steps - 1:
            _save_ckpt(ckpt, {"vae": vae.state_dict(), "opt": opt.state_dict(), "step": step + 1})
            last_save = time.time()


@torch.no_grad()
def latent_scaling_factor(vae, seed: int, device, n: int = 512) -> float:
    images, _ = batch_of(seed + 2, 0, n)
    latents = torch.cat([vae.encode(images[i : i + 64].to(device)).latent_dist.mean for i in range(0, n, 64)])
    return float(1.0 / latents.std())


def train_denoiser(components, args, device, ckpt_dir: Path) -> int:
    unet, text_encoder, tokenizer, vae, scheduler = (
        components[k] for k in ("unet", "text_encoder", "tokenizer", "vae", "scheduler")
    )
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    ema = [p.detach().clone() for p in params]
    # The binding head is not part of the pipeline, so it has its own optimiser: checkpoints
    # written before it existed still resume.
    head = BindingHead(text_encoder.config.hidden_size).to(device)
    head_opt = torch.optim.AdamW(head.parameters(), lr=args.lr)
    ckpt = ckpt_dir / "denoiser.pt"
    start = 0
    if ckpt.exists():
        state = torch.load(ckpt, map_location="cpu")
        unet.load_state_dict(state["unet"])
        text_encoder.load_state_dict(state["text_encoder"])
        opt.load_state_dict(state["opt"])
        ema = [e.to(device) for e in state["ema"]]
        if "binding_head" in state:
            head.load_state_dict(state["binding_head"])
            head_opt.load_state_dict(state["binding_opt"])
        start = state["step"]
        logger.info("resumed denoiser at step %d", start)
    unet.train()
    text_encoder.train()
    vae.eval().requires_grad_(False)
    alphas = scheduler.alphas_cumprod.to(device)
    snr = alphas / (1 - alphas)
    deadline = time.time() + 60 * args.max_minutes
    last_save = time.time()
    log = open(ckpt_dir / "losses.csv", "a", newline="")
    writer = csv.writer(log)
    step = start
    batches = training_batches(args, start)
    for step in range(start, args.steps):
        if time.time() > deadline:
            logger.info("time box reached at step %d", step)
            break
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, args)
        images, captions = next(batches)
        rng = random.Random(args.seed * 100_003 + step)
        g = torch.Generator(device="cpu").manual_seed(args.seed * 100_003 + step)
        captions = prepare_captions(captions, rng)
        with torch.no_grad():
            post = vae.encode(images.to(device)).latent_dist
            latents = (post.mean + post.std * torch.randn(post.mean.shape, generator=g).to(device)) * vae.config.scaling_factor
        noise = torch.randn(latents.shape, generator=g).to(device)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],), generator=g).to(device)
        noisy = scheduler.add_noise(latents, noise, t)
        ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt")
        hidden = text_encoder(ids.input_ids.to(device))[0]
        pred = unet(noisy, t, hidden).sample
        # Min-SNR-gamma weighting (Hang et al. 2023): converges markedly faster from scratch.
        weight = torch.clamp(snr[t], max=args.snr_gamma) / snr[t]
        loss = (weight * F.mse_loss(pred.float(), noise.float(), reduction="none").mean(dim=(1, 2, 3))).mean()
        bind = torch.zeros(())
        if args.binding_weight > 0 and step >= args.binding_from:
            bind = binding_loss(head, hidden, ids.input_ids, tokenizer)
            (loss + args.binding_weight * bind).backward()
            head_opt.step()
            head_opt.zero_grad(set_to_none=True)
        else:
            loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - decay)
        writer.writerow([step, f"{loss.item():.5f}", f"{bind.item():.5f}"])
        if step % 25 == 0:
            log.flush()
            logger.info("denoiser step %d/%d loss %.4f binding %.4f", step, args.steps, loss.item(), bind.item())
        if time.time() - last_save > 60 * args.checkpoint_minutes:
            _save_ckpt(ckpt, _denoiser_state(unet, text_encoder, opt, ema, step + 1, head, head_opt, args))
            last_save = time.time()
    else:
        step = args.steps
    if not args.export_only:
        _save_ckpt(ckpt, _denoiser_state(unet, text_encoder, opt, ema, step, head, head_opt, args))
    with torch.no_grad():
        for e, p in zip(ema, params):
            p.copy_(e)
    log.close()
    return step


def learning_rate(step: int, args) -> float:
    """Linear warm-up to `args.lr`, then constant or (`--lr-schedule cosine`) a cosine down to `args.lr_min`
    at `args.steps`: the last steps of a fine-tune settle instead of hopping around at full rate."""
    warm = min(1.0, (step + 1) / max(1, args.warmup))
    if args.lr_schedule == "constant" or step < args.warmup:
        return args.lr * warm
    progress = min(1.0, (step - args.warmup) / max(1, args.steps - args.warmup))
    return args.lr_min + 0.5 * (args.lr - args.lr_min) * (1 + math.cos(math.pi * progress))


def _init_record(path: str | None) -> dict | None:
    """What a fine-tune started from: the starting model's own training record."""
    if not path:
        return None
    return model_marker(path) if is_shapes_model(path) else {"path": str(path)}


def _denoiser_state(unet, text_encoder, opt, ema, step: int, head, head_opt, args) -> dict:
    return {
        "unet": unet.state_dict(),
        "text_encoder": text_encoder.state_dict(),
        "opt": opt.state_dict(),
        "ema": [e.cpu() for e in ema],
        "binding_head": head.state_dict(),
        "binding_opt": head_opt.state_dict(),
        "binding": {"weight": args.binding_weight, "from": args.binding_from},
        "text_layers": args.text_layers,
        "init_parts": list(args.init_parts),
        "step": step,
    }


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="assets/shapes-model", help="where the trained pipeline is saved")
    ap.add_argument("--checkpoint-dir", default="checkpoints/shapes", help="resumable training state")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vae-steps", type=int, default=1200)
    ap.add_argument("--vae-batch", type=int, default=16)
    ap.add_argument("--vae-lr", type=float, default=1e-3)
    ap.add_argument("--vae-kl", type=float, default=1e-6)
    ap.add_argument("--steps", type=int, default=6000, help="denoiser (UNet + text encoder) steps")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--lr-schedule", choices=("constant", "cosine"), default="constant",
                    help="after warm-up: constant, or a cosine from --lr down to --lr-min at --steps")
    ap.add_argument("--lr-min", type=float, default=0.0, help="the cosine schedule's final learning rate")
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--snr-gamma", type=float, default=5.0)
    ap.add_argument("--binding-weight", type=float, default=0.1,
                    help="weight of the auxiliary loss that binds each shape word to its colour (0: off)")
    ap.add_argument("--binding-from", type=int, default=0, help="denoiser step at which the binding loss starts")
    ap.add_argument("--max-minutes", type=float, default=600.0, help="time box for the denoiser stage of this run")
    ap.add_argument("--checkpoint-minutes", type=float, default=5.0)
    ap.add_argument("--device", default=None, help="cuda / cpu (default: cuda when present)")
    ap.add_argument("--export-only", action="store_true",
                    help="save the pipeline from the latest checkpoints (EMA weights) without training")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    ap.add_argument("--vary", action=argparse.BooleanOptionalAction, default=True,
                    help="train on varied drawings (shades, radii, edges, blur, JPEG: renderer.Variation) "
                         "instead of the exact renders only")
    ap.add_argument("--init-from", default=None,
                    help="fine-tune: start the UNet, text encoder and VAE from this saved pipeline; the VAE "
                         "and its latent scaling factor are kept unless --vae-steps trains it on")
    ap.add_argument("--init-parts", nargs="+", default=list(INIT_PARTS), choices=INIT_PARTS,
                    help="with --init-from: the parts started from it (default: all); leave out text_encoder to "
                         "train one of another depth (--text-layers) from scratch beside the saved UNet")
    ap.add_argument("--text-layers", type=int, default=shapes_model.ShapesModelConfig.text_layers,
                    help="text encoder depth (default: %(default)s)")
    ap.add_argument("--data-workers", type=int, default=0,
                    help="processes that render training batches ahead of the GPU (default: 0, in this process)")
    return ap


def main(argv: list[str] | None = None) -> None:
    ap = build_parser()
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device) if args.device else pick_device()
    ckpt_dir = Path(args.checkpoint_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    if args.export_only:
        # the step counts come from the checkpoints, so the exported marker says what was trained
        for name in ("denoiser.pt",) if args.init_from else ("vae.pt", "denoiser.pt"):
            if not (ckpt_dir / name).is_file():
                ap.error(f"--export-only: no {ckpt_dir / name}; train first")
        if (ckpt_dir / "vae.pt").is_file():
            args.vae_steps = torch.load(ckpt_dir / "vae.pt", map_location="cpu")["step"]
        state = torch.load(ckpt_dir / "denoiser.pt", map_location="cpu")
        args.steps = state["step"]
        binding = state.get("binding", {"weight": 0.0, "from": 0})  # older checkpoints trained without it
        args.binding_weight, args.binding_from = binding["weight"], binding["from"]
        args.text_layers = state.get("text_layers", shapes_model.ShapesModelConfig.text_layers)
        args.init_parts = state.get("init_parts", list(INIT_PARTS))
    elif (ckpt_dir / "denoiser.pt").is_file():
        saved = torch.load(ckpt_dir / "denoiser.pt", map_location="cpu").get(
            "text_layers", shapes_model.ShapesModelConfig.text_layers)
        if saved != args.text_layers:
            ap.error(f"{ckpt_dir / 'denoiser.pt'} trains a {saved}-layer text encoder; resume with --text-layers "
                     f"{saved} or use another --checkpoint-dir")

    torch.manual_seed(args.seed)
    config = shapes_model.ShapesModelConfig(text_layers=args.text_layers)
    components = shapes_model.build_components(config)
    for k in ("unet", "text_encoder", "vae"):
        components[k].to(device)
    # 1. VAE (fine-tuning keeps the starting VAE and its scaling factor: the UNet was trained on them)
    factor = None
    if args.init_from:
        factor = load_initial_weights(components, args.init_from, tuple(args.init_parts))  # onto `device`
    if not args.init_from or "vae" not in args.init_parts or (ckpt_dir / "vae.pt").exists():
        train_vae(components["vae"], args, device, ckpt_dir)
    components["vae"].eval()
    if factor is None:
        factor = latent_scaling_factor(components["vae"], args.seed, device)
    components["vae"].register_to_config(scaling_factor=factor)
    logger.info("latent scaling factor %.4f", factor)
    # 2. UNet + text encoder
    steps = train_denoiser(components, args, device, ckpt_dir)
    # 3. Save as a diffusers pipeline
    for k in ("unet", "text_encoder", "vae"):
        components[k].to("cpu").eval()
    pipe = shapes_model.assemble(components)
    shapes_model.save(
        pipe,
        args.out,
        meta={"seed": args.seed, "vae_steps": args.vae_steps, "denoiser_steps": steps, "batch": args.batch,
              "binding_weight": args.binding_weight, "binding_from": args.binding_from,
              "lr": args.lr, "lr_schedule": args.lr_schedule, "lr_min": args.lr_min,
              "varied_drawings": args.vary, "text_layers": args.text_layers,
              "init_from": _init_record(args.init_from),
              "init_parts": list(args.init_parts) if args.init_from else None},
    )
    logger.info("saved pipeline to %s after %d denoiser steps", args.out, steps)


if __name__ == "__main__":
    main()
