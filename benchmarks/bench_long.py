"""Long contexts (issue 12): smollm2 on one document of EWT train text, bare SDPA forward against headscope.

For each length (tokens of one document made by joining EWT train sentences), two child processes:
the model's bare forward with its SDPA kernel, and ``analyze(..., tasks="positional")`` on the same
words; each prints its wall time and peak RSS. The table gives both and their ratios (targets: time
<= 2x the bare forward at every length, peak RSS <= 2 GB at 7.4k tokens).

    python benchmarks/bench_long.py [--tokens 1717,3942,7376] [--data en_ewt-ud-train.conllu]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "ud_english_ewt" / "en_ewt-ud-train.conllu"


def document(data: str, tokens: int, loaded):
    """One Sentence of EWT train words whose encoding has about ``tokens`` tokens (with the BOS)."""
    import headscope
    from headscope.alignment import encode_sentences
    from headscope.pipeline import leading_token
    from headscope.types import Sentence

    corpus = headscope.load_conllu(data, limit=2000)
    bos = leading_token(loaded, None)
    words: list[str] = []
    for s in corpus.sentences:
        words.extend(s.words)
        if len(words) >= tokens:
            (enc,) = encode_sentences(loaded.tokenizer, [Sentence(words=tuple(words))], bos_id=bos)
            if len(enc) >= tokens:
                break
    # trim to the target
    while True:
        (enc,) = encode_sentences(loaded.tokenizer, [Sentence(words=tuple(words))], bos_id=bos)
        if len(enc) <= tokens or len(words) < 2:
            return Sentence(words=tuple(words), sent_id=f"doc-{tokens}"), enc
        words = words[: max(1, len(words) - max(1, (len(enc) - tokens) // 2))]


def child(mode: str, data: str, tokens: int) -> None:
    import torch

    from headscope.models import load_model, model_body

    loaded = load_model("smollm2")
    sentence, enc = document(data, tokens, loaded)
    if mode == "bare":
        loaded.model.set_attn_implementation("sdpa")
        ids = torch.tensor([enc.input_ids])
        start = time.perf_counter()
        with torch.inference_mode():
            model_body(loaded.model)(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
    else:
        import headscope

        start = time.perf_counter()
        headscope.analyze(loaded, headscope.Corpus("doc", (sentence,)), tasks="positional", bootstrap=0,
                          n_examples=0, batch_size=1)
    seconds = time.perf_counter() - start
    print(json.dumps({"tokens": len(enc), "seconds": seconds,
                      "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", default="1717,3942,7376")
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--child", choices=("bare", "headscope"), help=argparse.SUPPRESS)
    ap.add_argument("--length", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.data, args.length)
        return
    if not Path(args.data).is_file():
        sys.exit(f"data not found: {args.data} (needs ../shared/data)")
    print("smollm2, one EWT train document; whole child process peak RSS; time of the forward / analysis only")
    print(f"{'tokens':>7} {'bare s':>8} {'bare MiB':>9} {'headscope s':>12} {'headscope MiB':>14} {'time x':>7} "
          f"{'RSS x':>6}")
    for tokens in (int(t) for t in args.tokens.split(",")):
        rows = {}
        for mode in ("bare", "headscope"):
            proc = subprocess.run([sys.executable, __file__, "--child", mode, "--length", str(tokens), "--data",
                                   args.data], capture_output=True, text=True)
            if proc.returncode != 0:
                rows[mode] = {"seconds": float("nan"), "peak_mib": float("nan"),
                              "error": (proc.stderr.strip().splitlines() or ["killed"])[-1][:80]}
            else:
                rows[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
        b, h = rows["bare"], rows["headscope"]
        print(f"{b.get('tokens', tokens):>7} {b['seconds']:8.1f} {b['peak_mib']:9.0f} {h['seconds']:12.1f} "
              f"{h['peak_mib']:14.0f} {h['seconds'] / b['seconds']:7.2f} {h['peak_mib'] / b['peak_mib']:6.2f}"
              + (f"  ({h['error']})" if "error" in h else ""))


if __name__ == "__main__":
    main()
