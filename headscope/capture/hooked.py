"""What a model read through forward hooks shows of its attention: whether it is causal (one small forward) and
each layer's sliding window (the module's own mask), and the keys such a window leaves each row of a batch."""

from __future__ import annotations

from typing import Any

CAUSAL_ZERO = 1e-12   # weight on a later key that counts as none: a masked key gets exactly 0 from softmax


def hooked_causal(body: Any, modules: list, inputs: dict) -> bool | None:
    """Whether the attention of every module in ``modules`` is causal, from the weights they return in one forward
    of ``body`` on ``inputs`` (one unpadded input of 2 or more tokens, ``output_attentions`` asked for): a decoder
    puts no weight on a later key, an encoder puts some on every key. None when the forward fails or a module
    returns no square map (the caller falls back to the config)."""
    import torch

    seen: dict = {}

    def hook(module: Any, args: Any, output: Any) -> None:
        weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if isinstance(weights, torch.Tensor) and weights.dim() == 4 and weights.shape[-1] == weights.shape[-2] > 1:
            later = torch.triu(weights.float(), diagonal=1)
            seen[id(module)] = float(later.abs().max()) <= CAUSAL_ZERO
    handles = [m.register_forward_hook(hook) for m in modules]
    try:
        with torch.inference_mode():
            body(**inputs)
    except Exception:  # noqa: BLE001 - any failure: the weights cannot tell, the config says
        return None
    finally:
        for h in handles:
            h.remove()
    if len(seen) != len({id(m) for m in modules}):
        return None
    return all(seen.values())


def module_window(module: Any) -> int | None:
    """The sliding window of an attention module that keeps its own boolean mask, as GPT-Neo's local layers do (a
    ``[1, 1, P, P]`` buffer whose row i allows keys i - W + 1 .. i): W, the keys a query sees, itself included;
    None for a module without such a mask or whose mask is the plain causal one."""
    import torch

    for buffer in module.buffers(recurse=False):
        if buffer.dtype != torch.bool or buffer.dim() != 4 or buffer.shape[-1] != buffer.shape[-2]:
            continue
        mask = buffer[0, 0]
        n = mask.shape[-1]
        window = int(mask[-1].sum())
        if n < 2 or not 0 < window < n:
            continue
        full = torch.ones((n, n), dtype=torch.bool, device=mask.device)
        if torch.equal(mask, torch.tril(full) & ~torch.tril(full, -window)):
            return window
    return None


def window_keys(batch: Any, window: int | None, cache: dict) -> tuple[Any, Any]:
    """``(visible, key_mask)`` of a causal layer with a sliding window of ``window`` keys, as the capture hands them
    to the scorers (``Batch.visible`` ``[batch, rows]``, ``Batch.key_mask`` ``[batch, rows, keys]``): row i sees the
    real keys i - window + 1 .. i. ``(None, None)`` for full attention (the batch's own rule). Kept in ``cache``
    per window, so that the layers of one window hand over the same tensors (scorers count them once)."""
    import torch

    if window is None:
        return None, None
    if window not in cache:
        tm = batch.token_mask
        pos = torch.arange(tm.shape[1], device=tm.device)
        back = pos.unsqueeze(1) - pos.unsqueeze(0)                         # [query, key]: i - j
        key_mask = ((back >= 0) & (back < window)).unsqueeze(0) & tm.unsqueeze(1).bool()
        cache[window] = (key_mask.sum(-1), key_mask)
    return cache[window]
