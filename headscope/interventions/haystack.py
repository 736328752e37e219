"""The long inputs of the context search: running text as long documents, needle-in-a-haystack inputs, their
batches, and the retrieval scores read from the needles."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Sequence

from ..errors import HeadscopeError


def token_stream(loaded: Any, data: Any) -> tuple[str, list[int]]:
    """The data's running text as one stream of token ids (no special tokens), and the dataset's name."""
    from ..capture.alignment import encode_sentences
    from ..datasets import join_sentences
    from ..datasets.loading import load_data, sample_path

    corpus = load_data(data if data is not None else sample_path())
    sentences = list(getattr(corpus, "sentences", []))
    if not sentences:
        raise HeadscopeError(f"{corpus.name}: long documents are made of sentences (CoNLL-U or text), and this data "
                             f"has none")
    (enc,) = encode_sentences(loaded.tokenizer, [join_sentences(sentences)])
    return corpus.name, [t for t, w in zip(enc.input_ids, enc.word_ids) if w != -1]


def input_ends(loaded: Any) -> tuple[list[int], list[int]]:
    """The tokens an input starts and ends with: a decoder's BOS; an encoder's [CLS] and [SEP]."""
    from ..models.loading import leading_token

    tok = loaded.tokenizer
    if loaded.info.is_decoder:
        bos = leading_token(loaded, None)
        return ([bos] if bos is not None else []), []
    return ([tok.cls_token_id] if tok.cls_token_id is not None else []), \
        ([tok.sep_token_id] if tok.sep_token_id is not None else [])


def long_documents(loaded: Any, stream: Sequence[int], name: str, *, tokens: int, count: int) -> Any:
    """Up to ``count`` documents of exactly ``tokens`` tokens (``[docs, tokens]``): consecutive stretches of
    the stream between the model's own start and end tokens."""
    import torch

    if tokens > loaded.info.max_length:
        raise HeadscopeError(f"--tokens {tokens} is more than {loaded.info.name}'s {loaded.info.max_length} "
                             f"positions; use at most that")
    lead, tail = input_ends(loaded)
    body = tokens - len(lead) - len(tail)
    n = min(count, len(stream) // body) if body > 0 else 0
    if n < 1:
        raise HeadscopeError(f"{name}: the data has {len(stream)} tokens of text, fewer than one document of "
                             f"{tokens}; give longer data with --data or fewer --tokens")
    docs = [lead + list(stream[i * body:(i + 1) * body]) + tail for i in range(n)]
    return torch.tensor(docs, device=loaded.device)


@dataclass(frozen=True)
class Needles:
    """Needle-in-a-haystack inputs ``[needles, tokens]``: each a stretch of text with ``length`` random
    tokens (the needle) at a depth of its own, and the needle again at the end. ``first[i]``: where the
    needle begins in input ``i``; ``second``: where its copy at the end begins (the same in every input)."""

    input_ids: Any
    first: tuple[int, ...]
    second: int
    length: int

    def rows(self) -> Any:
        """The query rows that read the copy (each predicts the needle's next token), ``[length - 1]``."""
        import torch

        return torch.arange(self.second, self.second + self.length - 1)

    def sources(self) -> Any:
        """``[needles, length - 1]``: for each row, where the token it should copy sits in the first needle."""
        import torch

        return torch.tensor([[f + k + 1 for k in range(self.length - 1)] for f in self.first])


def make_needles(loaded: Any, stream: Sequence[int], name: str, *, count: int, length: int, tokens: int,
                 seed: int) -> Needles:
    """``count`` inputs of ``tokens`` tokens: text from the stream (each input from its own offset), a needle
    of ``length`` distinct random ordinary tokens at depths spread evenly over the text, and the needle again
    at the end (teacher-forced: the model reads the copy, and each row's prediction is checked)."""
    import torch

    from ..analysis.induction import make_sequences

    lead, _ = input_ends(loaded)
    hay = tokens - len(lead) - 2 * length
    if length < 2 or count < 1:
        raise HeadscopeError(f"needles need a length of at least 2 and a count of at least 1, got {length} and {count}")
    if hay < length:
        raise HeadscopeError(f"--tokens {tokens} leaves no room for text around two copies of a {length}-token "
                             f"needle; use more tokens or a shorter needle")
    if len(stream) < hay:
        raise HeadscopeError(f"{name}: the data has {len(stream)} tokens of text, fewer than the {hay} that one "
                             f"haystack needs; give longer data with --data or fewer --tokens")
    vocab = loaded.model.get_input_embeddings().num_embeddings
    needles = [s.input_ids[:length] for s in make_sequences(loaded.tokenizer, count=count, length=length, seed=seed,
                                                            bos=False, vocab_size=vocab)]
    rows, first = [], []
    step = max(1, (len(stream) - hay) // count)
    for i, needle in enumerate(needles):
        text = list(stream[i * step % (len(stream) - hay + 1):][:hay])
        at = int(round(hay * 0.9 * (i + 0.5) / count))                   # depths 0..90% of the text
        rows.append(lead + text[:at] + list(needle) + text[at:] + list(needle))
        first.append(len(lead) + at)
    return Needles(torch.tensor(rows, device=loaded.device), tuple(first), len(lead) + hay + length, length)


def text_batches(docs: Any, measure: str) -> list[dict]:
    """One forward per long document; a loss reads every token but the first."""
    batches = []
    for d in docs:
        scored = d.new_ones((1, len(d)), dtype=bool)
        if measure == "loss":
            scored[:, 0] = False                                            # the first token has no target
        batches.append({"input_ids": d[None], "attention_mask": d.new_ones((1, len(d))), "scored": scored})
    return batches


def needle_batches(needles: "Needles", count: int) -> list[dict]:
    """One forward per needle input (the first ``count``); the loss reads the copy's predicted tokens."""
    ids = needles.input_ids[:count]
    targets = needles.rows() + 1                                            # the tokens the copy's rows predict
    batches = []
    for row in ids:
        scored = row.new_zeros((1, len(row)), dtype=bool)
        scored[0, targets.to(row.device)] = True
        batches.append({"input_ids": row[None], "attention_mask": row.new_ones((1, len(row))), "scored": scored})
    return batches


def strongest_keys(loaded: Any, needles: Needles, *, attention_memory: int = 512 * 2**20) -> tuple[Any, Any]:
    """At each row of the needles' copies: every head's strongest key, ``[layer, needles, head, rows]``, and
    whether the model's top prediction is the needle's next token (it copies), ``[needles, rows]``. The
    attention is read in query-row blocks within ``attention_memory`` bytes: no input holds a whole map."""
    import torch

    from ..capture.session import attention_capture, forward_kwargs, start_forward

    info = loaded.info
    ids = needles.input_ids
    q = needles.rows().to(ids.device)                                              # [R]
    top = torch.full((info.num_layers, ids.shape[0], info.num_heads, len(q)), -1, dtype=torch.long,
                     device=ids.device)
    now: dict = {}                      # the capture session and the input being read

    def on_attention(layer: int, probs: Any) -> None:
        r0 = now["capturing"].row_start
        here = (q >= r0) & (q < r0 + probs.shape[2])
        if bool(here.any()):
            top[layer, now["input"]][..., here] = probs[0, :, q[here] - r0].argmax(-1)

    kwargs = forward_kwargs(loaded)
    keep = "logits_to_keep" in inspect.signature(loaded.model.forward).parameters
    copied_rows = []
    with attention_capture(loaded, on_attention) as capturing, torch.inference_mode():
        now["capturing"] = capturing
        capturing.block_rows = max(1, attention_memory // (2 * 4 * info.num_heads * ids.shape[1]))
        for i in range(ids.shape[0]):            # one input per forward: its logits stay small
            now["input"] = i
            start_forward(capturing)
            logits = loaded.model(input_ids=ids[i:i + 1], attention_mask=torch.ones_like(ids[i:i + 1]), **kwargs,
                                  **({"logits_to_keep": q} if keep else {})).logits
            logits = logits[0] if keep else logits[0, q]
            copied_rows.append(logits.argmax(-1) == ids[i, q + 1])
    return top, torch.stack(copied_rows)


def retrieval_hits(top: Any, sources: Any, copied: Any) -> tuple[Any, int, int]:
    """Wu et al. (2024)'s retrieval score, teacher-forced: of the needle tokens the model copies, the share at
    which a head's strongest key is that token in the first needle. From ``strongest_keys`` and the needles'
    ``sources()``: ``(hits [layer, head], copied, rows)``; a head's score is hits / copied."""
    src, copied = sources.to(top.device), copied.to(top.device)
    hit = (top == src[None, :, None, :]) & copied[None, :, None, :]               # [layer, needles, head, R]
    return hit.sum((1, 3)).cpu().numpy(), int(copied.sum()), int(copied.numel())
