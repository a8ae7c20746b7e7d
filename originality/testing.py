"""Stable-Diffusion-architecture pipelines built from configs, for tests and benchmarks.

No weights are downloaded: components are randomly initialised (seeded). The CLIP
tokenizer is the real one, built from the BPE vocabulary that ships inside the
`open_clip` package (installed with `dreamsim`).
"""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from pathlib import Path

import torch
from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer


@lru_cache(maxsize=1)
def clip_bpe_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's real BPE vocabulary (49408 tokens) and merges, rebuilt from the
    `bpe_simple_vocab_16e6.txt.gz` that ships inside `open_clip`, the same way
    CLIP's own `SimpleTokenizer` builds them."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe  # noqa: PLC0415 - start-up: open_clip only when used

    with gzip.open(default_bpe(), "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    byte_chars = list(bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(tokens)}, merges


def clip_tokenizer(model_max_length: int = 77) -> CLIPTokenizer:
    """The real CLIP ViT-L/14 tokenizer (49408 tokens), built offline."""
    vocab, merges = clip_bpe_vocab()
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length, pad_token="<|endoftext|>")


def tiny_sd_pipeline(seed: int = 0, text_hidden: int = 32, unet_channels=(32, 64), latent_size: int = 16,
                     model_max_length: int = 77) -> StableDiffusionPipeline:
    """A tiny SD 1.x-shaped pipeline on the CPU: 16x16 latents, 64x64 px images."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=latent_size, in_channels=4, out_channels=4, block_out_channels=unet_channels,
        layers_per_block=1, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=text_hidden,
        attention_head_dim=8, norm_num_groups=16,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=(16, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        latent_channels=4, layers_per_block=1, norm_num_groups=8, sample_size=latent_size * 4,
        mid_block_add_attention=False,
    )
    tokenizer = clip_tokenizer(model_max_length)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=text_hidden, intermediate_size=2 * text_hidden,
        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=model_max_length,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    ))
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def drain(generator) -> tuple[list, object]:
    """Run a generator to its end: (the events it yielded, its return value)."""
    events = []
    while True:
        try:
            events.append(next(generator))
        except StopIteration as stop:
            return events, stop.value


def sd14_pipeline_from_configs(config_dir: str | Path, dtype: torch.dtype = torch.float16,
                               device: str = "cuda") -> StableDiffusionPipeline:
    """Full-size SD v1.4 architecture with random weights (for speed benchmarks only)."""
    config_dir = Path(config_dir)
    unet = UNet2DConditionModel.from_config(json.loads((config_dir / "unet" / "config.json").read_text()))
    vae = AutoencoderKL.from_config(json.loads((config_dir / "vae" / "config.json").read_text()))
    text_encoder = CLIPTextModel(CLIPTextConfig(**json.loads((config_dir / "text_encoder" / "config.json").read_text())))
    scheduler = PNDMScheduler.from_config(json.loads((config_dir / "scheduler" / "scheduler_config.json").read_text()))
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=clip_tokenizer(), unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device, dtype)
