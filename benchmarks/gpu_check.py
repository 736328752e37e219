"""On a CUDA machine: the same scores on the GPU as on the CPU, and the pipeline's cost over a bare forward.

1. Tiny random GPT-2, Llama (GQA) and Qwen2 with tokenizers trained on the bundled sample:
   every task that runs without downloads (syntax, positional, tree, pairs, induction) on CPU and
   on CUDA (TF32 off); prints the largest score difference per model.
2. A BERT-base-shaped random model (12 layers x 12 heads, 768 wide): bare eager forward vs the
   syntax + positional pipeline over a treebank, medians of repeats and their ratio, on CUDA.

    python benchmarks/gpu_check.py [--data EWT.conllu] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))


def same_scores_on_gpu(device: str) -> None:
    import torch
    from conftest import tiny_gpt2, tiny_llama, tiny_qwen2

    import headscope
    from headscope.models import load_model

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    tasks = "syntax,positional,tree,pairs,induction"
    for name, make in (("gpt2", tiny_gpt2), ("llama", tiny_llama), ("qwen2", tiny_qwen2)):
        model, tok = make()
        cpu = headscope.analyze(load_model(model, tokenizer=tok, name=name), None, tasks=tasks, induction_count=16)
        model, tok = make()
        gpu = headscope.analyze(load_model(model, tokenizer=tok, name=name, device=device), None, tasks=tasks,
                                induction_count=16)
        keys = ["dataset", "task", "relation", "direction", "metric", "baseline", "layer", "head"]
        merged = cpu.scores.merge(gpu.scores, on=keys, suffixes=("_cpu", "_gpu"), how="outer", indicator=True)
        unmatched = int((merged["_merge"] != "both").sum())
        diff = (merged["score_cpu"] - merged["score_gpu"]).abs().max()
        n_diff = int((merged["n_cpu"] != merged["n_gpu"]).sum())
        print(f"{name:6s} rows {len(cpu.scores)} cpu / {len(gpu.scores)} gpu, unmatched {unmatched}, "
              f"max |score diff| {diff:.2e}, rows with different n {n_diff}, device {gpu.meta['config']['device']}")


def pipeline_vs_forward(data: str, repeats: int, batch_size: int, device: str, limit: int | None) -> None:
    import torch
    from bench_pipeline import bare_forward
    from conftest import bpe_tokenizer
    from transformers import BertConfig, BertModel

    import headscope
    from headscope.models import load_model

    tok = bpe_tokenizer()
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(tok), attn_implementation="eager")   # BERT-base shape, random weights
    loaded = load_model(BertModel(cfg).eval(), tokenizer=tok, name="bert-base-shape", device=device)
    corpus = headscope.load_conllu(data, limit=limit)
    headscope.analyze(loaded, corpus.sentences[:64], tasks="syntax,positional")      # warm-up
    bare_forward(loaded, corpus, batch_size)
    bare, pipe = [], []

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    for _ in range(repeats):
        sync()
        bare.append(bare_forward(loaded, corpus, batch_size))
        sync()
        start = time.perf_counter()
        headscope.analyze(loaded, corpus, tasks="syntax,positional", batch_size=batch_size)
        sync()
        pipe.append(time.perf_counter() - start)
    b, p = statistics.median(bare), statistics.median(pipe)
    where = torch.cuda.get_device_name() if device.startswith("cuda") else device
    ratios = sorted(x / y for x, y in zip(pipe, bare))
    print(f"{len(corpus)} sentences, batch {batch_size}, {where}: bare forward median "
          f"{b:.2f} s, pipeline median {p:.2f} s, ratio of medians {p / b:.2f}, median paired ratio "
          f"{statistics.median(ratios):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "ud_english_ewt" /
                                              "en_ewt-ud-dev.conllu"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cuda", help="cpu for a dry run of this script")
    parser.add_argument("--limit", type=int, default=None, help="first N sentences of --data")
    args = parser.parse_args()
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device")
    t0 = time.perf_counter()
    same_scores_on_gpu(args.device)
    print(f"[equality check {time.perf_counter() - t0:.0f} s]")
    pipeline_vs_forward(args.data, args.repeats, args.batch_size, args.device, args.limit)


if __name__ == "__main__":
    main()
