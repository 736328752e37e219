"""Domain types shared across modules: small frozen dataclasses, no bare dicts."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Sentence:
    """One sentence of syntactic words, optionally with a gold dependency tree.

    ``heads`` are 0-based word indices, ``-1`` for the root; ``None`` when the data has no tree.
    ``source`` is ``path:line`` of the sentence's first line, for error messages.
    ``space_after[i]`` says whether running text has a space after word i (UD ``SpaceAfter=No``,
    words inside a multiword token); ``None`` when unknown, read as a space after every word.
    ``sentence_starts``: for a document of joined sentences, the word index where each begins (0 first);
    trees then index the whole document's words. ``lemmas``: each word's lemma (UD LEMMA; ``"_"`` where
    unknown), or ``None`` when the data has none.
    """

    words: tuple[str, ...]
    heads: tuple[int, ...] | None = None
    relations: tuple[str, ...] | None = None
    upos: tuple[str, ...] | None = None
    sent_id: str = ""
    source: str = ""
    space_after: tuple[bool, ...] | None = None
    sentence_starts: tuple[int, ...] | None = None
    lemmas: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        n = len(self.words)
        for name in ("heads", "relations", "upos", "space_after", "lemmas"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"Sentence {self.sent_id!r}: {name} has {len(value)} items for {n} words")
        starts = self.sentence_starts
        if starts is not None and (not starts or starts[0] != 0 or any(b <= a for a, b in zip(starts, starts[1:]))
                                   or starts[-1] >= max(n, 1)):
            raise ValueError(f"Sentence {self.sent_id!r}: sentence_starts must rise from 0 and stay below {n} words, "
                             f"got {starts}")

    def __len__(self) -> int:
        return len(self.words)

    @property
    def has_tree(self) -> bool:
        """Whether the sentence carries a dependency tree (heads and relations)."""
        return self.heads is not None and self.relations is not None


@dataclass(frozen=True)
class Corpus:
    """A named collection of sentences plus what loading it skipped."""

    name: str
    sentences: tuple[Sentence, ...]
    checksum: str = ""
    path: str = ""
    skipped: int = 0
    skipped_reasons: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.sentences)


@dataclass(frozen=True)
class ModelInfo:
    """What a loaded model says about itself."""

    name: str
    source: str
    architecture: str
    model_type: str
    is_decoder: bool
    num_layers: int
    num_heads: int
    num_kv_heads: int
    max_length: int
    special_tokens: tuple[str, ...] = ()
    revision: str = ""
    tokenizer: str = ""
    attention: str = ""        # how attention is read: headscope's attention function, or hooks (capture path)
    sinks: bool = False        # attention sinks (GPT-OSS): a virtual key takes a share of every row
    part: str = ""             # an encoder-decoder's part analysed: "encoder" (the default) or "decoder"
    #                            (its decoder's self-attention, teacher-forced on the input)
    # per layer, the sliding window its attention was called with (a query sees the last W keys, itself included),
    # or None for full attention; as the model's first forward passed it (from its config), or, read through hooks,
    # from the module's own mask (GPT-Neo's local layers); () when not read
    sliding_windows: tuple = ()
    # a hybrid (attention layers between Mamba or other layers without attention: Jamba): the model layer of each
    # layer analysed (layer i here is model layer attention_layers[i]); () when every layer is analysed
    attention_layers: tuple = ()

    @property
    def kv_group_size(self) -> int:
        """Query heads per key/value head (1 without GQA/MQA)."""
        return max(1, self.num_heads // max(1, self.num_kv_heads))

    def kv_head(self, head: int) -> int:
        """Key/value head that query ``head`` reads (GQA/MQA groups are contiguous)."""
        return head // self.kv_group_size

    def describe(self) -> str:
        """One line for reports: name, architecture, layers x heads, KV heads, attention path."""
        kind = "decoder (causal)" if self.is_decoder else "encoder (bidirectional)"
        return (f"{self.name}: {self.architecture} {kind}, {self.num_layers} layers x {self.num_heads} "
                f"query heads ({self.num_kv_heads} KV heads), max {self.max_length} tokens, "
                f"special tokens {', '.join(self.special_tokens) or 'none'}"
                + {"encoder": "; the encoder of an encoder-decoder is analysed (its decoder is not)",
                   "decoder": "; the decoder's self-attention of an encoder-decoder is analysed, teacher-forced on "
                              "the input (the encoder reads it too)"}.get(self.part, "")
                + (f"; a hybrid: only its attention layers are analysed, model layers "
                   f"{', '.join(map(str, self.attention_layers))}, numbered 0-{len(self.attention_layers) - 1} here"
                   if self.attention_layers else "")
                + (f"; {self.windows_line()}" if self.windows_line() else ""))

    def windows_line(self) -> str:
        """Which layers attend through a sliding window, and how wide, in words (``""`` when none does): e.g.
        "local layers 0-4, 6-10 (sliding window of 512 tokens), global layers 5, 11"."""
        windows = list(self.sliding_windows)
        if not any(w for w in windows):
            return ""
        local = [f"{_ranges([i for i, w in enumerate(windows) if w == size])} (sliding window of {size} tokens)"
                 for size in sorted({w for w in windows if w})]
        full = [i for i, w in enumerate(windows) if not w]
        return (f"local layers {'; '.join(local)}"
                + (f", global layers {_ranges(full)}" if full else ", no global layer"))


def _ranges(items: list[int]) -> str:
    """``[0, 1, 2, 4, 6, 7]`` -> ``"0-2, 4, 6-7"``."""
    out: list[str] = []
    for i in items:
        if out and i - 1 == int(out[-1].split("-")[-1]):
            out[-1] = f"{out[-1].split('-')[0]}-{i}"
        else:
            out.append(str(i))
    return ", ".join(out)


@dataclass(frozen=True)
class SkipCounts:
    """Sentences the run did not score, by reason."""

    too_long: int = 0
    empty: int = 0
    bad_data: int = 0
    words_without_pieces: int = 0
    details: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Mention:
    """A mention span in a document: ``start``..``end`` inclusive, 0-based document word offsets."""

    start: int
    end: int
    cluster: str
    source: str = ""          # path:line where the mention starts (or the record), for messages

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError(f"mention end {self.end} before start {self.start}")

    @property
    def span(self) -> tuple[int, int]:
        return (self.start, self.end)


@dataclass(frozen=True)
class Document:
    """A document: sentences of words (optionally with trees) and gold coreference mentions.

    Mention offsets index the concatenation of the sentences' words; ``mentions`` are sorted by
    (start, end). Clusters are the groups of mentions sharing ``cluster``.
    """

    doc_id: str
    sentences: tuple[Sentence, ...]
    mentions: tuple[Mention, ...] = ()
    source: str = ""

    @property
    def words(self) -> tuple[str, ...]:
        return tuple(w for s in self.sentences for w in s.words)

    def sentence_starts(self) -> tuple[int, ...]:
        """Document offset of each sentence's first word."""
        out, k = [], 0
        for s in self.sentences:
            out.append(k)
            k += len(s.words)
        return tuple(out)

    def clusters(self) -> dict[str, tuple[Mention, ...]]:
        out: dict[str, list[Mention]] = {}
        for m in self.mentions:
            out.setdefault(m.cluster, []).append(m)
        return {k: tuple(v) for k, v in out.items()}


@dataclass(frozen=True)
class DocumentCorpus:
    """Documents loaded from one coreference file or folder, with what loading skipped."""

    name: str
    documents: tuple[Document, ...]
    checksum: str = ""
    path: str = ""
    format: str = ""
    skipped: int = 0
    skipped_reasons: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.documents)

    def as_corpus(self) -> Corpus:
        """The documents' sentences, in order, as a Corpus of the same name and provenance (a CorefUD
        file is a treebank too: its sentences keep their trees)."""
        return Corpus(name=self.name, sentences=tuple(s for d in self.documents for s in d.sentences),
                      checksum=self.checksum, path=self.path, skipped=self.skipped,
                      skipped_reasons=self.skipped_reasons)


@dataclass(frozen=True)
class GapExample:
    """One GAP row: a text, the pronoun and the two names as word spans, which name is the referent.

    Spans are inclusive 0-based word offsets into ``words``; ``gender`` is ``masculine`` or ``feminine``.
    ``space_after`` says which words the text follows with whitespace (None: unknown).
    """

    example_id: str
    words: tuple[str, ...]
    pronoun: tuple[int, int]
    a: tuple[int, int]
    b: tuple[int, int]
    a_coref: bool
    b_coref: bool
    gender: str
    source: str = ""
    space_after: tuple[bool, ...] | None = None


@dataclass(frozen=True)
class GapCorpus:
    name: str
    examples: tuple[GapExample, ...]
    checksum: str = ""
    path: str = ""
    skipped: int = 0
    skipped_reasons: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.examples)


@dataclass(frozen=True)
class MinimalPair:
    """Two sentences that differ in one word and flip which candidate the pronoun refers to.

    ``pronoun`` and ``candidates`` (two word indices, the candidates' head nouns) are the same in
    both sentences; ``answers`` gives, per sentence, the index (0 or 1) into ``candidates`` of the
    correct referent, and the two answers differ.
    """

    pair_id: str
    words: tuple[tuple[str, ...], tuple[str, ...]]
    pronoun: int
    candidates: tuple[int, int]
    answers: tuple[int, int]
    source: str = ""


@dataclass(frozen=True)
class ContrastPair:
    """Two inputs for activation patching: ``clean`` and ``corrupt`` text that differ where the answer depends
    on them and tokenize to the same length, and the two next tokens compared at the answer position
    (``answer`` and ``foil``, each one token; the metric is their logit difference). For a masked LM each text
    holds one mask token where the answer goes; otherwise the answer follows the last token."""

    pair_id: str
    clean: str
    corrupt: str
    answer: str
    foil: str
    source: str = ""


@dataclass(frozen=True)
class ContrastSet:
    name: str
    pairs: tuple[ContrastPair, ...]
    checksum: str = ""
    path: str = ""
    skipped: int = 0
    skipped_reasons: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.pairs)


@dataclass(frozen=True)
class PairCorpus:
    name: str
    pairs: tuple[MinimalPair, ...]
    checksum: str = ""
    path: str = ""
    skipped: int = 0
    skipped_reasons: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.pairs)
