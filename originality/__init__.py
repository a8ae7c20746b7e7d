"""originality: how original is an image to a text-to-image model?

Progressive multi-token textual inversion (Haviv et al., "Not Every Image is Worth
a Thousand Words", 2024): the fewer learned tokens the model needs to reproduce an
image, the more familiar the image is to it.

    from originality import analyze, load_model, AnalysisConfig
    report = analyze("photo.jpg", AnalysisConfig.preset("fast"), load_model("shapes"))
    print(report.label, [r.mean_distance for r in report.results])
"""

from .analysis import (
    Decision,
    DistancesReady,
    EditCheckReady,
    LengthDone,
    ReconstructionsReady,
    Started,
    analyze,
    iter_analyze,
)
from .config import DOMAINS, PRESETS, AnalysisConfig
from .inversion import InversionStep
from .models import OriginalityModel, default_model_id, load_model
from .report import Report, TokenResult

__all__ = [
    "AnalysisConfig", "DOMAINS", "PRESETS", "analyze", "iter_analyze", "load_model", "default_model_id",
    "OriginalityModel", "Report", "TokenResult", "Started", "InversionStep", "ReconstructionsReady",
    "DistancesReady", "EditCheckReady", "LengthDone", "Decision",
]
__version__ = "0.1.0"
