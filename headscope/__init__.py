"""headscope: find out what every attention head of a pretrained transformer does.

The public API is re-exported here; importing it is cheap (heavy modules load on first use).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "AnalysisResult", "Corpus", "DataError", "HeadscopeError", "ModelError", "CaptureError", "ModelInfo",
    "Sentence", "analyze", "load_conllu", "load_data", "load_model", "load_sample", "load_text", "SCORE_COLUMNS",
    "probe", "ProbeResult", "compare", "Comparison", "explain", "Explanation", "assign_roles", "ablate",
    "AblationResult", "importance", "context_needs", "ContextResult", "patch", "PatchResult", "load_contrast",
]

_LAZY = {
    "analyze": ("run.analyze", "analyze"),
    "AnalysisResult": ("run.result", "AnalysisResult"),
    "load_model": ("models.loading", "load_model"),
    "load_conllu": ("datasets", "load_conllu"),
    "load_data": ("datasets", "load_data"),
    "load_sample": ("datasets", "load_sample"),
    "load_text": ("datasets", "load_text"),
    "SCORE_COLUMNS": ("schema", "SCORE_COLUMNS"),
    "probe": ("probes.experiment", "probe"),
    "ProbeResult": ("probes.experiment", "ProbeResult"),
    "compare": ("run.compare", "compare"),
    "Comparison": ("run.compare", "Comparison"),
    "explain": ("run.explain", "explain"),
    "Explanation": ("run.explain", "Explanation"),
    "assign_roles": ("analysis.roles", "assign_roles"),
    "ablate": ("interventions.ablate", "ablate"),
    "AblationResult": ("interventions.ablate", "AblationResult"),
    "importance": ("interventions.importance", "importance"),
    "context_needs": ("interventions.context", "context_needs"),
    "ContextResult": ("interventions.context", "ContextResult"),
    "patch": ("interventions.patching", "patch"),
    "PatchResult": ("interventions.patching", "PatchResult"),
    "load_contrast": ("datasets.contrast", "load_contrast"),
    # the types too: the command line's first imports are this module's, and a Ctrl-C during them is a traceback
    "Corpus": ("types", "Corpus"),
    "ModelInfo": ("types", "ModelInfo"),
    "Sentence": ("types", "Sentence"),
}

from .errors import CaptureError, DataError, HeadscopeError, ModelError  # noqa: E402  (tiny, no deps)

if TYPE_CHECKING:  # pragma: no cover
    from .types import Corpus, ModelInfo, Sentence
    from .interventions.ablate import AblationResult, ablate
    from .interventions.importance import importance
    from .interventions.context import ContextResult, context_needs
    from .interventions.patching import PatchResult, patch
    from .datasets.contrast import load_contrast
    from .analysis.roles import assign_roles
    from .run.compare import Comparison, compare
    from .datasets import load_conllu, load_data, load_sample, load_text
    from .run.explain import Explanation, explain
    from .models.loading import load_model
    from .run.analyze import analyze
    from .probes.experiment import ProbeResult, probe
    from .run.result import AnalysisResult
    from .schema import SCORE_COLUMNS


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'headscope' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
