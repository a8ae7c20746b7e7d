"""`python -m originality calibrate`: m = 1 distances of familiar images, a suggested threshold, separation."""

import json

import pytest

from originality.calibrate import auc_lower, summarise
from originality.cli import main


def test_suggestion_is_the_quantile_of_familiar_distances_and_separation_is_measured():
    familiar = [0.5, 0.1, 0.4, 0.2, 0.3]  # order does not matter
    s = summarise(familiar, [0.55, 0.6, 0.7], 0.8)
    # the documented rule: the 0.8 quantile, linear interpolation: position 0.8 * (5 - 1) = 3.2 of the sorted
    # values, 0.4 + 0.2 * (0.5 - 0.4) = 0.42
    assert s["suggested_threshold"] == pytest.approx(0.42)
    assert s["familiar"]["q80"] == pytest.approx(0.42) and s["familiar"]["median"] == pytest.approx(0.3)
    assert s["rule"] == "the 0.8 quantile of the familiar images' m = 1 mean distances"
    assert summarise(familiar, None, 0.5)["suggested_threshold"] == pytest.approx(0.3)
    assert summarise(familiar, None, 1.0)["suggested_threshold"] == pytest.approx(0.5)  # the largest
    assert summarise([0.1, 0.2], None, 0.25)["suggested_threshold"] == pytest.approx(0.125)
    assert s["original"]["pass_at_m1"] == 0.0  # all above 0.42
    assert summarise(familiar, [0.4, 0.45, 0.6, 0.7], 0.8)["original"]["pass_at_m1"] == 0.25  # 0.4 <= 0.42
    # every familiar distance is below every original one: perfectly separated
    assert s["auc_familiar_lower"] == 1.0
    assert "original" not in summarise(familiar, None, 0.5)


def test_auc_is_the_share_of_familiar_original_pairs_in_the_right_order():
    assert auc_lower([0.1, 0.2], [0.3, 0.9]) == 1.0  # separated, familiar lower
    assert auc_lower([0.3, 0.9], [0.1, 0.2]) == 0.0  # separated the wrong way
    assert auc_lower([0.2, 0.4], [0.2, 0.4]) == 0.5  # identical distributions
    assert auc_lower([0.3], [0.3]) == 0.5  # a tie counts half
    # overlapping, by hand: familiar 0.1 is below all three originals (3), 0.3 is below 0.6 and ties 0.3 (1.5),
    # 0.5 is below 0.6 only (1): 5.5 of 9 pairs
    assert auc_lower([0.1, 0.3, 0.5], [0.2, 0.3, 0.6]) == pytest.approx(5.5 / 9)
    assert summarise([0.1, 0.3, 0.5], [0.2, 0.3, 0.6], 0.8)["auc_familiar_lower"] == pytest.approx(5.5 / 9)


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
    for r in data["images"]["familiar"] + data["images"]["original"]:  # each image's mean is of its distances
        assert r["mean"] == pytest.approx(sum(r["distances"]) / len(r["distances"]))
    assert data["suggested_threshold"] == pytest.approx((means[0] + means[1]) / 2)  # the median of two
    # AUC from the written means, pair by pair (2 x 2 pairs, ties half)
    originals = [r["mean"] for r in data["images"]["original"]]
    pairs = [1.0 if f < o else 0.5 if f == o else 0.0 for f in means for o in originals]
    assert data["auc_familiar_lower"] == pytest.approx(sum(pairs) / 4) and data["world_default_threshold"] == 0.3
    assert "suggested threshold" in capsys.readouterr().out
    assert main(["calibrate", str(tmp_path / "nope"), "--model", str(tiny_shapes_model)]) == 2


def test_calibrate_command_on_scripted_distances(tiny_shapes_model, tmp_path, capsys, monkeypatch):
    """The command's threshold and AUC on m = 1 distances whose separation is known (the inversion scripted)."""
    import originality.calibrate as calibrate

    familiar, original = _images(tmp_path / "familiar", 4, 0), _images(tmp_path / "original", 3, 10)
    scripted = {"familiar": [0.10, 0.30, 0.20, 0.40], "original": [0.35, 0.60, 0.50]}

    def one_token_distances(model, images, config, progress=None):
        kind = images[0].parent.name
        return [{"image": p.name, "domain": None, "distances": [d, d], "mean": d}
                for p, d in zip(images, scripted[kind])]

    monkeypatch.setattr(calibrate, "one_token_distances", one_token_distances)
    out = tmp_path / "cal"
    assert main(["calibrate", str(familiar), "--original", str(original), "--model", str(tiny_shapes_model),
                 "--device", "cpu", "--out", str(out), "--quiet"]) == 0  # default quantile 0.8
    data = json.loads((out / "calibration.json").read_text())
    # sorted familiar 0.1 0.2 0.3 0.4, position 0.8 * 3 = 2.4: 0.3 + 0.4 * 0.1 = 0.34
    assert data["suggested_threshold"] == pytest.approx(0.34) and data["settings"]["quantile"] == 0.8
    # 0.4 is above 0.35 (1 of 12 pairs out of order): AUC 11/12; no original passes at 0.34
    assert data["auc_familiar_lower"] == pytest.approx(11 / 12) and data["original"]["pass_at_m1"] == 0.0
    printed = capsys.readouterr().out
    assert "suggested threshold: 0.340" in printed and "AUC(familiar lower) 0.92" in printed
