"""`python -m originality reproduce RUN_DIR` on the bundled shapes world, tiny settings: the rerun
matches the record number for number; a tampered record, a different image and a missing model
are reported. Also `analyze --json --html`, which made the run."""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import pytest

from originality import cli
from originality.record import repeat_seed
from originality.shapes.renderer import Element, render

TINY = ["--max-tokens", "2", "--steps", "3", "--batch-size", "2", "--reconstructions", "2",
        "--inference-steps", "3", "--device", "cpu", "--quiet"]


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def table(out: str) -> dict[int, list[str]]:
    """{m: [recorded distance, recorded pass/fail, new distance, new pass/fail]} from the printed table."""
    rows = {}
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0].isdigit():
            rows[int(parts[0])] = parts[1:5]
    return rows


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    """`analyze --model shapes --out RUN --json --html FILE`: (run dir, printed JSON, html path, image)."""
    folder = tmp_path_factory.mktemp("reproduce")
    image = folder / "upload.png"
    render([Element("circle", "red", x=20, y=22), Element("square", "blue", x=44, y=42)]).save(image)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["analyze", str(image), "--model", "shapes", "--out", str(folder / "run"), "--json",
                         "--html", str(folder / "report.html"), *TINY])
    assert code == 0
    return folder / "run", json.loads(out.getvalue()), folder / "report.html", image


def test_analyze_prints_the_record_and_writes_the_html(analysed):
    run_dir, summary, html_path, _ = analysed
    record = summary["record"]
    assert record["model"]["bundled"] is True and record["model"]["content_sha256"]
    assert record["input"]["name"] == "upload.png"
    assert json.loads((run_dir / "report.json").read_text())["record"] == record
    text = html_path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and record["query"]["sha256"] in text
    assert f"reproduce {run_dir}" in text  # the rerun command names the run folder


def test_reproduce_matches_the_recorded_run(analysed, capsys, tmp_path):
    run_dir, summary, _, _ = analysed
    code, out, err = run(capsys, "reproduce", run_dir, "--quiet", "--html", tmp_path / "again.html")
    assert code == 0, out + err
    rows = table(out)
    assert sorted(rows) == [r["num_tokens"] for r in summary["results"]]
    for r in summary["results"]:
        recorded_d, recorded_p, new_d, new_p = rows[r["num_tokens"]]
        assert recorded_d == f"{r['mean_distance']:.4f}" and recorded_p == ("pass" if r["passed"] else "fail")
        assert (new_d, new_p) == (recorded_d, recorded_p)  # same device, versions, seeds: same numbers
    assert f"label: recorded {summary['label']}, new {summary['label']} -> match" in out
    assert "largest distance difference 0" in out
    assert "differs from the record" not in err
    assert (tmp_path / "again.html").is_file()


def test_reproduce_from_the_original_file_and_refuses_another(analysed, capsys, tmp_path):
    run_dir, summary, _, image = analysed
    code, out, err = run(capsys, "reproduce", run_dir, "--image", image, "--quiet")
    assert code == 0 and "-> match" in out, out + err
    other = tmp_path / "other.png"
    render([Element("triangle", "green", x=30, y=30)]).save(other)
    code, out, err = run(capsys, "reproduce", run_dir, "--image", other, "--quiet")
    assert code == cli.EXIT_USAGE and "is not the file this run analysed" in err


def edited_copy(run_dir, dest, edit):
    """A copy of the run folder whose report.json went through `edit(meta)`."""
    shutil.copytree(run_dir, dest)
    meta = json.loads((dest / "report.json").read_text())
    edit(meta)
    (dest / "report.json").write_text(json.dumps(meta))
    return dest


def test_reproduce_reports_a_different_result(analysed, capsys, tmp_path):
    def passed_at_one(meta):  # pretend the recorded run passed at m = 1 with a tiny distance
        first = meta["results"][0]
        first.update(distances=[0.01] * len(first["distances"]), distance_passed=True, check_passed=True,
                     passed=True)
        meta.update(results=[first], score=1, label="1")

    tampered = edited_copy(analysed[0], tmp_path / "tampered", passed_at_one)
    code, out, err = run(capsys, "reproduce", tampered, "--quiet")
    assert code == cli.EXIT_MISMATCH
    assert "<- differs" in out and "-> DIFFERENT" in out
    # the same pixels are checked too: a changed query.png is refused
    render([Element("star", "red", x=30, y=30)]).save(tampered / "query.png")
    code, out, err = run(capsys, "reproduce", tampered, "--quiet")
    assert code == cli.EXIT_USAGE and "differs from the one this run analysed" in err


def test_reproduce_says_when_the_record_seeded_its_images_another_way(analysed, capsys, tmp_path):
    def old_scheme(meta):  # a record from before image_seed: seed s drew image i from s + i
        meta["record"]["seeds"]["reconstruction"] = "image i (from 0) of every length: seed 3 + i"

    older = edited_copy(analysed[0], tmp_path / "older", old_scheme)
    code, out, err = run(capsys, "reproduce", older, "--quiet")
    assert code == 0  # seed 0 draws what it always drew
    assert "seeds.reconstruction: recorded 'image i (from 0) of every length: seed 3 + i'" in err
    assert "seeds generated images differently" in err and "seeds.edit" not in err


def test_reproduce_says_when_the_second_opinion_ran_under_another_seed(analysed, capsys, tmp_path):
    """A run from before `record.repeat_seed` took its second opinion under seed + 1; the rerun says that its own
    second opinion runs under another seed, and names both; the run as made (no second opinion) says nothing."""
    def old_second_opinion(meta):
        meta["second_opinion"] = {"seed": 1, "score": None, "mean_distances": {"1": 0.9}}

    older = edited_copy(analysed[0], tmp_path / "older", old_second_opinion)
    code, out, err = run(capsys, "reproduce", older, "--quiet")
    assert f"the second opinion ran under seed 1, this version runs it under {repeat_seed(0, 1)}" in err
    code, out, err = run(capsys, "reproduce", analysed[0], "--quiet")
    assert code == 0 and "second opinion" not in err


def test_reproduce_needs_a_model_it_can_find(analysed, capsys, tmp_path):
    moved = edited_copy(analysed[0], tmp_path / "moved",
                        lambda meta: meta["record"]["model"].update(id=str(tmp_path / "gone"), bundled=False))
    code, out, err = run(capsys, "reproduce", moved, "--quiet")
    assert code == cli.EXIT_USAGE and "give its copy with --model" in err
    code, out, err = run(capsys, "reproduce", tmp_path / "nothing-here", "--quiet")
    assert code == cli.EXIT_USAGE and "not a report folder" in err
