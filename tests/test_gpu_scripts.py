"""The GPU scripts' commands parse: a lent GPU is scarce (15 minutes a session at most), so a script that stops at
a usage error there loses the session's only run. Each `python -m originality...` command of benchmarks/*.sh is
parsed here by the module's own argument parser, with the shell's variables replaced by their defaults."""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).resolve().parent.parent / "benchmarks").glob("*.sh"))


def commands(script: Path) -> list[tuple[str, list[str]]]:
    """(module, argv) of each `-m originality...` command, continuation lines joined, the shell's ${VAR:-default}
    replaced by its default and other variables by a placeholder; the command ends at a redirection or pipe."""
    out = []
    for line in script.read_text().replace("\\\n", " ").splitlines():
        found = re.search(r"-m (originality(?:\.experiments\.\w+)?) (.*)", line)
        if not found:
            continue
        rest = re.split(r"\s(?:[0-9]?>|\||&)", " " + found.group(2))[0]
        rest = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", rest)
        rest = re.sub(r"\$\{?\w+\}?", "x", rest)
        out.append((found.group(1), shlex.split(rest)))
    return out


def parser_of(module: str):
    return importlib.import_module("originality.cli" if module == "originality" else module).build_parser()


def test_the_scripts_hold_the_commands_this_test_reads():
    found = {module for script in SCRIPTS for module, _ in commands(script)}
    assert {"originality", "originality.experiments.train", "originality.experiments.reliability"} <= found


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_command_of_a_gpu_script_parses(script: Path):
    for module, argv in commands(script):
        parser_of(module).parse_args(argv)  # a usage error exits (SystemExit) and fails the test


def test_a_broken_flag_is_caught():
    with pytest.raises(SystemExit):
        parser_of("originality.experiments.train").parse_args(["--text-depth", "6"])
    module, argv = commands(SCRIPTS[[p.name for p in SCRIPTS].index("gpu_shapes_model.sh")])[0]
    assert module == "originality.experiments.train" and argv[argv.index("--text-layers") + 1] == "6"
