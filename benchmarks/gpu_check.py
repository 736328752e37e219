"""On a CUDA machine: the same scores on the GPU as on the CPU, and the pipeline's cost over a bare forward.

1. Tiny random GPT-2, Llama (GQA) and Qwen2 with tokenizers trained on the bundled sample:
   every task that runs without downloads (syntax, positional, tree, pairs, induction) on CPU and
   on CUDA (TF32 off); prints the largest score difference per model.
2. A BERT-base-shaped random model (12 layers x 12 heads, 768 wide): bare eager forward vs the
   syntax + positional pipeline over a treebank, medians of repeats and their ratio, on CUDA.
3. Long context in bf16: a smollm2-shaped random Llama (30 layers, 576 wide, 9 query / 3 KV heads) on
   one ``--tokens`` document (default 8192) of the bundled sample's sentences, joined: the bare SDPA
   forward against ``analyze(tasks="positional")`` (positional, long-range and text-induction measures,
   attention in row blocks), medians and their ratio; host synchronisations counted during the analysis
   (``torch.cuda.set_sync_debug_mode``: a few per batch are expected, none per layer); and the CPU/CUDA
   agreement of the same analysis on a 2-layer copy at 1,024 tokens in float32.
4. bf16 at scale: a BERT-base-shaped and a 1B-class Llama-shaped random model, words per second of the bare
   forward and of the syntax + positional analysis (on a CPU, a 2-layer dry run of the same code).

    python benchmarks/gpu_check.py [--data EWT.conllu] [--repeats 3] [--tokens 8192]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def same_scores_on_gpu(device: str) -> None:
    import torch
    import headscope
    from headscope.models.loading import load_model
    from headscope.testing import tiny_gpt2, tiny_llama, tiny_qwen2

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
              f"max |score diff| {diff:.2e}, rows with different n {n_diff}, device {gpu.meta.config['device']}")


def pipeline_vs_forward(data: str, repeats: int, batch_size: int, device: str, limit: int | None) -> None:
    import torch
    from bench_pipeline import bare_forward
    from transformers import BertConfig, BertModel

    import headscope
    from headscope.models.loading import load_model
    from headscope.testing import bpe_tokenizer

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


def big_bf16(data: str, repeats: int, batch_size: int, device: str, limit: int | None, small: bool = False) -> None:
    """bf16 weights, float32 statistics: a BERT-base-shaped and a 1B-class Llama-shaped random model (16 layers,
    2048 wide, 32 query / 8 KV heads), tokens per second of the bare forward and of the syntax + positional
    analysis; ``small``: a 2-layer, 64-wide dry run of the same code (for a CPU)."""
    import torch
    from bench_pipeline import bare_forward
    from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM

    import headscope
    from headscope.models.loading import load_model
    from headscope.testing import bpe_tokenizer

    tok = bpe_tokenizer()
    corpus = headscope.load_conllu(data, limit=limit)
    tokens = sum(len(s) for s in corpus.sentences)          # words: a lower bound of the tokens read
    dims = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2) if small else {}
    torch.manual_seed(0)
    shapes = {"bert-base-shape": BertModel(BertConfig(vocab_size=len(tok), attn_implementation="eager",
                                                      **(dict(dims, num_attention_heads=4) if small else {}))),
              "llama-1b-shape": LlamaForCausalLM(LlamaConfig(
                  vocab_size=len(tok), attn_implementation="eager", max_position_embeddings=2048,
                  **(dict(dims, num_attention_heads=4, num_key_value_heads=2) if small else
                     dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                          num_key_value_heads=8))))}
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    for name, model in shapes.items():
        loaded = load_model(model.eval().to(dtype), tokenizer=tok, name=name, device=device)
        headscope.analyze(loaded, corpus.sentences[:32], tasks="syntax,positional", bootstrap=0)   # warm-up
        bare, pipe = [], []
        for _ in range(repeats):
            sync()
            bare.append(bare_forward(loaded, corpus, batch_size))
            sync()
            start = time.perf_counter()
            headscope.analyze(loaded, corpus, tasks="syntax,positional", batch_size=batch_size, bootstrap=0)
            sync()
            pipe.append(time.perf_counter() - start)
        b, p = statistics.median(bare), statistics.median(pipe)
        print(f"{name} ({str(dtype).replace('torch.', '')}, {device}): bare forward {tokens / b:,.0f} words/s, "
              f"analysis {tokens / p:,.0f} words/s, ratio {p / b:.2f} (medians of {repeats})")
        del loaded
        if device.startswith("cuda"):
            torch.cuda.empty_cache()


def _long_document(tok, tokens: int):
    """The bundled sample's sentences joined (again and again) until the encoding has ``tokens`` tokens."""
    from headscope.capture.alignment import encode_sentences
    from headscope.datasets import join_sentences, load_sample

    sample = list(load_sample().sentences)
    group, k = [], 0
    while True:
        group.append(sample[k % len(sample)])
        k += 1
        (enc,) = encode_sentences(tok, [join_sentences(group)], bos_id=tok.bos_token_id)
        if len(enc) > tokens:
            group.pop()
            return join_sentences(group)


def _smollm2_shape(tok, layers: int, tokens: int, dtype, device: str):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from headscope.models.loading import load_model

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=576, intermediate_size=1536, num_hidden_layers=layers,
                      num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=tokens + 64,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    model = LlamaForCausalLM(cfg).to(dtype).eval()
    return load_model(model, tokenizer=tok, name=f"smollm2-shape-{layers}L", device=device)


def long_context(device: str, tokens: int, repeats: int) -> None:
    import warnings

    import torch

    import headscope
    from headscope.capture.alignment import encode_sentences
    from headscope.models.loading import model_body
    from headscope.testing import bpe_tokenizer

    tok = bpe_tokenizer()
    doc = _long_document(tok, tokens)
    (enc,) = encode_sentences(tok, [doc], bos_id=tok.bos_token_id)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    loaded = _smollm2_shape(tok, 30, tokens, dtype, device)
    ids = torch.tensor([enc.input_ids], device=loaded.device)

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def bare() -> float:
        from headscope.capture.attention import NAME

        loaded.model.set_attn_implementation("sdpa")
        sync()
        start = time.perf_counter()
        with torch.inference_mode():
            model_body(loaded.model)(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
        sync()
        loaded.model.set_attn_implementation(NAME)
        return time.perf_counter() - start

    def analysis() -> float:
        sync()
        start = time.perf_counter()
        headscope.analyze(loaded, [doc], tasks="positional", bootstrap=0, n_examples=0, batch_size=1)
        sync()
        return time.perf_counter() - start

    bare(), analysis()                                                   # warm-up
    b, a = [], []
    for _ in range(repeats):
        b.append(bare())
        a.append(analysis())
    syncs = 0
    if device.startswith("cuda"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                analysis()
            finally:
                torch.cuda.set_sync_debug_mode(0)
        syncs = sum("synchroniz" in str(w.message) for w in caught)
    print(f"{len(enc)} tokens, {dtype}, 30 layers: bare SDPA median {statistics.median(b):.2f} s, analysis "
          f"median {statistics.median(a):.2f} s, ratio {statistics.median(a) / statistics.median(b):.2f}, "
          f"median paired ratio {statistics.median(x / y for x, y in zip(a, b)):.2f}; host syncs during one "
          f"analysis: {syncs} (30 layers, 1 batch)")
    small = _long_document(tok, 1024)
    cpu = headscope.analyze(_smollm2_shape(tok, 2, 1024, torch.float32, "cpu"), [small], tasks="positional",
                            bootstrap=0, n_examples=0).scores
    dev = headscope.analyze(_smollm2_shape(tok, 2, 1024, torch.float32, device), [small], tasks="positional",
                            bootstrap=0, n_examples=0).scores
    m = cpu.merge(dev, on=["relation", "metric", "layer", "head"], suffixes=("_cpu", "_dev"))
    print(f"2 layers, 1,024 tokens, float32: {len(m)} of {len(cpu)} rows matched, max |score diff| "
          f"{(m['score_cpu'] - m['score_dev']).abs().max():.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "ud_english_ewt" /
                                              "en_ewt-ud-dev.conllu"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cuda", help="cpu for a dry run of this script")
    parser.add_argument("--limit", type=int, default=None, help="first N sentences of --data")
    parser.add_argument("--tokens", type=int, default=8192, help="length of the long-context document")
    args = parser.parse_args()
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device")
    t0 = time.perf_counter()
    same_scores_on_gpu(args.device)
    print(f"[equality check {time.perf_counter() - t0:.0f} s]")
    if Path(args.data).is_file():
        pipeline_vs_forward(args.data, args.repeats, args.batch_size, args.device, args.limit)
        big_bf16(args.data, args.repeats, args.batch_size, args.device, args.limit,
                 small=not args.device.startswith("cuda"))
    else:
        print(f"[no treebank at {args.data}: pipeline-vs-forward skipped]")
    long_context(args.device, args.tokens, args.repeats)


if __name__ == "__main__":
    main()
