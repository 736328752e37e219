"""Whole-process speed of the default run (issue 13): ``headscope run --tasks syntax,positional`` on EWT dev
with minilm, against the floor of any such run.

The floor is one process that starts Python, imports headscope (torch, transformers), loads the model,
reads and tokenizes the treebank, and runs the model's bare forward with its SDPA kernel over the same
batches. The run is the ``headscope`` command itself: the same, plus capture, scoring, the default 95%
intervals, the tables, report.md/.html/.json and the figures. Each is a fresh process, timed from the
outside, ``--repeats`` times alternately; the table gives medians and the ratio (target <= 1.3), and the
run's own split (analysis and report seconds from run.json).

The command line turns Python's cyclic garbage collector off while a run starts and freezes its objects at
the first batch and at exit (headscope/cli/collection.py). A plain script pays those collections, so the
floor is also timed with the same collector settings ("floor, same gc"), the stricter comparison; both
ratios are printed.

    python benchmarks/bench_run.py [--repeats 3] [--data ...]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "ud_english_ewt" / "en_ewt-ud-dev.conllu"

FLOOR = """
import sys
sys.path.insert(0, {bench!r})
import headscope
from headscope.models.loading import load_model
from bench_pipeline import bare_forward
loaded = load_model("minilm")
corpus = headscope.load_conllu({data!r})
bare_forward(loaded, corpus, 32)
"""

# The same floor with the command line's collector settings: off while it starts, frozen before the forward
# and at exit.
FLOOR_GC = "import gc\ngc.disable()\n" + FLOOR.replace("\nbare_forward(", "\ngc.freeze()\ngc.enable()\nbare_forward(") \
    + "gc.freeze()\n"


def timed(cmd: list[str], cwd: str) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd[:3])} failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    args = ap.parse_args()
    if not Path(args.data).is_file():
        sys.exit(f"data not found: {args.data} (needs ../shared/data)")
    headscope_cmd = str(Path(sys.executable).with_name("headscope"))
    floor, floor_gc, run, analysis, report = [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        for _ in range(args.repeats):     # alternate, so that a slow spell of the machine hits both
            floor.append(timed([sys.executable, "-c", FLOOR.format(bench=str(ROOT / "benchmarks"), data=args.data)],
                               tmp))
            floor_gc.append(timed([sys.executable, "-c", FLOOR_GC.format(bench=str(ROOT / "benchmarks"),
                                                                         data=args.data)], tmp))
            shutil.rmtree(out, ignore_errors=True)
            run.append(timed([headscope_cmd, "run", "--data", args.data, "--tasks", "syntax,positional", "--out",
                              str(out)], tmp))
            meta = json.loads((out / "run.json").read_text())
            analysis.append(meta["seconds"])
            report.append(meta.get("report_seconds", float("nan")))
    med = statistics.median
    print(f"EWT dev ({args.data}), minilm; medians of {args.repeats} alternating fresh processes")
    print(f"floor (import + load + read + bare SDPA forward): {med(floor):6.2f} s  (runs: "
          + ", ".join(f"{x:.2f}" for x in floor) + ")")
    print(f"floor, same gc (collection off at start):        {med(floor_gc):6.2f} s  (runs: "
          + ", ".join(f"{x:.2f}" for x in floor_gc) + ")")
    print(f"headscope run --tasks syntax,positional:          {med(run):6.2f} s  (runs: "
          + ", ".join(f"{x:.2f}" for x in run) + ")")
    print(f"  of which analyze() {med(analysis):.2f} s, report and figures {med(report):.2f} s (run.json)")
    ratios = [r / f for r, f in zip(run, floor)]
    print(f"run / floor: {med(run) / med(floor):.2f} (ratio of medians); median of paired ratios {med(ratios):.2f} "
          f"(target <= 1.3)")
    strict = [r / f for r, f in zip(run, floor_gc)]
    print(f"run / floor with the same gc: {med(run) / med(floor_gc):.2f} (ratio of medians); median of paired ratios "
          f"{med(strict):.2f}")


if __name__ == "__main__":
    main()
