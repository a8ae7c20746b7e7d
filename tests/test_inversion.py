"""Multi-token textual inversion on a tiny SD-architecture pipeline (random weights, CPU)."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from originality.inversion import (
    PlaceholderEmbedding,
    TokenSession,
    encode_query,
    evaluation_loss,
    initializer_id,
    invert,
    lr_factor,
)
from originality.report import save_embeddings
from originality.templates import OBJECT_TEMPLATES
from originality.testing import drain, tiny_sd_pipeline


@pytest.fixture(scope="module")
def pipe():
    return tiny_sd_pipeline(seed=0)


@pytest.fixture(scope="module")
def query():
    rng = np.random.RandomState(0)
    arr = np.full((64, 64, 3), 255, np.uint8)
    arr[16:48, 8:40] = (200, 30, 30)
    arr[30:60, 36:60] = rng.randint(0, 255, (30, 24, 3))
    return Image.fromarray(arr)


def test_initializer_must_be_one_known_token(pipe):
    assert initializer_id(pipe.tokenizer, "house") == pipe.tokenizer.convert_tokens_to_ids("house</w>")
    with pytest.raises(ValueError, match="single token"):
        initializer_id(pipe.tokenizer, "skyscraperish")
    with pytest.raises(ValueError, match="2 tokens|single token"):
        initializer_id(pipe.tokenizer, "red house")


def test_only_placeholder_rows_change_and_session_leaves_no_trace(pipe, query):
    weight_before = pipe.text_encoder.get_input_embeddings().weight.detach().clone()
    vocab_before = len(pipe.tokenizer)
    mean, std = encode_query(pipe, query)
    with TokenSession(pipe) as session:
        init = initializer_id(session.tokenizer, "house")
        ph = session.add("<s3>", 3, init)
        assert ph.tokens == ("<s3>", "<s3>_1", "<s3>_2")
        assert session.tokenizer.tokenize("a photo of " + ph.text)[-3:] == list(ph.tokens)
        events, learned = drain(invert(session.pipeline, mean, std, ph, OBJECT_TEMPLATES,
                                     steps=3, batch_size=2, learning_rate=1e-1, seed=0))
        assert [e.step for e in events] == [1, 2, 3] and all(e.total == 3 for e in events)
        assert learned.shape == (3, 32) and learned.dtype == torch.float32
        weight = pipe.text_encoder.get_input_embeddings().weight
        assert isinstance(pipe.text_encoder.get_input_embeddings(), torch.nn.Embedding)  # wrapper removed
        assert torch.equal(weight[:vocab_before], weight_before)  # every original row untouched
        assert torch.allclose(weight[list(ph.ids)], learned)  # placeholder rows hold the result
        assert not torch.allclose(learned, weight_before[init].expand(3, -1))  # and they moved
    assert pipe.text_encoder.get_input_embeddings().weight.shape[0] == vocab_before
    assert len(pipe.tokenizer) == vocab_before  # the shared tokenizer never saw the tokens


def test_loss_on_the_query_falls(pipe, query):
    mean, std = encode_query(pipe, query)
    with TokenSession(pipe) as session:
        ph = session.add("<s2>", 2, initializer_id(session.tokenizer, "house"))
        templates = ["a photo of a {}"]
        before = evaluation_loss(session.pipeline, mean, std, ph, templates)
        drain(invert(session.pipeline, mean, std, ph, templates, steps=40, batch_size=4, learning_rate=5e-2, seed=1))
        after = evaluation_loss(session.pipeline, mean, std, ph, templates)
    assert after < before, (before, after)


def test_inversion_is_reproducible(pipe, query):
    mean, std = encode_query(pipe, query)
    results = []
    for _ in range(2):
        with TokenSession(pipe) as session:
            ph = session.add("<s1>", 1, initializer_id(session.tokenizer, "dog"))
            results.append(drain(invert(session.pipeline, mean, std, ph, OBJECT_TEMPLATES,
                                      steps=2, batch_size=2, learning_rate=1e-2, seed=7)))
    (ev_a, emb_a), (ev_b, emb_b) = results
    assert [e.loss for e in ev_a] == [e.loss for e in ev_b]
    assert torch.equal(emb_a, emb_b)


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
def test_learning_rate_schedule(pipe, query, schedule):
    mean, std = encode_query(pipe, query)
    with TokenSession(pipe) as session:
        ph = session.add("<s1>", 1, initializer_id(session.tokenizer, "dog"))
        events, learned = drain(invert(session.pipeline, mean, std, ph, OBJECT_TEMPLATES, steps=4, batch_size=2,
                                     learning_rate=1e-2, seed=0, lr_schedule=schedule))
    rates = [e.learning_rate for e in events]
    expected = {"constant": [1e-2] * 4, "linear": [1e-2, 7.5e-3, 5e-3, 2.5e-3],
                "cosine": [1e-2 * 0.5 * (1 + math.cos(math.pi * i / 4)) for i in range(4)]}[schedule]
    assert rates == pytest.approx(expected)
    assert lr_factor(schedule, 4)(4) == pytest.approx(1.0 if schedule == "constant" else 0.0)
    with pytest.raises(ValueError, match="lr_schedule"):
        lr_factor("step", 4)


@pytest.mark.parametrize("averaged", [0, 1, 3, 6])
def test_tail_averaging_returns_the_mean_of_the_last_steps_rows(pipe, query, averaged):
    mean, std = encode_query(pipe, query)
    with TokenSession(pipe) as session:
        ph = session.add("<s1>", 2, initializer_id(session.tokenizer, "dog"))
        inversion = invert(session.pipeline, mean, std, ph, OBJECT_TEMPLATES, steps=4, batch_size=2,
                           learning_rate=5e-2, seed=0, averaged_steps=averaged)
        rows = []  # the rows after each step, read while the inversion is paused at its event
        while True:
            try:
                next(inversion)
            except StopIteration as stop:
                result = stop.value
                break
            rows.append(session.pipeline.text_encoder.get_input_embeddings().learned.detach().clone())
        written = session.pipeline.text_encoder.get_input_embeddings().weight[list(ph.ids)].detach().clone()
    expected = torch.stack(rows[-min(averaged, 4):]).mean(0) if averaged else rows[-1]
    assert not torch.equal(rows[0], rows[-1])  # the rows moved, so the average differs from the last rows
    assert torch.allclose(result, expected, atol=1e-6)
    assert torch.allclose(written, expected, atol=1e-6)  # the rows the reconstructions will read


def test_cancelled_inversion_restores_the_text_encoder(pipe, query):
    mean, std = encode_query(pipe, query)
    rows = pipe.text_encoder.get_input_embeddings().weight.shape[0]
    with TokenSession(pipe) as session:
        ph = session.add("<s1>", 1, initializer_id(session.tokenizer, "dog"))
        gen = invert(session.pipeline, mean, std, ph, OBJECT_TEMPLATES, steps=100, batch_size=2,
                     learning_rate=1e-2, seed=0)
        next(gen)
        assert isinstance(pipe.text_encoder.get_input_embeddings(), PlaceholderEmbedding)
        gen.close()
        assert isinstance(pipe.text_encoder.get_input_embeddings(), torch.nn.Embedding)
    assert pipe.text_encoder.get_input_embeddings().weight.shape[0] == rows


def test_embeddings_round_trip_through_load_textual_inversion(pipe, query, tmp_path):
    mean, std = encode_query(pipe, query)
    with TokenSession(pipe) as session:
        ph = session.add("<s3>", 3, initializer_id(session.tokenizer, "house"))
        _, learned = drain(invert(session.pipeline, mean, std, ph, OBJECT_TEMPLATES,
                                steps=2, batch_size=2, learning_rate=1e-1, seed=0))
        # the session pipeline expands "<s3>" the diffusers way, like any loaded embedding
        expected = session.pipeline.encode_prompt("a photo of <s3>", "cpu", 1, False)[0]
        ids = session.tokenizer(session.pipeline.maybe_convert_prompt("a photo of <s3>", session.tokenizer)).input_ids
        assert ids[4:7] == list(ph.ids)
    path = tmp_path / "learned_embeds.safetensors"
    save_embeddings(path, ph.token, learned)

    fresh = tiny_sd_pipeline(seed=0)  # same base model, new process state
    fresh.load_textual_inversion(str(path))
    assert fresh.tokenizer.convert_tokens_to_ids("<s3>_2") != fresh.tokenizer.unk_token_id
    got = fresh.encode_prompt("a photo of <s3>", "cpu", 1, False)[0]  # diffusers expands <s3> to 3 tokens
    assert torch.equal(got, expected)
