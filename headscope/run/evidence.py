"""Causal evidence for a run's roles (``headscope run --ablate``, ``--patch``): every head ablated alone, or patched
between contrast pairs, its effect set beside each of its roles; a failure is noted, and the analysis is kept
either way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import HeadscopeError

EVIDENCE_SENTENCES = 256   # sentences that --ablate reads: every head is ablated alone on each


def add_evidence(result: Any, loaded: Any, data: Any, method: str, cfg: Any) -> str | None:
    """Ablate every head of ``loaded`` alone by ``method`` on the first sentence file of ``data`` (the bundled
    sample without one) and join the effects to ``result``'s roles; the failure, in one line, if it failed."""
    from ..interventions.ablate import ablate
    from ..interventions.measures import has_lm_head

    sentences = next((p for p in data or [] if Path(p).suffix.lower() in (".conllu", ".txt")), None)
    has_lm = has_lm_head(loaded)
    measures = (["loss"] if has_lm else ["hidden"]) + (
        ["induction-loss"] if has_lm and "induction" in result.meta.tasks else [])

    def run() -> None:
        result.add_ablation(ablate(loaded, sentences, heads="each", method=method, measures=measures,
                                   max_sentences=min(cfg.max_sentences or EVIDENCE_SENTENCES, EVIDENCE_SENTENCES),
                                   bootstrap=cfg.bootstrap, seed=cfg.seed, induction_count=cfg.induction_count,
                                   induction_length=cfg.induction_length))

    return _noted(result, "ablation", "--ablate", "causal evidence", run)


def add_patching(result: Any, loaded: Any, pairs: str, cfg: Any) -> str | None:
    """Patch every head of ``loaded`` on the contrast ``pairs`` (a .jsonl file or a bundled set: exact and
    attribution patching, noising) and join the effects to ``result``'s roles; the failure, in one line, if it
    failed."""
    from ..interventions.patching import patch

    def run() -> None:
        result.add_patching(patch(loaded, pairs, directions="noising", bootstrap=cfg.bootstrap, seed=cfg.seed))

    return _noted(result, "patching", "--patch", "the patching evidence", run)


def _noted(result: Any, field: str, flag: str, what: str, run: Any) -> str | None:
    """``run()``; where it fails or is interrupted, its reason in ``result.meta.<field>`` and the one-line
    message returned (the analysis is kept either way)."""
    try:
        run()
    except HeadscopeError as exc:
        setattr(result.meta, field, {"skipped": str(exc)})
        return f"{flag}: {exc}; the report was written without {what}"
    except KeyboardInterrupt:
        setattr(result.meta, field, {"skipped": "interrupted"})
        return f"{flag} was interrupted; the report was written without {what}"
    return None
