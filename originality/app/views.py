"""What the web app shows of a run, without Gradio: a view model built from engine events or
a stored report, the distance curve, gallery captions and the verdict text.

`RunView.apply(event)` folds one engine event into the view; `status_line` says in one line
what the event means. Tests and other front ends use these without a page.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import html
import io
import os
import re
import tempfile
import threading
import time
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

from .. import citation
from ..eta import RunTimer, describe
from ..analysis import (CheckReady, ComparingReferences, Decision, DistancesReady, Generating, LengthDone,
                       ReconstructionsReady, SeedProgress, Started)
from ..inversion import InversionStep
from ..labels import is_familiar, length_passes
from ..config import DEFAULT_PRESET, DOMAINS, PRESETS, AnalysisConfig, Setting, preset_values, settings
from ..report import SCORED_RECONSTRUCTIONS, Report, drawn_note
from ..uncertainty import PassRule, mean_interval
from ..worlds import all_worlds, check_name_of, world_model_id
from .store import RUN_ID_PATTERN

INTRO = f"""# How original is this image to a text-to-image model?
Progressive multi-token textual inversion ([{citation.SHORT}]({citation.URL})): the model
learns m = 1, 2, … new tokens to describe your image; the fewer tokens it needs to reproduce it, the more
*familiar* the image is to the model, and the more it needs, the more *original*.

<small>Method: {citation.markdown()}</small>"""
CSS = """
#verdict h2 { margin: 0.2em 0; }
.length-row { border-top: 1px solid var(--border-color-primary); padding-top: 0.4em; }
#query-image img { width: 100%; height: 100%; object-fit: contain; }
/* a length's galleries show every image: Gradio's gallery without a height keeps between 450 px and 55% of the
   window (a scrollbar clips rows beyond it, blank space pads fewer) */
.all-images .grid-wrap { min-height: 0 !important; max-height: none !important; overflow-y: visible !important; }
"""
STEP_UPDATES = 20  # status lines per inversion (every 5% of the steps)
MAX_REFERENCES = int(next(s.public_max for s in settings() if s.name == "max_references"))  # the app's upload
# The domain choices besides the presets: the world's own word, or a word typed by the user.
DOMAIN_DEFAULT = "default"
DOMAIN_CUSTOM = "custom"
_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")  # every ASCII punctuation character (CommonMark can escape each)


def uploaded_file(value) -> str | None:
    """An upload as the analysis gets it (the app's events use preprocess=False: Gradio decodes nothing): the
    uploaded file's path as it is, so that `load_image` applies the one rule and a bad file gets its message."""
    if isinstance(value, dict):
        return value.get("path") or value.get("url")
    return value


def plain(text: Any) -> str:
    """`text` as literal text inside a Markdown component: every ASCII punctuation character backslash-escaped,
    so no link, autolink, emphasis, heading or HTML tag can form from it (what a visitor typed stays text)."""
    return _PUNCTUATION.sub(r"\\\1", str(text))


def toast(text: Any) -> str:
    """A message for gr.Error / gr.Warning, whose popup renders HTML: <, > and & as entities."""
    return html.escape(str(text), quote=False)


def sentence(text: str) -> str:
    """A message as a sentence: first letter upper case."""
    text = str(text).strip()
    return (text[:1].upper() + text[1:]) if text else text


@dataclass
class LengthView:
    m: int
    reconstructions: list = field(default_factory=list)
    distances: list[float] = field(default_factory=list)
    mean: float | None = None
    std: float | None = None
    distance_passed: bool | None = None
    edits: list = field(default_factory=list)
    check_scores: list[float] = field(default_factory=list)
    check_scored: str = ""
    check_passed: bool | None = None
    check_detail: str = ""
    steps_used: int | None = None  # inversion steps run so far / in all
    stop_reason: str = ""
    done: bool = False

    @property
    def passed(self) -> bool:
        return length_passes(self.distance_passed, self.check_passed)

    def interval(self) -> str:
        """'95% CI 0.11-0.26' of the mean distance over the reconstructions ('' for fewer than two)."""
        ci = mean_interval(self.distances)
        return "" if ci is None else ci.span(3, "–")


@dataclass
class RunView:
    """Everything shown for one run, built from engine events (`apply`) or from a stored report."""

    query: Any = None
    config: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    lengths: dict[int, LengthView] = field(default_factory=dict)
    report: Report | None = None
    timer: RunTimer = field(default_factory=RunTimer)  # the time left (`eta`), from the events' arrival times

    def length(self, m: int) -> LengthView:
        return self.lengths.setdefault(m, LengthView(m))

    @classmethod
    def from_report(cls, report: Report) -> "RunView":
        view = cls(query=report.query, config=dict(report.config), model=dict(report.model), report=report)
        for r in report.results:
            view.lengths[r.num_tokens] = LengthView(
                m=r.num_tokens, reconstructions=r.reconstructions, distances=r.distances, mean=r.mean_distance,
                std=r.std_distance, distance_passed=r.distance_passed, edits=r.edits, check_scores=r.check_scores,
                check_scored=r.check_scored, check_passed=r.check_passed, check_detail=r.check_detail,
                steps_used=r.steps_used, stop_reason=r.stop_reason, done=True)
        return view

    def apply(self, event: Any, at: float | None = None) -> int | None:
        """Fold an engine event into the view; returns the token length it changed (None: none). `at`: when the
        event arrived (seconds on a monotonic clock), for the time left (`timer`)."""
        if at is not None:
            self.timer.observe(event, at)
        if isinstance(event, Started):
            self.query, self.config, self.model = event.query, event.config.to_dict(), dict(event.model)
        elif isinstance(event, InversionStep) and event.stop_reason:
            lv = self.length(event.num_tokens)
            lv.steps_used, lv.stop_reason = event.step, event.stop_reason
            return event.num_tokens
        elif isinstance(event, ReconstructionsReady):
            self.length(event.num_tokens).reconstructions = list(event.images)
            return event.num_tokens
        elif isinstance(event, DistancesReady):
            lv = self.length(event.num_tokens)
            lv.distances, lv.mean, lv.std = list(event.distances), event.mean, event.std
            lv.distance_passed = event.distance_passed
            return event.num_tokens
        elif isinstance(event, CheckReady):
            lv = self.length(event.num_tokens)
            lv.edits, lv.check_scores, lv.check_scored = list(event.images), list(event.check_scores), \
                event.check_scored
            lv.check_passed, lv.check_detail = event.check_passed, event.check_detail
            return event.num_tokens
        elif isinstance(event, LengthDone):
            self.length(event.result.num_tokens).done = True
            return event.result.num_tokens
        elif isinstance(event, Decision):
            self.report = event.report
        return None

    @property
    def threshold(self) -> float:
        return float(self.config.get("threshold") or 0.0)

    @property
    def pass_rule(self) -> PassRule:
        """The distance half of the run's pass rule, from its settings (`uncertainty.PassRule`)."""
        return PassRule.recorded(self.config, self.threshold)

    @property
    def max_tokens(self) -> int:
        return int(self.config.get("max_tokens") or 1)

    @property
    def check_name(self) -> str:
        return check_name_of(self.model.get("world", ""))  # generic for a world this installation does not know

    def images(self) -> dict:
        """What gallery clicks need: the query and each length's images."""
        return {"query": self.query,
                "recon": {m: lv.reconstructions for m, lv in self.lengths.items()},
                "edits": {m: lv.edits for m, lv in self.lengths.items()}}


def time_left(view: RunView) -> str:
    """' · about 40 s left for m = 2, at most about 3 min if it goes on to m = 5' (`eta.describe`), or ''."""
    text = describe(view.timer.estimate())
    return f" · {text}" if text else ""


def status_line(view: RunView, event: Any, elapsed: float) -> str | None:
    """One line for the status bar after `event` (None: nothing new to say); while a length runs it ends with
    the time left (`time_left`)."""
    if isinstance(event, SeedProgress):  # a repeat with another seed: its progress, not the page's rows
        inner = event.event
        where = (f"second opinion (seed {event.seed})" if event.second_opinion
                 else f"seed {event.index} of {event.total}")
        if isinstance(inner, InversionStep) and (inner.step == 1 or inner.step == inner.total):
            return f"{where}: m={inner.num_tokens}: step {inner.step}/{inner.total} · {elapsed:.0f} s{time_left(view)}"
        if isinstance(inner, LengthDone):
            return f"{where}: m={inner.result.num_tokens}: {'passes' if inner.result.passed else 'fails'} · {elapsed:.0f} s"
        return None
    if isinstance(event, Started):
        return (f"Running on {view.model.get('name')} ({view.model.get('device')}): trying "
                f"m = 1 … {view.max_tokens} learned tokens.")
    if isinstance(event, InversionStep):
        every = max(1, int(view.config.get("steps") or 1) // STEP_UPDATES)
        if event.step == 1 or event.step % every == 0 or event.step == event.total:
            return (f"m={event.num_tokens}: step {event.step}/{event.total}, loss {event.loss:.4f} · {elapsed:.0f} s"
                    f"{time_left(view)}")
        return None
    if isinstance(event, Generating):
        return (f"m={event.num_tokens}: generating {event.what} {event.done}/{event.total} · {elapsed:.0f} s"
                f"{time_left(view)}")
    if isinstance(event, ReconstructionsReady):
        return f"m={event.num_tokens}: scoring {len(event.images)} reconstructions… · {elapsed:.0f} s"
    if isinstance(event, DistancesReady):
        return (f"m={event.num_tokens}: mean distance {event.mean:.3f} "
                f"({view.pass_rule.comparison(event.distances, event.distance_passed)}); "
                f"checking… · "
                f"{elapsed:.0f} s")
    if isinstance(event, LengthDone):
        lv = view.length(event.result.num_tokens)
        return f"m={lv.m}: {'passes' if lv.passed else 'fails'} · {elapsed:.0f} s"
    if isinstance(event, ComparingReferences):
        return f"comparing with {event.count} reference image{'s' if event.count > 1 else ''}… · {elapsed:.0f} s"
    return None


def curve_figure(view: RunView):
    """Mean distance per token length with its 95% interval (what decides a length at the threshold), the
    threshold, and the score."""
    from matplotlib.figure import Figure  # noqa: PLC0415 - matplotlib only when a figure is drawn

    fig = Figure(figsize=(5.6, 3.3), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    points = []
    for m, lv in sorted(view.lengths.items()):
        if lv.mean is not None:
            ci = mean_interval(lv.distances)
            points.append((m, lv.mean, (ci.low, ci.high) if ci else (lv.mean, lv.mean)))
    if points:
        ms, means, bars = zip(*points)
        below, above = [mu - b[0] for mu, b in zip(means, bars)], [b[1] - mu for mu, b in zip(means, bars)]
        ax.errorbar(ms, means, yerr=[below, above], fmt="o-", color="#2563eb", ecolor="#93c5fd", capsize=4, lw=2,
                    label="mean and 95% interval over reconstructions")
        top = max(b[1] for b in bars)
    else:
        top = 0.0
    ax.axhline(view.threshold, color="#dc2626", ls="--", lw=1.5, label=f"threshold {view.threshold:g}")
    score = view.report.score if view.report is not None else None
    # not where a second opinion's run (not drawn) gave the score: the first run's point there failed
    if score is not None and score in view.lengths and view.lengths[score].mean is not None \
            and view.lengths[score].passed:
        chosen = view.lengths[score]
        on_doubt = view.pass_rule.passed_on_doubt(chosen.distances, chosen.distance_passed)
        doubt = " (benefit of the doubt)" if on_doubt else ""
        ax.plot([score], [chosen.mean], "o", ms=16, mfc="none", mec="#16a34a", mew=2.5,
                label=f"score: {score} token{'s' if score > 1 else ''}{doubt}")
    ax.set_xlim(0.5, view.max_tokens + 0.5)
    ax.set_xticks(range(1, view.max_tokens + 1))
    ax.set_ylim(0, max(top, view.threshold) * 1.15 + 0.02)
    ax.set_xlabel("learned tokens m")
    ax.set_ylabel(f"distance ({view.model.get('distance', '?')})", fontsize=9)
    ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    return fig


def _mark(ok: bool | None) -> str:
    return "(…)" if ok is None else ("(pass)" if ok else "(fail)")


def row_header(view: RunView, lv: LengthView) -> str:
    parts = [f"**m = {lv.m}** token{'s' if lv.m > 1 else ''}"]
    if lv.mean is None:
        parts.append("scoring the reconstructions…")
    else:
        ci = lv.interval()
        parts.append(f"distance {lv.mean:.3f}{f' ({ci})' if ci else ''} "
                     f"{view.pass_rule.comparison(lv.distances, lv.distance_passed)} "
                     f"{_mark(lv.distance_passed)}")
        if drawn := drawn_note(len(lv.distances), view.config.get("num_reconstructions")):
            parts.append(drawn)
        parts.append(f"{view.check_name}: {lv.check_detail or '…'} {_mark(lv.check_passed)}"
                     if lv.check_passed is not None else f"{view.check_name}: running…")
    if lv.steps_used:
        parts.append(f"{lv.steps_used} steps ({lv.stop_reason})" if lv.stop_reason else f"{lv.steps_used} steps")
    if lv.done:
        parts.append("**passes**" if lv.passed else "fails")
    sim = view.report.similarity if view.report is not None else None
    near = next((n for n in sim.lengths if n.num_tokens == lv.m), None) if sim else None
    if near is not None:
        parts.append(f"nearest reference: {plain(near.name)} (copy {near.copy:.2f})")
    return " · ".join(parts)


# Served files (the gallery's, and Gradio's own cache: `app.build_demo`'s delete_cache) older than this are deleted,
# so a Space that runs for weeks does not fill its disk; a page open for longer loses its images, and a saved run
# (its share link) is drawn again from the run store.
FILE_MAX_AGE_S = 24 * 3600
FILE_SWEEP_EVERY_S = 3600


GALLERY_PREFIX = "originality-gallery-"


@functools.cache
def _gallery_dir() -> Path:
    """The folder of `gallery_file`'s files: one per app process, made at its first image."""
    return Path(tempfile.mkdtemp(prefix=GALLERY_PREFIX))


_last_sweep = [0.0]  # monotonic time of the gallery folder's last sweep (`sweep_gallery`)


def sweep_gallery(max_age_s: float = FILE_MAX_AGE_S, now: float | None = None) -> int:
    """Delete the gallery files not written or handed out for `max_age_s` seconds (`now`: the wall-clock time;
    default time.time()), this process's and those left by earlier app processes (their folders go once empty);
    returns how many files. An image whose file went is written again when next shown."""
    now = time.time() if now is None else now
    ours = _gallery_dir()
    gone = 0
    for folder in [ours, *(f for f in ours.parent.glob(f"{GALLERY_PREFIX}*") if f != ours and f.is_dir())]:
        for path in folder.glob("*.png"):
            try:
                if now - path.stat().st_mtime > max_age_s:
                    path.unlink()
                    gone += 1
            except FileNotFoundError:  # another thread or process swept it first
                continue
        if folder != ours:
            with contextlib.suppress(OSError):  # not empty: files of a live process, or its staging
                folder.rmdir()
    return gone


def gallery_file(image) -> str:
    """A gallery item as a file written once. Handed a PIL image, Gradio encodes it and rewrites its cache file
    on every update that carries it, truncating a file the browser may be fetching at that moment (the image
    then never loads: "Too much data for declared Content-Length" in the server's log); a path is copied into its
    cache once, atomically. `image`: a PIL image, written as PNG (named by its content, written under a temporary
    name and renamed into place) into a folder of the system's temp directory, which Gradio serves from, and
    remembered on the image; or a path, returned as it is."""
    if isinstance(image, (str, Path)):
        return str(image)
    known = getattr(image, "_gallery_file", None)
    if known and _fresh(known):
        return known
    if time.monotonic() - _last_sweep[0] > FILE_SWEEP_EVERY_S:
        _last_sweep[0] = time.monotonic()
        sweep_gallery()
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = buffer.getvalue()
    folder = _gallery_dir()
    folder.mkdir(exist_ok=True)  # another app process's sweep removes an empty folder, ours too
    path = folder / f"{hashlib.sha256(data).hexdigest()[:32]}.png"
    if not _fresh(path):
        staging = folder / f".{path.name}.{os.getpid()}.{threading.get_ident()}"
        staging.write_bytes(data)
        os.replace(staging, path)
    image._gallery_file = str(path)
    return str(path)


def _fresh(path: str | Path) -> bool:
    """Whether a gallery file is there, marking it as handed out now (a sweep deletes only files not handed out
    for FILE_MAX_AGE_S)."""
    try:
        os.utime(path)
        return True
    except FileNotFoundError:
        return False


def recon_items(view: RunView, lv: LengthView) -> list:
    """(image, caption) per reconstruction: its distance, and the check's verdict where it scored them."""
    scored_here = lv.check_scored == SCORED_RECONSTRUCTIONS and len(lv.check_scores) == len(lv.reconstructions)
    layout = view.model.get("in_distribution") == "layout-variation"
    items = []
    for i, im in enumerate(lv.reconstructions):
        caption = f"d={lv.distances[i]:.2f}" if i < len(lv.distances) else f"#{i + 1}"
        if scored_here:
            s = lv.check_scores[i]
            caption += (" moved" if s >= 0.5 else " copy") if layout else f" check {s:.2f}"
        items.append((gallery_file(im), caption))
    return items


def edit_items(view: RunView, lv: LengthView) -> list:
    subject = view.config.get("edit_subject", "subject")
    return [(gallery_file(im), f"P({subject})={lv.check_scores[i]:.2f}" if i < len(lv.check_scores)
             else f"edit #{i + 1}") for i, im in enumerate(lv.edits)]


def verdict_head(report: Report) -> str:
    """'Familiar: needs 1 token', 'Original: needs 3 tokens', 'Original: needs more than 5 tokens'."""
    if is_familiar(report.score):
        return "Familiar: needs 1 token"
    if report.score is None:
        return f"Original: needs more than {report.max_tokens} tokens"
    return f"Original: needs {report.score} tokens"


def verdict_markdown(report: Report) -> str:
    head = verdict_head(report)
    model = report.model
    details = (f"model {model.get('name', '?')} ({model.get('world', '?')}) · {model.get('distance', 'distance')} "
               f"threshold {report.threshold:g} · {len(report.results)} length(s) tried in "
               f"{report.total_seconds:.0f} s · {model.get('dtype', '?')}")
    notes = "".join(f"\n\n<small>{note}</small>" for note in [*report.notes, report.threshold_source] if note)
    spread = report.label_distribution
    seeds = (f"\n\n**Over {len(spread.labels)} inversion seeds:** {spread.describe()}. {report.seeds_note()}".rstrip()
             if spread else "")
    similarity = f"\n\n{similarity_markdown(report)}" if report.similarity is not None else ""
    return (f"## {head}\n\n{report.verdict}{seeds}\n\n{report.expected_length_sentence()}\n\n{report.rerun_sentence()}"
            f"\n\n<small>{details}</small>{notes}{similarity}")


def best_pair(view: RunView) -> tuple | None:
    """(query, the reconstruction closest to it) over all lengths, for the slider."""
    best = None
    for lv in view.lengths.values():
        for im, d in zip(lv.reconstructions, lv.distances):
            if best is None or d < best[0]:
                best = (d, im)
    return (view.query, best[1]) if best else None


def domain_choices() -> list[tuple[str, str]]:
    """(label, value) for the domain dropdown: the world's own word, the presets, a custom word."""
    return [("default of the model world", DOMAIN_DEFAULT)] + [(d, d) for d in DOMAINS] + [
        ("custom word…", DOMAIN_CUSTOM)]


def world_choices() -> list[tuple[str, str]]:
    """(label, world name) per registered world, for a dropdown."""
    return [(w.title if w.title == w.name else f"{w.title} ({w.default_model})", w.name) for w in all_worlds()]


def examples_table(folder) -> tuple[list, list]:
    """([[image path, world name]], [label]) of the example images present in `folder` of the worlds that can
    run on this server (a Stable Diffusion example on a CPU server is left out)."""
    present = [(folder / f, w.name, label) for w in all_worlds() if w.unavailable(world_model_id(w)) is None
               for f, label in w.examples if (folder / f).is_file()]
    return [[str(p), w] for p, w, _ in present], [label for _, _, label in present]


def setting_placeholder(setting: Setting) -> str:
    """What a blank Advanced field means: the world's default or the presets' values."""
    if setting.world_default:
        return "world default"
    values = preset_values(setting.name, "{preset}: {value}", " · ")
    return values if " · " in values else f"preset: {values}"


def setting_text(value: Any) -> str:
    """A setting as the text of its form field (None: blank)."""
    return "" if value is None else str(value)


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or value != value  # NaN


def form_config(preset: str, domain: str | None, custom_word: str | None, values: dict[str, Any],
                defaults: dict[str, Any] | None = None) -> AnalysisConfig:
    """The settings of a form: the preset, then `defaults`, then every non-blank value and the domain
    (a preset, DOMAIN_DEFAULT or DOMAIN_CUSTOM with `custom_word`); validated within the public app's
    limits (`Setting.public_max`; ValueError says what is wrong)."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    overrides = {**(defaults or {}), **{name: value for name, value in values.items() if not _blank(value)}}
    if domain == DOMAIN_CUSTOM:
        word = (custom_word or "").strip()
        if not word:
            raise ValueError("type the custom domain word (one word, e.g. 'castle'), or pick a domain from the list")
        overrides["domain"] = word
    elif domain not in (None, "", DOMAIN_DEFAULT):
        overrides["domain"] = domain
    return AnalysisConfig.from_dict(overrides, base=PRESETS[preset], public=True)


def domain_fields(domain: str | None, world: str | None = None) -> tuple[str, str]:
    """(domain dropdown value, custom word) that give `domain`: a preset, the world's own word
    (DOMAIN_DEFAULT; no world: None is the default) or a custom word."""
    known = {w.name: w.domain for w in all_worlds()}
    if domain in DOMAINS:
        return domain, ""
    if domain is None or (world in known and domain == known[world]):
        return DOMAIN_DEFAULT, ""
    return DOMAIN_CUSTOM, domain


def form_values(report: Report, preset: str | None, names: list[str]) -> dict[str, Any]:
    """The form that reproduces a stored run: image (as the visitor gave it, where the model was shown the world's
    drawing of it: the same settings redraw it again), world, domain, custom_word, preset, and the text of each
    setting in `names`."""
    config, world = report.config, report.model.get("world")
    domain_value, word = domain_fields(config.get("domain"), world)
    image = report.given_image if report.given_image is not None else report.query
    values = {"image": image, "world": world, "domain": domain_value, "custom_word": word,
              "preset": preset if preset in PRESETS else DEFAULT_PRESET}
    values.update({name: setting_text(config.get(name)) for name in names})
    return values


def share_url(request: Any, run_id: str) -> str:
    """The page's own address with ?run=<id> (from the Referer of the page's request, else the request URL)."""
    base = ""
    if request is not None:
        try:
            headers = {str(k).lower(): v for k, v in dict(request.headers).items()}
        except Exception:  # noqa: BLE001
            headers = {}
        page = headers.get("referer") or ""
        if not page:
            try:
                page = str(request.url)
            except Exception:  # noqa: BLE001
                page = ""
            page = page.split("/gradio_api/")[0]
        base = page.split("#")[0].split("?")[0]
        if base and not base.endswith("/"):
            base += "/"
    return f"{base}?run={run_id}"


def slider_pair(images: dict | None, m: int, kind: str, index: int | list | None) -> tuple[tuple, str] | None:
    """((query, image), label) for a click on image `index` of length m's gallery `kind` ("recon" or "edits");
    `index` as Gradio's select event gives it (an int, or a list whose first item is the index)."""
    if not isinstance(index, int):
        index = index[0] if index else 0
    pool = ((images or {}).get(kind) or {}).get(m) or []
    if not 0 <= index < len(pool):
        return None
    what = "reconstruction" if kind == "recon" else "edit"
    return (images["query"], pool[index]), f"query ↔ {what} #{index + 1} (m = {m})"


def progress_count(event: Any) -> tuple[int, int] | None:
    """(done, total) of the inversion steps or images an event reports (inside a `SeedProgress` too), for a
    progress bar; None for other events."""
    if isinstance(event, SeedProgress):
        event = event.event
    if isinstance(event, InversionStep):
        return event.step, event.total
    if isinstance(event, Generating):
        return event.done, event.total
    return None


# --------------------------------------------------------------------------- "Your runs": the visitor's own runs

YOUR_RUNS_KEEP = 50  # entries kept in the browser, newest first
YOUR_RUNS_EMPTY = "No runs yet: each run you finish on this page is listed here, in this browser only."


def your_run(run_id: str, report: Report, preset: str | None, image_name: str | None = None) -> dict:
    """The entry of a finished, stored run in the visitor's list (kept in their browser, `gr.BrowserState`):
    what they need to recognise it and its id, which opens it through its share link."""
    return {"id": run_id, "verdict": verdict_head(report), "world": report.model.get("world", ""),
            "preset": preset or "", "created": report.created, "image": image_name or ""}


def remember_run(runs: Any, entry: dict) -> list[dict]:
    """`runs` (the list as the browser kept it; anything else counts as empty) with `entry` first, an older entry
    of the same id dropped, at most YOUR_RUNS_KEEP entries."""
    kept = [r for r in runs if isinstance(r, dict) and r.get("id") != entry["id"]] if isinstance(runs, list) else []
    return [entry, *kept][:YOUR_RUNS_KEEP]


def your_runs_html(runs: Any) -> str:
    """The visitor's runs as HTML: one link per run to its share address (`?run=<id>`, on this page), with its
    verdict, image name, world, preset and time. The list comes from the browser, so it is treated as untrusted:
    an entry without a well-formed run id is left out and every text is escaped."""
    items = []
    for run in runs if isinstance(runs, list) else []:
        run_id = run.get("id") if isinstance(run, dict) else None
        if not isinstance(run_id, str) or not RUN_ID_PATTERN.fullmatch(run_id):
            continue
        created = str(run.get("created") or "")[:16].replace("T", " ")
        details = " · ".join(html.escape(str(run.get(k) or "")) for k in ("image", "world", "preset")
                             if run.get(k))
        when = f" · {html.escape(created)} UTC" if created else ""
        items.append(f'<li><a href="?run={run_id}" target="_self">{html.escape(str(run.get("verdict") or run_id))}'
                     f'</a>{" · " + details if details else ""}{when}</li>')
    if not items:
        return f"<p class='your-runs-empty'>{YOUR_RUNS_EMPTY}</p>"
    return f"<ol class='your-runs'>{''.join(items)}</ol>"


# --------------------------------------------------------------------------- similarity to the references

SIMILARITY_NOTE = (f"Copy similarity after [{citation.DCR.short}]({citation.DCR.url}), style similarity after "
                   f"[{citation.CSD.short}]({citation.CSD.url}). Closeness to the images you named, measured by "
                   "image features: not a legal judgement, and not proof that an image was in the model's "
                   "training data. The score above does not depend on it.")


def similarity_pair(report: Report | None) -> list | None:
    """[(query, caption), (nearest reference, caption)] with both numbers, side by side (None: no references)."""
    sim = report.similarity if report is not None else None
    if sim is None or sim.nearest is None or sim.nearest >= len(sim.images):
        return None
    ref = sim.references[sim.nearest]
    style = "style n/a" if ref.style is None else f"style {ref.style:.2f}"
    return [(report.query, report.query_caption),
            (sim.images[sim.nearest], f"{ref.name}: copy {ref.copy:.2f} · {style}")]


def similarity_markdown(report: Report | None) -> str:
    """The references' table (copy, style, against the copy line), each length's nearest reference, what the
    numbers are; "" without references. Names the visitor gave are literal text (`plain`)."""
    sim = report.similarity if report is not None else None
    if sim is None:
        return ""
    if sim.error:
        return f"**Similarity to your references** not measured: {plain(sim.error)}"
    rows = "\n".join(f"| {plain(r.name)} | {r.copy:.3f}{' ≥ line' if r.copied else ''} | "
                      f"{'n/a' if r.style is None else f'{r.style:.3f}'} |" for r in sim.references)
    lengths = "\n".join(f"- m = {n.num_tokens}: reconstructions nearest to {plain(n.name)} (copy {n.copy:.3f}; your "
                        f"image {n.query_copy:.3f})" for n in sim.lengths)
    style = plain(sim.style_measure or sim.style_note)
    return (f"**Similarity to your references** (copy line {sim.copy_line:g})\n\n| reference | copy | style |\n"
            f"|---|---|---|\n{rows}\n\n{lengths}\n\n<small>copy: {plain(sim.copy_measure)}. style: {style}. "
            f"{SIMILARITY_NOTE}</small>")
