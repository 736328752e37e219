"""Dispatch a data path to its loader by format (given or detected), folders of files, and the bundled samples."""

from __future__ import annotations

import hashlib
import logging
import re
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import DataError, HeadscopeError
from ..types import Corpus
from .formats import COREF_FORMATS, FORMATS, SENTENCE_FORMATS, detect_format, endings, load_file
from .reading import check_options, check_regular, read_file
from .ud import parse_conllu

log = logging.getLogger(__name__)

SAMPLE = "sample_en.conllu"


# Files that come with corpora and are documentation, whatever their suffix (LICENSE.txt, README.md).
_DOCUMENTATION = re.compile(r"(readme|license|licence|copying|notice|changelog|authors|citation)([._-].*)?",
                            re.IGNORECASE)


def folder_format(folder: Path, fmt: str | None = None) -> tuple[str, dict[Path, str]]:
    """What a folder holds: ``("coref", {file: format})`` or ``("sentences", {file: format})``.

    Files whose name names no format, hidden files and documentation (README, LICENSE.txt, ...) are
    ignored. A folder with coreference files loads those (other data files beside them are ignored
    with a warning); otherwise its sentence files (.conllu, .txt, .jsonl) load as one corpus. GAP
    and pairs files are given one by one.
    """
    found: dict[Path, str] = {}
    for f in sorted(folder.iterdir(), key=lambda f: f.name):
        if f.is_file() and not f.name.startswith(".") and not _DOCUMENTATION.fullmatch(f.name):
            try:
                found[f] = fmt or detect_format(f)
            except DataError:
                continue  # not a data file
    coref = [f for f, x in found.items() if x in COREF_FORMATS]
    sentences = [f for f, x in found.items() if x in SENTENCE_FORMATS]
    if coref:
        others = [f.name for f in found if f not in coref]
        if others:
            log.warning("%s: reading its %d coreference files; ignoring %s", folder, len(coref),
                        ", ".join(others[:5]) + (", ..." if len(others) > 5 else ""))
        return "coref", {f: found[f] for f in coref}
    if sentences:
        return "sentences", {f: found[f] for f in sentences}
    if found:
        first = next(iter(found))
        raise DataError(f"is a directory; {found[first]} files such as {first.name} must be given one by one",
                        path=str(folder), hint="pass each with its own --data")
    raise DataError("is a directory with no data file", path=str(folder),
                    hint=f"give a file, or a folder of files ending in {', '.join(endings())}")


def _load_sentence_folder(folder: Path, files: dict[Path, str], *, keep_subtypes: bool, on_error: str,
                          limit: int | None) -> Corpus:
    """Every sentence file of a folder, in name order, as one Corpus named after the folder."""
    sentences: list = []
    reasons: list[str] = []
    skipped = 0
    hasher = hashlib.sha256()
    for f, fmt in files.items():
        hasher.update(read_file(f, "a data file"))
        if limit is not None and len(sentences) >= limit:
            continue
        corpus = load_file(f, fmt, keep_subtypes=keep_subtypes, on_error=on_error,
                            limit=None if limit is None else limit - len(sentences))
        sentences.extend(corpus.sentences)
        reasons.extend(corpus.skipped_reasons)
        skipped += corpus.skipped
    return Corpus(name=folder.name, sentences=tuple(sentences), checksum=hasher.hexdigest(), path=str(folder),
                  skipped=skipped, skipped_reasons=tuple(reasons))


def load_data(path: str | Path, *, fmt: str | None = None, keep_subtypes: bool = False, on_error: str = "fail",
              limit: int | None = None) -> Any:
    """Load one data file or folder in any supported format (``formats.FORMATS``).

    Returns a Corpus (treebank, text, or a folder of such files), DocumentCorpus (coreference; CorefUD
    documents keep their trees), GapCorpus or PairCorpus. A folder holds coreference files or sentence
    files, not both.
    """
    check_options(on_error, limit)
    p = Path(path)
    if not p.exists():
        raise DataError("file not found; check the path", path=str(path))
    if fmt is not None and fmt not in FORMATS:
        raise DataError(f"unknown format '{fmt}'; choose from {', '.join(FORMATS)}", path=str(path))
    if p.is_dir():
        kind, files = folder_format(p, fmt)
        if kind == "coref":
            from .coref import load_coref

            return load_coref(p, fmt=fmt, on_error=on_error, limit=limit, keep_subtypes=keep_subtypes)
        return _load_sentence_folder(p, files, keep_subtypes=keep_subtypes, on_error=on_error, limit=limit)
    check_regular(p, "a data file")           # a FIFO or device named x.txt: refused before it is opened
    return load_file(p, fmt or detect_format(p), keep_subtypes=keep_subtypes, on_error=on_error, limit=limit)


def shared_data(relative: str) -> Path | None:
    """A file or folder of the shared labelled datasets (UD English EWT, GAP, LitBank), for the examples and
    benchmarks: under ``$HEADSCOPE_SHARED_DATA`` when set, else ``shared/data`` beside a clone of headscope;
    None when it is not there (they are not part of the package)."""
    import os

    base = os.environ.get("HEADSCOPE_SHARED_DATA")
    root = Path(base) if base else Path(__file__).resolve().parents[2].parent / "shared" / "data"
    path = root / relative
    return path if path.exists() else None


def format_example(name: str) -> Path:
    """One of the minimal files of each data format that ship with headscope (``example.conllu``,
    ``example_corefud.conllu``, ``example.conll``, ``example.jsonlines``, ``example.tsv``,
    ``example_pairs.jsonl``, ``example.txt``, ``example.jsonl``; the docs' data formats page shows them)."""
    path = Path(str(resources.files("headscope.datasets") / "data" / "formats" / name))
    if not path.is_file():
        raise HeadscopeError(f"no format example {name!r}; the examples are "
                             f"{', '.join(sorted(p.name for p in path.parent.iterdir()))}")
    return path


def sample_path() -> Path:
    return Path(str(resources.files("headscope.datasets") / "data" / SAMPLE))


def load_sample(*, keep_subtypes: bool = False, limit: int | None = None):
    """The bundled English sample treebank (written for this project, UD v2 trees)."""
    data = sample_path().read_bytes()
    return parse_conllu(data, SAMPLE, keep_subtypes=keep_subtypes, limit=limit, name="sample_en")
