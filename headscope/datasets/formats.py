"""The data formats headscope reads, declared once each: name, file-name endings, sniffing, loader, and the
kinds of data each provides."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import DataError
from .reading import BOM, decode_lines


@dataclass(frozen=True)
class Format:
    """One data format. ``endings`` select it from the file name alone (lower case, ``.conll`` or
    ``_conll``); where several formats share an ending, the first whose ``sniff`` says yes to the file's
    first bytes is chosen, else the first without a sniffer. ``kinds`` are the kinds of data the format
    can provide: ``treebank`` (sentences with trees), ``sentences``, ``documents`` (coreference),
    ``gap``, ``pairs``. ``loader``: ``module:function`` of this package that reads it, called as
    ``function(path, on_error=, limit=, **options)`` with the options it takes (``keep_subtypes``,
    ``fmt``)."""

    name: str
    description: str
    endings: tuple[str, ...]
    kinds: frozenset[str]
    loader: str
    options: tuple[str, ...] = ()
    sniff: Callable[[bytes], bool] | None = None


def _format(name: str, description: str, endings: tuple[str, ...], kinds: str, loader: str,
            options: tuple[str, ...] = (), sniff: Callable[[bytes], bool] | None = None) -> Format:
    return Format(name, description, endings, frozenset(kinds.split()), loader, options, sniff)


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


def _first_json_keys(data: bytes) -> set[str]:
    """The keys of the first JSON line of ``data`` (or of those that matter, when it is cut or bad)."""
    import json

    first = data.lstrip().split(b"\n", 1)[0]
    try:
        obj = json.loads(first, parse_int=lambda s: 0)  # the numbers themselves do not matter here
        return set(obj) if isinstance(obj, dict) else set()
    except (ValueError, RecursionError):
        # a first line longer than the peek, or a bad one (the loader reports it): look for the keys
        return {k for k in ("clusters", "pronoun", "candidates") if f'"{k}"'.encode() in first}


def _coref_lines(data: bytes) -> bool:
    return "clusters" in _first_json_keys(data)


def _pair_lines(data: bytes) -> bool:
    keys = _first_json_keys(data)
    return "clusters" not in keys and {"pronoun", "candidates"} <= keys


FORMATS: dict[str, Format] = {f.name: f for f in (
    _format("conllu", "UD treebank (CoNLL-U)", (".conllu",), "treebank sentences", "ud:load_conllu",
            ("keep_subtypes",)),
    _format("text", "plain text, one sentence per line", (".txt",), "sentences", "text:load_text", ("fmt",)),
    _format("jsonl", "jsonl sentences ({'words': [...]} or {'text': ...})", (".jsonl", ".json"), "sentences",
            "text:load_text", ("fmt",)),
    # CoNLL shared-task files: .conll, .gold_conll, .v4_gold_conll, .v4_auto_conll, ..._conll
    _format("conll2012", "coreference, CoNLL-2012 brackets", (".conll", "_conll"), "documents sentences",
            "coref:load_coref", ("fmt", "keep_subtypes")),
    # a cut in the middle of the peeked bytes is harmless: only whole MISC items are compared
    _format("corefud", "coreference, CorefUD (CoNLL-U with Entity= in MISC); also a treebank", (".conllu",),
            "documents treebank sentences", "coref:load_coref", ("fmt", "keep_subtypes"), has_entity_key),
    _format("jsonlines", "coreference, e2e-coref jsonlines", (".jsonlines", ".jsonl"), "documents sentences",
            "coref:load_coref", ("fmt", "keep_subtypes"), _coref_lines),
    _format("gap", "GAP coreference TSV", (".tsv",), "gap", "gap:load_gap"),
    _format("pairs", "Winograd-style minimal pairs jsonl", (".jsonl",), "pairs", "pairs:load_pairs", (),
            _pair_lines),
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
    import stat

    try:
        if not stat.S_ISREG(path.stat().st_mode):
            return b""  # a FIFO would block and a device never end: the loader refuses them (reading.check_regular)
        with path.open("rb") as f:
            return f.read(size).removeprefix(BOM)
    except OSError:
        return b""  # the loader reports a missing or unreadable file itself


def detect_format(path: Path) -> str:
    """The format of the file ``path``: from its name, looking inside where an ending is shared."""
    found = [FORMATS[name] for name in candidates(path)]
    if len(found) > 1:
        head = _peek(path)
        sniffed = [f for f in found if f.sniff is not None and f.sniff(head)]
        found = sniffed or [f for f in found if f.sniff is None] or found
    if found:
        return found[0].name
    raise DataError(f"cannot tell the format from the file name '{path.name}'",
                    hint=f"use one of {', '.join(endings())}, a folder of such files, or pass fmt= "
                         f"({', '.join(FORMATS)})", path=str(path))


def load_file(path: Path, fmt: str, *, keep_subtypes: bool = False, on_error: str = "fail", limit: int | None = None
              ) -> Any:
    """Read ``path`` as format ``fmt`` with the loader the format declares."""
    import importlib

    spec = FORMATS[fmt]
    module, _, function = spec.loader.partition(":")
    load = getattr(importlib.import_module(f".{module}", __package__), function)
    given = {"keep_subtypes": keep_subtypes, "fmt": fmt}
    return load(path, on_error=on_error, limit=limit, **{k: given[k] for k in spec.options})
