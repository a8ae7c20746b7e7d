"""The README runs as written: every Python code block is executed on the shapes world.

Only the sizes change, from outside the code: the `fast` preset is made tiny for the API block,
and the app that the gradio_client block talks to gets tiny ORIGINALITY_DEFAULTS and its own port
(the block's address is the one substitution). Both run in a temporary folder that sees the
repository's assets/, so the paths the README uses are the paths a user types in a checkout.
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
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)
TINY = dict(max_tokens=1, steps=2, batch_size=2, num_reconstructions=2, num_inference_steps=2, num_edits=1)
pytestmark = pytest.mark.slow


@pytest.fixture
def checkout(tmp_path, monkeypatch) -> Path:
    """A working folder with the repository's assets/, as the current directory."""
    (tmp_path / "assets").symlink_to(ROOT / "assets", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def block(marker: str) -> str:
    found = [b for b in BLOCKS if marker in b]
    assert len(found) == 1, f"expected one README Python block with {marker!r}"
    return found[0]


def test_the_readme_shows_the_registry_s_worlds_and_runs_every_python_block():
    assert len(BLOCKS) == 2  # the API and gradio_client examples; a new block needs a test here
    for world in all_worlds():
        assert f"`{world.name}`" in README


def test_python_api_block_runs_as_written(checkout, monkeypatch, capsys):
    monkeypatch.setitem(config_module.PRESETS, "fast", config_module.PRESETS["fast"].replace(**TINY))
    exec(compile(block("load_model("), "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert re.search(r"^1\+? (Original|Familiar)", out, flags=re.M), out
    assert "Decision" in out and (checkout / "runs" / "query" / "m1" / "learned_embeds.safetensors").is_file()


def test_gradio_client_block_runs_as_written(checkout, tiny_shapes_model, capsys):
    env = {"ORIGINALITY_MODEL": str(tiny_shapes_model), "ORIGINALITY_DEFAULTS": json.dumps(TINY)}
    (checkout / "server").mkdir()
    with serve_app(checkout / "server", env) as url:
        code = block("gradio_client").replace("http://127.0.0.1:7860/", url)
        exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "?run=" in out and re.search(r"^1\+? (Original|Familiar)", out, flags=re.M), out


def test_the_public_maxima_table_is_the_schemas():
    """README's table of the public app's limits lists every numeric setting with its `public_max`."""
    section = README.split("**A public page.**")[1].split("\n\n")[1]
    documented = {}
    for row in section.splitlines()[2:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        for names, values in zip(cells[0::2], cells[1::2]):
            names, values = re.findall(r"`(\w+)`", names), [v.strip() for v in values.split(",")]
            documented.update(zip(names, values * len(names) if len(values) == 1 else values))
    expected = {s.name: str(int(s.public_max)) if s.kind is int else f"{s.public_max:g}"
                for s in config_module.settings() if s.kind in (int, float)}
    assert documented == expected
