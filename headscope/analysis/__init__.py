"""Streaming, mergeable scorers for attention heads (the task registry is ``headscope.tasks``)."""

from __future__ import annotations

from .base import LayerView, Scorer
from .units import UnitStore

__all__ = ["LayerView", "Scorer", "UnitStore"]
