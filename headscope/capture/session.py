"""The only place attention is captured: headscope's attention function (or, for models that bypass
transformers' AttentionInterface, forward hooks); batched forward passes with a per-layer callback."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

from .alignment import Batch, EncodedSentence, collate, encode_sentences
from ..errors import CaptureError
from ..models.loading import LoadedModel
from ..types import Sentence

log = logging.getLogger(__name__)

# callback(layer, attention [batch, head, query, key] on the model's device, batch)
LayerCallback = Callable[[int, Any, Batch], None]

ROW_SUM_TOLERANCE = 1e-3


class _ForwardDone(Exception):
    """Raised from the last layer's hook to end a forward pass whose remaining work is unused."""

CAUSAL_TOLERANCE = 1e-5


@contextmanager
def attention_hooks(loaded: LoadedModel, on_attention: Callable[[int, Any], None]) -> Iterator[None]:
    """Register a forward hook on every layer's attention module; always removed on exit.

    ``on_attention(layer, weights)`` receives the attention probabilities the module returns.
    """
    handles = []

    def make_hook(layer: int):
        def hook(module, args, output):
            weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if weights is None:
                raise CaptureError(
                    f"layer {layer}: {type(module).__name__} returned no attention weights; headscope needs "
                    f"eager attention (load the model with attn_implementation='eager')")
            on_attention(layer, weights)
        return hook

    try:
        for i, module in enumerate(loaded.attention_modules):
            handles.append(module.register_forward_hook(make_hook(i)))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def attention_capture(loaded: LoadedModel, on_attention: Callable[[int, Any], None], *, row_stats: bool = False,
                      on_norm: Callable[[int, Any], None] | None = None,
                      value_norms: bool = False) -> Iterator[Any]:
    """Inside the block, every layer's attention probabilities go to ``on_attention(layer, weights)``;
    call ``forward_kwargs(loaded)`` for what each forward pass needs, and start each pass with
    ``start_forward(state)`` on what the block yields.

    Models on headscope's attention function report through a capture session (ended on exit);
    the others through forward hooks on their eager attention modules (always removed on exit).
    ``row_stats``: the attention function also computes each block's ``RowStats`` (``state.rows``).
    ``on_norm(layer, shares)``: each block's value-weighted rows too (``norms.norm_view``), right after
    its weights; only on headscope's attention function. ``value_norms``: each block's key value norms reach
    ``state.written`` where the model's output projections can be found (else silently none).
    """
    from .attention import NAME, VIA_INTERFACE, Session, session

    gram = output_projections(loaded).gram if on_norm is not None else None   # refuses models read by hooks
    if value_norms and gram is None:
        value_norms, gram = _optional_gram(loaded)
    if loaded.info.attention == VIA_INTERFACE:
        if getattr(loaded.model.config, "_attn_implementation", None) != NAME:
            loaded.model.set_attn_implementation(NAME)  # changed since loading (e.g. a shared config)
        state = Session(modules=list(loaded.attention_modules), on_attention=on_attention,
                        causal=loaded.info.is_decoder, row_stats=row_stats,
                        watch=set(loaded.attention_modules) if loaded.info.part == "decoder" else None,
                        on_norm=on_norm, gram=gram, value_norms=value_norms)
        with session(state):
            yield state
        return
    with attention_hooks(loaded, on_attention):
        yield None


def _optional_gram(loaded: LoadedModel) -> tuple[bool, Any]:
    """``(True, gram)`` where the model's output projections can be found, else ``(False, None)`` with the
    reason logged: what only adds to a run (the sinks' written shares) never stops it."""
    import logging

    try:
        return True, output_projections(loaded).gram
    except CaptureError as exc:
        logging.getLogger(__name__).info("no value norms for %s: %s", loaded.info.name, exc)
        return False, None


def output_projections(loaded: LoadedModel) -> Any:
    """The model's output projections as the norm weighting reads them (found once per loaded model)."""
    if loaded.projections is None:
        loaded.projections = find_output_projections(loaded)
    return loaded.projections


def find_output_projections(loaded: LoadedModel) -> Any:
    """Each layer's output projection, found from one small forward: the first linear map after the layer's
    attention call whose input is that call's output (the heads' outputs side by side). Models read through
    forward hooks, and models that change the heads' outputs before projecting them (an output gate), are
    refused in one line."""
    import torch

    from ..models.loading import leading_token, model_body
    from .attention import VIA_INTERFACE, Session, session
    from .norms import match_projections

    info = loaded.info
    if info.attention != VIA_INTERFACE:
        raise CaptureError(f"{info.name}: value-weighted attention is read inside headscope's attention function, "
                           f"and this model bypasses it ({info.attention}); use --weighting weight")
    events: list = []     # ("out", layer, tensor) and ("linear", module, input) in call order
    state = Session(modules=list(loaded.attention_modules),
                    on_output=lambda layer, out: events.append(("out", layer, out.detach())),
                    watch=set(loaded.attention_modules) if info.part == "decoder" else None)
    linear = [m for m in loaded.model.modules() if isinstance(m, torch.nn.Linear) or type(m).__name__ == "Conv1D"]
    handles = [m.register_forward_pre_hook(lambda mod, args: events.append(("linear", mod, args[0].detach())))
               for m in linear]
    # one short input, given to the model as a capture gives it (an encoder-decoder's decoder teacher-forced)
    sentence = Sentence(words=tuple("The cat sat on the mat because it was tired .".split()), sent_id="probe")
    (enc,) = encode_sentences(loaded.tokenizer, [sentence], bos_id=leading_token(loaded, None))
    batch = collate([sentence], [enc], pad_id=_pad_id(loaded.tokenizer), device=loaded.device,
                    causal=info.is_decoder)
    try:
        with session(state), torch.inference_mode():
            state.start_forward()
            model_body(loaded.model, info.part)(**model_inputs(loaded, batch), **forward_kwargs(loaded))
    finally:
        for h in handles:
            h.remove()
    return match_projections(events, info)


def forward_kwargs(loaded: LoadedModel) -> dict:
    """Keyword arguments each captured forward needs: no KV cache; eager modules return their weights
    (for hooks) only when asked."""
    from .attention import VIA_INTERFACE
    from ..models.loading import model_accepts

    out = {}
    if model_accepts(loaded.model, "use_cache", loaded.info.part):
        out["use_cache"] = False
    if loaded.info.attention != VIA_INTERFACE:
        out["output_attentions"] = True
    return out


def model_inputs(loaded: LoadedModel, batch: Batch) -> dict:
    """The inputs of one captured forward of ``batch``. An encoder-decoder read on its decoder is
    teacher-forced: the encoder reads the batch without its leading start token, and the decoder reads
    the batch (start token first), whose self-attention is what the capture sees."""
    if loaded.info.part == "decoder":
        return {"input_ids": batch.input_ids[:, 1:], "attention_mask": batch.attention_mask[:, 1:],
                "decoder_input_ids": batch.input_ids, "decoder_attention_mask": batch.attention_mask}
    return {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}


def start_forward(capturing: Any) -> None:
    """Before each forward pass inside ``attention_capture``: layers count from 0 again."""
    if capturing is not None:
        capturing.start_forward()


def iter_batches(encoded: Sequence[EncodedSentence], batch_size: int, *, max_tokens: int = 8192, seed: int = 0
                 ) -> Iterator[list[EncodedSentence]]:
    """Batches of similar length (sorted by token count), capped at ``max_tokens`` padded tokens, in a
    seeded random order.

    Sorting keeps padding low; shuffling the batches means that a run stopped part way has scored a
    random sample of the batches, not the shortest inputs.
    """
    import random

    order = sorted(encoded, key=len)
    batches: list[list[EncodedSentence]] = []
    batch: list[EncodedSentence] = []
    for enc in order:
        if batch and (len(batch) >= batch_size or (len(batch) + 1) * len(enc) > max_tokens):
            batches.append(batch)
            batch = []
        batch.append(enc)
    if batch:
        batches.append(batch)
    random.Random(seed).shuffle(batches)
    yield from batches


# Bytes of float32 probabilities per row block: small enough to stay in the CPU's cache between the
# passes over it (scores, softmax, the readers, P V), large enough that the per-block work in Python is small;
# and at least MIN_BLOCK_ROWS rows (a 32k-token input would otherwise take thousands of tiny blocks).
BLOCK_BYTES = 16 * 2 ** 20
MIN_BLOCK_ROWS = 64


def rows_per_block(tokens: int, per_row: float, budget: float, *, copies: int) -> int | None:
    """Query rows per attention block of an input of ``tokens`` rows of ``per_row`` bytes each: about
    BLOCK_BYTES (at least MIN_BLOCK_ROWS rows), with ``copies`` block-sized tensors never more than ``budget``
    bytes; None where the whole map is no more than that."""
    n = max(1, min(int(budget // (copies * per_row)), max(MIN_BLOCK_ROWS, int(BLOCK_BYTES // per_row))))
    if n >= tokens:
        return None
    return n - n % 32 if n > 64 else n   # whole tiles for the matrix products


def check_attention(weights: Any, batch: Batch, layer: int, *, causal: bool, n_heads: int,
                    sinks: bool = False) -> None:
    """Fail clearly unless rows over real keys sum to 1 (at most 1 with attention sinks, which take the rest)
    and, for decoders, nothing looks ahead."""
    import torch

    r0 = batch.row_start
    t = batch.token_mask.shape[1]
    if (weights.dim() != 4 or weights.shape[0] != batch.size or r0 + weights.shape[2] > t
            or weights.shape[3] > t):
        raise CaptureError(f"layer {layer}: expected attention [batch, head, query, key], got shape {tuple(weights.shape)}")
    if weights.shape[1] != n_heads:
        raise CaptureError(f"layer {layer}: expected {n_heads} query heads, got {weights.shape[1]}")
    w = weights.float()
    width = w.shape[3]   # a decoder's row block may end its keys at its last row
    keys = batch.token_mask[:, None, None, :width]
    rows = torch.matmul(w, keys.transpose(-1, -2).float())[..., 0]    # [b, h, q]: weight on real keys
    real_rows = batch.token_mask[:, None, r0:r0 + weights.shape[2]].expand_as(rows)
    err = ((rows - 1).clamp_min(0) if sinks else (rows - 1).abs())[real_rows]
    if err.numel() and float(err.max()) > ROW_SUM_TOLERANCE:
        raise CaptureError(f"layer {layer}: attention rows over real tokens sum to {float(rows[real_rows].min()):.4f}"
                           f"..{float(rows[real_rows].max()):.4f}, not 1: the model's attention is not softmax "
                           f"probabilities, or padding is not masked")
    if causal:
        # largest weight on a later real key from a real query (no boolean gather: a long map is big);
        # keys left of the block's first row are earlier than all of its rows
        leak = (torch.triu(w[..., r0:], diagonal=1) * keys[..., r0:]).amax(-1) if width > r0 + 1 else w.new_zeros(0)
        worst = float((leak * real_rows).max()) if leak.numel() else 0.0
        if worst > CAUSAL_TOLERANCE:
            raise CaptureError(f"layer {layer}: decoder attention puts {worst:.3g} on later tokens; "
                               f"the causal mask is missing (is this model really a decoder?)")


def _pad_id(tokenizer: Any) -> int:
    """The token that pads a batch: the tokenizer's pad token, else its end of sequence, else 0."""
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    return tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0


def _layer_masks(capturing: Any, batch: Batch, layer: int, info: Any, cache: dict) -> tuple[Any, Any]:
    """``(visible, key_mask)`` of the layer being handed over: from the model's own mask on headscope's attention
    function; through forward hooks, from the layer's own sliding window (``info.sliding_windows``, read from the
    module: GPT-Neo's local layers), or None for full attention (the batch's rule). ``cache``: kept per batch."""
    if capturing is not None:
        return getattr(capturing, "visible", None), getattr(capturing, "key_mask", None)
    windows = info.sliding_windows or ()
    if layer >= len(windows) or windows[layer] is None:
        return None, None
    from .hooked import window_keys

    if cache.get("batch") is not batch:
        cache.clear()
        cache["batch"] = batch
    return window_keys(batch, windows[layer], cache)


def _forward(body: Any, kwargs: dict, seen: set, num_layers: int) -> None:
    """One forward pass, ended early once every layer's attention is in hand; every layer must have run."""
    try:
        body(**kwargs)
    except _ForwardDone:
        pass
    if len(seen) != num_layers:
        raise CaptureError(f"only {len(seen)} of {num_layers} attention layers ran; the model's attention modules "
                           f"were not all called")


def capture(loaded: LoadedModel, sentences: Sequence[Sentence], encoded: Sequence[EncodedSentence],
            on_layer: LayerCallback, *, batch_size: int = 32, on_batch_start: Callable[[Batch], None] | None = None,
            on_batch_end: Callable[[Batch], None] | None = None, check: bool = True,
            block_rows: Callable[[Batch], int | None] | None = None, row_stats: bool = False,
            on_norm_layer: LayerCallback | None = None, value_norms: bool = False) -> int:
    """Run the model over ``encoded`` in length-sorted padded batches, calling ``on_layer`` per layer.

    Attention maps are dropped after each callback; nothing holds more than one layer of one batch.
    ``block_rows(batch)``: query rows per call (on headscope's attention function; every scorer must
    read row blocks, ``batch.row_start`` says which), or None for whole maps. ``row_stats``: each block's
    ``RowStats`` reach the scorers as ``batch.row_stats`` (None on forward hooks). ``on_norm_layer``: called
    like ``on_layer`` with each block's value-weighted rows (``norms.norm_view``), right after its
    weights. ``value_norms``: the weight pass's scorers also get each block's key value norms as
    ``batch.value_norms`` where the model allows (``attention_capture``). Returns the number of batches run.
    """
    import torch

    from ..models.loading import model_body

    info = loaded.info
    pad_id, device = _pad_id(loaded.tokenizer), loaded.device

    body = model_body(loaded.model, info.part)
    state: dict[str, Any] = {"batch": None, "seen": set(), "check": check}

    def on_attention(layer: int, weights: Any) -> None:
        batch = state["batch"]
        batch.row_start = getattr(capturing, "row_start", 0)
        batch.visible, batch.key_mask = _layer_masks(capturing, batch, layer, info, state.setdefault("masks", {}))
        batch.row_stats = getattr(capturing, "rows", None)
        batch.value_norms = getattr(capturing, "written", None)
        if state["check"] and batch.row_start == 0:  # the first block of every layer of the first batch
            check_attention(weights, batch, layer, causal=info.is_decoder, n_heads=info.num_heads, sinks=info.sinks)
        on_layer(layer, weights, batch)
        if on_norm_layer is None:
            block_done(layer, weights, batch)

    def on_norm(layer: int, shares: Any) -> None:
        batch = state["batch"]
        batch.row_stats = getattr(capturing, "rows", None)     # the norm view's, where the capture had them
        batch.value_norms = None
        on_norm_layer(layer, shares, batch)
        block_done(layer, shares, batch)

    def block_done(layer: int, weights: Any, batch: Batch) -> None:
        if batch.row_start + weights.shape[2] < batch.input_ids.shape[1]:
            return  # more row blocks of this layer to come
        state["seen"].add(layer)
        if len(state["seen"]) == info.num_layers:
            # Every layer's attention is in hand: the rest of the forward (the last layer's output
            # projection and MLP, the final norm) cannot change any score, so skip it.
            raise _ForwardDone

    n_batches = 0
    with attention_capture(loaded, on_attention, row_stats=row_stats,
                           on_norm=on_norm if on_norm_layer is not None else None,
                           value_norms=value_norms) as capturing, \
            torch.inference_mode():
        for group in iter_batches(encoded, batch_size):
            batch = collate([sentences[e.index] for e in group], group, pad_id=pad_id, device=device,
                            causal=info.is_decoder)
            state["batch"] = batch
            if on_batch_start is not None:
                on_batch_start(batch)
            kwargs = {**model_inputs(loaded, batch), **forward_kwargs(loaded)}
            start_forward(capturing)
            if capturing is not None:
                capturing.block_rows = block_rows(batch) if block_rows is not None else None
                capturing.real = batch.token_mask
            _forward(body, kwargs, state["seen"], info.num_layers)
            state["check"] = False  # the first batch is checked; later ones run unchecked
            state["seen"] = set()
            if on_batch_end is not None:
                on_batch_end(batch)
            n_batches += 1
    return n_batches
