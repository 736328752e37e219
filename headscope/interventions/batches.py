"""The inputs of an intervention: data (sentences, or generated repeated sequences) as padded batches, with the
positions each measure reads and, for a masked LM's loss, the masked inputs."""

from __future__ import annotations

from typing import Any, Sequence

from ..errors import HeadscopeError
from .measures import LOSSES, MLM_SHARE


def input_groups(measures: Sequence[str], masked_lm: bool) -> list[list[str]]:
    """The measures that read the same inputs, grouped (each group shares its forward passes): a decoder's
    sentence measures together, the generated induction sequences apart; a masked LM's losses each on inputs
    masked for it."""
    groups: dict = {}
    for m in measures:
        key = "generated" if m == "induction-loss" else (m if masked_lm and m in LOSSES else "data")
        groups.setdefault(key, []).append(m)
    return list(groups.values())


def role_words(sentence: Any, measure: str, causal: bool) -> list[bool]:
    """The words whose tokens a role's loss reads: pronouns (UPOS PRON); dependents whose syntactic head is in
    the context the model sees (before them, for a decoder)."""
    n = len(sentence.words)
    if measure == "pronoun-loss":
        return [sentence.upos[i] == "PRON" for i in range(n)]
    return [0 <= sentence.heads[i] and (sentence.heads[i] < i or not causal) for i in range(n)]


def as_batches(loaded: Any, data: Any, measures: Sequence[str], *, batch_size: int, max_sentences: int | None,
               seed: int, induction_count: int, induction_length: int) -> tuple[str, list[dict]]:
    """The dataset's name and its batches for ``measures`` (one group of ``input_groups``): ``input_ids``,
    ``attention_mask``, ``scored`` (each measure's positions) and, for a masked LM's loss, ``masked_ids``."""
    if "induction-loss" in measures:
        return "repeated_tokens", induction_batches(loaded, batch_size=batch_size, seed=seed, count=induction_count,
                                                    length=induction_length)
    name, sentences = read_sentences(data, measures, max_sentences)
    return name, sentence_batches(loaded, sentences, measures, batch_size=batch_size, seed=seed)


def induction_batches(loaded: Any, *, batch_size: int, seed: int, count: int, length: int) -> list[dict]:
    """Generated repeated sequences (``BOS r r``) as batches whose induction loss reads the second copy."""
    import torch

    from ..analysis.induction import make_sequences
    from ..models.loading import leading_token

    vocab = loaded.model.get_input_embeddings().num_embeddings
    seqs = make_sequences(loaded.tokenizer, count=count, length=length, seed=seed,
                          bos=leading_token(loaded, None) is not None, vocab_size=vocab)
    batches = []
    for i in range(0, len(seqs), batch_size):
        chunk = seqs[i:i + batch_size]
        ids = torch.tensor([s.input_ids for s in chunk], device=loaded.device)
        second = torch.zeros_like(ids, dtype=torch.bool)
        for j, s in enumerate(chunk):
            second[j, s.bos + s.length + 1:] = True         # predicted tokens of the second copy
        batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids),
                        "scored": {"induction-loss": second}})
    return batches


def read_sentences(data: Any, measures: Sequence[str], max_sentences: int | None) -> tuple[str, list]:
    """The name and sentences of the data (a path, a Corpus, Sentences or strings, as analyze takes them; the
    first source with sentences is read), checked to carry what ``measures`` read."""
    from ..datasets.loading import sample_path
    from ..run.jobs import as_sources

    sources = as_sources(data if data is not None else sample_path(), keep_subtypes=False, on_error="fail",
                         max_sentences=max_sentences, fmt=None)
    corpus = next((s for s in sources if getattr(s, "sentences", None)), sources[0])
    sentences = list(getattr(corpus, "sentences", []))[:max_sentences]
    if not sentences:
        raise HeadscopeError(f"{corpus.name}: ablation reads sentences (CoNLL-U or text), and this data has none")
    for m, needs, what in (("pronoun-loss", "upos", "part-of-speech tags (UPOS)"),
                           ("syntax-loss", "heads", "dependency trees")):
        if m in measures and any(getattr(s, needs) is None for s in sentences):
            bad = next(s for s in sentences if getattr(s, needs) is None)
            raise HeadscopeError(f"{bad.source or corpus.name}: measure {m} needs {what}, and sentence "
                                 f"{bad.sent_id or '?'} has none; give CoNLL-U data with them")
    return corpus.name, sentences


def sentence_batches(loaded: Any, sentences: list, measures: Sequence[str], *, batch_size: int,
                     seed: int) -> list[dict]:
    """Sentences as padded batches; a masked LM's loss masks a seeded ``MLM_SHARE`` of each sentence's tokens."""
    import numpy as np
    import torch

    from ..capture.alignment import encode_sentences
    from ..models.loading import leading_token

    tok = loaded.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    masked_lm = not loaded.info.is_decoder and any(m in LOSSES for m in measures)
    if masked_lm and tok.mask_token_id is None:
        raise HeadscopeError(f"{loaded.info.name}: a masked-token loss needs the tokenizer's mask token, which it "
                             f"has not; use hidden or embedding")
    encoded = encode_sentences(tok, sentences, bos_id=leading_token(loaded, None), max_length=loaded.info.max_length)
    rng = np.random.default_rng(seed)
    batches = []
    for i in range(0, len(encoded), batch_size):
        chunk = encoded[i:i + batch_size]
        t = max(len(e) for e in chunk)
        ids = torch.full((len(chunk), t), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), t), dtype=torch.long)
        scored = {m: torch.zeros((len(chunk), t), dtype=torch.bool) for m in measures}
        for j, e in enumerate(chunk):
            ids[j, :len(e)] = torch.tensor(e.input_ids)
            mask[j, :len(e)] = 1
            mark_scored(scored, j, e, sentences[e.index], causal=loaded.info.is_decoder, masked_lm=masked_lm,
                        rng=rng)
        dev = loaded.device
        batch = {"input_ids": ids.to(dev), "attention_mask": mask.to(dev),
                 "scored": {m: v.to(dev) for m, v in scored.items()}}
        if masked_lm:
            (m,) = [m for m in measures if m in LOSSES]
            batch["masked_ids"] = batch["input_ids"].masked_fill(batch["scored"][m], tok.mask_token_id)
        batches.append(batch)
    return batches


def mark_scored(scored: dict, j: int, encoded: Any, sentence: Any, *, causal: bool, masked_lm: bool,
                rng: Any) -> None:
    """Mark in row ``j`` of each measure's ``scored`` (``{measure: [batch, tok] bool}``) the positions it reads
    of one encoded sentence."""
    import numpy as np
    import torch

    n = len(encoded)
    words = np.array(encoded.word_ids)
    for m, rows in scored.items():
        if m in ("pronoun-loss", "syntax-loss"):
            chosen = np.array(role_words(sentence, m, causal) + [False])      # index -1: specials
            rows[j, :n] = torch.from_numpy(chosen[words])
        elif m == "loss" and masked_lm:
            real = np.flatnonzero(words >= 0)
            pick = rng.choice(real, size=max(1, int(round(MLM_SHARE * len(real)))), replace=False)
            rows[j, torch.from_numpy(pick)] = True
        elif m == "loss":
            rows[j, 1:n] = True                               # every token predicted from what precedes
        else:
            rows[j, :n] = True
        if causal and m in LOSSES:
            rows[j, 0] = False                                # the first token has no context
