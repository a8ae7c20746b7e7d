"""Token lengths in parallel (`originality.parallel`): the coordination with scripted lengths run by
threads (no model), then two real CPU processes under the CLI against a sequential run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import free_port
from PIL import Image

from originality.analysis import Decision, LengthDone, Prepared
from originality.config import DEFAULT_PRESET, AnalysisConfig
from originality.parallel import (CANCELLED, FAILED, PASSED, Board, Settled, StalledError, Team, check_parallel,
                                  iter_parallel)
from originality.report import Report, TokenResult

ROOT = Path(__file__).resolve().parent.parent


def test_each_process_runs_every_size_th_length_ascending():
    assert [Team(r, 3).lengths(5) for r in range(3)] == [[1, 4], [2, 5], [3]]
    assert Team(0, 1).lengths(3) == [1, 2, 3] and Team(1, 2).owner(4) == 1
    with pytest.raises(ValueError, match="rank must be in 0..1"):
        Team(2, 2)


def prepared(max_tokens: int, **settings) -> Prepared:
    config = AnalysisConfig.preset("fast", max_tokens=max_tokens, threshold=0.5, **settings)
    return Prepared(Image.new("RGB", (8, 8)), config, {"world": "scripted"}, 0, ("{}",))


def result(m: int, passed: bool) -> TokenResult:
    return TokenResult(num_tokens=m, token=f"<s{m}>", embeddings=torch.full((m, 4), float(m)), losses=[1.0],
                       reconstructions=[], distances=[0.1 if passed else 0.9], edits=[], check_scores=[],
                       distance_passed=passed, check_passed=True)


class Script:
    """Scripted lengths: `passes` pass; `hold[m]` keeps length m yielding until it returns True (bounded);
    records which lengths started and which were closed before they ended."""

    def __init__(self, passes: set[int], hold: dict | None = None):
        self.passes, self.hold = passes, hold or {}
        self.started: set[int] = set()
        self.closed_early: set[int] = set()

    def run_length(self, m: int):
        self.started.add(m)
        done = False
        try:
            deadline = time.monotonic() + 20
            while m in self.hold and not self.hold[m]() and time.monotonic() < deadline:
                yield ("step", m)
                time.sleep(0.005)
            yield ("step", m)
            done = True
            yield LengthDone(result(m, m in self.passes))
        finally:
            if not done:
                self.closed_early.add(m)


def run_team(tmp_path: Path, script: Script, size: int, max_tokens: int, ranks=None, **kwargs) -> dict:
    """Run `size` processes as threads (or only `ranks`); returns {rank: events or the exception}."""
    barrier = threading.Barrier(len(ranks or range(size)))
    out: dict = {}

    def process(rank: int) -> None:
        try:
            out[rank] = list(iter_parallel(prepared(max_tokens), script.run_length, Team(rank, size),
                                           tmp_path / "shared", sync=barrier.wait, **kwargs))
        except Exception as err:  # noqa: BLE001 - the test looks at it
            out[rank] = err

    threads = [threading.Thread(target=process, args=(r,)) for r in ranks or range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def settled_states(board: Board, max_tokens: int) -> dict[int, str]:
    return {m: s.state for m in range(1, max_tokens + 1) if (s := board.settled(m))}


def test_a_pass_cancels_the_longer_lengths_never_the_shorter(tmp_path, monkeypatch):
    # stale files of a previous run of the same output: a pass of length 1 would cancel everything
    stale = Board(tmp_path / "shared")
    stale.clear()
    stale.settle(Settled(1, PASSED, 0), result(1, True))
    board = Board(tmp_path / "shared")
    monkeypatch.setattr(Board, "remove", lambda self: None)  # keep the files to look at
    # 3 processes, 5 lengths: 1 and 4 | 2 and 5 | 3. Length 2 passes once 3 is running; length 1 is
    # still running then and ends (fails) after 2 has passed: a longer pass never cancels it.
    script = Script({2, 4}, hold={1: lambda: (board.root / "m2.passed").is_file(), 2: lambda: 3 in script.started,
                                  3: lambda: False})
    out = run_team(tmp_path, script, 3, 5)
    assert all(isinstance(events, list) for events in out.values()), out
    report = out[0][-1].report
    assert isinstance(out[0][-1], Decision) and report.label == "2" and report.score == 2
    assert [r.num_tokens for r in report.results] == [1, 2] and [r.passed for r in report.results] == [False, True]
    assert not any(isinstance(e, Decision) for e in out[1] + out[2])  # only the main process decides
    assert settled_states(board, 5) == {1: FAILED, 2: PASSED, 3: CANCELLED, 4: CANCELLED, 5: CANCELLED}
    assert script.started == {1, 2, 3} and script.closed_early == {3}  # 3 closed mid-run; 4 and 5 never ran
    assert "passed while it ran" in board.settled(3).detail and "before it started" in board.settled(4).detail


def test_no_pass_runs_every_length_and_removes_the_shared_files(tmp_path):
    script = Script(set())
    out = run_team(tmp_path, script, 2, 3)
    report = out[0][-1].report
    assert report.label == "3+" and [r.num_tokens for r in report.results] == [1, 2, 3]
    assert [r.embeddings[0, 0].item() for r in report.results] == [1.0, 2.0, 3.0]  # each its own length's
    assert script.started == {1, 2, 3} and not script.closed_early
    assert not (tmp_path / "shared").exists()


def test_a_length_that_raises_fails_the_main_process_with_its_message(tmp_path):
    def run_length(m):
        if m == 2:
            raise RuntimeError("out of memory")
        yield LengthDone(result(m, False))

    script = Script(set())
    script.run_length = run_length
    out = run_team(tmp_path, script, 2, 3)
    assert isinstance(out[1], RuntimeError) and "out of memory" in str(out[1])
    assert isinstance(out[0], RuntimeError) and "token length 2 failed in process 1: RuntimeError: out of memory" \
        in str(out[0])


def test_a_silent_process_times_out_with_a_clear_error(tmp_path):
    out = run_team(tmp_path, Script(set()), 2, 3, ranks=[0], stall_timeout=0.3)  # process 1 never starts
    assert isinstance(out[0], StalledError) and "process 1 has reported nothing" in str(out[0])
    assert "token length 2" in str(out[0])


@pytest.mark.parametrize("settings, message", [({"token_init": "previous"}, "token_init 'previous'"),
                                               ({"token_init": "nested"}, "token_init 'nested'"),
                                               ({"seeds": 2}, "seeds 2")])
def test_settings_that_need_the_lengths_in_order_are_refused(tmp_path, settings, message):
    with pytest.raises(ValueError, match=message):
        next(iter_parallel(prepared(3, **settings), Script(set()).run_length, Team(0, 2), tmp_path,
                           sync=lambda: None))


SHAPES = ["assets/examples/shapes_common.png", "--model", "shapes", "--max-tokens", "3", "--steps", "2",
          "--batch-size", "2", "--reconstructions", "2", "--inference-steps", "2", "--device", "cpu", "--quiet",
          "--json"]


def run_cli(prefix: list[str], *argv: str) -> dict:
    """`python -m originality analyze ...` (after `prefix`, a launcher) with one thread per process: its JSON."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    out = subprocess.run([*prefix, "-m", "originality", "analyze", *SHAPES, *argv], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)  # one document: the other process printed nothing


@pytest.mark.slow
@pytest.mark.parametrize("threshold, label", [("0", "3+"), ("1", "1")])  # nothing passes; m = 1 passes
def test_two_cpu_processes_give_the_sequential_label_and_distances(tmp_path, threshold, label):
    """About 30 s on one core per case: a sequential run, then `accelerate launch` with two CPU processes."""
    sequential = run_cli([sys.executable], "--threshold", threshold)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(free_port())]
    (tmp_path / "report" / ".parallel-lengths").mkdir(parents=True)
    Board(tmp_path / "report" / ".parallel-lengths").settle(Settled(1, PASSED, 0), result(1, True))  # stale
    parallel = run_cli(launch, "--threshold", threshold, "--out", str(tmp_path / "report"))
    assert sequential["label"] == parallel["label"] == label
    means = [[r["mean_distance"] for r in run["results"]] for run in (sequential, parallel)]
    assert means[0] == means[1] and len(means[0]) == (1 if label == "1" else 3)
    assert Report.load(tmp_path / "report").label == label
    assert not (tmp_path / "report" / ".parallel-lengths").exists()


@pytest.mark.parametrize("argv, message", [
    ([], "splits the token lengths over them, and they share files under --out: give --out DIR"),
    (["--out", "{tmp}/r", "--token-init", "previous"], "use token_init 'domain' (--token-init domain)"),
    (["--out", "{tmp}/r"], "use token_init 'domain' (--token-init domain)"),  # the default preset's warm start
])
def test_launched_analyze_says_what_is_missing_before_loading_a_model(tmp_path, monkeypatch, capsys, argv, message):
    from originality import cli

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(cli, "_load", lambda *a, **k: pytest.fail("the model loaded"))
    code = cli.main(["analyze", str(ROOT / SHAPES[0]), *[a.format(tmp=tmp_path) for a in argv]])
    assert code == cli.EXIT_USAGE and message in capsys.readouterr().err


def test_settings_that_need_the_lengths_in_order_are_refused_with_the_way_out():
    """The default preset starts each length from the previous one's tokens and gives a close call a second opinion:
    a parallel run refuses it and names both flags that let it split the lengths; the same preset with token_init
    'domain' and no second opinion runs."""
    default = AnalysisConfig.preset(DEFAULT_PRESET)
    assert default.token_init == "previous" and default.second_opinion
    with pytest.raises(ValueError, match=r"--token-init domain\) and second_opinion false \(--second-opinion false"):
        check_parallel(default)
    with pytest.raises(ValueError, match="--second-opinion false"):
        check_parallel(default.replace(token_init="domain"))
    check_parallel(default.replace(token_init="domain", second_opinion=False))
    with pytest.raises(ValueError, match="seeds 3"):
        check_parallel(default.replace(token_init="domain", second_opinion=False, seeds=3))
