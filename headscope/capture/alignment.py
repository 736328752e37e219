"""Subword <-> word alignment and token -> word attention pooling (METRICS §1)."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any, Sequence

from ..errors import ModelError
from ..types import Sentence


def is_punct(word: str, upos: str | None = None) -> bool:
    """Punctuation by UPOS when known, else a word made only of Unicode punctuation."""
    if upos is not None:
        return upos == "PUNCT"
    return bool(word) and all(unicodedata.category(c).startswith("P") for c in word)


@dataclass(frozen=True)
class EncodedSentence:
    """One sentence as model input, with the piece -> word map.

    ``word_ids[t]`` is the word index of token t, or -1 for a special token.
    """

    index: int                  # position in the corpus
    input_ids: tuple[int, ...]
    word_ids: tuple[int, ...]
    sep_tokens: tuple[bool, ...]  # [SEP]/EOS positions (special tokens that close a sequence)
    n_words: int
    replaced_words: int = 0      # words that tokenized to nothing and were replaced by the unknown token
    bos_added: bool = False      # headscope put the BOS first (the tokenizer did not)

    def __len__(self) -> int:
        return len(self.input_ids)


def _word_ids(enc: Any, i: int) -> list[int]:
    return [-1 if w is None else int(w) for w in enc.word_ids(i)]


def _without_prefix(backend: Any) -> Any:
    """A copy of a Rust tokenizer whose pre-tokenizer no longer puts a space marker before every
    pre-split word (ByteLevel add_prefix_space, Metaspace prepend_scheme); None when it has no such step."""
    import json

    from tokenizers import Tokenizer

    spec = json.loads(backend.to_str())
    changed = False

    def fix(node: Any) -> Any:
        nonlocal changed
        if isinstance(node, list):
            return [fix(x) for x in node]
        if not isinstance(node, dict):
            return node
        kind = node.get("type")
        if kind == "ByteLevel" and node.get("add_prefix_space"):
            node["add_prefix_space"], changed = False, True
        if kind == "Metaspace" and (node.get("prepend_scheme", "never") != "never" or node.get("add_prefix_space")):
            node["prepend_scheme"], changed = "never", True
            if "add_prefix_space" in node:
                node["add_prefix_space"] = False
        if "pretokenizers" in node:
            node["pretokenizers"] = fix(node["pretokenizers"])
        return node

    if spec.get("pre_tokenizer") is not None:
        spec["pre_tokenizer"] = fix(spec["pre_tokenizer"])
    if not changed:
        return None
    copy = Tokenizer.from_str(json.dumps(spec))
    copy.no_truncation()
    copy.no_padding()
    return copy


@dataclass
class Convention:
    """How words reach the tokenizer. ``spaced``: each word carries the space running text puts before it;
    ``encoder``: a tokenizer copy without per-word space markers (for tokenizers that mark every word),
    whose first word also gets the space the original adds at the start of a text."""

    name: str                 # "plain", "spaced" or "respaced"
    encoder: Any = None       # the Rust tokenizer copy for "respaced"


def space_convention(tokenizer: Any) -> str:
    """How pre-split words are given so their pieces match running text: ``plain`` (as they are:
    WordPiece), ``spaced`` (with the space before them: byte-level BPE without prefix space, e.g.
    SmolLM2), or ``respaced`` (tokenizers that mark every pre-split word, e.g. SentencePiece or
    GPT-2 with add_prefix_space: a copy without the marker, then spaced). Decided by comparing
    with the running text "The cat sat."."""
    return _convention(tokenizer).name


def _convention(tokenizer: Any) -> Convention:
    words = ["The", "cat", "sat", "."]
    spaced_words = ["The", " cat", " sat", "."]
    try:
        running = list(tokenizer("The cat sat.", add_special_tokens=False)["input_ids"])
        plain = list(_call(tokenizer, [words], specials=False)["input_ids"][0])
        if plain == running:
            return Convention("plain")
        spaced = list(_call(tokenizer, [spaced_words], specials=False)["input_ids"][0])
        if spaced == running:
            return Convention("spaced")
        backend = getattr(tokenizer, "backend_tokenizer", None)
        copy = _without_prefix(backend) if backend is not None else None
        if copy is not None:
            ids = copy.encode([" " + spaced_words[0]] + spaced_words[1:], is_pretokenized=True,
                              add_special_tokens=False).ids
            if list(ids) == running:
                return Convention("respaced", copy)
    except (ModelError, TypeError, ValueError, KeyError):
        pass
    return Convention("plain")


def text_words(sentence: Sentence, convention: str) -> list[str]:
    """The words as handed to the tokenizer: with the space running text puts before them (not for ``plain``)."""
    if convention == "plain":
        return list(sentence.words)
    spaces = sentence.space_after or (True,) * len(sentence.words)
    first = " " if convention == "respaced" else ""
    return [first + w if i == 0 else (" " + w if spaces[i - 1] else w) for i, w in enumerate(sentence.words)]


def encode_sentences(tokenizer: Any, sentences: Sequence[Sentence], *, bos_id: int | None = None,
                     chunk: int = 2048, max_length: int | None = None) -> list[EncodedSentence]:
    """Tokenize pre-split words with the fast tokenizer; alignment comes from ``word_ids()``.

    Words are given as running text would present them (see ``space_convention``; UD
    ``SpaceAfter=No`` is honoured). ``bos_id``: a token put first when the tokenizer does not
    already start with it (a decoder's BOS / attention sink); it is a special token, never a word.
    Words that yield no piece at all (e.g. a lone control character) are re-encoded as the
    tokenizer's unknown token so that every word has a column; how many is recorded.
    ``max_length``: sentences with more words than this many tokens are left out without being
    tokenized (every word takes at least one token, so they cannot fit): a 50 MB line costs nothing.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(f"word alignment needs a fast tokenizer (word_ids), got {type(tokenizer).__name__}")
    closing = {t for t in (tokenizer.sep_token_id, tokenizer.eos_token_id) if t is not None and t != bos_id}
    convention = _convention(tokenizer)

    def call(words: list[list[str]]):
        if convention.encoder is not None:
            return _Encoded(convention.encoder.encode_batch(words, is_pretokenized=True, add_special_tokens=True))
        return _call(tokenizer, words)

    out: list[EncodedSentence] = []
    positions = [i for i, s in enumerate(sentences) if max_length is None or len(s.words) <= max_length]
    for start in range(0, len(positions), chunk):
        where = positions[start:start + chunk]
        part = [sentences[i] for i in where]
        words = [text_words(s, convention.name) for s in part]
        enc = call(words)
        for k, sent in enumerate(part):
            ids = list(enc["input_ids"][k])
            wids = _word_ids(enc, k)
            replaced = 0
            present = set(wids)
            if len(present - {-1}) < len(sent.words):
                fixed = [w if i in present else (tokenizer.unk_token or "?") for i, w in enumerate(words[k])]
                replaced = len(sent.words) - len(present - {-1})
                enc1 = call([fixed])
                ids, wids = list(enc1["input_ids"][0]), _word_ids(enc1, 0)
                if len(set(wids) - {-1}) < len(sent.words):
                    raise ModelError(f"{sent.source or sent.sent_id}: the tokenizer gives no piece for some words "
                                     f"even after replacing them by its unknown token")
            added = bos_id is not None and (not ids or ids[0] != bos_id or wids[0] != -1)
            if added:
                ids, wids = [bos_id] + ids, [-1] + wids
            seps = tuple(w == -1 and t in closing for t, w in zip(ids, wids))
            out.append(EncodedSentence(where[k], tuple(ids), tuple(wids), seps, len(sent.words), replaced, added))
    return out


class _Encoded:
    """What the backend (Rust) tokenizer returns, shaped like a BatchEncoding for our two uses."""

    def __init__(self, encodings: list) -> None:
        self._encodings = encodings
        self._ids = [e.ids for e in encodings]

    def __getitem__(self, key: str) -> list:
        return self._ids

    def word_ids(self, i: int) -> list:
        return self._encodings[i].word_ids


def _call(tokenizer: Any, words: list[list[str]], *, specials: bool = True):
    # The Rust backend is what the fast tokenizer calls anyway; going to it directly skips a
    # per-sentence Python conversion. Only when it neither truncates nor pads, so results match.
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and backend.truncation is None and backend.padding is None and len(words) > 1:
        _call(tokenizer, words[:1], specials=specials)  # the wrapper's own checks (e.g. add_prefix_space)
        try:
            return _Encoded(backend.encode_batch(words, is_pretokenized=True, add_special_tokens=specials))
        except Exception:  # noqa: BLE001 - fall back to the documented path below
            pass
    try:
        return tokenizer(words, is_split_into_words=True, add_special_tokens=specials, truncation=False,
                         return_attention_mask=False, verbose=False)
    except (ValueError, TypeError) as exc:
        raise ModelError(f"tokenizer {type(tokenizer).__name__} cannot encode pre-split words: "
                         f"{str(exc).splitlines()[0]} (byte-level BPE tokenizers need add_prefix_space=True)") from None


@dataclass
class Batch:
    """Padded tensors for a batch of sentences, on the model's device.

    Columns of pooled maps: words first (0..max_words-1), then special tokens in order
    (max_words..max_words+max_specials-1).
    """

    sentences: list[Sentence]
    encoded: list[EncodedSentence]
    input_ids: Any        # [batch, tok] long
    attention_mask: Any   # [batch, tok] long
    token_mask: Any       # [batch, tok] bool: real (not padding)
    lengths: Any          # [batch] long: tokens per sentence
    n_words: Any          # [batch] long
    word_mask: Any        # [batch, word] bool
    special_mask: Any     # [batch, tok] bool
    sep_mask: Any         # [batch, tok] bool
    punct_mask: Any       # [batch, tok] bool: pieces of punctuation words
    col_of: Any           # [batch, tok] long: each token's column (words, then specials; padding: n_cols)
    max_words: int
    max_specials: int
    causal: bool
    # [batch, query] keys each row may attend to in the layer being scored, counted from the model's own
    # mask (causality, sliding window, padding); set by the capture per layer, None when unknown (hooks)
    visible: Any = None
    # [batch, query, key] bool: the model's own mask of that block (True = may attend), when it passed one
    # (padding, sliding windows); None when the batch's rule holds (all real keys, or those up to the query)
    key_mask: Any = None
    # first query row of the attention block being scored (capture in row blocks); 0 for whole maps
    row_start: int = 0
    # attention.RowStats of the block being scored (entropy and confidence per row) when the capture
    # computed them; None otherwise (LayerView.row_stats then reads them from the probabilities)
    row_stats: Any = None
    # [batch, head, keys] float32: ``‖v_j W_O^h‖`` of the block's keys, what each key's value writes
    # (``norms.value_norms``), when the capture was asked for it (``capture(value_norms=True)``); else None
    value_norms: Any = None
    _pooling: Any = None

    @property
    def size(self) -> int:
        return len(self.encoded)

    @property
    def to_mat(self) -> Any:
        """[batch, col, tok] float: 1 where token t belongs to column c (sums a word's pieces). Built on first
        use: a long document's word x token matrices are large and most tasks never pool."""
        return self._pooling_mats()[0]

    @property
    def from_mat(self) -> Any:
        """[batch, col, tok] float: to_mat divided by each column's piece count (means over a word's pieces)."""
        return self._pooling_mats()[1]

    def _pooling_mats(self) -> Any:
        if self._pooling is None:
            import torch

            b, t = self.col_of.shape
            cols = self.max_words + self.max_specials
            to_mat = torch.zeros((b, cols + 1, t), device=self.col_of.device)
            to_mat.scatter_(1, self.col_of.unsqueeze(1), 1.0)
            to_mat = to_mat[:, :cols]
            self._pooling = (to_mat, to_mat / to_mat.sum(-1, keepdim=True).clamp_min(1.0))
        return self._pooling


def collate(sentences: Sequence[Sentence], encoded: Sequence[EncodedSentence], *, pad_id: int,
            device: Any, causal: bool) -> Batch:
    """Pad a batch (right padding) and build the pooling matrices."""
    import numpy as np
    import torch

    b = len(encoded)
    t_max = max(len(e) for e in encoded)
    w_max = max(e.n_words for e in encoded)
    ids = np.full((b, t_max), pad_id, dtype=np.int64)
    word_of = np.full((b, t_max), -2, dtype=np.int64)  # -2 padding, -1 special
    sep = np.zeros((b, t_max), dtype=bool)
    punct_word = np.zeros((b, w_max + 1), dtype=bool)
    for i, (s, e) in enumerate(zip(sentences, encoded)):
        n = len(e)
        ids[i, :n] = e.input_ids
        word_of[i, :n] = e.word_ids
        sep[i, :n] = e.sep_tokens
        upos = s.upos or (None,) * len(s.words)
        punct_word[i, :len(s.words)] = [is_punct(x, u) for x, u in zip(s.words, upos)]
    special = word_of == -1
    # Special tokens get the columns after the words, in order of appearance.
    s_rank = np.cumsum(special, axis=1) - 1
    s_max = int(special.sum(1).max())
    cols = w_max + s_max
    col_of = np.where(special, w_max + s_rank, word_of)
    col_of = np.where(word_of == -2, cols, col_of)                 # padding -> dump column
    token_mask = torch.from_numpy(word_of > -2)
    n_words = torch.tensor([e.n_words for e in encoded])
    word_mask = torch.arange(w_max).unsqueeze(0) < n_words.unsqueeze(1)
    punct = torch.from_numpy(np.take_along_axis(punct_word, np.clip(word_of, 0, w_max), 1) & (word_of >= 0))
    ids, sep, special = torch.from_numpy(ids), torch.from_numpy(sep), torch.from_numpy(special)
    dev = torch.device(device) if device is not None else None
    return Batch(
        sentences=list(sentences), encoded=list(encoded),
        input_ids=ids.to(dev), attention_mask=token_mask.long().to(dev), token_mask=token_mask.to(dev),
        lengths=token_mask.sum(1).to(dev), n_words=n_words.to(dev), word_mask=word_mask.to(dev),
        special_mask=special.to(dev), sep_mask=sep.to(dev), punct_mask=punct.to(dev),
        col_of=torch.from_numpy(col_of).to(dev), max_words=w_max, max_specials=s_max, causal=causal,
    )


def pool_words(attn: Any, batch: Batch) -> Any:
    """Token attention ``[batch, head, tok, tok]`` -> word attention ``[batch, head, col, col]``.

    Rows (from) are the mean over a word's pieces, columns (to) the sum, so rows stay
    stochastic; special tokens keep their own columns after the words.
    """
    import torch

    a = attn.to(batch.from_mat.dtype)
    b, h, t, _ = a.shape
    c = batch.to_mat.shape[1]
    # Sum key pieces in one product over the batch (not b*h tiny ones), then average query pieces with
    # the batch's [col, tok] matrix broadcast over heads: no transposed copy, and the result is contiguous.
    keys = torch.bmm(a.reshape(b, h * t, t), batch.to_mat.transpose(1, 2)).view(b, h, t, c)
    return torch.matmul(batch.from_mat.unsqueeze(1), keys)                    # [b, h, col, col]


class WordRows:
    """Word-level attention rows assembled from blocks of token rows (capture in row blocks).

    A word's row is the mean of its pieces' rows, its column the sum of its pieces' columns, as in
    ``pool_words``. A block is scored up to the last position where every input of the batch is between
    two words; the rows after it wait for the next block. ``feed(tokens, row_start)`` returns
    ``(rows [b, head, R, col], word [b, R], lo)``: the complete word rows of words ``lo..lo+R-1`` and each
    one's word index (-1 where that input has no such word here), or None when no word is complete yet.
    """

    def __init__(self, batch: Batch) -> None:
        import torch

        self.batch = batch
        b, t = batch.col_of.shape
        word_of = torch.where(batch.col_of < batch.max_words, batch.col_of, torch.full_like(batch.col_of, -1))
        starts = torch.ones((b, t + 1), dtype=torch.bool, device=word_of.device)  # a cut before token p is safe
        same = (word_of[:, 1:] == word_of[:, :-1]) & (word_of[:, 1:] >= 0)
        starts[:, 1:t] = ~same
        self.safe = starts.all(0).tolist()          # cut positions that split no word of any input
        self.word_of = word_of
        self.host = word_of.cpu().numpy()            # word ranges are read here: no device round trip per block
        self.cols = batch.max_words + batch.max_specials
        self.pending = None                          # token rows [b, h, n, cols] not yet cut, pooled over keys
        self.pending_start = 0

    def feed(self, tokens: Any, row_start: int) -> Any:
        import torch

        b, h, n, w = tokens.shape
        keys = tokens.new_zeros((b, h, n, self.cols + 1))
        col = self.batch.col_of[:, :w].clamp_max(self.cols)          # padding keys -> the dump column
        for i in range(b):
            keys[i].index_add_(-1, col[i], tokens[i].float())
        keys = keys[..., : self.cols]                                 # [b, h, n, col]: columns summed over pieces
        if self.pending is not None:
            keys = torch.cat([self.pending, keys], 2)
        first = self.pending_start
        end = row_start + n
        cut = end if end >= len(self.safe) - 1 else max(p for p in range(first, end + 1) if self.safe[p])
        ready, self.pending = keys[:, :, : cut - first], (keys[:, :, cut - first:] if cut < end else None)
        self.pending_start = cut
        if cut == first:
            return None
        word = self.word_of[:, first:cut]                              # [b, rows]
        host = self.host[:, first:cut]
        if not (host >= 0).any():
            return None
        lo, hi = int(host[host >= 0].min()), int(host.max()) + 1
        rows = ready.new_zeros((b, h, hi - lo + 1, self.cols))        # the last row takes specials and padding
        idx = torch.where(word >= 0, word - lo, torch.full_like(word, hi - lo))
        pieces = torch.zeros((b, hi - lo + 1), device=ready.device)
        for i in range(b):
            rows[i].index_add_(1, idx[i], ready[i])
            pieces[i].index_add_(0, idx[i], torch.ones_like(idx[i], dtype=torch.float32))
        rows = rows[:, :, :-1].div_(pieces[:, None, :-1, None].clamp_min(1))   # in place: a long input's rows are big
        index = torch.arange(lo, hi, device=ready.device).expand(b, -1)
        real = pieces[:, :-1] > 0
        return rows, torch.where(real, index, torch.full_like(index, -1)), lo
