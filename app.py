"""The web app: upload an image, watch the progressive analysis, share the result.

    python app.py                      # http://0.0.0.0:7860 (also what Hugging Face Spaces runs)

Layout and wiring only. The run is `originality.iter_analyze` with one `originality.app.zerogpu` call per token length;
what the page shows comes from `originality.app.views`, the settings from the schema (`originality.config`), the worlds
from `originality.worlds`, downloads from the run store. No model is loaded at import; handlers are plain functions
that tests call directly. Environment variables: the README's table (ORIGINALITY_MCP=1 also serves an MCP tool).
API (gradio_client): "/analyze" (image, world, domain, custom word, preset, JSON settings[, reference files])
-> {"run_id", "share_url", "summary"}; "/load_run" (run id) -> {"run_id", "summary"}.
"""

import contextlib
import html
import logging
import os
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import gradio as gr

from originality import (AnalysisConfig, CheckReady, Decision, DeadlineExceeded, DistancesReady, ReconstructionsReady,
                         Report, Started, iter_analyze, load_references)
from originality.config import DEFAULT_PRESET, PRESETS, advanced_settings
from originality.images import check_file_size
from originality.app.store import InvalidRunId, RunNotFound, default_store
from originality.app.views import (CSS, FILE_MAX_AGE_S, FILE_SWEEP_EVERY_S, INTRO, MAX_REFERENCES, RunView, best_pair,
                                   curve_figure, domain_choices, domain_fields, edit_items, examples_table, form_config,
                                   form_values, plain, progress_count, recon_items, remember_run, row_header, sentence,
                                   setting_placeholder, setting_text, share_url, similarity_pair, slider_pair,
                                   status_line, toast, uploaded_file, verdict_markdown, world_choices, your_run,
                                   your_runs_html)
from originality.app import startup, zerogpu
from originality.worlds import default_world, get_world, world_model_id
from originality.app.environment import env_bytes, env_int, server_address

logger = logging.getLogger("originality.app")

ROOT = Path(__file__).resolve().parent
EXAMPLES_DIR = ROOT / "assets" / "examples"
ADVANCED = advanced_settings()  # the settings under "Advanced", from the schema
ADVANCED_NAMES = [s.name for s in ADVANCED]
MAX_ROWS = int(next(s.public_max for s in ADVANCED if s.name == "max_tokens"))  # a row per token length allowed
# Download files are assembled here (Gradio serves only files from the temp dir, cwd or allowed paths);
# they are copies rebuilt on demand from the run store, so only the newest few are kept.
DOWNLOAD_DIR = Path(tempfile.gettempdir()) / "originality-downloads"
DOWNLOAD_KEEP = 32
UPLOAD_LIMIT = env_bytes("ORIGINALITY_MAX_UPLOAD", "20mb")  # refused by the app with its message; Gradio's own
UPLOAD_CEILING = 4 * UPLOAD_LIMIT  # limit (its message) only stops larger uploads, so disk use stays bounded
YIELD_EVERY_S = 0.5  # runs (the API's too) yield at least this often: Cancel, job.cancel(), a lost client stop them
# "Your runs" lives in the visitor's localStorage (gr.BrowserState). Gradio gives the page this key to encrypt it
# there, so it is no secret; it is fixed because Gradio's default, a random key per server start, would make every
# restart of the server forget every visitor's list.
YOUR_RUNS_KEY, YOUR_RUNS_CIPHER = "originality-your-runs", "originality-your-runs-v1"


def parse_defaults(raw: str | None) -> dict[str, Any]:
    """ORIGINALITY_DEFAULTS: a JSON object of AnalysisConfig fields on top of the chosen preset, checked against the
    public limits (a value above a setting's public maximum is refused); blank: none."""
    return AnalysisConfig.from_json(raw, where="ORIGINALITY_DEFAULTS", public=True)


DEFAULTS: dict[str, Any] = parse_defaults(os.environ.get("ORIGINALITY_DEFAULTS"))


def build_config(preset: str, domain: str | None, custom_word: str | None, values: dict | str | None) -> AnalysisConfig:
    """The form's settings (or the API's JSON object) on top of ORIGINALITY_DEFAULTS, within the public limits
    (`views.form_config`); a bad value is refused with its message (gr.Error)."""
    try:
        values = AnalysisConfig.from_json(values, where="settings") if isinstance(values, str) else values
        return form_config(preset, domain, custom_word, values or {}, DEFAULTS)
    except ValueError as err:
        raise refused(str(err)) from err


def refused(message: str) -> gr.Error:
    """A message for people as a gr.Error (its popup renders HTML: escaped)."""
    return gr.Error(toast(sentence(message)), print_exception=False)


def analysis_events(image: Any, world: str, config: AnalysisConfig, references: list | None = None,
                    timeout: float | None = None) -> Iterator[Any]:
    """`iter_analyze`'s events for a run of `world` (and its `references`, files), one `zerogpu.engine_length` call
    per token length, with this server's time limit and upload limit; errors are messages for people (gr.Error)."""
    timeout = float(env_int("ORIGINALITY_RUN_TIMEOUT", 900)) if timeout is None else timeout
    try:
        spec = get_world(world)
        model_id = world_model_id(spec)
        spec.check_available(model_id)
        check_file_size(image, UPLOAD_LIMIT)
        refs = load_references([uploaded_file(r) for r in references or []], config, spec, max_bytes=UPLOAD_LIMIT)
        events = iter_analyze(image, config, references=refs, runner=zerogpu.ZeroGPURunner(model_id, spec),
                              deadline=time.monotonic() + timeout)
        yield from events
    except DeadlineExceeded as err:
        raise refused(f"Stopped: the run took longer than the {timeout:.0f} s limit of this server. "
                      "Try the fast preset, fewer tokens or fewer steps.") from err
    except ValueError as err:  # ImageInputError and bad settings: the message is for people (the file's name only)
        raise refused(str(err).replace(str(image), os.path.basename(str(image)))) from err
    except gr.Error:
        raise
    except Exception as err:  # noqa: BLE001 - show a message, keep the traceback in the log
        logger.exception("analysis failed")
        raise gr.Error(toast(f"The analysis failed ({type(err).__name__}: {err}).")) from err


def download_files(run_id: str) -> list[str]:  # report.json, report.html, embeddings, zip: RunStore.export
    return [str(p) for p in default_store().export(run_id, DOWNLOAD_DIR, keep=DOWNLOAD_KEEP)]


# --------------------------------------------------------------------------- the page's updates


class UI(SimpleNamespace):
    """The page's components, filled in by `build_demo` (per token length: rows, row_md, recon, edit_col, edits)."""

    @property
    def settings(self) -> list:
        return [self.image, self.references, self.world, self.domain, self.custom_word, self.preset, *self.advanced]

    @property
    def outputs(self) -> list:
        return [self.status, self.verdict, self.curve, self.slider, self.share, self.files, self.record, self.images,
                self.similarity, *self.rows, *self.row_md, *self.recon, *self.edit_col, *self.edits]


ui = UI()


def _row_updates(view: RunView, m: int | None) -> dict:
    if m is None or not 1 <= m <= MAX_ROWS:
        return {}
    lv, i = view.lengths[m], m - 1
    return {ui.rows[i]: gr.Column(visible=True), ui.row_md[i]: row_header(view, lv),
            ui.recon[i]: recon_items(view, lv), ui.edit_col[i]: gr.Column(visible=bool(lv.edits)),
            ui.edits[i]: edit_items(view, lv)}


def _reset_updates(status: str) -> dict:
    updates = {ui.status: status, ui.verdict: "", ui.curve: None, ui.slider: None, ui.share: "", ui.files: None,
               ui.record: None, ui.images: None, ui.similarity: gr.Gallery(visible=False)}
    for i in range(MAX_ROWS):
        updates.update({ui.rows[i]: gr.Column(visible=False), ui.row_md[i]: "", ui.recon[i]: [],
                        ui.edit_col[i]: gr.Column(visible=False), ui.edits[i]: []})
    return updates


def _final_updates(view: RunView, run_id: str | None, request: gr.Request | None, status: str) -> dict:
    updates = {ui.status: status, ui.verdict: verdict_markdown(view.report), ui.curve: curve_figure(view),
               ui.slider: best_pair(view), ui.images: view.images(), ui.share: share_url(request, run_id) if run_id
               else "", ui.files: download_files(run_id) if run_id else None, ui.record: view.report.record or None,
               ui.similarity: gr.Gallery(value=(pair := similarity_pair(view.report)), visible=pair is not None)}
    for m in view.lengths:
        updates.update(_row_updates(view, m))
    return updates


def _event_updates(view: RunView, event: Any, elapsed: float) -> dict:
    """What changes on the page after an engine event (already applied to `view`)."""
    m = view.apply(event, elapsed)
    updates = _row_updates(view, m)
    line = status_line(view, event, elapsed)
    if line is not None:
        updates[ui.status] = line
    if isinstance(event, (Started, DistancesReady)):
        updates[ui.curve] = curve_figure(view)
    if isinstance(event, (Started, ReconstructionsReady, CheckReady)):
        updates[ui.images] = view.images()
    return updates


def run_analysis(image, world, domain, custom_word, preset, settings: dict | None = None,
                 request: gr.Request = None, references: list | None = None,
                 your_runs: list | None = None) -> Iterator[dict]:
    """The Run button: stream the analysis into the page, store the result, show the share link.

    `settings`: the Advanced fields by AnalysisConfig name (None or blank: preset / world default); `references`;
    `your_runs`: the visitor's list of their runs (from their browser), which a stored run joins.
    Yields at least every YIELD_EVERY_S (Gradio closes a cancelled or disconnected run at a yield); a refusal
    or failure ends the run with its message in the status line and a warning popup.
    """
    started = last = time.monotonic()
    view = RunView()
    try:
        if image is None:
            raise refused("Upload an image first (or click one of the examples).")
        config = build_config(preset, domain, custom_word, settings)
        yield _reset_updates("Loading the model…")
        # closed explicitly: a cancelled run frees the model now, not whenever the generator is collected
        with contextlib.closing(analysis_events(image, world, config, references)) as events:
            for event in events:
                updates = _event_updates(view, event, time.monotonic() - started)
                if isinstance(event, Decision):
                    run_id, note = None, ""
                    try:
                        run_id = default_store().save(event.report, preset=preset)
                    except Exception as err:  # noqa: BLE001 - the result is still shown
                        logger.exception("could not store the run")
                        note = f" It could not be stored for sharing ({type(err).__name__})."
                    updates = _final_updates(view, run_id, request, f"Done in {time.monotonic() - started:.0f} s.{note}")
                    if run_id:
                        name = os.path.basename(str(image)) if isinstance(image, (str, os.PathLike)) else None
                        updates[ui.your_runs] = remember_run(your_runs, your_run(run_id, event.report, preset, name))
                if updates or time.monotonic() - last > YIELD_EVERY_S:
                    last = time.monotonic()
                    yield updates or {ui.status: gr.skip()}
    except gr.Error as err:  # a popup, and the status line says it (an error event would cover it with "Error")
        gr.Warning(err.message)
        yield {ui.status: f"⚠️ {plain(html.unescape(err.message))}"}


def _on_run(data: dict, request: gr.Request):
    """Gradio's Run event: the form as {component: value}, passed on to `run_analysis`."""
    settings = {name: data[comp] for name, comp in zip(ADVANCED_NAMES, ui.advanced)}
    form = (data[ui.world], data[ui.domain], data[ui.custom_word], data[ui.preset])
    yield from run_analysis(uploaded_file(data[ui.image]), *form, settings, request, data[ui.references],
                            data[ui.your_runs])


def _settings_updates(report: Report, preset: str | None) -> dict:
    """The run's settings back into the form."""
    values = form_values(report, preset, ADVANCED_NAMES)
    updates = {getattr(ui, key): values[key] for key in ("image", "world", "domain", "custom_word", "preset")}
    updates.update(zip(ui.advanced, (values[name] for name in ADVANCED_NAMES)))
    return updates


def show_run(run_id: str, request: gr.Request | None = None) -> dict:
    """Open a stored run (no recomputation). A bad id gives a message in the page, not an error."""
    store = default_store()
    try:
        report = store.load(run_id)
    except (InvalidRunId, RunNotFound) as err:
        message = f"Could not open the shared run: {err}"
        gr.Warning(toast(message))
        return {ui.status: f"⚠️ {plain(message)}"}
    view = RunView.from_report(report)
    info = store.info(run_id) or {}
    updates = _reset_updates("")
    updates.update(_final_updates(view, run_id, request, f"Stored run from {report.created or 'earlier'} "
                                                         "(not recomputed)."))
    updates.update(_settings_updates(report, info.get("preset")))
    return updates


def on_page_load(request: gr.Request) -> dict:
    """`?run=<id>` in the page address re-opens a stored run."""
    run_id = dict(getattr(request, "query_params", None) or {}).get("run")
    if not run_id:
        return {ui.status: gr.skip()}  # Gradio needs at least one output in a dict of updates
    return show_run(run_id, request)


def _make_select(m: int, kind: str):
    def select(images, evt: gr.SelectData):
        picked = slider_pair(images, m, kind, evt.index) if evt is not None else None
        return gr.skip() if picked is None else gr.ImageSlider(value=picked[0], label=picked[1])
    select.__name__ = f"select_{kind}_m{m}"
    return select


# --------------------------------------------------------------------------- API endpoints


def analyze_api(image: str, world: str = "shapes", domain: str = "default", custom_word: str = "", preset: str = DEFAULT_PRESET,
                settings: str = "{}", request: gr.Request = None, references: list | None = None,
                progress: gr.Progress = gr.Progress()) -> Iterator[dict]:
    """Measure how original an image is to a text-to-image model: the fewest learned tokens that reproduce it.

    Args:
        image: the image (a file path or URL).
        world: the model world: "shapes" (small, runs on a CPU) or "stable-diffusion" ("sd").
        domain: "default" (the world's), a domain preset (house, painting, dog, cat, bird, sport, person) or "custom".
        custom_word: the one-word domain when domain is "custom".
        preset: a name in `originality.config.PRESETS` ("fast", "steady", "adaptive", "paper"; default DEFAULT_PRESET).
        settings: a JSON object of AnalysisConfig overrides, e.g. '{"max_tokens": 2}'.
        references: optional reference images (file paths or URLs) to compare the image with (copy and style).

    Returns:
        {"run_id", "share_url", "summary"}: summary holds score, label, verdict and the per-length numbers.
        While it runs, its progress events say the stage and the time left (the page's status line).
    """
    image = uploaded_file(image)
    if image is None:
        raise refused("Give an image.")
    config = build_config(preset or DEFAULT_PRESET, domain, custom_word, settings)
    report, started = None, time.monotonic()
    last, view, count = started, RunView(), None
    with contextlib.closing(analysis_events(image, world or default_world()[0].name, config, references)) as events:
        for event in events:  # closed explicitly: job.cancel() frees the model now
            elapsed = time.monotonic() - started
            view.apply(event, elapsed)
            count = progress_count(event) or count
            line = status_line(view, event, elapsed)
            if line is not None:  # the page's status line, time left included, as the API's progress
                progress(count, desc=line, unit="steps")
            if isinstance(event, Decision):
                report = event.report
            elif time.monotonic() - last > YIELD_EVERY_S:
                last = time.monotonic()
                yield gr.skip()
    run_id = default_store().save(report, preset=preset)
    yield {"run_id": run_id, "share_url": share_url(request, run_id), "summary": report.summary()}


def load_run_api(run_id: str) -> dict:
    """A stored run's summary: {"run_id", "summary"}."""
    try:
        report = default_store().load((run_id or "").strip())
    except (InvalidRunId, RunNotFound) as err:
        raise gr.Error(toast(str(err)), print_exception=False) from err
    return {"run_id": run_id.strip(), "summary": report.summary()}


# --------------------------------------------------------------------------- layout

def _length_row(m: int) -> None:
    with gr.Column(visible=False, elem_id=f"row-m{m}", elem_classes=["length-row"]) as row:
        ui.row_md.append(gr.Markdown("", elem_id=f"row-md-m{m}"))
        with gr.Row(equal_height=False):
            # no fixed height (and CSS's .all-images): the gallery grows a row per 5 images, so every
            # reconstruction shows whatever their number (a fixed height cut the second row in half)
            ui.recon.append(gr.Gallery(label=f"m = {m}: reconstructions", columns=5, height=None, format="png",
                                       fit_columns=False, object_fit="contain", interactive=False,
                                       elem_id=f"recon-m{m}", elem_classes=["all-images"]))
            with gr.Column(visible=False) as edit_col:
                ui.edits.append(gr.Gallery(label=f"m = {m}: edits (editability check)", columns=4, height=None,
                                           fit_columns=False, object_fit="contain", format="png", interactive=False,
                                           elem_id=f"edits-m{m}", elem_classes=["all-images"]))
    ui.rows.append(row)
    ui.edit_col.append(edit_col)


def build_demo() -> gr.Blocks:
    world, why = default_world()
    domain_value, word = domain_fields(DEFAULTS.get("domain"))
    # Gradio's cache (uploads, the gallery's copies, downloads served) is swept like the gallery's own files
    with gr.Blocks(title="Originality: how original is an image to a text-to-image model?",
                   delete_cache=(FILE_SWEEP_EVERY_S, FILE_MAX_AGE_S)) as demo:
        gr.Markdown(INTRO)
        with gr.Row(equal_height=False):
            with gr.Column(scale=4, min_width=320):
                ui.image = gr.Image(label="Image", type="filepath", sources=["upload", "clipboard"], height=300,
                                    elem_id="query-image")
                ui.references = gr.File(label=f"Reference images (optional, up to {MAX_REFERENCES}): copy and style "
                                        "similarity", file_count="multiple", elem_id="references")
                examples, labels = examples_table(EXAMPLES_DIR)
                ui.world = gr.Dropdown(world_choices(), value=world.name, label="Model world", elem_id="world",
                                       render=not examples)
                if examples:
                    gr.Examples(examples, inputs=[ui.image, ui.world], example_labels=labels, cache_examples=False,
                                label="Examples (shapes world: pairs of shapes common, rare or never seen in "
                                      "training)", elem_id="examples")
                    ui.world.render()
                gr.Markdown(f"<small>Picked automatically: **{dict((v, k) for k, v in world_choices())[world.name]}**"
                            f", {why}.</small>", elem_id="world-note")
                with gr.Row():
                    ui.domain = gr.Dropdown(domain_choices(), value=domain_value, label="Domain",
                                            info="the word the learned tokens start from", elem_id="domain")
                    ui.custom_word = gr.Textbox(value=word, label="Custom domain word",
                                                placeholder="one word, e.g. castle", elem_id="custom-word")
                ui.preset = gr.Radio(list(PRESETS), value=DEFAULT_PRESET, label="Preset",
                                     info="steady (default): repeats best, about 2.2x fast's work · fast: about a "
                                          "minute on a GPU · adaptive: each length stops once it has converged · "
                                          "paper: the paper's settings (slow)",
                                     elem_id="preset")
                with gr.Accordion("Advanced (blank = preset / model-world default)", open=False, elem_id="advanced"):
                    # Textboxes, not gr.Number: a blank field must stay blank (= default), not become 0.
                    with gr.Row():
                        ui.advanced = [gr.Textbox(setting_text(DEFAULTS.get(s.name)), label=s.label, info=s.help,
                                                  placeholder=setting_placeholder(s), elem_id=f"adv-{s.name}",
                                                  min_width=150) for s in ADVANCED]
                with gr.Row():
                    run_btn = gr.Button("Run", variant="primary", elem_id="run")
                    cancel_btn = gr.Button("Cancel", variant="stop", elem_id="cancel")
                with gr.Group(elem_id="your-runs-box"):
                    gr.Markdown("**Your runs** <small>(kept in this browser only; each opens its share link)</small>",
                                elem_id="your-runs-title", padding=True)
                    ui.your_runs_list = gr.HTML(your_runs_html([]), elem_id="your-runs", padding=True)
                    clear_runs_btn = gr.Button("Clear the list", size="sm", variant="secondary",
                                               elem_id="clear-your-runs")
            with gr.Column(scale=6, min_width=360):
                ui.status = gr.Markdown("Upload an image (or click an example) and press **Run**.", elem_id="status")
                ui.verdict = gr.Markdown("", elem_id="verdict")
                with gr.Row(equal_height=False):
                    ui.curve = gr.Plot(label="Distance to the query per token length", elem_id="curve", format="png")
                    ui.slider = gr.ImageSlider(label="query ↔ reconstruction (click a gallery image)", type="pil",
                                               elem_id="compare", height=280, format="png")
                ui.similarity = gr.Gallery(label="your image ↔ nearest reference", columns=2, height=230,
                                           format="png", visible=False, interactive=False, elem_id="similarity")
                ui.rows, ui.row_md, ui.recon, ui.edit_col, ui.edits = [], [], [], [], []
                for m in range(1, MAX_ROWS + 1):
                    _length_row(m)
                ui.share = gr.Textbox(label="Share link", interactive=False, buttons=["copy"], elem_id="share",
                                      placeholder="appears when a run finishes")
                ui.files = gr.File(label="Downloads: report.json, printable report.html, learned embeddings per m, "
                                   "zip of the whole run", file_count="multiple", interactive=False, elem_id="downloads")
                with gr.Accordion("Reproducibility record", open=False, elem_id="record-box"):
                    ui.record = gr.JSON(label="rerun with: python -m originality reproduce RUN_DIR", elem_id="record")
        ui.images = gr.State(None)
        ui.your_runs = gr.BrowserState([], storage_key=YOUR_RUNS_KEY, secret=YOUR_RUNS_CIPHER)
        with gr.Column(visible=False):  # inputs/outputs of the API endpoints only
            api_settings = gr.Textbox(value="{}", label="settings (JSON of AnalysisConfig fields)")
            api_run_id = gr.Textbox(label="run_id")
            api_result = gr.JSON(label="result")
            api_btn = gr.Button("analyze")
            load_btn = gr.Button("load run")

        run_event = run_btn.click(
            _on_run, inputs={*ui.settings, ui.your_runs}, outputs=[*ui.outputs, ui.your_runs], api_name="run",
            api_visibility="undocumented",
            concurrency_id="analysis", show_progress="minimal", show_progress_on=[ui.status], preprocess=False)
        cancel_btn.click(lambda: "Cancelled. Press **Run** to start again.", None, [ui.status], cancels=[run_event], queue=False, api_visibility="private")
        for i in range(MAX_ROWS):
            for gallery, kind in ((ui.recon[i], "recon"), (ui.edits[i], "edits")):
                gallery.select(_make_select(i + 1, kind), [ui.images], [ui.slider], queue=False,
                               api_visibility="private")
        api_btn.click(analyze_api, inputs=[ui.image, ui.world, ui.domain, ui.custom_word, ui.preset, api_settings,
                                           ui.references],
                      outputs=[api_result], api_name="analyze", concurrency_id="analysis", preprocess=False)
        load_btn.click(load_run_api, inputs=[api_run_id], outputs=[api_result], api_name="load_run",
                       concurrency_limit=None)
        demo.load(on_page_load, None, ui.outputs + ui.settings, api_visibility="private")
        gr.on([demo.load, ui.your_runs.change], your_runs_html, [ui.your_runs], [ui.your_runs_list], queue=False,
              api_visibility="private")
        clear_runs_btn.click(lambda: [], None, [ui.your_runs], queue=False, api_visibility="private")

    return demo.queue(default_concurrency_limit=env_int("ORIGINALITY_CONCURRENCY", 1),
                      max_size=env_int("ORIGINALITY_QUEUE_SIZE", 16))


demo = build_demo()

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Every world's weights before the first visitor, and before launch(): under ZeroGPU `spaces` packs at launch what
    # the main process has loaded, and each GPU call's worker, forked from it, reads nothing (originality.app.startup)
    startup.load_models()
    name, port = server_address()
    demo.launch(server_name=name, server_port=port, max_file_size=UPLOAD_CEILING,
                allowed_paths=[str(EXAMPLES_DIR)], css=CSS,
                mcp_server=os.environ.get("ORIGINALITY_MCP") == "1")  # `analyze_api` as an MCP tool (needs mcp)
