"""Synthetic batches and attention maps with known answers, for scorer tests."""

from __future__ import annotations

import torch

from headscope.capture.alignment import EncodedSentence, collate
from headscope.analysis.base import LayerView
from headscope.types import Sentence


def sentence(heads: list[int], rels: list[str] | None = None, words: list[str] | None = None) -> Sentence:
    """Heads 0-based, -1 for the root."""
    n = len(heads)
    return Sentence(words=tuple(words or [f"w{i}" for i in range(n)]), heads=tuple(heads),
                    relations=tuple(rels or ["dep" if h >= 0 else "root" for h in heads]), sent_id=f"s{n}")


def batch(sentences: list[Sentence], *, specials: bool = True, causal: bool = False):
    """One token per word, plus [CLS] first and [SEP] last when ``specials``."""
    encoded = []
    for i, s in enumerate(sentences):
        n = len(s.words)
        wids = ([-1] if specials else []) + list(range(n)) + ([-1] if specials else [])
        seps = [False] * (len(wids) - 1) + [specials]
        encoded.append(EncodedSentence(i, tuple(range(1, len(wids) + 1)), tuple(wids), tuple(seps), n))
    return collate(sentences, encoded, pad_id=0, device="cpu", causal=causal)


def offset(b, tokens: int | None = None) -> int:
    """Token position of word 0 (1 when [CLS] leads)."""
    return 1 if b.max_specials else 0


def run(scorer, b, maps: torch.Tensor, layers: int = 1):
    """Feed ``maps`` [batch, head, tok, tok] as every layer's attention; return the result table."""
    scorer.start_batch(b)
    for layer in range(layers):
        scorer.update(LayerView(layer, maps, b))
    scorer.end_batch()
    return scorer.result()


def normalise(maps: torch.Tensor, b) -> torch.Tensor:
    """Zero padding keys and rows, renormalise real rows (rows with no mass become self-attention)."""
    tm = b.token_mask
    maps = maps * tm[:, None, None, :] * tm[:, None, :, None]
    t = maps.shape[-1]
    eye = torch.eye(t).expand_as(maps)
    empty = maps.sum(-1, keepdim=True) == 0
    maps = torch.where(empty, eye, maps)
    return maps / maps.sum(-1, keepdim=True)
