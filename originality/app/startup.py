"""What the app loads at start-up, before it serves anyone: the model of every world that can run on this server.

`load_models()` loads each such model (`models.load_model`: the pipeline, the distance, the in-distribution check)
and the judge of reference images its runs compare with (`similarity.judge_for`), and reads all their weights now,
not on first use; `loaded(model_id)` hands them to the runs (`zerogpu.py`). `app.py` calls it under `__main__`,
before `demo.launch()`, so importing the app (as the tests do) or the package loads nothing.

- Hugging Face ZeroGPU: this is the platform's documented pattern. `import spaces` (zerogpu.py) makes `torch.cuda`
  look present in the main process and defers every `.to("cuda")`; at `launch()` it packs the weights loaded here,
  and each `@spaces.GPU` call (one token length) runs in a worker forked from this process, which holds the models
  already (ZeroGPU copies the packed weights onto the call's GPU). No call reads weights from disk, so no visitor's
  daily quota pays for it.
- Elsewhere (a dedicated GPU, a CPU): the first visitor no longer waits for the download and the load inside their
  run and its time limit.

`HUB_FILES` lists the Hugging Face Hub files those loads read; the README's front matter preloads exactly these into
the Space's image (`preload_from_hub`, tests/test_startup.py checks that they agree). DreamSim's weights do not come
from the Hub (its GitHub releases, and DINO's code through torch.hub): the start-up load downloads them into
$ORIGINALITY_CACHE, before the first visitor.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from ..worlds import all_worlds, default_world, resolve_model_id, world_model_id

logger = logging.getLogger(__name__)

# Hub id -> the files the start-up load reads from it (diffusers: model_index.json, then each component's config and
# its non-variant safetensors weights, the safety checker left out; transformers: config, weights, processor and
# tokenizer files). The models: the Stable Diffusion world's default (`sd.SD_MODEL_ID`), its edit check's CLIP
# (`metrics.ClipEditCheck.model_id`) and the reference backbones (`similarity.COPY_BACKBONE`, `STYLE_BACKBONE`).
HUB_FILES: dict[str, tuple[str, ...]] = {
    "CompVis/stable-diffusion-v1-4": (
        "model_index.json", "feature_extractor/preprocessor_config.json", "scheduler/scheduler_config.json",
        "text_encoder/config.json", "text_encoder/model.safetensors", "tokenizer/merges.txt",
        "tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json", "tokenizer/vocab.json",
        "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors",
    ),
    "openai/clip-vit-base-patch32": (
        "config.json", "model.safetensors", "preprocessor_config.json", "merges.txt", "special_tokens_map.json",
        "tokenizer.json", "tokenizer_config.json", "vocab.json",
    ),
    "facebook/dino-vitb16": ("config.json", "model.safetensors", "preprocessor_config.json"),
    "openai/clip-vit-large-patch14": ("config.json", "model.safetensors", "preprocessor_config.json"),
}

_LOADED: dict[str, Any] = {}  # model id -> OriginalityModel, every weight read


def startup_model_ids() -> list[str]:
    """The model of every world that can run here (`World.unavailable`: Stable Diffusion's default needs a GPU), the
    configured world's (`worlds.default_world`: $ORIGINALITY_MODEL, else Stable Diffusion with a GPU, else shapes)
    first. A visitor can pick any of them; none other can run."""
    first, _ = default_world()
    worlds = [first] + [w for w in all_worlds() if w is not first]
    return [world_model_id(w) for w in worlds if w.unavailable(world_model_id(w)) is None]


def load_models(model_ids: Iterable[str] | None = None, **options: Any) -> dict[str, Any]:
    """Load each model (default: `startup_model_ids()`) with every weight its runs use: the pipeline, the distance, the
    in-distribution check and the reference judge. `options`: `models.load_model`'s keywords (device, dtype,
    dreamsim_type, clip_model, cache_dir). A model that cannot load is logged and left to load on first use (its runs
    then say why). Returns {model id: OriginalityModel} of everything loaded so far."""
    from ..models import load_model  # noqa: PLC0415 - start-up: torch and diffusers only when a server starts
    from ..record import model_source  # noqa: PLC0415 - start-up: torch and diffusers only when a server starts
    from ..similarity import judge_for  # noqa: PLC0415 - start-up: torch and diffusers only when a server starts

    for given in startup_model_ids() if model_ids is None else model_ids:
        model_id = resolve_model_id(given)
        started = time.perf_counter()
        try:
            model = load_model(model_id, **options)
            # the reference judge `analysis.LocalRunner.compare` asks for: the model's world, device and dtype
            references = judge_for(model.world, model.device, model.pipeline.unet.dtype)
            for judge in (model.distance, model.in_distribution, references):
                _read_weights(judge)
            # each run's record hashes a model or backbone that is a local folder, every file of it: hashed here,
            # once (`provenance.folder_sha256` caches it, and the forked calls inherit the cache)
            model_source(model)
            references.backbones()
        except Exception:  # noqa: BLE001 - serve anyway: the world loads on first use, and that run says what failed
            logger.exception("could not load %s at start-up; it will load on first use", model_id)
            continue
        _LOADED[model_id] = model
        logger.info("loaded %s at start-up in %.1f s", model_id, time.perf_counter() - started)
    return dict(_LOADED)


def _read_weights(judge: Any) -> None:
    """Read a judge's weights now. Judges with weights (DreamSim, the CLIP check, the reference backbones) read them
    on first use unless asked (`load()`); under ZeroGPU that first use is inside every GPU call's forked worker."""
    load = getattr(judge, "load", None)
    if load is not None:
        load()


def loaded(model_id: str) -> Any | None:
    """The `OriginalityModel` loaded at start-up for `model_id` (a Hub id, folder or world name), else None."""
    return _LOADED.get(resolve_model_id(model_id))
