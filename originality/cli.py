"""Command line: `python -m originality analyze IMAGE`, `batch FOLDER --out DIR` and `reproduce RUN_DIR`.

    originality analyze photo.jpg --preset fast --out reports/photo --html reports/photo.html
    originality reproduce reports/photo     # rerun from the record; exit 0 when the labels match
    originality batch photos/ --out reports/ --preset fast
    accelerate launch -m originality batch photos/ --out reports/   # one process per GPU
    accelerate launch -m originality analyze photo.jpg --token-init domain --out reports/photo   # lengths over GPUs

User mistakes (a missing or unreadable image, a bad setting, an unknown model folder)
print `error: <message>` on stderr and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from . import citation
from . import __version__
from .config import DEFAULT_PRESET, DTYPE_CHOICES, PRESETS, AnalysisConfig, preset_values, settings
from .uncertainty import PassRule
from .worlds import all_worlds, find_world, resolve_model_id, world_of_model

logger = logging.getLogger(__name__)

SUMMARY_NAME = "summary.csv"
EXIT_USAGE = 2
EXIT_MISMATCH = 1  # reproduce: the rerun's label differs from the recorded one
EXIT_INTERRUPTED = 130

class UsageError(ValueError):
    """A mistake in the command line; reported as `error: ...` with exit status 2."""


# --------------------------------------------------------------------------- parser


def _preset_default(field: str) -> str:
    """'default: 150 with --preset fast, 2000 with --preset paper' (or just the value when presets agree)."""
    value = preset_values(field, "{value} with --preset {preset}")
    return f'default: "{value}"' if isinstance(getattr(PRESETS[DEFAULT_PRESET], field), str) else f"default: {value}"


def _world_default(field: str) -> str:
    """'None = the model world's default (0.45 DreamSim for stable-diffusion, ...)', from the registry."""
    def value(w) -> str:
        domain = "picked per image by CLIP zero-shot over the presets" if w.picks_domain else w.domain
        return {"threshold": f"{w.threshold} {w.distance_name}", "guidance_scale": f"{w.guidance_scale}",
                "domain": domain, "copy_line": f"{w.copy_line:g}"}[field]
    return "default: None = the model world's default (" + ", ".join(
        f"{value(w)} for {w.name}" for w in all_worlds()) + ")"


def add_setting_options(parser, names: Sequence[str] | None = None) -> None:
    """One option per `AnalysisConfig` field (or those in `names`), from the settings schema.

    Every option defaults to None (= not given), so only what the user typed overrides the
    preset; `overrides_from_args` collects them.
    """
    for s in settings():
        if names is not None and s.name not in names:
            continue
        default = _world_default(s.name) if s.world_default else _preset_default(s.name)
        parser.add_argument(s.flag, dest=s.name, default=None, type=s.parse if s.kind is bool else s.kind, choices=s.choices,
                            metavar=None if s.choices else s.metavar,
                            help=f"{s.help} ({default})".replace("%", "%%"))  # argparse formats help with %


def overrides_from_args(args: argparse.Namespace, names: Sequence[str] | None = None) -> dict[str, Any]:
    """The settings options the user gave (those of `add_setting_options(parser, names)`)."""
    return {s.name: getattr(args, s.name) for s in settings()
            if (names is None or s.name in names) and getattr(args, s.name, None) is not None}


def _add_analysis_options(parser: argparse.ArgumentParser) -> None:
    model = parser.add_argument_group("model")
    names = ", ".join(f'"{n}"' for w in all_worlds() for n in (w.name, *w.aliases))
    model.add_argument(
        "--model", metavar="ID_OR_DIR", default=None,
        help=f"a model world ({names}: its standard model), a Hugging Face Hub id or a local diffusers folder "
             "(default: $ORIGINALITY_MODEL, else Stable Diffusion v1.4 where a GPU and its weights are "
             "available, else the bundled shapes world)")
    model.add_argument(
        "--device", default=None,
        help="cpu or cuda (or cuda:N) (default: None = cuda when available, else cpu; "
             "under `accelerate launch` each process's own device)")
    model.add_argument(
        "--dtype", default=None, choices=DTYPE_CHOICES,
        help="precision of the frozen UNet and VAE; the text encoder and learned tokens stay float32 "
             "(default: None = bfloat16 on GPUs that have it, else float16 with loss scaling; float32 on CPU)")

    a = parser.add_argument_group("analysis (each overrides the preset)")
    a.add_argument("--preset", default=DEFAULT_PRESET, choices=sorted(PRESETS),
                   help='settings to start from: "paper" (Haviv et al. 2024: 2000 steps, batch 20, '
                        '20 reconstructions), "fast" (about a minute per image on a GPU), "steady" (fast that '
                        'repeats better: 2 restarts per length, warm start, up to 96 reconstructions, a second '
                        'opinion on a close call) or "adaptive" '
                        f'(default: {DEFAULT_PRESET})')
    add_setting_options(a)
    a.add_argument("--reference", metavar="FILE_OR_DIR", action="append", default=None,
                   help="an image to compare the query with (a folder: its image files); repeatable, at most "
                        "--max-references in all. The report gives each one's copy similarity (DCR) and style "
                        "similarity (CLIP ViT-L/14, CSD's baseline) to the query, and the reference nearest to each "
                        "length's reconstructions; the score does not change (default: None = no comparison)")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bar or log messages, only results and errors (default: off)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="originality",
        description="How original is an image to a text-to-image model? Progressive multi-token textual "
                    "inversion (Haviv et al. 2024): the score is the fewest learned tokens that reproduce "
                    "the image; lower means more familiar to the model.",
        epilog=f"Method: {citation.TEXT} {citation.URL}",
    )

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("analyze", help="analyse one image",
                       description="Analyse one image: print one line per token length and the final score.")
    p.add_argument("image", metavar="IMAGE", help="image file (PNG, JPEG, WebP, GIF, BMP, TIFF)")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="save the report folder (report.json, query, reconstructions, edits, learned "
                        "embeddings) there; required under `accelerate launch` with several processes, which "
                        "split the token lengths and share files there (default: None = not saved)")
    p.add_argument("--json", action="store_true",
                   help="print the report summary, with its reproducibility record, as JSON instead of the "
                        "text lines (default: off)")
    p.add_argument("--html", metavar="PATH", default=None,
                   help="write a printable, self-contained HTML report there (images embedded; a browser's "
                        "'Save as PDF' prints it) (default: None = not written)")
    _add_analysis_options(p)
    p.set_defaults(handler=cmd_analyze)

    r = sub.add_parser(
        "reproduce", help="rerun a saved analysis from its record and compare",
        description="Rerun the analysis saved in RUN_DIR (by analyze --out, batch or the app's run store) "
                    "with its recorded settings, model, device and seeds on the same pixels (RUN_DIR/query.png, "
                    "checked against the record), and print per token length the recorded and the new mean "
                    "distance and pass/fail. Exit status 0 when the labels match, 1 when they differ.")
    r.add_argument("run_dir", metavar="RUN_DIR", help="a report folder (holds report.json and query.png)")
    r.add_argument("--image", metavar="FILE", default=None,
                   help="rerun from the original file instead (its sha256 must match the record) "
                        "(default: None = RUN_DIR/query.png)")
    r.add_argument("--model", metavar="ID_OR_DIR", default=None,
                   help="the model, where the recorded folder is not on this machine (default: None = the recorded "
                        "model; the bundled shapes model is found by name)")
    r.add_argument("--device", default=None, help="default: None = the recorded device (cpu when it was a GPU "
                                                  "and there is none)")
    r.add_argument("--dtype", default=None, choices=DTYPE_CHOICES,
                   help="default: None = the recorded dtype")
    r.add_argument("--html", metavar="PATH", default=None,
                   help="also write the new run's HTML report there (default: None = not written)")
    r.add_argument("--quiet", action="store_true", help="no log messages (default: off)")
    r.set_defaults(handler=cmd_reproduce)

    b = sub.add_parser(
        "batch", help="analyse every image of a folder",
        description="Analyse every image file of FOLDER (not recursive; png, jpg, jpeg, webp, bmp, gif, tif, "
                    "tiff) into DIR/<image stem>/ and write DIR/summary.csv. Images whose report already "
                    "exists are skipped unless --overwrite. Under `accelerate launch` the images are split "
                    "across the processes.",
    )
    b.add_argument("folder", metavar="FOLDER", help="folder of images")
    b.add_argument("--out", metavar="DIR", required=True,
                   help="output folder: one report folder per image and summary.csv (required, no default)")
    b.add_argument("--overwrite", action="store_true",
                   help="analyse again images whose report folder already holds report.json (default: skip them)")
    _add_analysis_options(b)
    b.set_defaults(handler=cmd_batch)

    add_calibrate_parser(sub)
    return parser


# --------------------------------------------------------------------------- helpers


def config_from_args(args: argparse.Namespace) -> AnalysisConfig:
    """The preset with the options the user gave; validated (ValueError on a bad value)."""
    return AnalysisConfig.from_dict(overrides_from_args(args), base=PRESETS[args.preset], where="the options")


def _check_device(device: str | None) -> None:
    if device is None:
        return
    import torch  # noqa: PLC0415 - start-up: torch only when used

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise UsageError(f"--device must be cpu or cuda (or cuda:N), got {device!r}") from err
    if dev.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"--device must be cpu or cuda (or cuda:N), got {device!r}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("--device cuda was given but no CUDA GPU is available; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) present")


def _check_model_arg(model: str | None) -> None:
    """A local path that does not exist is a user mistake (not a Hub id to try downloading)."""
    if model in (None, "", "auto") or find_world(model) is not None:
        return
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"--model {model}: is a file; give a diffusers model folder or a Hub id")
        if not (path / "model_index.json").is_file():
            raise UsageError(f"--model {model}: no model_index.json in this folder; give a diffusers "
                             "model folder (saved with save_pretrained) or a Hub id")
        return
    looks_local = (model.startswith(("/", ".", "~")) or "\\" in model or model.count("/") != 1
                   or os.sep != "/" and os.sep in model)
    if looks_local:
        raise UsageError(f"--model {model}: no such model folder; give \"shapes\", \"sd\", a Hub id "
                         "(owner/name) or an existing diffusers folder")


def _load(args: argparse.Namespace, device: Any = None):
    from .models import load_model  # noqa: PLC0415 - start-up: loads torch/numpy only when used

    _check_model_arg(args.model)
    model_arg = str(Path(args.model).expanduser()) if args.model and Path(args.model).expanduser().exists() \
        else args.model
    return load_model(model_arg, device=device if device is not None else args.device, dtype=args.dtype)


# Seconds between two drawings of a progress bar whose stderr is not a terminal (`_Progress`).
LOGGED_BAR_INTERVAL = 15.0


class _Progress:
    """A tqdm bar on stderr per stage of a length ("m=2 inversion", "m=2 reconstructions"), the loss and the time
    left (`eta`, from the rates measured during the run) as its postfix. `observe` every event; `clock`: seconds
    on a monotonic clock (tests pass a scripted one)."""

    def __init__(self, enabled: bool, prefix: str = "", position: int = 0, clock=time.monotonic):
        self.enabled = enabled
        self.prefix = prefix
        self.position = position
        self.bar = None
        self.clock = clock
        self.timer = None  # eta.RunTimer, made on the first event

    def observe(self, event) -> None:
        """Fold an engine event into the time left; a bar for an inversion step or a generation batch (inside a
        `SeedProgress` too)."""
        if not self.enabled:
            return
        from .analysis import Generating, SeedProgress  # noqa: PLC0415 - start-up: loads torch/numpy only when used
        from .eta import RunTimer  # noqa: PLC0415 - start-up: loads numpy only when used
        from .inversion import InversionStep  # noqa: PLC0415 - start-up: loads torch/numpy only when used

        self.timer = self.timer or RunTimer()
        self.timer.observe(event, self.clock())
        inner = event.event if isinstance(event, SeedProgress) else event
        if isinstance(inner, InversionStep):
            self._show(f"m={inner.num_tokens} inversion", inner.step, inner.total, loss=f"{inner.loss:.4f}")
        elif isinstance(inner, Generating):
            self._show(f"m={inner.num_tokens} {inner.what}", inner.done, inner.total)

    def left(self) -> str:
        """The time left, as the page says it but short enough for the bar (`eta.brief`; '' before an estimate)."""
        from .eta import brief  # noqa: PLC0415 - start-up: loads numpy only when used

        return brief(self.timer.estimate()) if self.timer is not None else ""

    def _show(self, stage: str, done: int, total: int, **postfix) -> None:
        from tqdm.auto import tqdm  # noqa: PLC0415 - start-up: tqdm only when used

        desc = f"{self.prefix}{stage}"
        if self.bar is not None and (self.bar.desc != desc or done < self.bar.n):
            self.close()  # another stage, or the inversion started again (restarts)
        left = self.left()
        fields = {**postfix, **({"left": left} if left else {})}
        if self.bar is None:
            # On a terminal mininterval 0: every step is drawn with its loss and time left (a step takes far longer
            # than the drawing; with tqdm's 0.1 s default a short stage could close without ever showing its
            # postfix). Into a file or a pipe (a batch job's log, a Space's) every redraw stays in it (22 KB for a
            # one-length fast run): there the bar is drawn at most every LOGGED_BAR_INTERVAL seconds, so the first
            # drawing, made here, carries the loss and the time left already.
            logged = not sys.stderr.isatty()
            self.bar = tqdm(total=total, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True,
                            position=self.position, mininterval=LOGGED_BAR_INTERVAL if logged else 0,
                            initial=done, postfix=fields)
        if total != self.bar.total:  # more images drawn while a length is undecided
            self.bar.total = total
        self.bar.set_postfix(**fields, refresh=False)
        self.bar.update(done - self.bar.n)
        if done >= total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def length_line(result, rule: PassRule, planned: int | None = None, check_name: str = "edit check") -> str:
    """`m=1  distance 0.412 (95% CI 0.36-0.46)  edit check: 3/4 edits show a cat  steps 80 (converged)  -> pass`
    (`rule`: the run's `uncertainty.PassRule`, to word a pass on the benefit of the doubt; `planned`: the
    reconstructions of the settings, to say when a failing length was decided on fewer; `check_name`: the world's
    name for its in-distribution check, `World.check_name`)."""
    from .report import drawn_note  # noqa: PLC0415 - start-up: loads torch/numpy only when used
    if result.passed:
        verdict = "pass" + (f" (distance {rule.comparison(result.distances, True)})"
                            if rule.passed_on_doubt(result.distances, result.distance_passed) else "")
    else:
        why = []
        if not result.distance_passed:
            why.append(f"distance {rule.comparison(result.distances, False)}")
        if not result.check_passed:
            why.append(check_name)
        verdict = f"fail ({', '.join(why)})"
    detail = result.check_detail or ("pass" if result.check_passed else "fail")
    ci = result.distance_interval()
    spread = f"({ci.span(3)})" if ci else f"± {result.std_distance:.3f}"
    steps = f"  steps {result.steps_used}" + (f" ({result.stop_reason})" if result.stop_reason else "") \
        if result.steps_used else ""
    drawn = drawn_note(len(result.distances), planned)
    return (f"m={result.num_tokens}  distance {result.mean_distance:.3f} {spread}{f'  {drawn}' if drawn else ''}  "
            f"{check_name}: {detail}{steps}  -> {verdict}")


def score_line(report) -> str:
    """`score: 2  (Original: ...)  expected length 1.83 (a rerun: 0.2-3.4)` (`Report.expected_length`, the continuous
    score, and where a rerun's is expected to land, when the settings have been benchmarked), and
    with the seeds setting `  over seeds: 2 in 2 of 3 seeds (1 in 1)` (and `Report.seeds_note` when the rows
    are a seed that gave another label)."""
    spread = report.label_distribution
    note = report.seeds_note()
    interval = report.expected_length_interval()
    rerun = f" (a rerun: {interval[0]:.1f}-{interval[1]:.1f})" if interval else ""
    return (f"score: {report.label}  ({report.verdict})  expected length {report.expected_length:.2f}{rerun}"
            + (f"  over seeds: {spread.describe()}" if spread else "")
            + (f"  {note}" if note else ""))


def _references(args: argparse.Namespace, config: AnalysisConfig) -> list:
    """--reference files and folders, read and checked like the query (before any model loads)."""
    from .similarity import expand_references, load_references  # noqa: PLC0415 - start-up: loads torch/numpy only when used

    if not args.reference:
        return []
    return load_references(expand_references(args.reference), config, world_of_model(resolve_model_id(args.model)))


def _run_analysis(image, config: AnalysisConfig, model, progress: _Progress, on_length=None, references=None):
    """`iter_analyze` shown as it runs; `model`: a loaded model, or a `LocalRunner` that loads it once the
    inputs have passed their checks."""
    from .analysis import LocalRunner, iter_analyze  # noqa: PLC0415 - start-up: loads torch/numpy only when used

    runner = model if isinstance(model, LocalRunner) else LocalRunner(model)
    report = _consume(iter_analyze(image, config, references=references, runner=runner), progress, on_length)
    if report is None:
        raise RuntimeError("analysis ended without a decision")
    return report


def _consume(events, progress: _Progress, on_length=None):
    """Show an analysis's events (bars, `on_length(result, threshold)` per finished length); its report, None
    without a decision."""
    from .analysis import Decision, LengthDone, SeedProgress, Started  # noqa: PLC0415 - start-up: loads torch/numpy only when used

    prefix, threshold = progress.prefix, None
    try:
        for event in events:
            if isinstance(event, SeedProgress):  # a repeat with another seed: its bar, not its lines
                progress.prefix = f"{prefix}seed {event.index}/{event.total} "
            progress.observe(event)  # the bars and the time left
            if isinstance(event, Started):
                threshold = event.config.threshold  # resolved: the world's default when none was given
            elif isinstance(event, SeedProgress):
                if isinstance(event.event, LengthDone):
                    progress.close()
            elif isinstance(event, LengthDone):
                progress.close()
                if on_length is not None:
                    on_length(event.result, threshold)
            elif isinstance(event, Decision):
                return event.report
    finally:
        progress.close()
        events.close()
    return None


# --------------------------------------------------------------------------- analyze


def cmd_analyze(args: argparse.Namespace) -> int:
    from .analysis import LocalRunner, check_inputs  # noqa: PLC0415 - start-up: loads torch/numpy only when used

    config = config_from_args(args)
    _check_device(args.device)
    _check_model_arg(args.model)
    world = world_of_model(resolve_model_id(args.model))
    references = _references(args, config)
    if _launched_processes() > 1:
        # a missing or unreadable image, or one the world cannot judge, fails now, before every process loads
        check_inputs(args.image, config, world=world)
        return _analyze_parallel(args, config, references)

    def on_length(result, threshold: float) -> None:
        if not args.json:
            print(length_line(result, config.replace(threshold=threshold).pass_rule(), config.num_reconstructions,
                              world.check_name), flush=True)

    # the inputs are checked once, in iter_analyze, before the runner loads the model
    runner = LocalRunner(world=world, load=lambda: _load(args))
    report = _run_analysis(args.image, config, runner, _Progress(not args.quiet), on_length, references)
    return _show_report(args, report)


def _show_report(args: argparse.Namespace, report) -> int:
    """`analyze`'s output after the analysis: the report folder, the HTML, the JSON or the score lines."""
    if args.out:
        folder = report.save(args.out)
        logger.info("report saved to %s", folder)
    if args.html:
        from .html_report import write  # noqa: PLC0415 - start-up: loads torch/numpy only when used

        write(report, args.html, run_dir=args.out)
        logger.info("HTML report written to %s", args.html)
    if args.json:
        print(json.dumps(report.summary(), indent=2))
    else:
        print(score_line(report))
        print(report.rerun_sentence())
        for line in report.similarity.lines() if report.similarity else []:
            print(f"similarity: {line}")
        for note in [*report.notes, f"threshold: {report.threshold:g}, {report.threshold_source}"]:
            print(f"note: {note}")
        if args.out:
            print(f"report: {args.out}")
    return 0


# Where the lengths' processes share their files, under --out (`parallel.Board`).
SHARED_LENGTHS = ".parallel-lengths"


def _launched_processes() -> int:
    """How many processes `accelerate launch` / torchrun / MPI started (1 without a launcher); read from
    the environment as accelerate reads it, so that a single process never sets up accelerate's state."""
    names = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
    return max([1, *(int(os.environ[n]) for n in names if os.environ.get(n, "").isdigit())])


def _process_state(args: argparse.Namespace):
    """accelerate's state of this process (one process per device under `accelerate launch`; cpu=True lets
    CPU-only launches, with gloo, split the work too) and the device its model loads on (--device picks
    only cpu vs cuda when there are several processes)."""
    import torch  # noqa: PLC0415 - start-up: torch only when used
    from accelerate import PartialState  # noqa: PLC0415 - start-up: accelerate only when used

    on_cpu = (args.device or "").startswith("cpu") or not torch.cuda.is_available()
    state = PartialState(cpu=on_cpu)
    device = state.device
    if args.device is not None and (state.num_processes == 1 or not args.device.startswith("cuda")):
        device = args.device
    return state, device


def _analyze_parallel(args: argparse.Namespace, config: AnalysisConfig, references) -> int:
    """`analyze` under a launcher with several processes: the token lengths of the image are split over
    them (`parallel.iter_analyze_parallel`); the main process prints and saves the report, the others
    exit 0 quietly."""
    from .parallel import Team, check_parallel, iter_analyze_parallel  # noqa: PLC0415 - start-up: loads torch/numpy only when used

    if not args.out:
        raise UsageError("analyze under `accelerate launch` with several processes splits the token lengths over "
                         "them, and they share files under --out: give --out DIR (or launch one process)")
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {args.out} is a file; give a folder")
    check_parallel(config)  # before the model loads
    state, device = _process_state(args)
    model = _load(args, device=device)
    team = Team(state.process_index, state.num_processes)
    events = iter_analyze_parallel(args.image, config, model, team, out / SHARED_LENGTHS,
                                   sync=state.wait_for_everyone, references=references)
    report = _consume(events, _Progress(not args.quiet, prefix=f"p{team.rank} ", position=team.rank))
    if not team.is_main:
        return 0
    if not args.json:
        for result in report.results:
            print(length_line(result, report.pass_rule, config.num_reconstructions, model.world.check_name),
                  flush=True)
    return _show_report(args, report)


# --------------------------------------------------------------------------- reproduce


def cmd_reproduce(args: argparse.Namespace) -> int:
    from .reproduce import format_lines, reproduce  # noqa: PLC0415 - start-up: loads torch/numpy only when used

    run_dir = Path(args.run_dir).expanduser()
    if not (run_dir / "report.json").is_file():
        raise UsageError(f"{args.run_dir} is not a report folder (no report.json)")
    if args.device is not None:
        _check_device(args.device)
    _check_model_arg(args.model)
    result = reproduce(run_dir, image=args.image, model=args.model, device=args.device, dtype=args.dtype)
    for warning in result.warnings:
        print(f"warning: differs from the record: {warning}", file=sys.stderr)
    print(f"reproducing {run_dir} ({result.recorded.model.get('name', '?')}, recorded "
          f"{result.recorded.created or '?'})")
    for line in format_lines(result):
        print(line)
    if args.html:
        from .html_report import write  # noqa: PLC0415 - start-up: loads torch/numpy only when used

        write(result.new, args.html)
    return 0 if result.labels_match else EXIT_MISMATCH


# --------------------------------------------------------------------------- batch


def list_images(folder: Path) -> list[Path]:
    """Image files directly in `folder` (by extension), sorted by name (`images.list_images`)."""
    from .images import list_images as listed  # noqa: PLC0415 - numpy and PIL: not for --help

    return listed(folder)


def report_names(images: list[Path]) -> dict[Path, str]:
    """Report folder name per image: its stem, or stem_ext where two images share a stem."""
    stems: dict[str, int] = {}
    for p in images:
        stems[p.stem] = stems.get(p.stem, 0) + 1
    return {p: p.stem if stems[p.stem] == 1 else f"{p.stem}_{p.suffix.lstrip('.').lower()}" for p in images}


def _mean_columns(rows: list[dict[str, Any]]) -> list[str]:
    ms = set()
    for row in rows:
        for key in row:
            match = re.fullmatch(r"mean_distance_m(\d+)", key)
            if match:
                ms.add(int(match.group(1)))
    return [f"mean_distance_m{m}" for m in sorted(ms)]


def _write_csv(path: Path, rows: list[dict[str, Any]], max_tokens: int = 0) -> None:
    columns = _mean_columns(rows + [{f"mean_distance_m{m}": "" for m in range(1, max_tokens + 1)}])
    seeds = ["labels_over_seeds"] if any(row.get("labels_over_seeds") for row in rows) else []  # the seeds setting
    fieldnames = ["image", "score", "label", "expected_length", "label_probability", *seeds, *columns, "seconds",
                  "error"]
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fieldnames, restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in fieldnames})
    os.replace(tmp, path)


def _row_from_summary(name: str, summary: dict[str, Any], seconds: float) -> dict[str, Any]:
    row: dict[str, Any] = {
        "image": name,
        "score": "" if summary.get("score") is None else summary["score"],
        "label": summary.get("label", ""),
        "labels_over_seeds": " ".join((summary.get("label_distribution") or {}).get("labels", [])),
        # the continuous score and how clear a call the label was (absent from reports written before them)
        "expected_length": _number(summary.get("expected_length")),
        "label_probability": _number(summary.get("label_probability")),
        "seconds": f"{seconds:.1f}",
        "error": "",
    }
    for r in summary.get("results", []):
        mean = r.get("mean_distance")
        row[f"mean_distance_m{r['num_tokens']}"] = "" if mean is None else f"{mean:.4f}"
    return row


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _error_row(name: str, message: str, seconds: float) -> dict[str, Any]:
    return {"image": name, "score": "", "label": "", "seconds": f"{seconds:.1f}", "error": message}


def cmd_batch(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    folder = Path(args.folder).expanduser()
    if not folder.exists():
        raise UsageError(f"folder not found: {args.folder}")
    if not folder.is_dir():
        raise UsageError(f"{args.folder} is not a folder; use `originality analyze` for a single image")
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {args.out} is a file; give a folder")
    _check_device(args.device)
    _check_model_arg(args.model)
    images = list_images(folder)
    if not images:
        from .images import IMAGE_EXTENSIONS  # noqa: PLC0415 - start-up: loads torch/numpy only when used

        raise UsageError(f"no image files in {args.folder} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
    references = _references(args, config)

    # One process per device under `accelerate launch` / torchrun, else a single process; each loads
    # the model on its own device.
    state, device = _process_state(args)
    rank, world = state.process_index, state.num_processes
    out.mkdir(parents=True, exist_ok=True)
    names = report_names(images)
    mine = images[rank::world]
    model = _load(args, device=device)
    from .analysis import check_inputs  # noqa: PLC0415 - start-up: loads torch/numpy only when used

    check_inputs(None, config, model)  # fail before the first image on a bad domain word (config stays as given)

    rows: list[dict[str, Any]] = []
    part = out / f"summary.part{rank}.csv"
    done = skipped = failed = 0
    try:
        for i, image in enumerate(mine, 1):
            name = names[image]
            target = out / name
            tag = f"[{i}/{len(mine)}]" if world == 1 else f"[p{rank} {i}/{len(mine)}]"
            existing = target / "report.json"
            if existing.is_file() and not args.overwrite:
                try:
                    summary = json.loads(existing.read_text())
                    rows.append(_row_from_summary(image.name, summary, float(summary.get("total_seconds", 0.0))))
                    skipped += 1
                    print(f"{tag} {image.name}: skipped, report exists ({summary.get('label', '?')})", flush=True)
                    continue
                except (OSError, ValueError, KeyError) as err:
                    logger.warning("unreadable %s (%s); analysing %s again", existing, err, image.name)
            t0 = time.perf_counter()
            try:
                report = _run_analysis(image, config, model,
                                       _Progress(not args.quiet, prefix=f"{image.name} ", position=rank),
                                       references=references)
            except ValueError as err:  # bad input: record it and go on
                failed += 1
                rows.append(_error_row(image.name, str(err), time.perf_counter() - t0))
                print(f"{tag} {image.name}: error: {err}", flush=True)
                continue
            report.save(target)
            seconds = time.perf_counter() - t0
            rows.append(_row_from_summary(image.name, report.summary(), seconds))
            done += 1
            print(f"{tag} {image.name}: {score_line(report)}  [{seconds:.1f} s]", flush=True)
    finally:
        _write_csv(part, rows, config.max_tokens)

    state.wait_for_everyone()
    if state.is_main_process:
        merged: dict[str, dict[str, Any]] = {}
        for p in (out / f"summary.part{i}.csv" for i in range(world)):
            if not p.is_file():
                continue
            with open(p, newline="") as fh:
                for row in csv.DictReader(fh):
                    merged[row["image"]] = row
        wanted = {p.name for p in images}
        rows_all = [merged[n] for n in sorted(merged) if n in wanted]
        _write_csv(out / SUMMARY_NAME, rows_all, config.max_tokens)
        for p in out.glob("summary.part*.csv"):  # this run's parts and any left by an interrupted run
            p.unlink()
        missing = wanted - set(merged)
        if missing:
            logger.warning("no result for %d image(s): %s", len(missing), ", ".join(sorted(missing)))
        print(f"{len(rows_all)} images in {out / SUMMARY_NAME}", flush=True)
    if world > 1:
        print(f"process {rank}: {done} analysed, {skipped} skipped, {failed} failed", flush=True)
    else:
        print(f"{done} analysed, {skipped} skipped, {failed} failed", flush=True)
    return 0


# --------------------------------------------------------------------------- main


def _quiet_libraries() -> None:
    """--quiet: no loading bars or warnings from diffusers / transformers either."""
    try:
        import diffusers.utils.logging as dlog  # noqa: PLC0415 - start-up: diffusers only when used
        import transformers.utils.logging as tlog  # noqa: PLC0415 - start-up: transformers only when used
    except ImportError:  # pragma: no cover
        return
    for lib in (dlog, tlog):
        lib.set_verbosity_error()
        lib.disable_progress_bar()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `originality` and `python -m originality`; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version, or a usage error argparse already printed
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else EXIT_USAGE)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.quiet:
        _quiet_libraries()
    from .device import gpu_problem  # noqa: PLC0415 - start-up: loads torch/numpy only when used

    if gpu_problem():
        print(f"warning: {gpu_problem()}", file=sys.stderr)
    try:
        return args.handler(args)
    except ValueError as err:  # includes ImageInputError, config validation, model loading
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


# --------------------------------------------------------------------------- calibrate


def add_calibrate_parser(sub) -> None:
    """The `calibrate` subcommand (the rule: `originality.calibrate`)."""
    from . import calibrate  # noqa: PLC0415  (numpy: not for --help of other commands)

    c = sub.add_parser(
        "calibrate", help="suggest a distance threshold from images known to be familiar to the model",
        description=calibrate.__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("folder", metavar="FOLDER", help="images known to be familiar to the model (famous paintings, "
                                                    "landmark photos)")
    c.add_argument("--original", metavar="FOLDER2", default=None,
                   help="images known to be original to the model, to show the separation (default: none)")
    c.add_argument("--quantile", type=float, default=0.8,
                   help="quantile of the familiar images' m = 1 distances suggested as the threshold "
                        "(default: %(default)s)")
    c.add_argument("--out", metavar="DIR", default="outputs/calibrate",
                   help="folder for calibration.json (default: %(default)s)")
    _add_analysis_options(c)
    c.set_defaults(handler=cmd_calibrate)


def cmd_calibrate(args) -> int:
    from .calibrate import one_token_distances, quantile_key, summarise  # noqa: PLC0415  (numpy)

    if not 0.0 < args.quantile <= 1.0:
        raise UsageError(f"--quantile must be in (0, 1], got {args.quantile}")
    folders = {"familiar": Path(args.folder).expanduser()}
    if args.original:
        folders["original"] = Path(args.original).expanduser()
    images = {}
    for kind, folder in folders.items():
        if not folder.is_dir():
            raise UsageError(f"{kind} images: {folder} is not a folder")
        images[kind] = list_images(folder)
        if not images[kind]:
            raise UsageError(f"no image files in {folder}")
    config = config_from_args(args)
    _check_device(args.device)
    model = _load(args)
    started = time.perf_counter()

    def progress(i, n, name, mean):
        if not args.quiet:
            print(f"  {i}/{n} {name}: m=1 mean distance {mean:.3f}", file=sys.stderr, flush=True)

    rows = {kind: one_token_distances(model, paths, config, progress) for kind, paths in images.items()}
    summary = summarise([r["mean"] for r in rows["familiar"]],
                        [r["mean"] for r in rows.get("original", [])] or None, args.quantile)
    payload = {"model": model.describe(), "settings": {**config.to_dict(), "quantile": args.quantile,
                                                       "preset": args.preset},
               **summary, "images": rows, "seconds": time.perf_counter() - started,
               "world_default_threshold": model.world.threshold}
    out = Path(args.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    (out / "calibration.json").write_text(json.dumps(payload, indent=2) + "\n")

    f = summary["familiar"]
    print(f"familiar images ({f['images']}): m=1 mean distance mean {f['mean']:.3f}, median {f['median']:.3f}, "
          f"{quantile_key(args.quantile)} {f[quantile_key(args.quantile)]:.3f}")
    if "original" in summary:
        o = summary["original"]
        print(f"original images ({o['images']}): mean {o['mean']:.3f}, median {o['median']:.3f}; "
              f"{o['pass_at_m1']:.0%} would pass at m=1; AUC(familiar lower) {summary['auc_familiar_lower']:.2f}")
    print(f"suggested threshold: {summary['suggested_threshold']:.3f} ({summary['rule']}; the world's default is "
          f"{model.world.threshold}); use it with --threshold")
    print(f"wrote {out / 'calibration.json'}")
    return 0
