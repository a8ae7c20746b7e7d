"""How long an analysis may still take: the one estimate of the time left, for the page, the CLI and the API.

    timer = RunTimer()
    for event in iter_analyze(image, config, model):
        timer.observe(event, time.monotonic())
        print(describe(timer.estimate()))   # "about 40 s left for m = 2, at most about 3 min if it goes on to m = 5"

Arithmetic only (no torch, no gradio): the time between consecutive engine events is booked to the work
each event reports (inversion samples, generated image-steps, or a length's fixed cost), which gives this
machine's rates during the run; the work still possible comes from the settings and the events. Before the
run has measured a rate, a world's stored rate stands in (`stored_rates`); once the first length has
measured it, the run's own figure is used, refined at every event.

What is left is uncertain: the stop rule may end the run at any length, early stopping or the probe may end
an inversion early. So the estimate gives the length in progress (every step and image it may still take)
and the worst case: every length up to `max_tokens`, under every seed of the `seeds` setting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import gpu_costs

MEASURED = "this run"  # `Rates.source` of the rates a run has measured itself
# `CheckReady.check_scored` when the check scored the edits ("cat in S*"; report.SCORED_EDITS, not imported:
# report loads torch)
_SCORED_EDITS = "edits"


@dataclass(frozen=True)
class Rates:
    """Seconds per unit of work, in the units of `gpu_costs`: one inversion sample (a UNet forward and backward
    of one noisy copy; an inversion step is `batch_size` samples), one denoising step of one generated image
    (with guidance), and a token length's fixed cost (setup, encoding, scoring, the check). None: unknown."""

    per_sample: float | None = None
    per_image_step: float | None = None
    per_length: float | None = None
    source: str = ""  # where the figures come from, for people

    def complete(self) -> bool:
        return None not in (self.per_sample, self.per_image_step, self.per_length)


# The shapes world on a CPU (the bundled model, the fast preset: 150 steps x batch 8, 8 reconstructions x 20 steps
# per length): the idle timing of benchmarks/RESULTS.md session 10 (five lengths in 79.9 s on a 2-core machine,
# 16.0 s each), split as a run measured here through `RunTimer` on a busy machine (m = 1: inversion 182 s,
# reconstructions 72 s, the rest 2 s of 256 s; docs/web-app.md, "Time left"): 11.3 s / 1200 samples,
# 4.5 s / 160 image-steps. They stand in only until the run's first steps and images are timed.
SHAPES_CPU = Rates(per_sample=0.0094, per_image_step=0.028, per_length=0.5,
                   source="the shapes world's idle CPU timing (benchmarks/RESULTS.md, session 10)")
# Stored CPU rates by world name (`World.name`); a world without an entry has its first estimate once measured.
CPU_RATES = {"shapes": SHAPES_CPU}


def stored_rates(world: str | None, device: str | None) -> Rates | None:
    """A world's rough rates before a run has measured its own: the shapes world on a CPU (`SHAPES_CPU`), any
    world on a GPU from the GPU cost table (`gpu_costs.json`: Stable Diffusion at 512 px in half precision, an
    overestimate for the small shapes model); None where nothing is stored (e.g. Stable Diffusion on a CPU)."""
    if str(device or "").startswith("cuda"):
        overhead, per_sample, per_image_step = gpu_costs.rates()
        return Rates(per_sample, per_image_step, overhead, source="the GPU cost table (gpu_costs.json)")
    return CPU_RATES.get(world)


@dataclass(frozen=True)
class Estimate:
    """Seconds left, at the last event: `length_s` in the length in progress (m = `m`, every step and image it may
    still take) and `total_s` in the whole run at worst (every length to `max_tokens` under each of the `seeds`
    seeds; the stop rule usually ends it sooner). `measured`: False while a stored rate stands in."""

    m: int
    length_s: float
    total_s: float
    max_tokens: int
    seeds: int
    measured: bool

    @property
    def more_lengths(self) -> bool:
        """True when lengths may follow the one in progress (the worst case says more than this length)."""
        return self.total_s > self.length_s


def duration(seconds: float) -> str:
    """`seconds` for people: 'a few seconds', '40 s' (to 5 s), '3 min', '1 h 20 min'."""
    if seconds < 10:
        return "a few seconds"
    if seconds < 57.5:
        return f"{5 * round(seconds / 5):.0f} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def describe(estimate: Estimate | None) -> str:
    """One clause for a status line ('' without an estimate): 'about 40 s left for m = 2, at most about 3 min if it
    goes on to m = 5' ('… if every seed goes on to m = 5' with several seeds); '(a first guess)' while stored
    rates stand in for measured ones."""
    if estimate is None:
        return ""
    text = f"{_about(estimate.length_s)} left for m = {estimate.m}"
    if estimate.more_lengths:
        who = "every seed goes" if estimate.seeds > 1 else "it goes"
        text += f", at most {_about(estimate.total_s)} if {who} on to m = {estimate.max_tokens}"
    return text if estimate.measured else f"{text} (a first guess)"


def brief(estimate: Estimate | None) -> str:
    """`describe` short enough for a progress bar's postfix on an 80-column terminal ('' without an estimate):
    '40 s (m=2), <= 3 min to m=5', with ', guess' while stored rates stand in."""
    if estimate is None:
        return ""
    text = f"{duration(estimate.length_s)} (m={estimate.m})"
    if estimate.more_lengths:
        text += f", <= {duration(estimate.total_s)} to m={estimate.max_tokens}"
    return text if estimate.measured else f"{text}, guess"


def _about(seconds: float) -> str:
    text = duration(seconds)
    return text if text == "a few seconds" else f"about {text}"


# `Generating.what` of the images drawn between two inversions of a length to choose among them (`restarts`)
_SELECTION = "selection images"


@dataclass
class _Length:
    """The length in progress: what it has done and what it may still do."""

    seed_index: int
    m: int
    attempt: int = 0  # the inversion in progress (`InversionStep.restart`; the `restarts` setting runs several)
    step: int = 0  # last inversion step seen in this inversion
    step_total: int = 0
    phase: str = "inversion"  # "inversion", then "selection" (between restarts), then "images" (the judged ones)
    made: dict[str, int] = field(default_factory=dict)  # images made so far, by `Generating.what`
    planned: dict[str, int] = field(default_factory=dict)  # images `Generating.total` announced, by what
    fixed_s: float = 0.0  # seconds booked to the length's fixed cost so far
    edits_skipped: bool = False  # its distance failed: the edits will not be drawn


class RunTimer:
    """Folds an analysis's events, each with the time it arrived (seconds, any monotonic clock), into this run's
    rates and the work still possible; `estimate()` is the time left after the last event.

    Booking: the time since the previous event goes to the work the event reports: an `InversionStep` to the
    samples since the previous step (the first step of a length to the length's fixed cost: it also covers the
    setup), a `Generating` to its new images' denoising steps, anything else to the length's fixed cost. A new
    `InversionStep.restart`, or a step number that goes back, is another inversion of the length (`restarts`);
    a `Generating` total that grows is more images planned (`max_reconstructions`). `stored`: the rates before
    this run has measured its own (default: `stored_rates` of the world and device of the `Started` event)."""

    def __init__(self, stored: Rates | None = None):
        self._stored_given = stored
        self.stored = stored
        self.config: Any = None  # the resolved AnalysisConfig of the Started event
        self._last: float | None = None
        self._length: _Length | None = None
        self._seed_index = 1
        self._done = False
        self._uses_edits = True  # until a check shows it scored the reconstructions instead
        # measured: seconds and units
        self._inversion_s = self._samples = 0.0
        self._generation_s = self._image_steps = 0.0
        self._fixed_s = 0.0  # of the lengths finished
        self._finished = 0
        self._largest: dict[str, int] = {}  # the largest Generating total seen, by what

    # ------------------------------------------------------------------ folding events

    def observe(self, event: Any, now: float) -> None:
        """Book the time since the previous event and fold `event` in (events of other kinds are timed too)."""
        dt = 0.0 if self._last is None else max(0.0, now - self._last)
        self._last = now
        kind = type(event).__name__
        if kind == "SeedProgress":  # a repeat under another seed: its inner event
            self._seed_index = event.index
            event, kind = event.event, type(event.event).__name__
        handler = _HANDLERS.get(kind, RunTimer._other)
        handler(self, event, dt)

    def _started(self, event, dt: float) -> None:
        self.config = event.config
        if self._stored_given is None:
            model = event.model or {}
            self.stored = stored_rates(model.get("world"), model.get("device"))

    def _current(self, m: int) -> tuple[_Length, bool]:
        """The length record of length m under the current seed, and whether it is new."""
        length = self._length
        if length is not None and (length.seed_index, length.m) == (self._seed_index, m):
            return length, False
        self._length = _Length(self._seed_index, m)
        return self._length, True

    def _step(self, event, dt: float) -> None:
        length, new = self._current(event.num_tokens)
        attempt = getattr(event, "restart", None)
        again = (attempt is not None and attempt != length.attempt) or event.step <= length.step \
            or length.phase != "inversion"
        if new:
            length.fixed_s += dt  # the length's setup and its first step
        else:
            self._inversion_s += dt
            self._samples += (event.step if again else event.step - length.step) * self._batch()
            if again:  # another inversion of this length
                length.attempt = attempt if attempt is not None else length.attempt + 1
                length.phase = "inversion"
                length.made.pop(_SELECTION, None)
        length.step, length.step_total = event.step, event.total

    def _generating(self, event, dt: float) -> None:
        length, _ = self._current(event.num_tokens)
        length.phase = "selection" if event.what == _SELECTION else "images"
        before = length.made.get(event.what, 0)
        new = event.done - before if event.done >= before else event.done
        length.made[event.what] = event.done
        length.planned[event.what] = event.total
        self._largest[event.what] = max(self._largest.get(event.what, 0), event.total)
        self._generation_s += dt
        self._image_steps += new * self._inference_steps()

    def _distances(self, event, dt: float) -> None:
        self._other(event, dt)
        if self._length is not None and not event.distance_passed and not self._get("always_check_edits", False):
            self._length.edits_skipped = True

    def _check(self, event, dt: float) -> None:
        self._other(event, dt)
        self._uses_edits = event.check_scored == _SCORED_EDITS

    def _length_done(self, event, dt: float) -> None:
        self._other(event, dt)
        if self._length is not None:
            self._fixed_s += self._length.fixed_s
            self._finished += 1
            self._length = None

    def _decision(self, event, dt: float) -> None:
        self._done = True

    def _other(self, event, dt: float) -> None:
        if self._length is not None:
            self._length.fixed_s += dt

    # ------------------------------------------------------------------ the settings

    def _get(self, name: str, default: Any) -> Any:
        value = getattr(self.config, name, None)
        return default if value is None else value

    def _batch(self) -> int:
        return int(self._get("batch_size", 1))

    def _inference_steps(self) -> int:
        return int(self._get("num_inference_steps", 1))

    def _attempts(self, m: int) -> int:
        """Inversions length `m` may run at most (`AnalysisConfig.restarts_at`: the `restarts` setting)."""
        return self.config.restarts_at(m) if self.config is not None else 1

    def _images(self, what: str, m: int) -> int:
        """Images of `what` one length may draw at most (per inversion for the selection images): the settings'
        count, or more where a length announced more."""
        if what == "reconstructions":
            planned = max(int(self._get("num_reconstructions", 0)), int(self._get("max_reconstructions", 0)))
        elif what == "edits":
            planned = int(self._get("num_edits", 0)) if self._uses_edits else 0
        else:  # selection images: only between several inversions
            planned = int(self._get("selection_images", 0)) if self._attempts(m) > 1 else 0
        return max(planned, self._largest.get(what, 0))

    # ------------------------------------------------------------------ the estimate

    def rates(self) -> Rates:
        """This run's rates where measured, else the stored ones (None where neither is known)."""
        stored = self.stored or Rates()
        per_sample = self._inversion_s / self._samples if self._samples else stored.per_sample
        per_image_step = self._generation_s / self._image_steps if self._image_steps else stored.per_image_step
        if self._finished:
            per_length = self._fixed_s / self._finished
        elif self._length is not None and stored.per_length is None:
            per_length = self._length.fixed_s  # a lower bound until a length has finished
        else:
            per_length = stored.per_length
        return Rates(per_sample, per_image_step, per_length, MEASURED if self._measured() else stored.source)

    def _measured(self) -> bool:
        """True once this run has timed every rate itself (after its first length)."""
        return bool(self._samples and self._image_steps and self._finished)

    def _steps(self, m: int) -> int:
        """Inversion steps of each of length m's inversions: a later length starts warm when the settings say so
        (the runners keep each length's tokens for the next), which may give it fewer; with nested inversions
        only the first length inverts (`AnalysisConfig.projected_inversion_steps`; a restart first needed later is
        counted once its steps come)."""
        return self.config.projected_inversion_steps(m) // self.config.restarts_at(m)

    def _left_in_length(self, length: _Length) -> tuple[int, int]:
        """(inversion samples, images) the length in progress may still take."""
        steps, batch, selection = self._steps(length.m), self._batch(), self._images(_SELECTION, length.m)
        attempts = self._attempts(length.m)
        later = max(0, attempts - 1 - length.attempt)  # inversions not started yet
        samples, images = 0, 0
        if length.phase != "images":
            samples = later * steps * batch
            images = later * selection
            if length.phase == "inversion":
                samples += max(0, length.step_total - length.step) * batch
                images += selection if attempts > 1 else 0
            else:
                images += max(0, length.planned.get(_SELECTION, selection) - length.made.get(_SELECTION, 0))
        for what in ("reconstructions", "edits"):
            if not (what == "edits" and length.edits_skipped):
                images += max(0, max(length.planned.get(what, 0), self._images(what, length.m))
                              - length.made.get(what, 0))
        return samples, images

    def estimate(self) -> Estimate | None:
        """Seconds left after the last event (None: before a length has started, after the decision, or while
        a rate is neither measured nor stored)."""
        length, rates = self._length, self.rates()
        if self._done or length is None or self.config is None or not rates.complete():
            return None
        batch, inference = self._batch(), self._inference_steps()
        max_tokens, seeds = int(self._get("max_tokens", length.m)), int(self._get("seeds", 1))
        if self._get("second_opinion", False):  # at worst a close "5+" runs every length again
            seeds = max(seeds, 2)
        # the length in progress: its inversions and images still possible, and the rest of its fixed cost
        samples, images = self._left_in_length(length)
        now = (samples * rates.per_sample + images * inference * rates.per_image_step +
               max(0.0, rates.per_length - length.fixed_s))
        # every later length at worst: the rest of this seed's, then every length of each seed still to come
        def whole(m: int) -> float:
            images = (self._attempts(m) * self._images(_SELECTION, m) + self._images("reconstructions", m) +
                      self._images("edits", m))
            return (self._attempts(m) * self._steps(m) * batch * rates.per_sample +
                    images * inference * rates.per_image_step + rates.per_length)

        later = (sum(whole(m) for m in range(length.m + 1, max_tokens + 1))
                 + max(0, seeds - length.seed_index) * sum(whole(m) for m in range(1, max_tokens + 1)))
        return Estimate(m=length.m, length_s=now, total_s=now + later, max_tokens=max_tokens, seeds=seeds,
                        measured=self._measured())


# Engine events by class name (analysis.Event; this module imports no engine module that loads torch):
# tests/test_eta.py checks that each name is an engine event.
_HANDLERS = {
    "Started": RunTimer._started,
    "InversionStep": RunTimer._step,
    "Generating": RunTimer._generating,
    "DistancesReady": RunTimer._distances,
    "CheckReady": RunTimer._check,
    "LengthDone": RunTimer._length_done,
    "Decision": RunTimer._decision,
}
