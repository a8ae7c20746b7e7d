"""originality: how original is an image to a text-to-image model?

Progressive multi-token textual inversion (Haviv et al., "Not Every Image is Worth
a Thousand Words", 2024): the fewer learned tokens the model needs to reproduce an
image, the more familiar the image is to it.

    from originality import analyze, load_model, AnalysisConfig
    report = analyze("photo.jpg", AnalysisConfig.preset("fast"), load_model("shapes"))
    print(report.label, [r.mean_distance for r in report.results])

`iter_analyze` streams the same run as events; `prepare`, `iter_length` and `decide` are its
pieces, for callers that run each token length separately (one ZeroGPU call per length).
"""

from .analysis import (
    Decision,
    DistancesReady,
    EditCheckReady,
    LengthDone,
    Prepared,
    ReconstructionsReady,
    Started,
    analyze,
    decide,
    iter_analyze,
    iter_length,
    prepare,
)
from .config import DOMAINS, PRESETS, AnalysisConfig
from .inversion import InversionStep
from .models import OriginalityModel, default_model_id, load_model
from .report import Report, TokenResult

__all__ = [
    "AnalysisConfig", "DOMAINS", "PRESETS", "analyze", "iter_analyze", "load_model", "default_model_id",
    "OriginalityModel", "Report", "TokenResult", "Started", "InversionStep", "ReconstructionsReady",
    "DistancesReady", "EditCheckReady", "LengthDone", "Decision", "Prepared", "prepare", "iter_length", "decide",
]
__version__ = "0.1.0"
