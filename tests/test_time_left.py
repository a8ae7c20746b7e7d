"""The time left where people read it (the page's status line, the CLI's progress bar, the API's progress) and
the page's "Your runs": handlers and helpers called directly, on scripted timings and a tiny shapes model."""

from __future__ import annotations

import io
import sys
from types import SimpleNamespace

import pytest
from test_app import EXAMPLE, PAGE, TINY, app, env, request  # noqa: F401 - the app's fixtures

from originality.analysis import CheckReady, DistancesReady, Generating, LengthDone, ReconstructionsReady, Started
from originality.app import views
from originality.cli import _Progress
from originality.config import AnalysisConfig
from originality.eta import Rates, RunTimer, describe
from originality.inversion import InversionStep

CONFIG = AnalysisConfig.preset("fast", steps=10, batch_size=2, num_reconstructions=4, num_edits=2,
                               num_inference_steps=5, max_tokens=3, threshold=0.3)
MODEL = {"name": "test", "world": "stable-diffusion", "device": "cuda:0"}
STORED = Rates(per_sample=1.0, per_image_step=1.0, per_length=10.0, source="test")


def scripted_length(m: int, t: float):
    """(event, arrival time) of one length as tests/test_eta.py scripts it: a first step 3 s in, 9 steps 0.5 s apart,
    three batches of two images 2 s each, a check of 1 s."""
    t += 3.0
    yield InversionStep(m, 1, 10, 0.5), t
    for step in range(2, 11):
        t += 0.5
        yield InversionStep(m, step, 10, 0.5), t
    for what, done, total in (("reconstructions", 2, 4), ("reconstructions", 4, 4)):
        t += 2.0
        yield Generating(m, what, done, total), t
    yield ReconstructionsReady(m, []), t
    yield DistancesReady(m, [0.2] * 4, 0.2, 0.0, True), t
    t += 2.0
    yield Generating(m, "edits", 2, 2), t
    t += 1.0
    yield CheckReady(m, [], [1.0, 1.0], False, "", "edits"), t
    yield LengthDone(SimpleNamespace(num_tokens=m, passed=False)), t


def test_the_status_line_says_the_time_left_from_the_events_times():
    view = views.RunView(timer=RunTimer(stored=STORED))
    view.apply(Started(None, CONFIG, MODEL), 0.0)
    for event, at in scripted_length(1, 0.0):
        view.apply(event, at)
    first_step = InversionStep(2, 1, 10, 0.5)
    view.apply(first_step, 18.0)
    line = views.status_line(view, first_step, 18.0)
    # the same arithmetic as tests/test_eta.py's calibration: 9.5 s left of m = 2, 15 s for m = 3
    assert line == ("m=2: step 1/10, loss 0.5000 · 18 s · about 10 s left for m = 2, at most about 25 s if it goes "
                    "on to m = 3")
    batch = Generating(2, "reconstructions", 2, 4)
    view.apply(batch, 30.0)
    assert views.status_line(view, batch, 30.0).endswith(" · " + describe(view.timer.estimate()))
    # a line between stages says no time (nothing measured changes there)
    assert "left" not in views.status_line(view, ReconstructionsReady(2, []), 31.0)


def test_the_cli_bar_shows_each_stage_and_the_time_left_on_a_scripted_clock():
    times = iter([0.0, *[at for _, at in scripted_length(1, 0.0)], 18.0, 18.5, 19.0, 19.5, 20.0])
    progress = _Progress(True, clock=lambda: next(times))
    progress.timer = RunTimer(stored=STORED)
    progress.observe(Started(None, CONFIG, MODEL))
    stages = []
    for event, _ in scripted_length(1, 0.0):
        progress.observe(event)
        if progress.bar is not None:
            stages.append((progress.bar.desc, progress.bar.total, progress.bar.postfix))
    assert [s[0] for s in dict.fromkeys(stages)][:1] == ["m=1 inversion"]
    assert ("m=1 reconstructions", 4) in {(d, t) for d, t, _ in stages}
    assert all("left=" in postfix and "(m=1)" in postfix for _, _, postfix in stages)
    assert progress.bar is None  # every stage's bar closed at its end
    # the next length's bar; a step number that goes back (another inversion of the length) starts a new bar
    for step in (1, 2):
        progress.observe(InversionStep(2, step, 10, 0.5))
    assert progress.bar.n == 2 and "left=10 s (m=2)" in progress.bar.postfix
    progress.observe(InversionStep(2, 1, 10, 0.5))
    assert progress.bar.n == 1
    progress.observe(Generating(2, "reconstructions", 2, 4))
    progress.observe(Generating(2, "reconstructions", 4, 8))  # more drawn while undecided: the bar grows
    assert progress.bar.total == 8 and progress.bar.n == 4
    progress.close()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("stderr, most_drawn", [(_Terminal(), None), (io.StringIO(), 3)])
def test_the_cli_bar_draws_every_step_on_a_terminal_and_seldom_into_a_log(stderr, most_drawn, monkeypatch):
    """A batch job's log (stderr a file or a pipe) keeps every redraw of the bar: there it is drawn every
    `LOGGED_BAR_INTERVAL` seconds, not at every step."""
    monkeypatch.setattr(sys, "stderr", stderr)
    progress = _Progress(True, clock=iter(range(1000)).__next__)
    progress.timer = RunTimer(stored=STORED)
    progress.observe(Started(None, CONFIG, MODEL))
    for step in range(1, 151):
        progress.observe(InversionStep(1, step, 150, 0.5))
    drawn = stderr.getvalue().count("m=1 inversion")
    if most_drawn is None:
        assert drawn >= 150
    else:
        assert 1 <= drawn <= most_drawn
    assert "loss=0.5000" in stderr.getvalue() and "left=" in stderr.getvalue()  # even drawn once, it says both


def test_the_api_reports_its_progress_with_the_time_left(app, env):
    calls = []

    def progress(count, desc=None, unit="steps"):
        calls.append((count, desc))

    out = list(app.analyze_api(str(EXAMPLE), "shapes", "default", "", "fast",
                               '{"max_tokens": 2, "steps": 4, "batch_size": 2, "num_reconstructions": 2, '
                               '"num_inference_steps": 2}', request(), progress=progress))[-1]
    assert out["run_id"]
    descs = [d for _, d in calls]
    assert descs[0].startswith("Running on ")
    steps = [(c, d) for c, d in calls if d.startswith("m=1: step")]
    assert steps and steps[-1][0] == (4, 4)  # the count of the event the line is about
    assert any("left for m = 1" in d for d in descs)  # the shapes world's stored rates, then measured ones
    if out["summary"]["label"] != "1":  # a second length ran: the first measured it
        assert any("left for m = 2" in d and "first guess" not in d for d in descs)


# --------------------------------------------------------------------------- "Your runs"

def entry(run_id: str, verdict: str = "Original: needs 2 tokens") -> dict:
    return {"id": run_id, "verdict": verdict, "world": "shapes", "preset": "fast", "created": "2026-05-01T03:14:15+00:00",
            "image": "cat.png"}


def test_a_finished_run_joins_the_visitors_list_and_its_link_opens_it(app, env):
    older = entry("A" * 22)
    updates = list(app.run_analysis(str(EXAMPLE), "shapes", "default", "", "fast", TINY, request=request(),
                                    your_runs=[older]))
    final = updates[-1]
    runs = final[app.ui.your_runs]
    share = final[app.ui.share]
    assert runs[1] == older and len(runs) == 2
    assert share == PAGE + "?run=" + runs[0]["id"]
    assert runs[0]["image"] == EXAMPLE.name and runs[0]["world"] == "shapes" and runs[0]["preset"] == "fast"
    assert runs[0]["verdict"] in final[app.ui.verdict]
    html = views.your_runs_html(runs)
    assert f'href="?run={runs[0]["id"]}"' in html and html.index(runs[0]["id"]) < html.index(older["id"])
    opened = app.show_run(runs[0]["id"], request())  # what the link opens
    assert opened[app.ui.verdict] == final[app.ui.verdict]
    # nothing else joins the list: a refused run, and the API's runs (not the visitor's page)
    with pytest.warns(UserWarning):
        refused = list(app.run_analysis(None, "shapes", "default", "", "fast", TINY, request=request(), your_runs=runs))
    assert all(app.ui.your_runs not in u for u in refused)


def test_your_runs_list_is_newest_first_without_repeats_and_bounded():
    runs = []
    for i in range(views.YOUR_RUNS_KEEP + 5):
        runs = views.remember_run(runs, entry(f"run{i:020d}"))
    assert len(runs) == views.YOUR_RUNS_KEEP and runs[0]["id"] == f"run{views.YOUR_RUNS_KEEP + 4:020d}"
    again = views.remember_run(runs, entry(runs[3]["id"], "Familiar: needs 1 token"))
    assert [r["id"] for r in again].count(runs[3]["id"]) == 1 and again[0]["verdict"].startswith("Familiar")
    assert views.remember_run("not a list", entry("B" * 22)) == [entry("B" * 22)]


def test_your_runs_html_treats_the_browsers_list_as_untrusted():
    hostile = [entry("C" * 22, "<img src=x onerror=alert(1)>"), {"id": "../../etc/passwd", "verdict": "x"},
               {"id": 'D" onclick="alert(1)' + "D" * 20}, "text", {"id": "E" * 22, "image": "<b>me</b>"}]
    html = views.your_runs_html(hostile)
    assert html.count("<li>") == 2 and "<img" not in html and "<b>" not in html and "onclick" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "&lt;b&gt;me&lt;/b&gt;" in html
    assert "2026-05-01 03:14 UTC" in html
    assert views.your_runs_html([]) == views.your_runs_html(None) and views.YOUR_RUNS_EMPTY in views.your_runs_html([])


def test_the_your_runs_list_lives_in_the_browser_and_clears_in_one_click(app):
    import gradio as gr

    state = app.ui.your_runs
    assert isinstance(state, gr.BrowserState) and state.default_value == []
    # a fixed key: a server restart must not make every visitor's list unreadable
    assert (state.storage_key, state.secret) == (app.YOUR_RUNS_KEY, app.YOUR_RUNS_CIPHER)
    config = app.demo.get_config_file()
    by_id = {c["id"]: c for c in config["components"]}
    clear = next(c for c in config["components"] if c.get("props", {}).get("elem_id") == "clear-your-runs")
    deps = [d for d in config["dependencies"] if any(t[0] == clear["id"] for t in d["targets"])]
    assert len(deps) == 1 and deps[0]["outputs"] == [state._id] and not deps[0]["inputs"]
    assert app.demo.fns[deps[0]["id"]].fn() == []  # the click empties it
    # the list is drawn from the browser's value when the page loads and whenever it changes
    draws = [d for d in config["dependencies"] if d["outputs"] == [app.ui.your_runs_list._id]]
    assert len(draws) == 1 and draws[0]["inputs"] == [state._id]
    assert {t[1] for t in draws[0]["targets"]} == {"load", "change"}
    assert by_id[state._id]["type"] == "browserstate"
