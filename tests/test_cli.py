"""The command line, end to end on a random-weight shapes-world model (offline, CPU).

Commands run in-process through `cli.main([...])` (the model is loaded once and cached);
one subprocess test checks `python -m originality` and its --help texts.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from originality import cli
from originality.config import DEFAULT_PRESET
from originality.report import Report
from originality.shapes.renderer import Element, render

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--max-tokens", "2", "--steps", "2", "--batch-size", "2", "--reconstructions", "2",
        "--inference-steps", "2", "--edits", "1", "--device", "cpu"]
ANALYSIS_FLAGS = ["--model", "--domain", "--preset", "--max-tokens", "--steps", "--batch-size", "--learning-rate",
                  "--reconstructions", "--inference-steps", "--guidance-scale", "--threshold", "--edit-prompt",
                  "--edit-subject", "--edits", "--seed", "--device", "--dtype", "--quiet"]


@pytest.fixture(scope="module")
def model_dir(tiny_shapes_model) -> str:
    return str(tiny_shapes_model)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """good1.png, good2.png, bad.png (text), empty.jpg (0 bytes), notes.txt (not an image)."""
    folder = tmp_path_factory.mktemp("images")
    render([Element("circle", "red", x=20, y=20), Element("square", "blue", x=44, y=44)]).save(folder / "good1.png")
    render([Element("triangle", "green", "small", "empty", x=30, y=34)]).save(folder / "good2.png")
    (folder / "bad.png").write_text("this is not an image\n")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.txt").write_text("ignored: not an image extension\n")
    return folder


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def length_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("m=")]


def subcommand(name: str):
    parser = cli.build_parser()
    actions = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return actions[0].choices[name]


def test_help_documents_every_flag_with_its_default():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    top = subprocess.run([sys.executable, "-m", "originality", "--help"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert top.returncode == 0, top.stderr
    assert "analyze" in top.stdout and "batch" in top.stdout
    sub = subprocess.run([sys.executable, "-m", "originality", "analyze", "--help"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert sub.returncode == 0, sub.stderr
    for flag in ANALYSIS_FLAGS + ["--out", "--json"]:
        assert flag in sub.stdout, f"analyze --help does not document {flag}"
    assert f"default: 150 with --preset {DEFAULT_PRESET}" in sub.stdout  # --steps: the default preset's first
    assert "None = the model world's default" in sub.stdout  # --threshold, --guidance-scale, --domain

    for command, extra in (("analyze", ["--out", "--json"]), ("batch", ["--out", "--overwrite"])):
        parser = subcommand(command)
        documented = {s for a in parser._actions for s in a.option_strings}
        assert set(ANALYSIS_FLAGS + extra) <= documented
        for action in parser._actions:
            if action.option_strings and action.dest != "help":
                assert "default" in (action.help or ""), f"{command} {action.option_strings}: no default in help"


def test_analyze_prints_lengths_and_score_and_saves(capsys, model_dir, images, tmp_path):
    out_dir = tmp_path / "report"
    code, out, err = run(capsys, "analyze", images / "good1.png", "--model", model_dir, *TINY, "--out", out_dir)
    assert code == 0, err
    assert "m=1 inversion" in err and "loss=" in err  # the tqdm bar on stderr
    lines = length_lines(out)
    assert 1 <= len(lines) <= 2
    for m, line in enumerate(lines, 1):
        assert line.startswith(f"m={m}  distance ") and "95% CI" in line and "  layout check: " in line
        assert line.endswith("-> pass") or "-> fail" in line
    score = [line for line in out.splitlines() if line.startswith("score: ")]
    assert len(score) == 1
    label = score[0].split()[1]
    passed = lines[-1].endswith("-> pass")
    assert label == (str(len(lines)) if passed else "2+")
    assert "Original" in score[0] or "Familiar" in score[0]
    expected = float(score[0].rsplit("  expected length ", 1)[1])  # the continuous score ends the line

    report = Report.load(out_dir)
    assert report.label == label
    assert 1.0 <= expected <= 3.0 and expected == round(report.expected_length, 2)
    assert json.loads((out_dir / "report.json").read_text())["expected_length"] == report.expected_length
    assert len(report.results) == len(lines)
    assert report.config["steps"] == 2 and report.config["max_tokens"] == 2
    assert "Traceback" not in err


def test_analyze_json(capsys, model_dir, images):
    code, out, err = run(capsys, "analyze", images / "good2.png", "--model", model_dir, *TINY, "--quiet", "--json",
                         "--threshold", "0.3", "--seed", "3")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["label"] in ("1", "2", "2+")
    assert summary["threshold"] == 0.3 and summary["config"]["seed"] == 3
    assert summary["config"]["num_reconstructions"] == 2 and summary["config"]["num_edits"] == 1
    assert 1 <= len(summary["results"]) <= 2
    assert not length_lines(out)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_batch_records_bad_images_and_resumes(capsys, model_dir, images, tmp_path):
    out_dir = tmp_path / "batch"
    code, out, err = run(capsys, "batch", images, "--out", out_dir, "--model", model_dir, *TINY, "--quiet")
    assert code == 0, err
    assert sorted(p.name for p in out_dir.iterdir() if p.is_dir()) == ["good1", "good2"]
    assert (out_dir / "good1" / "report.json").is_file() and (out_dir / "good2" / "report.json").is_file()
    assert not list(out_dir.glob("summary.part*.csv"))

    rows = read_csv(out_dir / "summary.csv")
    assert [r["image"] for r in rows] == ["bad.png", "empty.jpg", "good1.png", "good2.png"]
    assert list(rows[0]) == ["image", "score", "label", "expected_length", "label_probability", "mean_distance_m1",
                             "mean_distance_m2", "seconds", "error"]
    by_name = {r["image"]: r for r in rows}
    assert "not" in by_name["bad.png"]["error"].lower() and by_name["bad.png"]["label"] == ""
    assert "empty" in by_name["empty.jpg"]["error"]
    for name in ("good1.png", "good2.png"):
        row = by_name[name]
        assert row["error"] == "" and row["label"] in ("1", "2", "2+")
        report = Report.load(out_dir / Path(name).stem)
        assert row["label"] == report.label
        assert float(row["expected_length"]) == pytest.approx(report.expected_length, abs=5e-4)
        assert float(row["label_probability"]) == pytest.approx(report.label_probability, abs=5e-4)
        assert float(row["mean_distance_m1"]) >= 0 and float(row["seconds"]) >= 0

    # Rerun: existing reports are skipped, not recomputed; the summary still lists every image.
    mtimes = {n: (out_dir / n / "report.json").stat().st_mtime_ns for n in ("good1", "good2")}
    code, out, err = run(capsys, "batch", images, "--out", out_dir, "--model", model_dir, *TINY, "--quiet")
    assert code == 0, err
    assert out.count("skipped") >= 2
    assert {n: (out_dir / n / "report.json").stat().st_mtime_ns for n in mtimes} == mtimes
    rerun = read_csv(out_dir / "summary.csv")
    assert [r["image"] for r in rerun] == [r["image"] for r in rows]
    assert [r["label"] for r in rerun] == [r["label"] for r in rows]


@pytest.mark.parametrize("case", ["threshold", "steps", "edit_prompt", "missing", "bad_image", "empty_image",
                                  "model_folder", "not_a_model", "batch_folder", "flag_type"])
def test_user_mistakes_exit_2_without_traceback(capsys, model_dir, images, tmp_path, case):
    good = images / "good1.png"
    argv = {
        "threshold": ["analyze", good, "--model", model_dir, "--threshold", "5"],
        "steps": ["analyze", good, "--model", model_dir, "--steps", "0"],
        "edit_prompt": ["analyze", good, "--model", model_dir, "--edit-prompt", "a cat"],
        "missing": ["analyze", tmp_path / "nope.png", "--model", model_dir],
        "bad_image": ["analyze", images / "bad.png", "--model", model_dir],
        "empty_image": ["analyze", images / "empty.jpg", "--model", model_dir],
        "model_folder": ["analyze", good, "--model", tmp_path / "no" / "such" / "model"],
        "not_a_model": ["analyze", good, "--model", tmp_path],
        "batch_folder": ["batch", tmp_path / "nothing", "--out", tmp_path / "out", "--model", model_dir],
        "flag_type": ["analyze", good, "--steps", "many"],
    }[case]
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert "error:" in err and "Traceback" not in err
    assert not length_lines(out)


def test_analyze_with_references_prints_their_similarity(capsys, model_dir, images, tmp_path):
    code, out, err = run(capsys, "analyze", str(images / "good1.png"), "--model", model_dir, *TINY, "--max-tokens",
                         "1", "--reference", str(images / "good1.png"), "--reference", str(images / "good2.png"),
                         "--out", str(tmp_path / "run"))
    assert code == 0, err
    assert "similarity: reference good1.png: copy 1.000 (at or above the copy line 1), style n/a" in out
    assert "similarity: m=1: reconstructions nearest to" in out
    report = Report.load(tmp_path / "run")
    assert [r.name for r in report.similarity.references] == ["good1.png", "good2.png"]
    code, _, err = run(capsys, "analyze", str(images / "good1.png"), "--model", model_dir, *TINY, "--reference",
                       str(images / "bad.png"))
    assert code == 2 and "error: reference image 'bad.png'" in err
    code, _, err = run(capsys, "analyze", str(images / "good1.png"), "--model", model_dir, *TINY, "--reference",
                       str(images / "good1.png"), "--max-references", "0")
    assert code == 2 and "max_references must be a positive integer" in err
