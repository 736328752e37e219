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
    queries: int = 0       # query and key positions of the call (cross-attention has keys of another input)
    keys: int = 0
    model_layer: int | None = None   # a hybrid's model layer of the call (set by loading); None: the call's position


@dataclass
class Session:
    """One capture: what to do with each layer's probabilities.

    A layer is the position of its attention call within the forward (``start_forward`` resets it),
    so that models sharing one module across layers (ALBERT) are read layer by layer too.
    ``on_attention(layer, probs)`` receives ``[batch, head, query, key]`` float32 probabilities (rows
    sum to 1 over the keys, or to 1 minus the sink's share where the model has attention sinks). In row
    blocks of a decoder, a block's keys end at its last row (later keys get no weight from it). The
    probabilities may live in a buffer that the next block overwrites: use them inside the call.
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
    causal: bool = False            # a decoder: a block of rows needs the keys up to its last row only
    row_stats: bool = False         # compute each block's RowStats (entropy, confidence) for ``rows``
    rows: Any = None                # RowStats of the block being handed over, when asked for
    visible_of: Any = None          # (mask, block, counts, mask block): the last mask seen and its counts
    key_mask: Any = None            # [batch, rows, keys] bool: the model's mask of the block handed over, if any
    watch: Any = None               # a set of modules: only their calls are captured (an encoder-decoder's
    #                                 decoder self-attention); the others run transformers' SDPA
    real: Any = None                # [batch, query] bool: the rows that scorers read (not padding); None: all
    # edit(layer, output, inputs) -> output: an intervention on the layer's output ``[batch, query, head, dim]``
    # (before the output projection), given the call's ``Inputs``; None: the output is left as computed
    edit: Callable[[int, Any, "Inputs"], Any] | None = None
    # on_norm(layer, shares): each block's value-weighted rows (``norms.norm_view``), after on_attention
    # of the same block; needs ``gram`` (``norms.OutputProjections.gram``, one ``[head, dim, dim]`` per layer)
    on_norm: Callable[[int, Any], None] | None = None
    gram: list | None = None
    value_norms: bool = False       # also hand each block's key value norms over (``written``); needs ``gram``
    written: Any = None             # [batch, head, keys] of the block handed over, when ``value_norms``
    # on_output(layer, output): the layer's output ``[batch, query, head, dim]`` (finding its output projection)
    on_output: Callable[[int, Any], None] | None = None

    def start_forward(self) -> None:
        self.position = 0

    def next_layer(self, module: Any) -> int:
        layer = self.position
        self.position += 1
        if self.modules and (layer >= len(self.modules) or self.modules[layer] is not module):
            from ..errors import CaptureError

            raise CaptureError(f"attention call {layer} came from {type(module).__name__}, not the module seen there "
                               f"when the model was loaded; load the model again")
        return layer


@dataclass
class Inputs:
    """One attention call's inputs, as an edit of its output sees them: ``query`` ``[batch, head, q, dim]``,
    ``key`` and ``value`` ``[batch, kv_head, k, dim]`` (not repeated), the model's mask (boolean, additive, or
    None where transformers skipped a plain causal or full one), and the rest of what the model passed."""

    module: Any
    query: Any
    key: Any
    value: Any
    attention_mask: Any
    scaling: float
    causal: bool
    softcap: Any = None
    sinks: Any = None
    position_bias: Any = None


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
    """transformers' boolean SDPA mask. Materialised (not skipped for ``is_causal``) for whole maps, whose
    probabilities need the exact mask; a capture in row blocks lets transformers skip a plain causal or
    full mask (no padding, no window that bites), and each block builds its own rows of it, so that no
    ``[T, T]`` mask exists for a long input either."""
    from transformers.masking_utils import sdpa_mask

    state = _session.get()
    skip = state is not None and bool(state.block_rows)
    kwargs.update(allow_is_causal_skip=skip, allow_is_bidirectional_skip=skip)
    return sdpa_mask(*args, **kwargs)


def register() -> None:
    """Register the attention and mask functions under ``NAME`` (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, attention_forward)
    AttentionMaskInterface.register(NAME, _mask_function)


def block_probabilities(query: Any, keys_t: Any, attention_mask: Any, *, softcap: Any = None, sinks: Any = None,
                        position_bias: Any = None, visible_from: int = 0, mask_from: int = 0,
                        scores_out: Any = None, probs_out: Any = None) -> tuple[Any, Any]:
    """Probabilities ``[batch, head, query, key]`` in float32, as the model computes them, and the
    (masked) scores, for one block of query rows against keys ``keys_t`` ``[batch, head, dim, key]``
    (GQA/MQA keys already repeated); ``query`` is scaled and float32 already.

    ``attention_mask`` is boolean (True = may attend) or additive; ``softcap`` squashes the scores
    (Gemma 2); ``sinks`` are per-head logits of a virtual key that takes its share of each row and is
    then dropped (GPT-OSS); ``position_bias`` is added to the scores (T5). Masked scores get the
    float32 minimum, as in eager attention, so a row with no visible key (padding) is uniform rather
    than NaN; scorers never read such rows.

    ``visible_from``: the caller knows that every key left of this column is visible to every row
    unless the mask says otherwise somewhere there, which is checked; then only the columns from there
    on are masked (a decoder's block: the triangle at its diagonal). ``mask_from``: a boolean mask that
    covers only the keys from this column on (every key left of it is visible, unchecked: the implicit
    causal rule's triangle). ``scores_out``/``probs_out``:
    buffers to compute into (a long input's blocks reuse them).
    """
    import torch

    scores = torch.matmul(query, keys_t, out=scores_out)
    if softcap:
        scores = torch.tanh(scores / softcap) * softcap
    if position_bias is not None:
        scores = scores + position_bias.float()
    if attention_mask is not None:
        mask = attention_mask[..., : keys_t.shape[-1]]
        if mask_from:
            scores[..., mask_from:].masked_fill_(~mask, torch.finfo(torch.float32).min)
        elif mask.dtype == torch.bool:
            c0 = visible_from if 0 < visible_from < mask.shape[-1] and bool(mask[..., :visible_from].all()) else 0
            scores[..., c0:].masked_fill_(~mask[..., c0:], torch.finfo(torch.float32).min)
        else:
            scores += mask.float()
    if sinks is not None:
        sink = sinks.float().reshape(1, -1, 1, 1).expand(scores.shape[0], -1, scores.shape[2], 1)
        return torch.softmax(torch.cat([scores, sink], dim=-1), dim=-1)[..., :-1], scores
    if probs_out is not None:
        return torch.softmax(scores, dim=-1, out=probs_out), scores
    return torch.softmax(scores, dim=-1), scores


@dataclass
class RowStats:
    """Per-row facts of one attention block, ``[batch, head, rows]`` each: entropy in nats over the keys
    (a sink's share excluded) and the largest weight."""

    entropy: Any
    confidence: Any
    lse: Any = None       # each row's log softmax normaliser, where the entropy came from it (``_row_facts``)


def row_stats(probs: Any) -> RowStats:
    """Row facts read from probabilities alone (forward hooks, or models with softcap or position bias)."""
    import torch

    return RowStats(torch.special.entr(probs).sum(-1), probs.amax(-1))


def _log_normaliser(probs: Any, scores: Any, confidence: Any, diagonal_from: int | None, real: Any = None) -> Any:
    """Each row's logarithm of its softmax normaliser (``[batch, head, rows]``): ``s_j - log p_j`` for any
    visible key j. Self-attention reads it at the row's own key (``diagonal_from``: the column of the
    block's first row), which saves a pass over the scores; rows whose own key holds too little weight
    for a precise logarithm, and other calls, take the largest score: ``max s - log max p``. ``real``
    (``[batch, rows]``): the rows that are read; the others (padding, which often may not see itself)
    keep whatever the own key gives, even infinity."""
    import torch

    if diagonal_from is None:
        return scores.amax(-1) - torch.log(confidence)
    n = probs.shape[-2]
    own_p = probs[..., diagonal_from:diagonal_from + n].diagonal(dim1=-2, dim2=-1)
    lse = scores[..., diagonal_from:diagonal_from + n].diagonal(dim1=-2, dim2=-1) - torch.log(own_p)
    weak = own_p < 1e-30    # also rows that may not see themselves
    if real is not None:
        weak &= real.unsqueeze(1)
    if probs.device.type != "cpu":                      # no host round trip on an accelerator
        return torch.where(weak, scores.amax(-1) - torch.log(confidence), lse)
    if bool(weak.any()):
        lse[weak] = scores[weak].amax(-1) - torch.log(confidence[weak])
    return lse


def _is_causal(attention_mask: Any) -> bool | None:
    """Whether the mask is causal: the first query of the first sequence sees only itself in a decoder. A boolean
    mask hides a key with False, an additive one (ALiBi Falcon adds its position bias to it) with the float
    minimum (or -inf). None when the mask cannot tell (none, or a single query row)."""
    import torch

    if attention_mask is None or attention_mask.dim() != 4 or attention_mask.shape[-2] < 2:
        return None
    first = attention_mask[0, 0, 0, 1:]
    if attention_mask.dtype.is_floating_point:
        return bool((first <= torch.finfo(attention_mask.dtype).min / 2).all())
    return not bool(first.any())


def attention_forward(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, dropout: float = 0.0,
                      scaling: float | None = None, is_causal: bool | None = None, **kwargs: Any) -> tuple[Any, None]:
    """The attention function transformers calls for every layer once the model uses ``NAME``.

    Inside a capture session: the probabilities go to the session, and the output is their product
    with the values (one QK^T serves both). Outside one, it is transformers' SDPA, so a model left with
    this implementation still runs as usual.
    """
    state = _session.get()
    if state is None or (state.watch is not None and module not in state.watch):
        return _sdpa(module, query, key, value, attention_mask, dropout, scaling, is_causal, kwargs)
    layer = state.next_layer(module)
    if state.edit is not None:
        return _edited(state, layer, module, query, key, value, attention_mask, dropout, scaling, is_causal, kwargs)
    softcap = kwargs.get("softcap")
    sinks = kwargs.get("s_aux")
    if not state.modules:
        state.calls.append(Call(module, query.shape[1], key.shape[1], _is_causal(attention_mask), sinks is not None,
                                softcap, kwargs.get("sliding_window"), query.shape[2], key.shape[2]))
    causal = bool(is_causal if is_causal is not None else getattr(module, "is_causal", False))
    return _read_layer(state, layer, query, key, value, attention_mask, scaling, causal, softcap, sinks,
                       kwargs.get("position_bias")), None


def _sdpa(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, dropout: float, scaling: Any,
          is_causal: Any, kwargs: dict) -> tuple[Any, Any]:
    """transformers' own SDPA attention, as the model would run it without headscope."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                  is_causal=is_causal, **kwargs)


def _edited(state: Session, layer: int, module: Any, query: Any, key: Any, value: Any, attention_mask: Any,
            dropout: float, scaling: Any, is_causal: Any, kwargs: dict) -> tuple[Any, None]:
    """The layer's output with the session's edit applied: computed by SDPA when nothing reads the
    probabilities and the model adds nothing to the scores; otherwise by this function, which also hands
    the probabilities to the session."""
    softcap = kwargs.get("softcap")
    sinks = kwargs.get("s_aux")
    bias = kwargs.get("position_bias")
    causal = bool(is_causal if is_causal is not None else getattr(module, "is_causal", False))
    inputs = Inputs(module, query, key, value, attention_mask, query.shape[-1] ** -0.5 if scaling is None
                    else scaling, causal and query.shape[2] > 1, softcap, sinks, bias)
    if state.on_attention is None and softcap is None and sinks is None and bias is None:
        out, _ = _sdpa(module, query, key, value, attention_mask, dropout, scaling, is_causal, kwargs)
        return state.edit(layer, out, inputs), None
    edit, state.edit = state.edit, None
    try:
        state.position -= 1     # the call below counts this layer again
        out, _ = attention_forward(module, query, key, value, attention_mask, dropout, scaling, is_causal,
                                   **kwargs)
    finally:
        state.edit = edit
    return edit(layer, out, inputs), None


def _read_layer(state: Session, layer: int, query: Any, key: Any, value: Any, attention_mask: Any, scaling: Any,
                causal: bool, softcap: Any, sinks: Any, bias: Any) -> Any:
    """The layer's output ``[batch, query, head, dim]`` as P·V, its probabilities computed (and handed to the
    session) in blocks of query rows. ``causal``: the module's (or the call's) causal flag."""
    import torch

    n_rep = query.shape[1] // value.shape[1]
    keys = key.repeat_interleave(n_rep, dim=1) if n_rep > 1 else key
    values = value.repeat_interleave(n_rep, dim=1) if n_rep > 1 else value
    b, heads, q_len, _ = query.shape
    k_len = keys.shape[2]
    blocked = bool(state.block_rows) and state.block_rows < q_len
    step = max(1, state.block_rows) if blocked else q_len
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    queries = query.float() * scale   # scaling the queries first costs [q, d] multiplications, not [q, k]
    keys_t = keys.float().transpose(-1, -2)
    if blocked:
        keys_t = keys_t.contiguous()  # each block reads a prefix of the keys' columns
    # row facts are read from plain scores, which the model changes no further after q k (see _row_facts)
    plain = softcap is None and bias is None and (attention_mask is None or attention_mask.dtype == torch.bool)
    facts = state.row_stats and state.on_attention is not None
    out = values.new_empty((b, heads, q_len, values.shape[-1])) if blocked else None
    buffers: tuple = (None, None)
    if blocked and sinks is None:  # the blocks of one layer reuse two buffers (scores, probabilities), or one
        scores_buffer = queries.new_empty(b * heads * step * k_len)   # (softmax in place) where no row facts read
        buffers = (scores_buffer, queries.new_empty(b * heads * step * k_len) if facts else scores_buffer)   # scores
    # A causal mask that transformers skipped (no padding, no window that bites): each block makes its rows.
    implicit = attention_mask is None and q_len > 1 and k_len == q_len and causal
    triangle = None
    real = state.real if state.real is not None and tuple(state.real.shape) == (b, q_len) else None
    norms = share_buffer = None
    if state.on_norm is not None or state.value_norms:
        from .norms import norm_view, value_norms

        norms = value_norms(values, state.gram[layer])       # [batch, head, key]: what each key's value writes
        if blocked and state.on_norm is not None:   # the blocks' norm views share one buffer, as their weights
            share_buffer = queries.new_empty(b * heads * step * k_len)
    # Query rows in blocks: no [head, T, T] tensor exists when the session asks for blocks. A decoder's
    # block needs only the keys up to its last row.
    for r0 in range(0, q_len, step):
        r1 = min(q_len, r0 + step)
        width = min(k_len, r1) if blocked and state.causal else k_len
        mask, mask_from, triangle = _block_mask(attention_mask, implicit, triangle, r0, r1, step, width,
                                                query.device)
        shape = (b, heads, r1 - r0, width)
        s_out, p_out = ((buf[: b * heads * (r1 - r0) * width].view(shape) for buf in buffers)
                        if buffers[0] is not None else (None, None))
        probs, scores = block_probabilities(
            queries[:, :, r0:r1], keys_t[..., :width], mask, softcap=softcap, sinks=sinks,
            position_bias=bias[:, :, r0:r1, :width] if bias is not None and bias.dim() == 4 else bias,
            visible_from=r0 if blocked and state.causal and queries.device.type == "cpu" else 0, mask_from=mask_from,
            scores_out=s_out, probs_out=p_out)
        rows_out = torch.matmul(probs.to(values.dtype), values[:, :, :width])
        if blocked:
            out[:, :, r0:r1] = rows_out
        else:
            out = rows_out
        if state.on_attention is None:
            continue
        state.row_start = r0
        _share_visible(state, attention_mask, mask if not implicit else None, (r0, r1, width))
        state.rows = None
        if facts:
            state.rows = _row_facts(probs, scores, plain, sinks is not None, r0 if k_len == q_len else None,
                                    real[:, r0:r1] if real is not None else None)
        state.written = norms[..., :width] if state.value_norms else None
        state.on_attention(layer, probs)
        if state.on_norm is not None:
            # the norm view's row facts from the weights' normaliser where there is one, else read from it
            lse = None if state.rows is None else state.rows.lse
            shares, _, norm_facts = norm_view(probs, norms[..., :width], scores if lse is not None else None, lse,
                                         out=None if share_buffer is None else
                                         share_buffer[: probs.numel()].view(probs.shape))
            state.rows = None if norm_facts is None else RowStats(*norm_facts)
            state.on_norm(layer, shares)
    out = out.transpose(1, 2).contiguous()
    if state.on_output is not None:
        state.on_output(layer, out)
    return out


def _block_mask(attention_mask: Any, implicit: bool, triangle: Any, r0: int, r1: int, step: int, width: int,
                device: Any) -> tuple[Any, int, Any]:
    """The mask of query rows ``r0:r1`` over the first ``width`` keys; the column it starts at (``mask_from``
    of ``block_probabilities``: 0, or the block's first row for the implicit causal rule's triangle); and that
    triangle, made at the layer's first block and the same for all of them (``triangle``: the one made so
    far, or None)."""
    import torch

    if attention_mask is not None and attention_mask.dim() == 4:
        return attention_mask[:, :, r0:r1, :width], 0, triangle
    if implicit and width == r1:
        # the causal rule's rows: keys left of the block are visible, the square at its diagonal is a triangle
        if triangle is None:
            pos = torch.arange(step, device=device)
            triangle = (pos <= pos.unsqueeze(1)).view(1, 1, step, step)
        return triangle[..., : r1 - r0, : r1 - r0], r0, triangle
    if implicit:
        rows_at = torch.arange(r0, r1, device=device).unsqueeze(1)
        return (torch.arange(width, device=device) <= rows_at).view(1, 1, r1 - r0, width), 0, triangle
    return attention_mask, 0, triangle


def _share_visible(state: Session, attention_mask: Any, mask: Any, block: tuple[int, int, int]) -> None:
    """Tell the session which keys each row of the block ``(r0, r1, width)`` may see (``visible``,
    ``key_mask``), from the model's boolean mask ``mask`` of the block (None: the plain causal rule, or no
    mask). Layers of one kind share one mask: its visible keys are counted once per forward and block, and
    scorers see the same mask object (the implicit one is the plain causal rule they know)."""
    import torch

    state.visible = state.key_mask = None
    if mask is not None and mask.dtype == torch.bool and mask.dim() == 4:
        seen = state.visible_of
        if seen is None or seen[0] is not attention_mask or seen[1] != block:
            seen = state.visible_of = (attention_mask, block, mask.sum(-1)[:, 0], mask[:, 0])
        state.visible = seen[2]
        state.key_mask = seen[3]


def _row_facts(probs: Any, scores: Any, plain: bool, sinks: bool, diagonal_from: int | None, real: Any) -> RowStats:
    """A block's ``RowStats``. Plain scores (no softcap, no position bias, no additive mask): entropy =
    logsumexp * (row mass) - sum_j p_j s_j, where logsumexp is max s - log max p and sum_j p_j s_j is one pass
    over the scores and probabilities already made (no logarithm over the map, no product with the keys).
    Softcap and position bias change the scores after q k, so there the entropy is read from the
    probabilities. ``diagonal_from``, ``real``: as ``_log_normaliser`` takes them; ``sinks``: the model has
    attention sinks (rows sum to less than 1)."""
    import torch

    if not plain:
        return row_stats(probs)
    conf = probs.amax(-1)
    lse = _log_normaliser(probs, scores, conf, diagonal_from, real)
    expected = torch.einsum("bhqk,bhqk->bhq", probs, scores)     # sum_j p_j s_j
    entropy = lse * probs.sum(-1) - expected if sinks else lse - expected
    # a row with no visible key (padding, never read) could overflow to inf: keep it finite
    return RowStats(entropy.nan_to_num_(0.0, 0.0, 0.0).clamp_(min=0), conf, None if sinks else lse)
