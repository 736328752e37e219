"""The three ways of a large run against one process (issue #15): the whole `headscope run` in one process,
under `torchrun --nproc_per_node 2` (gloo, CPU), as 2 shards plus `headscope merge`, and with checkpoints
(`--checkpoint-every`), alternated.

Prints, from one run on EWT dev with minilm (syntax + positional, intervals on, no figures): each command's
wall time (median of the repeats), the speed-up of two ranks over one process, the gather and merge times
that rank 0 records in run.json against the whole run, the shards' times and the merge's, and what
checkpointing every few batches adds.

    python benchmarks/bench_distributed.py [--data PATH] [--repeats 3] [-n 1000] [--checkpoint-every 8]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "ud_english_ewt" / "en_ewt-ud-dev.conllu"


def timed(cmd: list[str], out: Path) -> tuple[float, dict]:
    start = time.perf_counter()
    done = subprocess.run(cmd + ["--out", str(out)], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{done.stderr[-2000:]}")
    return seconds, json.loads((out / "run.json").read_text())


def timed_shard(cmd: list[str], out: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd + ["--out", str(out)], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{done.stderr[-2000:]}")
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("-n", "--max-sentences", type=int, default=None)
    ap.add_argument("--checkpoint-every", type=int, default=8, help="batches between checkpoints")
    args = ap.parse_args()
    if not Path(args.data).is_file():
        sys.exit(f"data not found: {args.data} (needs ../shared/data)")
    run = ["-m", "headscope", "run", "--model", "minilm", "--data", args.data, "--tasks", "syntax,positional",
           "--no-figures", "--quiet", "--force"] + (["-n", str(args.max_sentences)] if args.max_sentences else [])
    one_cmd = [sys.executable] + run
    two_cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"] + run
    ones, twos, gathers, merges, shards, shard_merges, checkpointed = [], [], [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):     # alternated, so that machine noise hits all alike
            t1, _ = timed(one_cmd, Path(tmp) / f"one{r}")
            t2, meta = timed(two_cmd, Path(tmp) / f"two{r}")
            ones.append(t1)
            twos.append(t2)
            gathers.append(meta["distributed"]["gather_seconds"])
            merges.append(meta["distributed"]["merge_seconds"])
            parts = [Path(tmp) / f"part{r}_{i}" for i in range(2)]
            shards.append([timed_shard(one_cmd + ["--shard", f"{i}/2"], part) for i, part in enumerate(parts)])
            shard_merges.append(timed([sys.executable, "-m", "headscope", "merge", *map(str, parts), "--no-figures",
                                       "--force"], Path(tmp) / f"merged{r}")[0])
            checkpointed.append(timed(one_cmd + ["--checkpoint-every", str(args.checkpoint_every)],
                                      Path(tmp) / f"ckpt{r}")[0])
    one, two = statistics.median(ones), statistics.median(twos)
    print(f"minilm on {Path(args.data).name}{f' (first {args.max_sentences})' if args.max_sentences else ''}, "
          f"syntax + positional, whole process, {args.repeats} alternated repeats")
    print(f"one process:            median {one:6.2f} s  (runs {', '.join(f'{x:.2f}' for x in ones)})")
    print(f"torchrun, 2 ranks gloo: median {two:6.2f} s  (runs {', '.join(f'{x:.2f}' for x in twos)})")
    print(f"speed-up of 2 ranks:    {one / two:.2f}x (median of paired: "
          f"{statistics.median([a / b for a, b in zip(ones, twos)]):.2f}x) on this machine's cores")
    g, m = statistics.median(gathers), statistics.median(merges)
    print(f"gathering the states:   median {g:.2f} s = {100 * g / two:.1f}% of the 2-rank run")
    print(f"merging on rank 0:      median {m:.2f} s = {100 * m / two:.1f}% (rebuild the scorers from the states, "
          f"intervals, tables; no forward pass)")
    longest = statistics.median([max(x) for x in shards])
    total = statistics.median([sum(x) for x in shards])
    sm = statistics.median(shard_merges)
    print(f"2 shards + merge:       shards median {total:.2f} s one after the other, the longer {longest:.2f} s; "
          f"merge {sm:.2f} s (a new process: import, data read again); side by side "
          f"{longest + sm:.2f} s = {one / (longest + sm):.2f}x one process")
    c = statistics.median(checkpointed)
    print(f"--checkpoint-every {args.checkpoint_every}:  median {c:6.2f} s = {c / one:.2f}x one process "
          f"(paired {statistics.median([b / a for a, b in zip(ones, checkpointed)]):.2f}x)")


if __name__ == "__main__":
    main()
