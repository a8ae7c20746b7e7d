"""The progressive originality analysis: the package's one entry point.

    report = analyze("photo.jpg", AnalysisConfig.preset("fast"), load_model())

For each token length m = 1..max_tokens: invert the query into m learned tokens,
reconstruct it from "a photo of S*_m", measure the distance to the query, check
that the tokens can be edited ("cat in S*_m"), and stop at the first length that
passes both. `iter_analyze` yields an event at every stage so a UI can stream it.

One path: `check_inputs` checks the settings, the image and the references once (no model needed);
a `LengthRunner` prepares the query once (`prepare_checked`: the world's defaults, the domain, the
record) and runs each token length on the resolved `Prepared` (`iter_length`, steps 2-7); the stop
rule (`_stop_rule`) and the score (`decide`, step 8) live here once. `LocalRunner` runs everything in
this process; a caller that must run the work elsewhere (one ZeroGPU call per length,
`originality.app.zerogpu`; several processes, `originality.parallel`) passes its own runner.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import re
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator, Protocol, Union

import torch
from diffusers import StableDiffusionPipeline
from PIL import Image

from .config import DEFAULT_PRESET, AnalysisConfig
from .images import ImageInputError, centre_square, crop_note, load_image, prepare_image
from .metrics import CheckResult
from .inversion import InversionStep, TokenSession, encode_query, initializer_id, invert
from .stopping import STOP_PROBE
from .models import OriginalityModel, load_model
from .sd import pick_domain
from .world import World
from .worlds import default_model_id, world_of_model
from .provenance import input_sha256
from .record import SECOND_OPINION_REPEAT, finish_record, image_seed, repeat_seed, similarity_record, start_record
from .similarity import Reference, Similarity, compare, judge_for, load_references
from .labels import can_still_pass, distance_passes, first_pass, lower_score, median_score
from .report import NOTHING_TO_REDRAW, SCORED_EDITS, SCORED_RECONSTRUCTIONS, Report, SeedRun, TokenResult
from .uncertainty import is_clear_call, label_probability, mean_and_std

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
    distance_passed: bool  # the config's `uncertainty.PassRule`


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
    """A length's last event: its `result`, and what the next length of the same analysis seed starts from
    (`carry`; None where nothing is carried, e.g. a length run apart by `parallel`)."""

    result: TokenResult
    carry: "Carried | None" = None


@dataclass(frozen=True)
class SeedProgress:
    """An event of a repeat with another inversion seed (the `seeds` setting): repeat `index` of
    `total` (the first run is 1), with `seed`. Its lengths are not the report's rows: only their
    label counts (`Report.label_distribution`)."""

    seed: int
    index: int
    total: int
    event: "Event"
    second_opinion: bool = False  # a close call's second opinion (the `second_opinion` setting), not a `seeds` repeat


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
# The comparison with the references: (query, references, {m: reconstructions}, copy_line) -> `Similarity`.
Comparer = Callable[[Image.Image, list[Reference], dict[int, list[Image.Image]], float], Similarity]


class LengthRunner(Protocol):
    """Where an analysis's work runs: here (`LocalRunner`), one ZeroGPU call per length
    (`app.zerogpu.ZeroGPURunner`) or several processes (`parallel.TeamRunner`). `iter_analyze` keeps
    the checks, the stop rule and the score; a runner only does the heavy work on what it is given."""

    world: World  # whose check the query and the references pass before any heavy work

    def prepare(self, image: Image.Image, config: AnalysisConfig, source: dict) -> "Prepared":
        """Step 1 on checked inputs (`check_inputs`'s image and settings): `prepare_checked`."""

    def run_length(self, prepared: "Prepared", m: int) -> Iterator[Event]:
        """Steps 2-7 for length m under `prepared.config.seed`: its events, ending with `LengthDone`."""

    def compare(self, query: Image.Image, refs: list[Reference], reconstructions: dict[int, list[Image.Image]],
                copy_line: float) -> Similarity:
        """Step 10: the query and the reconstructions against the references (a `Comparer`)."""


class DeadlineExceeded(TimeoutError):
    """The run passed the deadline given to `iter_analyze` (it stops after the event in progress)."""


def resolve_config(config: AnalysisConfig | None, model: OriginalityModel) -> AnalysisConfig:
    """Validate `config` (None: the `fast` preset) and fill the world's defaults into the fields left as None."""
    config = config or AnalysisConfig.preset(DEFAULT_PRESET)
    config.validate()
    return _with_world_defaults(config, model)


def _with_world_defaults(config: AnalysisConfig, model: OriginalityModel) -> AnalysisConfig:
    """`config` (already validated) with the world's defaults in the fields left as None."""
    world = model.world
    return config.replace(
        domain=config.domain or world.domain,
        threshold=world.threshold if config.threshold is None else config.threshold,
        guidance_scale=world.guidance_scale if config.guidance_scale is None else config.guidance_scale,
        copy_line=world.copy_line if config.copy_line is None else config.copy_line,
        redraw=config.redraw if world.redraw is not None else "off",  # the record says what was analysed
    )


def redrawn(query: Image.Image, config: AnalysisConfig, world: World) -> tuple[Image.Image, str | None]:
    """The query the model is shown: `query` itself, or under `config.redraw` "on" the world's own drawing of it
    (`World.redraw`), with a note for the user; a world without a drawing of its own keeps `query`."""
    if config.redraw != "on" or world.redraw is None:
        return query, None
    drawn = world.redraw(query)
    if drawn is None:
        return query, NOTHING_TO_REDRAW
    return drawn, ("The model was shown this world's own drawing of what the image shows (each shape in its "
                   "colour's and size's standard drawing, in place), so the score does not depend on how the shapes "
                   "were drawn; set redraw to off to analyse the pixels as given.")


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


def inversion_seed(seed: int, num_tokens: int, query: Image.Image, restart: int = 0) -> int:
    """Seed of the inversion of length `num_tokens` for `query` (restart `restart` of the `restarts` setting): a
    hash of them (restart 0 hashes as before restarts existed, so older records rerun).

    Depends on the query's pixels so that the inversion noise (timesteps, noise, template
    draws) is independent from one image to the next: with one seed per length for every
    query, a whole batch of images shares one lucky or unlucky draw at a length (measured
    on the shapes world: benchmarks/RESULTS.md, session 3). Same seed and image, same result.
    """
    again = f"restart {restart}:" if restart else ""
    digest = hashlib.sha256(f"{again}{seed}:{num_tokens}:{query.mode}:{query.size}:".encode())
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
    given_image: Image.Image | None = None  # the normalised image as given, when `query` is the world's drawing of it

    def started(self) -> Started:
        return Started(self.query, self.config, self.model)

    def with_seed(self, seed: int) -> "Prepared":
        """The same preparation under another analysis seed (the `seeds` setting's repeats)."""
        return self if seed == self.config.seed else replace(self, config=self.config.replace(seed=seed))


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
    config = config or AnalysisConfig.preset(DEFAULT_PRESET)
    config.validate()
    loaded = None if image is None else load_image(image)
    if model is not None:
        config = _with_world_defaults(config, model)
        initializer_id(model.pipeline.tokenizer, model.initial_word(config.domain))
        world = world or model.world
    if loaded is not None and world is not None and config.world_check == "on":
        problem = world.check_query(centre_square(loaded))  # what the analysis will see, not squashed
        if problem:
            raise ImageInputError(" ".join(filter(None, (problem, crop_note(loaded.size)))))
    return loaded, config


def prepare(image, config: AnalysisConfig | None = None, model: OriginalityModel | None = None, *,
            source: dict | None = None) -> Prepared:
    """Step 1 of an analysis, from raw inputs: `check_inputs` (against the model's world), then
    `prepare_checked`. `source`: `provenance.input_sha256` of the image as the user gave it, when `image` is
    already decoded. Raises `ValueError` (`images.ImageInputError` for the image) with a message for people.
    """
    # the inputs fail before any model loads (`load_model()` loads the default model, of this world)
    loaded, checked = check_inputs(image, config,
                                   world=model.world if model is not None else world_of_model(default_model_id()))
    model = model or load_model()
    return prepare_checked(loaded, checked, model, source or input_sha256(image))


def prepare_checked(loaded: Image.Image, config: AnalysisConfig, model: OriginalityModel, source: dict) -> Prepared:
    """Step 1 on inputs `check_inputs` has passed: normalise the query, fill in the world's defaults (and the
    domain picked for the image when none was chosen), the edit subject, the token the learned rows start
    from, and the reproducibility record. The one place the settings are resolved; no heavy work.
    Raises `ValueError` on a domain word that is not one token of the model's tokenizer."""
    given = config  # as the caller gave it: the record says which settings were the world's defaults
    as_given = prepare_image(loaded, model.resolution)
    query, note = redrawn(as_given, config, model.world)
    notes: list[str] = [n for n in (crop_note(loaded.size), note) if n]
    pick = None
    if config.domain is None:
        pick = auto_domain(model, query)
        if pick is not None:
            config = config.replace(domain=pick.domain)
            notes.append(pick.sentence())
    config = _with_world_defaults(config, model)
    if model.in_distribution.uses_edits:
        config, note = switch_edit_subject(config, model.initial_word(config.domain))
        if note:
            notes.append(note)
    init_id = initializer_id(model.pipeline.tokenizer, model.initial_word(config.domain))
    templates = tuple(model.templates(config.domain))
    # the upload's own size: a report can say that what it shows as given is that upload's centre square
    record = start_record(dict(source, width=loaded.width, height=loaded.height), query, model, given=given,
                          resolved=config)
    return Prepared(query, config, model.describe(), init_id, templates, record, tuple(notes),
                    pick.to_dict() if pick else None, record["threshold"]["source"],
                    given_image=None if query is as_given else as_given)


def auto_domain(model: OriginalityModel, query: Image.Image):
    """The domain picked for `query` when the user chose none, in a world that picks one
    (`World.picks_domain`: CLIP zero-shot over the presets, `sd.pick_domain`); else None (the
    world's default word)."""
    if not model.world.picks_domain:
        return None
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
                carried: "Carried | None" = None) -> Iterator[Event]:
    """Steps 2-7 for one token length m: `InversionStep`s, `Generating`s, `ReconstructionsReady`,
    `DistancesReady`, `CheckReady`, then `LengthDone` (with what length m + 1 starts from).

    `carried`: what the previous length of this analysis seed handed on (`Carried`; None at m = 1 or when
    nothing was kept). With `token_init` "previous" the first m-1 tokens start from length m-1's rows and the
    last from the domain word (a warm start); with "nested" the length reuses the nested inversions already
    run and runs a restart's only when it needs one not run yet.

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
        # 3. Invert: learn m tokens (with `restarts`, several inversions; the one chosen on its selection images)
        t0 = time.perf_counter()
        placeholder = session.add(f"<s{m}>", m, prepared.init_id)
        previous = carried.rows if carried is not None and carried.m == m - 1 else None
        warm = config.starts_warm(m, None if previous is None else len(previous))
        if warm:
            session.set_rows(placeholder, previous)
        # Prompts name only the base token: diffusers expands "<s3>" to "<s3> <s3>_1 <s3>_2" (and would
        # mangle an already expanded prompt).
        prompt = config.reconstruction_prompt.format(placeholder.token)
        probe = config.probe(lambda start, count: generate(pipe, prompt, count,
                                                           seed=image_seed(config.seed) + start,
                                                           config=config, resolution=model.resolution),
                             lambda images: model.distance(query, images))
        kept, tried, nested = yield from invert_with_restarts(
            pipe, model, prepared, session, placeholder, prompt, (latent_mean, latent_std), probe,
            steps=config.inversion_steps(warm), nested=carried.nested if carried is not None else ())
        embeddings, losses = kept.embeddings, kept.losses
        timings["inversion"] = time.perf_counter() - t0

        # 4.-5. Reconstruct from "a photo of S*_m" and score each image's distance to the query (a probe
        # that stopped the inversion made them from these very tokens)
        first = (probe.images, probe.distances) if kept.stop_reason == STOP_PROBE else ([], [])
        recon, distances = yield from _reconstruct(pipe, model, prepared, prompt, m, first, timings)
        yield ReconstructionsReady(m, recon)
        mean, std = mean_and_std(distances)
        distance_passed = config.pass_rule().passes(distances)
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
            check_scored=scored, timings=timings, inversion_seed=kept.seed,
            steps_used=len(losses), stop_reason=kept.stop_reason, warm_start=warm,
            probes=list(probe.history) if probe else [],
            restarts=[t.summary() for t in tried] if config.restarts_at(m) > 1 else [],
            kept_restart=kept.index,
        )
    logger.info("m=%d distance %.3f (%s) check %s", m, mean, "pass" if distance_passed else "fail", check.detail)
    yield LengthDone(result, Carried(m, embeddings, nested))
    return result


@dataclass
class Restart:
    """One inversion of a token length (the `restarts` setting): its index and seed, what it learned, its losses,
    why it stopped, and the distances of its selection images (none with a single inversion)."""

    index: int
    seed: int
    embeddings: torch.Tensor  # (m, dim); a nested inversion's: (max_tokens, dim)
    losses: list[float]  # one per step run for this length (none where a nested inversion was reused)
    stop_reason: str
    selection_distances: list[float]
    reused: bool = False  # a nested inversion run at an earlier length (token_init "nested")

    @property
    def selection_distance(self) -> float:
        """Mean distance of the selection images (lower = closer); 0 when none were drawn."""
        return mean_and_std(self.selection_distances)[0] if self.selection_distances else 0.0

    def prefix(self, m: int, reused: bool) -> "Restart":
        """Length m's share of a nested inversion: its first m rows, with its losses only where this length ran
        it (a `reused` inversion's steps count at the length that ran it), and no selection images yet."""
        return Restart(self.index, self.seed, self.embeddings[:m], [] if reused else list(self.losses),
                       self.stop_reason, [], reused)

    def summary(self) -> dict:
        summary = {"restart": self.index, "seed": self.seed, "steps": len(self.losses),
                   "stop_reason": self.stop_reason, "selection_distances": self.selection_distances}
        return summary | ({"reused": True} if self.reused else {})


@dataclass(frozen=True)
class Carried:
    """What length `m` hands the next length of the same analysis seed (the runners keep it; the ZeroGPU runner
    passes it from call to call): its kept `rows` ((m, dim), the warm start of token_init "previous") and the
    nested inversions run so far (`nested`, token_init "nested": `Restart`s whose embeddings hold all
    max_tokens rows), which later lengths reuse instead of inverting again."""

    m: int
    rows: torch.Tensor
    nested: tuple[Restart, ...] = ()


def invert_with_restarts(pipe, model: OriginalityModel, prepared: Prepared, session: TokenSession,
                         placeholder, prompt: str, latents: tuple[torch.Tensor, torch.Tensor],
                         probe=None, steps: int | None = None, nested: tuple[Restart, ...] = ()) -> Iterator[Event]:
    """Step 3 of one length: `restarts` inversions of `placeholder` (one past `restarts_until`:
    `AnalysisConfig.restarts_at`), all from the rows it holds now (the domain word's, or the warm start's), each
    from its own seed (`inversion_seed(seed, m, query, r)`).

    With more than one, each restart draws `selection_images` images of `prompt` from its tokens, from latents
    set apart from the reconstructions the length is judged on (`image_seed(seed, "selection", r)`), and the
    restart whose mean distance to the query is lowest is kept (the earliest on a tie); restarting stops once one
    restart's selection images pass the threshold. The score asks whether *some* m-token description
    reproduces the image, and one failed optimisation is no evidence that none does; since the choice never sees
    the judged reconstructions, it cannot flatter them. Yields `InversionStep`s (with their `restart`) and the
    selection images' `Generating`s; leaves the kept rows in the placeholder; returns (kept, every `Restart`, the
    nested inversions so far). `steps`: each inversion's steps (default: the config's `steps`).

    With `token_init` "nested", restart r is nested inversion r (`nested`: those run at earlier lengths, reused;
    one not run yet runs here, `_nested_inversion`) and the length takes its first m rows; the choice among them
    is made on this length's own selection images, as above.
    """
    config, query, m = prepared.config, prepared.query, placeholder.num_tokens
    start = session.rows(placeholder)
    runs, carried_in = {run.index: run for run in nested}, {run.index for run in nested}
    tried: list[Restart] = []
    attempts = config.restarts_at(m)
    for r in range(attempts):
        if config.token_init == "nested":
            if r not in runs:
                runs[r] = yield from _nested_inversion(pipe, prepared, session, latents, r, m)
            restart = runs[r].prefix(m, reused=r in carried_in)
        else:
            session.set_embeddings(placeholder, start)
            restart = yield from _inversion(pipe, prepared, placeholder, latents, r, steps or config.steps, probe)
        session.set_embeddings(placeholder, restart.embeddings)
        tried.append(restart)
        if attempts > 1:
            images = yield from iter_generate(pipe, prompt, config.selection_images,
                                              seed=image_seed(config.seed, "selection", r), config=config,
                                              resolution=model.resolution, num_tokens=m, what="selection images")
            restart.selection_distances = [float(d) for d in model.distance(query, images)]
            # by the mean whatever `undecided_as` says: the interval of a few selection images nearly always holds
            # the threshold, so the benefit of the doubt here would end the restarts after the first
            if distance_passes(restart.selection_distance, config.threshold):
                break
    kept = min(tried, key=lambda t: (t.selection_distance, t.index))
    session.set_embeddings(placeholder, kept.embeddings)
    return kept, tried, tuple(runs[r] for r in sorted(runs))


def _inversion(pipe, prepared: Prepared, placeholder, latents: tuple[torch.Tensor, torch.Tensor], restart: int,
               steps: int, probe=None, prefixes: bool = False, length: int | None = None) -> Iterator[Event]:
    """Inversion `restart` of `placeholder`'s tokens: `steps` steps from the rows it holds, from its own seed
    (`inversion_seed(seed, its token count, query, restart)`); `prefixes` trains every prefix to stand alone, and
    `length` is the token length its steps are reported under (default: its own token count). Returns its
    `Restart` (embeddings (its token count, dim))."""
    config = prepared.config
    seed = inversion_seed(config.seed, placeholder.num_tokens, prepared.query, restart)
    inversion = invert(
        pipe, *latents, placeholder, prepared.templates,
        steps=steps, batch_size=config.batch_size, learning_rate=config.learning_rate,
        seed=seed, lr_schedule=config.lr_schedule, averaged_steps=config.averaged_steps(steps),
        early_stopping=config.early_stopping(), micro_batch_size=config.micro_batch_size, probe=probe,
        prefixes=prefixes,
    )
    losses: list[float] = []
    stop: dict = {}
    embeddings = yield from _tracking(inversion, losses, stop, restart=restart, length=length)
    return Restart(restart, seed, embeddings, losses, stop.get("reason", ""), [])


def _nested_inversion(pipe, prepared: Prepared, session: TokenSession, latents: tuple[torch.Tensor, torch.Tensor],
                      restart: int, m: int) -> Iterator[Event]:
    """Nested inversion `restart` of an analysis (token_init "nested"): one inversion of max_tokens tokens from
    the domain word, every prefix trained to stand alone (`invert(prefixes=True)`), from its own seed
    (`inversion_seed(seed, max_tokens, query, restart)`). Its steps are reported under length `m`, the one that
    needed it. Returns its `Restart` (embeddings (max_tokens, dim)), which later lengths reuse."""
    config = prepared.config
    placeholder = session.add(f"<nested{restart}>", config.max_tokens, prepared.init_id)
    return (yield from _inversion(pipe, prepared, placeholder, latents, restart, config.steps, prefixes=True,
                                  length=m))


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
    most = max(n, config.max_reconstructions)  # sequential reconstructions: up to this many while undecided
    rule = config.pass_rule()
    timings.setdefault("reconstruction", 0.0)
    timings.setdefault("distance", 0.0)

    def score(batch):
        t0 = time.perf_counter()
        distances.extend(float(d) for d in model.distance(query, batch))
        timings["distance"] += time.perf_counter() - t0

    while True:
        while len(images) < n and not (config.decide_early and not can_still_pass(distances, n, config.threshold)):
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
            unscored = []
        # while the interval of the mean still holds the line, the decision is a coin toss: draw a batch more
        if len(images) < n or n >= most or not rule.undecided(distances):
            return images, distances
        n = min(most, n + config.generation_batch_size)


SKIPPED_EDITS = ("not checked: the reconstruction already failed, so this length cannot pass "
                 "(set always_check_edits to generate and check the edits anyway)")


def decide(prepared: Prepared, results: list[TokenResult], total_seconds: float = 0.0,
           seed_runs: tuple | list = (), second_opinion: SeedRun | None = None) -> Report:
    """Step 8: the report of `results`, the lengths tried in order (the stop rule ends at the first that
    passes). The score is the first passing length (`SeedRun.of`, None: none did, "max_tokens+"); with the
    `seeds` setting (`seed_runs`: every seed's `SeedRun`, this run's first) it is the median of their scores
    (`labels.median_score`), since one seed's label is one draw; with a `second_opinion` (the run of the lengths
    below a close call's label under another seed) the lower of the two (`labels.lower_score`). Needs no
    model: `prepared.model` describes it."""
    # 8. Score: the fewest tokens that pass (over several seeds: the median of each seed's; with a second opinion,
    # the shorter of the two)
    runs = list(seed_runs) or [SeedRun.of(prepared.config.seed, results, prepared.config)]
    score = runs[0].score if len(runs) == 1 else median_score(r.score for r in runs)
    if second_opinion is not None:
        score = lower_score(score, second_opinion.score)
    config = prepared.config
    return Report(
        query=prepared.query, results=list(results), score=score, max_tokens=config.max_tokens,
        threshold=config.threshold, config=config.to_dict(), model=dict(prepared.model),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        total_seconds=total_seconds, record=finish_record(prepared.record, results, config),
        notes=list(prepared.notes), domain_pick=prepared.domain_pick, threshold_source=prepared.threshold_source,
        seed_runs=runs if len(runs) > 1 else [], second_opinion=second_opinion, given_image=prepared.given_image,
    )


class LocalRunner:
    """A `LengthRunner` that runs every step in this process, on `model` (loaded on first use by `load`,
    default `models.load_model()`, so that the inputs are checked before any weights load). Keeps what each
    length hands the next (`Carried`: the warm start of token_init "previous", the nested inversions of
    "nested")."""

    def __init__(self, model: OriginalityModel | None = None, *, world: World | None = None,
                 load: Callable[[], OriginalityModel] | None = None):
        self._model, self._load = model, load or load_model
        self.world = world or (model.world if model is not None else world_of_model(default_model_id()))
        self._carried: dict[int, Carried] = {}  # analysis seed -> what its last length handed on

    @property
    def model(self) -> OriginalityModel:
        if self._model is None:
            self._model = self._load()
        return self._model

    def prepare(self, image: Image.Image, config: AnalysisConfig, source: dict) -> Prepared:
        return prepare_checked(image, config, self.model, source)

    def run_length(self, prepared: Prepared, m: int) -> Iterator[Event]:
        seed = prepared.config.seed
        carried = self._carried.get(seed) if m > 1 else None
        for event in iter_length(prepared, self.model, m, carried):
            if isinstance(event, LengthDone) and event.carry is not None:
                self.keep_carried(seed, event.carry)
            yield event

    def keep_carried(self, seed: int, carried: Carried) -> None:
        """What a length under the analysis seed `seed` handed on, which the next length starts from; a runner
        whose lengths run in other processes (`app.zerogpu`) hands it back."""
        self._carried[seed] = carried

    def compare(self, query, refs, reconstructions, copy_line) -> Similarity:
        model = self.model
        return compare(judge_for(model.world, model.device, model.pipeline.unet.dtype), query, refs, reconstructions,
                       copy_line=copy_line)


def iter_analyze(
    image, config: AnalysisConfig | None = None, model: OriginalityModel | None = None, *,
    references=None, runner: LengthRunner | None = None, deadline: float | None = None,
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

    `runner`: where the work runs (`LengthRunner`; default `LocalRunner(model)`, which loads the default
    model when `model` is None). `deadline`: a `time.monotonic()` value after which the run stops with
    `DeadlineExceeded`. With `seeds` K > 1 the stop rule runs again under K - 1 further seeds
    (`record.repeat_seed`; their events come wrapped in `SeedProgress`), and the report's score is the median
    over the K seeds, with their labels in `label_distribution`.
    """
    runner = runner or LocalRunner(model)
    # 1. Check the inputs once (settings, image, the world's check, the references), before any heavy work
    loaded, checked = check_inputs(image, config, world=runner.world)
    source = input_sha256(image)  # the file as given, for the record (a file object's position is restored)
    refs = load_references(references, checked, runner.world) if references else []
    prepared = runner.prepare(loaded, checked, source)  # decoded: a file object reads only once
    yield prepared.started()
    report = yield from iter_score(runner, prepared, deadline)
    # 10. Beside the score: similarity to the references (after the decision, which it cannot change)
    if refs:
        yield from iter_similarity(report, refs, runner.compare, prepared.config.copy_line)
    yield Decision(report)


def iter_score(runner: LengthRunner, prepared: Prepared, deadline: float | None = None) -> Iterator[Event]:
    """Steps 2-9 on a prepared query: the token lengths under the stop rule, again under each further
    inversion seed of the `seeds` setting (events wrapped in `SeedProgress`), and the score (`decide`).
    Yields the events; returns the `Report` (`report = yield from iter_score(...)`)."""
    config, started = prepared.config, time.perf_counter()
    # 2.-7. The lengths under the stop rule
    results = yield from _stop_rule(runner, prepared, deadline)
    seed_runs = [SeedRun.of(config.seed, results, config)]
    # 9. A close call's second opinion: the lengths below its label under another seed
    below = needs_second_opinion(results, config)
    if below:
        seed = repeat_seed(config.seed, SECOND_OPINION_REPEAT)

        def second(event, seed=seed):
            return SeedProgress(seed, 2, 2, event, second_opinion=True)
        other = yield from _relay(_stop_rule(runner, prepared.with_seed(seed), deadline, below), second)
        return decide(prepared, results, time.perf_counter() - started, seed_runs,
                      second_opinion=SeedRun.of(seed, other, config))
    # 9. The same stop rule under the further seeds
    for index, seed in enumerate((repeat_seed(config.seed, k) for k in range(1, config.seeds)), start=2):
        def wrapped(event, seed=seed, index=index):
            return SeedProgress(seed, index, config.seeds, event)
        other = yield from _relay(_stop_rule(runner, prepared.with_seed(seed), deadline), wrapped)
        seed_runs.append(SeedRun.of(seed, other, config))
    # 8. The score
    return decide(prepared, results, time.perf_counter() - started, seed_runs)


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


def needs_second_opinion(results: list[TokenResult], config: AnalysisConfig) -> int:
    """With the `second_opinion` setting, how many lengths a second opinion tries (those below the label: a label
    of m gives m - 1, "M+" gives M), when the label is a close call above 1 (`uncertainty.is_clear_call` of
    `uncertainty.label_probability`); 0 when it needs none."""
    if not config.second_opinion or config.seeds > 1:
        return 0
    score = first_pass(results)
    below = config.max_tokens if score is None else score - 1
    probability = label_probability(results, config.pass_rule(), config.max_tokens, score)
    return 0 if below < 1 or is_clear_call(probability) else below


def _stop_rule(runner: LengthRunner, prepared: Prepared, deadline: float | None,
               up_to: int | None = None) -> Iterator[Event]:
    """Steps 2-7 under `prepared.config.seed`: the lengths m = 1, 2, ... (up to `up_to`, default max_tokens) until
    the first that passes (the stop rule). Yields their events; returns their `TokenResult`s."""
    results: list[TokenResult] = []
    for m in range(1, (up_to or prepared.config.max_tokens) + 1):
        # 2.-7. One token length
        result = None
        events = runner.run_length(prepared, m)
        try:
            for event in events:
                if isinstance(event, LengthDone) and event.result.num_tokens == m:
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


def _tracking(inversion, losses: list[float], stop: dict, restart: int = 0, length: int | None = None):
    """Re-yield inversion steps (marked with their `restart`, and with the token `length` they run for where that
    is not the inversion's own token count), recording their losses and (in `stop["reason"]`) why the inversion
    stopped; returns the learned embeddings. Closing it closes the inversion, which unwraps the text encoder
    before the session shrinks it."""
    def record(event: InversionStep) -> InversionStep:
        losses.append(event.loss)
        if event.stop_reason:
            stop["reason"] = event.stop_reason
        changes = ({"restart": restart} if restart else {}) | ({"num_tokens": length} if length else {})
        return replace(event, **changes) if changes else event
    return (yield from _relay(inversion, record))


def analyze(image, config: AnalysisConfig | None = None, model: OriginalityModel | None = None, *,
            references=None) -> Report:
    """Run the whole progressive analysis and return its `Report` (`references`: see `iter_analyze`)."""
    for event in iter_analyze(image, config, model, references=references):
        if isinstance(event, Decision):
            return event.report
    raise RuntimeError("analysis ended without a decision")  # unreachable: iter_analyze always decides
