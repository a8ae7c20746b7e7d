"""The dress rehearsal (benchmarks/rehearsal.py): a model cache under the Space's real model ids with random weights,
then `python app.py` on the Stable Diffusion world, offline on the CPU, driven in Chromium to a share link and report.

CI runs the tiny size (the same cache layout and loaders, tiny architectures; DreamSim's ensemble is full size: about
two minutes). The full size (SD v1.4's architecture, ~8 GB of cache, ~12 GB of memory) is opt-in:
ORIGINALITY_REHEARSAL=full, with the cache in $ORIGINALITY_REHEARSAL_CACHE (default: $TMPDIR/originality-rehearsal,
reused between runs). Skipped with the reason when Chromium, playwright, the SD v1.4 configs or the disk space is
missing.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import rehearsal  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.browser]

FULL = os.environ.get("ORIGINALITY_REHEARSAL") == "full"
NEEDS_GB = 12 if FULL else 3  # the cache (~8 GB full, ~1.2 GB tiny) and the app's run folder

if not rehearsal.CHROMIUM.exists():
    pytest.skip(f"{rehearsal.CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)
pytest.importorskip("playwright.sync_api", reason="Python playwright is not installed")
if not (rehearsal.default_configs() / "unet" / "config.json").is_file():
    pytest.skip(f"SD v1.4 configs not found at {rehearsal.default_configs()}", allow_module_level=True)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    if FULL:
        path = Path(os.environ.get("ORIGINALITY_REHEARSAL_CACHE") or
                    Path(tempfile.gettempdir()) / "originality-rehearsal")
    else:
        path = tmp_path_factory.mktemp("rehearsal-cache")
    path.mkdir(parents=True, exist_ok=True)
    built = (path / "rehearsal-cache.json").is_file()
    free_gb = shutil.disk_usage(path).free / 1e9
    if not built and free_gb < NEEDS_GB:
        pytest.skip(f"{free_gb:.1f} GB free at {path}; the rehearsal's cache needs {NEEDS_GB} GB")
    rehearsal.build_cache(path, rehearsal.default_configs(), tiny=not FULL)
    return path


def test_cache_is_what_huggingface_hub_reads_offline(cache):
    """huggingface_hub's own reader and scanner see every Hub model the Space loads, under its real id, at the
    fake commit, as a download would have left it (refs/main, snapshots linking into blobs)."""
    from huggingface_hub import scan_cache_dir, try_to_load_from_cache

    hub = cache / "hf" / "hub"
    scanned = scan_cache_dir(hub)
    assert not scanned.warnings, scanned.warnings
    repos = {r.repo_id: r for r in scanned.repos}
    ids = {rehearsal.SD_MODEL_ID, rehearsal.CLIP_JUDGE, rehearsal.COPY_BACKBONE, rehearsal.STYLE_BACKBONE}
    assert set(repos) == ids
    for repo_id, repo in repos.items():
        (revision,) = repo.revisions
        assert revision.commit_hash == rehearsal.FAKE_COMMIT and revision.refs == frozenset({"main"})
        found = try_to_load_from_cache(repo_id, "model_index.json" if repo_id == rehearsal.SD_MODEL_ID
                                       else "config.json", cache_dir=hub)
        assert isinstance(found, str) and f"/snapshots/{rehearsal.FAKE_COMMIT}/" in found
    sd_files = {f.file_name for f in next(iter(repos[rehearsal.SD_MODEL_ID].revisions)).files}
    assert {"model_index.json", "diffusion_pytorch_model.safetensors", "model.safetensors", "vocab.json",
            "merges.txt", "scheduler_config.json", "preprocessor_config.json"} <= sd_files
    # DreamSim's ensemble and what it fetches through torch.hub: DINO's repository and its checkpoint
    dreamsim = cache / "originality" / "dreamsim"
    for name in ("dino_vitb16_pretrain.pth", "clip_vitb16_pretrain.pth.tar", "open_clip_vitb16_pretrain.pth.tar",
                 "ensemble_lora/adapter_config.json", "facebookresearch_dino_main/hubconf.py",
                 "checkpoints/dino_vitbase16_pretrain.pth"):
        assert (dreamsim / name).is_file(), name


def test_cache_holds_exactly_what_the_space_preloads(cache):
    """The Hub files of the cache are the README front matter's `preload_from_hub`, repository by repository, so the
    app booting from this cache shows that the preloaded files are all it reads."""
    import yaml

    front = yaml.safe_load((ROOT / "README.md").read_text().split("---")[1])
    if not front.get("preload_from_hub"):
        pytest.skip("README's front matter preloads nothing (no preload_from_hub)")
    preload = {repo: set(files.split(",")) for repo, files in (e.split() for e in front["preload_from_hub"])}
    hub = cache / "hf" / "hub"
    cached = {}
    for root in hub.glob("models--*"):
        snapshot = root / "snapshots" / rehearsal.FAKE_COMMIT
        cached[root.name.removeprefix("models--").replace("--", "/")] = {
            p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_symlink()}
    assert cached == preload


def test_the_space_boots_offline_and_runs_one_analysis_in_the_browser(cache, tmp_path):
    figures = rehearsal.rehearse(cache, rehearsal.default_configs(), tiny=not FULL,
                                 screenshot=tmp_path / "rehearsal.png", timeout=3600 if FULL else 900)
    print(rehearsal.summary(figures))
    report = figures["report"]
    assert "set by ORIGINALITY_MODEL" in figures["world_note"] and "Stable Diffusion" in figures["world_note"]
    assert report["model_id"] == rehearsal.SD_MODEL_ID and report["model_source"] == "hub"
    assert report["model_revision"] == rehearsal.FAKE_COMMIT  # the weights came from the cache's snapshot
    assert report["device"] == "cpu"
    assert {b["id"]: b["revision"] for b in report["similarity_backbones"].values()} == {
        rehearsal.COPY_BACKBONE: rehearsal.FAKE_COMMIT, rehearsal.STYLE_BACKBONE: rehearsal.FAKE_COMMIT}
    assert figures["similarity_shown"] and figures["share_reopens"] and figures["ok"]
    assert figures["share_url"].startswith("http://127.0.0.1:") and "?run=" in figures["share_url"]
    assert figures["verdict"].startswith(("Original", "Familiar")) and figures["report_html_bytes"] > 10_000
    assert 0 < figures["startup_s"] and 0 < figures["first_images_s"] <= figures["first_result_s"]
    assert figures["peak_rss_mb"] > 500  # the pipeline, DreamSim's three ViTs and the CLIP models were resident
    assert (tmp_path / "rehearsal.png").stat().st_size > 50_000
