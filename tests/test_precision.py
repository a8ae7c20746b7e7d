"""Half-precision inversion learns what float32 learns (tiny SD at 64x64 latents, batch 20, CPU).

The frozen UNet runs in bfloat16 or float16 (with the dynamic loss scale), the text encoder and
the learned rows in float32, as `models.load_model` sets them up on a GPU. The updates of the
learned rows after one and several steps must point where float32's point (cosine >= 0.99).
float16 is ~15x slower than bfloat16 on a CPU (100 s per step here), so its test is marked slow.
"""

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from originality.inversion import PlaceholderEmbedding, TokenSession, encode_query, initializer_id, invert
from originality.templates import OBJECT_TEMPLATES
from originality.testing import tiny_sd_pipeline

STEPS = 3
BATCH = 20


@pytest.fixture(scope="module")
def base():
    return tiny_sd_pipeline(seed=0, latent_size=64)


@pytest.fixture(scope="module")
def latents(base):
    rng = np.random.RandomState(0)
    return encode_query(base, Image.fromarray(rng.randint(0, 255, (256, 256, 3)).astype(np.uint8)))


def updates(base, latents, dtype, steps):
    """The learned rows' change from their start after each of `steps` inversion steps, flattened."""
    pipe = copy.deepcopy(base)
    pipe.unet.to(dtype)
    pipe.vae.to(dtype)  # the text encoder stays float32, as models._load_pipeline keeps it
    mean, std = latents
    out = []
    with TokenSession(pipe) as session:
        init = initializer_id(session.tokenizer, "house")
        ph = session.add("<s2>", 2, init)
        start = pipe.text_encoder.get_input_embeddings().weight[init].detach().float().clone()
        gen = invert(session.pipeline, mean, std, ph, OBJECT_TEMPLATES, steps=steps, batch_size=BATCH,
                     learning_rate=5e-3, seed=3)
        for _ in gen:
            embedding = pipe.text_encoder.get_input_embeddings()
            assert isinstance(embedding, PlaceholderEmbedding) and embedding.learned.dtype == torch.float32
            out.append((embedding.learned.detach() - start).flatten().clone())
    return out


@pytest.fixture(scope="module")
def reference(base, latents):
    return updates(base, latents, torch.float32, STEPS)


def cosines(got, reference):
    return [float(torch.nn.functional.cosine_similarity(g, r, dim=0)) for g, r in zip(got, reference)]


def test_bfloat16_updates_follow_float32(base, latents, reference):
    got = cosines(updates(base, latents, torch.bfloat16, STEPS), reference)
    print("bfloat16 cosines per step:", got)
    assert len(got) == STEPS and min(got) >= 0.99, got


@pytest.mark.slow
def test_float16_with_loss_scaling_updates_follow_float32(base, latents, reference):
    got = cosines(updates(base, latents, torch.float16, 2), reference)
    print("float16 cosines per step:", got)
    assert len(got) == 2 and min(got) >= 0.99, got
