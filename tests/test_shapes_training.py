"""Tests of the shapes world's training script (`python -m originality.experiments.train`).

A few steps of the real script on the CPU: it must save a diffusers pipeline that
`StableDiffusionPipeline.from_pretrained` loads and that the engine recognises as
the shapes world, and a rerun with more steps must continue from its checkpoint,
giving the same numbers as one uninterrupted run.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from diffusers import StableDiffusionPipeline
from transformers import BertModel

from originality.models import load_model
from originality.shapes import WORLD_SHAPES
from originality.shapes import model as shapes_model
from originality.experiments import train

TINY = ["--vae-steps", "2", "--batch", "4", "--vae-batch", "2", "--device", "cpu", "--checkpoint-minutes", "100"]


def _run(tmp: Path, steps: int, name: str = "run") -> tuple[Path, Path]:
    out, ckpt = tmp / name / "model", tmp / name / "ckpt"
    train.main(["--out", str(out), "--checkpoint-dir", str(ckpt), "--steps", str(steps), *TINY])
    return out, ckpt


def _losses(ckpt: Path) -> list[tuple[int, float]]:
    with open(ckpt / "losses.csv", newline="") as fh:
        return [(int(step), float(loss)) for step, loss, *_ in csv.reader(fh)]


pytestmark = pytest.mark.slow  # trains small models for a few steps


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, dict]:
    """2 VAE steps and 2 denoiser steps, then resumed to 3 denoiser steps."""
    tmp = tmp_path_factory.mktemp("train")
    out, ckpt = _run(tmp, 2)
    first = {
        "losses": _losses(ckpt),
        "step": torch.load(ckpt / "denoiser.pt", map_location="cpu")["step"],
        "marker": json.loads((out / shapes_model.MARKER_FILE).read_text()),
    }
    _run(tmp, 3)
    return out, ckpt, first


def test_training_saves_a_loadable_pipeline(trained) -> None:
    out, _, first = trained
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler", "model_index.json"):
        assert (out / part).exists(), part
    assert shapes_model.is_shapes_model(out)
    assert first["marker"]["world"] == "shapes" and first["marker"]["denoiser_steps"] == 2
    assert first["marker"]["initial_word"] == shapes_model.INITIAL_WORD

    pipe = StableDiffusionPipeline.from_pretrained(out, safety_checker=None, requires_safety_checker=False)
    assert isinstance(pipe.text_encoder, BertModel)
    assert pipe.tokenizer.tokenize("big red full circle and big blue full square") == \
        "big red full circle and big blue full square".split()
    assert pipe.vae.config.scaling_factor != 0.18215  # measured on the trained VAE, not SD's constant
    resolution = pipe.unet.config.sample_size * pipe.vae_scale_factor
    assert resolution == 64


def test_engine_recognises_the_shapes_world(trained) -> None:
    out, _, _ = trained
    model = load_model(str(out), device="cpu")
    assert model.world.name == WORLD_SHAPES
    assert model.resolution == 64
    assert model.world.domain == shapes_model.INITIAL_WORD
    assert model.templates(model.world.domain) == shapes_model.SHAPES_TEMPLATES
    assert model.describe()["distance"] == "element-f1"
    assert load_model(str(out), device="cpu") is model  # loaded once, then shared


def test_resume_continues_from_the_checkpoint(trained) -> None:
    out, ckpt, first = trained
    assert first["step"] == 2 and [s for s, _ in first["losses"]] == [0, 1]
    assert torch.load(ckpt / "denoiser.pt", map_location="cpu")["step"] == 3
    assert torch.load(ckpt / "vae.pt", map_location="cpu")["step"] == 2  # the VAE was not trained again
    # steps 0 and 1 were not repeated: the rerun ran step 2 only
    losses = _losses(ckpt)
    assert [s for s, _ in losses] == [0, 1, 2]
    assert losses[:2] == first["losses"]
    assert json.loads((out / shapes_model.MARKER_FILE).read_text())["denoiser_steps"] == 3


def test_export_only_writes_the_checkpoint_with_its_step_counts(trained, tmp_path) -> None:
    out, ckpt, _ = trained
    exported = tmp_path / "exported"
    train.main(["--out", str(exported), "--checkpoint-dir", str(ckpt), "--export-only", "--device", "cpu"])
    marker = json.loads((exported / shapes_model.MARKER_FILE).read_text())
    assert (marker["vae_steps"], marker["denoiser_steps"]) == (2, 3)  # what was trained, not the defaults
    assert (marker["binding_weight"], marker["binding_from"]) == (0.1, 0)
    assert torch.load(ckpt / "denoiser.pt", map_location="cpu")["step"] == 3  # the checkpoint is untouched
    for part in ("unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        assert (exported / part).read_bytes() == (out / part).read_bytes(), part
    with pytest.raises(SystemExit):
        train.main(["--out", str(tmp_path / "x"), "--checkpoint-dir", str(tmp_path / "empty"), "--export-only"])


def test_resumed_run_is_the_same_run(trained, tmp_path) -> None:
    """3 steps in one go give the losses and weights of 2 steps plus a resumed third."""
    out, ckpt, _ = trained
    straight_out, straight_ckpt = _run(tmp_path, 3, "straight")
    assert [s for s, _ in _losses(straight_ckpt)] == [0, 1, 2]
    for (_, a), (_, b) in zip(_losses(straight_ckpt), _losses(ckpt)):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-5)
    resumed = torch.load(ckpt / "denoiser.pt", map_location="cpu")
    straight = torch.load(straight_ckpt / "denoiser.pt", map_location="cpu")
    for key in ("unet", "text_encoder"):
        for name, tensor in straight[key].items():
            torch.testing.assert_close(resumed[key][name], tensor, rtol=1e-4, atol=1e-5, msg=f"{key}.{name}")


def test_caption_augmentation_keeps_training_in_vocabulary() -> None:
    import random

    captions = ["big red full circle and big blue full square", "", "big green full star"]
    vocab = set(shapes_model.vocabulary())
    seen = set()
    for seed in range(200):
        for c in train.prepare_captions(captions, random.Random(seed)):
            assert set(c.split()) <= vocab
            seen.add(c)
    assert "" in seen and shapes_model.INITIAL_WORD in seen
    assert any(c.startswith("a photo of ") for c in seen)


def test_binding_targets_follow_the_caption_grammar() -> None:
    tokenizer = shapes_model.build_tokenizer()
    captions = ["a photo of big red full circle and small blue empty square", "", shapes_model.INITIAL_WORD,
                "big green full star"]
    ids = tokenizer(captions, padding="max_length", max_length=32, return_tensors="pt").input_ids
    rows, cols, colours = train.binding_targets(ids, tokenizer)
    tokens = [tokenizer.convert_ids_to_tokens(ids[r].tolist())[c] for r, c in zip(rows.tolist(), cols.tolist())]
    assert rows.tolist() == [0, 0, 3] and tokens == ["circle", "square", "star"]
    assert [train.COLOURS[k] for k in colours.tolist()] == ["red", "blue", "green"]


def test_binding_loss_teaches_a_text_encoder_to_bind_colours() -> None:
    """A bag-of-words encoder explains own and other colour alike; the loss makes it bind."""
    import itertools
    import random

    torch.manual_seed(0)
    components = shapes_model.build_components(shapes_model.ShapesModelConfig(text_hidden=32, text_layers=2))
    tokenizer, encoder = components["tokenizer"], components["text_encoder"]
    head = train.BindingHead(32)
    opt = torch.optim.AdamW([*encoder.parameters(), *head.parameters()], lr=3e-3)
    rng = random.Random(0)
    pairs = list(itertools.product(train.COLOURS, train.COLOURS))
    for _ in range(150):
        captions = []
        for _ in range(16):
            (a, b), (c1, c2) = rng.sample(["circle", "square", "triangle"], 2), rng.choice(pairs)
            captions.append(f"big {c1} full {a} and big {c2} full {b}")
        ids = tokenizer(captions, padding="max_length", max_length=32, return_tensors="pt").input_ids
        loss = train.binding_loss(head, encoder(ids)[0], ids, tokenizer)
        loss.backward()
        opt.step()
        opt.zero_grad()
    encoder.eval()
    binding = shapes_model.colour_binding(tokenizer, encoder)
    assert loss.item() < 0.1
    assert binding["own"] > 0.8 > 0.2 > binding["other"]


def test_binding_loss_is_logged_and_resumes(tmp_path) -> None:
    out, ckpt = tmp_path / "model", tmp_path / "ckpt"
    args = ["--out", str(out), "--checkpoint-dir", str(ckpt), *TINY, "--binding-weight", "0.5", "--binding-from", "1"]
    train.main([*args, "--steps", "2"])
    head = torch.load(ckpt / "denoiser.pt", map_location="cpu")["binding_head"]
    train.main([*args, "--steps", "3"])
    resumed = torch.load(ckpt / "denoiser.pt", map_location="cpu")["binding_head"]
    with open(ckpt / "losses.csv", newline="") as fh:
        binding = [float(row[2]) for row in csv.reader(fh)]
    assert binding[0] == 0.0 and all(b > 0 for b in binding[1:])  # off before --binding-from
    # the resumed run loaded the head and took one more small step (a fresh head would differ by ~0.1)
    change = (resumed["colour.weight"] - head["colour.weight"]).abs().max().item()
    assert 0 < change < 5e-3
    marker = json.loads((out / shapes_model.MARKER_FILE).read_text())
    assert (marker["binding_weight"], marker["binding_from"]) == (0.5, 1)


def test_a_fine_tune_records_the_training_record_of_the_model_it_started_from(tmp_path: Path) -> None:
    record = {"world": "shapes", "seed": 2, "denoiser_steps": 1349}
    (tmp_path / shapes_model.MARKER_FILE).write_text(json.dumps(record))
    assert train._init_record(str(tmp_path)) == record
    plain = tmp_path / "not-a-shapes-model"
    plain.mkdir()
    assert train._init_record(str(plain)) == {"path": str(plain)}
    assert train._init_record(None) is None


def test_rendering_workers_give_each_step_the_batch_of_the_single_process_run() -> None:
    args = SimpleNamespace(seed=3, batch=4, vary=True, steps=5, data_workers=0)
    here = list(train.training_batches(args, start=2))
    args.data_workers = 2
    ahead = list(train.training_batches(args, start=2))
    assert len(here) == len(ahead) == 3
    for (images, captions), (images_w, captions_w) in zip(here, ahead):
        assert captions == captions_w
        torch.testing.assert_close(images, images_w, rtol=0, atol=0)
    first_images, first_captions = train.batch_of(3, 2 * 4, 4, train.Variation())
    assert here[0][1] == first_captions  # step 2's batch starts at item 2 x batch
    torch.testing.assert_close(here[0][0], first_images, rtol=0, atol=0)


def test_a_deeper_text_encoder_trains_beside_the_saved_unet_and_vae(trained, tmp_path) -> None:
    start, _, _ = trained
    out, ckpt = tmp_path / "deep", tmp_path / "deep-ckpt"
    args = ["--out", str(out), "--checkpoint-dir", str(ckpt), "--init-from", str(start), "--init-parts", "unet", "vae",
            "--text-layers", "3", "--batch", "4", "--device", "cpu", "--checkpoint-minutes", "100"]
    train.main([*args, "--steps", "1"])
    assert BertModel.from_pretrained(out / "text_encoder").config.num_hidden_layers == 3
    marker = json.loads((out / shapes_model.MARKER_FILE).read_text())
    assert (marker["text_layers"], marker["init_parts"], marker["denoiser_steps"]) == (3, ["unet", "vae"], 1)
    saved_vae = (start / "vae" / "diffusion_pytorch_model.safetensors").read_bytes()
    assert (out / "vae" / "diffusion_pytorch_model.safetensors").read_bytes() == saved_vae  # kept, not retrained
    assert load_model(str(out), device="cpu").world.name == WORLD_SHAPES
    with pytest.raises(SystemExit):  # resuming its checkpoint with another depth is refused, not mangled
        train.main(["--out", str(out), "--checkpoint-dir", str(ckpt), "--text-layers", "2", "--steps", "2",
                    "--batch", "4", "--device", "cpu"])
    exported = tmp_path / "exported"
    train.main(["--out", str(exported), "--checkpoint-dir", str(ckpt), "--export-only", "--init-from", str(start),
                "--device", "cpu"])  # the depth comes from the checkpoint
    assert BertModel.from_pretrained(exported / "text_encoder").config.num_hidden_layers == 3
