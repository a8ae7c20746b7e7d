"""Running each token length as its own GPU call (Hugging Face ZeroGPU), and what it reserves.

ZeroGPU runs each `@spaces.GPU` call in a worker forked from the main process: it pickles the arguments, streams a
generator's yields back pickled, and limits each call's duration. The unit of work here is therefore ONE TOKEN LENGTH
(`length_events`): `ZeroGPURunner` gives `iter_analyze` a runner that prepares the query in one short call
(`prepare_call`) and makes one call per length on that resolved `Prepared`, and the engine keeps the checks, the stop
rule and the score. The comparison with reference images, after the last length, is one more call. Every call runs on
the models the main process loaded at start-up (`startup.load_models`, before `launch()`): the forked worker holds
them, and reads no weights from disk. Without the `spaces` package the same functions run in-process, unchanged.

Reservation for one length, from the settings (`gpu_costs`, the one cost formula):
    seconds = GPU_OVERHEAD_S          the worker's start: CUDA, the loaded weights copied onto its GPU, the query
            + GPU_S_PER_SAMPLE * steps * batch_size              inversion: a UNet forward + backward per copy
            + GPU_S_PER_IMAGE_STEP * images * num_inference_steps   generation (CFG): reconstructions and edits
rounded up and capped at ORIGINALITY_GPU_MAX_SECONDS (default 300 s, the most one ZeroGPU call may ask for).
The rates (`gpu_costs.json`) are rough figures for SD v1.x at 512 px in half precision on a ZeroGPU slice until
`benchmarks/gpu_bench.py --update-costs` measures them. The cost hardly depends on m (prompts are padded to 77 tokens
either way); what differs from one length to the next is how much it inverts (`AnalysisConfig.most_inversion_steps`:
a warm-started length may run `warm_steps`, and a length that reuses nested inversions runs none), which its call's
reservation follows. The paper preset (2000 steps x batch 20) is far over the cap and cannot run on ZeroGPU.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Iterator

from .. import gpu_costs
from ..config import AnalysisConfig
from . import startup
from .environment import env_int

try:  # Hugging Face ZeroGPU: GPU work must run inside @spaces.GPU functions
    import spaces  # type: ignore[import-not-found]
except ImportError:
    spaces = None

logger = logging.getLogger(__name__)


def gpu_seconds(config: dict, inversion_steps: int | None = None, m: int = 1) -> int:
    """Seconds to reserve on ZeroGPU for token length `m` with these settings (`inversion_steps`: the most the
    length can run over its restarts, `AnalysisConfig.most_inversion_steps`; None: from scratch):
    `gpu_costs.length_seconds` (the one cost formula) rounded up, capped at ORIGINALITY_GPU_MAX_SECONDS (default
    300)."""
    c = AnalysisConfig.from_dict(config)
    estimate = gpu_costs.length_seconds(c, inversion_steps=inversion_steps, m=m)
    return min(env_int("ORIGINALITY_GPU_MAX_SECONDS", 300), math.ceil(estimate))


def _gpu_duration(prepared: Any, model_id: str, m: int, carried: Any = None) -> int:
    """`spaces.GPU`'s duration callable: called with the arguments of each `engine_length` call (`carried`: what
    the previous length handed on, `analysis.Carried`: a warm start, nested inversions that need not run again)."""
    config = prepared.config
    previous = carried.rows if carried is not None and carried.m == m - 1 else None
    steps = config.most_inversion_steps(m, None if previous is None else len(previous),
                                        len(carried.nested) if carried is not None else 0)
    return gpu_seconds(config.to_dict(), inversion_steps=steps, m=m)


def gpu_call(fn, duration=_gpu_duration):
    """`spaces.GPU` (ZeroGPU), reserving `duration` (seconds, or a callable of the call's arguments) per call,
    when `spaces` is present; else `fn`."""
    if spaces is None:
        return fn
    return spaces.GPU(duration=duration)(fn)


# Step 1 (the domain pick runs CLIP on the model's device, the record hashes the model): one short GPU call.
PREPARE_GPU_S = 60


def run_gpu_seconds(config: dict, lengths: int | None = None) -> int:
    """Seconds a run reserves in all when it goes through token lengths 1..`lengths` (default: every length,
    `max_tokens`, and no pass): the prepare call, then each length's call (`gpu_seconds`, each starting warm or
    restarting as the settings say), and with `second_opinion` a close call's second run through the lengths below
    its label (all of them for "M+"), without the references' call. What a visitor's quota must hold for a "5+"."""
    c = AnalysisConfig.from_dict(config)
    first = lengths or c.max_tokens
    second = (first - 1 if lengths else c.max_tokens) if c.second_opinion else 0
    calls = [gpu_seconds(config, inversion_steps=c.projected_inversion_steps(m), m=m)
             for m in [*range(1, first + 1), *range(1, second + 1)]]
    return PREPARE_GPU_S + sum(calls)


def _worker(model_id: str):
    """The engine's `LocalRunner` inside a GPU call, on the model loaded at start-up (`startup.loaded`): under
    ZeroGPU the call's worker is forked from the main process that loaded it, so the call reads no weights. A model
    not loaded at start-up (its load failed there, or a script never called `startup.load_models`) loads here, once
    per process (`load_model` caches it): under ZeroGPU, in every worker that runs it."""
    from ..analysis import LocalRunner  # noqa: PLC0415 - start-up: torch and diffusers only when a run starts

    model = startup.loaded(model_id)
    if model is None:
        from ..models import load_model  # noqa: PLC0415 - start-up: torch and diffusers only when a run starts

        logger.info("%s was not loaded at start-up: loading it in this process", model_id)
        model = load_model(model_id)
    return LocalRunner(model)


def prepare_call(image: Any, config: dict, model_id: str, source: dict) -> Any:
    """Step 1 of one analysis on checked inputs (`analysis.prepare_checked`): the work of one GPU call, whose
    picklable `Prepared` every length's call then receives."""
    return _worker(model_id).prepare(image, AnalysisConfig.from_dict(config), source)


def length_events(prepared: Any, model_id: str, m: int, carried: Any = None) -> Iterator[Any]:
    """One token length of one analysis on its resolved `Prepared`: the work of one GPU call (arguments and
    yields are pickled by ZeroGPU). `carried`: what length m-1 handed on (`analysis.Carried`: the warm start of
    token_init "previous", the nested inversions of "nested"; each call is a fresh runner, so the main process
    hands it over). Yields the engine's events for length m, ending with `LengthDone`."""
    runner = _worker(model_id)
    if carried is not None:
        runner.keep_carried(prepared.config.seed, carried)
    yield from runner.run_length(prepared, m)


engine_prepare = gpu_call(prepare_call, PREPARE_GPU_S)
engine_length = gpu_call(length_events)


# The comparison with reference images (two ViT forwards per image; `originality.similarity`): one GPU call.
SIMILARITY_GPU_S = 60


def similarity_call(query: Any, references: list, reconstructions: dict, copy_line: float, model_id: str):
    """The comparison with the references (`analysis.Comparer` arguments, and the model id): the work of one GPU
    call, on the model's device and dtype, with the reference judge loaded at start-up (`startup.load_models`)."""
    return _worker(model_id).compare(query, references, reconstructions, copy_line)


engine_similarity = gpu_call(similarity_call, SIMILARITY_GPU_S)


class ZeroGPURunner:
    """The `analysis.LengthRunner` of the app: step 1, each token length (of each inversion seed) and the
    comparison with the references are one GPU call each (`engine_prepare`, `engine_length`,
    `engine_similarity`); `iter_analyze` keeps the checks, the stop rule and the score in this process."""

    def __init__(self, model_id: str, world: Any):
        self.model_id, self.world = model_id, world
        self._carried: dict[int, Any] = {}  # analysis seed -> what its last length handed on (`analysis.Carried`)

    def prepare(self, image, config: AnalysisConfig, source: dict):
        return engine_prepare(image, config.to_dict(), self.model_id, source)

    def run_length(self, prepared, m: int) -> Iterator[Any]:
        seed = prepared.config.seed
        carried = self._carried.get(seed) if m > 1 and prepared.config.token_init != "domain" else None
        for event in engine_length(prepared, self.model_id, m, carried):
            carry = getattr(event, "carry", None)  # `LengthDone` (duck-typed: the engine loads torch)
            if carry is not None and carry.m == m:
                self._carried[seed] = carry
            yield event

    def compare(self, query, references, reconstructions, copy_line):
        return engine_similarity(query, references, reconstructions, copy_line, self.model_id)
