#!/usr/bin/env python
"""Where one inversion step spends its time: ours vs diffusers' textual_inversion.py loop.

Times each phase of the two steps with simple timers (same ops as
`originality.inversion.invert` / `bench_inversion.DiffusersTILoop.step`) and prints the
top operators of one of our steps from torch.profiler. Tiny SD on the CPU by default.

    nice -n 19 python benchmarks/profile_step.py --batch-size 8 --steps 10
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_inversion import DiffusersTILoop, seed_everything, synthetic_query  # noqa: E402
from originality.inversion import (  # noqa: E402
    PlaceholderEmbedding, TokenSession, encode_query, initializer_id, tokenize)
from originality.templates import OBJECT_TEMPLATES  # noqa: E402
from originality.testing import tiny_sd_pipeline  # noqa: E402


class Timer:
    def __init__(self):
        self.t = defaultdict(float)
        self.last = time.perf_counter()

    def lap(self, name):
        now = time.perf_counter()
        self.t[name] += now - self.last
        self.last = now


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--num-tokens", type=int, default=3)
    p.add_argument("--profiler", action="store_true", help="also print torch.profiler top ops of our step")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    seed_everything(0)
    pipe = tiny_sd_pipeline(seed=0)
    res = pipe.unet.config.sample_size * pipe.vae_scale_factor
    query = synthetic_query(res, 0)
    init_id = initializer_id(pipe.tokenizer, "house")
    te_copy, tok_copy = copy.deepcopy(pipe.text_encoder), copy.deepcopy(pipe.tokenizer)

    with TokenSession(pipe) as session, tempfile.TemporaryDirectory() as tmp:
        sp = session.pipeline
        mean, std = encode_query(sp, query)
        ph = session.add("<p>", args.num_tokens, init_id)
        te, unet = sp.text_encoder, sp.unet
        sched = DDPMScheduler.from_config(sp.scheduler.config)
        base = te.get_input_embeddings()
        learned = nn.Parameter(base.weight[list(ph.ids)].detach().clone())
        opt = torch.optim.AdamW([learned], lr=5e-3, weight_decay=0.0)
        ids = tokenize(sp.tokenizer, [t.format(ph.text) for t in OBJECT_TEMPLATES], mean.device)
        g = torch.Generator().manual_seed(0)
        te.eval(); unet.eval(); te.requires_grad_(False); unet.requires_grad_(False)
        te.set_input_embeddings(PlaceholderEmbedding(base, ph.ids, learned))
        B = args.batch_size

        def ours_step(tm):
            shape = (B, *mean.shape[1:])
            eps = torch.randn(shape, generator=g); noise = torch.randn(shape, generator=g)
            t = torch.randint(0, 1000, (B,), generator=g)
            pick = torch.randint(0, len(OBJECT_TEMPLATES), (B,), generator=g)
            latents = mean + std * eps
            noisy = sched.add_noise(latents, noise, t)
            tm.lap("noise+sample")
            hidden = te(ids[pick])[0]
            tm.lap("text encoder fwd")
            pred = unet(noisy, t, hidden).sample
            tm.lap("unet fwd")
            loss = F.mse_loss(pred.float(), noise.float())
            loss.backward()
            tm.lap("backward")
            opt.step(); opt.zero_grad(set_to_none=True)
            tm.lap("adamw+zero")
            float(loss.detach())

        # ---- baseline with phase timers (monkeypatched timing of the same ops)
        d = Path(tmp) / "train"; d.mkdir(); query.save(d / "q.png")
        loop = DiffusersTILoop(text_encoder_cpu=te_copy.float(), tokenizer=tok_copy, vae=sp.vae, unet=unet,
                               scheduler_config=sp.scheduler.config, image_dir=d, resolution=res,
                               templates=OBJECT_TEMPLATES, num_vectors=args.num_tokens,
                               initializer_token_id=init_id, batch_size=B, learning_rate=5e-3,
                               device=torch.device("cpu"), seed=0)

        def base_step(tm):
            acc = loop.accelerator
            batch = loop._next_batch(); tm.lap("dataset+collate (PIL, tokenize)")
            with acc.accumulate(loop.text_encoder):
                latents = loop.vae.encode(batch["pixel_values"]).latent_dist.sample().detach() * 0.18215
                tm.lap("vae encode")
                noise = torch.randn_like(latents)
                ts = torch.randint(0, 1000, (latents.shape[0],)).long()
                noisy = loop.noise_scheduler.add_noise(latents, noise, ts); tm.lap("noise+sample")
                hid = loop.text_encoder(batch["input_ids"])[0]; tm.lap("text encoder fwd")
                pred = loop.unet(noisy, ts, hid).sample; tm.lap("unet fwd")
                loss = F.mse_loss(pred.float(), noise.float()); acc.backward(loss); tm.lap("backward")
                loop.optimizer.step(); loop.lr_scheduler.step(); loop.optimizer.zero_grad()
                tm.lap("adamw (whole matrix)+zero")
                keep = torch.ones((len(loop.tokenizer),), dtype=torch.bool)
                keep[min(loop.placeholder_token_ids): max(loop.placeholder_token_ids) + 1] = False
                with torch.no_grad():
                    weight = acc.unwrap_model(loop.text_encoder).get_input_embeddings().weight
                    weight[keep] = loop.orig_embeds_params[keep]
                tm.lap("restore rows")
            loss.item()

        try:
            for _ in range(2):
                ours_step(Timer())
                base_step(Timer())
            # interleaved, one step each, so that load from other processes hits both alike
            tm_o, tm_b = Timer(), Timer()
            tot_o = tot_b = 0.0
            for _ in range(args.steps):
                tm_o.last = t0 = time.perf_counter()
                ours_step(tm_o)
                tm_b.last = t1 = time.perf_counter()
                tot_o += t1 - t0
                base_step(tm_b)
                tot_b += time.perf_counter() - t1
            if args.profiler:
                from torch.profiler import ProfilerActivity, profile
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    for _ in range(3):
                        ours_step(Timer())
                print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))
        finally:
            te.set_input_embeddings(base)

        for name, tm, tot in (("OURS", tm_o, tot_o), ("DIFFUSERS LOOP", tm_b, tot_b)):
            per = tot / args.steps
            print(f"{name}  {per:.4f} s/step (batch {B}, mean of {args.steps} interleaved steps)")
            for k, v in tm.t.items():
                print(f"   {k:32s} {v / args.steps:.4f} s  {100 * v / tot:5.1f}%")
        print(f"ratio baseline/ours {tot_b / tot_o:.2f}x")


if __name__ == "__main__":
    main()
