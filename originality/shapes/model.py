"""The shapes world's text-to-image model: a small Stable Diffusion built from configs.

Components are the standard diffusers / transformers classes, so the result is a
`StableDiffusionPipeline` that `save_pretrained` writes and `from_pretrained`
reads like any SD checkpoint. The text side is a word-level BERT tokenizer over
the caption vocabulary and a small BERT encoder trained from scratch (the paper
used BERT so that no outside visual knowledge leaks into the model).
"""

from __future__ import annotations

import itertools
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, DPMSolverMultistepScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import BertConfig, BertModel, BertTokenizer

from . import INITIAL_WORD, MARKER_FILE, SHAPES_TEMPLATES, is_shapes_model  # noqa: F401 - re-exported
from .renderer import COLOURS, IMAGE_SIZE, SHAPES, SIZES, TEXTURES

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def vocabulary() -> list[str]:
    words = {"and", INITIAL_WORD, *SHAPES, *COLOURS, *SIZES, *TEXTURES}
    for t in SHAPES_TEMPLATES:
        words.update(t.replace("{}", "").split())
    return SPECIAL_TOKENS + sorted(words)


@dataclass
class ShapesModelConfig:
    image_size: int = IMAGE_SIZE
    latent_channels: int = 4
    vae_channels: tuple[int, ...] = (16, 32, 64)  # 64 px -> 16x16 latents (factor 4)
    unet_channels: tuple[int, ...] = (32, 64, 128)
    text_hidden: int = 128
    text_layers: int = 2
    text_heads: int = 4
    max_length: int = 32  # longest caption with a template and 4 elements is ~26 tokens


def build_tokenizer(max_length: int = 32) -> BertTokenizer:
    with tempfile.TemporaryDirectory() as tmp:
        vocab = Path(tmp) / "vocab.txt"
        vocab.write_text("\n".join(vocabulary()) + "\n")
        return BertTokenizer(str(vocab), do_lower_case=True, model_max_length=max_length)


def build_components(config: ShapesModelConfig | None = None) -> dict:
    """Randomly initialised components (seed torch before calling for reproducibility)."""
    c = config or ShapesModelConfig()
    tokenizer = build_tokenizer(c.max_length)
    text_encoder = BertModel(
        BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=c.text_hidden,
            num_hidden_layers=c.text_layers,
            num_attention_heads=c.text_heads,
            intermediate_size=4 * c.text_hidden,
            max_position_embeddings=c.max_length,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        )
    )
    n = len(c.vae_channels)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=c.vae_channels,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        latent_channels=c.latent_channels,
        layers_per_block=1,
        norm_num_groups=16,
        sample_size=c.image_size,
        mid_block_add_attention=False,  # attention at 16x16 costs much and buys nothing here
    )
    down = ("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (len(c.unet_channels) - 1)
    up = tuple("CrossAttnUpBlock2D" if d.startswith("Cross") else "UpBlock2D" for d in reversed(down))
    unet = UNet2DConditionModel(
        sample_size=c.image_size // 2 ** (n - 1),
        in_channels=c.latent_channels,
        out_channels=c.latent_channels,
        block_out_channels=c.unet_channels,
        down_block_types=down,
        up_block_types=up,
        layers_per_block=1,
        cross_attention_dim=c.text_hidden,
        attention_head_dim=8,
        norm_num_groups=16,
    )
    scheduler = DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        steps_offset=1,
    )
    return dict(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, unet=unet, scheduler=scheduler)


def assemble(components: dict) -> StableDiffusionPipeline:
    """The pipeline to ship: training's noise schedule, sampled with DPM-Solver++ (good in 20 steps)."""
    parts = dict(components)
    parts["scheduler"] = DPMSolverMultistepScheduler.from_config(components["scheduler"].config)
    return StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def save(pipeline: StableDiffusionPipeline, path: str | os.PathLike, meta: dict | None = None) -> None:
    """save_pretrained plus the marker that tells the engine this folder is the shapes world."""
    path = Path(path)
    pipeline.save_pretrained(path, safe_serialization=True)
    info = {"world": "shapes", "initial_word": INITIAL_WORD, "templates": list(SHAPES_TEMPLATES)}
    info.update(meta or {})
    (path / MARKER_FILE).write_text(json.dumps(info, indent=2) + "\n")


def config_dict(config: ShapesModelConfig) -> dict:
    return asdict(config)


def colour_binding(tokenizer, text_encoder, shapes: tuple[str, str] = ("circle", "square")) -> dict[str, float]:
    """How much of a shape word's hidden state is explained by its own colour vs the other shape's.

    Over the 9 colour combinations of "big C1 full A and big C2 full B" (both orders), the
    between-group share of variance (R^2) of the shape words' states, grouped by their own
    colour and by the other element's colour. A text encoder that binds has own >> other; a
    bag of words has own ~ other, and the UNet then swaps colours between shapes.
    """

    def r2(states: torch.Tensor, labels: list[str]) -> float:
        """Share of the states' variance between the groups that `labels` define."""
        centre = states.mean(0)
        between = 0.0
        for group in set(labels):
            members = states[[label == group for label in labels]]
            between += len(members) * float(((members.mean(0) - centre) ** 2).sum())
        return between / float(((states - centre) ** 2).sum())

    colours = list(itertools.product(COLOURS, COLOURS))
    own, other = [], []
    for order in (shapes, shapes[::-1]):
        states = {0: [], 1: []}
        for c1, c2 in colours:
            text = f"big {c1} full {order[0]} and big {c2} full {order[1]}"
            ids = tokenizer(text, padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt").input_ids
            tokens = tokenizer.convert_ids_to_tokens(ids[0].tolist())
            with torch.no_grad():
                hidden = text_encoder(ids.to(text_encoder.device))[0][0].float().cpu()
            for k in (0, 1):
                states[k].append(hidden[tokens.index(order[k])])
        for k in (0, 1):
            x = torch.stack(states[k])
            own.append(r2(x, [c[k] for c in colours]))
            other.append(r2(x, [c[1 - k] for c in colours]))
    return {"own": sum(own) / len(own), "other": sum(other) / len(other)}
