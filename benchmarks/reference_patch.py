"""Exact patching against an independent reference on a real model (issue 31): noising effects of every head from
``headscope.patch`` and from a hand-written reference that never enters headscope's attention function (eager
attention; a forward pre-hook on each layer's output projection swaps one head's slice of its input for the
corrupt run's), on induction pairs made with a seed other than the default's (pairs not seen before).
Prints the largest difference over the heads and both top 5s.

    python benchmarks/reference_patch.py [--model smollm2] [--pairs 16] [--seed 11]
"""

from __future__ import annotations

import argparse


def reference_effects(loaded, batch) -> "object":
    """``[layer, head]`` noising effects by hooks on the output projections' inputs."""
    import numpy as np
    import torch

    model, info = loaded.model, loaded.info
    model.set_attn_implementation("eager")
    mods = [m for n, m in model.named_modules() if n.endswith("o_proj") or n.endswith("attn.c_proj")
            or n.endswith("attention.output.dense")]
    assert len(mods) == info.num_layers, "one output projection per layer"
    rows = torch.arange(len(batch.clean))

    def ld(ids):
        with torch.inference_mode():
            at = model(input_ids=ids, attention_mask=batch.mask, use_cache=False).logits[rows, batch.position].float()
        return (at[rows, batch.answer] - at[rows, batch.foil]).numpy().astype(np.float64)

    kept = {}
    hooks = [m.register_forward_pre_hook(lambda mod, args, i=i: kept.__setitem__(i, args[0].clone()))
             for i, m in enumerate(mods)]
    corrupt = ld(batch.corrupt)
    for h in hooks:
        h.remove()
    clean = ld(batch.clean)
    width = kept[0].shape[-1] // info.num_heads
    out = np.zeros((info.num_layers, info.num_heads))
    for layer, mod in enumerate(mods):
        for head in range(info.num_heads):
            part = slice(head * width, (head + 1) * width)

            def swap(m, args, layer=layer, part=part):
                x = args[0].clone()
                x[..., part] = kept[layer][..., part]
                return (x,) + args[1:]

            hook = mod.register_forward_pre_hook(swap)
            out[layer, head] = (clean.mean() - ld(batch.clean).mean()) / (clean.mean() - corrupt.mean())
            hook.remove()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--pairs", type=int, default=16)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    import numpy as np

    from headscope.datasets.contrast import induction_pairs
    from headscope.interventions.patching import encode_pairs, patch
    from headscope.models.loading import load_model

    loaded = load_model(args.model)
    pairs = induction_pairs(loaded.tokenizer, count=args.pairs, seed=args.seed)
    ours = patch(loaded, pairs, methods="exact", directions="noising", bootstrap=0,
                 batch_size=args.pairs).effects("exact", "noising")
    (batch,) = encode_pairs(loaded, pairs, args.pairs)
    ref = reference_effects(loaded, batch)
    H = ref.shape[1]

    def top(x):
        return [f"L{i // H}.H{i % H} {x.ravel()[i]:+.3f}" for i in np.argsort(-x.ravel(), kind="stable")[:5]]

    print(f"{args.model}: {args.pairs} induction pairs (seed {args.seed}), noising, {ref.size} heads")
    print(f"  max |headscope - reference| = {np.abs(ours - ref).max():.2e}")
    print(f"  top 5 headscope: {', '.join(top(ours))}")
    print(f"  top 5 reference: {', '.join(top(ref))}")


if __name__ == "__main__":
    main()
