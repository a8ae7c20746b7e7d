#!/usr/bin/env python
"""Speed benchmark of the originality analysis' inversion and generation.

Prints, in one run on one model / device / dtype / batch / number of tokens:

1. seconds per inversion step of our `originality.inversion.invert`;
2. seconds per step of a re-implementation of the training loop of diffusers'
   examples/textual_inversion/textual_inversion.py (Accelerator, per-item dataset work:
   image open / resize / flip / normalise and tokenisation, VAE encode every step,
   AdamW over the whole token-embedding matrix with weight decay 1e-2, original rows
   restored after every step), and the ratio baseline / ours. The two loops are
   timed in alternating blocks of steps so that load from other processes hits both
   alike;
3. seconds per reconstruction batch of `originality.analysis.generate`
   (`generation_batch_size` images at the preset's `num_inference_steps`);
4. with `--full`: wall time of a whole `iter_analyze` with the preset;
5. with `--sd14-configs` on CUDA (or `--project`): peak GPU memory and projected
   inversion + generation time of the paper and fast presets.

Examples:
    nice -n 19 python benchmarks/bench_inversion.py                        # tiny SD, CPU
    python benchmarks/bench_inversion.py --model assets/shapes-model --full
    python benchmarks/bench_inversion.py --sd14-configs shared/sd-v1-4-configs --device cuda --dtype fp16

The tiny SD and the configs-built SD 1.4 have random weights, so their DreamSim / CLIP
judges cannot be loaded offline: there `--full` uses a pixel-L1 distance and an
always-pass edit check (labelled as such); timings of the judges are not included.
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import gc
import json
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from originality.analysis import Decision, LengthDone, generate, iter_analyze, resolve_config  # noqa: E402
from originality.config import AnalysisConfig  # noqa: E402
from originality.device import DTYPES, frozen_dtype, pick_device  # noqa: E402
from originality.inversion import TokenSession, encode_query, initializer_id, invert  # noqa: E402
from originality.metrics import CheckResult  # noqa: E402
from originality.models import OriginalityModel  # noqa: E402
from originality.sd import WORLD as SD_WORLD  # noqa: E402


# ----------------------------------------------------------------------------- helpers


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def summary(times: list[float]) -> dict:
    return {
        "mean_s": statistics.fmean(times),
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "n": len(times),
    }


def synthetic_query(resolution: int, seed: int) -> Image.Image:
    """A seeded picture of a few coloured shapes on a light background."""
    rng = random.Random(seed)
    img = Image.new("RGB", (resolution, resolution), (235, 232, 225))
    draw = ImageDraw.Draw(img)
    for _ in range(4):
        x0, y0 = rng.randrange(0, resolution * 2 // 3), rng.randrange(0, resolution * 2 // 3)
        size = rng.randrange(resolution // 6, resolution // 3)
        colour = tuple(rng.randrange(0, 256) for _ in range(3))
        if rng.random() < 0.5:
            draw.ellipse([x0, y0, x0 + size, y0 + size], fill=colour)
        else:
            draw.rectangle([x0, y0, x0 + size, y0 + size], fill=colour)
    return img


@dataclass
class PixelL1Distance:
    """BENCHMARK STAND-IN (not a perceptual metric): mean |pixel difference| in [0, 1]."""

    name: str = field(init=False, default="pixel-l1 (benchmark stand-in)")

    def __call__(self, query, images):
        q = np.asarray(query.convert("RGB"), dtype=np.float32) / 255.0
        out = []
        for im in images:
            a = np.asarray(im.convert("RGB").resize(query.size), dtype=np.float32) / 255.0
            out.append(float(np.abs(a - q).mean()))
        return out


@dataclass
class AlwaysPassCheck:
    """BENCHMARK STAND-IN: passes every edit without looking at it (edits are still generated)."""

    name: str = field(init=False, default="always-pass (benchmark stand-in)")
    uses_edits: bool = field(init=False, default=True)

    def __call__(self, query, reconstructions, edits, *, subject, pass_fraction):
        return CheckResult(True, [1.0] * len(edits), "always-pass benchmark stand-in")


def stand_in_model(pipeline, name: str, threshold: float) -> OriginalityModel:
    return OriginalityModel(
        pipeline=pipeline, name=name, world=dataclasses.replace(SD_WORLD, threshold=threshold),
        distance=PixelL1Distance(), in_distribution=AlwaysPassCheck(),
    )


def build_model(args, device: torch.device, dtype: torch.dtype) -> tuple[OriginalityModel, str]:
    if args.sd14_configs:
        from originality.testing import sd14_pipeline_from_configs

        torch.manual_seed(args.seed)
        pipe = sd14_pipeline_from_configs(args.sd14_configs, dtype=dtype, device=str(device))
        return stand_in_model(pipe, "sd-v1.4 (random weights from configs)", args.full_threshold), "sd14-configs"
    if args.model:
        from originality.models import load_model

        return load_model(args.model, device=device, dtype=dtype), args.model
    from originality.testing import tiny_sd_pipeline

    pipe = tiny_sd_pipeline(seed=args.seed).to(device, dtype)
    return stand_in_model(pipe, "tiny-sd (random weights)", args.full_threshold), "tiny-sd"


# ------------------------------------------------------ diffusers textual_inversion.py loop


class TIDataset(torch.utils.data.Dataset):
    """The per-item work of diffusers' `TextualInversionDataset` (object templates,
    bicubic resize, no centre crop, random horizontal flip p=0.5): every item re-opens
    the image file, picks a template, tokenises it and transforms the pixels."""

    def __init__(self, data_root, tokenizer, templates, size, placeholder_token, repeats=100, flip_p=0.5):
        from torchvision import transforms

        self.tokenizer = tokenizer
        self.templates = list(templates)
        self.size = size
        self.placeholder_token = placeholder_token
        self.image_paths = [os.path.join(data_root, p) for p in sorted(os.listdir(data_root))]
        self.num_images = len(self.image_paths)
        self._length = self.num_images * repeats
        self.interpolation = Image.Resampling.BICUBIC
        self.flip_transform = transforms.RandomHorizontalFlip(p=flip_p)

    def __len__(self):
        return self._length

    def __getitem__(self, i):
        example = {}
        image = Image.open(self.image_paths[i % self.num_images])
        if image.mode != "RGB":
            image = image.convert("RGB")
        text = random.choice(self.templates).format(self.placeholder_token)
        example["input_ids"] = self.tokenizer(
            text, padding="max_length", truncation=True, max_length=self.tokenizer.model_max_length,
            return_tensors="pt",
        ).input_ids[0]
        img = np.array(image).astype(np.uint8)
        image = Image.fromarray(img)
        image = image.resize((self.size, self.size), resample=self.interpolation)
        image = self.flip_transform(image)
        image = np.array(image).astype(np.uint8)
        image = (image / 127.5 - 1.0).astype(np.float32)
        example["pixel_values"] = torch.from_numpy(image).permute(2, 0, 1)
        return example


class DiffusersTILoop:
    """One optimisation step of diffusers' examples/textual_inversion/textual_inversion.py
    per `step()` call, on the given (frozen, shared) UNet and VAE.

    Like the script: the text encoder is a float32 copy prepared by an `Accelerator`
    (mixed precision fp16/bf16 when the UNet is half precision, which autocasts the text
    encoder and, for fp16, uses a GradScaler), it is in train mode, only its token
    embedding is trainable, the optimiser is AdamW over the whole embedding matrix,
    the lr scheduler is "constant", and after every step all rows except the
    placeholders are copied back from the original matrix. Not reproduced: tqdm,
    trackers (tensorboard), checkpoint saving and validation, none of which run every step.
    """

    def __init__(self, *, text_encoder_cpu, tokenizer, vae, unet, scheduler_config, image_dir, resolution,
                 templates, num_vectors, initializer_token_id, batch_size, learning_rate, device, seed):
        from accelerate import Accelerator
        from accelerate.utils import set_seed
        from diffusers import DDPMScheduler
        from diffusers.optimization import get_scheduler

        weight_dtype = unet.dtype
        mixed = {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(weight_dtype, "no")
        self.accelerator = Accelerator(gradient_accumulation_steps=1, mixed_precision=mixed,
                                       cpu=device.type == "cpu")
        set_seed(seed)
        self.tokenizer = tokenizer
        self.noise_scheduler = DDPMScheduler.from_config(scheduler_config)
        text_encoder = text_encoder_cpu

        placeholder_token = "<ti-baseline>"
        placeholder_tokens = [placeholder_token] + [f"{placeholder_token}_{i}" for i in range(1, num_vectors)]
        if tokenizer.add_tokens(placeholder_tokens) != num_vectors:
            raise ValueError("baseline placeholder tokens clash with the vocabulary")
        self.placeholder_token_ids = tokenizer.convert_tokens_to_ids(placeholder_tokens)
        text_encoder.resize_token_embeddings(len(tokenizer))
        token_embeds = text_encoder.get_input_embeddings().weight.data
        with torch.no_grad():
            for token_id in self.placeholder_token_ids:
                token_embeds[token_id] = token_embeds[initializer_token_id].clone()

        vae.requires_grad_(False)
        unet.requires_grad_(False)
        # transformers 5 flattened CLIPTextModel (no `.text_model`); same modules either way
        text_model = getattr(text_encoder, "text_model", text_encoder)
        text_model.encoder.requires_grad_(False)
        text_model.final_layer_norm.requires_grad_(False)
        text_model.embeddings.position_embedding.requires_grad_(False)

        optimizer = torch.optim.AdamW(
            text_encoder.get_input_embeddings().parameters(), lr=learning_rate, betas=(0.9, 0.999),
            weight_decay=1e-2, eps=1e-8,
        )
        # The script's default repeats=100, rounded up to a multiple of the batch size so that
        # every batch is full (with 100 items and batch 8, every 13th batch would hold 4).
        dataset = TIDataset(
            image_dir, tokenizer, templates, resolution,
            placeholder_token=" ".join(tokenizer.convert_ids_to_tokens(self.placeholder_token_ids)),
            repeats=batch_size * math.ceil(100 / batch_size),
        )
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=0)
        lr_scheduler = get_scheduler("constant", optimizer=optimizer, num_warmup_steps=500,
                                     num_training_steps=5000)
        (self.text_encoder, self.optimizer, self.loader, self.lr_scheduler) = self.accelerator.prepare(
            text_encoder, optimizer, loader, lr_scheduler)
        self.weight_dtype = weight_dtype
        # unet / vae are already on the device in weight_dtype (the script's .to(device, weight_dtype))
        self.vae, self.unet = vae, unet
        self.orig_embeds_params = (
            self.accelerator.unwrap_model(self.text_encoder).get_input_embeddings().weight.data.clone())
        self.global_step = 0
        self._batches = None

    def _next_batch(self):
        while True:
            if self._batches is None:
                self.text_encoder.train()  # start of an epoch
                self._batches = iter(self.loader)
            try:
                return next(self._batches)
            except StopIteration:
                self._batches = None

    def step(self) -> float:
        acc, vae, unet, noise_scheduler = self.accelerator, self.vae, self.unet, self.noise_scheduler
        batch = self._next_batch()
        with acc.accumulate(self.text_encoder):
            latents = vae.encode(batch["pixel_values"].to(dtype=self.weight_dtype)).latent_dist.sample().detach()
            latents = latents * vae.config.scaling_factor
            noise = torch.randn_like(latents)
            bsz = latents.shape[0]
            timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (bsz,), device=latents.device)
            timesteps = timesteps.long()
            noisy_latents = noise_scheduler.add_noise(latents, noise, timesteps)
            encoder_hidden_states = self.text_encoder(batch["input_ids"])[0].to(dtype=self.weight_dtype)
            model_pred = unet(noisy_latents, timesteps, encoder_hidden_states).sample
            if noise_scheduler.config.prediction_type == "epsilon":
                target = noise
            elif noise_scheduler.config.prediction_type == "v_prediction":
                target = noise_scheduler.get_velocity(latents, noise, timesteps)
            else:
                raise ValueError(noise_scheduler.config.prediction_type)
            loss = F.mse_loss(model_pred.float(), target.float(), reduction="mean")
            acc.backward(loss)
            self.optimizer.step()
            self.lr_scheduler.step()
            self.optimizer.zero_grad()
            index_no_updates = torch.ones((len(self.tokenizer),), dtype=torch.bool)
            index_no_updates[min(self.placeholder_token_ids): max(self.placeholder_token_ids) + 1] = False
            with torch.no_grad():
                acc.unwrap_model(self.text_encoder).get_input_embeddings().weight[
                    index_no_updates] = self.orig_embeds_params[index_no_updates]
        if acc.sync_gradients:
            self.global_step += 1
        logs = {"loss": loss.detach().item(), "lr": self.lr_scheduler.get_last_lr()[0]}
        return logs["loss"]


# ------------------------------------------------------------------------------ timing


def time_steps(step_fn, n: int, device: torch.device) -> list[float]:
    out = []
    for _ in range(n):
        sync(device)
        t0 = time.perf_counter()
        step_fn()
        sync(device)
        out.append(time.perf_counter() - t0)
    return out


def peak_during(fn, device: torch.device) -> dict | None:
    """Run fn; return CUDA memory figures (GiB) for it, or None off CUDA."""
    if device.type != "cuda":
        fn()
        return None
    sync(device)
    resident = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    sync(device)
    peak = torch.cuda.max_memory_allocated(device)
    return {"peak_allocated_gib": peak / 2**30, "resident_before_gib": resident / 2**30,
            "peak_above_resident_gib": (peak - resident) / 2**30}


def our_stepper(pipe, mean, std, placeholder, templates, *, total_steps, batch_size, learning_rate, seed):
    gen = invert(pipe, mean, std, placeholder, templates, steps=total_steps, batch_size=batch_size,
                 learning_rate=learning_rate, seed=seed)
    return gen, (lambda: next(gen).loss)


def time_generation(pipe, prompt, cfg, resolution, n_batches, device, seed) -> list[float]:
    gbs = cfg.generation_batch_size
    generate(pipe, prompt, gbs, seed=seed, config=cfg.replace(num_inference_steps=2), resolution=resolution)
    times = []
    for b in range(n_batches):
        sync(device)
        t0 = time.perf_counter()
        generate(pipe, prompt, gbs, seed=seed + 100 * b, config=cfg, resolution=resolution)
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


# -------------------------------------------------------------------------------- main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", help="model folder or Hub id, loaded with originality.models.load_model")
    src.add_argument("--sd14-configs", help="folder of SD 1.4 configs: full-size SD 1.4 with random weights")
    p.add_argument("--device", default=None, help="cpu / cuda (default: CUDA when present)")
    p.add_argument("--dtype", default=None, choices=sorted(DTYPES), help="frozen-module dtype "
                   "(default: fp16 on CUDA, fp32 on CPU)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=20, help="timed inversion steps per method")
    p.add_argument("--warmup", type=int, default=3, help="untimed warm-up steps per method")
    p.add_argument("--block", type=int, default=2, help="steps per alternating timing block")
    p.add_argument("--num-tokens", type=int, default=3)
    p.add_argument("--preset", default="fast", choices=["fast", "paper"])
    p.add_argument("--gen-batches", type=int, default=2, help="timed generation batches")
    p.add_argument("--full", action="store_true", help="also time a whole iter_analyze with the preset")
    p.add_argument("--full-threshold", type=float, default=0.0,
                   help="stand-in models only: pixel-L1 threshold for --full (0: no length passes, "
                        "so all max_tokens lengths run: the worst case)")
    p.add_argument("--project", action="store_true", help="preset projections also off --sd14-configs/CUDA")
    p.add_argument("--image", help="query image (default: a synthetic seeded image)")
    p.add_argument("--source-size", type=int, default=None,
                   help="side of the image file the baseline's dataset reads every step "
                        "(default: the model resolution, i.e. no real resize: favours the baseline)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-baseline", action="store_true")
    p.add_argument("--json", help="write all figures to this JSON file")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    device = pick_device(args.device)
    dtype = frozen_dtype(device, args.dtype)
    model, model_label = build_model(args, device, dtype)
    pipe = model.pipeline
    config = resolve_config(AnalysisConfig.preset(args.preset), model)
    resolution = model.resolution
    m = args.num_tokens
    total = args.warmup + args.steps
    res: dict = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python benchmarks/bench_inversion.py"] + (argv if argv is not None else sys.argv[1:])),
        "model": model_label, "model_name": model.name, "device": str(device), "dtype": str(dtype),
        "resolution": resolution, "batch_size": args.batch_size, "num_tokens": m, "timed_steps": args.steps,
        "warmup_steps": args.warmup, "preset": args.preset, "baseline_source_size": args.source_size,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": platform.python_version(), "cpu_count": os.cpu_count(),
    }
    if device.type == "cuda":
        res["gpu"] = torch.cuda.get_device_name(device)
    print(f"model {model_label} ({model.name}) on {device} {dtype}, {resolution}px, batch {args.batch_size}, "
          f"{m} tokens, torch threads {torch.get_num_threads()}")

    query = Image.open(args.image).convert("RGB").resize((resolution, resolution)) if args.image \
        else synthetic_query(resolution, args.seed)
    tokenizer = pipe.tokenizer
    init_id = initializer_id(tokenizer, model.initial_word(config.domain))
    templates = model.templates(config.domain)

    # The baseline's own float32 copies of the text encoder and tokenizer, taken before
    # our session adds its tokens (kept on the CPU until the baseline is built).
    baseline_te_cpu = None if args.skip_baseline else copy.deepcopy(pipe.text_encoder).to("cpu", torch.float32)
    baseline_tok = None if args.skip_baseline else copy.deepcopy(tokenizer)

    with tempfile.TemporaryDirectory() as tmp, TokenSession(pipe) as session:
        spipe = session.pipeline
        # ---- ours: one-time query encoding, then per-step
        sync(device)
        t0 = time.perf_counter()
        mean, std = encode_query(spipe, query)
        sync(device)
        res["ours_encode_query_s"] = time.perf_counter() - t0
        placeholder = session.add("<bench>", m, init_id)
        ours_gen, ours_step = our_stepper(spipe, mean, std, placeholder, templates, total_steps=total,
                                          batch_size=args.batch_size, learning_rate=config.learning_rate,
                                          seed=args.seed)
        try:
            _time_both(args, res, device, ours_step, baseline_te_cpu, baseline_tok, pipe, query, tmp, init_id,
                       templates, config, resolution, m)
        finally:
            ours_gen.close()  # restores the text encoder's embedding module
        baseline_te_cpu = baseline_tok = None  # free the baseline's text encoder copy (moved to the device)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()

        # ---- generation
        prompt = config.reconstruction_prompt.format(placeholder.text)
        gen_t = time_generation(spipe, prompt, config, resolution, args.gen_batches, device, args.seed)
        res["generation_batch"] = {**summary(gen_t), "images_per_batch": config.generation_batch_size,
                                   "num_inference_steps": config.num_inference_steps,
                                   "guidance_scale": config.guidance_scale}
        print(f"[3] generate: {res['generation_batch']['mean_s']:.3f} s per batch of "
              f"{config.generation_batch_size} images, {config.num_inference_steps} steps, "
              f"guidance {config.guidance_scale} (preset {args.preset}, n={len(gen_t)})")

        # ---- projections
        if (args.sd14_configs and device.type == "cuda") or args.project:
            res["projections"] = project(args, model, spipe, mean, std, placeholder, templates, device,
                                         measured_step={args.batch_size: res["ours_step"]["mean_s"]},
                                         measured_gen={(config.num_inference_steps,
                                                        config.generation_batch_size): gen_t})

    # ---- full analysis
    if args.full:
        res["full"] = full_analysis(args, model, query, device)

    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=2))
        print(f"wrote {args.json}")
    return res


def _time_both(args, res, device, ours_step, baseline_te_cpu, baseline_tok, pipe, query, tmp, init_id,
               templates, config, resolution, m) -> None:
    """Warm-up (with CUDA peak memory) and alternating timed blocks of ours and the baseline."""
    mem = peak_during(lambda: time_steps(ours_step, args.warmup, device), device)
    if mem:
        res["ours_memory"] = mem

    base = None
    if not args.skip_baseline:
        img_dir = Path(tmp) / "train"
        img_dir.mkdir()
        # The training image on disk. At model resolution (default) the dataset's resize is a
        # no-op copy, which favours the baseline; --source-size N stores an NxN file instead,
        # as a user's photo would be, so that every item pays for decoding and resizing it.
        src = args.source_size or resolution
        (query if src == resolution else query.resize((src, src), Image.Resampling.BICUBIC)).save(
            img_dir / "query.png")
        base = DiffusersTILoop(
            text_encoder_cpu=baseline_te_cpu, tokenizer=baseline_tok, vae=pipe.vae, unet=pipe.unet,
            scheduler_config=pipe.scheduler.config, image_dir=img_dir, resolution=resolution,
            templates=templates, num_vectors=m, initializer_token_id=init_id, batch_size=args.batch_size,
            learning_rate=config.learning_rate, device=device, seed=args.seed,
        )
        mem = peak_during(lambda: time_steps(base.step, args.warmup, device), device)
        if mem:
            res["baseline_memory"] = mem

    # ---- alternating timed blocks
    ours_t: list[float] = []
    base_t: list[float] = []
    done = 0
    while done < args.steps:
        k = min(args.block, args.steps - done)
        ours_t += time_steps(ours_step, k, device)
        if base is not None:
            base_t += time_steps(base.step, k, device)
        done += k
    res["ours_step"] = summary(ours_t)
    print(f"[1] ours     invert step: {res['ours_step']['mean_s']:.4f} s/step mean, "
          f"{res['ours_step']['median_s']:.4f} median (n={len(ours_t)}; + {res['ours_encode_query_s']:.4f} s "
          f"once per analysis for encode_query)")
    if base is not None:
        res["baseline_step"] = summary(base_t)
        res["ratio_baseline_over_ours_mean"] = res["baseline_step"]["mean_s"] / res["ours_step"]["mean_s"]
        res["ratio_baseline_over_ours_median"] = (res["baseline_step"]["median_s"]
                                                  / res["ours_step"]["median_s"])
        print(f"[2] diffusers textual_inversion.py step: {res['baseline_step']['mean_s']:.4f} s/step mean, "
              f"{res['baseline_step']['median_s']:.4f} median (n={len(base_t)})")
        print(f"    ratio baseline/ours: {res['ratio_baseline_over_ours_mean']:.2f}x (mean), "
              f"{res['ratio_baseline_over_ours_median']:.2f}x (median)")
        del base
    for key in ("ours_memory", "baseline_memory"):
        if key in res:
            mm = res[key]
            print(f"    {key}: peak {mm['peak_allocated_gib']:.2f} GiB allocated "
                  f"({mm['peak_above_resident_gib']:.2f} GiB above the {mm['resident_before_gib']:.2f} resident)")


def project(args, model, spipe, mean, std, placeholder, templates, device, measured_step, measured_gen) -> dict:
    """PROJECTIONS, not measurements: per length = our s/step (at the preset's batch) * steps
    + s per generation batch (at the preset's sampler steps) * batches (reconstructions + edits)."""
    out = {"note": "PROJECTION = measured s/step * steps + measured s/batch * batches; "
                   "excludes the distance / edit-check models and encode_query"}
    print("[5] PROJECTIONS (measured per-step and per-batch times x preset counts; judges not included):")
    for name in ("fast", "paper"):
        cfg = resolve_config(AnalysisConfig.preset(name), model)
        if cfg.batch_size not in measured_step:
            n = max(5, args.steps // 2)
            gen, step = our_stepper(spipe, mean, std, placeholder, templates, total_steps=args.warmup + n,
                                    batch_size=cfg.batch_size, learning_rate=cfg.learning_rate, seed=args.seed)
            mem = peak_during(lambda: time_steps(step, args.warmup, device), device)
            t = time_steps(step, n, device)
            gen.close()
            measured_step[cfg.batch_size] = statistics.fmean(t)
            if mem:
                out[f"ours_memory_batch{cfg.batch_size}"] = mem
        key = (cfg.num_inference_steps, cfg.generation_batch_size)
        if key not in measured_gen:
            prompt = cfg.reconstruction_prompt.format(placeholder.text)
            measured_gen[key] = time_generation(spipe, prompt, cfg, model.resolution, args.gen_batches, device,
                                                args.seed)
        per_step = measured_step[cfg.batch_size]
        per_batch = statistics.fmean(measured_gen[key])
        gbs = cfg.generation_batch_size
        batches = math.ceil(cfg.num_reconstructions / gbs)
        if model.in_distribution.uses_edits:
            batches += math.ceil(cfg.num_edits / gbs)
        inv = per_step * cfg.steps
        gen_s = per_batch * batches
        per_len = inv + gen_s
        out[name] = {"s_per_step": per_step, "batch_size": cfg.batch_size, "steps": cfg.steps,
                     "s_per_generation_batch": per_batch, "num_inference_steps": cfg.num_inference_steps,
                     "generation_batches_per_length": batches, "inversion_s_per_length": inv,
                     "generation_s_per_length": gen_s, "projected_s_per_length": per_len,
                     "projected_s_1_length": per_len, "projected_s_max_lengths": per_len * cfg.max_tokens,
                     "max_tokens": cfg.max_tokens}
        print(f"    {name:5s}: {per_step:.3f} s/step x {cfg.steps} steps (batch {cfg.batch_size}) = {inv:.1f} s"
              f" + {per_batch:.2f} s/batch x {batches} batches = {gen_s:.1f} s -> PROJECTED {per_len:.1f} s "
              f"per length; 1 length {per_len:.1f} s, {cfg.max_tokens} lengths {per_len * cfg.max_tokens:.1f} s")
    return out


def full_analysis(args, model, query, device) -> dict:
    cfg = AnalysisConfig.preset(args.preset)
    print(f"[4] full iter_analyze, preset {args.preset}; distance {model.distance.name}, "
          f"check {model.in_distribution.name} ...", flush=True)
    seed_everything(args.seed)
    sync(device)
    t0 = time.perf_counter()
    report = None
    lengths = []
    for event in iter_analyze(query, cfg, model):
        if isinstance(event, LengthDone):
            r = event.result
            lengths.append({"num_tokens": r.num_tokens, "timings": dict(r.timings),
                            "mean_distance": sum(r.distances) / len(r.distances), "passed": r.passed})
            print(f"    m={r.num_tokens}: " + ", ".join(f"{k} {v:.1f} s" for k, v in r.timings.items()), flush=True)
        elif isinstance(event, Decision):
            report = event.report
    sync(device)
    wall = time.perf_counter() - t0
    out = {"wall_s": wall, "preset": args.preset, "distance": model.distance.name,
           "in_distribution": model.in_distribution.name, "lengths_run": len(lengths), "lengths": lengths,
           "score": report.score if report else None}
    print(f"    full analysis wall time {wall:.1f} s, {len(lengths)} lengths, score {out['score']}")
    return out


if __name__ == "__main__":
    main()
