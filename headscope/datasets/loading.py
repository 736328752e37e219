"""Dispatch a data path to its loader by format, and the bundled sample treebank."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..errors import DataError
from ..types import Corpus
from .text import load_text
from .ud import load_conllu, parse_conllu

FORMATS = {"conllu": (".conllu",), "text": (".txt",), "jsonl": (".jsonl", ".json")}
SAMPLE = "sample_en.conllu"


def detect_format(path: Path) -> str:
    for fmt, suffixes in FORMATS.items():
        if path.suffix.lower() in suffixes:
            return fmt
    raise DataError(f"cannot tell the format from the suffix '{path.suffix}'",
                    hint=f"use one of {', '.join(s for v in FORMATS.values() for s in v)} or pass --format "
                         f"({', '.join(FORMATS)})", path=str(path))


def load_data(path: str | Path, *, fmt: str | None = None, keep_subtypes: bool = False, on_error: str = "fail",
              limit: int | None = None) -> Corpus:
    """Load one data file in any supported format (given, or detected from the suffix)."""
    p = Path(path)
    if not p.exists():
        raise DataError("file not found; check the path", path=str(path))
    if p.is_dir():
        raise DataError("is a directory; give a data file", path=str(path))
    if fmt is not None and fmt not in FORMATS:
        raise DataError(f"unknown format '{fmt}'; choose from {', '.join(FORMATS)}", path=str(path))
    fmt = fmt or detect_format(p)
    if fmt == "conllu":
        return load_conllu(p, keep_subtypes=keep_subtypes, on_error=on_error, limit=limit)
    return load_text(p, fmt=fmt, on_error=on_error, limit=limit)


def sample_path() -> Path:
    return Path(str(resources.files("headscope.datasets") / "data" / SAMPLE))


def load_sample(*, keep_subtypes: bool = False, limit: int | None = None) -> Corpus:
    """The bundled English sample treebank (written for this project, UD v2 trees)."""
    data = sample_path().read_bytes()
    corpus = parse_conllu(data, SAMPLE, keep_subtypes=keep_subtypes, limit=limit, name="sample_en")
    return corpus
