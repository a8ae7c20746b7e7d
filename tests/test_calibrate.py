"""`python -m originality calibrate`: m = 1 distances of familiar images, a suggested threshold, separation."""

import json

import numpy as np
import pytest

from originality.calibrate import auc_lower, summarise
from originality.cli import main


def test_suggestion_is_the_quantile_of_familiar_distances_and_separation_is_measured():
    familiar = [0.1, 0.2, 0.3, 0.4, 0.5]
    s = summarise(familiar, [0.45, 0.6, 0.7], 0.8)
    assert s["suggested_threshold"] == pytest.approx(float(np.quantile(familiar, 0.8)))
    assert s["original"]["pass_at_m1"] == pytest.approx(0.0)  # 0.45 > 0.42
    assert s["auc_familiar_lower"] == pytest.approx(auc_lower(familiar, [0.45, 0.6, 0.7]))
    assert auc_lower([0.1], [0.2]) == 1.0 and auc_lower([0.2], [0.2]) == 0.5 and auc_lower([0.3], [0.2]) == 0.0
    assert "original" not in summarise(familiar, None, 0.5)


def _images(folder, n, seed):
    """n shapes-world queries (the world refuses anything else before any work)."""
    from originality.shapes import dataset, renderer

    folder.mkdir()
    for i in range(n):
        renderer.render(dataset.query("common", seed, i).elements).save(folder / f"im{i}.png")
    return folder


def test_calibrate_command_writes_the_distribution_and_suggestion(tiny_shapes_model, tmp_path, capsys):
    familiar, original = _images(tmp_path / "familiar", 2, 0), _images(tmp_path / "original", 2, 10)
    out = tmp_path / "cal"
    code = main(["calibrate", str(familiar), "--original", str(original), "--model", str(tiny_shapes_model),
                 "--device", "cpu", "--steps", "1", "--batch-size", "1", "--reconstructions", "2",
                 "--inference-steps", "1", "--out", str(out), "--quantile", "0.5", "--quiet"])
    assert code == 0
    data = json.loads((out / "calibration.json").read_text())
    means = [r["mean"] for r in data["images"]["familiar"]]
    assert len(means) == 2 and len(data["images"]["original"]) == 2
    assert all(len(r["distances"]) == 2 for r in data["images"]["familiar"])
    assert data["suggested_threshold"] == pytest.approx(float(np.quantile(means, 0.5)))
    assert 0.0 <= data["auc_familiar_lower"] <= 1.0 and data["world_default_threshold"] == 0.3
    assert "suggested threshold" in capsys.readouterr().out
    assert main(["calibrate", str(tmp_path / "nope"), "--model", str(tiny_shapes_model)]) == 2
