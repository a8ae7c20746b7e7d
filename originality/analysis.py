"""The progressive originality analysis: the package's one entry point.

    report = analyze("photo.jpg", AnalysisConfig.preset("fast"), load_model())

For each token length m = 1..max_tokens: invert the query into m learned tokens,
reconstruct it from "a photo of S*_m", measure the distance to the query, check
that the tokens can be edited ("cat in S*_m"), and stop at the first length that
passes both. `iter_analyze` yields an event at every stage so a UI can stream it.

The stop rule lives here once. A caller that must run each token length elsewhere (one
ZeroGPU call per length, see `originality.app.zerogpu`) passes `iter_analyze` a `run_length`
(m -> that length's events, the first call starting with a `Prepared`) and a deadline; the
pieces it runs are public: `check_inputs` (needs no model), `prepare` (step 1),
`iter_length` (steps 2-7 for one m, with its own model lock and token session) and `decide`
(step 8).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import re
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator, Union

import torch
from diffusers import StableDiffusionPipeline
from PIL import Image

from .config import AnalysisConfig
from .images import ImageInputError, load_image, prepare_image
from .metrics import CheckResult
from .inversion import InversionStep, TokenSession, encode_query, initializer_id, invert
from .stopping import STOP_PROBE
from .models import OriginalityModel, load_model
from .worlds import World, default_model_id, get_world, world_of_model
from .record import finish_record, image_seed, input_sha256, similarity_record, start_record
from .similarity import Reference, Similarity, compare, judge_for, load_references
from .report import (SCORED_EDITS, SCORED_RECONSTRUCTIONS, Report, SeedRun, TokenResult, first_pass, mean_and_std,
                     score_of)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Started:
    query: Image.Image  # the normalised query, as the model sees it
    config: AnalysisConfig  # with the world's defaults filled in
    model: dict


@dataclass(frozen=True)
class ReconstructionsReady:
    num_tokens: int
    images: list[Image.Image]


@dataclass(frozen=True)
class Generating:
    """Between two generation batches: `done` of `total` images of `what` ("reconstructions", "edits") made.
    A caller that closes the run here stops it within one batch."""

    num_tokens: int
    what: str
    done: int
    total: int


@dataclass(frozen=True)
class DistancesReady:
    num_tokens: int
    distances: list[float]
    mean: float
    std: float
    distance_passed: bool  # mean <= threshold


@dataclass(frozen=True)
class CheckReady:
    """The in-distribution check of one length: `check_scores` score the edits (`images`, Stable
    Diffusion) or the reconstructions (no edits; the shapes world), as `check_scored` says."""

    num_tokens: int
    images: list[Image.Image]  # the edits ("cat in S*"); empty where the reconstructions are scored
    check_scores: list[float]
    check_passed: bool
    check_detail: str
    check_scored: str  # report.SCORED_EDITS or report.SCORED_RECONSTRUCTIONS


@dataclass(frozen=True)
class LengthDone:
    result: TokenResult


@dataclass(frozen=True)
class SeedProgress:
    """An event of a repeat with another inversion seed (the `seeds` setting): repeat `index` of
    `total` (the first run is 1), with `seed`. Its lengths are not the report's rows: only their
    label counts (`Report.label_distribution`)."""

    seed: int
    index: int
    total: int
    event: "Event"


@dataclass(frozen=True)
class ComparingReferences:
    """After the last token length, before the `Decision`: the query and the reconstructions are being compared
    with `count` reference images (only when references were given)."""

    count: int


@dataclass(frozen=True)
class Decision:
    report: Report


Event = Union[Started, InversionStep, Generating, ReconstructionsReady, DistancesReady, CheckReady, LengthDone,
              SeedProgress, ComparingReferences, Decision]
# One token length run by the caller (e.g. in a ZeroGPU worker): (m, seed) -> its events, ending with
# `LengthDone`; the first call's events start with the `Prepared` query when `iter_analyze` has none.
LengthRunner = Callable[[int, int], Iterator[Union[Event, "Prepared"]]]
# The comparison with the references, run by the caller (e.g. in a ZeroGPU worker): (query, references,
# {m: reconstructions}, copy_line) -> `similarity.Similarity`.
Comparer = Callable[[Image.Image, list[Reference], dict[int, list[Image.Image]], float], Similarity]


class DeadlineExceeded(TimeoutError):
    """The run passed the deadline given to `iter_analyze` (it stops after the event in progress)."""


def resolve_config(config: AnalysisConfig | None, model: OriginalityModel) -> AnalysisConfig:
    """Fill the world's defaults into the fields left as None, then validate."""
    config = config or AnalysisConfig.preset("fast")
    config.validate()
    return config.replace(
        domain=config.domain or model.default_domain,
        threshold=model.default_threshold if config.threshold is None else config.threshold,
        guidance_scale=model.default_guidance_scale if config.guidance_scale is None else config.guidance_scale,
        copy_line=get_world(model.world).copy_line if config.copy_line is None else config.copy_line,
    )


def generate(
    pipeline, prompt: str, n: int, *, seed: int, config: AnalysisConfig, resolution: int
) -> list[Image.Image]:
    """n images of `prompt`; image i comes from the seed `seed + i` whatever the batching."""
    batches = iter_generate(pipeline, prompt, n, seed=seed, config=config, resolution=resolution)
    while True:
        try:
            next(batches)
        except StopIteration as stop:
            return stop.value


def iter_generate(
    pipeline, prompt: str, n: int, *, seed: int, config: AnalysisConfig, resolution: int, num_tokens: int = 0,
    what: str = "images",
) -> Iterator[Generating]:
    """`generate`, yielding a `Generating` after each batch; returns the images (`yield from`)."""
    images: list[Image.Image] = []
    for start in range(0, n, config.generation_batch_size):
        count = min(config.generation_batch_size, n - start)
        generators = [torch.Generator(device="cpu").manual_seed(seed + start + i) for i in range(count)]
        call, prompt_args = prompt_inputs(pipeline, [prompt] * count, config.guidance_scale)
        out = call(
            **prompt_args,
            num_inference_steps=config.num_inference_steps,
            guidance_scale=config.guidance_scale,
            generator=generators,
            height=resolution,
            width=resolution,
            output_type="pil",
        )
        images.extend(out.images)
        yield Generating(num_tokens, what, len(images), n)
    return images


def prompt_inputs(pipeline, prompts: list[str], guidance_scale: float) -> tuple[object, dict]:
    """The pipeline to call and its prompt arguments.

    Where the text encoder runs in float32 and the UNet in half precision (models.py), the
    prompts are encoded here and their embeddings cast to the UNet's dtype, and the call goes
    to a view of the pipeline without its text encoder: diffusers casts given embeddings to the
    text encoder's dtype when it has one, and would then start the latents in float32.
    """
    unet, text_encoder = getattr(pipeline, "unet", None), getattr(pipeline, "text_encoder", None)
    if unet is None or text_encoder is None or text_encoder.dtype == unet.dtype:
        return pipeline, {"prompt": prompts}
    embeds, negative = pipeline.encode_prompt(prompts, unet.device, 1, guidance_scale > 1.0)
    view = StableDiffusionPipeline(vae=pipeline.vae, text_encoder=None, tokenizer=pipeline.tokenizer, unet=unet,
                                   scheduler=pipeline.scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    view.set_progress_bar_config(disable=True)
    return view, {"prompt_embeds": embeds.to(unet.dtype),
                  "negative_prompt_embeds": None if negative is None else negative.to(unet.dtype)}


def inversion_seed(seed: int, num_tokens: int, query: Image.Image) -> int:
    """Seed of the inversion of length `num_tokens` for `query`: a hash of the three.

    Depends on the query's pixels so that the inversion noise (timesteps, noise, template
    draws) is independent from one image to the next: with one seed per length for every
    query, a whole batch of images shares one lucky or unlucky draw at a length (measured
    on the shapes world: benchmarks/RESULTS.md, session 3). Same seed and image, same result.
    """
    digest = hashlib.sha256(f"{seed}:{num_tokens}:{query.mode}:{query.size}:".encode())
    digest.update(query.tobytes())
    return int.from_bytes(digest.digest()[:8], "big") >> 1  # < 2**63, as torch's manual_seed wants


@dataclass(frozen=True)
class Prepared:
    """What every token length of one analysis starts from (step 1); picklable, cheap to redo.

    `model` is the model's `describe()`, so a `Report` can be built (`decide`) where the
    model itself is not loaded, e.g. outside a ZeroGPU worker.
    """

    query: Image.Image  # the normalised query, as the model sees it
    config: AnalysisConfig  # with the world's defaults filled in
    model: dict
    init_id: int  # the token id the learned tokens start from
    templates: tuple[str, ...]  # inversion prompt templates
    record: dict = field(default_factory=dict)  # reproducibility record so far (record.start_record)
    notes: tuple[str, ...] = ()  # what the engine decided for the user (domain pick, edit subject switch)
    domain_pick: dict | None = None  # the automatic domain pick: {"domain", "probabilities"}; None: chosen
    threshold_source: str = ""  # where config.threshold came from (user, world default, calibration file)

    def started(self) -> Started:
        return Started(self.query, self.config, self.model)


def check_inputs(image, config: AnalysisConfig | None = None, model: OriginalityModel | None = None, *,
                 world: World | None = None):
    """The one input check: the image (when given) and the settings; with a model, also the
    world's defaults and the domain word; with a world (the model's, or `world` before any model
    is loaded), whether the image is one the world can judge at all (`World.check_query`, unless
    `world_check` is "off"). Needs no model otherwise, so callers fail before loading one.

    Returns `(image, config)`: the decoded image (None when `image` is None) and the settings,
    with the world's defaults filled in when `model` is given. Raises `ValueError`
    (`images.ImageInputError` for the image) with a message for people.
    """
    config = config or AnalysisConfig.preset("fast")
    config.validate()
    loaded = None if image is None else load_image(image)
    if model is not None:
        config = resolve_config(config, model)
        initializer_id(model.pipeline.tokenizer, model.initial_word(config.domain))
        world = world or get_world(model.world)
    if loaded is not None and world is not None and config.world_check == "on":
        problem = world.check_query(loaded)
        if problem:
            raise ImageInputError(problem)
    return loaded, config


def prepare(image, config: AnalysisConfig | None = None, model: OriginalityModel | None = None, *,
            source: dict | None = None) -> Prepared:
    """Step 1 of an analysis: check the inputs and prepare the query; no heavy work.

    `source`: `record.input_sha256` of the image as the user gave it, when `image` is already decoded.

    Raises `ValueError` (`images.ImageInputError` for the image) with a message for people.
    """
    # 1. Check inputs (the image and settings first: they need no model)
    loaded, config = check_inputs(image, config)
    model = model or load_model()
    given = config  # as the caller gave it: the record says which settings were the world's defaults
    check_inputs(loaded, config, model)  # the world's check of the image, the default domain word
    query = prepare_image(loaded, model.resolution)
    notes: list[str] = []
    pick = None
    if config.domain is None:
        pick = auto_domain(model, query)
        if pick is not None:
            config = config.replace(domain=pick.domain)
            notes.append(pick.sentence())
    config = resolve_config(config, model)
    if model.in_distribution.uses_edits:
        config, note = switch_edit_subject(config, model.initial_word(config.domain))
        if note:
            notes.append(note)
    init_id = initializer_id(model.pipeline.tokenizer, model.initial_word(config.domain))
    templates = tuple(model.templates(config.domain))
    record = start_record(source or input_sha256(image), query, model, given=given, resolved=config)
    return Prepared(query, config, model.describe(), init_id, templates, record, tuple(notes),
                    pick.to_dict() if pick else None, record["threshold"]["source"])


def auto_domain(model: OriginalityModel, query: Image.Image):
    """The domain picked for `query` when the user chose none, in a world that picks one
    (`World.picks_domain`: CLIP zero-shot over the presets, `sd.pick_domain`); else None (the
    world's default word)."""
    if not get_world(model.world).picks_domain:
        return None
    from .sd import pick_domain  # noqa: PLC0415

    return pick_domain(model, query)


# Edit subjects tried, in order, when the configured one is the domain word itself (the check
# "is there a cat in 'cat in S*'?" cannot fail when S* started from "cat").
EDIT_SUBJECT_FALLBACKS = ("cat", "dog", "bird")


def switch_edit_subject(config: AnalysisConfig, domain_word: str) -> tuple[AnalysisConfig, str]:
    """`config` with an edit subject other than `domain_word`, and a sentence saying so ("" if unchanged).

    The subject is replaced in the edit prompt too ("cat in {}" -> "dog in {}"); an edit prompt
    that does not name its subject cannot be switched and is refused.
    """
    subject = config.edit_subject
    if subject.lower() != domain_word.lower():
        return config, ""
    new = next(w for w in EDIT_SUBJECT_FALLBACKS if w != subject.lower())
    pattern = re.compile(rf"\b{re.escape(subject)}\b", re.IGNORECASE)
    if not pattern.search(config.edit_prompt):
        raise ValueError(f"the edit subject {subject!r} is the domain word, so the edit check could not fail, "
                         f"and the edit prompt {config.edit_prompt!r} does not name it to switch it; choose "
                         "another edit_subject and edit_prompt")
    prompt = pattern.sub(new, config.edit_prompt)
    note = (f"the edit subject {subject!r} is the domain word, so the edit check could not fail: it looks for "
            f"a {new} instead ({prompt.format('S*')!r})")
    return config.replace(edit_subject=new, edit_prompt=prompt), note


def iter_length(prepared: Prepared, model: OriginalityModel, m: int,
                previous: torch.Tensor | None = None) -> Iterator[Event]:
    """Steps 2-7 for one token length m: `InversionStep`s, `Generating`s, `ReconstructionsReady`,
    `DistancesReady`, `CheckReady`, then `LengthDone`.

    `previous`: length m-1's learned rows ((m-1, dim)); with `token_init` "previous" the first
    m-1 tokens start from them and the last from the domain word (a warm start).

    Self-contained (its own `model.lock` and `TokenSession`), so each length can run in
    its own process or GPU call. Returns the `TokenResult` (`result = yield from ...`).
    Closing the iterator early cancels it and leaves the model as it was.
    """
    config = prepared.config
    if isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= config.max_tokens:
        raise ValueError(f"token length must be in 1..{config.max_tokens} (max_tokens), got {m!r}")
    query = prepared.query
    with model.lock, TokenSession(model.pipeline) as session:
        pipe = session.pipeline
        # 2. Encode the query to latents (cheap next to the inversion)
        latent_mean, latent_std = encode_query(pipe, query)
        timings: dict[str, float] = {}
        # 3. Invert: learn m tokens
        t0 = time.perf_counter()
        placeholder = session.add(f"<s{m}>", m, prepared.init_id)
        warm = config.token_init == "previous" and previous is not None and len(previous) == m - 1 > 0
        if warm:
            session.set_rows(placeholder, previous)
        losses: list[float] = []
        seed = inversion_seed(config.seed, m, query)
        # Prompts name only the base token: diffusers expands "<s3>" to "<s3> <s3>_1 <s3>_2" (and would
        # mangle an already expanded prompt).
        prompt = config.reconstruction_prompt.format(placeholder.token)
        probe = config.probe(lambda start, count: generate(pipe, prompt, count,
                                                           seed=image_seed(config.seed) + start,
                                                           config=config, resolution=model.resolution),
                             lambda images: model.distance(query, images))
        inversion = invert(
            pipe, latent_mean, latent_std, placeholder, prepared.templates,
            steps=config.steps, batch_size=config.batch_size, learning_rate=config.learning_rate,
            seed=seed, lr_schedule=config.lr_schedule, early_stopping=config.early_stopping(),
            micro_batch_size=config.micro_batch_size, probe=probe,
        )
        stop: dict = {}
        embeddings = yield from _tracking(inversion, losses, stop)
        timings["inversion"] = time.perf_counter() - t0

        # 4.-5. Reconstruct from "a photo of S*_m" and score each image's distance to the query (a probe
        # that stopped the inversion made them from these very tokens)
        first = (probe.images, probe.distances) if stop.get("reason") == STOP_PROBE else ([], [])
        recon, distances = yield from _reconstruct(pipe, model, prepared, prompt, m, first, timings)
        yield ReconstructionsReady(m, recon)
        mean, std = mean_and_std(distances)
        distance_passed = mean <= config.threshold
        yield DistancesReady(m, distances, mean, std, distance_passed)

        # 6. Edit check: "cat in S*_m" (or the world's own in-distribution test)
        t0 = time.perf_counter()
        edits: list[Image.Image] = []
        if model.in_distribution.uses_edits and not distance_passed and not config.always_check_edits:
            # this length fails whatever the edits show: skip num_edits generations
            check = CheckResult(passed=False, scores=[], detail=SKIPPED_EDITS)
        else:
            if model.in_distribution.uses_edits:
                edits = yield from iter_generate(pipe, config.edit_prompt.format(placeholder.token), config.num_edits,
                                                 seed=image_seed(config.seed, "edit"), config=config,
                                                 resolution=model.resolution, num_tokens=m, what="edits")
            check = model.in_distribution(query, recon, edits, subject=config.edit_subject,
                                          pass_fraction=config.edit_pass_fraction,
                                          domain=model.initial_word(config.domain))
        timings["edit_check"] = time.perf_counter() - t0
        scored = SCORED_EDITS if model.in_distribution.uses_edits else SCORED_RECONSTRUCTIONS
        yield CheckReady(m, edits, list(check.scores), check.passed, check.detail, scored)

        # 7. Decide this length: it passes when both the distance and the check pass
        result = TokenResult(
            num_tokens=m, token=placeholder.token, embeddings=embeddings, losses=losses,
            reconstructions=recon, distances=distances, edits=edits, check_scores=list(check.scores),
            distance_passed=distance_passed, check_passed=check.passed, check_detail=check.detail,
            check_scored=scored, timings=timings, inversion_seed=seed,
            steps_used=len(losses), stop_reason=stop.get("reason", ""), warm_start=warm,
            probes=list(probe.history) if probe else [],
        )
    logger.info("m=%d distance %.3f (%s) check %s", m, mean, "pass" if distance_passed else "fail", check.detail)
    yield LengthDone(result)
    return result


def _reconstruct(pipe, model: OriginalityModel, prepared: Prepared, prompt: str, m: int,
                 first: tuple[list, list], timings: dict[str, float]) -> Iterator[Event]:
    """Steps 4-5 of one length: up to `num_reconstructions` images of `prompt`, batch by batch, and each one's
    distance to the query (lower = closer); image i comes from the latent seed `record.image_seed(seed) + i`.
    `first`: images and distances already made (a probe's), which are images 0.. of the set. With `decide_early`, each batch is scored as it
    comes and drawing stops once the mean cannot reach the threshold even if every image still to come were
    at distance 0 (distances are >= 0), so the decision is the one all images would give; without it, the
    new images are scored together at the end. Returns (images, distances); adds to `timings`."""
    config, query = prepared.config, prepared.query
    images, distances = list(first[0]), list(first[1])
    n, unscored = config.num_reconstructions, []
    timings.setdefault("reconstruction", 0.0)
    timings.setdefault("distance", 0.0)

    def score(batch):
        t0 = time.perf_counter()
        distances.extend(float(d) for d in model.distance(query, batch))
        timings["distance"] += time.perf_counter() - t0

    while len(images) < n and not (config.decide_early and sum(distances) > config.threshold * n):
        t0 = time.perf_counter()
        batch = generate(pipe, prompt, min(config.generation_batch_size, n - len(images)),
                         seed=image_seed(config.seed) + len(images), config=config, resolution=model.resolution)
        timings["reconstruction"] += time.perf_counter() - t0
        images += batch
        if config.decide_early:
            score(batch)
        else:
            unscored += batch
        yield Generating(m, "reconstructions", len(images), n)
    if unscored:
        score(unscored)
    return images, distances


SKIPPED_EDITS = ("not checked: the reconstruction already failed, so this length cannot pass "
                 "(set always_check_edits to generate and check the edits anyway)")


def decide(prepared: Prepared, results: list[TokenResult], total_seconds: float = 0.0,
           seed_runs: tuple | list = ()) -> Report:
    """Step 8, the stop rule: the score is the first length that passes (None: none did, "max_tokens+").

    `results` are the lengths tried, in order (a progressive run stops after the first pass).
    `seed_runs`: with the `seeds` setting, every seed's `SeedRun` (this run's first); the score is
    then the median of their scores, since one seed's label is one draw. Needs no model:
    `prepared.model` describes it.
    """
    # 8. Score: the fewest tokens that pass (over several seeds: the median of each seed's)
    score = first_pass(results)
    config = prepared.config
    report = Report(
        query=prepared.query, results=list(results), score=score, max_tokens=config.max_tokens,
        threshold=config.threshold, config=config.to_dict(), model=dict(prepared.model),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        total_seconds=total_seconds, record=finish_record(prepared.record, results, config),
        notes=list(prepared.notes), domain_pick=prepared.domain_pick, threshold_source=prepared.threshold_source,
        seed_runs=list(seed_runs),
    )
    if report.label_distribution is not None:
        report.score = score_of(report.label_distribution.median)
    return report


def iter_analyze(
    image, config: AnalysisConfig | None = None, model: OriginalityModel | None = None, *,
    references=None, run_length: LengthRunner | None = None, deadline: float | None = None,
    compare_references: Comparer | None = None, world: str | None = None,
) -> Iterator[Event]:
    """Run the analysis, yielding progress events; the last event is a `Decision`.

    `image`: a path, bytes, file object, PIL image or uint8 array (see `images.load_image`).
    Raises `ValueError` (`images.ImageInputError` for the image) with a message for people
    on bad input, before any heavy work. Closing the iterator early cancels the run and
    leaves the model as it was.

    `references`: images to compare the query with (each as `image`; at most `max_references`), checked with
    the query. After the stop rule has decided, a `ComparingReferences` event, then the report's `similarity`:
    copy and style similarity of the query to each, and the reference nearest to each length's reconstructions
    (`originality.similarity`; the score and the stop rule do not depend on it). None: nothing is compared or loaded.

    `run_length`: run each token length elsewhere ((m, seed) -> its events, see `LengthRunner`; the
    model is then loaded there, not here), with `world` (its name) for the references' check and
    `compare_references` for the comparison (default: here, on the CPU). `deadline`: a `time.monotonic()`
    value after which the run stops with `DeadlineExceeded`. With `seeds` K > 1 the stop rule runs again
    with the seeds seed+1 .. seed+K-1 (their events come wrapped in `SeedProgress`), and the report's
    score is the median over the K seeds, with their labels in `label_distribution`.
    """
    # 1. Check inputs (the references too); prepare here unless the lengths run elsewhere
    source = input_sha256(image)  # the file as given, for the record
    loaded, checked = check_inputs(image, config)
    refs = load_references(references, checked, _references_world(model, world) if references else None)
    prepared: Prepared | None = None
    if run_length is None:
        model = model or load_model()
        prepared = prepare(loaded, checked, model, source=source)  # decoded: a file object reads only once
        run_length = _local_runner(prepared, model)
        compare_references = compare_references or local_comparer(model.world, model.device, model.pipeline.unet.dtype)
        yield prepared.started()

    started = time.perf_counter()

    def first_prepared(event):  # a remote runner prepares the query on every call: start once
        nonlocal prepared, started
        if not isinstance(event, Prepared):
            return event
        if prepared is not None:
            return None
        prepared, started = event, time.perf_counter()
        return event.started()

    results = yield from _relay(_stop_rule(run_length, checked.seed, checked.max_tokens, deadline), first_prepared)
    if prepared is None:
        raise RuntimeError("the token lengths ran without preparing the query")
    # 9. Optionally, the label over more inversion seeds (the same stop rule, other seeds)
    seed_runs = [SeedRun.of(checked.seed, results)] if checked.seeds > 1 else []
    for index, seed in enumerate(range(checked.seed + 1, checked.seed + checked.seeds), start=2):
        def wrapped(event, seed=seed, index=index):
            return None if isinstance(event, Prepared) else SeedProgress(seed, index, checked.seeds, event)
        other = yield from _relay(_stop_rule(run_length, seed, checked.max_tokens, deadline), wrapped)
        seed_runs.append(SeedRun.of(seed, other))
    report = decide(prepared, results, time.perf_counter() - started, seed_runs)
    # 10. Beside the score: similarity to the references (after the decision, which it cannot change)
    if refs:
        yield from iter_similarity(report, refs, compare_references or local_comparer(prepared.model["world"]),
                                   prepared.config.copy_line)
    yield Decision(report)


def iter_similarity(report: Report, refs: list[Reference], compare_references: Comparer,
                    copy_line: float) -> Iterator[Event]:
    """Step 10, beside the score (after the decision, which it cannot change): yield `ComparingReferences`,
    then set the report's `similarity` (the query and each length's reconstructions against `refs`) and
    its record."""
    yield ComparingReferences(len(refs))
    report.similarity = compare_references(report.query, refs, {r.num_tokens: r.reconstructions
                                                                for r in report.results}, copy_line)
    report.record = similarity_record(report.record, refs, report.similarity)


def _relay(events: Iterator, convert: Callable) -> Iterator:
    """Yield `convert(event)` for each of `events` (None: nothing), return what `events` returns, and
    close `events` however this ends (a cancelled run unwinds the length in progress)."""
    try:
        while True:
            try:
                event = next(events)
            except StopIteration as done:
                return done.value
            out = convert(event)
            if out is not None:
                yield out
    finally:
        events.close()


def _stop_rule(run_length: LengthRunner, seed: int, max_tokens: int, deadline: float | None
               ) -> Iterator[Event | Prepared]:
    """Steps 2-8 with one inversion seed: the lengths m = 1, 2, ... until the first that passes
    (the stop rule). Yields their events; returns their `TokenResult`s."""
    results: list[TokenResult] = []
    for m in range(1, max_tokens + 1):
        # 2.-7. One token length
        result = None
        events = run_length(m, seed)
        try:
            for event in events:
                if isinstance(event, LengthDone):
                    result = event.result
                yield event
                if deadline is not None and time.monotonic() > deadline:
                    raise DeadlineExceeded(f"the run passed its deadline at token length {m}")
        finally:
            events.close()  # a cancelled or stopped run unwinds the length (and frees the model)
        if result is None:
            raise RuntimeError(f"token length {m} ended without a result")
        results.append(result)
        # 8. The stop rule: the first length that passes ends the run
        if result.passed:
            break
    return results


def _references_world(model: OriginalityModel | None, world: str | None) -> World:
    """The world whose check the references pass: the model's, the named one, else the default model's."""
    if model is not None:
        return get_world(model.world)
    return get_world(world) if world else world_of_model(default_model_id())


def local_comparer(world: str, device="cpu", dtype=None) -> Comparer:
    """A `Comparer` that runs here: the world's judge (`similarity.judge_for`) on `device` in `dtype`."""
    def run(query, refs, reconstructions, copy_line):
        return compare(judge_for(world, device, dtype), query, refs, reconstructions, copy_line=copy_line)
    return run


def _local_runner(prepared: Prepared, model: OriginalityModel) -> LengthRunner:
    learned: dict[tuple[int, int], torch.Tensor] = {}  # (seed, m) -> rows, for the next length's warm start

    def run_length(m: int, seed: int) -> Iterator[Event]:
        here = prepared if seed == prepared.config.seed else replace(prepared, config=prepared.config.replace(seed=seed))
        result = yield from iter_length(here, model, m, learned.get((seed, m - 1)))
        learned[seed, m] = result.embeddings
    return run_length


def _tracking(inversion, losses: list[float], stop: dict):
    """Re-yield inversion steps, recording their losses and (in `stop["reason"]`) why the inversion
    stopped; returns the learned embeddings. Closing it closes the inversion, which unwraps the text
    encoder before the session shrinks it."""
    def record(event: InversionStep) -> InversionStep:
        losses.append(event.loss)
        if event.stop_reason:
            stop["reason"] = event.stop_reason
        return event
    return (yield from _relay(inversion, record))


def analyze(image, config: AnalysisConfig | None = None, model: OriginalityModel | None = None, *,
            references=None) -> Report:
    """Run the whole progressive analysis and return its `Report` (`references`: see `iter_analyze`)."""
    for event in iter_analyze(image, config, model, references=references):
        if isinstance(event, Decision):
            return event.report
    raise RuntimeError("analysis ended without a decision")  # unreachable: iter_analyze always decides
