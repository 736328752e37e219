"""What an intervention measures: the measures (losses and hidden-state distances) and their no-effect rule, the
model checked to be editable, one forward with an edit, and its readings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from ..errors import HeadscopeError

MEASURES = ("loss", "hidden", "embedding", "induction-loss", "pronoun-loss", "syntax-loss")
LOSSES = ("loss", "induction-loss", "pronoun-loss", "syntax-loss")     # measures read from the LM head
MLM_SHARE = 0.15          # the share of tokens an encoder's masked-token loss masks (seeded)

# A distance (hidden, embedding) is never below zero, so its interval cannot include zero: under this it is nothing.
NEGLIGIBLE_DISTANCE = 1e-3
SIGNED = LOSSES                           # measures whose change can go either way
NO_EFFECT_RULE = (f"a loss whose interval includes 0, or a hidden-state or embedding change under "
                  f"{NEGLIGIBLE_DISTANCE:g}")


def no_effect(effect: float, ci_low: float, ci_high: float, measure: str = "loss") -> bool:
    """Whether removing the heads changed nothing that the data tells apart from chance: for a loss, its
    interval includes zero (without one, the effect is not above zero); for a distance (1 - cosine), its upper
    bound (or the effect) is under ``NEGLIGIBLE_DISTANCE``."""
    import math

    if measure not in SIGNED:
        return (effect if math.isnan(ci_high) else ci_high) < NEGLIGIBLE_DISTANCE
    if math.isnan(ci_low) or math.isnan(ci_high):
        return not effect > 0
    return ci_low <= 0 <= ci_high


def check_measure_names(measures: Sequence[str]) -> None:
    """Every name one of ``MEASURES``, else an error listing them."""
    for m in measures:
        if m not in MEASURES:
            raise HeadscopeError(f"unknown measure {m!r}; use one of {', '.join(MEASURES)}")


def model_measures(loaded: Any, measures: Sequence[str] | None) -> list[str]:
    """``measures`` checked against what the model can be measured by (default: ``loss`` where it has an LM head,
    else ``hidden`` and ``embedding``)."""
    info = loaded.info
    has_lm = has_lm_head(loaded)
    measures = list(measures) if measures else (["loss"] if has_lm else ["hidden", "embedding"])
    check_measure_names(measures)
    for m in measures:
        if m in LOSSES and not has_lm:
            raise HeadscopeError(f"{info.name}: measure {m!r} needs a language-model head, which this model has "
                                 f"not; use hidden or embedding")
        if m == "induction-loss" and not info.is_decoder:
            raise HeadscopeError(f"{info.name}: measure induction-loss needs a causal language model (an encoder "
                                 f"sees the second copy's own tokens); use loss, hidden or embedding")
    return measures


def has_lm_head(loaded: Any) -> bool:
    """Whether the loaded model has a language-model head (its losses can be read)."""
    return getattr(loaded.model, "get_output_embeddings", lambda: None)() is not None


def editable_model(model: Any, what: str) -> Any:
    """``model`` loaded, checked to run on headscope's attention function (where edits happen) and to be an
    encoder or a decoder; ``what`` names the caller in the errors."""
    from ..capture.attention import VIA_INTERFACE
    from ..models.loading import load_model

    loaded = load_model(model)
    info = loaded.info
    if info.attention != VIA_INTERFACE:
        raise HeadscopeError(f"{info.name}: {what} runs inside headscope's attention function, and this model is "
                             f"read through {info.attention}; use a model that supports transformers' "
                             f"AttentionInterface")
    if getattr(loaded.model.config, "is_encoder_decoder", False):
        raise HeadscopeError(f"{info.name}: {what} of encoder-decoders (T5, BART) is not supported yet; use an "
                             f"encoder or a decoder")
    return loaded


@dataclass
class Unit:
    """One forward's readings (a unit: a sentence or a generated sequence)."""

    nll: Any = None        # [units, tok] the loss of each position's target (a decoder: the token there, from
    #                        the tokens before it; a masked LM: the original token at a masked position)
    hidden: Any = None     # [units, tok, dim] final hidden states
    mask: Any = None       # [units, tok] real tokens


def edited_forward(loaded: Any, batch: dict, edit: Any, *, real: Any = None, grad: bool = False) -> Unit:
    """One forward of ``batch`` (its ``masked_ids`` where it has them: a masked LM's inputs) with ``edit`` in the
    attention function (None: the model as it is); ``grad``: with autograd (for gates), else in inference mode."""
    import torch

    from ..capture.attention import NAME, Session, session
    from .edits import MeanRecorder

    model = loaded.model
    if getattr(model.config, "_attn_implementation", None) != NAME:
        model.set_attn_implementation(NAME)
    state = Session(modules=list(loaded.attention_modules), edit=edit, real=real)
    if isinstance(edit, MeanRecorder):
        edit.state = state
    kwargs = {"use_cache": False} if loaded.info.is_decoder else {}
    ids = batch["input_ids"]
    with (torch.enable_grad() if grad else torch.inference_mode()), session(state):
        out = model(input_ids=batch.get("masked_ids", ids), attention_mask=batch["attention_mask"],
                    output_hidden_states=True, **kwargs)
    hidden = out.hidden_states[-1] if getattr(out, "hidden_states", None) else out.last_hidden_state
    unit = Unit(hidden=hidden.float(), mask=batch["attention_mask"].bool())
    logits = getattr(out, "logits", None)
    if logits is not None:
        logits = logits.float()
        if loaded.info.is_decoder:
            nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
            unit.nll = torch.cat([torch.zeros_like(nll[:, :1]), nll], 1)
        else:
            unit.nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids, reduction="none")
    return unit


def readings(measure: str, base: Unit, ablated: Unit, scored: Any) -> tuple[Any, Any, Any]:
    """Per-unit ``(base numerator, ablated numerator, denominator)`` of ``measure``; ``scored`` ``[units, tok]``:
    the positions it reads (a loss: the targets whose loss counts; hidden: the real tokens)."""
    import torch

    weight = scored.float()
    if measure in LOSSES:
        return (base.nll * weight).sum(1), (ablated.nll * weight).sum(1), weight.sum(1)
    if measure == "hidden":
        dist = 1 - torch.nn.functional.cosine_similarity(base.hidden, ablated.hidden, dim=-1)
        return torch.zeros_like(weight[:, 0]), (dist * weight).sum(1), weight.sum(1)
    mask = base.mask.float()
    pooled = [(u.hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True) for u in (base, ablated)]
    dist = 1 - torch.nn.functional.cosine_similarity(pooled[0], pooled[1], dim=-1)
    return torch.zeros_like(dist), dist, torch.ones_like(dist)
