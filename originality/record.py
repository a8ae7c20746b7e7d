"""The reproducibility record of an analysis: everything needed to rerun it and to check that a
rerun started from the same things.

    record = start_record(input_sha256(image), query, model, given=config, resolved=resolved)   # analysis.prepare
    record = finish_record(record, results, resolved)                             # analysis.decide

It is a plain JSON-able dict, saved in report.json under "record":

    input      the file as the analysis received it: sha256 of its bytes, size in bytes
               (None for an in-memory image, which has no file)
    query      sha256 of the normalised query's RGB bytes (width x height x 3, row-major), i.e. of
               `numpy.asarray(Image.open("query.png").convert("RGB")).tobytes()`, and its size
    model      id (Hub id or folder), source ("hub" or "local folder"), revision (the Hub commit of
               the snapshot), content_sha256 (of a local folder: `provenance.folder_sha256`), bundled
               (the model its world ships with this package: `World.bundled`), world
    runtime    device, dtype, GPU name and CUDA version (None on a CPU)
    software   python, torch, diffusers, transformers, dreamsim, originality versions; the git
               commit of this package's checkout and whether it had uncommitted changes (None
               when the package is not a git checkout)
    seeds      config (the `seed` setting), inversion (per token length: the seed of its inversion,
               `analysis.inversion_seed`), reconstruction and edit (how generated image i is seeded)
    threshold  value and where it came from (`World.threshold_sentence`: the world's default or the user's
               setting)
    similarity only with reference images: each reference's input (as `input`, with its name) and the
               backbones of the copy and style similarity (id and Hub revision, or a folder's content hash;
               none in the shapes world, whose detector has no weights)

`python -m originality reproduce RUN_DIR` (`originality.reproduce`) reruns from it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import logging
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

from PIL import Image

from . import __version__
from .provenance import folder_sha256, pixels_sha256

logger = logging.getLogger(__name__)

RECORD_VERSION = 1
PACKAGES = ("torch", "diffusers", "transformers", "dreamsim")
_SNAPSHOT = re.compile(r"[/\\]snapshots[/\\]([0-9a-f]{40})(?:[/\\]|$)")


# --------------------------------------------------------------------------- model, software, runtime


def model_source(model) -> dict[str, Any]:
    """Where the model's weights came from, exactly: a Hub commit or a folder's content hash."""
    pipe = model.pipeline
    name = str(getattr(pipe, "name_or_path", None) or pipe.config.get("_name_or_path") or model.name)
    info: dict[str, Any] = {"id": name, "world": model.world.name, "source": None, "revision": None,
                            "content_sha256": None, "bundled": False}
    if Path(name).is_dir():
        info.update(source="local folder", content_sha256=folder_sha256(name),
                    bundled=model.world.bundles(name))  # the folder its world ships in assets/
        return info
    info["source"] = "hub"
    # diffusers loads each component from <cache>/models--owner--name/snapshots/<commit>/<component>
    component = str(getattr(getattr(pipe, "unet", None), "config", {}).get("_name_or_path", ""))
    found = _SNAPSHOT.search(component)
    info["revision"] = found.group(1) if found else hub_revision(name, "model_index.json")
    return info


def hub_revision(model_id: str, filename: str) -> str | None:
    """The Hub commit of the cached snapshot holding `filename` of `model_id` (None: not cached, or unknown)."""
    try:
        from huggingface_hub import try_to_load_from_cache  # noqa: PLC0415 - start-up: huggingface_hub only when used

        cached = try_to_load_from_cache(model_id, filename)
        found = _SNAPSHOT.search(cached) if isinstance(cached, str) else None
    except Exception as err:  # noqa: BLE001 - a record without the commit, not a failed run
        logger.warning("could not find the Hub revision of %s: %s", model_id, err)
        return None
    return found.group(1) if found else None


def backbone_source(model_id: str) -> dict[str, Any]:
    """{"id", "source", "revision", "content_sha256"} of a transformers model (a similarity backbone): the Hub
    commit of its cached snapshot, or a local folder's content hash."""
    if Path(model_id).is_dir():
        return {"id": model_id, "source": "local folder", "revision": None, "content_sha256": folder_sha256(model_id)}
    return {"id": model_id, "source": "hub", "revision": hub_revision(model_id, "config.json"), "content_sha256": None}


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def software() -> dict[str, Any]:
    """Versions of Python, the libraries that decide the numbers, this package, and its git commit."""
    info: dict[str, Any] = {"python": platform.python_version()}
    info.update({p: _version(p) for p in PACKAGES})
    info["originality"] = __version__
    info.update(git_commit())
    return info


def git_commit(folder: Path | None = None) -> dict[str, Any]:
    """{"git_commit", "git_dirty"} of the checkout holding this package; None when there is none."""
    folder = folder or Path(__file__).resolve().parent.parent
    none = {"git_commit": None, "git_dirty": None}
    if not (folder / ".git").exists():
        return none
    try:
        head = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        dirty = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return none
    if head.returncode != 0:
        return none
    return {"git_commit": head.stdout.strip(), "git_dirty": bool(dirty.stdout.strip()) if dirty.returncode == 0
            else None}


def runtime(model) -> dict[str, Any]:
    import torch  # noqa: PLC0415 - start-up: torch only when used

    device = model.device
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {"device": str(device), "dtype": str(model.pipeline.unet.dtype).replace("torch.", ""),
            "gpu": gpu, "cuda": torch.version.cuda if gpu else None}


# --------------------------------------------------------------------------- the record


def start_record(source: dict[str, Any], query: Image.Image, model, *, given, resolved) -> dict[str, Any]:
    """What is known before any token length runs (`analysis.prepare`): input (`input_sha256` of the
    source as given, with the decoded upload's width and height), query, model, runtime, software, threshold.
    `given` is the config as the caller gave it (None: defaults), `resolved` the one with the world's defaults
    filled in."""
    return {
        "record_version": RECORD_VERSION,
        "input": source,
        "query": {"sha256": pixels_sha256(query), "width": query.width, "height": query.height,
                  "file": "query.png"},
        "model": model_source(model),
        "runtime": runtime(model),
        "software": software(),
        "seeds": {"config": resolved.seed},
        "threshold": {"value": resolved.threshold,
                      # the one sentence of where it came from (also `Report.threshold_source`)
                      "source": model.world.threshold_sentence(None if given is None else given.threshold)},
    }


def similarity_record(record: dict[str, Any], references, similarity) -> dict[str, Any]:
    """The record with the references (`input_sha256` of each, as given) and the similarity backbones used
    (`similarity.Similarity.backbones`: Hub id and revision, or a folder's content hash)."""
    if not record:
        return {}
    return {**record, "similarity": {"references": [dict(r.source, name=r.name) for r in references],
                                     "backbones": similarity.backbones}}


# Generated image i of an analysis with seed s starts from the latent seed image_seed(s, what) + i. Seeds are
# IMAGE_SEED_STRIDE apart so that another analysis seed draws other latents: `--seeds K` then averages the
# reconstruction noise as well as the inversion's. (Until 2026-12-03 image i used s + i, so seeds s and s + 1
# shared all but one latent.) Seed 0 draws what it always drew.
IMAGE_SEED_STRIDE = 100_000
EDIT_SEED_OFFSET = 10_000  # edits and reconstructions of one seed never share a latent (at most 1000 + 16 images)
# Restart r's selection images (`restarts`) start at SELECTION_SEED_OFFSET + r * SELECTION_SEED_STRIDE: apart from
# the reconstructions a length is judged on, so choosing a restart cannot flatter its judgement.
SELECTION_SEED_OFFSET = 20_000
SELECTION_SEED_STRIDE = 1_000
_IMAGE_SEED_OFFSETS = {"reconstruction": 0, "edit": EDIT_SEED_OFFSET, "selection": SELECTION_SEED_OFFSET}


# Repeat k (from 1) of an analysis under seed s (a close call's second opinion is repeat 1, the `seeds` setting's
# repeats are 1 .. K-1) runs under repeat_seed(s, k): a hash of both, between REPEAT_SEEDS' bounds. The seeds people
# type next (1 after 0, 1000 after 0) lie below them, so a rerun with another --seed shares no inversion and no latent
# with the first run's repeats, as a test-retest measurement needs, and the seed still fits the app's seed box.
# (Until 2026-12-08 repeat k ran under s + k: `--seed 0`'s second opinion was `--seed 1`'s own first lengths, so
# those two runs agreed more often than two independent ones.)
REPEAT_SEEDS = (2**31, 2**32)
SECOND_OPINION_REPEAT = 1  # a close call's second opinion runs as the analysis's first repeat


def repeat_seed(seed: int, repeat: int) -> int:
    """The analysis seed of repeat `repeat` (1, 2, ...) of an analysis under `seed`: in [2**31, 2**32), the same
    for the same two numbers, and apart from every seed a person is likely to type. Repeat 0 is `seed` itself."""
    if repeat == 0:
        return seed
    low, high = REPEAT_SEEDS
    digest = hashlib.sha256(f"repeat {repeat} of seed {seed}".encode()).digest()
    return low + int.from_bytes(digest[:8], "big") % (high - low)


def image_seed(seed: int, what: str = "reconstruction", restart: int = 0) -> int:
    """Latent seed of image 0 of `what` ("reconstruction", "edit", or "selection": restart `restart`'s selection
    images) under the analysis seed `seed`."""
    if what not in _IMAGE_SEED_OFFSETS:
        raise ValueError(f"what must be one of {', '.join(_IMAGE_SEED_OFFSETS)}, got {what!r}")
    return seed * IMAGE_SEED_STRIDE + _IMAGE_SEED_OFFSETS[what] + (SELECTION_SEED_STRIDE * restart
                                                                    if what == "selection" else 0)


def finish_record(record: dict[str, Any], results, config) -> dict[str, Any]:
    """The record with the seeds of every token length tried (`analysis.decide`)."""
    if not record:
        return {}
    out = dict(record)
    out["seeds"] = {
        "config": config.seed,
        "inversion": {str(r.num_tokens): r.inversion_seed for r in results},
        "reconstruction": f"image i (from 0) of every length: seed {image_seed(config.seed)} + i",
        "edit": f"image i (from 0) of every length: seed {image_seed(config.seed, 'edit')} + i",
    }
    if any(r.restarts for r in results):
        out["seeds"]["restarts"] = {str(r.num_tokens): [t["seed"] for t in r.restarts] for r in results}
        out["seeds"]["selection"] = (f"image i (from 0) of restart r (from 0) of every length: seed "
                                     f"{image_seed(config.seed, 'selection')} + {SELECTION_SEED_STRIDE}·r + i")
    return out

