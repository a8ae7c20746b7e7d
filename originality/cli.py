"""Command line: `python -m originality analyze IMAGE` and `python -m originality batch FOLDER --out DIR`.

    originality analyze photo.jpg --preset fast --out reports/photo
    originality batch photos/ --out reports/ --preset fast
    accelerate launch -m originality batch photos/ --out reports/   # one process per GPU

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

from .config import DOMAINS, LR_SCHEDULES, PRESETS, AnalysisConfig

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
SUMMARY_NAME = "summary.csv"
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# CLI option -> AnalysisConfig field, for the options that override a preset.
CONFIG_OPTIONS: dict[str, str] = {
    "domain": "domain",
    "max_tokens": "max_tokens",
    "steps": "steps",
    "batch_size": "batch_size",
    "learning_rate": "learning_rate",
    "lr_schedule": "lr_schedule",
    "reconstructions": "num_reconstructions",
    "inference_steps": "num_inference_steps",
    "guidance_scale": "guidance_scale",
    "threshold": "threshold",
    "edit_prompt": "edit_prompt",
    "edit_subject": "edit_subject",
    "edits": "num_edits",
    "seed": "seed",
}


class UsageError(ValueError):
    """A mistake in the command line; reported as `error: ...` with exit status 2."""


# --------------------------------------------------------------------------- parser


def _preset_default(field: str) -> str:
    """'150 with --preset fast, 2000 with --preset paper' (or just the value when presets agree)."""
    values = {name: getattr(preset, field) for name, preset in PRESETS.items()}
    if len(set(map(repr, values.values()))) == 1:
        return f"default: {next(iter(values.values()))!r}".replace("'", '"')
    order = ["fast"] + [n for n in values if n != "fast"]
    return "default: " + ", ".join(f"{values[n]} with --preset {n}" for n in order if n in values)


def _world_default(field: str) -> str:
    from .models import SD_THRESHOLD, SHAPES_GUIDANCE, SHAPES_THRESHOLD  # noqa: PLC0415

    known = {
        "threshold": f"{SD_THRESHOLD} DreamSim for Stable Diffusion, {SHAPES_THRESHOLD} element distance for shapes",
        "guidance_scale": f"7.5 for Stable Diffusion, {SHAPES_GUIDANCE} for shapes",
        "domain": "picked by CLIP zero-shot over the presets for Stable Diffusion, shapes for the shapes world",
    }
    return f"default: None = the model world's default ({known[field]})"


def _add_analysis_options(parser: argparse.ArgumentParser) -> None:
    model = parser.add_argument_group("model")
    model.add_argument(
        "--model", metavar="ID_OR_DIR", default=None,
        help='"shapes" (the bundled shapes world), "sd" (CompVis/stable-diffusion-v1-4), a Hugging Face Hub '
             "id or a local diffusers folder (default: $ORIGINALITY_MODEL, else Stable Diffusion v1.4 where a GPU "
             "and its weights are available, else the bundled shapes world)")
    model.add_argument(
        "--device", default=None,
        help="cpu or cuda (or cuda:N) (default: None = cuda when available, else cpu; "
             "under `accelerate launch` each process's own device)")
    model.add_argument(
        "--dtype", default=None, choices=("float32", "float16", "bfloat16"),
        help="precision of the frozen UNet and VAE; the text encoder and learned tokens stay float32 "
             "(default: None = bfloat16 on GPUs that have it, else float16 with loss scaling; float32 on CPU)")

    a = parser.add_argument_group("analysis (each overrides the preset)")
    a.add_argument("--preset", default="fast", choices=sorted(PRESETS),
                   help='settings to start from: "paper" (Haviv et al. 2024: 2000 steps, batch 20, '
                        '20 reconstructions) or "fast" (about a minute per image on a GPU) (default: fast)')
    a.add_argument("--domain", default=None, metavar="WORD",
                   help=f"domain preset ({', '.join(DOMAINS)}) or any single-token word; the learned tokens "
                        f"start from it ({_world_default('domain')})")
    a.add_argument("--max-tokens", type=int, default=None, metavar="M",
                   help="try m = 1 .. M learned tokens; none passing gives the label M+ "
                        f"({_preset_default('max_tokens')})")
    a.add_argument("--steps", type=int, default=None, metavar="N",
                   help=f"inversion optimisation steps per token length ({_preset_default('steps')})")
    a.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help=f"noisy copies of the image per inversion step ({_preset_default('batch_size')})")
    a.add_argument("--learning-rate", type=float, default=None, metavar="F",
                   help=f"inversion learning rate ({_preset_default('learning_rate')})")
    a.add_argument("--lr-schedule", default=None, choices=LR_SCHEDULES,
                   help="inversion learning-rate schedule; linear and cosine decay to 0 over the steps "
                        f"({_preset_default('lr_schedule')})")
    a.add_argument("--reconstructions", type=int, default=None, metavar="N",
                   help="images generated from 'a photo of S*' and scored against the query "
                        f"({_preset_default('num_reconstructions')})")
    a.add_argument("--inference-steps", type=int, default=None, metavar="N",
                   help=f"denoising steps per generated image ({_preset_default('num_inference_steps')})")
    a.add_argument("--guidance-scale", type=float, default=None, metavar="F",
                   help=f"classifier-free guidance when generating ({_world_default('guidance_scale')})")
    a.add_argument("--threshold", type=float, default=None, metavar="F",
                   help="mean distance at or below which the reconstructions count as the image "
                        f"({_world_default('threshold')})")
    a.add_argument("--edit-prompt", default=None, metavar="TEXT",
                   help="prompt of the editability check; {} stands for the learned tokens "
                        f"({_preset_default('edit_prompt')})")
    a.add_argument("--edit-subject", default=None, metavar="WORD",
                   help=f"what the editability check looks for in the edits ({_preset_default('edit_subject')})")
    a.add_argument("--edits", type=int, default=None, metavar="N",
                   help=f"images generated for the editability check ({_preset_default('num_edits')})")
    a.add_argument("--seed", type=int, default=None, metavar="N",
                   help=f"random seed of inversion and generation ({_preset_default('seed')})")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bar or log messages, only results and errors (default: off)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="originality",
        description="How original is an image to a text-to-image model? Progressive multi-token textual "
                    "inversion (Haviv et al. 2024): the score is the fewest learned tokens that reproduce "
                    "the image; lower means more familiar to the model.",
    )
    from . import __version__  # noqa: PLC0415

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("analyze", help="analyse one image",
                       description="Analyse one image: print one line per token length and the final score.")
    p.add_argument("image", metavar="IMAGE", help="image file (PNG, JPEG, WebP, GIF, BMP, TIFF)")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="save the report folder (report.json, query, reconstructions, edits, learned "
                        "embeddings) there (default: None = not saved)")
    p.add_argument("--json", action="store_true",
                   help="print the report summary as JSON instead of the text lines (default: off)")
    _add_analysis_options(p)
    p.set_defaults(handler=cmd_analyze)

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
    from .calibrate import add_parser as add_calibrate_parser  # noqa: PLC0415

    add_calibrate_parser(sub)
    return parser


# --------------------------------------------------------------------------- helpers


def config_from_args(args: argparse.Namespace) -> AnalysisConfig:
    """The preset with the options the user gave; validated (ValueError on a bad value)."""
    overrides = {field: getattr(args, opt) for opt, field in CONFIG_OPTIONS.items() if getattr(args, opt) is not None}
    config = AnalysisConfig.preset(args.preset, **overrides)
    config.validate()
    return config


def _check_device(device: str | None) -> None:
    if device is None:
        return
    import torch  # noqa: PLC0415

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
    if model in (None, "", "auto", "shapes", "sd", "stable-diffusion"):
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
    from .models import load_model  # noqa: PLC0415

    _check_model_arg(args.model)
    model_arg = str(Path(args.model).expanduser()) if args.model and Path(args.model).expanduser().exists() \
        else args.model
    return load_model(model_arg, device=device if device is not None else args.device, dtype=args.dtype)


def _precheck(config: AnalysisConfig, model) -> AnalysisConfig:
    """Settings that depend on the model (the domain word): fail before any image is analysed."""
    from .analysis import resolve_config  # noqa: PLC0415
    from .inversion import initializer_id  # noqa: PLC0415

    resolved = resolve_config(config, model)
    initializer_id(model.pipeline.tokenizer, model.initial_word(resolved.domain))
    # unresolved: a domain left None is picked per image, and the report says where the threshold came from
    return config


class _Progress:
    """A tqdm bar on stderr per inversion ("m=2 inversion", loss as postfix)."""

    def __init__(self, enabled: bool, prefix: str = "", position: int = 0):
        self.enabled = enabled
        self.prefix = prefix
        self.position = position
        self.bar = None

    def step(self, event) -> None:
        if not self.enabled:
            return
        from tqdm.auto import tqdm  # noqa: PLC0415

        if self.bar is None:
            self.bar = tqdm(total=event.total, desc=f"{self.prefix}m={event.num_tokens} inversion",
                            postfix={"loss": f"{event.loss:.4f}"}, file=sys.stderr, leave=False,
                            dynamic_ncols=True, position=self.position)
        self.bar.set_postfix(loss=f"{event.loss:.4f}", refresh=False)
        self.bar.update(event.step - self.bar.n)
        if event.step >= event.total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def length_line(result, threshold: float) -> str:
    """`m=1  distance 0.412 ± 0.051  edit: 3/4 edits show a cat  -> pass`."""
    if result.passed:
        verdict = "pass"
    else:
        why = []
        if not result.reconstruction_passed:
            why.append(f"distance > {threshold:g}")
        if not result.edit_passed:
            why.append("edit check")
        verdict = f"fail ({', '.join(why)})"
    detail = result.edit_detail or ("pass" if result.edit_passed else "fail")
    return (f"m={result.num_tokens}  distance {result.mean_distance:.3f} ± {result.std_distance:.3f}  "
            f"edit: {detail}  -> {verdict}")


def score_line(report) -> str:
    return f"score: {report.label}  ({report.verdict})"


def _run_analysis(image, config: AnalysisConfig, model, progress: _Progress, on_length=None):
    from .analysis import Decision, LengthDone, iter_analyze  # noqa: PLC0415
    from .inversion import InversionStep  # noqa: PLC0415

    events = iter_analyze(image, config, model)
    try:
        for event in events:
            if isinstance(event, InversionStep):
                progress.step(event)
            elif isinstance(event, LengthDone):
                progress.close()
                if on_length is not None:
                    on_length(event.result)
            elif isinstance(event, Decision):
                return event.report
    finally:
        progress.close()
        events.close()
    raise RuntimeError("analysis ended without a decision")


# --------------------------------------------------------------------------- analyze


def cmd_analyze(args: argparse.Namespace) -> int:
    from .images import load_image  # noqa: PLC0415

    config = config_from_args(args)
    _check_device(args.device)
    _check_model_arg(args.model)
    load_image(args.image)  # a missing or unreadable image fails now, before the model loads
    model = _load(args)
    config = _precheck(config, model)

    def on_length(result) -> None:
        if not args.json:
            print(length_line(result, model.default_threshold if config.threshold is None else config.threshold),
                  flush=True)

    report = _run_analysis(args.image, config, model, _Progress(not args.quiet), on_length)
    if args.out:
        folder = report.save(args.out)
        logger.info("report saved to %s", folder)
    if args.json:
        print(json.dumps(report.summary(), indent=2))
    else:
        print(score_line(report))
        for note in [*report.notes, f"threshold: {report.threshold:g}, {report.threshold_source}"]:
            print(f"note: {note}")
        if args.out:
            print(f"report: {args.out}")
    return 0


# --------------------------------------------------------------------------- batch


def list_images(folder: Path) -> list[Path]:
    """Image files directly in `folder` (by extension), sorted by name."""
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
                  key=lambda p: p.name)


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
    fieldnames = ["image", "score", "label", *columns, "seconds", "error"]
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
        "seconds": f"{seconds:.1f}",
        "error": "",
    }
    for r in summary.get("results", []):
        mean = r.get("mean_distance")
        row[f"mean_distance_m{r['num_tokens']}"] = "" if mean is None else f"{mean:.4f}"
    return row


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
        raise UsageError(f"no image files in {args.folder} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")

    import torch  # noqa: PLC0415
    from accelerate import PartialState  # noqa: PLC0415

    # One process per device under `accelerate launch` / torchrun, else a single process.
    # cpu=True lets CPU-only launches (gloo) split the work too.
    on_cpu = (args.device or "").startswith("cpu") or not torch.cuda.is_available()
    state = PartialState(cpu=on_cpu)
    rank, world = state.process_index, state.num_processes
    out.mkdir(parents=True, exist_ok=True)
    names = report_names(images)
    mine = images[rank::world]

    # Each process loads the model on its own device (--device only picks cpu vs cuda).
    device = state.device
    if args.device is not None and (world == 1 or not args.device.startswith("cuda")):
        device = args.device
    model = _load(args, device=device)
    config = _precheck(config, model)

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
                                       _Progress(not args.quiet, prefix=f"{image.name} ", position=rank))
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
        import diffusers.utils.logging as dlog  # noqa: PLC0415
        import transformers.utils.logging as tlog  # noqa: PLC0415
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
    from .device import gpu_problem  # noqa: PLC0415

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
