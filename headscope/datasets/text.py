"""Plain-text (one sentence per line) and jsonl loaders for positional-only runs."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..errors import DataError
from ..types import Corpus, Sentence
from .reading import Skips, check_options, decode_lines, parse_json, read_file, text_bytes


def load_text(path: str | Path, *, fmt: str | None = None, on_error: str = "fail", limit: int | None = None) -> Corpus:
    """Sentences without trees.

    ``text``: one sentence per non-empty line, words split on whitespace.
    ``jsonl``: one JSON object per line with ``words`` (list of strings) or ``text`` (string),
    and an optional ``id``.
    """
    check_options(on_error, limit)
    p = Path(path)
    fmt = fmt or ("jsonl" if p.suffix.lower() in (".jsonl", ".json") else "text")
    raw_bytes = read_file(p, "a file")
    data = text_bytes(raw_bytes, str(p), "one JSON object per line" if fmt == "jsonl" else "one sentence per line")
    sentences: list[Sentence] = []
    skips = Skips(on_error)
    for number, line, err in decode_lines(data):
        if limit is not None and len(sentences) >= limit:
            break
        try:
            if err is not None:
                raise DataError(err, path=str(p), line=number)
            assert line is not None
            if not line.strip():
                continue
            if fmt == "jsonl":
                words, sent_id = _json_words(line, p, number)
            else:
                words, sent_id = line.split(), ""
            sentences.append(Sentence(words=tuple(words), sent_id=sent_id or f"{p.name}:{number}",
                                      source=f"{p}:{number}"))
        except DataError as err_:
            skips(err_)
    if not sentences:
        raise skips.nothing_left("sentence", str(p))
    return Corpus(name=p.stem, sentences=tuple(sentences), checksum=hashlib.sha256(raw_bytes).hexdigest(), path=str(p),
                  skipped=len(skips.reasons), skipped_reasons=tuple(skips.reasons))


def _json_words(line: str, path: Path, number: int) -> tuple[list[str], str]:
    obj = parse_json(line, path=str(path), number=number)
    if not isinstance(obj, dict):
        raise DataError(f"expected a JSON object with 'words' or 'text', got {type(obj).__name__}",
                        path=str(path), line=number)
    sent_id = "" if obj.get("id") is None else str(obj["id"])
    if "words" in obj:
        words = obj["words"]
        if not isinstance(words, list) or not words or not all(isinstance(w, str) and w.strip() for w in words):
            raise DataError("'words' must be a non-empty list of non-empty strings", path=str(path), line=number,
                            sent_id=sent_id or None)
        return words, sent_id
    if isinstance(obj.get("text"), str) and obj["text"].split():
        return obj["text"].split(), sent_id
    raise DataError("expected a 'words' list or a non-empty 'text' string", path=str(path), line=number,
                    sent_id=sent_id or None)
