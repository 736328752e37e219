"""Activation patching's cost (issue 31): exact patching of every head and attribution patching of every head,
in forward-pass equivalents and seconds against one bare forward of the same pairs (target: attribution at most
3 forward passes).

One process loads the model once and makes ``--pairs`` induction pairs (one batch). It times, ``--repeats`` times
in turn: the bare forward of the clean inputs with the model's own SDPA attention, ``patch(methods="exact",
directions="noising")`` (the two recorded runs, then one forward per head) and ``patch(methods="attribution",
directions="noising")`` (one recorded forward of the corrupt inputs, then one forward of the clean inputs with
grad, which records their head outputs too, and one backward). It prints the medians and each as a multiple of
the bare forward. headscope's forwards make the logits of the answer positions only (``logits_to_keep``); the
bare forward makes every position's, as a plain call does.

    python benchmarks/bench_patch.py [--model smollm2] [--pairs 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    import torch

    from headscope.datasets.contrast import induction_pairs
    from headscope.interventions.patching import encode_pairs, patch
    from headscope.models.loading import load_model

    loaded = load_model(args.model)
    pairs = induction_pairs(loaded.tokenizer, count=args.pairs)
    (batch,) = encode_pairs(loaded, pairs, args.pairs)

    def bare() -> float:
        loaded.model.set_attn_implementation("sdpa")
        start = time.perf_counter()
        with torch.inference_mode():
            loaded.model(input_ids=batch.clean, attention_mask=batch.mask, use_cache=False)
        return time.perf_counter() - start

    def patched(method: str) -> float:
        start = time.perf_counter()
        patch(loaded, pairs, methods=method, directions="noising", bootstrap=0, batch_size=args.pairs)
        return time.perf_counter() - start

    bare(), patched("attribution")                      # warm-up
    runs: dict[str, list[float]] = {"bare": [], "exact": [], "attribution": []}
    for _ in range(args.repeats):
        runs["bare"].append(bare())
        runs["attribution"].append(patched("attribution"))
        runs["exact"].append(patched("exact"))
    med = {k: statistics.median(v) for k, v in runs.items()}
    heads = loaded.info.num_layers * loaded.info.num_heads
    print(f"{args.model}: {args.pairs} induction pairs of {batch.clean.shape[1]} tokens, {heads} heads, noising; "
          f"medians of {args.repeats}")
    print(f"  bare forward (SDPA)      {med['bare']:8.3f} s")
    print(f"  attribution, every head  {med['attribution']:8.3f} s  = {med['attribution'] / med['bare']:6.1f} "
          f"forward passes (1 recorded run + 1 forward with grad and its backward)")
    print(f"  exact, every head        {med['exact']:8.3f} s  = {med['exact'] / med['bare']:6.1f} forward passes "
          f"({heads} + 2 forwards)")


if __name__ == "__main__":
    main()
