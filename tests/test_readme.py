"""The README and docs/ run as written: every Python code block is executed on the shapes world.

README.md is the front door (the API example); the rest lives in docs/*.md (the gradio_client example and
the public app's limits are in docs/web-app.md). Only the sizes change, from outside the code: the `fast`
preset is made tiny for the API block, and the app that the gradio_client block talks to gets tiny
ORIGINALITY_DEFAULTS and its own port (the block's address is the one substitution). Both run in a
temporary folder that sees the repository's assets/, so the paths the pages use are the paths a user
types in a checkout. Every relative link of README.md and docs/*.md must point at a file that exists.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import serve_app

from originality import config as config_module
from originality.worlds import all_worlds

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
PAGES = {"README.md": README} | {f"docs/{p.name}": p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))}
BLOCKS = [(name, code) for name, text in PAGES.items()
          for code in re.findall(r"```python\n(.*?)```", text, flags=re.S)]
TINY = dict(max_tokens=1, steps=2, batch_size=2, num_reconstructions=2, num_inference_steps=2, num_edits=1)
README_MAX_LINES = 180


@pytest.fixture
def checkout(tmp_path, monkeypatch) -> Path:
    """A working folder with the repository's assets/, as the current directory."""
    (tmp_path / "assets").symlink_to(ROOT / "assets", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def block(marker: str) -> tuple[str, str]:
    """(page, code) of the one Python block, in README.md or docs/, that contains `marker`."""
    found = [(name, code) for name, code in BLOCKS if marker in code]
    assert len(found) == 1, f"expected one Python block with {marker!r} in README.md and docs/, got {len(found)}"
    return found[0]


def test_the_readme_shows_the_registry_s_worlds_and_the_pages_hold_two_python_blocks():
    # the API example (README.md) and the gradio_client example (docs/); a new block needs a test here
    assert len(BLOCKS) == 2, [name for name, _ in BLOCKS]
    assert block("load_model(")[0] == "README.md" and block("gradio_client")[0].startswith("docs/")
    for world in all_worlds():
        assert f"`{world.name}`" in README


def test_the_readme_is_a_front_door():
    lines = README.count("\n") + (not README.endswith("\n"))
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/"
    assert "pip install -r requirements-dev.txt && python -m pytest -q --durations=15" in README
    for page in PAGES:
        if page.startswith("docs/"):
            assert f"]({page})" in README, f"README's Documentation section does not link {page}"
            assert PAGES[page].startswith("# "), f"{page} does not start with a # title"


def _relative_links(text: str) -> list[str]:
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # code blocks
    text = re.sub(r"`[^`\n]*`", "", text)  # inline code
    targets = re.findall(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", text)
    targets += re.findall(r"^\s*\[[^\]]+\]:\s*(\S+)", text, flags=re.M)  # reference-style definitions
    return [t for t in targets if not re.match(r"^([a-z][a-z0-9+.-]*:|#)", t, flags=re.I)]


@pytest.mark.parametrize("page", sorted(PAGES))
def test_every_relative_link_points_to_an_existing_file(page):
    base = (ROOT / page).parent
    missing = [t for t in _relative_links(PAGES[page]) if not (base / t.split("#")[0]).exists()]
    assert not missing, f"{page} links to missing files: {missing}"


def test_the_link_checker_sees_links_images_and_skips_code_and_urls():
    text = ("[a](docs/x.md#y) ![b](../assets/i.png) [c](https://e.org) [d](#top) <https://e.org> `[e](f.md)`\n"
            "```bash\n[g](h.md)\n```\n[r]: ref.md\n")
    assert _relative_links(text) == ["docs/x.md#y", "../assets/i.png", "ref.md"]


@pytest.mark.slow
def test_python_api_block_runs_as_written(checkout, monkeypatch, capsys):
    monkeypatch.setitem(config_module.PRESETS, "fast", config_module.PRESETS["fast"].replace(**TINY))
    page, code = block("load_model(")
    exec(compile(code, page, "exec"), {})
    out = capsys.readouterr().out
    assert re.search(r"^1\+? (Original|Familiar)", out, flags=re.M), out
    assert "Decision" in out and (checkout / "runs" / "query" / "m1" / "learned_embeds.safetensors").is_file()


@pytest.mark.slow
def test_gradio_client_block_runs_as_written(checkout, tiny_shapes_model, capsys):
    env = {"ORIGINALITY_MODEL": str(tiny_shapes_model), "ORIGINALITY_DEFAULTS": json.dumps(TINY)}
    (checkout / "server").mkdir()
    page, code = block("gradio_client")
    with serve_app(checkout / "server", env) as url:
        exec(compile(code.replace("http://127.0.0.1:7860/", url), page, "exec"), {})
    out = capsys.readouterr().out
    assert "?run=" in out and re.search(r"^1\+? (Original|Familiar)", out, flags=re.M), out


def test_the_public_maxima_table_is_the_schemas():
    """The table of the public app's limits (after "**A public page.**", in docs/) lists every numeric
    setting with its `public_max`."""
    pages = [name for name, text in PAGES.items() if "**A public page.**" in text]
    assert len(pages) == 1, f"expected one page with the public maxima, got {pages}"
    section = PAGES[pages[0]].split("**A public page.**")[1].split("\n\n")[1]
    documented = {}
    for row in section.splitlines()[2:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        for names, values in zip(cells[0::2], cells[1::2]):
            names, values = re.findall(r"`(\w+)`", names), [v.strip() for v in values.split(",")]
            documented.update(zip(names, values * len(names) if len(values) == 1 else values))
    expected = {s.name: str(int(s.public_max)) if s.kind is int else f"{s.public_max:g}"
                for s in config_module.settings() if s.kind in (int, float)}
    assert documented == expected
