"""docs/deployment.md says what the code and the rehearsal say: the quota table is `zerogpu`'s reservations from
`gpu_costs.json` (and calls them estimates while the file does), the preloaded models are the front matter's, and the
rehearsal's figures are those of benchmarks/rehearsal-cpu.json."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from originality import gpu_costs
from originality.app import zerogpu
from originality.config import AnalysisConfig

ROOT = Path(__file__).resolve().parent.parent
PAGE = (ROOT / "docs" / "deployment.md").read_text()
FIGURES = json.loads((ROOT / "benchmarks" / "rehearsal-cpu.json").read_text())


def section(title: str) -> str:
    return PAGE.split(f"\n## {title}")[1].split("\n## ")[0]


def table(text: str) -> dict[str, list[str]]:
    """{first cell without backticks: the other cells} of the rows of the first Markdown table in `text`."""
    rows = [line for line in text.splitlines() if line.startswith("|")][2:]
    return {cells[0].strip("` "): cells[1:] for cells in ([c.strip() for c in r.strip("|").split("|")] for r in rows)}


def test_the_quota_table_is_the_runner_s_reservations(monkeypatch):
    text = section("What a visitor's run costs")
    rows = table(text)
    for preset in ("steady", "fast", "adaptive"):
        config = AnalysisConfig.preset(preset)
        per_length = zerogpu.gpu_seconds(config.to_dict())
        assert rows[preset][0] == f"{per_length} s", preset
        assert rows[preset][1] == f"{zerogpu.PREPARE_GPU_S + per_length} s" == \
            f"{zerogpu.run_gpu_seconds(config.to_dict(), 1)} s", preset
        assert rows[preset][2] == f"{zerogpu.run_gpu_seconds(config.to_dict())} s", preset
    paper = AnalysisConfig.preset("paper").to_dict()
    cap = zerogpu.gpu_seconds(paper)
    monkeypatch.setenv("ORIGINALITY_GPU_MAX_SECONDS", str(10**9))  # the estimate itself, uncapped (rounded up)
    estimate = zerogpu.gpu_seconds(paper)
    assert estimate > cap and rows["paper"][0].startswith(f"{cap} s (the cap; its estimate is about {estimate} s")
    assert f"Add {zerogpu.SIMILARITY_GPU_S} s when the visitor names reference images" in text
    overhead, per_sample, per_image_step = gpu_costs.rates()
    assert f"({overhead:g} s, {per_sample:g} s, {per_image_step:g} s)" in text
    # called estimates exactly while the cost file says so
    assert gpu_costs.load_costs()["source"].startswith("estimate") == ("**These are estimates, not measurements**" in text)


def test_the_preloaded_models_are_the_front_matter_s():
    front = yaml.safe_load((ROOT / "README.md").read_text().split("---")[1])
    listed = set(table(section("The Space").split("**What is preloaded.**")[1]))
    assert set(front["models"]) <= listed
    if front.get("preload_from_hub"):
        assert listed == {entry.split()[0] for entry in front["preload_from_hub"]}


def test_sd_on_cpu_lets_the_sd_world_run_without_a_gpu(monkeypatch):
    """ORIGINALITY_SD_ON_CPU=1 (the rehearsal's switch) makes the Stable Diffusion world available on a CPU, as a GPU
    would; unset, the world says it needs a GPU. Offline, its weights must still be in the cache either way."""
    import torch

    from originality import sd

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv(sd.SD_ON_CPU_ENV, raising=False)
    assert not sd.sd_available() and "needs a CUDA GPU" in sd.WORLD.unavailable(sd.SD_MODEL_ID)
    monkeypatch.setenv(sd.SD_ON_CPU_ENV, "1")
    assert sd.sd_available() and sd.WORLD.unavailable(sd.SD_MODEL_ID) is None
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda *a, **k: None)  # not cached
    assert not sd.sd_available()


def test_the_rehearsal_figures_are_the_recorded_run_s():
    text = section("The dress rehearsal")
    rows = table(text.split("**What it showed**")[1])
    values = [cells[0] for cells in rows.values()]
    assert values[:3] == [f"{FIGURES[k]} s" for k in ("startup_s", "first_images_s", "first_result_s")]
    assert values[3] == f"{FIGURES['peak_rss_mb'] / 1000:.1f} GB"
    assert FIGURES["report"]["model_revision"] == FIGURES["fake_commit"] and FIGURES["ok"]
    assert f"`{FIGURES['fake_commit']}`" in values[4]
    assert f"commit {FIGURES['git']['commit'][:7]}" in text
    load = FIGURES["machine_before"]["load_avg_1_5_15"][0], FIGURES["machine_after"]["load_avg_1_5_15"][0]
    assert f"load average {min(load):.1f} to {max(load):.1f}" in text
    assert re.search(rf"peaked at \*\*{FIGURES['peak_rss_mb'] / 1000:.1f} GB\*\*", section("The Space"))


def test_the_gpu_figures_are_the_recorded_run_s():
    """The 'On a real GPU' tables are benchmarks/gpu_h200.json's (gpu_check.sh's run on an H200)."""
    gpu = json.loads((ROOT / "benchmarks" / "gpu_h200.json").read_text())
    text = section("On a real GPU")
    rates = table(text)
    for column, dtype in enumerate(("bfloat16", "float16")):
        inversion = gpu["rates"]["runs"][dtype]["inversion"]
        assert rates["inversion step, batch 8 / 16 / 32 / 64 (s)"][column] == " / ".join(
            f"{r['s_per_step']:.3f}" for r in inversion)
        assert rates["generated image step (s, guidance 7.5, 8 images)"][column] == \
            f"{gpu['rates']['runs'][dtype]['generation']['s_per_image_step']:.4f}"
    run = table("| the CLI run" + text.split("| the CLI run")[1])
    lengths = gpu["cli_run"]["per_length"]
    assert run["each length in all"][0] == ", ".join(f"{t['total']:.1f}" for t in lengths) + " s"
    assert run["the analysis (five lengths, label 5+)"][0] == f"{gpu['cli_run']['analysis_s']} s"
    assert gpu["cli_run"]["label"] == "5+" and len(lengths) == 5
    assert run["peak GPU memory (nvidia-smi, sampled each second)"][0] == \
        f"{gpu['cli_run']['peak_gpu_memory_mib'] / 1024:.1f} GiB"
    per_length = gpu_costs.length_seconds(AnalysisConfig.preset("steady").replace(num_reconstructions=24))
    assert per_length > max(t["total"] for t in lengths)  # today's table reserves more than the H200 used
