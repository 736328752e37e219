"""Pipeline speed and memory against the bare SDPA (and eager) forward pass and the simple reference (issue #2).

Prints, from one run on EWT dev with minilm: the bare forward time over the corpus, the pipeline
time (syntax + positional), their ratio in wall time and in process CPU time (target <= 1.15), the
reference implementation's time
(target: pipeline >= 3x faster), and peak memory at 500 and 2,000 sentences (target: flat).

    python benchmarks/bench_pipeline.py [--data PATH] [--repeats 3] [--reference-sentences N]
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
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "ud_english_ewt" / "en_ewt-ud-dev.conllu"


def cpu_seconds() -> float:
    """This process's CPU time, all threads (steadier than wall time on a shared machine)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bare_forward(loaded, corpus, batch_size: int, implementation: str = "sdpa") -> float:
    """The model's own forward (``implementation``: its fast SDPA kernel, or eager) over the same length-sorted
    padded batches, no capture, no scoring."""
    import torch

    from headscope.capture.alignment import collate, encode_sentences
    from headscope.capture.session import iter_batches

    encoded = encode_sentences(loaded.tokenizer, corpus.sentences)
    batches = [collate([corpus.sentences[e.index] for e in g], g, pad_id=loaded.tokenizer.pad_token_id or 0,
                       device=loaded.device, causal=loaded.info.is_decoder)
               for g in iter_batches(encoded, batch_size)]
    body = getattr(loaded.model, "base_model", None) or loaded.model
    previous = loaded.model.config._attn_implementation
    loaded.model.set_attn_implementation(implementation)
    try:
        start = time.perf_counter()
        with torch.inference_mode():
            for b in batches:
                body(input_ids=b.input_ids, attention_mask=b.attention_mask)
        return time.perf_counter() - start
    finally:
        loaded.model.set_attn_implementation(previous)


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def memory_child(data: str, n: int, batch_size: int, repeat: int = 1) -> None:
    """Peak resident memory while analysing the first ``n`` sentences (sampled every 5 ms).

    With ``repeat`` > 1 the same sentences are read ``repeat`` times, so that the longest batch is
    the same and any difference is memory that grows with the corpus.
    """
    import threading

    import headscope
    from headscope.models.loading import load_model

    corpus = headscope.load_conllu(data, limit=n)
    corpus = headscope.Corpus(name=corpus.name, sentences=corpus.sentences * repeat)
    loaded = load_model("minilm")
    headscope.analyze(loaded, corpus.sentences[:8], tasks="syntax,positional")  # warm-up allocations
    base = _rss_mib()
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_mib())
            stop.wait(0.005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    headscope.analyze(loaded, corpus, tasks="syntax,positional", batch_size=batch_size)
    stop.set()
    thread.join()
    print(json.dumps({"n": len(corpus), "peak_mib": peak[0], "before_mib": base}))


def constant_child(data: str, copies: int, batch_size: int) -> None:
    """RSS after every batch while reading one sentence ``copies`` times: every batch has the same
    shape, so any upward trend is memory that grows with the corpus rather than with batch size."""
    import headscope
    from headscope.models.loading import load_model

    corpus = headscope.load_conllu(data, limit=500)
    longest = max(corpus.sentences, key=len)
    loaded = load_model("minilm")
    marks: list[float] = []
    headscope.analyze(loaded, headscope.Corpus("same", (longest,) * copies), tasks="syntax,positional",
                      batch_size=batch_size, progress=lambda done, total: marks.append(_rss_mib()))
    k = max(1, len(marks) // 5)
    print(json.dumps({"batches": len(marks), "words": len(longest), "first_mib": statistics.median(marks[:k]),
                      "last_mib": statistics.median(marks[-k:])}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--reference-sentences", type=int, default=0,
                    help="run the reference on the first N sentences only and scale (0 = whole corpus, -1 = skip)")
    ap.add_argument("--memory-child", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--memory-repeat", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--memory-constant", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_constant:
        constant_child(args.data, args.memory_constant, args.batch_size)
        return
    if args.memory_child:
        memory_child(args.data, args.memory_child, args.batch_size, args.memory_repeat)
        return
    if not Path(args.data).is_file():
        sys.exit(f"data not found: {args.data} (needs ../shared/data)")

    import torch

    import headscope
    from headscope.models.loading import load_model

    sys.path.insert(0, str(ROOT / "tests"))
    from reference import reference_syntax

    corpus = headscope.load_conllu(args.data)
    loaded = load_model("minilm")
    print(f"corpus: {len(corpus)} sentences, {sum(len(s) for s in corpus.sentences)} words; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    bare_forward(loaded, corpus, args.batch_size)  # warm-up
    bare, eager, pipe, with_ci, bare_cpu, pipe_cpu, norm = [], [], [], [], [], [], []
    for _ in range(args.repeats):  # interleaved, so that machine noise hits all alike
        cpu = cpu_seconds()
        bare.append(bare_forward(loaded, corpus, args.batch_size))
        bare_cpu.append(cpu_seconds() - cpu)
        eager.append(bare_forward(loaded, corpus, args.batch_size, "eager"))
        start, cpu = time.perf_counter(), cpu_seconds()
        headscope.analyze(loaded, corpus, tasks="syntax,positional", batch_size=args.batch_size, bootstrap=0)
        pipe.append(time.perf_counter() - start)
        pipe_cpu.append(cpu_seconds() - cpu)
        start = time.perf_counter()
        headscope.analyze(loaded, corpus, tasks="syntax,positional", batch_size=args.batch_size, bootstrap=0,
                          weighting="weight,norm")
        norm.append(time.perf_counter() - start)
        start = time.perf_counter()
        headscope.analyze(loaded, corpus, tasks="syntax,positional", batch_size=args.batch_size)
        with_ci.append(time.perf_counter() - start)
    b, e, p, c = (statistics.median(x) for x in (bare, eager, pipe, with_ci))
    ratios = [y / x for x, y in zip(bare, pipe)]
    print(f"capture path: {getattr(loaded.info, 'attention', '') or 'forward hooks on eager modules'}")
    print(f"bare SDPA forward:             median {b:7.2f} s  (runs: {', '.join(f'{x:.2f}' for x in bare)})")
    print(f"bare eager forward:            median {e:7.2f} s  (runs: {', '.join(f'{x:.2f}' for x in eager)})")
    print(f"pipeline (syntax+positional):  median {p:7.2f} s  (runs: {', '.join(f'{x:.2f}' for x in pipe)})")
    print(f"pipeline / bare SDPA forward:  {p / b:.2f} (ratio of medians); median of paired ratios "
          f"{statistics.median(ratios):.2f}  (target <= 1.15; capture + scoring, no intervals); "
          f"/ bare eager {p / e:.2f}")
    bc, pc = statistics.median(bare_cpu), statistics.median(pipe_cpu)
    print(f"  process CPU time (all threads): bare SDPA median {bc:.2f} s, pipeline {pc:.2f} s: {pc / bc:.2f} "
          f"(ratio of medians; median of paired ratios "
          f"{statistics.median([y / x for x, y in zip(bare_cpu, pipe_cpu)]):.2f}; steadier on a shared machine)")
    print(f"  + 95% intervals (default):   median {c:7.2f} s, {c / b:.2f} x bare (their cost: "
          f"benchmarks/bench_bootstrap.py)")
    n = statistics.median(norm)
    print(f"  --weighting weight,norm:     median {n:7.2f} s, {n / b:.2f} x bare; the norm view adds {100 * (n / p - 1):.0f}% "
          f"to the run (median of paired ratios {statistics.median([y / x for x, y in zip(pipe, norm)]):.2f}; "
          f"target: at most 15%)")

    if args.reference_sentences < 0:
        print("reference: skipped (--reference-sentences -1)")
    else:
        reference(loaded, corpus, args.reference_sentences, p, reference_syntax)
    memory(args)


def reference(loaded, corpus, n_ref: int, p: float, reference_syntax) -> None:
    n_ref = n_ref or len(corpus)
    start = time.perf_counter()
    reference_syntax(loaded.model, loaded.tokenizer, corpus.sentences[:n_ref])
    ref = (time.perf_counter() - start) * len(corpus) / n_ref
    scaled = "" if n_ref == len(corpus) else f" (measured on {n_ref} sentences, scaled)"
    print(f"reference (1 sentence/step):   {ref:7.2f} s{scaled}")
    print(f"reference / pipeline:          {ref / p:.1f}x  (target >= 3)")


def memory(args) -> None:
    def child(n: int, repeat: int = 1) -> dict:
        out = subprocess.run([sys.executable, __file__, "--data", args.data, "--memory-child", str(n),
                              "--memory-repeat", str(repeat), "--batch-size", str(args.batch_size)],
                             capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    def median_of(n: int, repeat: int = 1, runs: int = 3) -> dict:
        # RSS is sampled every 5 ms and transient batch tensors come and go: take the median of a few runs.
        recs = sorted((child(n, repeat) for _ in range(runs)), key=lambda r: r["peak_mib"])
        return {**recs[len(recs) // 2], "all": [round(r["peak_mib"]) for r in recs]}

    first, whole = median_of(500), median_of(2000)
    for label, rec in (("first 500 sentences", first), ("first 2,000 sentences", whole)):
        print(f"peak RSS, {label:22s} median {rec['peak_mib']:7.1f} MiB  (runs {rec['all']}; model and data "
              f"loaded: {rec['before_mib']:.1f} MiB)")
    print(f"peak growth 500 -> 2,000:         {whole['peak_mib'] - first['peak_mib']:+.1f} MiB "
          f"({whole['peak_mib'] / first['peak_mib']:.3f}x; the peak follows the largest padded batch, not the "
          f"corpus size)")
    out = subprocess.run([sys.executable, __file__, "--data", args.data, "--memory-constant", "4000",
                          "--batch-size", str(args.batch_size)], capture_output=True, text=True, check=True)
    rec = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"one {rec['words']}-word sentence x 4,000 ({rec['batches']} equal batches): RSS over the first fifth "
          f"{rec['first_mib']:.1f} MiB, last fifth {rec['last_mib']:.1f} MiB "
          f"({rec['last_mib'] - rec['first_mib']:+.1f} MiB; target: no growth)")


if __name__ == "__main__":
    main()
