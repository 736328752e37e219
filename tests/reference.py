"""Deliberately simple reference implementations the pipeline is checked against.

Full maps via ``output_attentions=True``, one sentence at a time, plain numpy loops; no batching,
no padding, no pooling matrices. Slow on purpose: every step is written out.
"""

from __future__ import annotations

import numpy as np
import torch
from headscope.capture.alignment import is_punct
from headscope.analysis.positional import CONTENT_UPOS, FAR


def word_attention(att: np.ndarray, word_ids: list) -> np.ndarray:
    """[tok, tok] -> [word, word]: from = mean over the query word's pieces, to = sum over the key word's pieces."""
    n = max(w for w in word_ids if w is not None) + 1
    pieces = [[t for t, w in enumerate(word_ids) if w == i] for i in range(n)]
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            total = 0.0
            for p in pieces[i]:
                for q in pieces[j]:
                    total += float(att[p, q])
            out[i, j] = total / len(pieces[i])
    return out


def eager_forward(model, **inputs):
    """The model's own eager attention maps (``output_attentions``), whatever implementation headscope set:
    the reference is transformers' eager attention, switched on for this call and switched back."""
    previous = getattr(model.config, "_attn_implementation", None)
    switch = previous not in (None, "eager") and callable(getattr(model, "set_attn_implementation", None))
    if switch:
        model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            return model(**inputs, output_attentions=True)
    finally:
        if switch:
            model.set_attn_implementation(previous)


def argmax_excluding(values: list[float], exclude: int, allowed=None) -> int:
    best, best_j = -np.inf, -1
    for j, v in enumerate(values):
        if j == exclude or (allowed is not None and not allowed(j)):
            continue
        if v > best:
            best, best_j = v, j
    return best_j


def full_attentions(model, tokenizer, sentence):
    """Every layer's full map for one sentence, and its word_ids (None for special tokens).

    Token ids come from headscope's own encoder (words as running text; tested on its own in
    test_alignment / test_decoders), so the reference checks the scoring, not the tokenisation.
    """
    from headscope.capture.alignment import encode_sentences
    from headscope.types import Sentence

    if not isinstance(sentence, Sentence):
        sentence = Sentence(words=tuple(sentence))
    (enc,) = encode_sentences(tokenizer, [sentence])
    ids = torch.tensor([enc.input_ids])
    out = eager_forward(model, input_ids=ids, attention_mask=torch.ones_like(ids))
    return [a[0].float().numpy() for a in out.attentions], [None if w < 0 else w for w in enc.word_ids]


def reference_syntax(model, tokenizer, sentences, *, causal: bool = False):
    """{(layer, head, relation, direction): correct} and {relation: n}, relations incl. 'all'."""
    correct: dict = {}
    total: dict = {}
    for s in sentences:
        atts, word_ids = full_attentions(model, tokenizer, s)
        for d, (h, rel) in enumerate(zip(s.heads, s.relations)):
            if h < 0:
                continue
            for r in (rel, "all"):
                total[r] = total.get(r, 0) + 1
        for layer, att in enumerate(atts):
            for head in range(att.shape[0]):
                w = word_attention(att[head], word_ids)
                n = w.shape[0]
                for d, (gold, rel) in enumerate(zip(s.heads, s.relations)):
                    if gold < 0:
                        continue
                    d2h = argmax_excluding([w[d, j] for j in range(n)], d,
                                           (lambda j, d=d: j < d) if causal else None)
                    h2d = argmax_excluding([w[j, d] for j in range(n)], d,
                                           (lambda j, d=d: j > d) if causal else None)
                    for direction, pred in (("dep_to_head", d2h), ("head_to_dep", h2d)):
                        hit = int(pred == gold)
                        for r in (rel, "all"):
                            key = (layer, head, r, direction)
                            correct[key] = correct.get(key, 0) + hit
    return correct, total


def reference_own_prediction(model, tokenizer, sentences, *, causal: bool = False, near: int = 32):
    """{(layer, head, relation, direction): the accuracy the head's own positional habit predicts}.

    The habit: how often the head's dep_to_head argmax lies at each offset from the query word (offsets
    beyond ``near`` in one bin each side), over every word that has another word to look at, by the word's
    relation. For relation r it is learnt on the words of other relations ('all': on every word). An
    instance (dependent d, head h) is predicted with the habit's share at the offset key - query (query d,
    key h for dep_to_head; query h, key d for head_to_dep), divided by the habit's share over the offsets
    the query can reach in its sentence; a far bin's share is spread over the far offsets it can reach."""
    habit: dict = {}       # (layer, head) -> {relation or None: {bin: count}}
    instances = []         # (relation, d, h, n)
    layers = heads = 0

    def bin_of(offset):
        return max(-near - 1, min(near + 1, offset))

    for s in sentences:
        atts, word_ids = full_attentions(model, tokenizer, s)
        layers, heads = len(atts), atts[0].shape[0]
        n = len(s.words)
        for d, (h, rel) in enumerate(zip(s.heads, s.relations)):
            if h >= 0:
                instances.append((rel, d, h, n))
        for layer, att in enumerate(atts):
            for head in range(att.shape[0]):
                w = word_attention(att[head], word_ids)
                for d in range(n):
                    if (d == 0) if causal else (n < 2):
                        continue
                    pred = argmax_excluding([w[d, j] for j in range(n)], d, (lambda j, d=d: j < d) if causal else None)
                    rel = s.relations[d] if s.heads[d] >= 0 else None
                    counts = habit.setdefault((layer, head), {}).setdefault(rel, {})
                    counts[bin_of(pred - d)] = counts.get(bin_of(pred - d), 0) + 1
    out: dict = {}
    relations = sorted({i[0] for i in instances})
    for layer in range(layers):
        for head in range(heads):
            by_rel = habit.get((layer, head), {})
            for r in relations + ["all"]:
                shares: dict = {}
                for rel, counts in by_rel.items():
                    if r != "all" and rel == r:
                        continue
                    for b, c in counts.items():
                        shares[b] = shares.get(b, 0) + c
                total = sum(shares.values())
                mine = [i for i in instances if r == "all" or i[0] == r]
                for direction in ("dep_to_head", "head_to_dep"):
                    got = 0.0
                    for _, d, h, n in mine:
                        query, key = (d, h) if direction == "dep_to_head" else (h, d)
                        offset, lo, hi = key - query, -query, n - 1 - query
                        z = sum(shares.get(b, 0) for b in range(bin_of(lo), bin_of(hi) + 1)) / max(total, 1)
                        width = (-near - lo) if offset < -near else (hi - near) if offset > near else 1
                        if z > 0:
                            got += shares.get(bin_of(offset), 0) / max(total, 1) / max(width, 1) / z
                    out[(layer, head, r, direction)] = got / len(mine)
    return out


def _form(s, w: int) -> str:
    """What same_word compares: the word's lemma where the data has one, else the word; case-folded."""
    lemma = s.lemmas[w] if s.lemmas is not None else "_"
    return (s.words[w] if lemma == "_" else lemma).casefold()


def reference_positional(model, tokenizer, sentences, *, window: int = 3, causal: bool = False, raw: bool = False):
    """{(layer, head, metric): mean over rows} for the positional metrics, plus argmax-offset counts;
    with ``raw``, the sums and row counts behind the means instead of the means."""
    closing = {t for t in (tokenizer.sep_token_id, tokenizer.eos_token_id) if t is not None}
    sums: dict = {}
    counts: dict = {}
    offsets: dict = {}

    def add(key, value):
        sums[key] = sums.get(key, 0.0) + value
        counts[key] = counts.get(key, 0) + 1

    for s in sentences:
        atts, word_ids = full_attentions(model, tokenizer, s)
        from headscope.capture.alignment import encode_sentences

        ids = list(encode_sentences(tokenizer, [s])[0].input_ids)
        t = len(ids)
        sep = np.array([w is None and ids[j] in closing for j, w in enumerate(word_ids)])
        punct = np.array([w is not None and s.upos is not None and s.upos[w] == "PUNCT" for w in word_ids])
        word_punct = [is_punct(x, None if s.upos is None else s.upos[i]) for i, x in enumerate(s.words)]
        content = np.array([w is not None and s.upos is not None and s.upos[w] in CONTENT_UPOS for w in word_ids])
        starts = list(getattr(s, "sentence_starts", None) or [0])
        sentence_of = [None if w is None else sum(1 for x in starts if x <= w) - 1 for w in word_ids]
        for j in range(len(sentence_of)):  # specials: the sentence before, or the first
            if sentence_of[j] is None:
                sentence_of[j] = sentence_of[j - 1] if j else 0
        sentence_of = np.array(sentence_of)
        last_word = max(j for j, w in enumerate(word_ids) if w is not None)   # the last word's final piece
        for layer, att in enumerate(atts):
            for head in range(att.shape[0]):
                a = att[head].astype(np.float64)
                for i in range(t):
                    keys = np.arange(i + 1 if causal else t)   # the keys row i may see
                    row = a[i, keys]
                    k = (layer, head)
                    add(k + ("self",), a[i, i])
                    if i >= 1:
                        add(k + ("prev",), a[i, i - 1])
                    if i < t - 1:
                        add(k + ("next",), a[i, i + 1])
                    add(k + ("first",), a[i, 0])
                    add(k + ("last",), a[i, last_word] if last_word < len(keys) else 0.0)
                    add(k + ("sep",), row[sep[keys]].sum())
                    add(k + ("punct",), row[punct[keys]].sum())
                    add(k + ("local",), row[np.abs(i - keys) <= window].sum())
                    add(k + ("distance",), (row * np.abs(i - keys)).sum())
                    for d in FAR:
                        far = np.abs(i - keys) > d
                        if far.any():
                            add(k + (f"beyond_{d}",), row[far].sum())
                    other = sentence_of[keys] != sentence_of[i]
                    if len(starts) > 1 and other.any():
                        add(k + ("other_sentences",), row[other].sum())
                    wq = word_ids[i]
                    if wq is not None and not word_punct[wq]:
                        same = np.array([word_ids[j] is not None and word_ids[j] != wq
                                         and _form(s, word_ids[j]) == _form(s, wq) for j in keys])
                        if same.any():
                            add(k + ("same_word",), row[same].sum())
                    if wq is not None:
                        after = sorted({j + 1 for j in range(i - 1) if ids[j] == ids[i] and word_ids[j] is not None})
                        if after:
                            add(k + ("induction_text",), a[i, after].sum())
                    if s.upos is not None:
                        add(k + ("content",), row[content[keys]].sum())
                    nz = row[row > 0]
                    ent = -(nz * np.log(nz)).sum()
                    add(k + ("entropy",), ent)
                    if len(keys) >= 2:
                        add(k + ("entropy_norm",), ent / np.log(len(keys)))
                    best = int(np.argmax(row))   # the first of equal weights
                    add(k + ("confidence",), row[best])
                    if len(keys) >= 2:  # a row with one visible key says nothing about position
                        off = offsets.setdefault(k, {})
                        off[best - i] = off.get(best - i, 0) + 1
    if raw:
        return sums, counts
    return {k: sums[k] / counts[k] for k in sums}, offsets


def reference_coref(model, tokenizer, sentences, windows):
    """{(layer, head, group): correct}, {group: n} for antecedent selection, one window at a time."""
    correct: dict = {}
    total: dict = {}
    for sent, win in zip(sentences, windows):
        if not win.queries:
            continue
        atts, word_ids = full_attentions(model, tokenizer, sent)
        for q in win.queries:
            for g in ("all", q.type):
                total[g] = total.get(g, 0) + 1
        for layer, att in enumerate(atts):
            for head in range(att.shape[0]):
                w = word_attention(att[head], word_ids)
                for q in win.queries:
                    pred = argmax_excluding([w[q.head, j] for j in range(q.start)], -1)
                    hit = int(pred in q.antecedent_heads)
                    for g in ("all", q.type):
                        correct[(layer, head, g)] = correct.get((layer, head, g), 0) + hit
    return correct, total


def reference_induction(model, sequences):
    """{(layer, head, pattern): mean attention to the target} from full maps, one sequence at a time."""
    sums: dict = {}
    counts: dict = {}
    for seq in sequences:
        ids = torch.tensor([seq.input_ids])
        out = eager_forward(model, input_ids=ids, attention_mask=torch.ones_like(ids))
        o, t = seq.bos, seq.length
        rows = [("induction", o + t + k, o + k + 1) for k in range(t)]
        rows += [("duplicate", o + t + k, o + k) for k in range(t)]
        rows += [("previous", i, i - 1) for i in range(1, len(seq.input_ids))]
        for layer, att in enumerate(out.attentions):
            a = att[0].double().numpy()
            for head in range(a.shape[0]):
                for pattern, i, j in rows:
                    key = (layer, head, pattern)
                    sums[key] = sums.get(key, 0.0) + a[head, i, j]
                    counts[key] = counts.get(key, 0) + 1
    return {k: sums[k] / counts[k] for k in sums}
