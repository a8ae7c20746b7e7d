#!/usr/bin/env python
"""The most our inversion step can gain over diffusers' textual_inversion.py loop, in FLOPs.

Our step skips the baseline's per-step VAE encode (the query's latents are cached) and its
whole-vocabulary AdamW; both loops pay the same UNet forward + backward (gradients flow to
the text conditioning only) and text encoder. Counting FLOPs of those pieces with
`torch.utils.flop_counter` on the meta device (no weights, no memory, seconds to run) gives
the ratio baseline / ours that removing the VAE alone could reach:

    ceiling = (VAE encode + UNet fwd/bwd + text encoder) / (UNet fwd/bwd + text encoder)

The AdamW, dataset and row-restoring work of the baseline come on top (they are small and
not FLOPs-bound: see RESULTS.md's phase table for what they cost on the CPU).

    python benchmarks/flop_ceiling.py                                   # tiny SD of the tests
    python benchmarks/flop_ceiling.py --sd14-configs ../shared/sd-v1-4-configs
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from torch.utils.flop_counter import FlopCounterMode
from transformers import CLIPTextConfig, CLIPTextModel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def step_flops(unet, vae, text_encoder, batch: int) -> dict[str, float]:
    """GFLOPs of each piece of one inversion step at `batch`, on meta tensors."""
    for module in (unet, vae, text_encoder):
        module.requires_grad_(False)
    side = unet.config.sample_size
    resolution = side * 2 ** (len(vae.config.block_out_channels) - 1)
    length = text_encoder.config.max_position_embeddings
    latents = torch.randn(batch, unet.config.in_channels, side, side, device="meta")
    t = torch.zeros(batch, dtype=torch.long, device="meta")
    hidden = torch.randn(batch, length, text_encoder.config.hidden_size, device="meta", requires_grad=True)
    pixels = torch.randn(batch, 3, resolution, resolution, device="meta")
    ids = torch.zeros(batch, length, dtype=torch.long, device="meta")

    def unet_forward_backward():
        unet(latents, t, hidden).sample.sum().backward()

    return {
        "resolution": resolution,
        "unet_forward": flops(lambda: unet(latents, t, hidden.detach()).sample) / 1e9,
        "unet_forward_backward": flops(unet_forward_backward) / 1e9,
        "vae_encode": flops(lambda: vae.encode(pixels).latent_dist.mean) / 1e9,
        "text_encoder_forward": flops(lambda: text_encoder(ids)[0]) / 1e9,
    }


def ceiling(f: dict[str, float]) -> float:
    shared = f["unet_forward_backward"] + f["text_encoder_forward"]
    return (f["vae_encode"] + shared) / shared


def on_meta(unet_config: dict, vae_config: dict, text_config: CLIPTextConfig):
    with torch.device("meta"):
        return (UNet2DConditionModel.from_config(unet_config), AutoencoderKL.from_config(vae_config),
                CLIPTextModel(text_config))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sd14-configs", help="folder of SD 1.4 configs (unet/, vae/, text_encoder/)")
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()

    from originality.testing import tiny_sd_pipeline

    pipe = tiny_sd_pipeline(seed=0)
    models = {"tiny SD (tests)": on_meta(dict(pipe.unet.config), dict(pipe.vae.config), pipe.text_encoder.config)}
    if args.sd14_configs:
        d = Path(args.sd14_configs)
        models["SD 1.4 (configs)"] = on_meta(
            json.loads((d / "unet" / "config.json").read_text()), json.loads((d / "vae" / "config.json").read_text()),
            CLIPTextConfig(**json.loads((d / "text_encoder" / "config.json").read_text())))
    print(f"GFLOPs per inversion step at batch {args.batch_size}")
    print(f"{'model':18s} {'px':>4s} {'UNet fwd':>10s} {'UNet fwd+bwd':>13s} {'VAE enc':>10s} {'text fwd':>9s} {'ceiling':>8s}")
    for name, (unet, vae, text_encoder) in models.items():
        f = step_flops(unet, vae, text_encoder, args.batch_size)
        print(f"{name:18s} {f['resolution']:4d} {f['unet_forward']:10.1f} {f['unet_forward_backward']:13.1f} "
              f"{f['vae_encode']:10.1f} {f['text_encoder_forward']:9.2f} {ceiling(f):7.2f}x")


if __name__ == "__main__":
    main()
