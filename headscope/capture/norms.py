"""Value-weighted attention (Kobayashi et al. 2020): each head's slice of its layer's output projection, found
from the model itself, and the norm ``‖α_ij · v_j W_O^h‖`` that turns attention weights into what a head writes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import CaptureError
from . import scan
from .scan import prange
# What each weighting (``config.WEIGHTINGS``) reads, as the reports and the docs say it.
ABOUT = {"weight": "attention weight α_ij",
         "norm": "value-weighted attention ‖α_ij · v_j W_O^h‖ (what the head writes from key j), rows normalised"}


@dataclass
class OutputProjections:
    """Each layer's output projection as the norm needs it: ``gram[layer]`` is ``[head, dim, dim]`` float32,
    ``W_O^h W_O^h^T`` for head h's rows of the projection's input (``‖v W_O^h‖² = v G_h v^T``); ``modules``:
    the projection of each layer (an ``nn.Linear`` or transformers' ``Conv1D``). The projection's bias is
    the same whatever the head, so it is left out of every head's norm."""

    modules: list
    gram: list


def _weight_in_out(module: Any) -> Any:
    """The projection's weight as ``[in, out]`` (``nn.Linear`` keeps ``[out, in]``, GPT-2's ``Conv1D``
    ``[in, out]``)."""
    weight = module.weight
    return weight if type(module).__name__ == "Conv1D" else weight.t()


def gram_of(module: Any, num_heads: int, head_dim: int) -> Any:
    """``[head, dim, dim]`` float32: each head's ``W_O^h W_O^h^T`` from the projection ``module``."""
    import torch

    w = _weight_in_out(module).detach().float()                 # [heads * dim, hidden]
    if w.shape[0] != num_heads * head_dim:
        raise CaptureError(f"{type(module).__name__} takes {w.shape[0]} inputs, not {num_heads} heads x "
                           f"{head_dim}; it is not this layer's attention output projection")
    per_head = w.view(num_heads, head_dim, w.shape[1])
    return torch.matmul(per_head, per_head.transpose(1, 2)).contiguous()


def match_projections(events: list, info: Any) -> OutputProjections:
    """Each layer's projection from the calls of one forward (``session.find_output_projections``): the first
    linear call after the layer's attention output that reads exactly it. ``events``: ``("out", layer, output)``
    and ``("linear", module, input)`` in call order."""
    import torch

    found: dict = {}
    pending: tuple | None = None
    for event in events:
        if event[0] == "out":
            pending = (event[1], event[2])
            continue
        if pending is None:
            continue
        layer, out = pending
        x = event[2]
        flat = out.reshape(-1, out.shape[-2] * out.shape[-1])
        if x.shape[-1] == flat.shape[-1] and x.numel() == flat.numel() and torch.allclose(
                x.reshape(flat.shape).float(), flat.float(), rtol=1e-4, atol=1e-5):
            found.setdefault(layer, (event[1], out.shape[-2], out.shape[-1]))
            pending = None
    missing = [layer for layer in range(info.num_layers) if layer not in found]
    if missing:
        raise CaptureError(f"{info.name}: no output projection reads layer {missing[0]}'s attention output as it is "
                           f"(the model changes the heads' outputs before projecting them); value-weighted "
                           f"attention is not defined for it here: use --weighting weight")
    layers = [found[layer] for layer in range(info.num_layers)]      # (module, heads, head dim)
    return OutputProjections([m for m, _, _ in layers], [gram_of(m, heads, dim) for m, heads, dim in layers])


def value_norms(values: Any, gram: Any) -> Any:
    """``[batch, head, key]`` float32: ``‖v_j W_O^h‖`` for each head's values ``[batch, head, key, dim]`` (GQA
    values already repeated to the query heads) and ``gram`` ``[head, dim, dim]``."""
    import torch

    v = values.float()
    b, h, k, d = v.shape
    # one [batch * key, dim] x [dim, dim] product per head (a three-way einsum is ten times slower on CPU)
    vg = torch.bmm(v.transpose(0, 1).reshape(h, b * k, d), gram.to(v.device)).view(h, b, k, d).transpose(0, 1)
    return (vg * v).sum(-1).clamp_min_(0).sqrt_()


def norm_view(probs: Any, norms: Any, scores: Any = None, lse: Any = None, out: Any = None) -> tuple[Any, Any, Any]:
    """``(shares, total, facts)``: rows of ``α_ij ‖v_j W_O^h‖`` normalised to sum to 1 (``probs`` ``[batch, head,
    rows, keys]``, ``norms`` ``[batch, head, keys]`` of the same keys), the share of what a row's head writes that
    comes from each key; each row's ``sum_j α_ij ‖v_j W_O^h‖`` ``[batch, head, rows]``; and, given the plain
    ``scores`` the weights came from and their log normaliser ``lse`` per row, the view's ``(entropy,
    confidence)`` per row (``attention.RowStats``' fields), else None. A row whose visible keys all write
    nothing stays all zero. ``out``: a float32 tensor of ``probs``' shape to write the shares into, or None.

    On the CPU one numba pass reads each row (``_rows``); elsewhere (or without numba) torch makes one pass
    per operation."""
    import torch

    facts = scores is not None and lse is not None
    if _fast(probs, scores if facts else None, out):
        shares = out if out is not None else torch.empty_like(probs)
        b, h, r, _ = probs.shape
        parts = torch.zeros((4, b, h, r))              # total, sum s' s, sum s' log n, max s'
        n = norms.float().contiguous()
        log_n = torch.log(n.clamp_min(1e-30)) if facts else n
        s = scores if facts else probs.new_zeros((1, 1, 1, 1))
        _rows_kernel()(probs.numpy(), s.numpy(), n.numpy(), log_n.numpy(), facts, shares.numpy(), parts.numpy())
        total, expected, mean_log_n, confidence = parts.unbind(0)
    else:
        total = torch.matmul(probs, norms.unsqueeze(-1).to(probs.dtype))[..., 0]
        shares = torch.mul(probs, norms.unsqueeze(2), out=out)
        shares.div_(torch.where(total > 0, total, torch.ones_like(total)).unsqueeze(-1))
        if not facts:
            return shares, total, None
        expected = torch.einsum("bhqk,bhqk->bhq", shares, scores)
        log_n = torch.log(norms.clamp_min(1e-30)).unsqueeze(-1).to(shares.dtype)
        mean_log_n = torch.matmul(shares, log_n)[..., 0]
        confidence = shares.amax(-1)
    if not facts:
        return shares, total, None
    return shares, total, (_entropy(total, expected, mean_log_n, lse), confidence)


def _entropy(total: Any, expected: Any, mean_log_n: Any, lse: Any) -> Any:
    """The norm view's entropy per row without a logarithm over the map. With ``p_j = exp(s_j - lse)`` and
    ``p'_j = p_j n_j / Z``: ``H' = lse - sum_j p'_j s_j - sum_j p'_j log n_j + log Z`` (``expected``: the second
    sum, ``mean_log_n``: the third, ``total``: ``Z``). Rows that write nothing get 0."""
    import torch

    entropy = lse - expected - mean_log_n + torch.log(torch.where(total > 0, total, torch.ones_like(total)))
    entropy = torch.where(total > 0, entropy, torch.zeros_like(entropy))
    return entropy.nan_to_num_(0.0, 0.0, 0.0).clamp_(min=0)


FAST = True   # use the numba pass on the CPU where it can (tests turn it off to check the torch path)


def _fast(probs: Any, scores: Any, out: Any) -> bool:
    """Whether ``_rows`` can read this block: numba is there, and every tensor is a float32 C-order CPU tensor."""
    import torch

    tensors = [t for t in (probs, scores, out) if t is not None]
    return FAST and scan.available() and all(t.device.type == "cpu" and t.dtype == torch.float32 and
                                             t.is_contiguous() and not t.requires_grad for t in tensors)


def _rows_kernel() -> Any:
    """The compiled ``_rows`` (compiled at first use, cached on disk by numba)."""
    global _COMPILED
    if _COMPILED is None:
        _COMPILED = scan.njit(parallel=True, cache=True, nogil=True, fastmath=True)(_rows)
    return _COMPILED


_COMPILED = None


def _rows(p, s, n, log_n, facts, shares, parts):  # pragma: no cover - compiled by numba
    """``shares[b, h, r] = p[b, h, r] * n[b, h] / Z`` with ``Z = sum_j p_j n_j`` (``parts[0]``), and with
    ``facts`` ``parts[1:4]``: ``sum_j shares_j s_j``, ``sum_j shares_j log_n_j`` and ``max_j shares_j``. Each row
    is read from memory once (the later loops read it from the cache). Every loop runs over a whole row from
    0, which LLVM vectorises; the maximum is taken over the shares' bits as integers (the products are not
    negative, so their bits order as they do), a reduction it vectorises where a float maximum it did not."""
    batch, heads, rows, width = p.shape
    for bh in prange(batch * heads):
        b, h = bh // heads, bh % heads
        nb, lb = n[b, h], log_n[b, h]
        for r in range(rows):
            row, dst = p[b, h, r], shares[b, h, r]
            z = np.float32(0.0)
            for j in range(width):
                x = row[j] * nb[j]
                dst[j] = x
                z += x
            parts[0, b, h, r] = z
            inv = np.float32(1.0) / z if z > 0 else np.float32(1.0)
            if not facts:
                for j in range(width):
                    dst[j] *= inv
                continue
            bits = dst.view(np.int32)
            top = np.int32(0)
            for j in range(width):
                top = max(top, bits[j])
            parts[3, b, h, r] = np.array([top]).view(np.float32)[0] * inv
            sr = s[b, h, r]
            e = np.float32(0.0)
            m = np.float32(0.0)
            for j in range(width):
                v = dst[j] * inv
                dst[j] = v
                e += v * sr[j]
                m += v * lb[j]
            parts[1, b, h, r] = e
            parts[2, b, h, r] = m
