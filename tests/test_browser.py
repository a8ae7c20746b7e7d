"""The launched app in a real Chromium (Debian's /usr/bin/chromium driven by Python playwright),
and its API through gradio_client.

Installs nothing: skipped when Chromium or playwright is missing. The app runs as a subprocess
(`python app.py`) on 127.0.0.1 with a tiny random shapes-world model (or the model in
$ORIGINALITY_BROWSER_MODEL, e.g. assets/shapes-model) and ORIGINALITY_DEFAULTS that make a
run take seconds. With ORIGINALITY_SCREENSHOT=1 the finished page is saved to
assets/screenshot.png (otherwise to the test's temp folder).
"""

from __future__ import annotations

import json
import os
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from conftest import serve_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
EXAMPLE = ROOT / "assets" / "examples" / "shapes_common.png"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
TINY_DEFAULTS = {"max_tokens": 2, "steps": 4, "batch_size": 2, "num_reconstructions": 3, "num_inference_steps": 2,
                 "num_edits": 2}
VERDICT_JS = "document.querySelector('#verdict') && /needs/.test(document.querySelector('#verdict').innerText)"

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="Python playwright is not installed")


@pytest.fixture(scope="module")
def server(tiny_shapes_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("app-server")
    env = {"ORIGINALITY_MODEL": os.environ.get("ORIGINALITY_BROWSER_MODEL") or str(tiny_shapes_model),
           "ORIGINALITY_DEFAULTS": json.dumps(TINY_DEFAULTS)}
    with serve_app(tmp, env) as url:
        yield {"url": url, "tmp": tmp, "data": tmp / "data"}


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


def wait_images_loaded(page, selector: str, minimum: int, timeout: float = 60_000) -> int:
    """Waits until `selector` matches at least `minimum` images, every one loaded; returns how many match.
    Gallery images load lazily (loading="lazy"): each poll scrolls the first one not yet loaded into view, so an
    image far from the viewport (a fifth row, a long page) loads too. A timeout says how far it got."""
    page.locator(selector).first.scroll_into_view_if_needed(timeout=timeout)
    try:
        page.wait_for_function(
            "([sel, n]) => { const ims = [...document.querySelectorAll(sel)];"
            " const waiting = ims.find(im => !(im.complete && im.naturalWidth > 0));"
            " if (waiting) waiting.scrollIntoView({block: 'center'});"
            " return ims.length >= n && !waiting; }",
            arg=[selector, minimum], timeout=timeout, polling=500)
    except Exception as err:
        state = page.evaluate("(sel) => [...document.querySelectorAll(sel)].map(im => [im.complete, im.naturalWidth,"
                              " (im.currentSrc || im.src || '').slice(-60)])", selector)
        raise AssertionError(f"{selector}: {len(state)} images (want >= {minimum}), not loaded: "
                             f"{[s for s in state if not (s[0] and s[1])]}") from err
    return page.locator(selector).count()


def test_run_in_the_browser_then_open_the_share_link(server, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(server["url"])
    page.wait_for_selector("#run", timeout=60_000)
    assert "Picked automatically" in page.inner_text("#world-note")

    page.get_by_text("shapes: common pair").click()  # an example fills the image (and the world)
    page.wait_for_selector("#query-image img", timeout=30_000)
    started = time.monotonic()
    page.click("#run")
    page.wait_for_function(VERDICT_JS, timeout=240_000)
    took = time.monotonic() - started
    verdict = page.inner_text("#verdict")
    assert "tokens" in verdict and ("Original" in verdict or "Familiar" in verdict)
    assert "Done in" in page.inner_text("#status")

    # galleries hold the reconstructions of every length tried, the curve is drawn
    assert wait_images_loaded(page, "#recon-m1 img", 3) >= 3
    assert page.locator("#row-m1").is_visible()
    assert wait_images_loaded(page, "#curve img", 1) == 1
    # clicking a reconstruction puts it in the comparison slider
    page.locator("#recon-m1 .thumbnail-item").nth(1).click()
    page.wait_for_function("document.querySelector('#compare') && "
                           "/reconstruction #2 \\(m = 1\\)/.test(document.querySelector('#compare').innerText)",
                           timeout=30_000)
    share = page.locator("#share textarea, #share input").first.input_value()
    assert share.startswith(server["url"] + "?run=")
    assert "report.json" in page.inner_text("#downloads")
    open_downloaded_report(page, server, browser, verdict)

    shot = ROOT / "assets" / "screenshot.png" if os.environ.get("ORIGINALITY_SCREENSHOT") == "1" else \
        server["tmp"] / "screenshot.png"
    page.keyboard.press("Escape")  # leave the gallery preview before the screenshot
    page.screenshot(path=str(shot), full_page=True)
    print(f"run took {took:.1f} s in the browser; screenshot: {shot}")

    # the share link re-opens the same result in a fresh page, without running anything
    other = browser.new_page(viewport={"width": 1400, "height": 1000})
    other.goto(share)
    other.wait_for_function(VERDICT_JS, timeout=60_000)
    assert other.inner_text("#verdict") == verdict
    assert "not recomputed" in other.inner_text("#status")
    assert wait_images_loaded(other, "#recon-m1 img", 3) >= 3
    other.close()
    page.close()


def open_downloaded_report(page, server, browser, verdict: str) -> None:
    """Download report.html through its link on the page, open it in the browser: every image shows, and
    it says what the page says."""
    link = page.locator("#downloads a[href*='report.html']").first
    href = urllib.parse.urljoin(server["url"], link.get_attribute("href"))
    path = server["tmp"] / "downloaded-report.html"
    with urllib.request.urlopen(href, timeout=30) as response:
        path.write_bytes(response.read())
    report = browser.new_page(viewport={"width": 1000, "height": 900})
    report.goto(path.as_uri())
    assert report.title().startswith("Originality report: score")
    text = report.inner_text("body")
    assert "Score:" in text and "not a legal opinion" in text and "Reproducibility record" in text
    assert verdict.splitlines()[0].split(":")[0].strip("# ") in text  # "Original" or "Familiar", as on the page
    n = report.locator("img").count()
    assert n >= 1 + 4 and report.evaluate("[...document.images].every(im => im.complete && im.naturalWidth > 0)")
    report.close()


def status_matches(page, pattern: str, timeout: float = 60_000) -> None:
    page.wait_for_function(
        "(re) => { const s = document.querySelector('#status'); return s && new RegExp(re).test(s.innerText); }",
        arg=pattern, timeout=timeout)


def page_with_steps(server, browser, steps: int, batch_size: int | None = None):
    """A page with the example uploaded and `steps` inversion steps (and `batch_size`) under Advanced."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(server["url"])
    page.wait_for_selector("#run", timeout=60_000)
    page.locator("#query-image input[type=file]").set_input_files(str(EXAMPLE))
    page.wait_for_selector("#query-image img", timeout=30_000)
    page.click("#advanced")
    page.locator("#adv-steps textarea, #adv-steps input").first.fill(str(steps))
    if batch_size:
        page.locator("#adv-batch_size textarea, #adv-batch_size input").first.fill(str(batch_size))
    return page


RUNNING = r"Running on |m=\d+: "  # a line of a run in progress (views.status_line), until it ends or is cancelled


def wait_status(server, pages: dict, name: str, pattern: str, timeout: float) -> None:
    """Wait until the status line of `pages[name]` matches `pattern`; on failure say what every page's status line
    WAS, and show the end of the server's log."""
    try:
        status_matches(pages[name], pattern, timeout=timeout)
    except Exception as err:  # noqa: BLE001 - a timeout: report the state instead
        states = "; ".join(f"{key} page's status: {page.inner_text('#status')!r}" for key, page in pages.items())
        log = (server["tmp"] / "server.log").read_text()[-3000:]
        pytest.fail(f"{name} page: no status matching {pattern!r} within {timeout / 1000:.0f} s "
                    f"({type(err).__name__}); {states}; server log:\n{log}")


def test_queue_position_then_cancel_frees_the_model(server, browser):
    """Two visitors: the second waits in Gradio's queue (its position shown); Cancel stops the first
    at once and the second starts, so the cancelled run released the model.

    Each wait is on a state that lasts until the test itself ends it: both runs are far longer than the test
    (2000 steps x batch 20 per length, the public maxima, on the tiny model), so a run in progress shows one of its
    progress lines (`RUNNING`) until it is cancelled, and the second run waits in the queue until the first is
    cancelled. (The test once waited for the exact line "m=1: step N/400": 400 steps of the tiny model could end
    before the poll saw them, and the line was gone for good.)"""
    first, second = pages = [page_with_steps(server, browser, 2000, batch_size=20) for _ in range(2)]
    named = {"first": first, "second": second}
    first.click("#run")
    wait_status(server, named, "first", RUNNING, timeout=240_000)  # the model may load first
    second.click("#run")
    try:
        second.wait_for_function("/queue: 1\\/1/.test(document.body.innerText)", timeout=60_000)
    except Exception as err:  # noqa: BLE001
        pytest.fail(f"the second run was not shown at queue position 1/1 ({type(err).__name__}); first page's "
                    f"status: {first.inner_text('#status')!r}; second's: {second.inner_text('#status')!r}")
    assert "Cancelled" not in first.inner_text("#status")
    first.click("#cancel")
    wait_status(server, named, "first", "Cancelled", timeout=30_000)
    # the second run starts only once the cancelled one has released the model
    wait_status(server, named, "second", RUNNING, timeout=240_000)
    second.click("#cancel")
    wait_status(server, named, "second", "Cancelled", timeout=30_000)
    for page in pages:
        page.close()


def test_bad_share_link_shows_a_message(server, browser):
    page = browser.new_page()
    page.goto(server["url"] + "?run=../../etc/passwd")
    page.wait_for_function("document.querySelector('#status') && "
                           "/Could not open the shared run/.test(document.querySelector('#status').innerText)",
                           timeout=60_000)
    assert "not a run id" in page.inner_text("#status")
    assert "Traceback" not in page.content()
    page.close()


def test_gradio_client_analyze_and_load_run(server):
    from gradio_client import Client, handle_file

    client = Client(server["url"], verbose=False)
    result = client.predict(handle_file(str(EXAMPLE)), "shapes", "default", "", "fast", "{}", api_name="/analyze")
    summary = result["summary"]
    assert summary["label"] in ("1", "2", "2+") and summary["max_tokens"] == TINY_DEFAULTS["max_tokens"]
    assert summary["verdict"] and result["share_url"].endswith("?run=" + result["run_id"])
    assert (server["data"] / "runs" / result["run_id"] / "report.json").is_file()
    loaded = client.predict(result["run_id"], api_name="/load_run")
    assert loaded["summary"]["verdict"] == summary["verdict"]
    with pytest.raises(Exception, match="not a run id"):
        client.predict("../../etc", api_name="/load_run")


# --------------------------------------------------------------------------- a public Space under hostile use

ONE = {"max_tokens": 1, "steps": 1, "batch_size": 1, "num_reconstructions": 1, "num_inference_steps": 1}
LONG = {"max_tokens": 1, "steps": 2000, "batch_size": 2, "num_reconstructions": 2, "num_inference_steps": 2}
SMALL = {"max_tokens": 2, "steps": 3, "batch_size": 2, "num_reconstructions": 2, "num_inference_steps": 2}


@pytest.mark.parametrize("bad", ["[log in again](https://evil.example/login) <h1>X</h1>",
                                 "<script>window.__xss = 1</script><img src=x onerror='window.__xss = 2'>"])
def test_a_share_link_cannot_inject_markup(server, browser, bad):
    page = browser.new_page()
    page.goto(server["url"] + "?run=" + urllib.parse.quote(bad))
    status_matches(page, "Could not open the shared run")
    time.sleep(1)  # the warning popup is up too
    status = page.inner_text("#status")
    assert repr(bad) in status  # shown as typed, as text
    assert page.locator("a[href*='evil.example']").count() == 0 and page.locator("h1:text-is('X')").count() == 0
    assert page.locator("#status script, #status img, #status h1").count() == 0
    assert page.evaluate("window.__xss") is None
    page.close()


def _client(server):
    from gradio_client import Client

    return Client(server["url"], verbose=False)


def test_bad_files_get_the_engines_message_through_the_api_and_the_page(server, browser, tmp_path):
    from gradio_client import handle_file
    from hostile_files import bad_files

    client = _client(server)
    files = bad_files(tmp_path)
    for name, (path, message) in files.items():
        with pytest.raises(Exception) as info:
            client.predict(handle_file(str(path)), "shapes", "default", "", "fast", json.dumps(ONE),
                           api_name="/analyze")
        assert message in str(info.value) and "upstream Gradio app" not in str(info.value), name
    page = browser.new_page()
    page.goto(server["url"])
    page.wait_for_selector("#run", timeout=60_000)
    page.locator("#query-image input[type=file]").set_input_files(str(files["text"][0]))
    time.sleep(2)
    page.click("#run")
    try:
        status_matches(page, "⚠️")
    finally:
        print("status after a text file named .png:", page.inner_text("#status"))
    assert "an image Pillow can read (text.png)" in page.inner_text("#status")  # the file's name, no server path
    page.close()


def test_odd_images_through_the_api_are_scored_as_the_cli_loads_them(server, tmp_path):
    import numpy as np
    from gradio_client import handle_file
    from hostile_files import odd_files
    from PIL import Image

    from originality.images import load_image, prepare_image

    client = _client(server)
    # grey copies are not shapes-world images: the world check is off, the input path is under test
    settings = json.dumps({**ONE, "world_check": "off"})
    for name, path in odd_files(tmp_path).items():
        out = client.predict(handle_file(str(path)), "shapes", "default", "", "fast", settings, api_name="/analyze")
        stored = np.asarray(Image.open(server["data"] / "runs" / out["run_id"] / "query.png").convert("RGB"))
        assert np.array_equal(stored, np.asarray(prepare_image(load_image(str(path)), 64))), name


def _fresh_summary(model_path) -> dict:
    """The SMALL run of EXAMPLE computed here, in a process that never ran anything cancelled."""
    from originality import AnalysisConfig, analyze
    from originality.models import load_model

    config = AnalysisConfig.from_dict({**TINY_DEFAULTS, **SMALL}, base=AnalysisConfig.preset("fast"))
    return analyze(str(EXAMPLE), config, load_model(str(model_path))).summary()


def _same_result(a: dict, b: dict) -> bool:
    keys = ("distances", "losses", "check_scores", "inversion_seed")
    return (a["label"], a["config"]) == (b["label"], b["config"]) and \
        [[r[k] for k in keys] for r in a["results"]] == [[r[k] for k in keys] for r in b["results"]]


def test_cancel_through_the_api_frees_the_worker_at_once(server, tiny_shapes_model):
    from gradio_client import handle_file

    client = _client(server)
    job = client.submit(handle_file(str(EXAMPLE)), "shapes", "default", "", "fast", json.dumps(LONG),
                        api_name="/analyze")
    time.sleep(6)  # running: 2000 inversion steps take minutes here
    assert not job.done()
    job.cancel()
    started = time.monotonic()
    out = client.predict(handle_file(str(EXAMPLE)), "shapes", "default", "", "fast", json.dumps(SMALL),
                         api_name="/analyze")
    waited = time.monotonic() - started - out["summary"]["total_seconds"]
    print(f"after job.cancel(): the next run started within {waited:.1f} s")
    assert waited < 10
    assert _same_result(out["summary"], _fresh_summary(tiny_shapes_model))


def test_closing_the_page_stops_its_run(server, browser, tiny_shapes_model):
    # batch 20: the status line changes only every 100 steps (tens of seconds here), so the run must stop
    # between status updates, not at the next one
    page = page_with_steps(server, browser, 2000, batch_size=20)
    page.click("#run")
    # the first status update waits for 100 steps: on a loaded 2-core machine that can take minutes (on a timeout,
    # say what the page showed and what the server logged: it timed out once, in session 30's third CI run)
    wait_status(server, {"closing": page}, "closing", r"m=1: step \d+/2000", timeout=240_000)
    page.close()  # the visitor leaves
    started = time.monotonic()
    from gradio_client import handle_file

    out = _client(server).predict(handle_file(str(EXAMPLE)), "shapes", "default", "", "fast", json.dumps(SMALL),
                                  api_name="/analyze")
    waited = time.monotonic() - started - out["summary"]["total_seconds"]
    print(f"after closing the page: the next run started within {waited:.1f} s")
    assert waited < 10
    assert _same_result(out["summary"], _fresh_summary(tiny_shapes_model))
