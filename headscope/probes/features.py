"""Candidate-parent attention features for every word, built batch by batch from the capture (METRICS §6)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from ..capture.alignment import Batch, is_punct
from ..analysis.base import LayerView
from ..types import Sentence

# Signed distance (candidate - dependent) buckets: <= -K-1, -K..-1, +1..+K, >= K+1; column 0 marks ROOT.
MAX_DISTANCE = 5
N_DISTANCE = 1 + 2 * MAX_DISTANCE + 2


def distance_columns(offset: Any) -> Any:
    """Column of each signed offset in the distance one-hot (offset 0 never occurs; ROOT is column 0)."""
    import numpy as np

    k = MAX_DISTANCE
    o = np.clip(offset, -k - 1, k + 1)
    # -k-1..-1 -> 1..k+1 ; +1..k+1 -> k+2..2k+2
    return np.where(o < 0, o + k + 2, o + k + 1)


@dataclass
class ProbeData:
    """Every word of a treebank as a group of candidate rows (ROOT first, then every other word).

    Row features: ``attention[r] = [A(d -> c) for each layer, head] + [A(c -> d) ...]`` (2·L·H;
    for ROOT, attention to / from the special tokens). Rows of one word are contiguous; ``starts``
    gives each word's first row. Per word: sentence, position, gold head (-1 = ROOT), relation,
    punctuation flag, lower-cased form (for control tasks), and optionally its input-embedding vector.
    """

    num_layers: int
    num_heads: int
    attention: Any            # [rows, 2*L*H] float32
    candidate: Any            # [rows] int32, -1 = ROOT
    starts: Any               # [words + 1] int64 row offsets
    sentence: Any             # [words] int32
    position: Any             # [words] int32
    head: Any                 # [words] int32, -1 = ROOT
    relation: Any             # [words] str
    punct: Any                # [words] bool
    form: Any                 # [words] str
    vectors: Any = None       # [words, dim] float32 or None
    sentence_first_word: Any = None   # [sentences] index of each sentence's first word

    @property
    def n_words(self) -> int:
        return len(self.head)

    @property
    def group(self) -> Any:
        """[rows] the word each row belongs to."""
        import numpy as np

        return np.repeat(np.arange(self.n_words), np.diff(self.starts))

    @property
    def dependent_position(self) -> Any:
        return self.position[self.group]

    def distance(self) -> Any:
        """[rows, N_DISTANCE] one-hot signed distance, column 0 for ROOT."""
        import numpy as np

        out = np.zeros((len(self.candidate), N_DISTANCE), dtype=np.float32)
        root = self.candidate < 0
        cols = np.where(root, 0, distance_columns(self.candidate - self.dependent_position))
        out[np.arange(len(cols)), cols] = 1.0
        return out

    def gold_rows(self, heads: Any = None) -> Any:
        """[rows] 1 where the candidate is the word's head (``heads`` overrides the gold heads)."""
        import numpy as np

        target = self.head if heads is None else heads
        return (self.candidate == target[self.group]).astype(np.int64)


@dataclass
class FeatureCollector:
    """A scorer-shaped collector: pools each layer's map to words, builds rows when a batch ends."""

    num_layers: int
    num_heads: int
    sentences: Sequence[Sentence]
    embeddings: Any = None      # the model's input embedding module, for word vectors
    task: str = "probe-features"
    _maps: list = field(default_factory=list, repr=False)
    _batch: Any = field(default=None, repr=False)
    _vectors: Any = field(default=None, repr=False)
    _parts: dict = field(default_factory=dict, repr=False)

    def start_batch(self, batch: Batch) -> None:
        import torch

        self._batch = batch
        self._maps = [None] * self.num_layers
        self._vectors = None
        if self.embeddings is not None:
            with torch.inference_mode():
                emb = self.embeddings(batch.input_ids).float()                 # [b, tok, dim]
                self._vectors = torch.bmm(batch.from_mat.float(), emb).cpu().numpy()   # [b, col, dim]

    def update(self, view: LayerView) -> None:
        self._maps[view.layer] = view.words.float().cpu()

    def end_batch(self) -> None:
        import torch

        batch = self._batch
        if batch is None or any(m is None for m in self._maps):
            return
        maps = torch.stack(self._maps, 1).numpy()          # [b, L, H, C, C]
        b, L, H, C, _ = maps.shape
        maps = maps.reshape(b, L * H, C, C)
        mw = batch.max_words
        for i, enc in enumerate(batch.encoded):
            sent = self.sentences[enc.index]
            self._add_sentence(enc.index, sent, maps[i], mw, sum(1 for w in enc.word_ids if w < 0),
                               None if self._vectors is None else self._vectors[i, :len(sent.words)])
        self._batch = None
        self._maps = []

    def _add_sentence(self, index: int, sent: Sentence, a: Any, mw: int, n_special: int, vectors: Any) -> None:
        import numpy as np

        n = len(sent.words)
        w = a[:, :n, :n]                                           # [LH, n, n]
        fwd = w.transpose(1, 2, 0)                                 # [d, c, LH] = A[d, c]
        bwd = w.transpose(2, 1, 0)                                 # [d, c, LH] = A[c, d]
        root_f = a[:, :n, mw:].sum(-1).T                           # [n, LH]: d -> special tokens
        root_b = (a[:, mw:, :n].sum(1) / max(n_special, 1)).T      # [n, LH]: special tokens -> d
        off = ~np.eye(n, dtype=bool)
        words = np.concatenate([fwd, bwd], -1)[off].reshape(n, n - 1, 2 * a.shape[0])
        root = np.concatenate([root_f, root_b], -1)[:, None, :]
        rows = np.concatenate([root, words], 1).reshape(n * n, -1).astype(np.float32)
        cand = np.concatenate([np.full((n, 1), -1), np.broadcast_to(np.arange(n), (n, n))[off].reshape(n, n - 1)],
                              1).reshape(-1)
        upos = sent.upos or (None,) * n
        self._parts[index] = (rows, cand.astype(np.int32), np.asarray(sent.heads, dtype=np.int32),
                              np.asarray(sent.relations, dtype=object),
                              np.array([is_punct(x, u) for x, u in zip(sent.words, upos)]),
                              np.array([x.lower() for x in sent.words], dtype=object),
                              None if vectors is None else np.asarray(vectors, dtype=np.float32))

    def merge(self, other: "FeatureCollector") -> "FeatureCollector":
        self._parts.update(other._parts)
        return self

    def result(self) -> ProbeData:
        """The rows of every sentence seen, in corpus order."""
        import numpy as np

        order = sorted(self._parts)
        if not order:
            raise ValueError("no sentence was read")
        parts = [self._parts[k] for k in order]
        sizes = np.array([len(p[2]) for p in parts])
        rows_per_word = np.concatenate([np.full(n, n) for n in sizes])
        vectors = None if parts[0][6] is None else np.concatenate([p[6] for p in parts])
        return ProbeData(
            num_layers=self.num_layers, num_heads=self.num_heads,
            attention=np.concatenate([p[0] for p in parts]),
            candidate=np.concatenate([p[1] for p in parts]),
            starts=np.concatenate([[0], np.cumsum(rows_per_word)]).astype(np.int64),
            sentence=np.repeat(np.arange(len(parts), dtype=np.int32), sizes),
            position=np.concatenate([np.arange(n, dtype=np.int32) for n in sizes]),
            head=np.concatenate([p[2] for p in parts]),
            relation=np.concatenate([p[3] for p in parts]),
            punct=np.concatenate([p[4] for p in parts]),
            form=np.concatenate([p[5] for p in parts]),
            vectors=vectors,
            sentence_first_word=np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64),
        )


def collect_features(loaded: Any, sentences: Sequence[Sentence], *, batch_size: int = 32, vectors: bool = True,
                     bos_id: int | None = None) -> ProbeData:
    """Run ``loaded`` over treebank ``sentences`` once and return every word's candidate rows.

    Only per-sentence rows are kept; attention maps are dropped batch by batch. Sentences without
    a tree, or longer than the model, are refused / skipped by the caller.
    """
    from ..capture.alignment import encode_sentences
    from ..capture.session import capture

    info = loaded.info
    encoded = encode_sentences(loaded.tokenizer, sentences, bos_id=bos_id)
    embeddings = loaded.model.get_input_embeddings() if vectors else None
    collector = FeatureCollector(info.num_layers, info.num_heads, sentences, embeddings)

    def on_layer(layer, weights, batch):
        collector.update(LayerView(layer, weights, batch))

    capture(loaded, sentences, encoded, on_layer, batch_size=batch_size, on_batch_start=collector.start_batch,
            on_batch_end=lambda batch: collector.end_batch())
    return collector.result()
