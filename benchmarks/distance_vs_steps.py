"""How a length's reconstruction distance falls with inversion steps, at a given learning rate and batch.

    python benchmarks/distance_vs_steps.py LR BATCH STEPS,STEPS,...   e.g. 1.5e-2 8 10,20,30,50,80,150

Shapes world, shipped model, figure-6 varied drawings #0 and #1 of each group, m = 1, 2, 3: one
inversion per (image, m) with the analysis' seed, and at each listed step the analysis' 8
reconstructions drawn from the rows as they are (through the inversion's probe hook, the same
prompt, seeds and sampler as the analysis), scored with the element distance. One thread. Prints
one line per (group, image, m): [(step, mean distance), ...] and the seconds it took.
Session 9's two runs (lr 5e-3 and 1.5e-2, batch 8) are in benchmarks/distance_vs_steps.txt.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


class Recorder:
    """An inversion probe (see `stopping.ReconstructionProbe`) that never stops the inversion: at each of
    `checks` it draws the reconstructions and records their mean distance."""

    def __init__(self, checks, draw, score):
        self.checks, self.draw, self.score, self.history = set(checks), draw, score, []

    def due(self, step: int) -> bool:
        return step in self.checks

    def passes(self, step: int) -> bool:
        distances = self.score(self.draw())
        self.history.append((step, round(sum(distances) / len(distances), 3)))
        return False


def main(argv: list[str]) -> int:
    import torch

    from originality import AnalysisConfig, load_model
    from originality.analysis import generate, inversion_seed, prepare
    from originality.inversion import TokenSession, encode_query, invert
    from originality.experiments.figure6 import query_image

    learning_rate, batch_size = float(argv[0]), int(argv[1])
    checks = [int(x) for x in argv[2].split(",")]
    torch.set_num_threads(1)
    model = load_model()
    config = AnalysisConfig.preset("fast", learning_rate=learning_rate, batch_size=batch_size, steps=max(checks))
    for group in ("common", "rare", "unseen"):
        for index in (0, 1):
            prepared = prepare(query_image(group, 0, index, varied=True)[1], config, model)
            for m in (1, 2, 3):
                started = time.perf_counter()
                with TokenSession(model.pipeline) as session:
                    pipe = session.pipeline
                    mean, std = encode_query(pipe, prepared.query)
                    placeholder = session.add(f"<s{m}>", m, prepared.init_id)
                    prompt = prepared.config.reconstruction_prompt.format(placeholder.token)
                    recorder = Recorder(checks, lambda: generate(pipe, prompt, 8, seed=0, config=prepared.config,
                                                                 resolution=model.resolution),
                                        lambda images: model.distance(prepared.query, images))
                    # one step past the last check: a probe is not asked at the step cap
                    for _ in invert(pipe, mean, std, placeholder, prepared.templates, steps=max(checks) + 1,
                                    batch_size=batch_size, learning_rate=learning_rate,
                                    seed=inversion_seed(0, m, prepared.query), probe=recorder):
                        pass
                print(group, index, m, recorder.history, f"{time.perf_counter() - started:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
