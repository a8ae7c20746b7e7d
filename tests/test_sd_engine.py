"""The Stable Diffusion path's engine: micro-batching, loss scaling, the edit check's alternatives,
the edit-subject switch, skipped edits, the automatic domain, refused pipelines, a GPU torch cannot use."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from originality import AnalysisConfig, OriginalityModel, analyze, prepare
from originality import device as device_mod
from originality.analysis import SKIPPED_EDITS, switch_edit_subject
from originality.config import DOMAINS, PRESETS
from originality.inversion import (
    LossScale,
    LossTarget,
    TokenSession,
    accumulate_gradients,
    encode_query,
    initializer_id,
    invert,
    tokenize,
)
from originality.metrics import CheckResult, ClipEditCheck
from originality.sd import WORLD as SD_WORLD
from originality.sd import UnsupportedModel, check_pipeline_support, pick_domain
from originality.templates import OBJECT_TEMPLATES
from originality.testing import drain, tiny_sd_pipeline
from originality.worlds import world_of_model
from tests.offline_models import make_tiny_clip


@pytest.fixture(scope="module")
def pipe():
    return tiny_sd_pipeline(seed=0)


@pytest.fixture(scope="module")
def query():
    rng = np.random.RandomState(1)
    return Image.fromarray(rng.randint(0, 255, (64, 64, 3)).astype(np.uint8))


@pytest.fixture(scope="module")
def clip():
    model, processor = make_tiny_clip()
    return ClipEditCheck(model=model, processor=processor)


def close(a, b, tol=1e-4):
    """Equal up to float32 round-off, relative to the largest entry."""
    return float((a - b).abs().max()) <= tol * float(b.abs().max())


def _gradient(pipe, query, micro_batch_size, scale=None, batch_size=6):
    """The learned rows' gradient of one step's batch, with the given micro-batching."""
    from diffusers import DDPMScheduler

    mean, std = encode_query(pipe, query)
    with TokenSession(pipe) as session:
        ph = session.add("<s2>", 2, initializer_id(session.tokenizer, "house"))
        p = session.pipeline
        sched = DDPMScheduler.from_config(p.scheduler.config)
        ids = tokenize(p.tokenizer, [t.format(ph.text) for t in OBJECT_TEMPLATES], p.unet.device)
        gen = torch.Generator().manual_seed(3)
        target = LossTarget(p, sched, mean, std, ids)
        batch = target.sample(gen, batch_size)
        base = p.text_encoder.get_input_embeddings()
        learned = torch.nn.Parameter(base.weight[list(ph.ids)].detach().clone())
        from originality.inversion import PlaceholderEmbedding

        p.text_encoder.set_input_embeddings(PlaceholderEmbedding(base, ph.ids, learned))
        try:
            loss, _ = accumulate_gradients(target, batch, learned, micro_batch_size=micro_batch_size, scale=scale)
        finally:
            p.text_encoder.set_input_embeddings(base)
        return loss, learned.grad.clone()


# ----------------------------------------------------------------------------- micro-batches

@pytest.mark.parametrize("micro", [1, 4, 5])
def test_micro_batches_give_the_whole_batch_gradient(pipe, query, micro):
    loss, grad = _gradient(pipe, query, None)
    loss_m, grad_m = _gradient(pipe, query, micro)
    assert loss_m == pytest.approx(loss, rel=1e-5)
    assert close(grad_m, grad), (grad_m - grad).abs().max()
    assert grad.abs().sum() > 0


def test_micro_batched_inversion_learns_the_same_rows(pipe, query):
    mean, std = encode_query(pipe, query)
    out = []
    for micro in (None, 2):
        with TokenSession(pipe) as session:
            ph = session.add("<s1>", 1, initializer_id(session.tokenizer, "dog"))
            out.append(drain(invert(session.pipeline, mean, std, ph, OBJECT_TEMPLATES, steps=3, batch_size=4,
                                    learning_rate=1e-2, seed=5, micro_batch_size=micro)))
    (ev_a, emb_a), (ev_b, emb_b) = out
    assert [e.loss for e in ev_b] == pytest.approx([e.loss for e in ev_a], rel=1e-5)
    assert close(emb_a, emb_b)


def test_automatic_micro_batch_halves_on_out_of_memory(pipe, query, monkeypatch):
    from originality import inversion

    real = inversion.batch_loss
    sizes = []

    def small_memory(target, batch):
        sizes.append(len(batch))
        if len(batch) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(target, batch)

    loss, grad = _gradient(pipe, query, None)
    monkeypatch.setattr(inversion, "batch_loss", small_memory)
    loss_auto, grad_auto = _gradient(pipe, query, None)
    assert sizes[:2] == [6, 3] and set(sizes[2:]) == {2}  # 6 -> 3 -> 2 (three chunks of 2)
    assert close(grad_auto, grad)
    monkeypatch.setattr(inversion, "batch_loss", lambda *a: (_ for _ in ()).throw(torch.OutOfMemoryError("x")))
    with pytest.raises(torch.OutOfMemoryError):
        _gradient(pipe, query, 1)  # an explicit micro-batch size is kept: the error surfaces


# ----------------------------------------------------------------------------- loss scale

def test_loss_scale_is_undone_and_halves_on_overflow(pipe, query, monkeypatch):
    loss, grad = _gradient(pipe, query, None)
    scale = LossScale(2.0**10)
    loss_s, grad_s = _gradient(pipe, query, None, scale=scale)
    assert scale.value == 2.0**10 and loss_s == pytest.approx(loss, rel=1e-6)
    assert close(grad_s, grad, 1e-5)
    # a scale that overflows float32 (as a too-large one overflows float16) is halved until it fits
    scale = LossScale(2.0**140)
    _, grad_o = _gradient(pipe, query, None, scale=scale)
    assert scale.value < 2.0**140 and torch.isfinite(grad_o).all()
    assert close(grad_o, grad)
    assert LossScale.for_dtype(torch.float16).value > 1 and LossScale.for_dtype(torch.bfloat16).value == 1


# ----------------------------------------------------------------------------- edit check

def test_alternatives_contain_the_domain_and_every_preset_word():
    alts = ClipEditCheck.alternatives("cat", "house")
    assert "a photo of a house" in alts and "a photo of a dog" in alts and "a painting" in alts
    assert "a photo of a cat" not in alts  # the subject competes with the others, not with itself
    alts = ClipEditCheck.alternatives("cat", "teapot")  # a custom domain word is an alternative too
    assert "a photo of a teapot" in alts
    assert all(any(w in a for a in alts) for w in DOMAINS.values() if w != "cat")


def test_edit_check_fails_when_the_domain_wins(clip):
    """With the domain among the alternatives, P(subject) can drop below 0.5: the check can fail."""
    images = [Image.fromarray(np.random.RandomState(i).randint(0, 255, (32, 32, 3)).astype(np.uint8))
              for i in range(4)]
    scores = clip.subject_probabilities(images, "cat", "house")
    result = clip(images[0], [], images, subject="cat", pass_fraction=0.5, domain="house")
    assert result.scores == pytest.approx(scores)
    n_prompts = 1 + len(ClipEditCheck.alternatives("cat", "house"))
    assert all(p < 0.5 for p in scores)  # ~1/n_prompts with an untrained CLIP: the subject is not shown
    assert max(scores) < 2.0 / n_prompts
    assert not result.passed and "vs house" in result.detail
    with pytest.raises(ValueError, match="could not fail"):
        clip(images[0], [], images, subject="cat", pass_fraction=0.5, domain="cat")


def test_domain_cat_switches_the_edit_subject():
    config = AnalysisConfig.preset("fast", domain="cat")
    switched, note = switch_edit_subject(config, "cat")
    assert switched.edit_subject == "dog" and switched.edit_prompt == "dog in {}"
    assert "dog" in note and "could not fail" in note
    same, note = switch_edit_subject(config, "house")
    assert same == config and note == ""
    switched, _ = switch_edit_subject(config.replace(edit_subject="dog", edit_prompt="a Dog next to {}"), "dog")
    assert switched.edit_subject == "cat" and switched.edit_prompt == "a cat next to {}"
    with pytest.raises(ValueError, match="does not name it"):
        switch_edit_subject(config.replace(edit_prompt="an animal in {}"), "cat")


class CountingDistance:
    name = "const"

    def __init__(self, value):
        self.value = value

    def __call__(self, query, images):
        return [self.value] * len(images)


class RecordingCheck:
    name = "recording"
    uses_edits = True

    def __init__(self):
        self.calls = []

    def __call__(self, query, reconstructions, edits, *, subject, pass_fraction, domain=None):
        self.calls.append((len(edits), subject, domain))
        return CheckResult(True, [1.0] * len(edits), "ok")


TINY = AnalysisConfig.preset("fast", steps=1, batch_size=2, num_reconstructions=1, num_edits=2,
                             num_inference_steps=2, max_tokens=2)
TINY_SD_WORLD = dataclasses.replace(SD_WORLD, threshold=0.5, guidance_scale=2.0)  # domain: SD's "house"


def _model(pipe, distance, check):
    return OriginalityModel(pipeline=pipe, name="tiny-sd", world=TINY_SD_WORLD, distance=CountingDistance(distance),
                            in_distribution=check)


def test_failed_reconstruction_skips_the_edits_unless_asked(pipe, query):
    check = RecordingCheck()
    report = analyze(query, TINY, _model(pipe, 0.9, check))
    assert check.calls == [] and all(r.edits == [] and not r.check_passed for r in report.results)
    assert report.results[0].check_detail == SKIPPED_EDITS
    check = RecordingCheck()
    analyze(query, TINY.replace(always_check_edits=True), _model(pipe, 0.9, check))
    assert check.calls == [(2, "cat", "house"), (2, "cat", "house")]


def test_domain_cat_never_runs_a_vacuous_check_and_the_report_says_so(pipe, query, tmp_path):
    check = RecordingCheck()
    report = analyze(query, TINY.replace(domain="cat", max_tokens=1), _model(pipe, 0.1, check))
    assert check.calls == [(2, "dog", "cat")]
    assert report.config["edit_subject"] == "dog" and any("looks for a dog" in n for n in report.notes)
    from originality import Report

    assert Report.load(report.save(tmp_path / "r")).notes == report.notes


# ----------------------------------------------------------------------------- automatic domain

def test_domain_is_picked_by_clip_and_recorded(pipe, query, clip):
    model = OriginalityModel(pipeline=pipe, name="tiny-sd", world=TINY_SD_WORLD, distance=CountingDistance(0.1),
                             in_distribution=clip)
    pick = pick_domain(model, query)
    assert set(pick.probabilities) == set(DOMAINS) and sum(pick.probabilities.values()) == pytest.approx(1.0)
    assert pick.domain == max(pick.probabilities, key=pick.probabilities.get)
    prepared = prepare(query, TINY, model)
    assert prepared.config.domain == pick.domain and prepared.domain_pick["domain"] == pick.domain
    assert any("picked automatically" in n for n in prepared.notes)
    chosen = prepare(query, TINY.replace(domain="bird"), model)  # a chosen domain overrides
    assert chosen.config.domain == "bird" and chosen.domain_pick is None


# ----------------------------------------------------------------------------- refused pipelines

def _folder(tmp_path, name, index, marker=False):
    path = tmp_path / name
    path.mkdir()
    (path / "model_index.json").write_text(json.dumps(index))
    if marker:
        (path / "originality_world.json").write_text("{}")
    return str(path)


SD_INDEX = {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
            "text_encoder": ["transformers", "CLIPTextModel"], "vae": ["diffusers", "AutoencoderKL"]}


@pytest.mark.parametrize("name,index,message", [
    ("sdxl", {**SD_INDEX, "_class_name": "StableDiffusionXLPipeline",
              "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"]}, "two text encoders"),
    ("sdxl-renamed", {**SD_INDEX, "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"]}, "text_encoder_2"),
    ("sd3", {"_class_name": "StableDiffusion3Pipeline", "transformer": ["diffusers", "SD3Transformer2DModel"]}, "SD3"),
    ("flux", {"_class_name": "FluxPipeline"}, "T5"),
    ("kandinsky", {"_class_name": "KandinskyV22Pipeline"}, "Kandinsky"),
    ("t5-sd", {**SD_INDEX, "text_encoder": ["transformers", "T5EncoderModel"]}, "not CLIP"),
])
def test_unsupported_pipelines_are_refused_before_loading(tmp_path, name, index, message):
    path = _folder(tmp_path, name, index)
    with pytest.raises(UnsupportedModel, match=message) as err:
        check_pipeline_support(path)
    assert "Supported" in str(err.value) or "supported" in str(err.value)
    from originality.models import load_model

    with pytest.raises(ValueError, match=message):  # load_model refuses it before reading any weights
        load_model(path, device="cpu")


def test_single_files_and_plain_folders_are_refused(tmp_path):
    ckpt = tmp_path / "model.safetensors"
    ckpt.write_bytes(b"x")
    with pytest.raises(UnsupportedModel, match="single-file"):
        check_pipeline_support(str(ckpt))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UnsupportedModel, match="no model_index.json"):
        check_pipeline_support(str(tmp_path / "empty"))


def test_sd_folders_and_the_shapes_world_pass(tmp_path):
    assert check_pipeline_support(_folder(tmp_path, "sd", SD_INDEX))["_class_name"] == "StableDiffusionPipeline"
    bert = {**SD_INDEX, "text_encoder": ["transformers", "BertModel"]}
    shapes = _folder(tmp_path, "shapes", bert, marker=True)
    check_pipeline_support(shapes, world_of_model(shapes))  # the shapes world's own encoder
    bert_sd = _folder(tmp_path, "bert-sd", bert)
    with pytest.raises(UnsupportedModel):
        check_pipeline_support(bert_sd, world_of_model(bert_sd))


# ----------------------------------------------------------------------------- a GPU torch cannot use

def test_gpu_problem_names_a_driver_torch_cannot_use(tmp_path, monkeypatch):
    version = tmp_path / "version"
    version.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05\n")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_mod, "NVIDIA_DRIVER_FILE", version)
    problem = device_mod.gpu_problem()
    assert "535.104.05" in problem and "cannot use the GPU" in problem
    monkeypatch.setattr(device_mod, "NVIDIA_DRIVER_FILE", tmp_path / "missing")
    monkeypatch.setattr(device_mod.shutil, "which", lambda name: None)
    assert device_mod.gpu_problem() is None  # no driver: simply no GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(device_mod, "NVIDIA_DRIVER_FILE", version)
    assert device_mod.gpu_problem() is None  # torch uses it


def test_frozen_dtype_prefers_bfloat16_on_gpus_that_have_it(monkeypatch):
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert device_mod.frozen_dtype(cuda) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert device_mod.frozen_dtype(cuda) == torch.float16
    assert device_mod.frozen_dtype(torch.device("cpu")) == torch.float32
    assert device_mod.frozen_dtype(cuda, "fp32") == torch.float32
    with pytest.raises(ValueError, match="dtype"):
        device_mod.frozen_dtype(cuda, "int8")


def test_generation_with_a_float32_text_encoder_and_a_bfloat16_unet():
    """As loaded on a GPU: diffusers would start the latents in the text encoder's float32."""
    import copy

    from originality.analysis import generate

    mixed = copy.deepcopy(tiny_sd_pipeline(seed=0))
    mixed.unet.to(torch.bfloat16)
    mixed.vae.to(torch.bfloat16)
    config = AnalysisConfig.preset("fast", num_inference_steps=2, guidance_scale=7.5)
    images = generate(mixed, "a photo of a house", 2, seed=0, config=config, resolution=64)
    assert [im.size for im in images] == [(64, 64)] * 2
    assert mixed.text_encoder.dtype == torch.float32 and mixed.unet.dtype == torch.bfloat16


def test_gpu_costs_feed_the_estimate_and_the_benchmark_updates_them(tmp_path, monkeypatch, capsys):
    """benchmarks/gpu_bench.py runs as a CPU smoke test and writes measured rates into the cost file."""
    import importlib.util
    import shutil

    from originality import gpu_costs

    overhead, per_sample, per_image_step = gpu_costs.rates()
    assert gpu_costs.seconds(150, 8, 12, 20) == pytest.approx(overhead + per_sample * 1200 + per_image_step * 240)
    costs = tmp_path / "gpu_costs.json"
    shutil.copy(gpu_costs.COSTS_FILE, costs)
    monkeypatch.setattr(gpu_costs, "COSTS_FILE", costs)
    spec = importlib.util.spec_from_file_location("gpu_bench", Path(__file__).parents[1] / "benchmarks" / "gpu_bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--device", "cpu", "--tiny", "--batches", "2", "--steps", "1", "--warmup", "0",
                       "--images", "1", "--inference-steps", "1", "--update-costs"]) == 0
    out = json.loads(capsys.readouterr().out)
    run = out["runs"]["float32"]
    assert run["inversion"][0]["s_per_step"] > 0 and run["generation"]["s_per_image_step"] > 0
    assert set(run["projected"]) == set(PRESETS)  # adaptive: at its step cap, an upper bound
    written = gpu_costs.load_costs(costs)
    assert written["s_per_sample"] == pytest.approx(run["inversion"][0]["s_per_sample"], rel=1e-3, abs=1e-5)
    assert written["source"].startswith("measured") and written["overhead_s"] == overhead


def test_app_and_cli_say_when_torch_cannot_use_the_gpu(monkeypatch, capsys):
    from originality import cli
    from originality.worlds import default_world

    message = "an NVIDIA GPU driver is present (test) but torch cannot use the GPU"
    monkeypatch.delenv("ORIGINALITY_MODEL", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_mod, "gpu_problem", lambda: message)
    world, why = default_world()  # the app's world note says `why`
    assert world.name == "shapes" and message in why
    cli.main(["calibrate", "/nonexistent-folder"])
    assert f"warning: {message}" in capsys.readouterr().err
