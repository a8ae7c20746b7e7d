"""Start-up loading (originality/app/startup.py) and the ZeroGPU calls that use it (originality/app/zerogpu.py).

ZeroGPU's scheduler only exists on a ZeroGPU Space, so its worker is emulated here the way `spaces` runs one: each
`@spaces.GPU` call in a process forked from this one (a fresh worker per call, the platform's worst case), its
arguments and each yield pickled. The Stable Diffusion world is the tiny random-weight one of tests/test_models.py
(the real loaders: diffusers, DreamSim, CLIP, the reference backbones), and every open of a weight file, by this
process or a forked one, is counted with Linux inotify: the weights must be read at start-up and never again.
"""

from __future__ import annotations

import ctypes
import functools
import inspect
import multiprocessing
import os
import pickle
import struct
import sys
import traceback
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from originality import AnalysisConfig, iter_analyze, models, similarity
from originality.analysis import Decision
from originality.app import startup, zerogpu
from originality.metrics import ClipEditCheck
from originality.sd import SD_MODEL_ID
from originality.shapes import SHAPES_MODEL_DIR
from originality.worlds import get_world
from tests.offline_models import OFFLINE_DREAMSIM_TYPE, make_tiny_clip, make_tiny_dino

from conftest import write_tiny_sd_world

ROOT = Path(__file__).resolve().parent.parent
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".tar", ".pt")

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify and fork: Linux only")


# --------------------------------------------------------------------------- what the emulation needs


class FileOpens:
    """Opens of the files in `folders` (and their sub-folders) by any process, this one's children included (Linux
    inotify, IN_OPEN); `weights()` returns and forgets those seen so far, weight files only, as {path: opens}."""

    IN_OPEN, IN_ISDIR, EVENT = 0x20, 0x40000000, struct.Struct("iIII")

    def __init__(self, folders):
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        assert self.fd >= 0, os.strerror(ctypes.get_errno())
        self.watched: dict[int, Path] = {}
        for folder in folders:
            for path in [Path(folder), *(p for p in Path(folder).rglob("*") if p.is_dir())]:
                wd = self.libc.inotify_add_watch(self.fd, str(path.resolve()).encode(), self.IN_OPEN)
                assert wd >= 0, os.strerror(ctypes.get_errno())
                self.watched[wd] = path.resolve()

    def weights(self) -> Counter:
        seen: Counter = Counter()
        while True:
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return seen
            at = 0
            while at < len(data):
                wd, mask, _, length = self.EVENT.unpack_from(data, at)
                name = data[at + self.EVENT.size: at + self.EVENT.size + length].rstrip(b"\0").decode()
                at += self.EVENT.size + length
                if not mask & self.IN_ISDIR and name.endswith(WEIGHT_SUFFIXES):
                    seen[self.watched[wd] / name] += 1

    def close(self):
        os.close(self.fd)


def _child(fn, blob: bytes, out: str) -> None:
    """The worker: run the call, write what it returned or yielded (or its traceback), pickled, to `out`."""
    torch.set_num_threads(1)  # one thread: this machine's cores are shared
    try:
        args, kwargs = pickle.loads(blob)
        result = fn(*args, **kwargs)
        outcome = ("items", list(result)) if inspect.isgenerator(result) else ("items", [result])
    except BaseException:  # noqa: BLE001 - the parent raises it
        outcome = ("error", traceback.format_exc())
    Path(out).write_bytes(pickle.dumps(outcome))


class ForkingSpaces:
    """`spaces` as ZeroGPU runs its decorator, without the scheduler: `GPU(duration=...)(fn)` asks for the duration
    (a number, or a callable of the call's arguments) and runs the call in a freshly forked process, its arguments
    and results pickled (a generator's items come back when the call ends). `calls`: (function name, duration, pid)."""

    def __init__(self, folder: Path):
        self.folder, self.calls = folder, []

    def GPU(self, task=None, *, duration=60):  # the name `spaces` gives it
        def decorate(fn):
            @functools.wraps(fn)
            def generator_call(*args, **kwargs):
                yield from self._run(fn, duration, args, kwargs)

            @functools.wraps(fn)
            def call(*args, **kwargs):
                (result,) = self._run(fn, duration, args, kwargs)
                return result

            return generator_call if inspect.isgeneratorfunction(fn) else call

        return decorate if task is None else decorate(task)

    def _run(self, fn, duration, args, kwargs) -> list:
        seconds = duration(*args, **kwargs) if callable(duration) else duration
        out = self.folder / f"call-{len(self.calls)}.pickle"
        worker = multiprocessing.get_context("fork").Process(
            target=_child, args=(fn, pickle.dumps((args, kwargs)), str(out)), daemon=True)
        worker.start()
        worker.join(timeout=600)
        self.calls.append((fn.__name__, seconds, worker.pid))
        if worker.exitcode != 0 or not out.is_file():
            raise RuntimeError(f"the worker of {fn.__name__} died (exit code {worker.exitcode})")
        kind, value = pickle.loads(out.read_bytes())
        if kind == "error":
            raise RuntimeError(f"the GPU call {fn.__name__} failed in its worker:\n{value}")
        return value


def forking_engine_calls(monkeypatch, folder: Path) -> ForkingSpaces:
    """Rebuild zerogpu's three GPU calls through `gpu_call` as the module does at import, with `spaces` a
    `ForkingSpaces` (its results in `folder`); returns it."""
    fake = ForkingSpaces(folder)
    monkeypatch.setattr(zerogpu, "spaces", fake)
    for name, fn, duration in (("engine_prepare", zerogpu.prepare_call, zerogpu.PREPARE_GPU_S),
                               ("engine_length", zerogpu.length_events, zerogpu._gpu_duration),
                               ("engine_similarity", zerogpu.similarity_call, zerogpu.SIMILARITY_GPU_S)):
        monkeypatch.setattr(zerogpu, name, zerogpu.gpu_call(fn, duration))
    return fake


@pytest.fixture(scope="module")
def sd_world(tmp_path_factory, dreamsim_cache):
    """The Stable Diffusion world with random weights on disk: the pipeline, DreamSim's cache, the CLIP check and
    the two reference backbones (the layouts the real libraries read)."""
    root = write_tiny_sd_world(tmp_path_factory.mktemp("sd-world-startup"), dreamsim_cache)
    make_tiny_dino(root / "dino")
    make_tiny_clip(root / "style-clip")
    return root


@pytest.fixture
def fresh(monkeypatch, sd_world):
    """Nothing loaded in this process yet (the caches of models, reference judges and start-up emptied for the
    test), the reference judge built on the tiny backbones, and the options that load the tiny world."""
    monkeypatch.setattr(models, "_CACHE", {})
    monkeypatch.setattr(similarity, "_JUDGES", {})
    monkeypatch.setattr(startup, "_LOADED", {})
    monkeypatch.setattr(similarity, "BackboneSimilarity", functools.partial(
        similarity.BackboneSimilarity, copy_model_id=str(sd_world / "dino"), style_model_id=str(sd_world / "style-clip")))
    return {"device": "cpu", "dreamsim_type": OFFLINE_DREAMSIM_TYPE, "clip_model": str(sd_world / "tiny-clip"),
            "cache_dir": sd_world / "cache"}


def _folders(sd_world) -> list[Path]:
    return [sd_world / "tiny-sd", sd_world / "tiny-clip", (sd_world / "cache" / "dreamsim").resolve(),
            sd_world / "dino", sd_world / "style-clip"]


def _query(seed: int) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 255, (72, 72, 3), dtype=np.uint8))


# threshold 0 fails every length, so the stop rule runs all five
FIVE_LENGTHS = AnalysisConfig.preset("fast", steps=2, batch_size=1, num_reconstructions=1, num_edits=1,
                                     num_inference_steps=2, max_tokens=5, threshold=0.0, always_check_edits=True)


# --------------------------------------------------------------------------- the tests


def test_a_five_length_zerogpu_run_reads_the_weights_once_at_startup(sd_world, fresh, monkeypatch, tmp_path):
    fake = forking_engine_calls(monkeypatch, tmp_path)
    opens = FileOpens(_folders(sd_world))
    try:
        model_id = str(sd_world / "tiny-sd")
        loaded = startup.load_models([model_id], **fresh)
        read_at_startup = opens.weights()
        report = None
        for event in iter_analyze(_query(1), FIVE_LENGTHS, references=[_query(2)],
                                  runner=zerogpu.ZeroGPURunner(model_id, get_world("sd"))):
            if isinstance(event, Decision):
                report = event.report
        read_in_calls = opens.weights()
    finally:
        opens.close()

    assert list(loaded) == [model_id]
    # every weight file of the world was read at start-up: the pipeline, DreamSim, CLIP, both reference backbones
    for folder in _folders(sd_world):
        weights = {p for p in folder.resolve().rglob("*") if p.name.endswith(WEIGHT_SUFFIXES)}
        assert weights and weights <= set(read_at_startup), folder
    assert read_in_calls == Counter()  # ... and none in any GPU call
    # the run went through ZeroGPU's calls: the query's step 1, five lengths, the comparison, each in its own worker
    assert [name for name, _, _ in fake.calls] == ["prepare_call"] + ["length_events"] * 5 + ["similarity_call"]
    assert len({pid for _, _, pid in fake.calls} | {os.getpid()}) == 8
    assert {seconds for name, seconds, _ in fake.calls if name == "length_events"} == \
        {zerogpu.gpu_seconds(FIVE_LENGTHS.to_dict())}
    assert report.label == "5+" and [r.num_tokens for r in report.results] == [1, 2, 3, 4, 5]
    assert report.similarity is not None  # the comparison ran, on the reference judge loaded at start-up


def test_without_the_startup_load_every_gpu_call_reads_the_weights(sd_world, fresh, monkeypatch, tmp_path):
    """What the count above would see if the app loaded nothing at start-up: each forked call loads on its own."""
    fake = forking_engine_calls(monkeypatch, tmp_path)
    monkeypatch.setattr(models, "load_model", functools.partial(models.load_model, **fresh))
    opens = FileOpens(_folders(sd_world))
    try:
        list(iter_analyze(_query(1), FIVE_LENGTHS.replace(max_tokens=2),
                          runner=zerogpu.ZeroGPURunner(str(sd_world / "tiny-sd"), get_world("sd"))))
        read = opens.weights()
    finally:
        opens.close()
    unet = (sd_world / "tiny-sd" / "unet" / "diffusion_pytorch_model.safetensors").resolve()
    assert [name for name, _, _ in fake.calls] == ["prepare_call", "length_events", "length_events"]
    assert read[unet] >= 3  # once per call at least: the prepare call and both lengths
    assert models._CACHE == {}  # and this process still holds nothing


def test_startup_loads_every_world_that_can_run_here_the_configured_first(monkeypatch, tiny_shapes_model):
    monkeypatch.delenv("ORIGINALITY_MODEL", raising=False)
    monkeypatch.delenv("ORIGINALITY_SD_ON_CPU", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert startup.startup_model_ids() == [str(SHAPES_MODEL_DIR)]  # no GPU: Stable Diffusion cannot run here
    monkeypatch.setenv("ORIGINALITY_MODEL", str(tiny_shapes_model))
    assert startup.startup_model_ids() == [str(tiny_shapes_model)]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU: both worlds, the configured one first
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # (offline, SD counts only with its weights cached: CI runs offline)
    assert startup.startup_model_ids() == [str(tiny_shapes_model), SD_MODEL_ID]
    monkeypatch.delenv("ORIGINALITY_MODEL")
    assert startup.startup_model_ids() == [SD_MODEL_ID, str(SHAPES_MODEL_DIR)]


def test_a_model_that_cannot_load_at_startup_is_logged_and_the_rest_still_load(monkeypatch, tmp_path,
                                                                                 tiny_shapes_model, caplog):
    monkeypatch.setattr(models, "_CACHE", {})
    monkeypatch.setattr(startup, "_LOADED", {})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = startup.load_models([str(tmp_path / "no-model-here"), str(tiny_shapes_model)], device="cpu")
    assert list(loaded) == [str(tiny_shapes_model)]
    assert startup.loaded(str(tiny_shapes_model)) is loaded[str(tiny_shapes_model)]
    assert startup.loaded(str(tmp_path / "no-model-here")) is None  # its runs load it, and say why it fails
    assert "could not load" in caplog.text and "no-model-here" in caplog.text


def test_spaces_is_installed_and_leaves_the_calls_in_process_off_zerogpu():
    import spaces

    assert zerogpu.spaces is spaces  # the app's GPU calls go through the real decorator ...

    def one_length():
        yield 1

    assert spaces.GPU(duration=5)(one_length) is one_length  # ... which, off a ZeroGPU Space, changes nothing


def test_the_front_matter_preloads_exactly_the_hub_files_the_startup_load_reads():
    text = (ROOT / "README.md").read_text()
    front = yaml.safe_load(text.split("---\n")[1])
    preload = {}
    for entry in front["preload_from_hub"]:
        repo, files = entry.split()
        preload[repo] = tuple(files.split(","))
    assert preload == startup.HUB_FILES
    assert front["models"] == list(startup.HUB_FILES)
    # the Hub models the start-up load reads: the SD world's model, its CLIP check's, the reference backbones
    assert set(startup.HUB_FILES) == {SD_MODEL_ID, ClipEditCheck.model_id, similarity.COPY_BACKBONE,
                                      similarity.STYLE_BACKBONE}
