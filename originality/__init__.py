"""originality: how original is an image to a text-to-image model?

Progressive multi-token textual inversion (Haviv et al., "Not Every Image is Worth
a Thousand Words", 2024): the fewer learned tokens the model needs to reproduce an
image, the more familiar the image is to it.

    from originality import analyze, load_model, AnalysisConfig
    report = analyze("photo.jpg", AnalysisConfig.preset("fast"), load_model("shapes"))
    print(report.label, [r.mean_distance for r in report.results])

`iter_analyze` streams the same run as events; `check_inputs`, `prepare`, `iter_length` and
`decide` are its pieces. Names are exported lazily (PEP 562): importing the package loads no
torch or diffusers, so `python -m originality --help` is quick.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> the module that defines it
_EXPORTS = {
    **dict.fromkeys(["ComparingReferences", "Decision", "DistancesReady", "CheckReady", "DeadlineExceeded",
                     "Generating", "LengthDone", "Prepared", "ReconstructionsReady", "SeedProgress", "Started",
                     "analyze", "check_inputs", "decide", "iter_analyze", "iter_length", "prepare"], "analysis"),
    **dict.fromkeys(["AnalysisConfig", "DOMAINS", "PRESETS"], "config"),
    "InversionStep": "inversion",
    **dict.fromkeys(["OriginalityModel", "load_model"], "models"),
    **dict.fromkeys(["Report", "SeedRun", "TokenResult"], "report"),
    **dict.fromkeys(["Reference", "Similarity", "load_references"], "similarity"),
    "World": "world",
    **dict.fromkeys(["default_model_id", "all_worlds", "get_world"], "worlds"),
}
__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'originality' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
