"""Experiments on the shapes world, above the engine and the CLI: training its model (`train`), checking it
(`evaluate`), calibrating its threshold (`shapes_threshold`), the paper's figure 6 (`figure6`), the redraw
benchmark (`robustness`) and the test-retest benchmark (`reliability`). Each is `python -m
originality.experiments.NAME`; nothing in the engine imports them."""
