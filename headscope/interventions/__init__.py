"""Interventions inside the attention function: head ablation, importance and context windows."""
