"""How much between-run noise per token length the test-retest targets allow: a simulation on recorded curves.

    python benchmarks/allowed_noise.py benchmarks/reliability/steady-test.json [--line 0.3 0.42]
                                       [--noise 0 0.01 0.02 0.03 0.05 0.07 0.1 0.15] [--draws 4000]

A label is the first length whose mean distance falls below the rule's line, so it moves between two runs
exactly when some length's mean moves across that line. This takes each drawing's curve from a reliability
result (a length's mean distance, averaged over the drawing's runs; a length no run reached counts as passing,
since every run stopped before it), adds independent normal noise of sd `--noise` to every length of two
simulated runs, and prints how often the two labels agree (same label, within one length), per noise level.
Reading it against the between-run sd that the reliability summary measures per length (`length_noise`) says how
far a setting is from the targets and how much steadier a length would have to be. The curves come from the same
noisy runs, so the drawings' spread around the line is slightly overstated: an estimate, not a measurement.

`--line`: the rule's line; 0.3 is the threshold (the mean rule), and the benefit of the doubt behaves like a line
at the threshold plus the 95% interval's half width (about 0.42 at 24 reconstructions).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def curves_of(result: dict, max_tokens: int = 5) -> np.ndarray:
    """(drawings, max_tokens) mean distances, each length averaged over the drawing's runs (0 where none ran it);
    drawings with fewer than two runs are left out."""
    rows = []
    for image in result["images"]:
        runs = list(image["runs"].values())
        if len(runs) < 2:
            continue
        rows.append([
            np.mean([np.mean(L["distances"]) for r in runs for L in r["lengths"] if L["m"] == m] or [0.0])
            for m in range(1, max_tokens + 1)
        ])
    return np.array(rows)


def simulated_labels(curves: np.ndarray, line: float, noise: float, draws: int, rng: np.random.Generator):
    """(draws, drawings) labels of simulated runs: first length below `line` (1-based), max_tokens + 1 if none."""
    noisy = curves[None] + rng.normal(0.0, noise, (draws,) + curves.shape)
    passed = noisy < line
    return np.where(passed.any(-1), passed.argmax(-1) + 1, curves.shape[1] + 1)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("result", help="a reliability result file (benchmarks/reliability/*.json)")
    ap.add_argument("--line", type=float, nargs="+", default=[0.3, 0.42])
    ap.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15])
    ap.add_argument("--draws", type=int, default=4000)
    args = ap.parse_args(argv)
    result = json.loads(Path(args.result).read_text())
    curves = curves_of(result, result["config"]["max_tokens"])
    print(f"{args.result}: {len(curves)} drawings")
    for line in args.line:
        near = np.abs(curves[:, 0] - line)
        print(f"line {line}: first length's mean within 0.05 / 0.1 of the line on {(near < 0.05).sum()} / "
              f"{(near < 0.1).sum()} drawings")
        rng = np.random.default_rng(0)
        for noise in args.noise:
            a, b = (simulated_labels(curves, line, noise, args.draws, rng) for _ in range(2))
            print(f"  noise sd {noise:.2f}: same label {np.mean(a == b):.2f}, within one {np.mean(abs(a - b) <= 1):.2f}")


if __name__ == "__main__":
    main()
