"""A printable report of one analysis: one self-contained HTML file.

    html = render(report)             # str
    write(report, "report.html")      # the same, to a file

Written for a reader who has never heard of textual inversion: the image, the verdict in plain
words, the distance curve (inline SVG), the reconstructions beside the image for every token length
tried, the editability / in-distribution check, the similarity to the reference images the user named
(when given), what the score means and what it does not mean,
the method and its citation, the settings and the reproducibility record.

Self-contained: every image is a data: URI (shown reduced: at most `THUMB_SIDE` px, the query
`QUERY_SIDE` px; the full-size files are in the run folder), no script, no external style
or font. A print stylesheet keeps each token length on one page, so a browser's "Save as PDF"
gives clean pages. Every string that comes from the report (settings, model name, details)
is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from pathlib import Path
from typing import Any, Iterable

from PIL import Image

from . import citation
from .labels import is_familiar
from .report import Report, TokenResult, drawn_note
from .worlds import check_name_of

QUERY_SIDE = 512  # largest side of the embedded query
THUMB_SIDE = 256  # largest side of an embedded reconstruction or edit
SHOWN = 120  # CSS px of a thumbnail on the page (the query: twice that)

DISTANCES = {
    "dreamsim": "DreamSim, a perceptual distance trained on people's judgements of image similarity "
                "(0 = the same image; lower = closer)",
    "element-f1": "the element distance: 1 − F1 between the shapes and colours detected in the two images "
                  "(0 = the same elements, 1 = none in common)",
}
# What each in-distribution check does, for people; its title is the world's name for it (`World.check_name`).
CHECKS = {
    "clip-edit": ("The model also drew the learned words in a new sentence (“{prompt}”). Words that only copy "
                  "the pixels of the image cannot be put in a new scene; words the model understands can. "
                  "CLIP, an image–text model, judges whether each edit shows a {subject}."),
    "layout-variation": ("A concept the model has really learned is drawn at new positions from one image to the "
                         "next; learned words that merely copy this image put every element back where it is "
                         "here. The check looks at where the reconstructions place the elements."),
}

CSS = """
:root { --ink: #1f2937; --muted: #6b7280; --line: #e5e7eb; --pass: #15803d; --fail: #b91c1c; --accent: #2563eb; }
* { box-sizing: border-box; }
body { font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--ink);
       max-width: 900px; margin: 2em auto; padding: 0 1.2em; }
h1 { font-size: 1.7em; margin: 0 0 0.1em; }
h2 { font-size: 1.25em; margin: 1.6em 0 0.5em; border-bottom: 2px solid var(--line); padding-bottom: 0.2em; }
h3 { font-size: 1.05em; margin: 0 0 0.3em; }
.sub { color: var(--muted); margin: 0 0 1.2em; }
.summary { display: flex; gap: 1.5em; align-items: flex-start; border: 1px solid var(--line); border-radius: 8px;
           padding: 1em; }
.summary figure { margin: 0; flex: none; }
.score { font-size: 2.6em; font-weight: 700; line-height: 1; margin: 0 0 0.2em; }
.verdict { font-size: 1.15em; margin: 0.3em 0; }
figure { margin: 0; }
figcaption { font-size: 0.8em; color: var(--muted); text-align: center; }
img { display: block; border: 1px solid var(--line); background: #fff; }
img.small { image-rendering: pixelated; }
.query img { width: 240px; height: auto; }
.grid { display: flex; flex-wrap: wrap; gap: 8px; margin: 0.4em 0 0.6em; }
.grid img { width: 120px; height: auto; }
.grid .query-thumb img { outline: 2px solid var(--accent); outline-offset: -1px; }
.length { border: 1px solid var(--line); border-radius: 8px; padding: 0.8em 1em; margin: 0 0 1em; }
.pass { color: var(--pass); font-weight: 600; }
.fail { color: var(--fail); font-weight: 600; }
.muted { color: var(--muted); }
table { border-collapse: collapse; width: 100%; font-size: 0.9em; }
td, th { border-bottom: 1px solid var(--line); padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { width: 32%; font-weight: 600; }
code, pre, td.v { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 0.92em; }
td.v { overflow-wrap: anywhere; }
pre { background: #f9fafb; border: 1px solid var(--line); padding: 0.6em; white-space: pre-wrap; }
ul.not li { margin-bottom: 0.3em; }
.curve svg { width: 100%; max-width: 620px; height: auto; }
footer { margin-top: 2em; color: var(--muted); font-size: 0.85em; }
@media print {
  @page { size: A4; margin: 14mm 12mm; }
  body { margin: 0; max-width: none; font-size: 11pt; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  h2 { break-after: avoid; }
  .summary, .length, .keep, figure, tr, .curve { break-inside: avoid; }
  .grid img { width: 96px; }
  .query img { width: 200px; }
  a { color: inherit; text-decoration: none; }
  a[href^="http"]::after { content: " (" attr(href) ")"; font-size: 0.85em; color: var(--muted); }
}
"""


def esc(value: Any) -> str:
    """HTML-escape any value (quotes too), for text and attribute values alike."""
    return html.escape(str(value), quote=True)


# --------------------------------------------------------------------------- images


def data_uri(image: Image.Image, max_side: int) -> str:
    """The image as a data: URI, reduced to at most `max_side` px; PNG when small (lossless), else JPEG.

    An image of at most half `max_side` (the shapes world's 64 px) is enlarged by a whole factor with
    nearest-neighbour sampling, so that its pixels stay sharp in a PDF (PDF viewers smooth small images)."""
    im = image.convert("RGB")
    side = max(im.size)
    if side > max_side:
        im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    elif 2 * side <= max_side:
        factor = max_side // side
        im = im.resize((im.width * factor, im.height * factor), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    if side <= 128:
        im.save(buf, format="PNG", optimize=True)
        kind = "png"
    else:
        im.save(buf, format="JPEG", quality=85)
        kind = "jpeg"
    return f"data:image/{kind};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


def _img(image: Image.Image, alt: str, max_side: int, shown: int) -> str:
    small = " small" if max(image.size) < shown else ""  # crisp pixels when enlarged (the shapes world's 64 px)
    return f'<img class="img{small}" src="{data_uri(image, max_side)}" alt="{esc(alt)}">'


def _figure(image: Image.Image, alt: str, caption: str, *, css: str = "", max_side: int = THUMB_SIDE,
            shown: int = SHOWN) -> str:
    cls = f' class="{css}"' if css else ""
    return f"<figure{cls}>{_img(image, alt, max_side, shown)}<figcaption>{esc(caption)}</figcaption></figure>"


# --------------------------------------------------------------------------- the curve


def _ticks(top: float) -> list[float]:
    for step in (0.05, 0.1, 0.2, 0.25, 0.5, 1.0, 2.0):
        if top / step <= 6:
            break
    return [round(i * step, 4) for i in range(int(math.floor(top / step + 1e-9)) + 1)]


def _spread(r: TokenResult) -> str:
    """'(95% CI 0.25–0.51)' of a length's mean distance, or '± 0.000' below two redrawings."""
    ci = r.distance_interval()
    return f"({ci.span(2, '–')})" if ci else f"± {r.std_distance:.3f}"


def _bar(r: TokenResult) -> tuple[float, float]:
    """(low, high) of a length's error bar: the 95% interval of its mean distance, or the mean itself."""
    ci = r.distance_interval()
    return (ci.low, ci.high) if ci else (r.mean_distance, r.mean_distance)


def curve_svg(report: Report, width: int = 620, height: int = 280) -> str:
    """Mean distance per token length with its 95% interval (what decides a length at the threshold; the mean
    alone below two distances), the threshold as a dashed line, the score circled; a score that passed on the
    benefit of the doubt (its circle then sits above the line) says so beside the circle."""
    left, right, top_pad, bottom = 56, 16, 16, 44
    pw, ph = width - left - right, height - top_pad - bottom
    points = [(r.num_tokens, r.mean_distance, _bar(r), r.passed) for r in report.results
              if not math.isnan(r.mean_distance)]
    scored = next((r for r in report.results if r.num_tokens == report.score), None)
    on_doubt = scored is not None and report.pass_rule.passed_on_doubt(scored.distances, scored.distance_passed)
    top = max([bar[1] for _, _, bar, _ in points] + [report.threshold]) * 1.15 + 0.02
    ticks = _ticks(top)
    top = max(top, ticks[-1])
    n = max(report.max_tokens, max((p[0] for p in points), default=1))

    def x(m: float) -> float:
        return left + (m - 0.5) / n * pw

    def y(v: float) -> float:
        return top_pad + ph - v / top * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
           f'aria-label="distance to the image per number of learned tokens">',
           f'<rect x="{left}" y="{top_pad}" width="{pw}" height="{ph}" fill="#fff" stroke="#d1d5db"/>']
    for t in ticks:
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="#f3f4f6"/>'
                   f'<text x="{left - 6}" y="{y(t) + 4:.1f}" font-size="11" text-anchor="end" fill="#4b5563">'
                   f'{t:g}</text>')
    for m in range(1, n + 1):
        out.append(f'<text x="{x(m):.1f}" y="{top_pad + ph + 16}" font-size="11" text-anchor="middle" '
                   f'fill="#4b5563">{m}</text>')
    out.append(f'<text x="{left + pw / 2:.1f}" y="{height - 8}" font-size="12" text-anchor="middle" '
               f'fill="#1f2937">learned tokens (m)</text>')
    out.append(f'<text x="14" y="{top_pad + ph / 2:.1f}" font-size="12" text-anchor="middle" fill="#1f2937" '
               f'transform="rotate(-90 14 {top_pad + ph / 2:.1f})">distance ({esc(report.model.get("distance", "?"))})'
               f'</text>')
    ty = y(report.threshold)
    out.append(f'<line x1="{left}" x2="{left + pw}" y1="{ty:.1f}" y2="{ty:.1f}" stroke="#dc2626" '
               f'stroke-width="1.5" stroke-dasharray="6 4"/>'
               f'<text x="{left + pw - 4}" y="{ty - 5:.1f}" font-size="11" text-anchor="end" fill="#dc2626">'
               f'threshold {report.threshold:g}</text>')
    if len(points) > 1:
        path = " ".join(f"{x(m):.1f},{y(mu):.1f}" for m, mu, _, _ in points)
        out.append(f'<polyline points="{path}" fill="none" stroke="#2563eb" stroke-width="2"/>')
    for m, mu, (low, high), passed in points:
        cx = x(m)
        out.append(f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{y(low):.1f}" y2="{y(high):.1f}" '
                   f'stroke="#93c5fd" stroke-width="2"/>'
                   f'<circle cx="{cx:.1f}" cy="{y(mu):.1f}" r="4.5" fill="{"#15803d" if passed else "#2563eb"}"/>'
                   f'<text x="{cx + 8:.1f}" y="{y(mu) - 6:.1f}" font-size="11" fill="#1f2937">{mu:.3f}</text>')
        if report.score == m and passed:  # not where a second opinion's run, which is not drawn, gave the score
            out.append(f'<circle cx="{cx:.1f}" cy="{y(mu):.1f}" r="11" fill="none" stroke="#15803d" '
                       f'stroke-width="2.5"/>')
            if on_doubt:
                anchor = "end" if m > n / 2 else "start"
                # above the circle: a doubt pass sits just above the threshold line, which runs below it
                out.append(f'<text x="{cx + (-14 if anchor == "end" else 14):.1f}" y="{y(mu) - 22:.1f}" '
                           f'font-size="11" text-anchor="{anchor}" fill="#15803d">score: passed on the benefit of '
                           f'the doubt (its 95% interval reaches the threshold)</text>')
    out.append("</svg>")
    return "".join(out)


# --------------------------------------------------------------------------- words


def _tokens(n: int) -> str:
    return f"{n} learned token{'' if n == 1 else 's'}"


def headline(report: Report) -> tuple[str, str]:
    """(title, explanation) of the verdict in plain words."""
    name = report.model.get("name", "the model")
    if is_familiar(report.score):
        return ("Familiar to this model",
                f"One learned token — one new word of the model's own vocabulary — was enough for {name} to draw "
                "this image again. That is what happens with images made of things the model has seen many times.")
    if report.score is None:
        return ("Original to this model",
                f"Even {_tokens(report.max_tokens)} did not let {name} draw this image again closely enough "
                f"(shown as {report.label}). The model has no short description of it in its own vocabulary.")
    return ("Original to this model",
            f"{name} needed {_tokens(report.score)} to draw this image again; one was not enough. The more words the "
            "model needs, the less familiar the image is to it.")


def _check_text(report: Report) -> tuple[str, str]:
    kind = report.model.get("in_distribution", "")
    text = CHECKS.get(kind, "A second test that the learned words describe a concept rather than copy pixels.")
    name = check_name_of(report.model.get("world", ""))  # the check's one name (`World.check_name`)
    title = name[:1].upper() + name[1:]
    config = report.config
    prompt = str(config.get("edit_prompt", "{}")).replace("{}", "S*")
    return title, text.format(prompt=prompt, subject=config.get("edit_subject", "subject"))


def _query_figures(report: Report) -> str:
    """The analysed image; after a redraw, the image as given above it, so a reader sees both what was uploaded and
    what the model was shown."""
    analysed = _figure(report.query, "the analysed image", "the analysed image (as the model sees it)"
                       + (": the world's own drawing of the image above" if report.given_image is not None else ""),
                       css="query", max_side=QUERY_SIDE, shown=240)
    if report.given_image is None:
        return analysed
    given = _figure(report.given_image, "the image as given", report.given_caption, css="query",
                    max_side=QUERY_SIDE, shown=240)
    return f"<div>{given}{analysed}</div>"


def _summary_section(report: Report) -> str:
    title, text = headline(report)
    return f"""
<section class="summary">
  {_query_figures(report)}
  <div>
    <p class="score">Score: {esc(report.label)}</p>
    <p class="verdict"><strong>{esc(title)}.</strong> {esc(text)}</p>
    <p class="muted">{esc(report.verdict)}</p>{_seeds_paragraph(report)}
    <p class="muted">{esc(report.expected_length_sentence())}</p>
    <p class="muted">{esc(report.rerun_sentence())}</p>
    <p class="muted">Model: {esc(report.model.get("name", "?"))} ({esc(report.model.get("world", "?"))} world) ·
      {len(report.results)} of up to {report.max_tokens} token lengths tried · {report.total_seconds:.0f} s</p>
    {"".join(f'<p class="muted">{esc(note)}</p>' for note in report.notes)}
  </div>
</section>"""


def _seeds_paragraph(report: Report) -> str:
    """With the seeds setting: the label over the inversion seeds, and what it says about the score."""
    spread = report.label_distribution
    if spread is None:
        return ""
    meaning = ("every seed gave the same score, so this score does not hang on one random draw" if spread.unanimous
               else "the seeds disagree, so the score is their median and depends on the random draw: read it as a range")
    note = report.seeds_note()
    return (f"\n    <p><strong>Over {len(spread.labels)} inversion seeds:</strong> {esc(spread.describe())} "
            f"(seeds {esc(', '.join(map(str, spread.seeds)))}): {meaning}.{f' {esc(note)}' if note else ''}</p>")


def _meaning_section(report: Report) -> str:
    distance = DISTANCES.get(report.model.get("distance", ""), f"the distance {report.model.get('distance', '?')}")
    words = report.pass_rule.doubt_in_words()
    doubt = f" ({esc(words)})" if words else ""
    return f"""
<h2>What the score means</h2>
<p>The score is the smallest number of new words (<em>learned tokens</em>) that the text-to-image model
needs to draw this image again closely enough. The method teaches the model a made-up word for the image,
adjusting it until the model's pictures of “a photo of [that word]” resemble the image (this is called
<em>textual inversion</em>); it tries one word, then two, and so on. Content the model has seen many times
— a common subject, a common style — fits in one word. Content it has rarely or never seen needs more.
So the score measures <strong>how familiar the image is to this model</strong>: 1 = familiar, higher = more
original to it.</p>
<p>“Closely enough” means: the average {esc(distance)} between the image and the model's redrawings is at
most the threshold {report.threshold:g}{doubt}, and the learned words pass a second check that they describe a
concept and do not just copy pixels (below).</p>
<h2>What the score does not mean</h2>
<ul class="not">
  <li><strong>It is not a legal opinion.</strong> It says nothing about copyright, authorship, ownership or
    infringement.</li>
  <li><strong>It is not proof of copying</strong>, nor proof that this image was in the model's training data.
    A low score means that the content is familiar to the model, which ordinary, common content also is.</li>
  <li><strong>It is not a judgement of artistic value</strong> or of originality to people. It is relative to
    this one model and these settings; another model, another threshold or other settings can give another
    score.</li>
  <li><strong>It has some randomness.</strong> Learning the words starts from random draws; the seeds are in
    the record below, and rerunning with the same seeds, software and hardware gives the same numbers.</li>
</ul>"""


def _curve_section(report: Report) -> str:
    # the rule is worded once, in "What the score means" just above (PassRule.doubt_in_words); pointing back to it
    # keeps the two notes from drifting apart
    doubt = " (or within the benefit of the doubt described above)" if report.pass_rule.doubt_in_words() else ""
    return f"""
<h2>Distance for each number of learned tokens</h2>
<div class="curve">{curve_svg(report)}</div>
<p class="muted">Each point is the mean distance between the image and the model's redrawings from that many
learned tokens (bars: its 95% interval over the redrawings; green: the length passed both checks). At or
below the red dashed threshold{doubt} the redrawings count as close enough. The analysis stops at the first length that
passes.</p>"""


def _length_section(report: Report, r: TokenResult, check_title: str) -> str:
    close = r.distance_passed
    recon = [_figure(report.query, "the analysed image", report.query_caption, css="query-thumb")]
    recon += [_figure(im, f"reconstruction {i + 1} from {_tokens(r.num_tokens)}",
                      f"d = {r.distances[i]:.3f}" if i < len(r.distances) else f"#{i + 1}")
              for i, im in enumerate(r.reconstructions)]
    subject = report.config.get("edit_subject", "subject")
    edits = [_figure(im, f"edit {i + 1}", f"P({subject}) = {r.check_scores[i]:.2f}" if i < len(r.check_scores)
                     else f"edit {i + 1}") for i, im in enumerate(r.edits)]
    edits_html = (f'<p>Edits (“{esc(str(report.config.get("edit_prompt", "{}")).replace("{}", "S*"))}”):</p>'
                  f'<div class="grid">{"".join(edits)}</div>') if edits else ""
    verdict = '<span class="pass">passes</span>' if r.passed else '<span class="fail">does not pass</span>'
    steps = f"{r.steps_used} step{'s' if r.steps_used != 1 else ''}" if r.steps_used else ""
    work = [f"learned in {steps} ({esc(r.stop_reason)})" if steps and r.stop_reason else ""]
    work.append(drawn_note(len(r.distances), report.config.get("num_reconstructions")))
    work_html = f'<p class="muted">{"; ".join(w for w in work if w).capitalize()}.</p>' if any(work) else ""
    return f"""
<section class="length">
  <h3>{_tokens(r.num_tokens)}: {verdict}</h3>
  <p>Redrawings from “{esc(str(report.config.get("reconstruction_prompt", "{}")).replace("{}", "S*"))}”, beside
    your image: mean distance <strong>{r.mean_distance:.3f}</strong> {_spread(r)}
    {esc(report.pass_rule.comparison(r.distances, close)).replace(" ", " threshold ", 1)}:
    <span class="{'pass' if close else 'fail'}">{'close enough' if close else 'not close enough'}</span>.</p>
  {work_html}
  <div class="grid">{"".join(recon)}</div>
  {edits_html}
  <p>{esc(check_title)}: {esc(r.check_detail or '')} —
    <span class="{'pass' if r.check_passed else 'fail'}">{'passes' if r.check_passed else 'fails'}</span>.</p>
</section>"""


def _similarity_section(report: Report) -> str:
    """The query beside its nearest reference with both numbers, every reference's numbers, each length's nearest
    reference, and what the numbers do and do not mean ("" without references)."""
    sim = report.similarity
    if sim is None:
        return ""
    head = "<h2>Similarity to the images you named</h2>"
    if sim.error:
        return f'{head}<p class="muted">Not measured: {esc(sim.error)}. The score above stands.</p>'
    figures = [_figure(report.query, "the analysed image", report.query_caption, css="query-thumb")]
    if sim.nearest is not None and sim.nearest < len(sim.images):
        r = sim.references[sim.nearest]
        style = "style n/a" if r.style is None else f"style {r.style:.3f}"
        figures.append(_figure(sim.images[sim.nearest], f"reference {r.name}",
                               f"{r.name}: copy {r.copy:.3f} · {style}"))
    rows = "".join(f"<tr><td>{esc(r.name)}</td><td>{r.copy:.3f}{' (at or above the line)' if r.copied else ''}</td>"
                   f"<td>{'n/a' if r.style is None else f'{r.style:.3f}'}</td></tr>" for r in sim.references)
    lengths = "".join(f"<li>{_tokens(n.num_tokens)}: the redrawings are nearest to {esc(n.name)} (copy {n.copy:.3f}; "
                      f"your image {n.query_copy:.3f})</li>" for n in sim.lengths)
    return f"""{head}
<div class="grid">{"".join(figures)}</div>
<table><tr><th>reference</th><th>copy similarity (line {sim.copy_line:g})</th><th>style similarity</th></tr>
{rows}</table>
<ul>{lengths}</ul>
<p><strong>Copy similarity</strong>: {esc(sim.copy_measure)}. Higher = more alike; at or above the line
{sim.copy_line:g} an image counts as a likely copy of that reference ({esc(citation.DCR.short)}: on Stable Diffusion
1.88% of generations scored above 0.5, and above it the copies were obvious). <strong>Style similarity</strong>:
{esc(sim.style_measure or "does not apply")}. {esc(sim.style_note)}.</p>
<p>These numbers say how close the image is to the images you named, as image features see it. <strong>They are not a
legal judgement</strong> and <strong>not proof that an image was in the model's training data</strong>; they do not
change the score. Copy similarity: {_paper_html(citation.DCR)} Style similarity: {_paper_html(citation.CSD)}</p>"""


def _paper_html(paper) -> str:
    return (f"{esc(', '.join(a.split()[-1] for a in paper.authors))} ({paper.year}). "
            f'<a href="{esc(paper.url)}"><em>{esc(paper.title)}</em></a>. {esc(paper.venue)}.')


def _method_section(report: Report) -> str:
    check_title, check_text = _check_text(report)
    return f"""
<h2>How it works</h2>
<ol>
  <li><strong>Learn words for the image.</strong> For m = 1, 2, … the model learns m new tokens S* so that its
    pictures of “a photo of S*” resemble the image (multi-token textual inversion; the model itself is not
    changed).</li>
  <li><strong>Redraw.</strong> The model draws {esc(report.config.get("num_reconstructions", "?"))} images from the
    learned tokens.</li>
  <li><strong>Measure.</strong> Each redrawing's distance to the image: {esc(DISTANCES.get(
      report.model.get("distance", ""), report.model.get("distance", "?")))}.</li>
  <li><strong>{esc(check_title)}.</strong> {esc(check_text)}</li>
  <li><strong>Stop</strong> at the first m whose redrawings are close enough and that passes the check. The score is
    that m, or “{report.max_tokens}+” when none up to {report.max_tokens} does.</li>
</ol>
<p>Method: {_citation_html()}</p>
<pre>{esc(citation.BIBTEX)}</pre>"""


def _citation_html() -> str:
    return (f"{esc(', '.join(a.split()[-1] for a in citation.AUTHORS))} ({citation.YEAR}). "
            f'<a href="{esc(citation.URL)}"><em>{esc(citation.TITLE)}</em></a>. arXiv:{esc(citation.ARXIV_ID)}.')


def _when(created: str) -> str:
    """'2026-12-02T04:24:56+00:00' -> '2026-12-02 04:24:56 UTC'."""
    return (created or "").replace("T", " ").replace("+00:00", " UTC")


def _rows(items: Iterable[tuple[str, Any]]) -> str:
    return "".join(f'<tr><th>{esc(k)}</th><td class="v">{esc(_text(v))}</td></tr>' for k, v in items)


def _text(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def flatten(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts as ("a.b.c", value) rows, in order."""
    rows: list[tuple[str, Any]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            rows.extend(flatten(value, name + "."))
        else:
            rows.append((name, value))
    return rows


def _settings_section(report: Report, run_dir: str | None) -> str:
    record = report.record
    if record:
        record_html = f"<table>{_rows(flatten(record))}</table>"
    else:
        record_html = ('<p class="muted">This run was stored before reports carried a reproducibility record: '
                       "rerun it to get one.</p>")
    where = esc(run_dir) if run_dir else "RUN_DIR"
    return f"""
<h2>Settings</h2>
<table>{_rows(flatten(report.config))}</table>
<h2>Reproducibility record</h2>
<p>Everything needed to rerun this analysis and to check that a rerun started from the same image, model and
software. <code>query.sha256</code> is the SHA-256 of the image as the model sees it (the RGB bytes of
<code>query.png</code> in the run folder); <code>input.sha256</code> that of the file as it was given. To rerun
from the run folder and compare, token length by token length:</p>
<pre>python -m originality reproduce {where}</pre>
{record_html}
<p class="muted">Created {esc(_when(report.created) or "—")}.</p>"""


# --------------------------------------------------------------------------- the page


def render(report: Report, *, run_dir: str | os.PathLike | None = None) -> str:
    """The whole report as one HTML document (str). `run_dir`: shown in the rerun command."""
    check_title, _ = _check_text(report)
    lengths = [_length_section(report, r, check_title) for r in report.results]
    title = f"Originality report: score {report.label}"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title>
<style>{CSS}</style>
</head>
<body>
<header>
  <h1>Originality report</h1>
  <p class="sub">How familiar is this image to the text-to-image model {esc(report.model.get("name", "?"))}?
    · {esc(_when(report.created))}</p>
</header>
<main>
{_summary_section(report)}
{_meaning_section(report)}
{_curve_section(report)}
<div class="keep">
<h2>The image redrawn from learned tokens</h2>
<p class="muted">Images are shown reduced; the full-size files are in the run folder.</p>
{lengths[0] if lengths else ""}
</div>
{"".join(lengths[1:])}
{_similarity_section(report)}
{_method_section(report)}
{_settings_section(report, str(run_dir) if run_dir else None)}
</main>
<footer>Made with originality {esc(report.record.get("software", {}).get("originality", ""))} ·
  {_citation_html()}</footer>
</body>
</html>
"""


def write(report: Report, path: str | os.PathLike, *, run_dir: str | os.PathLike | None = None) -> Path:
    """Write `render(report)` to `path` (UTF-8); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(render(report, run_dir=run_dir), encoding="utf-8")
    os.replace(tmp, path)
    return path
