"""Value-weighted attention against an independent reference: per head, the share of [CLS]+[SEP] in its attention
weight and in its norm view (what it writes), from headscope's attention function and from eager attention with
hooked values and the output projection's weights (tests/reference_norm.py), on the same EWT dev batches.

    python benchmarks/norm_agreement.py --sentences 200

Prints the Spearman correlation of the two across the heads, and the sink finding: how many heads put more than
half their weight on [CLS]+[SEP], and the median share of what they write that comes from there.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from reference_norm import norm_maps  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "ud_english_ewt" / "en_ewt-ud-dev.conllu"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sentences", type=int, default=200)
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--model", default="minilm")
    args = ap.parse_args()
    if not Path(args.data).is_file():
        sys.exit(f"data not found: {args.data} (needs ../shared/data)")

    import torch
    from scipy.stats import spearmanr

    import headscope
    from headscope.capture.alignment import encode_sentences
    from headscope.capture.session import capture

    loaded = headscope.load_model(args.model)
    info = loaded.info
    corpus = headscope.load_conllu(args.data, limit=args.sentences)
    sentences = list(corpus.sentences)
    encoded = [e for e in encode_sentences(loaded.tokenizer, sentences) if len(e) <= info.max_length]
    sums = {k: np.zeros((info.num_layers, info.num_heads)) for k in ("weight", "norm", "ref_weight", "ref_norm")}
    rows = np.zeros(1)
    batches: list = []

    def share(kind):
        def on(layer, maps, batch):
            if kind == "weight" and layer == 0:
                batches.append((batch.input_ids.clone(), batch.attention_mask.clone(), batch.special_mask.clone(),
                                batch.token_mask.clone()))
            special = batch.special_mask[:, None, None, :maps.shape[-1]].float()
            real = batch.token_mask[:, None, batch.row_start:batch.row_start + maps.shape[2]].float()
            on_special = (maps.float() * special).sum(-1)                     # [b, h, rows]
            sums[kind][layer] += (on_special * real).sum((0, 2)).double().cpu().numpy()
        return on

    with torch.inference_mode():
        capture(loaded, sentences, encoded, share("weight"), batch_size=16, on_norm_layer=share("norm"))
    for input_ids, mask, special, real in batches:
        weights, norms = norm_maps(loaded.model, input_ids, mask)
        real_np, special_np = real.cpu().numpy(), special.cpu().numpy()
        rows += real_np.sum()
        for kind, maps in (("ref_weight", weights), ("ref_norm", norms)):
            for layer, m in enumerate(maps):
                m = m * real_np[:, None, None, :]
                m = m / m.sum(-1, keepdims=True)
                on_special = (m * special_np[:, None, None, :]).sum(-1)
                sums[kind][layer] += (on_special * real_np[:, None, :]).sum((0, 2))
    shares = {k: (v / rows[0]).ravel() for k, v in sums.items()}
    rho_norm = spearmanr(shares["norm"], shares["ref_norm"]).statistic
    rho_weight = spearmanr(shares["weight"], shares["ref_weight"]).statistic
    sinks = shares["weight"] > 0.5
    print(f"{info.name}: {len(encoded)} sentences, {int(rows[0])} query tokens, {shares['norm'].size} heads")
    print(f"[CLS]+[SEP] share, headscope vs reference: norm Spearman {rho_norm:.4f} (max |diff| "
          f"{np.abs(shares['norm'] - shares['ref_norm']).max():.2e}); weight Spearman {rho_weight:.4f} "
          f"(max |diff| {np.abs(shares['weight'] - shares['ref_weight']).max():.2e})")
    print(f"heads with more than half their weight on [CLS]+[SEP]: {int(sinks.sum())}; median share of what they "
          f"write that comes from there: {np.median(shares['norm'][sinks]):.3f} (their median weight share "
          f"{np.median(shares['weight'][sinks]):.3f})")
    print(f"over all heads: median weight share {np.median(shares['weight']):.3f}, median norm share "
          f"{np.median(shares['norm']):.3f}")


if __name__ == "__main__":
    main()
