"""What the 95% bootstrap intervals and p-values cost (issue #6): the same run with and without them.

On EWT dev with minilm (syntax + positional), alternating runs with ``bootstrap=0`` and
``bootstrap=1000``; prints the medians, their difference (target: a few seconds) and the time of
the interval computation alone (intervals of every head and baseline, the paired p-values against
the best baseline, Benjamini–Hochberg), and of assigning roles from the finished table.

    python benchmarks/bench_bootstrap.py [--data PATH] [--repeats 3] [--replicates 1000]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "ud_english_ewt" / "en_ewt-ud-dev.conllu"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--replicates", type=int, default=1000)
    args = parser.parse_args()

    import headscope
    from headscope.analysis.positional import PositionalScorer
    from headscope.analysis.syntax import SyntaxScorer
    from headscope.models.loading import load_model

    loaded = load_model("minilm")
    corpus = headscope.load_conllu(args.data)
    headscope.analyze(loaded, corpus.sentences[:32], tasks="syntax,positional")        # warm-up
    times: dict[int, list[float]] = {0: [], args.replicates: []}
    for i in range(args.repeats):
        for b in (list(times) if i % 2 == 0 else list(times)[::-1]):    # alternate which goes first
            start = time.perf_counter()
            headscope.analyze(loaded, corpus, tasks="syntax,positional", bootstrap=b)
            times[b].append(time.perf_counter() - start)
    off, on = statistics.median(times[0]), statistics.median(times[args.replicates])
    result = headscope.analyze(loaded, corpus, tasks="syntax,positional", bootstrap=args.replicates)
    start = time.perf_counter()
    roles = headscope.assign_roles(result.scores, model=result.model.name, num_layers=loaded.info.num_layers,
                                   num_heads=loaded.info.num_heads)
    roles_s = time.perf_counter() - start
    print(f"{len(corpus)} sentences, minilm, syntax + positional: without intervals median {off:.2f} s, "
          f"with {args.replicates} replicates median {on:.2f} s -> +{on - off:.2f} s ({on / off:.2f}x)")
    print(f"  assign_roles on the finished table: {roles_s:.2f} s ({int((roles['role'] != 'none').sum())} roles)")

    # The interval computation alone, on scorers that already hold the per-sentence counts.
    from headscope.capture.alignment import encode_sentences
    from headscope.analysis.base import LayerView
    from headscope.capture.session import capture

    info = loaded.info
    relations = sorted({r for s in corpus.sentences for h, r in zip(s.heads, s.relations) if h >= 0})
    scorers = [SyntaxScorer(info.num_layers, info.num_heads, relations), PositionalScorer(info.num_layers,
                                                                                          info.num_heads)]
    encoded = encode_sentences(loaded.tokenizer, corpus.sentences)
    capture(loaded, corpus.sentences, encoded,
            lambda layer, w, batch: [s.update(LayerView(layer, w, batch)) for s in scorers],
            on_batch_start=lambda b: [s.start_batch(b) for s in scorers],
            on_batch_end=lambda b: [s.end_batch() for s in scorers])
    for s in scorers:
        t = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            s.intervals(n_boot=args.replicates)
            t.append(time.perf_counter() - start)
        print(f"  {type(s).__name__}.intervals: median {statistics.median(t):.2f} s for {len(s._units)} sentences")


if __name__ == "__main__":
    main()
