"""explain on a long input (issue 30): ``headscope.explain`` of an ~8k-token smollm2 document against the bare SDPA
forward of the same tokens (target: at most 2x).

One process loads smollm2 once, builds one document of consecutive EWT train sentences (the bundled sample,
repeated, where ../shared/data is missing) and its running text, as bench_viewer.py does, and times
``--repeats`` times alternately: the model's bare forward with its SDPA kernel on the tokens explain reads
(the same words, the same BOS), and ``headscope.explain(text, 40, model=loaded)``. It prints the medians and
the median of the paired ratios.

    python benchmarks/bench_explain.py [--tokens 8192] [--repeats 3] [--model smollm2] [--data ...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_long import DEFAULT_DATA  # noqa: E402
from bench_viewer import running_text  # noqa: E402


def source_sentences(data: str, tokens: int) -> tuple[list, str]:
    """Consecutive EWT train sentences, or the bundled sample's (repeated) where ``data`` is missing."""
    import headscope

    if Path(data).is_file():
        return list(headscope.load_conllu(data, limit=max(2000, tokens // 8)).sentences), "one EWT train document"
    sample = list(headscope.load_sample().sentences)
    return [sample[i % len(sample)] for i in range(tokens)], "the bundled sample, repeated (no ../shared/data)"


def explain_tokens(loaded, text: str):
    """The token ids explain reads for ``text`` (its own word split, the model's leading token)."""
    from headscope.capture.alignment import encode_sentences
    from headscope.models.loading import leading_token
    from headscope.run.explain import split_words

    (enc,) = encode_sentences(loaded.tokenizer, [split_words(text)], bos_id=leading_token(loaded, None))
    return enc.input_ids


def document_text(sentences: list, tokens: int, loaded) -> str:
    """The running text of the most leading ``sentences`` whose tokens, as explain reads them, fit ``tokens``."""
    from headscope.datasets import join_sentences

    def text(n: int) -> str:
        return running_text(join_sentences(sentences[:n]))

    lo, hi = 1, len(sentences)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if len(explain_tokens(loaded, text(mid))) <= tokens else (lo, mid - 1)
    return text(lo)


def bare(loaded, ids) -> float:
    """Seconds of one forward of the model's body with transformers' SDPA attention."""
    import torch

    from headscope.models.loading import model_body

    loaded.model.set_attn_implementation("sdpa")
    x = torch.tensor([ids], device=loaded.device)
    start = time.perf_counter()
    with torch.inference_mode():
        model_body(loaded.model)(input_ids=x, attention_mask=torch.ones_like(x), use_cache=False)
    return time.perf_counter() - start


def explained(loaded, text: str, word: int) -> float:
    import headscope

    start = time.perf_counter()
    headscope.explain(text, word, model=loaded)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--word", type=int, default=40, help="the explained word (0-based index)")
    args = ap.parse_args()
    from headscope.models.loading import load_model
    from headscope.run.explain import split_words

    loaded = load_model(args.model)
    sentences, source = source_sentences(args.data, args.tokens)
    text = document_text(sentences, args.tokens, loaded)
    ids = explain_tokens(loaded, text)
    short = document_text(sentences, 64, loaded)
    bare(loaded, explain_tokens(loaded, short))          # warm-up: first calls, lazy imports
    explained(loaded, short, 3)
    print(f"{args.model}, {source}: {len(ids)} tokens, {len(split_words(text).words)} words; medians of {args.repeats} "
          f"alternating runs in one process")
    runs: dict[str, list[float]] = {"bare": [], "explain": []}
    for i in range(args.repeats):     # alternate, so that a slow spell of the machine hits both
        runs["bare"].append(bare(loaded, ids))
        runs["explain"].append(explained(loaded, text, args.word))
        print(f"  run {i + 1}: bare {runs['bare'][-1]:.1f} s, explain {runs['explain'][-1]:.1f} s", flush=True)
    med = statistics.median
    ratio = med(e / b for b, e in zip(runs["bare"], runs["explain"]))
    print(f"{'tokens':>7} {'bare s':>8} {'explain s':>10} {'ratio':>6}")
    print(f"{len(ids):>7} {med(runs['bare']):8.1f} {med(runs['explain']):10.1f} {ratio:6.2f}")


if __name__ == "__main__":
    main()
