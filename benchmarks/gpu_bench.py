#!/usr/bin/env python
"""GPU benchmark of the Stable Diffusion path in one command; prints JSON.

    python benchmarks/gpu_bench.py                          # any CUDA machine: SD-1.4 shape, bf16 and fp16
    python benchmarks/gpu_bench.py --model CompVis/stable-diffusion-v1-4   # real weights when cached
    python benchmarks/gpu_bench.py --update-costs           # also write originality/gpu_costs.json
    python benchmarks/gpu_bench.py --device cpu --tiny      # smoke test of this script on a CPU

Per dtype (bfloat16 where the GPU supports it, float16 with the inversion's loss scale): seconds
per inversion step of `originality.inversion.invert` at batch 8 and 20 (the fast and paper
presets), peak GPU memory of each, seconds per generated image and denoising step of
`originality.analysis.generate` (guidance 7.5, so two UNet passes per image step), and the
projected GPU time of one token length with the fast and paper presets. The model is the SD v1.4
architecture from ../shared/sd-v1-4-configs with random weights (timings do not depend on the
weights) unless --model names real ones. The text encoder runs in float32 as models.load_model
sets it up.

--update-costs writes the default dtype's measured rates (s per inversion sample at batch 8, s per
image step) into originality/gpu_costs.json with the GPU's name, dtype and date as `source`; the
app's ZeroGPU reservation (app.gpu_seconds) reads them from there. The fixed overhead is kept.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from originality import gpu_costs  # noqa: E402
from originality.analysis import generate  # noqa: E402
from originality.config import PRESETS  # noqa: E402
from originality.device import frozen_dtype  # noqa: E402
from originality.inversion import TokenSession, encode_query, initializer_id, invert  # noqa: E402
from originality.templates import OBJECT_TEMPLATES  # noqa: E402
from originality.testing import sd14_pipeline_from_configs, tiny_sd_pipeline  # noqa: E402

DEFAULT_CONFIGS = next((p for p in (ROOT.parent / "shared" / "sd-v1-4-configs",
                                    ROOT.parent.parent / "shared" / "sd-v1-4-configs")
                        if (p / "unet" / "config.json").is_file()), ROOT.parent / "shared" / "sd-v1-4-configs")


def build(args, dtype: torch.dtype):
    if args.tiny:
        pipe = tiny_sd_pipeline(seed=0).to(args.device)
        pipe.unet.to(dtype)
        pipe.vae.to(dtype)
        return pipe
    if args.model:
        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline.from_pretrained(args.model, dtype=dtype, safety_checker=None,
                                                       requires_safety_checker=False).to(args.device)
        pipe.set_progress_bar_config(disable=True)
    else:
        pipe = sd14_pipeline_from_configs(args.configs, dtype=dtype, device=args.device)
    pipe.text_encoder.to(torch.float32)  # as models._load_pipeline
    return pipe


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_inversion(pipe, args, batch: int) -> dict:
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    query = Image.fromarray(np.random.RandomState(0).randint(0, 255, (size, size, 3)).astype(np.uint8))
    mean, std = encode_query(pipe, query)
    cuda = args.device.startswith("cuda")
    with TokenSession(pipe) as session:
        ph = session.add("<s1>", 1, initializer_id(session.tokenizer, "house"))
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        gen = invert(session.pipeline, mean, std, ph, OBJECT_TEMPLATES, steps=args.warmup + args.steps,
                     batch_size=batch, learning_rate=5e-3, seed=0)
        for _ in range(args.warmup):
            next(gen)
        sync(args.device)
        t0 = time.perf_counter()
        for _ in gen:
            pass
        sync(args.device)
        seconds = (time.perf_counter() - t0) / args.steps
    out = {"batch": batch, "s_per_step": seconds, "s_per_sample": seconds / batch}
    if cuda:
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def time_generation(pipe, args) -> dict:
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    config = PRESETS["fast"].replace(num_inference_steps=args.inference_steps, guidance_scale=7.5,
                                     generation_batch_size=args.images)
    generate(pipe, "a photo of a house", args.images, seed=0, config=config.replace(num_inference_steps=1),
             resolution=size)  # warm-up
    sync(args.device)
    t0 = time.perf_counter()
    generate(pipe, "a photo of a house", args.images, seed=0, config=config, resolution=size)
    sync(args.device)
    seconds = time.perf_counter() - t0
    return {"images": args.images, "inference_steps": args.inference_steps, "s_total": seconds,
            "s_per_image_step": seconds / (args.images * args.inference_steps)}


def projected(inv: dict[int, dict], gen: dict, overhead: float) -> dict:
    """One token length's GPU seconds at most with each preset (`gpu_costs.length_work`: every restart, selection
    images, the most reconstructions), from the measured rates (a preset with early stopping at its step cap:
    an upper bound, marked "at_step_cap")."""
    out = {}
    for name, preset in PRESETS.items():
        step = inv.get(preset.batch_size, {}).get("s_per_step")
        if step is None:  # a batch not measured: scale the closest per-sample rate
            step = min(inv.values(), key=lambda r: abs(r["batch"] - preset.batch_size))["s_per_sample"] \
                * preset.batch_size
        steps, images = gpu_costs.length_work(preset)
        out[name] = {"inversion_s": step * steps,
                     "generation_s": gen["s_per_image_step"] * images * preset.num_inference_steps,
                     "overhead_s": overhead}
        out[name]["per_length_s"] = sum(out[name].values())
        if preset.early_stop_every:
            out[name]["at_step_cap"] = True
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    ap.add_argument("--tiny", action="store_true", help="the tiny SD instead of the SD-1.4 shape (smoke test)")
    ap.add_argument("--model", default=None, help="real weights (Hub id or folder) instead of random ones")
    ap.add_argument("--configs", default=str(DEFAULT_CONFIGS), help="SD v1.4 config folder (default: %(default)s)")
    ap.add_argument("--dtypes", nargs="+", default=None, help="default: bfloat16 (where supported) and float16")
    ap.add_argument("--batches", nargs="+", type=int, default=[8, 20], help="inversion batches (default: 8 20)")
    ap.add_argument("--steps", type=int, default=10, help="timed inversion steps per batch (default: %(default)s)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (default: %(default)s)")
    ap.add_argument("--images", type=int, default=8, help="images per timed generation (default: %(default)s)")
    ap.add_argument("--inference-steps", type=int, default=20, help="denoising steps (default: %(default)s)")
    ap.add_argument("--update-costs", action="store_true",
                    help="write the default dtype's rates into originality/gpu_costs.json")
    args = ap.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        from originality.device import gpu_problem

        print(f"error: no usable CUDA GPU ({gpu_problem() or 'torch.cuda.is_available() is False'}); "
              "use --device cpu --tiny for a smoke test", file=sys.stderr)
        return 2
    cuda = args.device.startswith("cuda")
    default = frozen_dtype(torch.device(args.device))
    if args.dtypes:
        dtypes = [getattr(torch, d) for d in args.dtypes]
    elif cuda:
        dtypes = ([torch.bfloat16] if torch.cuda.is_bf16_supported() else []) + [torch.float16]
    else:
        dtypes = [torch.float32]
    costs = gpu_costs.load_costs()
    result = {"device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
              "model": "tiny" if args.tiny else (args.model or f"SD v1.4 shape, random weights ({args.configs})"),
              "date": _dt.date.today().isoformat(), "default_dtype": str(default).replace("torch.", ""), "runs": {}}
    for dtype in dtypes:
        name = str(dtype).replace("torch.", "")
        pipe = build(args, dtype)
        inv = {b: time_inversion(pipe, args, b) for b in args.batches}
        gen = time_generation(pipe, args)
        if cuda:
            gen["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        result["runs"][name] = {"inversion": list(inv.values()), "generation": gen,
                                "projected": projected(inv, gen, costs["overhead_s"])}
        print(f"{name}: " + ", ".join(f"batch {b} {r['s_per_step']:.3f} s/step" for b, r in inv.items())
              + f"; generation {gen['s_per_image_step']:.4f} s/image-step", file=sys.stderr, flush=True)
        del pipe
        if cuda:
            torch.cuda.empty_cache()
    if args.update_costs:
        name = str(default).replace("torch.", "") if str(default).replace("torch.", "") in result["runs"] \
            else next(iter(result["runs"]))
        run = result["runs"][name]
        rate = min(run["inversion"], key=lambda r: abs(r["batch"] - PRESETS["fast"].batch_size))
        # the overhead (and what it covers) is not measured here: kept as it was
        new = {**costs, "s_per_sample": round(rate["s_per_sample"], 5),
               "s_per_image_step": round(run["generation"]["s_per_image_step"], 5),
               "source": f"measured by benchmarks/gpu_bench.py on {result['device']}, {name}, {result['model']}, "
                         f"{result['date']} (overhead_s: {costs['source'].split(':')[0]})"}
        gpu_costs.COSTS_FILE.write_text(json.dumps(new, indent=2) + "\n")
        result["updated_costs"] = new
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
