"""The web app: upload an image, watch the progressive analysis, share the result.

    python app.py                      # http://0.0.0.0:7860 (also what Hugging Face Spaces runs)

It only wires the engine to Gradio; no model is loaded at import, and every handler is a
plain function that tests call directly. A run is the engine's pieces (`originality.prepare`,
`iter_length`, `decide`): one call per token length m = 1, 2, ..., stopping at the first
length that passes, so its events are those of `originality.iter_analyze`.

ZeroGPU (Hugging Face Spaces, when the `spaces` package is importable): each token length is
its own `@spaces.GPU` call (a generator whose events stream back), so every call fits the
per-call limit; its duration is estimated from the settings (`gpu_seconds`: 30 s + 0.04 s x
steps x batch_size + 0.03 s x (reconstructions + edits) x inference steps, at most
ORIGINALITY_GPU_MAX_SECONDS). Arguments are picklable (image path, settings dict, model id,
m), and the model is loaded inside the GPU worker (`load_model`, cached per process).

Environment (all optional):
    ORIGINALITY_MODEL        model folder or Hub id to use (see `originality.models.default_model_id`)
    ORIGINALITY_DATA_DIR     where finished runs are stored (default ./data; see `originality.store`)
    ORIGINALITY_HF_DATASET   + HF_TOKEN: mirror runs to this Hugging Face dataset repo
    ORIGINALITY_DEFAULTS     JSON object of `AnalysisConfig` fields applied on top of the chosen preset,
                             e.g. '{"max_tokens": 2, "steps": 20, "num_edits": 2}'. The fields shown under
                             "Advanced" are prefilled with them; the others (num_edits, edit_pass_fraction,
                             reconstruction_prompt, generation_batch_size, ...) apply to every run.
    ORIGINALITY_RUN_TIMEOUT  seconds one run may take before it is stopped (default 900)
    ORIGINALITY_CONCURRENCY  analyses run at once (default 1); ORIGINALITY_QUEUE_SIZE: waiting runs (default 16)
    ORIGINALITY_MAX_UPLOAD   largest upload, e.g. "20mb" (default)
    ORIGINALITY_GPU_MAX_SECONDS  the most a ZeroGPU call (one token length) may reserve (default 300)
    GRADIO_SERVER_NAME, PORT server address (default 0.0.0.0:7860)

API (gradio_client):
    Client(url).predict(handle_file("photo.png"), "shapes", "default", "", "fast", "{}", api_name="/analyze")
        -> {"run_id", "share_url", "summary"}   (summary = Report.summary(): score, label, verdict, ...)
    Client(url).predict("<run id>", api_name="/load_run") -> {"run_id", "summary"}
"""

import json
import logging
import math
import os
import shutil
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator

import gradio as gr

from originality import (
    AnalysisConfig,
    Decision,
    DistancesReady,
    EditCheckReady,
    InversionStep,
    LengthDone,
    Prepared,
    ReconstructionsReady,
    Report,
    Started,
    decide,
    iter_length,
    load_model,
    prepare,
)
from originality.config import DOMAINS, PRESETS
from originality import gpu_costs
from originality.models import SD_MODEL_ID, SHAPES_MODEL_DIR, sd_available
from originality.shapes.model import is_shapes_model
from originality.store import InvalidRunId, RunNotFound, RunStore

try:  # Hugging Face ZeroGPU: GPU work must run inside @spaces.GPU functions
    import spaces  # type: ignore[import-not-found]
except ImportError:
    spaces = None

logger = logging.getLogger("originality.app")

ROOT = Path(__file__).resolve().parent
EXAMPLES_DIR = ROOT / "assets" / "examples"
MAX_ROWS = 16  # AnalysisConfig.validate allows at most 16 token lengths
WORLD_CHOICES = [("shapes", "shapes"), (f"Stable Diffusion ({SD_MODEL_ID})", "sd")]
DOMAIN_DEFAULT = "default"
DOMAIN_CUSTOM = "custom"
DOMAIN_CHOICES = [("default of the model world", DOMAIN_DEFAULT)] + [(d, d) for d in DOMAINS] + [
    ("custom word…", DOMAIN_CUSTOM)]
# The settings under "Advanced", in order: (AnalysisConfig field, label, type).
ADVANCED = [
    ("max_tokens", "max tokens (m = 1 … M)", int),
    ("steps", "inversion steps per m", int),
    ("batch_size", "batch size", int),
    ("learning_rate", "learning rate", float),
    ("num_reconstructions", "reconstructions", int),
    ("num_inference_steps", "inference steps", int),
    ("guidance_scale", "guidance scale", float),
    ("threshold", "distance threshold", float),
    ("edit_prompt", "edit prompt ({} = the learned tokens)", str),
    ("edit_subject", "edit subject", str),
    ("seed", "seed", int),
    ("lr_schedule", "learning-rate schedule (constant / linear / cosine)", str),
]
ADVANCED_NAMES = [name for name, _, _ in ADVANCED]
# Download files are assembled here (Gradio serves only files from the temp dir, cwd or allowed paths).
DOWNLOAD_DIR = Path(tempfile.gettempdir()) / "originality-downloads"
# The download folders are copies rebuilt on demand from the run store, so only the newest few are kept.
DOWNLOAD_KEEP = 32
STEP_UPDATES = 20  # status updates per inversion (every 5% of the steps)
CHECK_LABELS = {"clip-edit": "edit check", "layout-variation": "layout check"}


# --------------------------------------------------------------------------- settings


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as err:
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from err


def parse_defaults(raw: str | None) -> dict[str, Any]:
    """ORIGINALITY_DEFAULTS: a JSON object of AnalysisConfig fields (validated against the fast preset)."""
    if not raw or not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError(f"ORIGINALITY_DEFAULTS is not valid JSON ({err}): {raw!r}") from err
    if not isinstance(data, dict):
        raise ValueError(f"ORIGINALITY_DEFAULTS must be a JSON object of settings, got {raw!r}")
    known = {f.name for f in fields(AnalysisConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"ORIGINALITY_DEFAULTS has unknown settings {unknown}; known: {sorted(known)}")
    AnalysisConfig.preset("fast", **data).validate()
    return data


DEFAULTS: dict[str, Any] = parse_defaults(os.environ.get("ORIGINALITY_DEFAULTS"))


def run_timeout() -> float:
    return float(_env_int("ORIGINALITY_RUN_TIMEOUT", 900))


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or (
        isinstance(value, float) and math.isnan(value))


def _coerce(name: str, value: Any, kind: type) -> Any:
    label = dict((n, lab) for n, lab, _ in ADVANCED).get(name, name)
    if kind is int:
        if isinstance(value, str):
            value = value.strip()
        try:
            number = float(value)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{label} must be a whole number, got {value!r}") from err
        if not number.is_integer():
            raise ValueError(f"{label} must be a whole number, got {value!r}")
        return int(number)
    if kind is float:
        try:
            return float(value)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{label} must be a number, got {value!r}") from err
    return str(value).strip()


_FIELD_KINDS = {f.name: (int if f.type in ("int", int, "int | None") else float if "float" in str(f.type) else str)
                for f in fields(AnalysisConfig)}


def build_config(preset: str, domain: str | None, custom_word: str | None, values: dict[str, Any]) -> AnalysisConfig:
    """The preset, then ORIGINALITY_DEFAULTS, then every non-blank value; validated (ValueError says what is wrong)."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    overrides = dict(DEFAULTS)
    for name, value in values.items():
        if name not in _FIELD_KINDS:
            raise ValueError(f"unknown setting {name!r}; known: {', '.join(sorted(_FIELD_KINDS))}")
        if not _blank(value):
            overrides[name] = _coerce(name, value, _FIELD_KINDS[name])
    if domain == DOMAIN_CUSTOM:
        word = (custom_word or "").strip()
        if not word:
            raise ValueError("type the custom domain word (one word, e.g. 'castle'), or pick a domain from the list")
        overrides["domain"] = word
    elif domain not in (None, "", DOMAIN_DEFAULT):
        overrides["domain"] = domain
    config = AnalysisConfig.preset(preset, **overrides)
    config.validate()
    return config


# --------------------------------------------------------------------------- model worlds


def _is_shapes_folder(model: str) -> bool:
    return Path(model).is_dir() and is_shapes_model(model)


def model_id_for(world: str) -> str:
    """The model a world runs: $ORIGINALITY_MODEL when it is of that world, else the world's standard model."""
    env = os.environ.get("ORIGINALITY_MODEL", "").strip()
    if world == "shapes":
        return env if env and _is_shapes_folder(env) else str(SHAPES_MODEL_DIR)
    if world == "sd":
        return env if env and not _is_shapes_folder(env) else SD_MODEL_ID
    raise ValueError(f"unknown model world {world!r}; choose shapes or Stable Diffusion")


def default_world() -> tuple[str, str]:
    """(world, why) picked the way `originality.models.default_model_id` picks a model."""
    env = os.environ.get("ORIGINALITY_MODEL", "").strip()
    if env:
        return ("shapes" if _is_shapes_folder(env) else "sd"), f"set by ORIGINALITY_MODEL ({env})"
    if sd_available():
        return "sd", "a CUDA GPU is available to run it"
    from originality.device import gpu_problem  # noqa: PLC0415

    problem = gpu_problem()
    if problem:
        return "shapes", f"{problem} The small shapes world runs on a CPU"
    return "shapes", "there is no CUDA GPU here, and the small shapes world runs on a CPU"


def check_world(world: str, model_id: str) -> None:
    """Refuse, before any work, a world that cannot run here."""
    if world == "shapes" and not Path(model_id).is_dir():
        raise ValueError(
            f"the shapes-world model is not installed here ({model_id} is missing); train it with "
            "`python -m originality.shapes.train --out assets/shapes-model` or set ORIGINALITY_MODEL")
    if world == "sd" and model_id == SD_MODEL_ID and not sd_available():
        raise ValueError(
            "Stable Diffusion needs a CUDA GPU and its weights; this server has no GPU (or cannot download the "
            "weights). Choose the shapes world.")


# --------------------------------------------------------------------------- engine calls (GPU)


# ZeroGPU reservation for one token length (one `@spaces.GPU` call), from the settings:
#   seconds = GPU_OVERHEAD_S                                         model load/move, query encoding, judges
#           + GPU_S_PER_SAMPLE * steps * batch_size                  inversion: a UNet forward + backward per copy
#           + GPU_S_PER_IMAGE_STEP * (num_reconstructions + num_edits) * num_inference_steps   generation (with CFG)
# rounded up and capped at ORIGINALITY_GPU_MAX_SECONDS (default 300 s, the most one ZeroGPU call may ask for).
# The rates are rough figures for SD v1.x at 512 px in half precision on a ZeroGPU slice. The cost hardly
# depends on m (prompts are padded to 77 tokens either way), so every length gets the same reservation.
# fast preset: 30 + 0.04 * 150 * 8 + 0.03 * (8 + 4) * 20 = 85.2 -> 86 s per length; the paper preset
# (2000 steps x batch 20) is far over the cap and cannot run on ZeroGPU.
# The three rates live in originality/gpu_costs.json with their source (an estimate until
# `benchmarks/gpu_bench.py --update-costs` writes measured ones).
GPU_OVERHEAD_S, GPU_S_PER_SAMPLE, GPU_S_PER_IMAGE_STEP = gpu_costs.rates()


def gpu_seconds(config: dict) -> int:
    """Seconds to reserve on ZeroGPU for one token length with these settings (see the formula above)."""
    c = AnalysisConfig.from_dict(config)
    estimate = (GPU_OVERHEAD_S + GPU_S_PER_SAMPLE * c.steps * c.batch_size
                + GPU_S_PER_IMAGE_STEP * (c.num_reconstructions + c.num_edits) * c.num_inference_steps)
    return min(_env_int("ORIGINALITY_GPU_MAX_SECONDS", 300), math.ceil(estimate))


def _gpu_duration(image: Any, config: dict, model_id: str, m: int) -> int:
    """`spaces.GPU`'s duration callable: called with the arguments of each `engine_length` call."""
    return gpu_seconds(config)


def gpu_call(fn):
    """`spaces.GPU` (ZeroGPU) when the `spaces` package is present, else `fn` unchanged.

    ZeroGPU runs each decorated call in a forked worker, pickles its arguments and
    streams a generator's yields back pickled, and limits each call's duration. The
    decorated unit is therefore ONE TOKEN LENGTH (`length_events`), reserved for
    `_gpu_duration` seconds; `analysis_events` makes one call per length.
    """
    if spaces is None:
        return fn
    return spaces.GPU(duration=_gpu_duration)(fn)


def length_events(image: Any, config: dict, model_id: str, m: int) -> Iterator[Any]:
    """One token length of one analysis: the work of one GPU call.

    Arguments are picklable (a file path or PIL image, a dict of settings, the model id,
    m). The model is loaded here, in the GPU worker (`load_model` caches it per process;
    nothing is loaded at import). Yields the `Prepared` query first (step 1, cheap, so
    redone by every call), then the engine's events for length m, ending with `LengthDone`.
    """
    model = load_model(model_id)
    prepared = prepare(image, AnalysisConfig.from_dict(config), model)
    yield prepared
    yield from iter_length(prepared, model, m)


engine_length = gpu_call(length_events)


class RunTimeout(Exception):
    pass


def _engine_events(events: Iterator[Any]) -> Iterator[Any]:
    """`events` with engine errors turned into messages for people (gr.Error)."""
    while True:
        try:
            event = next(events)
        except StopIteration:
            return
        except ValueError as err:  # ImageInputError and bad settings: the message is for people
            raise gr.Error(_sentence(str(err)), print_exception=False) from err
        except gr.Error:
            raise
        except Exception as err:  # noqa: BLE001 - show a message, keep the traceback in the log
            logger.exception("analysis failed")
            raise gr.Error(f"The analysis failed ({type(err).__name__}: {err}).") from err
        yield event


def analysis_events(image: Any, world: str, config: AnalysisConfig, timeout: float | None = None) -> Iterator[Any]:
    """The analysis as `iter_analyze`'s events (Started, each length's events, Decision), with
    the app's limits: a time limit, and people-readable errors as gr.Error.

    Each token length is its own `engine_length` call (on ZeroGPU: its own GPU call and
    reservation). This loop applies the stop rule: it stops after the first length whose
    result passes (`LengthDone.result.passed`), and builds the report with `decide`.
    """
    timeout = run_timeout() if timeout is None else timeout
    try:
        model_id = model_id_for(world)
        check_world(world, model_id)
    except ValueError as err:
        raise gr.Error(_sentence(str(err)), print_exception=False) from err
    deadline = time.monotonic() + timeout
    prepared: Prepared | None = None
    started = time.perf_counter()
    results: list = []
    for m in range(1, config.max_tokens + 1):
        events = engine_length(image, config.to_dict(), model_id, m)
        try:
            for event in _engine_events(events):
                if isinstance(event, Prepared):
                    if prepared is not None:
                        continue  # every call prepares the query again; show it once
                    prepared, started = event, time.perf_counter()
                    event = event.started()
                elif isinstance(event, LengthDone):
                    results.append(event.result)
                yield event
                if time.monotonic() > deadline:
                    raise RunTimeout(
                        f"Stopped: the run took longer than the {timeout:.0f} s limit of this server. "
                        "Try the fast preset, fewer tokens or fewer steps.")
        finally:
            events.close()  # a cancelled or stopped run unwinds the engine (and frees the model)
        if prepared is None or len(results) != m:
            raise gr.Error(f"The analysis failed (token length {m} ended without a result).")
        if results[-1].passed:
            break
    yield Decision(decide(prepared, results, time.perf_counter() - started))


def _sentence(text: str) -> str:
    text = text.strip()
    return (text[:1].upper() + text[1:]) if text else text


# --------------------------------------------------------------------------- run store and downloads

_STORE: RunStore | None = None
_STORE_LOCK = threading.Lock()


def get_store() -> RunStore:
    global _STORE
    with _STORE_LOCK:
        if _STORE is None:
            _STORE = RunStore()
        return _STORE


def set_store(store: RunStore | None) -> None:
    """Use `store` from now on (None: a new RunStore from the environment on next use)."""
    global _STORE
    with _STORE_LOCK:
        _STORE = store


def download_files(run_id: str) -> list[str]:
    """report.json, the learned embeddings per m, and a zip of the whole run folder, in a temp folder."""
    store = get_store()
    folder = store.runs_dir / run_id
    out = DOWNLOAD_DIR / run_id
    if not out.is_dir():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{run_id}.", dir=out.parent))
        shutil.copy2(folder / "report.json", tmp / "report.json")
        for sub in sorted(folder.glob("m*/learned_embeds.safetensors")):
            shutil.copy2(sub, tmp / f"learned_embeds_{sub.parent.name}.safetensors")
        with zipfile.ZipFile(tmp / f"originality-run-{run_id}.zip", "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    zf.write(path, f"originality-run-{run_id}/{path.relative_to(folder)}")
        try:
            os.replace(tmp, out)
        except OSError:  # another request made it meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
        prune_downloads(keep=DOWNLOAD_KEEP, current=out)
    names = ["report.json"] + sorted(p.name for p in out.glob("learned_embeds_*.safetensors")) + [
        f"originality-run-{run_id}.zip"]
    return [str(out / n) for n in names]


def prune_downloads(keep: int, current: Path | None = None) -> None:
    """Delete all but the `keep` most recently built download folders (never `current`)."""
    folders = [p for p in DOWNLOAD_DIR.iterdir() if p.is_dir() and not p.name.startswith(".")] \
        if DOWNLOAD_DIR.is_dir() else []
    folders.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    for old in folders[keep:]:
        if old != current:
            shutil.rmtree(old, ignore_errors=True)


def share_url(request: gr.Request | None, run_id: str) -> str:
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


# --------------------------------------------------------------------------- what the page shows


@dataclass
class LengthView:
    m: int
    reconstructions: list = field(default_factory=list)
    distances: list[float] = field(default_factory=list)
    mean: float | None = None
    std: float | None = None
    recon_passed: bool | None = None
    edits: list = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    edit_passed: bool | None = None
    detail: str = ""
    done: bool = False

    @property
    def passed(self) -> bool:
        return bool(self.recon_passed and self.edit_passed)


@dataclass
class RunView:
    """Everything shown for one run, built from engine events or from a stored report."""

    query: Any = None
    config: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    lengths: dict[int, LengthView] = field(default_factory=dict)
    report: Report | None = None

    def length(self, m: int) -> LengthView:
        return self.lengths.setdefault(m, LengthView(m))

    @classmethod
    def from_report(cls, report: Report) -> "RunView":
        view = cls(query=report.query, config=dict(report.config), model=dict(report.model), report=report)
        for r in report.results:
            view.lengths[r.num_tokens] = LengthView(
                m=r.num_tokens, reconstructions=r.reconstructions, distances=r.distances, mean=r.mean_distance,
                std=r.std_distance, recon_passed=r.reconstruction_passed, edits=r.edits, scores=r.edit_scores,
                edit_passed=r.edit_passed, detail=r.edit_detail, done=True)
        return view

    @property
    def threshold(self) -> float:
        return float(self.config.get("threshold") or 0.0)

    @property
    def max_tokens(self) -> int:
        return int(self.config.get("max_tokens") or 1)

    def images(self) -> dict:
        """What gallery clicks need: the query and each length's images."""
        return {"query": self.query,
                "recon": {m: lv.reconstructions for m, lv in self.lengths.items()},
                "edits": {m: lv.edits for m, lv in self.lengths.items()}}


def curve_figure(view: RunView):
    """Mean ± std distance per token length, the threshold, and the score."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.6, 3.3), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    points = sorted((m, lv.mean, lv.std or 0.0, lv.passed) for m, lv in view.lengths.items() if lv.mean is not None)
    if points:
        ms, means, stds, _ = zip(*points)
        ax.errorbar(ms, means, yerr=stds, fmt="o-", color="#2563eb", ecolor="#93c5fd", capsize=4, lw=2,
                    label="mean ± std over reconstructions")
        top = max(mu + s for _, mu, s, _ in points)
    else:
        top = 0.0
    ax.axhline(view.threshold, color="#dc2626", ls="--", lw=1.5, label=f"threshold {view.threshold:g}")
    score = view.report.score if view.report is not None else None
    if score is not None and score in view.lengths and view.lengths[score].mean is not None:
        ax.plot([score], [view.lengths[score].mean], "o", ms=16, mfc="none", mec="#16a34a", mew=2.5,
                label=f"score: {score} token{'s' if score > 1 else ''}")
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
    check = CHECK_LABELS.get(view.model.get("in_distribution", ""), "in-distribution check")
    parts = [f"**m = {lv.m}** token{'s' if lv.m > 1 else ''}"]
    if lv.mean is None:
        parts.append("scoring the reconstructions…")
    else:
        sign = "≤" if lv.recon_passed else ">"
        parts.append(f"distance {lv.mean:.3f} ± {lv.std or 0:.3f} {sign} {view.threshold:g} {_mark(lv.recon_passed)}")
        parts.append(f"{check}: {lv.detail or '…'} {_mark(lv.edit_passed)}" if lv.edit_passed is not None
                     else f"{check}: running…")
    if lv.done:
        parts.append("**passes**" if lv.passed else "fails")
    return " · ".join(parts)


def recon_items(view: RunView, lv: LengthView) -> list:
    # Where the check scores the reconstructions themselves (the shapes world), say so in their captions.
    scored_here = not lv.edits and len(lv.scores) == len(lv.reconstructions)
    layout = view.model.get("in_distribution") == "layout-variation"
    items = []
    for i, im in enumerate(lv.reconstructions):
        caption = f"d={lv.distances[i]:.2f}" if i < len(lv.distances) else f"#{i + 1}"
        if scored_here:
            s = lv.scores[i]
            caption += (" moved" if s >= 0.5 else " copy") if layout else f" check {s:.2f}"
        items.append((im, caption))
    return items


def edit_items(view: RunView, lv: LengthView) -> list:
    subject = view.config.get("edit_subject", "subject")
    return [(im, f"P({subject})={lv.scores[i]:.2f}" if i < len(lv.scores) else f"edit #{i + 1}")
            for i, im in enumerate(lv.edits)]


def verdict_markdown(report: Report) -> str:
    if report.score == 1:
        head = "Familiar: needs 1 token"
    elif report.score is None:
        head = f"Original: needs more than {report.max_tokens} tokens"
    else:
        head = f"Original: needs {report.score} tokens"
    model = report.model
    details = (f"model {model.get('name', '?')} ({model.get('world', '?')}) · {model.get('distance', 'distance')} "
               f"threshold {report.threshold:g} · {len(report.results)} length(s) tried in "
               f"{report.total_seconds:.0f} s · {model.get('dtype', '?')}")
    notes = "".join(f"\n\n<small>{note}</small>" for note in [*report.notes, report.threshold_source] if note)
    return f"## {head}\n\n{report.verdict}\n\n<small>{details}</small>{notes}"


def best_pair(view: RunView) -> tuple | None:
    """(query, the reconstruction closest to it) over all lengths, for the slider."""
    best = None
    for lv in view.lengths.values():
        for im, d in zip(lv.reconstructions, lv.distances):
            if best is None or d < best[0]:
                best = (d, im)
    return (view.query, best[1]) if best else None


# --------------------------------------------------------------------------- the page


class UI:
    """The page's components (filled in by `build_demo`)."""

    image: gr.Image
    world: gr.Dropdown
    domain: gr.Dropdown
    custom_word: gr.Textbox
    preset: gr.Radio
    advanced: list
    status: gr.Markdown
    verdict: gr.Markdown
    curve: gr.Plot
    slider: gr.ImageSlider
    share: gr.Textbox
    files: gr.File
    images: gr.State
    rows: list
    row_md: list
    recon: list
    edit_col: list
    edits: list
    api_settings: gr.Textbox
    api_run_id: gr.Textbox
    api_result: gr.JSON

    @property
    def inputs(self) -> list:
        return [self.image, self.world, self.domain, self.custom_word, self.preset, *self.advanced]

    @property
    def outputs(self) -> list:
        return [self.status, self.verdict, self.curve, self.slider, self.share, self.files, self.images,
                *self.rows, *self.row_md, *self.recon, *self.edit_col, *self.edits]

    @property
    def settings(self) -> list:
        return [self.image, self.world, self.domain, self.custom_word, self.preset, *self.advanced]


ui = UI()


def _row_updates(view: RunView, m: int) -> dict:
    if not 1 <= m <= MAX_ROWS:
        return {}
    lv, i = view.lengths[m], m - 1
    return {ui.rows[i]: gr.Column(visible=True), ui.row_md[i]: row_header(view, lv),
            ui.recon[i]: recon_items(view, lv), ui.edit_col[i]: gr.Column(visible=bool(lv.edits)),
            ui.edits[i]: edit_items(view, lv)}


def _reset_updates(status: str) -> dict:
    updates = {ui.status: status, ui.verdict: "", ui.curve: None, ui.slider: None, ui.share: "", ui.files: None,
               ui.images: None}
    for i in range(MAX_ROWS):
        updates.update({ui.rows[i]: gr.Column(visible=False), ui.row_md[i]: "", ui.recon[i]: [],
                        ui.edit_col[i]: gr.Column(visible=False), ui.edits[i]: []})
    return updates


def _final_updates(view: RunView, run_id: str | None, request: gr.Request | None, status: str) -> dict:
    report = view.report
    updates = {ui.status: status, ui.verdict: verdict_markdown(report), ui.curve: curve_figure(view),
               ui.slider: best_pair(view), ui.images: view.images(), ui.share: share_url(request, run_id) if run_id
               else "", ui.files: download_files(run_id) if run_id else None}
    for m in view.lengths:
        updates.update(_row_updates(view, m))
    return updates


def run_analysis(image, world, domain, custom_word, preset, max_tokens=None, steps=None, batch_size=None,
                 learning_rate=None, num_reconstructions=None, num_inference_steps=None, guidance_scale=None,
                 threshold=None, edit_prompt=None, edit_subject=None, seed=None, lr_schedule=None,
                 request: gr.Request = None):
    """The Run button: stream the analysis into the page, store the result, show the share link.

    The settings after `preset` are the "Advanced" fields (None or blank: preset / world default).
    """
    values = dict(max_tokens=max_tokens, steps=steps, batch_size=batch_size, learning_rate=learning_rate,
                  num_reconstructions=num_reconstructions, num_inference_steps=num_inference_steps,
                  guidance_scale=guidance_scale, threshold=threshold, edit_prompt=edit_prompt,
                  edit_subject=edit_subject, seed=seed, lr_schedule=lr_schedule)
    assert list(values) == ADVANCED_NAMES
    yield from _run(image, world, domain, custom_word, preset, values, request)


def _run(image, world, domain, custom_word, preset, values: dict, request) -> Iterator[dict]:
    if image is None:
        raise gr.Error("Upload an image first (or click one of the examples).", print_exception=False)
    try:
        config = build_config(preset, domain, custom_word, values)
    except ValueError as err:
        raise gr.Error(_sentence(str(err)), print_exception=False) from err
    started = time.monotonic()
    yield _reset_updates("Loading the model…")
    view = RunView()
    every = 1
    try:
        for event in analysis_events(image, world, config):
            elapsed = time.monotonic() - started
            if isinstance(event, Started):
                view = RunView(query=event.query, config=event.config.to_dict(), model=dict(event.model))
                every = max(1, event.config.steps // STEP_UPDATES)
                yield {ui.status: f"Running on {view.model.get('name')} ({view.model.get('device')}): trying "
                                  f"m = 1 … {view.max_tokens} learned tokens.",
                       ui.curve: curve_figure(view), ui.images: view.images()}
            elif isinstance(event, InversionStep):
                if event.step == 1 or event.step % every == 0 or event.step == event.total:
                    yield {ui.status: f"m={event.num_tokens}: step {event.step}/{event.total}, "
                                      f"loss {event.loss:.4f} · {elapsed:.0f} s"}
            elif isinstance(event, ReconstructionsReady):
                view.length(event.num_tokens).reconstructions = list(event.images)
                yield {ui.status: f"m={event.num_tokens}: scoring {len(event.images)} reconstructions… "
                                  f"· {elapsed:.0f} s",
                       ui.images: view.images(), **_row_updates(view, event.num_tokens)}
            elif isinstance(event, DistancesReady):
                lv = view.length(event.num_tokens)
                lv.distances, lv.mean, lv.std, lv.recon_passed = list(event.distances), event.mean, event.std, \
                    event.passed
                yield {ui.status: f"m={event.num_tokens}: mean distance {event.mean:.3f} "
                                  f"({'≤' if event.passed else '>'} {view.threshold:g}); checking… · {elapsed:.0f} s",
                       ui.curve: curve_figure(view), **_row_updates(view, event.num_tokens)}
            elif isinstance(event, EditCheckReady):
                lv = view.length(event.num_tokens)
                lv.edits, lv.scores, lv.edit_passed, lv.detail = list(event.images), list(event.scores), \
                    event.passed, event.detail
                yield {ui.images: view.images(), **_row_updates(view, event.num_tokens)}
            elif isinstance(event, LengthDone):
                lv = view.length(event.result.num_tokens)
                lv.done = True
                yield {ui.status: f"m={lv.m}: {'passes' if lv.passed else 'fails'} · {elapsed:.0f} s",
                       **_row_updates(view, lv.m)}
            elif isinstance(event, Decision):
                view.report = event.report
                run_id, note = None, ""
                try:
                    run_id = get_store().save(event.report, preset=preset)
                except Exception as err:  # noqa: BLE001 - the result is still shown
                    logger.exception("could not store the run")
                    note = f" It could not be stored for sharing ({type(err).__name__})."
                yield _final_updates(view, run_id, request, f"Done in {elapsed:.0f} s.{note}")
    except RunTimeout as stop:
        gr.Warning(str(stop))
        yield {ui.status: f"⏱ {stop}"}


def on_cancel() -> str:
    return "Cancelled. Press **Run** to start again."


def _settings_updates(report: Report, preset: str | None) -> dict:
    config = report.config
    domain = config.get("domain")
    world = "shapes" if report.model.get("world") == "shapes" else "sd"
    if domain in DOMAINS:
        domain_value, word = domain, ""
    elif world == "shapes" and domain == "shapes":
        domain_value, word = DOMAIN_DEFAULT, ""
    else:
        domain_value, word = DOMAIN_CUSTOM, domain or ""
    updates = {ui.image: report.query, ui.world: world, ui.domain: domain_value, ui.custom_word: word,
               ui.preset: preset if preset in PRESETS else "fast"}
    for comp, name in zip(ui.advanced, ADVANCED_NAMES):
        updates[comp] = _text(config.get(name))
    return updates


def _text(value: Any) -> str:
    """A setting as the text of its field (None: blank)."""
    return "" if value is None else str(value)


def show_run(run_id: str, request: gr.Request | None = None) -> dict:
    """Open a stored run (no recomputation). A bad id gives a message in the page, not an error."""
    store = get_store()
    try:
        report = store.load(run_id)
    except (InvalidRunId, RunNotFound) as err:
        message = f"Could not open the shared run: {err}"
        gr.Warning(message)
        return {ui.status: f"⚠️ {message}"}
    view = RunView.from_report(report)
    info = store.info(run_id) or {}
    updates = _reset_updates("")
    updates.update(_final_updates(view, run_id, request, f"Stored run from {report.created or 'earlier'} "
                                                         "(not recomputed)."))
    updates.update(_settings_updates(report, info.get("preset")))
    return updates


def on_page_load(request: gr.Request) -> dict:
    """`?run=<id>` in the page address re-opens a stored run."""
    try:
        params = dict(request.query_params) if request is not None else {}
    except Exception:  # noqa: BLE001
        params = {}
    run_id = params.get("run")
    if not run_id:
        return {ui.status: gr.skip()}  # Gradio needs at least one output in a dict of updates
    return show_run(run_id, request)


def _make_select(m: int, kind: str):
    def select(images, evt: gr.SelectData):
        if not images or evt is None:
            return gr.skip()
        pool = (images.get(kind) or {}).get(m) or []
        index = evt.index if isinstance(evt.index, int) else (evt.index[0] if evt.index else 0)
        if not 0 <= index < len(pool):
            return gr.skip()
        what = "reconstruction" if kind == "recon" else "edit"
        return gr.ImageSlider(value=(images["query"], pool[index]), label=f"query ↔ {what} #{index + 1} (m = {m})")
    select.__name__ = f"select_{kind}_m{m}"
    return select


# --------------------------------------------------------------------------- API endpoints


def analyze_api(image, world, domain, custom_word, preset, settings, request: gr.Request = None) -> dict:
    """Run one analysis to the end; returns {"run_id", "share_url", "summary"} (summary: Report.summary())."""
    if image is None:
        raise gr.Error("Give an image.", print_exception=False)
    try:
        values = json.loads(settings) if isinstance(settings, str) and settings.strip() else (settings or {})
        if not isinstance(values, dict):
            raise ValueError(f"settings must be a JSON object of AnalysisConfig fields, got {settings!r}")
        config = build_config(preset or "fast", domain, custom_word, values)
    except (ValueError, json.JSONDecodeError) as err:
        raise gr.Error(_sentence(str(err)), print_exception=False) from err
    report = None
    try:
        for event in analysis_events(image, world or default_world()[0], config):
            if isinstance(event, Decision):
                report = event.report
    except RunTimeout as stop:
        raise gr.Error(str(stop), print_exception=False) from stop
    run_id = get_store().save(report, preset=preset)
    return {"run_id": run_id, "share_url": share_url(request, run_id), "summary": report.summary()}


def load_run_api(run_id: str) -> dict:
    """A stored run's summary: {"run_id", "summary"}."""
    try:
        report = get_store().load((run_id or "").strip())
    except (InvalidRunId, RunNotFound) as err:
        raise gr.Error(str(err), print_exception=False) from err
    return {"run_id": run_id.strip(), "summary": report.summary()}


# --------------------------------------------------------------------------- layout

INTRO = """# How original is this image to a text-to-image model?
Progressive multi-token textual inversion ([Haviv et al. 2024](https://arxiv.org/abs/2410.03657)): the model
learns m = 1, 2, … new tokens to describe your image; the fewer tokens it needs to reproduce it, the more
*familiar* the image is to the model, and the more it needs, the more *original*."""


def _examples() -> tuple[list, list]:
    table = [("shapes_common.png", "shapes", "shapes: common pair"),
             ("shapes_rare.png", "shapes", "shapes: rare pair"),
             ("shapes_unseen.png", "shapes", "shapes: unseen pair"),
             ("sd_house.png", "sd", "SD: house"),
             ("sd_painting.png", "sd", "SD: painting")]
    present = [(EXAMPLES_DIR / f, w, lab) for f, w, lab in table if (EXAMPLES_DIR / f).is_file()]
    return [[str(p), w] for p, w, _ in present], [lab for _, _, lab in present]


def _placeholder(name: str) -> str:
    values = {p: getattr(c, name) for p, c in PRESETS.items()}
    if name in ("guidance_scale", "threshold"):
        return "world default"
    if len(set(map(repr, values.values()))) == 1:
        return f"preset: {next(iter(values.values()))}"
    return " · ".join(f"{p}: {v}" for p, v in values.items())


def build_demo() -> gr.Blocks:
    world, why = default_world()
    world_label = dict((v, k) for k, v in WORLD_CHOICES)[world]
    prefill_domain = DEFAULTS.get("domain")
    domain_value, word_value = DOMAIN_DEFAULT, ""
    if prefill_domain in DOMAINS:
        domain_value = prefill_domain
    elif prefill_domain:
        domain_value, word_value = DOMAIN_CUSTOM, prefill_domain

    with gr.Blocks(title="Originality: how original is an image to a text-to-image model?") as demo:
        gr.Markdown(INTRO)
        with gr.Row(equal_height=False):
            with gr.Column(scale=4, min_width=320):
                ui.image = gr.Image(label="Image", type="filepath", sources=["upload", "clipboard"], height=300,
                                    elem_id="query-image")
                examples, labels = _examples()
                if examples:
                    ui.world = gr.Dropdown(WORLD_CHOICES, value=world, label="Model world", elem_id="world",
                                           render=False)
                    gr.Examples(examples, inputs=[ui.image, ui.world], example_labels=labels, cache_examples=False,
                                label="Examples (shapes world: pairs of shapes common, rare or never seen in "
                                      "training)", elem_id="examples")
                    ui.world.render()
                else:
                    ui.world = gr.Dropdown(WORLD_CHOICES, value=world, label="Model world", elem_id="world")
                gr.Markdown(f"<small>Picked automatically: **{world_label}**, {why}.</small>", elem_id="world-note")
                with gr.Row():
                    ui.domain = gr.Dropdown(DOMAIN_CHOICES, value=domain_value, label="Domain",
                                            info="the word the learned tokens start from", elem_id="domain")
                    ui.custom_word = gr.Textbox(value=word_value, label="Custom domain word",
                                                placeholder="one word, e.g. castle", visible=True,
                                                elem_id="custom-word")
                ui.preset = gr.Radio(list(PRESETS), value="fast", label="Preset",
                                     info="fast: about a minute on a GPU · paper: the paper's settings (slow)",
                                     elem_id="preset")
                with gr.Accordion("Advanced (blank = preset / model-world default)", open=False,
                                  elem_id="advanced"):
                    ui.advanced = []
                    # Textboxes, not gr.Number: a blank field must stay blank (= default), not become 0.
                    with gr.Row():
                        for name, label, _ in ADVANCED:
                            ui.advanced.append(gr.Textbox(value=_text(DEFAULTS.get(name)), label=label,
                                                          placeholder=_placeholder(name), elem_id=f"adv-{name}",
                                                          min_width=150))
                with gr.Row():
                    run_btn = gr.Button("Run", variant="primary", elem_id="run")
                    cancel_btn = gr.Button("Cancel", variant="stop", elem_id="cancel")
            with gr.Column(scale=6, min_width=360):
                ui.status = gr.Markdown("Upload an image (or click an example) and press **Run**.",
                                        elem_id="status")
                ui.verdict = gr.Markdown("", elem_id="verdict")
                with gr.Row(equal_height=False):
                    ui.curve = gr.Plot(label="Distance to the query per token length", elem_id="curve", format="png")
                    ui.slider = gr.ImageSlider(label="query ↔ reconstruction (click a gallery image)", type="pil",
                                               elem_id="compare", height=280, format="png")
                ui.rows, ui.row_md, ui.recon, ui.edit_col, ui.edits = [], [], [], [], []
                for m in range(1, MAX_ROWS + 1):
                    with gr.Column(visible=False, elem_id=f"row-m{m}", elem_classes=["length-row"]) as row:
                        md = gr.Markdown("", elem_id=f"row-md-m{m}")
                        with gr.Row(equal_height=False):
                            recon = gr.Gallery(label=f"m = {m}: reconstructions", columns=5, height=230, format="png",
                                               fit_columns=False, object_fit="contain", interactive=False,
                                               elem_id=f"recon-m{m}")
                            with gr.Column(visible=False) as edit_col:
                                edits = gr.Gallery(label=f"m = {m}: edits (editability check)", columns=4,
                                                   height=230, fit_columns=False, object_fit="contain", format="png",
                                                   interactive=False, elem_id=f"edits-m{m}")
                    ui.rows.append(row)
                    ui.row_md.append(md)
                    ui.recon.append(recon)
                    ui.edit_col.append(edit_col)
                    ui.edits.append(edits)
                ui.share = gr.Textbox(label="Share link", interactive=False, buttons=["copy"], elem_id="share",
                                      placeholder="appears when a run finishes")
                ui.files = gr.File(label="Downloads: report.json, learned embeddings per m, zip of the whole run",
                                   file_count="multiple", interactive=False, elem_id="downloads")
        ui.images = gr.State(None)
        with gr.Column(visible=False):  # inputs/outputs of the API endpoints only
            ui.api_settings = gr.Textbox(value="{}", label="settings (JSON of AnalysisConfig fields)")
            ui.api_run_id = gr.Textbox(label="run_id")
            ui.api_result = gr.JSON(label="result")
            api_btn = gr.Button("analyze")
            load_btn = gr.Button("load run")

        run_event = run_btn.click(
            run_analysis, inputs=ui.inputs, outputs=ui.outputs, api_name="run", api_visibility="undocumented",
            concurrency_id="analysis", show_progress="minimal", show_progress_on=[ui.status])
        cancel_btn.click(on_cancel, None, [ui.status], cancels=[run_event], queue=False, api_visibility="private")
        for i in range(MAX_ROWS):
            ui.recon[i].select(_make_select(i + 1, "recon"), [ui.images], [ui.slider], queue=False,
                               api_visibility="private")
            ui.edits[i].select(_make_select(i + 1, "edits"), [ui.images], [ui.slider], queue=False,
                               api_visibility="private")
        api_btn.click(analyze_api, inputs=[ui.image, ui.world, ui.domain, ui.custom_word, ui.preset, ui.api_settings],
                      outputs=[ui.api_result], api_name="analyze", concurrency_id="analysis")
        load_btn.click(load_run_api, inputs=[ui.api_run_id], outputs=[ui.api_result], api_name="load_run",
                       concurrency_limit=None)
        demo.load(on_page_load, None, ui.outputs + ui.settings, api_visibility="private")

    demo.queue(default_concurrency_limit=_env_int("ORIGINALITY_CONCURRENCY", 1),
               max_size=_env_int("ORIGINALITY_QUEUE_SIZE", 16))
    return demo


CSS = """
#verdict h2 { margin: 0.2em 0; }
.length-row { border-top: 1px solid var(--border-color-primary); padding-top: 0.4em; }
#query-image img { width: 100%; height: 100%; object-fit: contain; }
"""

demo = build_demo()

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    demo.launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME") or "0.0.0.0",
        server_port=_env_int("PORT", 7860),
        max_file_size=os.environ.get("ORIGINALITY_MAX_UPLOAD") or "20mb",
        allowed_paths=[str(EXAMPLES_DIR)],
        css=CSS,
    )
