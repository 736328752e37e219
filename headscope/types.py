"""Domain types shared across modules: small frozen dataclasses, no bare dicts."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Sentence:
    """One sentence of syntactic words, optionally with a gold dependency tree.

    ``heads`` are 0-based word indices, ``-1`` for the root; ``None`` when the data has no tree.
    ``source`` is ``path:line`` of the sentence's first line, for error messages.
    """

    words: tuple[str, ...]
    heads: tuple[int, ...] | None = None
    relations: tuple[str, ...] | None = None
    upos: tuple[str, ...] | None = None
    sent_id: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        n = len(self.words)
        for name in ("heads", "relations", "upos"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"Sentence {self.sent_id!r}: {name} has {len(value)} items for {n} words")

    def __len__(self) -> int:
        return len(self.words)

    @property
    def has_tree(self) -> bool:
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

    @property
    def kv_group_size(self) -> int:
        return max(1, self.num_heads // max(1, self.num_kv_heads))

    def kv_head(self, head: int) -> int:
        """Key/value head that query ``head`` reads (GQA/MQA groups are contiguous)."""
        return head // self.kv_group_size

    def describe(self) -> str:
        kind = "decoder (causal)" if self.is_decoder else "encoder (bidirectional)"
        return (f"{self.name}: {self.architecture} {kind}, {self.num_layers} layers x {self.num_heads} "
                f"query heads ({self.num_kv_heads} KV heads), max {self.max_length} tokens, "
                f"special tokens {', '.join(self.special_tokens) or 'none'}")


@dataclass(frozen=True)
class SkipCounts:
    """Sentences the run did not score, by reason."""

    too_long: int = 0
    empty: int = 0
    bad_data: int = 0
    words_without_pieces: int = 0
    details: tuple[str, ...] = field(default=())
