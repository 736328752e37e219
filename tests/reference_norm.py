"""Independent reference for value-weighted ("norm") attention maps, Kobayashi et al. 2020.

For head h the contribution of key j to query i is alpha_ij * f_h(x_j), with f_h(x_j) = v_j W_O^h: v_j is
the value vector h reads (for GQA, the one of h's key/value group) and W_O^h the d_head input columns of the
attention output projection that h's output multiplies (the output bias is shared, so it is left out).
The norm map is alpha_ij * ||f_h(x_j)||.

Nothing here comes from headscope: attention probabilities are transformers' own eager attention
(``output_attentions=True``), values are caught by forward hooks on the value projections, and W_O is read
from the model's weights, with one explicit code path per architecture so each layout is spelled out.
"""

from __future__ import annotations

import numpy as np
import torch


def _layers(model):
    """[(value module, value slice, W_O as [num_heads, d_head, hidden], kv group size)] per layer.

    The value slice picks v out of the hooked module's output (GPT-2's c_attn yields q|k|v fused);
    W_O^h is laid out so that f_h = v_h @ W_O[h] for every architecture.
    """
    cfg = model.config
    base = model.base_model  # BertModel / GPT2Model / LlamaModel whatever head sits on top
    kind = cfg.model_type
    out = []
    if kind == "bert":
        heads = cfg.num_attention_heads
        d = cfg.hidden_size // heads
        for layer in base.encoder.layer:
            # nn.Linear weight is [out, in]; input columns h*d:(h+1)*d belong to head h.
            w = layer.attention.output.dense.weight  # [hidden, heads*d]
            w_o = w.T.reshape(heads, d, -1)
            out.append((layer.attention.self.value, slice(None), w_o, 1))
    elif kind == "gpt2":
        heads = cfg.n_head
        hidden = cfg.n_embd
        d = hidden // heads
        for block in base.h:
            # Conv1D weight is [in, out] (transposed vs nn.Linear): rows h*d:(h+1)*d belong to head h.
            w = block.attn.c_proj.weight  # [heads*d, hidden]
            w_o = w.reshape(heads, d, -1)
            # c_attn produces q|k|v concatenated on the last axis, each `hidden` wide: v is the last third.
            out.append((block.attn.c_attn, slice(2 * hidden, 3 * hidden), w_o, 1))
    elif kind in ("llama", "qwen2"):    # Qwen2: the same layout, with a bias on q, k and v (v_proj's output has it)
        heads = cfg.num_attention_heads
        kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
        d = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
        for layer in base.layers:
            w = layer.self_attn.o_proj.weight  # nn.Linear: [hidden, heads*d]
            w_o = w.T.reshape(heads, d, -1)
            # query head h reads KV head h // group (values carry no RoPE, so v_proj's output is the value).
            out.append((layer.self_attn.v_proj, slice(None), w_o, heads // kv_heads))
    else:
        raise ValueError(f"reference_norm: no code path for model_type {kind!r} (supported: bert, gpt2, llama, qwen2)")
    return out


def _eager_forward(model, input_ids, attention_mask):
    """Run with eager attention (switching it on for this call if the model was set to something else)."""
    previous = getattr(model.config, "_attn_implementation", None)
    switch = previous not in (None, "eager") and callable(getattr(model, "set_attn_implementation", None))
    if switch:
        model.set_attn_implementation("eager")
    try:
        return model(input_ids=input_ids, attention_mask=attention_mask, output_attentions=True)
    finally:
        if switch:
            model.set_attn_implementation(previous)


@torch.no_grad()
def norm_maps(model, input_ids, attention_mask):
    """(weights, norms): lists over layers of float64 [batch, head, query, key] arrays.

    weights = eager attention probabilities alpha_ij; norms = alpha_ij * ||v_j W_O^h|| (not row-normalised).
    """
    layers = _layers(model)
    values: dict[int, torch.Tensor] = {}

    def catch(i, cut):
        def hook(_module, _inputs, output):
            values[i] = output[..., cut].detach()
        return hook

    handles = []
    try:
        for i, (module, cut, _, _) in enumerate(layers):
            handles.append(module.register_forward_hook(catch(i, cut)))
        out = _eager_forward(model, input_ids, attention_mask)
    finally:
        for h in handles:
            h.remove()

    weights, norms = [], []
    for i, (_, _, w_o, group) in enumerate(layers):
        alpha = out.attentions[i].detach().double()  # [b, H, q, k]
        heads, d, _ = w_o.shape
        v = values[i].double()  # [b, k, kv_heads*d]
        b, k, _ = v.shape
        v = v.reshape(b, k, -1, d)  # [b, k, kv_heads, d]
        v = v[:, :, torch.arange(heads) // group]  # [b, k, H, d]: each query head's own value
        f = torch.einsum("bkhd,hde->bhke", v, w_o.detach().double())  # f_h(x_j) = v_j W_O^h
        f_norm = f.norm(dim=-1)  # [b, H, k]
        weights.append(alpha.cpu().numpy())
        norms.append((alpha * f_norm[:, :, None, :]).cpu().numpy())
    return weights, norms


def shares(weights_or_norms, key_mask, attention_mask=None) -> np.ndarray:
    """[layer, head]: mean over real query tokens of the row-normalised mass on the keys in ``key_mask``.

    ``key_mask`` is [batch, key] bool. ``attention_mask`` ([batch, seq], 1 = real token) marks padding,
    which is dropped both as query (not averaged) and as key (not in the row total); without it every
    position counts as real. The mean pools all real queries of the batch (token level, not per sentence).
    """
    key_mask = np.asarray(key_mask, dtype=bool)
    if attention_mask is None:
        real = np.ones(key_mask.shape, dtype=bool)
    else:
        real = np.asarray(attention_mask).astype(bool)
    out = []
    for m in weights_or_norms:
        m = np.asarray(m, dtype=np.float64) * real[:, None, None, :]  # padding keys carry no mass
        total = m.sum(-1)  # [b, H, q]
        hit = (m * key_mask[:, None, None, :]).sum(-1)
        share = hit / np.where(total > 0, total, 1.0)
        q_real = real[:, None, :]  # [b, 1, q]
        out.append((share * q_real).sum(axis=(0, 2)) / q_real.sum())
    return np.stack(out)
