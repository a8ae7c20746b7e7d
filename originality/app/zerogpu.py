"""Running each token length as its own GPU call (Hugging Face ZeroGPU), and what it reserves.

ZeroGPU runs each `@spaces.GPU` call in a forked worker: it pickles the arguments, streams a
generator's yields back pickled, and limits each call's duration. The unit of work here is
therefore ONE TOKEN LENGTH (`length_events`): `length_runner` gives `iter_analyze` a runner
that makes one such call per length, and the engine keeps the stop rule. The comparison with
reference images, after the last length, is one more call (`comparer`). Without the `spaces`
package the same functions run in-process, unchanged.

Reservation for one length, from the settings:
    seconds = GPU_OVERHEAD_S                                     model load/move, query encoding, judges
            + GPU_S_PER_SAMPLE * steps * batch_size              inversion: a UNet forward + backward per copy
            + GPU_S_PER_IMAGE_STEP * (num_reconstructions + num_edits) * num_inference_steps   generation (CFG)
rounded up and capped at ORIGINALITY_GPU_MAX_SECONDS (default 300 s, the most one ZeroGPU call may ask for).
The rates are rough figures for SD v1.x at 512 px in half precision on a ZeroGPU slice. The cost hardly
depends on m (prompts are padded to 77 tokens either way), so every length gets the same reservation.
fast preset: 30 + 0.04 * 150 * 8 + 0.03 * (8 + 4) * 20 = 85.2 -> 86 s per length; the paper preset
(2000 steps x batch 20) is far over the cap and cannot run on ZeroGPU.
"""

from __future__ import annotations

import math
from typing import Any, Iterator

from .. import gpu_costs
from ..config import AnalysisConfig
from .environment import env_int

try:  # Hugging Face ZeroGPU: GPU work must run inside @spaces.GPU functions
    import spaces  # type: ignore[import-not-found]
except ImportError:
    spaces = None

# The three rates live in originality/gpu_costs.json with their source (an estimate until
# `benchmarks/gpu_bench.py --update-costs` writes measured ones).
GPU_OVERHEAD_S, GPU_S_PER_SAMPLE, GPU_S_PER_IMAGE_STEP = gpu_costs.rates()


def gpu_seconds(config: dict) -> int:
    """Seconds to reserve on ZeroGPU for one token length with these settings (see the module docstring)."""
    c = AnalysisConfig.from_dict(config)
    estimate = (GPU_OVERHEAD_S + GPU_S_PER_SAMPLE * c.steps * c.batch_size
                + GPU_S_PER_IMAGE_STEP * (c.num_reconstructions + c.num_edits) * c.num_inference_steps)
    return min(env_int("ORIGINALITY_GPU_MAX_SECONDS", 300), math.ceil(estimate))


def _gpu_duration(image: Any, config: dict, model_id: str, m: int) -> int:
    """`spaces.GPU`'s duration callable: called with the arguments of each `engine_length` call."""
    return gpu_seconds(config)


def gpu_call(fn, duration=_gpu_duration):
    """`spaces.GPU` (ZeroGPU), reserving `duration` (seconds, or a callable of the call's arguments) per call,
    when `spaces` is present; else `fn`."""
    if spaces is None:
        return fn
    return spaces.GPU(duration=duration)(fn)


def length_events(image: Any, config: dict, model_id: str, m: int) -> Iterator[Any]:
    """One token length of one analysis: the work of one GPU call.

    Arguments are picklable (a file path or PIL image, a dict of settings, the model id, m).
    The model is loaded here, in the GPU worker (`load_model` caches it per process; nothing
    is loaded at import). Yields the `Prepared` query first (step 1, cheap, so redone by
    every call), then the engine's events for length m, ending with `LengthDone`.
    """
    from ..analysis import iter_length, prepare  # noqa: PLC0415 - the engine loads only in the worker
    from ..models import load_model  # noqa: PLC0415

    model = load_model(model_id)
    prepared = prepare(image, AnalysisConfig.from_dict(config), model)
    yield prepared
    yield from iter_length(prepared, model, m)


engine_length = gpu_call(length_events)


def length_runner(image: Any, config: AnalysisConfig, model_id: str):
    """A `run_length` for `iter_analyze`: each length (of each inversion seed) is one `engine_length` call."""
    settings = config.to_dict()

    def run_length(m: int, seed: int) -> Iterator[Any]:
        return engine_length(image, {**settings, "seed": seed}, model_id, m)
    return run_length


# The comparison with reference images (two ViT forwards per image; `originality.similarity`): one GPU call.
SIMILARITY_GPU_S = 60


def similarity_call(query: Any, references: list, reconstructions: dict, copy_line: float, model_id: str):
    """The comparison with the references (`analysis.Comparer` arguments, and the model id): the work of one GPU
    call, on the model's device and dtype (the model is loaded here, in the worker, as for a token length)."""
    from ..analysis import local_comparer  # noqa: PLC0415 - the engine loads only in the worker
    from ..models import load_model  # noqa: PLC0415

    model = load_model(model_id)
    return local_comparer(model.world, model.device, model.pipeline.unet.dtype)(query, references, reconstructions,
                                                                                  copy_line)


engine_similarity = gpu_call(similarity_call, SIMILARITY_GPU_S)


def comparer(model_id: str):
    """A `compare_references` for `iter_analyze`: the comparison is one `engine_similarity` call."""
    def run(query, references, reconstructions, copy_line):
        return engine_similarity(query, references, reconstructions, copy_line, model_id)
    return run
