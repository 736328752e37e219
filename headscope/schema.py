"""The one declaration of the tidy result-table columns and helpers that build such tables."""

from __future__ import annotations

from typing import Any, Iterable

# Every score table has these columns, in this order. Head rows have integer layer/head and an
# empty baseline; baseline rows name the baseline (e.g. "offset:-1") and have empty layer/head, except a
# baseline that each head has of its own (syntax's "own-position": what the head's positional habit predicts),
# whose rows name their head.
# ci_low/ci_high: 95% bootstrap interval over sentences (documents for coreference). p_value: on
# head rows of tasks with baselines, the one-sided paired bootstrap test that the head beats the
# best baseline of its relation/direction; q_value: that p after Benjamini–Hochberg over every
# head row of the same model, dataset, task and weighting. weighting: what the maps read, ``weight`` (attention
# weights) or ``norm`` (value-weighted attention, ``capture.norms``); tables read back without it are ``weight``.
SCORE_COLUMNS = [
    "model", "dataset", "task", "relation", "direction", "metric", "weighting", "baseline",
    "layer", "head", "kv_head", "score", "ci_low", "ci_high", "p_value", "q_value", "n", "n_reachable",
]
INT_COLUMNS = ("layer", "head", "kv_head", "n", "n_reachable")
STR_COLUMNS = ("model", "dataset", "task", "relation", "direction", "metric", "weighting", "baseline")
# The baseline of a head's own positional prediction of a syntax relation (``analysis.syntax``): the one
# baseline whose rows name their head.
OWN = "own-position"


def frame(rows: Iterable[dict[str, Any]]):
    """Rows (dicts with any subset of SCORE_COLUMNS) -> DataFrame with the fixed columns and dtypes."""
    import pandas as pd

    df = pd.DataFrame(list(rows))
    for col in SCORE_COLUMNS:
        if col not in df.columns:
            df[col] = None
    df = df[SCORE_COLUMNS]
    for col in INT_COLUMNS:
        df[col] = pd.array(df[col], dtype="Int64")
    for col in STR_COLUMNS:
        df[col] = df[col].astype("string")
    for col in ("score", "ci_low", "ci_high", "p_value", "q_value"):
        df[col] = df[col].astype("float64")
    return df


def weighted(scores: Any, weighting: str = "weight") -> Any:
    """The rows of one weighting (rows that name none, from tables written before there were two, are
    ``weight``)."""
    if "weighting" not in scores.columns:
        return scores if weighting == "weight" else scores.iloc[:0]
    return scores[scores["weighting"].fillna("weight") == weighting]


def head_label(layer: int, head: int) -> str:
    """0-based ``L7.H9`` label used in reports."""
    return f"L{int(layer)}.H{int(head)}"


def parse_head_label(text: str) -> tuple[int, int] | None:
    """``"L7.H9"`` (spaces around allowed) as ``(7, 9)``; None for anything else."""
    import re

    m = re.fullmatch(r"\s*L(\d+)\.H(\d+)\s*", str(text))
    return (int(m.group(1)), int(m.group(2))) if m else None
