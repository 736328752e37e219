"""Value-weighted attention (Kobayashi et al. 2020): each head's slice of its layer's output projection, found
from the model itself, and the norm ``‖α_ij · v_j W_O^h‖`` that turns attention weights into what a head writes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import CaptureError
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


def norm_view(probs: Any, norms: Any) -> tuple[Any, Any]:
    """``(shares, total)``: rows of ``α_ij ‖v_j W_O^h‖`` normalised to sum to 1 (``probs`` ``[batch, head, rows,
    keys]``, ``norms`` ``[batch, head, keys]`` of the same keys), the share of what a row's head writes that comes
    from each key; and each row's ``sum_j α_ij ‖v_j W_O^h‖`` ``[batch, head, rows]`` (one product of the rows
    with the norms, not a second pass over the weighted map). A row whose visible keys all write nothing stays
    all zero."""
    import torch

    total = torch.matmul(probs, norms.unsqueeze(-1).to(probs.dtype))[..., 0]
    shares = torch.mul(probs, norms.unsqueeze(2))
    return shares.div_(torch.where(total > 0, total, torch.ones_like(total)).unsqueeze(-1)), total


def norm_row_facts(shares: Any, total: Any, scores: Any, lse: Any, norms: Any) -> tuple[Any, Any]:
    """The norm view's entropy and confidence per row (``attention.RowStats``' fields, ``[batch, head, rows]``)
    without a logarithm over the map. With
    ``p_j = exp(s_j - lse)`` and ``p'_j = p_j n_j / Z``: ``H' = lse - sum_j p'_j s_j - sum_j p'_j log n_j + log Z``
    (``scores``: the plain scores the weights came from; ``lse``: their log normaliser per row; ``n``:
    ``norms``; ``Z``: ``total``). Rows that write nothing get 0."""
    import torch

    expected = torch.einsum("bhqk,bhqk->bhq", shares, scores)
    log_n = torch.log(norms.clamp_min(1e-30)).unsqueeze(-1).to(shares.dtype)
    mean_log_n = torch.matmul(shares, log_n)[..., 0]
    entropy = lse - expected - mean_log_n + torch.log(torch.where(total > 0, total, torch.ones_like(total)))
    entropy = torch.where(total > 0, entropy, torch.zeros_like(entropy))
    return entropy.nan_to_num_(0.0, 0.0, 0.0).clamp_(min=0), shares.amax(-1)
