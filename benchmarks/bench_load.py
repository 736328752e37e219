"""How long loading ``smollm2`` takes: the first load (GGUF conversion) and later loads (cache) (issue #4).

Each load runs in a fresh Python process, as a user's second ``headscope run`` would. Prints the
median over repeats of the whole process (imports included) and of ``load_model`` alone, for
the cached load (target: under 10 s) and, unless ``--no-convert``, one cold conversion into an
empty temporary cache; the ratio of the two. minilm's load is printed alongside for scale.

    python benchmarks/bench_load.py [--repeats 5] [--no-convert]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

CHILD = """
import json, sys, time
t0 = time.perf_counter()
import torch, transformers  # what every headscope run imports anyway
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer
from headscope.models.loading import load_model
t1 = time.perf_counter()
loaded = load_model(sys.argv[1])
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "layers": loaded.info.num_layers}))
"""


def one_load(alias: str, env: dict) -> dict:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD, alias], env=env, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "process_s": wall}


def summary(name: str, runs: list[dict]) -> dict:
    med = {k: statistics.median(r[k] for r in runs) for k in ("process_s", "import_s", "load_s")}
    print(f"{name:<28} process {med['process_s']:6.2f} s   torch+transformers imports {med['import_s']:5.2f} s   "
          f"load_model {med['load_s']:6.2f} s   (median of {len(runs)})")
    return med


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-convert", action="store_true", help="skip the cold conversion (about a minute)")
    args = parser.parse_args()

    env = dict(os.environ)
    one_load("smollm2", env)  # make sure the user cache holds the converted model
    cached = summary("smollm2, cached", [one_load("smollm2", env) for _ in range(args.repeats)])
    summary("minilm", [one_load("minilm", env) for _ in range(args.repeats)])
    print(f"smollm2 later load: {cached['process_s']:.2f} s for the whole process "
          f"(target < 10 s): {'met' if cached['process_s'] < 10 else 'NOT met'}")
    if not args.no_convert:
        with tempfile.TemporaryDirectory() as cache:
            cold = one_load("smollm2", {**env, "HEADSCOPE_CACHE": cache})
        print(f"smollm2, first load (convert) process {cold['process_s']:6.2f} s   load_model {cold['load_s']:6.2f} s")
        print(f"first / later load: {cold['process_s'] / cached['process_s']:.1f}x")


if __name__ == "__main__":
    main()
