"""benchmarks/load_faults.py, small: 3 visitors at once, then kill -9 of the app mid-run and mid-save."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))


def test_load_and_faults_lose_nothing():
    import load_faults

    out = load_faults.main(["--clients", "3"])
    assert out["load"]["results"] == 3 and out["load"]["id_collisions"] == 0 and out["load"]["not_opening"] == 0
    assert out["mid_run"]["kill"] == "mid-run" and out["mid_save"]["kill"] == "mid-save"
    assert out["mid_save"]["temporary_folders_left"] == 1  # the interrupted save: a hidden folder, no run id
    assert out["totals"]["lost_runs"] == 0 and out["totals"]["half_written"] == 0
