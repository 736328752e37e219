"""The kinds of data a run reads, declared once each: the type that holds a dataset of it, the task data it
supplies, how its model inputs are prepared, what one scored input is called, and the bundled data that fills in
when a task has none. A new kind of data is one module (its type and preparation) plus one entry here."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import HeadscopeError


@dataclass
class Prepared:
    """One dataset made ready for the model: the inputs as sentences of words (or token ids in ``encoded``),
    run.json's facts about it, and what its scorers are built with (fields of ``tasks.Build``)."""

    sentences: list
    meta: dict = field(default_factory=dict)
    build: dict = field(default_factory=dict)
    encoded: list | None = None


@dataclass(frozen=True)
class Preparation:
    """What preparing a dataset may use: the model, the cap on its inputs, and the leading token."""

    loaded: Any
    max_sentences: int | None = None
    bos_id: int | None = None
    lead: bool = False


@dataclass(frozen=True)
class Fallback:
    """What bundled data is chosen with: the datasets given, and the run's settings that shape it."""

    sources: list
    keep_subtypes: bool = False
    max_sentences: int | None = None
    repeats: Any = None


def _resolve(ref: Any) -> Any:
    """An object given as itself or as ``"module:name"`` (imported when first needed)."""
    if not isinstance(ref, str):
        return ref
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class DataKind:
    """One kind of data. ``type``: the class of its datasets; ``supplies``: the task data (``tasks.DATA_KINDS``)
    a dataset of it can supply, and ``supports(dataset)`` those this one does (default: all it can);
    ``prepare(dataset, Preparation) -> Prepared``; ``unit``: what one scored input is called (the run's summary
    line); ``fallback(Fallback)``: bundled data for tasks that no given dataset serves, or None. ``type``,
    ``prepare``, ``supports`` and ``fallback`` may be given as ``"module:name"``."""

    name: str
    type: Any
    supplies: frozenset
    prepare: Any
    unit: str
    supports: Any = None
    fallback: Any = None

    def cls(self) -> type:
        return _resolve(self.type)

    def tasks_data(self, dataset: Any) -> set[str]:
        return set(_resolve(self.supports)(dataset)) if self.supports is not None else set(self.supplies)

    def prepared(self, dataset: Any, how: Preparation) -> Prepared:
        return _resolve(self.prepare)(dataset, how)

    def bundled(self, how: Fallback) -> Any:
        return _resolve(self.fallback)(how) if self.fallback is not None else None


_P = "headscope.run.preparation"
KINDS: dict[str, DataKind] = {k.name: k for k in (
    DataKind("sentences", "headscope.types:Corpus", frozenset({"sentences", "treebank"}), f"{_P}:sentences",
             "sentences", supports=f"{_P}:corpus_supports", fallback=f"{_P}:bundled_sample"),
    DataKind("documents", "headscope.types:DocumentCorpus", frozenset({"documents", "sentences", "treebank"}),
             f"{_P}:documents", "document windows", supports=f"{_P}:documents_support"),
    DataKind("gap", "headscope.types:GapCorpus", frozenset({"gap"}), f"{_P}:gap_rows", "rows"),
    DataKind("pairs", "headscope.types:PairCorpus", frozenset({"pairs"}), f"{_P}:pairs", "pair sentences",
             fallback=f"{_P}:bundled_pairs"),
    DataKind("generated", "headscope.analysis.induction:RepeatedTokens", frozenset({"generated"}),
             f"{_P}:generated", "sequences", fallback=f"{_P}:repeated_tokens"),
)}


def kind_of(dataset: Any) -> DataKind | None:
    """The registered kind whose type ``dataset`` is, or None."""
    for kind in KINDS.values():
        if isinstance(dataset, kind.cls()):
            return kind
    return None


def kind_or_fail(dataset: Any) -> DataKind:
    kind = kind_of(dataset)
    if kind is None:
        raise HeadscopeError(f"unsupported data object {type(dataset).__name__}; the kinds of data are "
                             f"{', '.join(KINDS)} (headscope.run.kinds.KINDS)")
    return kind


def unit_of(kind: str | None) -> str:
    """What one scored input of a kind is called (``sentences`` when unknown)."""
    return KINDS[kind].unit if kind in KINDS else "sentences"


def register(kind: DataKind) -> Callable[[], None]:
    """Add a kind of data; returns the function that removes it again."""
    if kind.name in KINDS:
        raise HeadscopeError(f"a kind of data named {kind.name!r} is registered already")
    KINDS[kind.name] = kind
    return lambda: KINDS.pop(kind.name, None)
