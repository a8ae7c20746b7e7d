"""The page in a real Chromium (as tests/test_browser.py): the time left in the status line while a run goes on,
every reconstruction of a length visible (20 of them; the 6th-8th of 8 once sat in a clipped second row), and "Your
runs" kept in the browser across a reload, opening a run through its link, cleared in one click.

With ORIGINALITY_SCREENSHOT_DIR set, the running and finished pages are saved there (else in the test's folder).
"""

from __future__ import annotations

import json
import re
import os
from pathlib import Path

import pytest
from conftest import serve_app
from test_browser import CHROMIUM_ARGS, EXAMPLE, VERDICT_JS, status_matches, wait_images_loaded

pytestmark = [pytest.mark.browser, pytest.mark.slow]
sync_api = pytest.importorskip("playwright.sync_api", reason="Python playwright is not installed")
if not Path("/usr/bin/chromium").exists():
    pytest.skip("/usr/bin/chromium is missing (apt-get install chromium)", allow_module_level=True)

# the public maximum of reconstructions (4 rows of 5: more than Gradio's gallery shows in 55% of a window 800 px
# high) and enough steps that the time left shows before the run ends
RECONSTRUCTIONS = 20
DEFAULTS = {"max_tokens": 2, "steps": 40, "batch_size": 2, "num_reconstructions": RECONSTRUCTIONS,
            "max_reconstructions": RECONSTRUCTIONS,  # no sequential extension: a length shows exactly this many
            "num_inference_steps": 2}


@pytest.fixture(scope="module")
def server(tiny_shapes_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("app-your-runs")
    env = {"ORIGINALITY_MODEL": os.environ.get("ORIGINALITY_BROWSER_MODEL") or str(tiny_shapes_model),
           "ORIGINALITY_DEFAULTS": json.dumps(DEFAULTS)}
    with serve_app(tmp, env) as url:
        yield {"url": url, "tmp": tmp}


def shots(server) -> Path:
    folder = Path(os.environ.get("ORIGINALITY_SCREENSHOT_DIR") or server["tmp"])
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def fully_visible(page, selector: str) -> list[bool]:
    """Per image in `selector`: whether its whole box lies inside the gallery's visible box (nothing clipped)."""
    return page.evaluate(
        """(sel) => { const g = document.querySelector(sel); const box = g.getBoundingClientRect();
            return [...g.querySelectorAll('.thumbnail-item img, .grid-wrap img')].map(im => {
              const r = im.getBoundingClientRect();
              let el = im.parentElement, ok = r.height > 0;
              while (ok && el && el !== g.parentElement) {  // every scrolling or clipping ancestor shows it all
                const s = getComputedStyle(el), c = el.getBoundingClientRect();
                if (s.overflowY !== 'visible' && (r.top < c.top - 1 || r.bottom > c.bottom + 1)) ok = false;
                el = el.parentElement; }
              return ok && r.top >= box.top - 1 && r.bottom <= box.bottom + 1; }); }""", selector)


def test_time_left_every_reconstruction_and_your_runs(server):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 800})
        page = context.new_page()
        page.goto(server["url"])
        page.wait_for_selector("#run", timeout=60_000)
        assert "No runs yet" in page.inner_text("#your-runs")
        page.get_by_text("shapes: unseen pair").click()
        page.wait_for_selector("#query-image img", timeout=30_000)
        page.click("#run")
        status_matches(page, r"m=\d: (step|generating).* left for m = \d", timeout=240_000)
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(shots(server) / "running.png"))
        print("status while running:", page.inner_text("#status"))
        page.wait_for_function(VERDICT_JS, timeout=600_000)
        assert "Done in" in page.inner_text("#status")

        # every reconstruction of m = 1 shows whole
        assert wait_images_loaded(page, "#recon-m1 img", RECONSTRUCTIONS) == RECONSTRUCTIONS
        visible = fully_visible(page, "#recon-m1")
        assert len(visible) == RECONSTRUCTIONS and all(visible), visible

        # the run joined "Your runs"; the list survives a reload and its link opens the run
        share = page.locator("#share textarea, #share input").first.input_value()
        run_id = share.split("?run=")[1]
        page.wait_for_selector(f"#your-runs a[href='?run={run_id}']", timeout=30_000)
        page.screenshot(path=str(shots(server) / "finished.png"), full_page=True)
        verdict = page.inner_text("#verdict")
        page.goto(server["url"])
        link = page.wait_for_selector(f"#your-runs a[href='?run={run_id}']", timeout=60_000)
        link.click()
        page.wait_for_function(VERDICT_JS, timeout=60_000)
        assert page.url.endswith(f"?run={run_id}") and page.inner_text("#verdict") == verdict
        assert "not recomputed" in page.inner_text("#status")

        # one click clears it, for good
        page.click("#clear-your-runs")
        page.wait_for_function("/No runs yet/.test(document.querySelector('#your-runs').innerText)", timeout=30_000)
        page.goto(server["url"])
        page.wait_for_selector("#your-runs", timeout=60_000)
        page.wait_for_timeout(2000)
        assert "No runs yet" in page.inner_text("#your-runs")
        browser.close()


def test_the_api_progress_says_the_time_left(server):
    import time

    from gradio_client import Client, handle_file

    client = Client(server["url"], verbose=False)
    job = client.submit(handle_file(str(EXAMPLE)), "shapes", "default", "", "fast", "{}", api_name="/analyze")
    descs = set()
    deadline = time.monotonic() + 600
    while not job.done() and time.monotonic() < deadline:
        for unit in job.status().progress_data or []:
            if unit.desc:
                descs.add(unit.desc)
        time.sleep(0.2)
    assert job.result()["run_id"]
    print("API progress:", sorted(descs)[:3])
    assert any(re.search(r"^m=1: step \d+/40.* left for m = 1", d) for d in descs), descs
