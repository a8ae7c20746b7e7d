"""The package's structure: lazy imports, one settings schema, one registry of worlds, old reports."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from originality import worlds
from originality.config import PRESETS, AnalysisConfig, advanced_settings, settings

ROOT = Path(__file__).resolve().parent.parent
FORMAT1 = ROOT / "tests" / "data" / "report-format1"  # written by the code of format 1 (see git log)


def _python(code: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_importing_the_package_and_the_cli_loads_no_torch():
    loaded = _python("import sys, originality, originality.cli, originality.worlds\n"
                     "originality.cli.build_parser()\n"
                     "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))")
    assert loaded == "[]"
    # report.py saves embeddings itself: the inversion module (and its optimiser code) stays unloaded
    assert _python("import sys, originality.report; print('originality.inversion' in sys.modules)") == "False"
    import originality

    assert originality.iter_analyze.__module__ == "originality.analysis"  # the lazy export resolves


def test_from_dict_is_strict_and_parses_text():
    fast = PRESETS["fast"]
    with pytest.raises(ValueError, match=r"unknown settings 'stepz' in settings; known: domain, max_tokens"):
        AnalysisConfig.from_dict({"stepz": 2}, base=fast)
    config = AnalysisConfig.from_dict({"steps": "9", "learning_rate": "0.01", "lr_schedule": " cosine "}, base=fast)
    assert (config.steps, config.learning_rate, config.lr_schedule, config.batch_size) == (9, 0.01, "cosine", 8)
    with pytest.raises(ValueError, match="inversion steps per m must be a whole number"):
        AnalysisConfig.from_dict({"steps": "1.5"})
    with pytest.raises(ValueError, match="must be a JSON object"):
        AnalysisConfig.from_dict([1, 2])
    assert AnalysisConfig.from_dict(fast.to_dict()) == fast


def test_every_setting_has_a_schema_and_the_cli_and_app_come_from_it():
    from originality import cli

    names = [f.name for f in dataclasses.fields(AnalysisConfig)]
    assert [s.name for s in settings()] == names
    assert all(s.help and s.flag.startswith("--") for s in settings())
    analyze = next(a for a in cli.build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    flags = {o for a in analyze.choices["analyze"]._actions for o in a.option_strings}
    assert {s.flag for s in settings()} <= flags
    args = analyze.choices["analyze"].parse_args(["x.png", "--reconstructions", "3", "--edit-pass-fraction", "0.25"])
    assert cli.config_from_args(args).num_reconstructions == 3 and cli.config_from_args(args).edit_pass_fraction == 0.25
    assert [s.name for s in advanced_settings()][:3] == ["max_tokens", "steps", "batch_size"]
    from originality.experiments import figure6

    args = figure6.build_parser().parse_args(["--steps", "3", "--reconstructions", "2"])
    assert cli.overrides_from_args(args, figure6.OVERRIDES) == {"steps": 3, "num_reconstructions": 2}


def test_the_registry_knows_both_worlds_and_their_aliases(tmp_path):
    names = [w.name for w in worlds.all_worlds()]
    assert names == ["shapes", "stable-diffusion"]  # SD last: it owns any model no other world claims
    assert worlds.get_world("sd") is worlds.get_world("stable-diffusion")
    shapes = worlds.get_world("shapes")
    assert worlds.world_of_model(shapes.default_model) is shapes
    assert worlds.world_of_model("someone/custom-sd").name == "stable-diffusion"
    assert worlds.resolve_model_id("sd") == worlds.SD_MODEL_ID and worlds.resolve_model_id("shapes") == \
        shapes.default_model
    assert (shapes.threshold, shapes.guidance_scale, shapes.domain) == (0.3, 3.0, "shapes")
    with pytest.raises(ValueError, match="unknown model world 'dalle'; choose one of shapes, stable-diffusion"):
        worlds.get_world("dalle")
    # the CLI's help reads the world defaults from the registry
    from originality import cli

    assert "0.3 element distance for shapes" in cli._world_default("threshold")


def test_loading_the_shapes_world_says_nothing_misleading(tiny_shapes_model, capfd, caplog):
    from originality import models

    models._load(str(tiny_shapes_model), models.pick_device("cpu"), models.frozen_dtype(models.pick_device("cpu"),
                 None), "ensemble", "unused", None)
    out, err = capfd.readouterr()
    assert "Expected types for text_encoder" not in out + err + caplog.text


def test_a_format1_report_still_loads():
    from originality.report import FORMAT_VERSION, SCORED_RECONSTRUCTIONS, Report

    report = Report.load(FORMAT1)
    assert FORMAT_VERSION == 2 and report.label == "2+" and report.model["world"] == "shapes"
    assert [r.num_tokens for r in report.results] == [1, 2]
    for r in report.results:
        assert r.distance_passed is False and r.check_scored == SCORED_RECONSTRUCTIONS
        assert len(r.check_scores) == len(r.reconstructions) == 2 and r.edits == []
    assert report.summary()["format_version"] == 2 and "check_passed" in report.summary()["results"][0]


def test_every_function_local_import_in_the_package_says_why():
    """Function-local imports are for start-up cost only (the import cycles they once hid are gone, and
    `lint-imports` keeps it so): each carries `noqa: PLC0415` and a reason on its line."""
    import ast

    package = Path(__file__).resolve().parent.parent / "originality"
    unexplained = []
    for path in sorted(package.rglob("*.py")):
        source = path.read_text()
        lines = source.splitlines()
        for func in ast.walk(ast.parse(source)):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    line = lines[node.lineno - 1]
                    reason = line.split("PLC0415", 1)[1].strip(" -()") if "PLC0415" in line else ""
                    if not reason:
                        unexplained.append(f"{path.relative_to(package.parent)}:{node.lineno}: {line.strip()}")
    assert not unexplained, "function-local imports without a reason:\n" + "\n".join(unexplained)
