"""Plain-text (one sentence per line) and jsonl loaders for positional-only runs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..errors import DataError
from ._files import read_file
from ..types import Corpus, Sentence


def load_text(path: str | Path, *, fmt: str | None = None, on_error: str = "fail", limit: int | None = None) -> Corpus:
    """Sentences without trees.

    ``text``: one sentence per non-empty line, words split on whitespace.
    ``jsonl``: one JSON object per line with ``words`` (list of strings) or ``text`` (string),
    and an optional ``id``.
    """
    p = Path(path)
    fmt = fmt or ("jsonl" if p.suffix.lower() in (".jsonl", ".json") else "text")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    raw_bytes = read_file(p, "a file")
    data = raw_bytes.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark is not text
    if not data.strip():
        raise DataError(f"file is empty; expected {'one JSON object' if fmt == 'jsonl' else 'one sentence'} per line",
                        path=str(p), line=1)
    sentences: list[Sentence] = []
    reasons: list[str] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if limit is not None and len(sentences) >= limit:
            break
        try:
            try:
                line = raw.rstrip(b"\r").decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); "
                                f"re-save the file as UTF-8", path=str(p), line=number) from None
            if not line.strip():
                continue
            if fmt == "jsonl":
                words, sent_id = _json_words(line, p, number)
            else:
                words, sent_id = line.split(), ""
            sentences.append(Sentence(words=tuple(words), sent_id=sent_id or f"{p.name}:{number}",
                                      source=f"{p}:{number}"))
        except DataError as err:
            if on_error == "fail":
                raise
            reasons.append(str(err))
    if not sentences:
        raise DataError(f"no valid sentence found ({len(reasons)} skipped)", path=str(p), line=1)
    return Corpus(name=p.stem, sentences=tuple(sentences), checksum=hashlib.sha256(raw_bytes).hexdigest(), path=str(p),
                  skipped=len(reasons), skipped_reasons=tuple(reasons))


def _json_words(line: str, path: Path, number: int) -> tuple[list[str], str]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"not valid JSON ({exc.msg} at column {exc.colno})", path=str(path), line=number) from None
    except RecursionError:
        raise DataError("JSON nested too deeply", path=str(path), line=number) from None
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
