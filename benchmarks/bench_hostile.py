"""Costs of hostile input (issue 11), as ratios measured in one run.

1. Tree check on chain-shaped sentences (each word's head is the next word) of 2,000 to 32,000 words:
   seconds per 1,000 words at each length; linear checking keeps the ratio longest/shortest near 1
   (the walk-up check this replaced took 9.8 s at 2,000 words and 33 s at 3,000: cubic).
2. A text file holding one 50 MB line plus one short sentence, through the whole ``headscope run
   --tasks positional`` process, against the short sentence alone: wall time and peak RSS of both
   and their ratio (before: 49 s and 4.6 GB for the long file).

    python benchmarks/bench_hostile.py [--mb 50] [--repeats 3]
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def chain(n: int) -> bytes:
    lines = [f"{i}\tw{i}\t_\tX\t_\t_\t{i + 1 if i < n else 0}\t{'dep' if i < n else 'root'}\t_\t_"
             for i in range(1, n + 1)]
    return ("\n".join(lines) + "\n").encode()


def tree_check(repeats: int) -> None:
    from headscope.datasets import parse_conllu

    print("tree check, chain-shaped sentences (median of", repeats, "runs)")
    per_k = {}
    for n in (2_000, 4_000, 8_000, 16_000, 32_000):
        data = chain(n)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            parse_conllu(data, "chain.conllu")
            times.append(time.perf_counter() - t0)
        per_k[n] = statistics.median(times) / n * 1000
        print(f"  {n:>6} words: {statistics.median(times):7.3f} s, {per_k[n] * 1000:6.2f} ms per 1,000 words")
    print(f"  ratio of time per word, 32,000 vs 2,000 words: {per_k[32_000] / per_k[2_000]:.2f} (linear: ~1)")


def run_child(path: Path, out: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one `headscope run` process."""
    code = ("import resource, sys, time; t0 = time.perf_counter(); from headscope.cli.app import app\n"
            "try:\n    app(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print(time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    proc = subprocess.run([sys.executable, "-c", code, "run", "--data", str(path), "--tasks", "positional",
                           "--bootstrap", "0", "--no-figures", "-q", "--out", str(out)],
                          capture_output=True, text=True, check=True)
    seconds, rss = proc.stdout.strip().splitlines()[-1].split()
    return float(seconds), float(rss)


def long_line(mb: int, repeats: int) -> None:
    rng = random.Random(0)
    words = ["alpha", "beta", "gamma", "delta", "epsilon"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        short = "A short sentence here .\n"
        big = tmp / "big.txt"
        with big.open("w") as f:
            f.write(" ".join(rng.choice(words) for _ in range(mb * 1_000_000 // 6)) + "\n" + short)
        small = tmp / "small.txt"
        small.write_text(short)
        rows = {}
        for name, path in (("short sentence", small), (f"{mb} MB line + it", big)):
            runs = [run_child(path, tmp / f"out-{name[:5]}") for _ in range(repeats)]
            rows[name] = (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs))
            print(f"  {name:<22} {rows[name][0]:6.1f} s  {rows[name][1]:7.0f} MiB peak RSS")
        (t_small, m_small), (t_big, m_big) = rows.values()
        print(f"  ratio, long line vs short sentence alone: time {t_big / t_small:.2f}x, "
              f"peak RSS {m_big / m_small:.2f}x (+{t_big - t_small:.1f} s, +{m_big - m_small:.0f} MiB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    tree_check(args.repeats)
    print(f"whole `headscope run --tasks positional` process with minilm (median of {args.repeats})")
    long_line(args.mb, args.repeats)


if __name__ == "__main__":
    main()
