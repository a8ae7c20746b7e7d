#!/usr/bin/env python
"""Dress rehearsal of the Space on the real model ids, with random weights; prints the figures, writes JSON.

    python benchmarks/rehearsal.py                                   # full size: ~8 GB cache in /tmp, reused
    python benchmarks/rehearsal.py --cache /big/disk/rehearsal --out rehearsal.json --screenshot shot.png
    python benchmarks/rehearsal.py --tiny                            # same layout, tiny architectures (CI)

What "the Space boots" means until real weights are at hand (issue #29):

1. Build a model cache with random weights in the exact layout the app's loaders read, under the real ids
   and one fake commit (`FAKE_COMMIT`), once per --cache folder (reused after):
   - $HF_HOME/hub (huggingface_hub's layout: models--org--name/refs/main, snapshots/<commit>/..., blobs/<etag>)
     for every Hub model the Space loads: Stable Diffusion v1.4 (the architecture from ../shared/sd-v1-4-configs:
     model_index.json, scheduler, text encoder, tokenizer, UNet, VAE, feature extractor; no safety checker, which
     the app does not load (safety_checker=None), so diffusers fetches nothing of it), the CLIP judge
     (openai/clip-vit-base-patch32: the edit check and the domain pick), and the reference backbones
     (facebook/dino-vitb16 for copy, openai/clip-vit-large-patch14 for style similarity). The files are exactly those
     the README's front matter preloads (`preload_from_hub`; tests/test_rehearsal.py checks), so the app booting from
     this cache shows that they are all it reads;
   - $ORIGINALITY_CACHE/dreamsim, DreamSim's "ensemble" cache: its three backbones, DINO's head, the LoRA adapter,
     and what dreamsim fetches through torch.hub (DINO's repository and its checkpoint; tests/offline_models.py).
   The ids come from the code (originality.sd, models.load_model's defaults, originality.similarity), not a list.
   Weights are random and seeded; configs are the real ones for SD v1.4, today's transformers' for the others.
2. Start `python app.py` with the Stable Diffusion world (ORIGINALITY_MODEL), HF_HUB_OFFLINE=1, on the CPU
   (CUDA_VISIBLE_DEVICES empty; ORIGINALITY_SD_ON_CPU=1 lets the SD world run without a GPU) and tiny settings
   (ORIGINALITY_DEFAULTS: one token length, one inversion step, one image of each kind). Nothing else differs from
   a Space: the loaders find the models by their ids in the cache, exactly as they would after a download.
3. Drive one analysis in headless Chromium (playwright, Debian's /usr/bin/chromium): upload the SD example and one
   reference image, Run, wait for the verdict, read the share link, download report.json and report.html through
   the page's links, open the share link in a fresh page, save a screenshot.
4. Report: start-up time (process start to the page answering), time to the first reconstructions and to the
   result (from the Run click), peak RSS of the app's process (VmHWM), the record's model id and revision (the
   fake commit: read from the cache's snapshot, so it proves where the weights came from), the commit this ran on.

Exit status 0 only when every step worked and the record names FAKE_COMMIT. Needs the SD v1.4 configs, Chromium
and Python playwright (requirements-dev.txt); the full size needs ~8 GB of disk and ~12 GB of memory.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import inspect
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from originality.models import load_model  # noqa: E402
from originality.sd import SD_MODEL_ID, SD_ON_CPU_ENV  # noqa: E402
from originality.similarity import COPY_BACKBONE, STYLE_BACKBONE  # noqa: E402
from originality.testing import clip_bpe_vocab  # noqa: E402

# One fake commit for every repository: the record's model revision must be this, read back from the cache.
FAKE_COMMIT = hashlib.sha1(b"originality dress rehearsal: random weights").hexdigest()
CLIP_JUDGE = inspect.signature(load_model).parameters["clip_model"].default  # what the app's load_model loads
DREAMSIM_TYPE = inspect.signature(load_model).parameters["dreamsim_type"].default
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
QUERY = ROOT / "assets" / "examples" / "sd_house.png"
REFERENCE = ROOT / "assets" / "examples" / "sd_painting.png"
# One token length, one inversion step, one reconstruction and one edit, one denoising step: the smallest
# analysis that still goes through every stage (within the public limits, so the app accepts it); random weights
# never reconstruct the query, so always_check_edits makes the edit and its CLIP check run all the same.
TINY_SETTINGS = {"max_tokens": 1, "steps": 1, "batch_size": 1, "num_reconstructions": 1, "num_edits": 1,
                 "num_inference_steps": 1, "always_check_edits": True}
VERDICT_JS = "document.querySelector('#verdict') && /needs/.test(document.querySelector('#verdict').innerText)"
# huggingface_hub stores files of these kinds (and any over 10 MB) as LFS: their etag is the content's sha256
LFS_SUFFIXES = (".safetensors", ".bin", ".pth", ".h5", ".msgpack")


def default_configs() -> Path:
    """$ORIGINALITY_SD14_CONFIGS, else shared/sd-v1-4-configs beside the checkout (or beside a worktree's parent)."""
    for path in (Path(os.environ.get("ORIGINALITY_SD14_CONFIGS", "/nonexistent")),
                 ROOT.parent / "shared" / "sd-v1-4-configs", ROOT.parent.parent / "shared" / "sd-v1-4-configs"):
        if (path / "unet" / "config.json").is_file():
            return path
    return ROOT.parent / "shared" / "sd-v1-4-configs"


# --------------------------------------------------------------------------- 1. the cache


class HubRepo:
    """One model repository in huggingface_hub's cache layout: blobs/<etag>, snapshots/<commit>/<file> (a relative
    symlink to its blob), refs/main (the commit; written last, so a repository with refs/main is complete)."""

    def __init__(self, hub_cache: Path, repo_id: str, commit: str = FAKE_COMMIT):
        self.repo_id, self.commit = repo_id, commit
        self.root = hub_cache / ("models--" + repo_id.replace("/", "--"))
        self.snapshot = self.root / "snapshots" / commit

    @property
    def complete(self) -> bool:
        ref = self.root / "refs" / "main"
        return ref.is_file() and ref.read_text().strip() == self.commit

    def add(self, name: str, source: Path) -> None:
        """Move `source` into the cache as the snapshot's file `name` (e.g. "unet/config.json")."""
        data_hash = hashlib.sha256() if _is_lfs(source) else hashlib.sha1(b"blob %d\0" % source.stat().st_size)
        with open(source, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 24), b""):
                data_hash.update(chunk)
        blob = self.root / "blobs" / data_hash.hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(source), blob)
        link = self.snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, link.parent))

    def add_folder(self, folder: Path, prefix: str = "") -> None:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            self.add(prefix + path.relative_to(folder).as_posix(), path)

    def add_json(self, name: str, data: dict, stage: Path) -> None:
        path = stage / name.replace("/", "__")
        path.write_text(json.dumps(data, indent=2) + "\n")
        self.add(name, path)

    def finish(self) -> None:
        (self.root / "refs").mkdir(parents=True, exist_ok=True)
        (self.root / "refs" / "main").write_text(self.commit)


def _is_lfs(path: Path) -> bool:
    return path.suffix in LFS_SUFFIXES or path.stat().st_size > 10 * 2**20


_CLIP_TOKEN = {"lstrip": False, "normalized": True, "rstrip": False, "single_word": False}
# The "slow" tokenizer files of OpenAI's CLIP repositories and of SD v1.4's tokenizer folder.
_SPECIAL_TOKENS = {"bos_token": {"content": "<|startoftext|>", **_CLIP_TOKEN},
                   "eos_token": {"content": "<|endoftext|>", **_CLIP_TOKEN}, "pad_token": "<|endoftext|>",
                   "unk_token": {"content": "<|endoftext|>", **_CLIP_TOKEN}}
_CLIP_IMAGE_PROCESSOR = {"crop_size": 224, "do_center_crop": True, "do_normalize": True, "do_resize": True,
                         "feature_extractor_type": "CLIPFeatureExtractor",
                         "image_mean": [0.48145466, 0.4578275, 0.40821073],
                         "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3, "size": 224}
_DINO_IMAGE_PROCESSOR = {"do_normalize": True, "do_resize": True, "feature_extractor_type": "ViTFeatureExtractor",
                         "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "resample": 2,
                         "size": 224}


def _add_tokenizer(repo: HubRepo, stage: Path, prefix: str = "", fast: bool = False) -> None:
    """CLIP's tokenizer files (the real BPE vocabulary, `testing.clip_bpe_vocab`): vocab.json, merges.txt,
    special_tokens_map.json, tokenizer_config.json, and with `fast` also tokenizer.json."""
    vocab, merges = clip_bpe_vocab()
    (stage / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (stage / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    repo.add(prefix + "vocab.json", stage / "vocab.json")
    repo.add(prefix + "merges.txt", stage / "merges.txt")
    repo.add_json(prefix + "special_tokens_map.json", _SPECIAL_TOKENS, stage)
    config = {"add_prefix_space": False, "do_lower_case": True, "errors": "replace", "model_max_length": 77,
              "tokenizer_class": "CLIPTokenizer", **{k: ({"__type": "AddedToken", **v} if isinstance(v, dict) else v)
                                                    for k, v in _SPECIAL_TOKENS.items()}}
    repo.add_json(prefix + "tokenizer_config.json", config, stage)
    if fast:
        from transformers import CLIPTokenizer  # noqa: PLC0415 - only when building

        out = stage / "fast"
        CLIPTokenizer(vocab=vocab, merges=merges).save_pretrained(str(out))
        repo.add(prefix + "tokenizer.json", out / "tokenizer.json")


def _save_model(model, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    return folder


def build_sd(hub: Path, configs: Path, tiny: bool, stage: Path) -> None:
    """CompVis/stable-diffusion-v1-4: the real component configs, random weights in float32 (as on the Hub's main)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: PLC0415 - only when building
    from transformers import CLIPTextConfig, CLIPTextModel  # noqa: PLC0415 - only when building

    from originality.testing import tiny_sd_pipeline  # noqa: PLC0415 - only when building

    repo = HubRepo(hub, SD_MODEL_ID)
    read = {name: json.loads((configs / name / file).read_text())
            for name, file in (("unet", "config.json"), ("vae", "config.json"), ("text_encoder", "config.json"),
                               ("scheduler", "scheduler_config.json"))}
    repo.add_json("model_index.json", {
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.2.2",
        "feature_extractor": ["transformers", "CLIPImageProcessor"],
        "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
        "scheduler": ["diffusers", "PNDMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"]}, stage)
    repo.add_json("scheduler/scheduler_config.json", read["scheduler"], stage)
    repo.add_json("feature_extractor/preprocessor_config.json", _CLIP_IMAGE_PROCESSOR, stage)
    _add_tokenizer(repo, stage, "tokenizer/")
    if tiny:  # the tiny SD of the tests, in the same files (its own configs)
        pipe = tiny_sd_pipeline(seed=0)
        parts = {"unet": pipe.unet, "vae": pipe.vae, "text_encoder": pipe.text_encoder}
        for name, module in parts.items():
            repo.add_folder(_save_model(module, stage / name), name + "/")
        repo.finish()
        return
    builders = {"unet": lambda: UNet2DConditionModel.from_config(read["unet"]),
                "vae": lambda: AutoencoderKL.from_config(read["vae"]),
                "text_encoder": lambda: CLIPTextModel(CLIPTextConfig(**read["text_encoder"]))}
    for i, (name, build) in enumerate(builders.items()):  # one at a time: the UNet alone is 3.4 GB
        torch.manual_seed(i)
        folder = _save_model(build(), stage / name)
        (folder / "config.json").write_text(json.dumps(read[name], indent=2) + "\n")  # the published config
        repo.add_folder(folder, name + "/")
    repo.finish()


def _clip_config(tiny: bool, large: bool):
    from transformers import CLIPConfig  # noqa: PLC0415 - only when building

    vocab, _ = clip_bpe_vocab()
    ids = {"bos_token_id": vocab["<|startoftext|>"], "eos_token_id": vocab["<|endoftext|>"],
           "pad_token_id": vocab["<|endoftext|>"], "vocab_size": len(vocab), "max_position_embeddings": 77}
    if tiny:
        text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
        projection = 16
    elif large:  # openai/clip-vit-large-patch14
        text = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)
        vision = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16)
        projection = 768
    else:  # openai/clip-vit-base-patch32
        text = dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8)
        vision = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)
        projection = 512
    patch = 14 if large else 32
    return CLIPConfig(text_config={**text, **ids}, vision_config={**vision, "image_size": 224, "patch_size": patch},
                      projection_dim=projection)


def build_clip(hub: Path, repo_id: str, tiny: bool, large: bool, stage: Path, seed: int) -> None:
    """An OpenAI CLIP repository: config.json, model.safetensors, preprocessor_config.json, and the tokenizer's files
    for the judge (CLIPProcessor reads them; the style backbone loads CLIPModel and CLIPImageProcessor only)."""
    from transformers import CLIPModel  # noqa: PLC0415 - only when building

    repo = HubRepo(hub, repo_id)
    torch.manual_seed(seed)
    repo.add_folder(_save_model(CLIPModel(_clip_config(tiny, large)), stage / "model"))
    repo.add_json("preprocessor_config.json", _CLIP_IMAGE_PROCESSOR, stage)
    if not large:
        _add_tokenizer(repo, stage, fast=True)
    repo.finish()


def build_dino(hub: Path, tiny: bool, stage: Path) -> None:
    """facebook/dino-vitb16 (a transformers ViTModel): config.json, model.safetensors, preprocessor_config.json."""
    from transformers import ViTConfig, ViTModel  # noqa: PLC0415 - only when building

    repo = HubRepo(hub, COPY_BACKBONE)
    size = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2) if tiny else \
        dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)
    config = ViTConfig(**size, image_size=224, patch_size=16, qkv_bias=True, layer_norm_eps=1e-6,
                       hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, architectures=["ViTModel"])
    torch.manual_seed(3)
    repo.add_folder(_save_model(ViTModel(config, add_pooling_layer=False), stage / "model"))
    repo.add_json("preprocessor_config.json", _DINO_IMAGE_PROCESSOR, stage)
    repo.finish()


def build_dreamsim(folder: Path) -> None:
    """DreamSim's cache as the app reads it ($ORIGINALITY_CACHE/dreamsim), with what dreamsim fetches through
    torch.hub (`tests/offline_models.make_ensemble_cache`); DreamSim's architecture is fixed, so full size always."""
    from tests.offline_models import make_ensemble_cache  # noqa: PLC0415 - the one writer of that layout

    if DREAMSIM_TYPE != "ensemble":
        raise SystemExit(f"the app loads DreamSim {DREAMSIM_TYPE!r}; this rehearsal builds the ensemble only")
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    make_ensemble_cache(partial, seed=0)
    partial.rename(folder)


def build_cache(cache: Path, configs: Path, tiny: bool) -> dict:
    """Fill `cache` (hf/ and originality/) unless done before; returns what it built and how long it took."""
    kind = "tiny" if tiny else "full"
    manifest_path = cache / "rehearsal-cache.json"
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("kind") != kind or manifest.get("commit") != FAKE_COMMIT:
            raise SystemExit(f"{cache} holds a {manifest.get('kind')} cache; give another --cache for a {kind} one")
    hub = cache / "hf" / "hub"
    dreamsim = cache / "originality" / "dreamsim"
    repos = {SD_MODEL_ID: lambda stage: build_sd(hub, configs, tiny, stage),
             CLIP_JUDGE: lambda stage: build_clip(hub, CLIP_JUDGE, tiny, False, stage, seed=4),
             COPY_BACKBONE: lambda stage: build_dino(hub, tiny, stage),
             STYLE_BACKBONE: lambda stage: build_clip(hub, STYLE_BACKBONE, tiny, True, stage, seed=5)}
    built, started = [], time.monotonic()
    cache.mkdir(parents=True, exist_ok=True)
    manifest_path.write_text(json.dumps({"kind": kind, "commit": FAKE_COMMIT}) + "\n")
    for repo_id, build in repos.items():
        if HubRepo(hub, repo_id).complete:
            continue
        print(f"building {repo_id} ({kind}, random weights) ...", flush=True)
        with tempfile.TemporaryDirectory(dir=cache) as stage:
            with torch.random.fork_rng(devices=[]):
                build(Path(stage))
        built.append(repo_id)
    if not dreamsim.is_dir():
        print(f"building the DreamSim {DREAMSIM_TYPE} cache (random weights) ...", flush=True)
        build_dreamsim(dreamsim)
        built.append(f"dreamsim:{DREAMSIM_TYPE}")
    size = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file() and not p.is_symlink())
    return {"built": built, "build_s": round(time.monotonic() - started, 1), "size_gb": round(size / 1e9, 2),
            "models": [*repos, f"dreamsim:{DREAMSIM_TYPE}"]}


# --------------------------------------------------------------------------- 2. the app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mb(pid: int) -> float | None:
    """VmHWM (peak resident set size) of a live process, in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


@contextlib.contextmanager
def serve(cache: Path, work: Path, timeout: float):
    """`python app.py` as a Space would run it, on the CPU and offline; yields (url, process, start-up seconds)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORIGINALITY_", "HF_", "GRADIO_"))}
    env.update({
        "HF_HOME": str(cache / "hf"), "HF_HUB_OFFLINE": "1", "ORIGINALITY_CACHE": str(cache / "originality"),
        "ORIGINALITY_MODEL": SD_MODEL_ID, SD_ON_CPU_ENV: "1", "CUDA_VISIBLE_DEVICES": "",
        "ORIGINALITY_DEFAULTS": json.dumps(TINY_SETTINGS), "ORIGINALITY_DATA_DIR": str(work / "data"),
        "ORIGINALITY_RUN_TIMEOUT": str(int(timeout)), "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port), "GRADIO_TEMP_DIR": str(work / "gradio"), "GRADIO_ANALYTICS_ENABLED": "False",
        "TMPDIR": str(work / "tmp"), "PYTHONUNBUFFERED": "1"})
    (work / "tmp").mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{port}/"
    log_path = work / "server.log"
    with open(log_path, "w") as log:
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"app.py exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
                with contextlib.suppress(OSError):
                    with urllib.request.urlopen(url, timeout=5) as response:
                        if response.status == 200:
                            break
                if time.monotonic() - started > timeout:
                    raise RuntimeError(f"app.py did not answer within {timeout:.0f} s:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.5)
            yield url, proc, time.monotonic() - started
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


# --------------------------------------------------------------------------- 3. the browser


def _wait_images(page, selector: str, minimum: int, timeout: float) -> None:
    page.locator(selector).first.scroll_into_view_if_needed(timeout=timeout)  # gallery images load lazily
    page.wait_for_function(
        "([sel, n]) => { const ims = [...document.querySelectorAll(sel)];"
        " return ims.length >= n && ims.every(im => im.complete && im.naturalWidth > 0); }",
        arg=[selector, minimum], timeout=timeout)


def _download(url: str, href: str, path: Path) -> Path:
    with urllib.request.urlopen(urllib.parse.urljoin(url, href), timeout=60) as response:
        path.write_bytes(response.read())
    return path


def drive(url: str, work: Path, screenshot: Path, timeout: float) -> dict:
    """One analysis through the page, as a visitor: returns the timings and what the page and its files said."""
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 - requirements-dev only

    ms = timeout * 1000
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            page.wait_for_selector("#run", timeout=60_000)
            world_note = page.inner_text("#world-note")
            page.locator("#query-image input[type=file]").set_input_files(str(QUERY))
            page.wait_for_selector("#query-image img", timeout=60_000)
            page.locator("#references input[type=file]").set_input_files([str(REFERENCE)])
            page.wait_for_function("/sd_painting/.test(document.querySelector('#references').innerText)",
                                   timeout=60_000)
            clicked = time.monotonic()
            page.click("#run")
            _wait_images(page, "#recon-m1 img", 1, ms)
            first_images = time.monotonic() - clicked
            page.wait_for_function(VERDICT_JS + " || /⚠️/.test(document.querySelector('#status').innerText)",
                                   timeout=ms)
            result = time.monotonic() - clicked
            status, verdict = page.inner_text("#status"), page.inner_text("#verdict")
            if "⚠️" in status:
                raise RuntimeError(f"the run was refused or failed: {status}")
            _wait_images(page, "#edits-m1 img", 1, 60_000)  # the edit ("cat in S*") and its check ran
            share = page.locator("#share textarea, #share input").first.input_value()
            links = {name: page.locator(f"#downloads a[href*='{name}']").first.get_attribute("href")
                     for name in ("report.json", "report.html")}
            report = json.loads(_download(url, links["report.json"], work / "report.json").read_text())
            html_path = _download(url, links["report.html"], work / "report.html")
            similarity_shown = page.locator("#similarity").is_visible()
            page.keyboard.press("Escape")
            page.screenshot(path=str(screenshot), full_page=True)
            other = browser.new_page(viewport={"width": 1400, "height": 1000})
            other.goto(share)
            other.wait_for_function(VERDICT_JS, timeout=120_000)
            share_verdict, share_status = other.inner_text("#verdict"), other.inner_text("#status")
        finally:
            browser.close()
    return {"world_note": world_note, "first_images_s": round(first_images, 1), "first_result_s": round(result, 1),
            "status": status, "verdict": verdict.splitlines()[0] if verdict else "", "share_url": share,
            "share_reopens": share_verdict == verdict and "not recomputed" in share_status,
            "similarity_shown": similarity_shown, "report": report, "report_html_bytes": html_path.stat().st_size}


# --------------------------------------------------------------------------- 4. the figures


def git_state() -> dict:
    def git(*args):
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(status) if status is not None else None}


def machine() -> dict:
    load = os.getloadavg()
    mem = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal:")), 0)
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "memory_gb": round(mem / 2**20, 1), "load_avg_1_5_15": [round(x, 2) for x in load],
            "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def rehearse(cache: Path, configs: Path, tiny: bool, screenshot: Path, timeout: float) -> dict:
    """Steps 1-4 (see the module docstring); returns the figures."""
    if not (configs / "unet" / "config.json").is_file():
        raise SystemExit(f"SD v1.4 configs not found at {configs} (--configs or $ORIGINALITY_SD14_CONFIGS)")
    if not CHROMIUM.exists():
        raise SystemExit(f"{CHROMIUM} is missing (apt-get install chromium)")
    figures: dict = {"kind": "tiny" if tiny else "full", "git": git_state(), "machine_before": machine(),
                     "settings": TINY_SETTINGS, "fake_commit": FAKE_COMMIT}
    figures["cache"] = {"path": str(cache), **build_cache(cache, configs, tiny)}
    with tempfile.TemporaryDirectory(prefix="rehearsal-") as tmp:
        work = Path(tmp)
        with serve(cache, work, timeout) as (url, proc, startup):
            figures["startup_s"] = round(startup, 1)
            page = drive(url, work, screenshot, timeout)
            figures["peak_rss_mb"] = peak_rss_mb(proc.pid)
        log_tail = (work / "server.log").read_text()[-4000:]
    report = page.pop("report")
    record = report.get("record") or {}
    model = record.get("model") or {}
    figures.update(page)
    figures["report"] = {"label": report.get("label"), "model": report.get("model", {}).get("name"),
                         "device": report.get("model", {}).get("device"), "dtype": report.get("model", {}).get("dtype"),
                         "model_id": model.get("id"), "model_revision": model.get("revision"),
                         "model_source": model.get("source"), "record_git_commit": (record.get("software") or {})
                         .get("git_commit"), "similarity_backbones": record.get("similarity", {}).get("backbones")
                         if isinstance(record.get("similarity"), dict) else None}
    figures["screenshot"] = str(screenshot)
    figures["machine_after"] = machine()
    figures["server_log_tail"] = log_tail
    figures["ok"] = (figures["report"]["model_revision"] == FAKE_COMMIT and figures["share_reopens"]
                     and figures["report"]["model_id"] == SD_MODEL_ID)
    return figures


def summary(figures: dict) -> str:
    r = figures["report"]
    return "\n".join([
        f"rehearsal ({figures['kind']} size) on commit {figures['git']['commit']}"
        f"{' (uncommitted changes)' if figures['git']['dirty'] else ''}: {'OK' if figures['ok'] else 'FAILED'}",
        f"  cache: {figures['cache']['size_gb']} GB at {figures['cache']['path']} "
        f"(built now: {', '.join(figures['cache']['built']) or 'nothing, reused'}; {figures['cache']['build_s']} s)",
        f"  start-up (process start to the page answering): {figures['startup_s']} s",
        f"  time to the first reconstructions: {figures['first_images_s']} s; to the result: "
        f"{figures['first_result_s']} s (from the Run click)",
        f"  peak RSS of the app's process: {figures['peak_rss_mb']} MB",
        f"  record: model {r['model_id']} revision {r['model_revision']} ({r['model_source']}; fake commit "
        f"{'matches' if r['model_revision'] == FAKE_COMMIT else 'DIFFERS'}), {r['device']} {r['dtype']}",
        f"  page: {figures['verdict']!r}; share link re-opens it: {figures['share_reopens']}; "
        f"similarity shown: {figures['similarity_shown']}",
        f"  screenshot: {figures['screenshot']}",
        f"  load average before / after: {figures['machine_before']['load_avg_1_5_15']} / "
        f"{figures['machine_after']['load_avg_1_5_15']} on {figures['machine_before']['cores']} cores",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, help="the model cache folder, built once and reused (default: "
                        "$TMPDIR/originality-rehearsal, or originality-rehearsal-tiny with --tiny)")
    parser.add_argument("--configs", type=Path, default=default_configs(),
                        help="the SD v1.4 configs (default: %(default)s)")
    parser.add_argument("--tiny", action="store_true", help="tiny architectures in the same layout (minutes, for CI)")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    parser.add_argument("--screenshot", type=Path, help="the finished page (default: beside --out, else in /tmp)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds for start-up and for the run")
    parser.add_argument("--build-only", action="store_true", help="build the cache and stop")
    args = parser.parse_args(argv)
    cache = args.cache or Path(tempfile.gettempdir()) / ("originality-rehearsal" + ("-tiny" if args.tiny else ""))
    if args.build_only:
        print(json.dumps(build_cache(cache, args.configs, args.tiny), indent=2))
        return 0
    screenshot = args.screenshot or (args.out.with_suffix(".png") if args.out else
                                     Path(tempfile.gettempdir()) / "originality-rehearsal.png")
    figures = rehearse(cache, args.configs, args.tiny, screenshot, args.timeout)
    print(summary(figures))
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"  figures: {args.out}")
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
