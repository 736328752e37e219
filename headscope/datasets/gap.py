"""GAP coreference TSV loader: each row's text as words, the pronoun and names A/B as word spans.

GAP rows give character offsets into ``Text``; this module tokenizes the text with ``WORD`` and maps
each character span ``[offset, offset + len(string))`` to the inclusive range of words that overlap
it. Clitic endings ('s 'd 'll 're 've 'm) are words of their own, as in Penn Treebank tokenization, so
``Simon`` in ``Simon's`` is the word ``Simon`` and the pronoun in ``she's`` is ``she``; other internal
apostrophes and hyphens stay inside words (``O'Neill``, ``Jean-Paul``). A span that covers part of a
word maps to that whole word.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from ..errors import DataError
from ..types import GapCorpus, GapExample
from .reading import Skips, check_options, decode_lines, parse_int, read_file, text_bytes

HEADER = ("ID", "Text", "Pronoun", "Pronoun-offset", "A", "A-offset", "A-coref", "B", "B-offset", "B-coref", "URL")
# A word is a run of letters/digits, with internal apostrophes (' or U+2019) or hyphens joining runs
# (O'Neill, Jean-Paul, don't); every other non-space character is a word of its own.
_CLITIC = r"['\u2019](?:s|d|ll|re|ve|m)\b"
WORD = re.compile(rf"[^\W_]+(?:(?:-|['\u2019](?!(?:s|d|ll|re|ve|m)\b))[^\W_]+)*|{_CLITIC}|\S", re.IGNORECASE)
GENDERS = {
    **dict.fromkeys(("he", "him", "his", "himself"), "masculine"),
    **dict.fromkeys(("she", "her", "hers", "herself"), "feminine"),
}
BOOLEANS = {"TRUE": True, "FALSE": False}


def tokenize(text: str) -> list[tuple[str, int, int]]:
    """Words of ``text`` as (word, start, end) with ``text[start:end] == word`` (see ``WORD``)."""
    return [(m.group(), m.start(), m.end()) for m in WORD.finditer(text)]


def char_span_to_words(tokens: list[tuple[str, int, int]], start: int, end: int) -> tuple[int, int] | None:
    """Inclusive range of the words overlapping characters ``[start, end)``, or None if none does."""
    hits = [i for i, (_, a, b) in enumerate(tokens) if a < end and b > start]
    return (hits[0], hits[-1]) if hits else None


def _row(cols: list[str], path: str, number: int) -> GapExample:
    where = {"path": path, "line": number}
    example_id, text = cols[0], cols[1]
    if not example_id:
        raise DataError("empty ID", **where)
    tokens = tokenize(text)
    spans: dict[str, tuple[int, int]] = {}
    for name, string_col, offset_col in (("Pronoun", 2, 3), ("A", 4, 5), ("B", 7, 8)):
        string, raw_offset = cols[string_col], cols[offset_col]
        if not re.fullmatch(r"[0-9]+", raw_offset):
            raise DataError(f"{name}-offset '{raw_offset}' is not a non-negative integer", **where)
        offset = parse_int(raw_offset, f"{name}-offset", **where)
        if not string or text[offset:offset + len(string)] != string:
            found = text[offset:offset + len(string)]
            raise DataError(f"{name}-offset {offset} does not point at {name} '{string}' (the text there is "
                            f"'{found}')", **where, hint="offsets are 0-based character offsets into Text")
        span = char_span_to_words(tokens, offset, offset + len(string))
        if span is None:
            raise DataError(f"{name} '{string}' at {offset} overlaps no word of the text", **where)
        spans[name] = span
    corefs: dict[str, bool] = {}
    for name, col in (("A-coref", 6), ("B-coref", 9)):
        if cols[col] not in BOOLEANS:
            raise DataError(f"{name} is '{cols[col]}', expected TRUE or FALSE", **where)
        corefs[name] = BOOLEANS[cols[col]]
    if corefs["A-coref"] and corefs["B-coref"]:
        raise DataError("A-coref and B-coref are both TRUE; the pronoun refers to at most one name", **where)
    gender = GENDERS.get(cols[2].lower())
    if gender is None:
        raise DataError(f"pronoun '{cols[2]}' is not one of {', '.join(GENDERS)}", **where,
                        hint="GAP pronouns are masculine or feminine third-person pronouns")
    names = ("Pronoun", "A", "B")
    for i, x in enumerate(names):
        for y in names[i + 1:]:
            if spans[x][0] <= spans[y][1] and spans[y][0] <= spans[x][1]:
                raise DataError(f"{x} and {y} cover the same words; the pronoun and the two names must be "
                                f"separate", **where)
    return GapExample(example_id=example_id, words=tuple(w for w, _, _ in tokens), pronoun=spans["Pronoun"],
                      a=spans["A"], b=spans["B"], a_coref=corefs["A-coref"], b_coref=corefs["B-coref"],
                      gender=gender, source=f"{path}:{number}",
                      space_after=tuple(end < nxt for (_, _, end), (_, nxt, _) in zip(tokens, tokens[1:])) + (False,))


def load_gap(path: str | Path, *, on_error: str = "fail", limit: int | None = None) -> GapCorpus:
    """Load a GAP TSV file (header ``ID Text Pronoun Pronoun-offset A A-offset A-coref B B-offset B-coref URL``).

    Rows are split on tabs with no quoting (GAP texts contain ``"``), one per line; blank lines are
    ignored, and a line with a carriage return inside it is a bad row. ``on_error="skip"`` drops bad rows and counts them; a wrong header or an
    empty file always fails. ``limit`` caps the number of examples.
    """
    check_options(on_error, limit)
    p = Path(path)
    raw = read_file(p, "a GAP .tsv file")
    data = text_bytes(raw, str(p), "the GAP header and one tab-separated row per line")
    examples: list[GapExample] = []
    skips = Skips(on_error)
    seen: dict[str, int] = {}
    header_seen = False
    for number, text, err in decode_lines(data):
        if header_seen and limit is not None and len(examples) >= limit:
            break
        try:
            if err is not None:
                raise DataError(err, path=str(p), line=number)
            assert text is not None
            if not text.strip():
                continue
            # what csv with QUOTE_NONE and a tab delimiter reads, without its error on a CR inside a field
            cols = text.split("\t")
            if not header_seen:
                if tuple(c.strip() for c in cols) != HEADER:
                    raise DataError(f"expected the GAP header '{' '.join(HEADER)}' (tab-separated)",
                                    path=str(p), line=number)
                header_seen = True
                continue
            if len(cols) != len(HEADER):
                raise DataError(f"expected {len(HEADER)} tab-separated columns, got {len(cols)}", path=str(p),
                                line=number, hint=f"columns are {' '.join(HEADER)}")
            example = _row(cols, str(p), number)
            if example.example_id in seen:
                raise DataError(f"duplicate ID '{example.example_id}' (first at line {seen[example.example_id]})",
                                path=str(p), line=number)
            seen[example.example_id] = number
            examples.append(example)
        except DataError as exc:
            if not header_seen:
                raise
            skips(exc)
    if not examples:
        raise skips.nothing_left("GAP row", str(p))
    reasons = skips.reasons
    return GapCorpus(name=p.stem, examples=tuple(examples), checksum=hashlib.sha256(raw).hexdigest(), path=str(p),
                     skipped=len(reasons), skipped_reasons=tuple(reasons))
