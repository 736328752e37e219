"""headscope's attention function, registered with transformers' AttentionInterface: each layer's probabilities
computed exactly as the model does (mask, window, softcap, sinks, position bias), handed to the capture session."""

from __future__ import annotations

import contextvars
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

NAME = "headscope"
# What run.json and the report say about how attention was read.
VIA_INTERFACE = "attention function (transformers AttentionInterface)"
VIA_HOOKS = "forward hooks on eager attention modules"


@dataclass
class Call:
    """What one attention call showed about its layer (the first forward of a model)."""

    module: Any
    query_heads: int
    kv_heads: int
    causal: bool | None    # from the mask: None when the mask cannot tell (a single query row)
    sinks: bool
    softcap: float | None
    sliding_window: int | None


@dataclass
class Session:
    """One capture: what to do with each layer's probabilities.

    A layer is the position of its attention call within the forward (``start_forward`` resets it),
    so that models sharing one module across layers (ALBERT) are read layer by layer too.
    ``on_attention(layer, probs)`` receives ``[batch, head, query, key]`` float32 probabilities (rows
    sum to 1 over the keys, or to 1 minus the sink's share where the model has attention sinks).
    ``modules``: the module expected at each call (from loading), checked; empty: discovery, where
    each call is recorded in ``calls``.
    """

    modules: list = field(default_factory=list)
    on_attention: Callable[[int, Any], None] | None = None
    calls: list[Call] = field(default_factory=list)
    position: int = 0
    visible: Any = None   # [batch, rows] keys each row of the current block may see, from its mask
    block_rows: int | None = None   # query rows per block; None: the whole map at once
    row_start: int = 0              # first query row of the block being handed over

    def start_forward(self) -> None:
        self.position = 0

    def next_layer(self, module: Any) -> int:
        layer = self.position
        self.position += 1
        if self.modules and (layer >= len(self.modules) or self.modules[layer] is not module):
            from .errors import CaptureError

            raise CaptureError(f"attention call {layer} came from {type(module).__name__}, not the module seen there "
                               f"when the model was loaded; load the model again")
        return layer


_session: contextvars.ContextVar[Session | None] = contextvars.ContextVar("headscope_attention", default=None)


@contextmanager
def session(state: Session) -> Iterator[Session]:
    """Make ``state`` the session that headscope's attention function reports to, inside the block."""
    token = _session.set(state)
    try:
        yield state
    finally:
        _session.reset(token)


def _mask_function(*args: Any, **kwargs: Any) -> Any:
    """transformers' boolean SDPA mask, always materialised (never skipped for ``is_causal``): the
    probabilities need the exact mask, padding, causality and sliding window included."""
    from transformers.masking_utils import sdpa_mask

    kwargs.update(allow_is_causal_skip=False, allow_is_bidirectional_skip=False)
    return sdpa_mask(*args, **kwargs)


def register() -> None:
    """Register the attention and mask functions under ``NAME`` (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, attention_forward)
    AttentionMaskInterface.register(NAME, _mask_function)


def probabilities(query: Any, key: Any, attention_mask: Any, scaling: float | None, *, softcap: float | None = None,
                  sinks: Any = None, position_bias: Any = None) -> Any:
    """Attention probabilities ``[batch, head, query, key]`` in float32, as the model computes them.

    ``key`` may have fewer heads than ``query`` (GQA/MQA: each KV head serves a contiguous group).
    ``attention_mask`` is boolean (True = may attend) or additive; ``softcap`` squashes the scores
    (Gemma 2); ``sinks`` are per-head logits of a virtual key that takes its share of each row and is
    then dropped (GPT-OSS); ``position_bias`` is added to the scores (T5). Masked scores get the
    float32 minimum, as in eager attention, so a row with no visible key (padding) is uniform rather
    than NaN; scorers never read such rows.
    """
    import torch

    n_rep = query.shape[1] // key.shape[1]
    if n_rep > 1:
        key = key.repeat_interleave(n_rep, dim=1)
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    # scaling the queries first costs [q, d] multiplications instead of [q, k]
    scores = torch.matmul(query.float() * scale, key.float().transpose(-1, -2))
    if softcap:
        scores = torch.tanh(scores / softcap) * softcap
    if position_bias is not None:
        scores = scores + position_bias.float()
    if attention_mask is not None:
        mask = attention_mask[..., : key.shape[-2]]
        if mask.dtype == torch.bool:
            scores.masked_fill_(~mask, torch.finfo(torch.float32).min)
        else:
            scores += mask.float()
    if sinks is not None:
        sink = sinks.float().reshape(1, -1, 1, 1).expand(scores.shape[0], -1, scores.shape[2], 1)
        probs = torch.softmax(torch.cat([scores, sink], dim=-1), dim=-1)[..., :-1]
    else:
        probs = torch.softmax(scores, dim=-1)
    return probs


def _is_causal(attention_mask: Any) -> bool | None:
    if attention_mask is None or attention_mask.dtype.is_floating_point or attention_mask.shape[-2] < 2:
        return None
    # the first query of the first sequence: a decoder lets it see only itself
    return not bool(attention_mask[0, 0, 0, 1:].any())


def attention_forward(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, dropout: float = 0.0,
                      scaling: float | None = None, is_causal: bool | None = None, **kwargs: Any) -> tuple[Any, None]:
    """The attention function transformers calls for every layer once the model uses ``NAME``.

    Inside a capture session: the probabilities go to the session, and the output is their product
    with the values (one QK^T serves both). Outside one, it is transformers' SDPA, so a model left with
    this implementation still runs as usual.
    """
    import torch

    state = _session.get()
    if state is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    softcap = kwargs.get("softcap")
    sinks = kwargs.get("s_aux")
    bias = kwargs.get("position_bias")
    layer = state.next_layer(module)
    if not state.modules:
        state.calls.append(Call(module, query.shape[1], key.shape[1], _is_causal(attention_mask), sinks is not None,
                                softcap, kwargs.get("sliding_window")))
    n_rep = query.shape[1] // value.shape[1]
    values = value.repeat_interleave(n_rep, dim=1) if n_rep > 1 else value
    q_len = query.shape[2]
    step = q_len if not state.block_rows else max(1, state.block_rows)
    outputs = []
    # Query rows in blocks: no [head, T, T] tensor exists when the session asks for blocks.
    for r0 in range(0, q_len, step):
        rows = slice(r0, r0 + step)
        mask = attention_mask[:, :, rows] if attention_mask is not None and attention_mask.dim() == 4 else attention_mask
        probs = probabilities(query[:, :, rows], key, mask, scaling, softcap=softcap, sinks=sinks,
                              position_bias=bias[:, :, rows] if bias is not None and bias.dim() == 4 else bias)
        if state.on_attention is not None:
            state.row_start = r0
            state.visible = (mask[..., : key.shape[-2]].sum(-1)[:, 0] if mask is not None
                             and mask.dtype == torch.bool and mask.dim() == 4 else None)
            state.on_attention(layer, probs)
        outputs.append(torch.matmul(probs.to(values.dtype), values))
    out = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)
    return out.transpose(1, 2).contiguous(), None
