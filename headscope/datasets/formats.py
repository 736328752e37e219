"""The data formats headscope reads: names, file-name endings, sniffing, and what kinds of data each provides."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from .reading import BOM, decode_lines


@dataclass(frozen=True)
class Format:
    """One data format. ``endings`` select it from the file name alone (lower case, ``.conll`` or
    ``_conll``); where several formats share an ending, ``sniff_format`` looks inside. ``kinds`` are
    the kinds of data the format can provide: ``treebank`` (sentences with trees), ``sentences``,
    ``documents`` (coreference), ``gap``, ``pairs``."""

    name: str
    description: str
    endings: tuple[str, ...]
    kinds: frozenset[str]


def _format(name: str, description: str, endings: tuple[str, ...], kinds: str) -> Format:
    return Format(name, description, endings, frozenset(kinds.split()))


FORMATS: dict[str, Format] = {f.name: f for f in (
    _format("conllu", "UD treebank (CoNLL-U)", (".conllu",), "treebank sentences"),
    _format("text", "plain text, one sentence per line", (".txt",), "sentences"),
    _format("jsonl", "jsonl sentences ({'words': [...]} or {'text': ...})", (".jsonl", ".json"), "sentences"),
    # CoNLL shared-task files: .conll, .gold_conll, .v4_gold_conll, .v4_auto_conll, ..._conll
    _format("conll2012", "coreference, CoNLL-2012 brackets", (".conll", "_conll"), "documents sentences"),
    _format("corefud", "coreference, CorefUD (CoNLL-U with Entity= in MISC); also a treebank", (".conllu",),
            "documents treebank sentences"),
    _format("jsonlines", "coreference, e2e-coref jsonlines", (".jsonlines", ".jsonl"), "documents sentences"),
    _format("gap", "GAP coreference TSV", (".tsv",), "gap"),
    _format("pairs", "Winograd-style minimal pairs jsonl", (".jsonl",), "pairs"),
)}
COREF_FORMATS = ("conll2012", "corefud", "jsonlines")
SENTENCE_FORMATS = ("conllu", "text", "jsonl")
PEEK_BYTES = 1 << 20


def endings() -> list[str]:
    """Every file-name ending that names a format, in registry order without repeats."""
    return list(dict.fromkeys(e for f in FORMATS.values() for e in f.endings))


def candidates(path: Path) -> list[str]:
    """The formats whose endings match ``path``'s name (several where an ending is shared)."""
    name = path.name.lower()
    return [f.name for f in FORMATS.values() if any(name.endswith(e) for e in f.endings)]


def _peek(path: Path, size: int = PEEK_BYTES) -> bytes:
    try:
        with path.open("rb") as f:
            return f.read(size).removeprefix(BOM)
    except OSError:
        return b""  # the loader reports a missing or unreadable file itself


def has_entity_key(data: bytes) -> bool:
    """Whether CoNLL-U bytes carry CorefUD coreference: a MISC attribute whose key is exactly ``Entity``
    (not ``NamedEntity`` or any other key ending so), or a ``# global.Entity`` header."""
    if b"Entity" not in data:
        return False
    for _, text, _ in decode_lines(data):
        if not text:
            continue
        if text.startswith("#"):
            if text[1:].strip().startswith("global.Entity"):
                return True
            continue
        cols = text.split("\t")
        if len(cols) == 10 and any(item.partition("=")[0] == "Entity" and item.partition("=")[1]
                                   for item in cols[9].split("|")):
            return True
    return False


def _json_kind(data: bytes) -> str:
    """``jsonlines``, ``pairs`` or ``jsonl`` from the keys of the first JSON line of ``data``."""
    import json

    first = data.lstrip().split(b"\n", 1)[0]
    try:
        obj = json.loads(first, parse_int=lambda s: 0)  # the numbers themselves do not matter here
        keys = set(obj) if isinstance(obj, dict) else set()
    except (ValueError, RecursionError):
        # a first line longer than the peek, or a bad one (the loader reports it): look for the keys
        keys = {k for k in ("clusters", "pronoun", "candidates") if f'"{k}"'.encode() in first}
    if "clusters" in keys:
        return "jsonlines"
    if {"pronoun", "candidates"} <= keys:
        return "pairs"
    return "jsonl"


def detect_format(path: Path) -> str:
    """The format of the file ``path``: from its name, looking inside where an ending is shared."""
    found = candidates(path)
    if "conllu" in found:
        # a cut in the middle of the peeked bytes is harmless: only whole MISC items are compared
        return "corefud" if has_entity_key(_peek(path)) else "conllu"
    if "jsonl" in found:
        return _json_kind(_peek(path))
    if found:
        return found[0]
    raise DataError(f"cannot tell the format from the file name '{path.name}'",
                    hint=f"use one of {', '.join(endings())}, a folder of such files, or pass --format "
                         f"({', '.join(FORMATS)})", path=str(path))
