"""Dispatch a data path to its loader by format (given or detected), and the bundled samples."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import DataError
from .text import load_text
from .ud import load_conllu, parse_conllu

# format -> (what it holds, suffixes that select it without looking inside)
FORMATS: dict[str, tuple[str, tuple[str, ...]]] = {
    "conllu": ("UD treebank (CoNLL-U)", (".conllu",)),
    "text": ("plain text, one sentence per line", (".txt",)),
    "jsonl": ("jsonl sentences ({'words': [...]} or {'text': ...})", (".jsonl", ".json")),
    "conll2012": ("coreference, CoNLL-2012 brackets", (".conll", ".gold_conll", ".v4_gold_conll")),
    "corefud": ("coreference, CorefUD (CoNLL-U with Entity=)", ()),
    "jsonlines": ("coreference, e2e-coref jsonlines", (".jsonlines",)),
    "gap": ("GAP coreference TSV", (".tsv",)),
    "pairs": ("Winograd-style minimal pairs jsonl", ()),
}
SAMPLE = "sample_en.conllu"


def _peek(path: Path, size: int = 1 << 20) -> bytes:
    try:
        with path.open("rb") as f:
            return f.read(size)
    except OSError:
        return b""  # the loader reports a missing or unreadable file itself


def detect_format(path: Path) -> str:
    """Format of ``path`` from its suffix, looking inside where a suffix is shared."""
    if path.is_dir():
        return "coref-folder"
    if path.name.lower().endswith("gold_conll"):
        return "conll2012"
    suffix = path.suffix.lower()
    if suffix == ".conllu":
        return "corefud" if b"Entity=" in _peek(path) else "conllu"
    if suffix in (".jsonl", ".json"):
        for raw in _peek(path, 1 << 16).split(b"\n"):
            if raw.strip():
                try:
                    obj = json.loads(raw)
                except (ValueError, RecursionError):
                    break  # the loader reports the bad line itself
                if isinstance(obj, dict) and "clusters" in obj:
                    return "jsonlines"
                if isinstance(obj, dict) and {"pronoun", "candidates"} <= set(obj):
                    return "pairs"
                break
        return "jsonl"
    for fmt, (_, suffixes) in FORMATS.items():
        if suffix in suffixes:
            return fmt
    suffixes = ", ".join(x for _, sfx in FORMATS.values() for x in sfx)
    raise DataError(f"cannot tell the format from the suffix '{path.suffix}'",
                    hint=f"use one of {suffixes}, a coreference folder, or pass --format ({', '.join(FORMATS)})",
                    path=str(path))


def load_data(path: str | Path, *, fmt: str | None = None, keep_subtypes: bool = False, on_error: str = "fail",
              limit: int | None = None) -> Any:
    """Load one data file or coreference folder in any supported format.

    Returns a Corpus (treebank, text), DocumentCorpus (coreference), GapCorpus or PairCorpus.
    """
    p = Path(path)
    if not p.exists():
        raise DataError("file not found; check the path", path=str(path))
    if fmt is not None and fmt not in FORMATS:
        raise DataError(f"unknown format '{fmt}'; choose from {', '.join(FORMATS)}", path=str(path))
    fmt = fmt or detect_format(p)
    if p.is_dir() and fmt not in ("coref-folder", "conll2012", "corefud", "jsonlines"):
        raise DataError(f"is a directory; only coreference data ({', '.join(('conll2012', 'corefud', 'jsonlines'))}) "
                        f"can be given as a folder", path=str(path))
    if fmt == "conllu":
        return load_conllu(p, keep_subtypes=keep_subtypes, on_error=on_error, limit=limit)
    if fmt in ("text", "jsonl"):
        return load_text(p, fmt=fmt, on_error=on_error, limit=limit)
    if fmt == "pairs":
        from .pairs import load_pairs

        return load_pairs(p, limit=limit)
    if fmt == "gap":
        from .gap import load_gap

        return load_gap(p, on_error=on_error, limit=limit)
    from .coref import load_coref

    return load_coref(p, fmt=None if fmt == "coref-folder" else fmt, on_error=on_error, limit=limit)


def sample_path() -> Path:
    return Path(str(resources.files("headscope.datasets") / "data" / SAMPLE))


def load_sample(*, keep_subtypes: bool = False, limit: int | None = None):
    """The bundled English sample treebank (written for this project, UD v2 trees)."""
    data = sample_path().read_bytes()
    return parse_conllu(data, SAMPLE, keep_subtypes=keep_subtypes, limit=limit, name="sample_en")
