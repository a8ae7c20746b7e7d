"""Offline stand-ins for the pretrained models the metrics load.

No weights can be downloaded in the test environment, so these helpers write
randomly initialised (seeded) models in exactly the on-disk layout the real
libraries read. The metrics then go through the real loading code paths
(`dreamsim.dreamsim(...)`, `CLIPModel.from_pretrained(...)`), only the numbers in
the weight files are fake.
"""

from __future__ import annotations

from pathlib import Path

import torch

from originality.testing import clip_bpe_vocab

# The cheapest DreamSim variant that loads without any network: a single
# CLIP ViT-B/32 backbone stored as a plain state dict. ("dino_vitb16" and the
# default "ensemble" build their DINO backbone through torch.hub.load of the
# facebookresearch/dino GitHub repo, which needs the network on first use.)
OFFLINE_DREAMSIM_TYPE = "clip_vitb32"

# LoRA settings of the released DreamSim checkpoints (r, alpha, dropout, bias,
# target modules); only the keys dreamsim reads from adapter_config.json matter.
_LORA = {"r": 16, "lora_alpha": 0.5, "lora_dropout": 0.3, "bias": "none", "target_modules": ["qkv"]}


def _clip_backbone_state(patch_size: int) -> dict[str, torch.Tensor]:
    """State dict of `{clip,open_clip}_vitb{patch}_pretrain.pth.tar`: dreamsim's own ViT-B
    (with the library's random init) with `pos_drop` replaced by a LayerNorm (CLIP's
    ln_pre, as `load_clip_as_dino` expects) plus the 768x512 projection `proj`."""
    from dreamsim.feature_extraction.vision_transformer import vit_base

    vit = vit_base(patch_size=patch_size)
    vit.pos_drop = torch.nn.LayerNorm(vit.embed_dim)
    state = dict(vit.state_dict())
    state["proj"] = torch.randn(vit.embed_dim, 512) * vit.embed_dim**-0.5
    return state


def make_dreamsim_cache(path: str | Path, dreamsim_type: str = OFFLINE_DREAMSIM_TYPE, seed: int = 0) -> Path:
    """Write a DreamSim cache folder with random weights that
    `dreamsim.dreamsim(pretrained=True, cache_dir=path, dreamsim_type=dreamsim_type)` loads offline.

    Layout (as `dreamsim.model.download_weights` checks and `dreamsim()` reads):
        <path>/<type>_pretrain.pth.tar        {"state_dict": {... ViT-B/32 ..., "proj": 768x512}}
        <path>/<type>_single_lora/adapter_config.json
        <path>/<type>_single_lora/adapter_model.safetensors
    """
    if dreamsim_type == "ensemble":
        return make_ensemble_cache(path, seed)
    supported = {"clip_vitb32": 32, "open_clip_vitb32": 32}
    if dreamsim_type not in supported:
        raise ValueError(f"offline DreamSim cache supports {sorted(supported)}, not {dreamsim_type!r} "
                         "(the other variants fetch their backbone through torch.hub / the network)")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):  # seeded, without touching the caller's RNG
        torch.manual_seed(seed)
        _write_dreamsim_files(path, dreamsim_type, supported[dreamsim_type])
    return path


# DINO's torch.hub repository as dreamsim fetches it: `torch.hub.load("facebookresearch/dino:main", "dino_vitb16")`
# with the hub dir set to the DreamSim cache reads <cache>/facebookresearch_dino_main/hubconf.py, whose
# dino_vitb16(pretrained=True) builds DINO's ViT-B/16 and loads its weights (strict) through
# torch.hub.load_state_dict_from_url, which finds <cache>/checkpoints/dino_vitbase16_pretrain.pth and downloads
# nothing. The stand-in keeps that contract (same URL, same checkpoint file) with dreamsim's copy of DINO's
# vision_transformer.py and random weights.
DINO_HUB_REPO = "facebookresearch_dino_main"
DINO_CHECKPOINT = "dino_vitbase16_pretrain.pth"
_DINO_HUBCONF = f"""\
import torch
from dreamsim.feature_extraction.vision_transformer import vit_base

dependencies = ["torch", "torchvision"]


def dino_vitb16(pretrained=True, **kwargs):
    model = vit_base(patch_size=16, num_classes=0, **kwargs)
    if pretrained:
        state_dict = torch.hub.load_state_dict_from_url(
            url="https://dl.fbaipublicfiles.com/dino/dino_vitbase16_pretrain/{DINO_CHECKPOINT}", map_location="cpu")
        model.load_state_dict(state_dict, strict=True)
    return model
"""


def make_ensemble_cache(path: str | Path, seed: int = 0) -> Path:
    """A DreamSim cache for the default "ensemble" (DINO ViT-B/16 + CLIP ViT-B/16 + OpenCLIP ViT-B/16,
    LoRA on all three) with random weights, loadable offline: the three backbones in dreamsim's
    file layout, DINO's projection head, the ensemble LoRA adapter, and what dreamsim fetches through
    torch.hub (DINO's repository, as a stand-in, and its checkpoint)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    repo = path / DINO_HUB_REPO
    repo.mkdir(exist_ok=True)
    (repo / "hubconf.py").write_text(_DINO_HUBCONF)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        from dreamsim.feature_extraction.vision_transformer import vit_base

        (path / "checkpoints").mkdir(exist_ok=True)
        torch.save(vit_base(patch_size=16, num_classes=0).state_dict(), path / "checkpoints" / DINO_CHECKPOINT)
        for name in ("clip_vitb16", "open_clip_vitb16"):
            torch.save({"state_dict": _clip_backbone_state(16)}, path / f"{name}_pretrain.pth.tar")
        head = {"module.head.mlp.0.weight": torch.randn(2048, 768) * 0.02, "module.head.mlp.0.bias": torch.zeros(2048),
                "module.head.mlp.2.weight": torch.randn(2048, 2048) * 0.02, "module.head.mlp.2.bias": torch.zeros(2048),
                "module.head.mlp.4.weight": torch.randn(256, 2048) * 0.02, "module.head.mlp.4.bias": torch.zeros(256),
                "module.head.last_layer.weight": torch.randn(65536, 256) * 0.02}
        torch.save({"student": head}, path / "dino_vitb16_pretrain.pth")
        hub_dir = torch.hub.get_dir()
        torch.hub.set_dir(str(path))
        try:
            _write_adapter(path, "ensemble", path / "ensemble_lora")
        finally:
            torch.hub.set_dir(hub_dir)
    return path


def _write_dreamsim_files(path: Path, dreamsim_type: str, patch_size: int) -> None:
    backbone = _clip_backbone_state(patch_size)
    torch.save({"state_dict": backbone}, path / f"{dreamsim_type}_pretrain.pth.tar")
    _write_adapter(path, dreamsim_type, path / f"{dreamsim_type}_single_lora")


def _write_adapter(path: Path, dreamsim_type: str, adapter_dir: Path) -> None:
    from dreamsim.config import dreamsim_args
    from dreamsim.model import PerceptualModel
    from peft import LoraConfig, get_peft_model

    # The adapter: build the same PEFT-wrapped PerceptualModel dreamsim builds, give the
    # LoRA matrices random values (the default B = 0 would make the adapter a no-op) and
    # let peft write adapter_config.json + adapter_model.safetensors itself.
    config = dreamsim_args["model_config"][dreamsim_type]
    base = PerceptualModel(**config, device="cpu", load_dir=str(path), normalize_embeds=True)
    peft_model = get_peft_model(base, LoraConfig(**_LORA))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape) * 0.02)
    peft_model.save_pretrained(str(adapter_dir))


# --------------------------------------------------------------------------- CLIP

def make_tiny_clip(path: str | Path | None = None, *, image_size: int = 32, seed: int = 0):
    """A tiny random `CLIPModel` and a `CLIPProcessor` with CLIP's real tokenizer.

    With `path`, both are also `save_pretrained` there, so `from_pretrained(path)`
    (e.g. `ClipEditCheck(model_id=str(path))`) loads them. Returns (model, processor).
    """
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    vocab, merges = clip_bpe_vocab()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges)
    image_processor = CLIPImageProcessor(size={"shortest_edge": image_size},
                                         crop_size={"height": image_size, "width": image_size})
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)

    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77,
                         bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
                         pad_token_id=vocab["<|endoftext|>"]),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=image_size, patch_size=8),
        projection_dim=16,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()

    if path is not None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(str(path))
        processor.save_pretrained(str(path))
    return model, processor


def make_tiny_dino(path: str | Path, seed: int = 0) -> Path:
    """A tiny random ViT in DINO's layout (no pooler, as facebook/dino-vitb16 is stored) with its image processor,
    saved at `path` for `from_pretrained`. Leaves torch's global random state as it was."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vit = ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                 image_size=32, patch_size=8), add_pooling_layer=False)
    vit.save_pretrained(path)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return Path(path)


def make_clip_l14(seed: int = 0):
    """A `CLIPModel` of OpenAI's ViT-L/14 shape (224 px, 24 vision layers of 1024, 12 text layers of
    768, projection 768) with random weights, and its processor with CLIP's real tokenizer."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    vocab, merges = clip_bpe_vocab()
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=CLIPTokenizer(vocab=vocab, merges=merges))
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                         num_attention_heads=12, max_position_embeddings=77, bos_token_id=vocab["<|startoftext|>"],
                         eos_token_id=vocab["<|endoftext|>"], pad_token_id=vocab["<|endoftext|>"]),
        vision_config=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                           image_size=224, patch_size=14),
        projection_dim=768,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config).eval()
    return model, processor
