"""Streaming, mergeable scorers for attention heads, and the registry of task names."""

from __future__ import annotations

from .base import TASKS, LayerView, Scorer, make_scorers

__all__ = ["TASKS", "LayerView", "Scorer", "make_scorers"]
