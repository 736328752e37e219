"""CoNLL-U treebank loader on the ``conllu`` package, with ``path:line (sent_id)`` errors."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import conllu
from conllu.exceptions import ParseException

from ..errors import DataError
from ._files import decode_lines, read_file
from ..types import Corpus, Sentence

log = logging.getLogger(__name__)

N_COLUMNS = 10
ON_ERROR = ("fail", "skip")
WORD_ID = re.compile(r"[1-9][0-9]*")
RANGE_ID = re.compile(r"([1-9][0-9]*)-([1-9][0-9]*)")
EMPTY_ID = re.compile(r"(0|[1-9][0-9]*)\.[1-9][0-9]*")
HEAD = re.compile(r"-?(0|[1-9][0-9]*)")
# conllu also splits columns on runs of two spaces; such spaces inside a field are hidden from it.
_SPACE = "\ue000"


def fold_relation(rel: str, keep_subtypes: bool = False) -> str:
    """``nsubj:pass`` -> ``nsubj`` unless subtypes are kept."""
    return rel if keep_subtypes else rel.split(":", 1)[0]


def _blocks(data: bytes, path: str) -> Iterator[tuple[int, list[tuple[int, str]], tuple[int, str] | None]]:
    """Sentence blocks: (first line number, [(line number, text)], first decoding error or None)."""
    start, lines, error = 0, [], None
    for number, text, err in decode_lines(data):
        if err is None and text.strip() == "":
            if lines or error:
                yield start, lines, error
            start, lines, error = 0, [], None
            continue
        if not start:
            start = number
        if err is not None:
            error = error or (number, err)
            lines.append((number, ""))
        else:
            lines.append((number, text))
    if lines or error:
        yield start, lines, error


def _sent_id(lines: list[tuple[int, str]]) -> str | None:
    for _, text in lines:
        if text.startswith("#") and "sent_id" in text and "=" in text:
            key, _, value = text[1:].partition("=")
            if key.strip() == "sent_id":
                return value.strip()
    return None


def _check_block(lines: list[tuple[int, str]], path: str, sent_id: str | None) -> None:
    """Validate columns, ids and heads line by line so that errors point at the offending line."""
    words: list[tuple[int, int, str]] = []  # (line, head, deprel)
    for number, text in lines:
        if text.startswith("#"):
            continue
        cols = text.split("\t")
        where = {"path": path, "line": number, "sent_id": sent_id}
        if len(cols) != N_COLUMNS:
            raise DataError(f"expected {N_COLUMNS} tab-separated columns, got {len(cols)}",
                            hint="CoNLL-U token lines are ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC", **where)
        tid = cols[0]
        if RANGE_ID.fullmatch(tid):
            a, b = map(int, RANGE_ID.fullmatch(tid).groups())
            if a >= b:
                raise DataError(f"multiword-token range '{tid}' must run forwards (like 3-4)", **where)
            continue  # multiword-token ranges are not syntactic words
        if EMPTY_ID.fullmatch(tid):
            continue  # enhanced empty nodes are not syntactic words
        if "-" in tid or "." in tid:
            raise DataError(f"ID '{tid}' is not a word id, a range like 3-4 or an empty node like 5.1", **where)
        if not WORD_ID.fullmatch(tid):
            raise DataError(f"ID '{tid}' is not a positive integer", **where)
        if int(tid) != len(words) + 1:
            raise DataError(f"ID {tid} out of sequence; expected {len(words) + 1}", **where)
        head = cols[6]
        if not HEAD.fullmatch(head):
            raise DataError(f"HEAD '{head}' of word {tid} is not an integer",
                            hint="use 0 for the root and the ID of the head word otherwise", **where)
        if not cols[7] or cols[7] == "_":
            raise DataError(f"word {tid} has no DEPREL", **where)
        if not cols[1]:
            raise DataError(f"word {tid} has an empty FORM", **where)
        words.append((number, int(head), cols[7]))
    if not words:
        raise DataError("sentence has no word lines", path=path, line=lines[0][0], sent_id=sent_id)
    n = len(words)
    for i, (number, head, _) in enumerate(words, start=1):
        if not 0 <= head <= n:
            raise DataError(f"HEAD {head} of word {i} is out of range 0..{n}", path=path, line=number, sent_id=sent_id)
    roots = [i for i, (_, head, _) in enumerate(words, start=1) if head == 0]
    if len(roots) != 1:
        what = "no word with HEAD 0" if not roots else f"{len(roots)} roots (words {', '.join(map(str, roots))})"
        line = words[roots[1] - 1][0] if len(roots) > 1 else lines[0][0]
        raise DataError(f"{what}; a sentence needs exactly one root", path=path, line=line, sent_id=sent_id)
    for i in range(1, n + 1):
        seen, j = [], i
        while j != 0 and j not in seen:
            seen.append(j)
            j = words[j - 1][1]
        if j != 0:
            cycle = seen[seen.index(j):] + [j]
            raise DataError(f"HEAD of word {j} makes a cycle {' -> '.join(map(str, cycle))}",
                            path=path, line=words[j - 1][0], sent_id=sent_id)


@dataclass(frozen=True)
class TokenMisc:
    """The raw MISC column of one word or empty-node line of a sentence block.

    ``word`` is the 0-based index of the syntactic word; for an empty node ``N.k`` (which sits
    between words N and N+1, 1-based) it is ``N``, the 0-based index of the word after it, and
    ``empty`` is True. ``line`` is the file line; ``misc`` is the column as written (``_`` if none).
    Multiword-token lines are not included.
    """

    word: int
    line: int
    misc: str
    empty: bool = False


# (first line number, [(line number, text)], first decoding error as (line, message) or None)
Block = tuple[int, list[tuple[int, str]], tuple[int, str] | None]


def iter_blocks(data: bytes, path: str) -> Iterator[Block]:
    """Blank-line separated blocks of BOM-free CoNLL-U bytes: (first line, [(line, text)], first decoding error)."""
    return _blocks(data, path)


def block_sent_id(lines: list[tuple[int, str]]) -> str | None:
    """The ``# sent_id = ...`` of a block, or None."""
    return _sent_id(lines)


def parse_block(lines: list[tuple[int, str]], path: str, *, sent_id: str | None = None,
                keep_subtypes: bool = False) -> tuple[Sentence, tuple[TokenMisc, ...]]:
    """Validate and parse one sentence block (as from ``iter_blocks``) into a Sentence with its tree,
    plus the MISC column of each word and empty node in file order. Raises DataError at the bad line.
    """
    _check_block(lines, path, sent_id)
    sentence = _to_sentence(lines, path, sent_id, keep_subtypes)
    miscs: list[TokenMisc] = []
    words = 0
    for number, text in lines:
        if text.startswith("#"):
            continue
        cols = text.split("\t")
        if WORD_ID.fullmatch(cols[0]):
            miscs.append(TokenMisc(word=words, line=number, misc=cols[9]))
            words += 1
        elif EMPTY_ID.fullmatch(cols[0]):
            miscs.append(TokenMisc(word=int(cols[0].split(".")[0]), line=number, misc=cols[9], empty=True))
    return sentence, tuple(miscs)


def _hide_double_spaces(line: str) -> str:
    if line.startswith("#") or "  " not in line:
        return line
    return "\t".join(c.replace(" ", _SPACE) if "  " in c else c for c in line.split("\t"))


def _to_sentence(lines: list[tuple[int, str]], path: str, sent_id: str | None, keep_subtypes: bool) -> Sentence:
    text = "\n".join(_hide_double_spaces(t) for _, t in lines) + "\n\n"
    try:
        parsed = conllu.parse(text)
    except ParseException as exc:
        raise DataError(f"{exc}", path=path, line=lines[0][0], sent_id=sent_id) from None
    tokens = [t for t in parsed[0] if isinstance(t["id"], int)]
    return Sentence(
        space_after=_spaces_after(parsed[0]),
        words=tuple(t["form"].replace(_SPACE, " ") for t in tokens),
        heads=tuple(int(t["head"]) - 1 for t in tokens),
        relations=tuple(fold_relation(t["deprel"], keep_subtypes) for t in tokens),
        upos=tuple(t["upos"] or "_" for t in tokens),
        sent_id=sent_id or f"{Path(path).name}:{lines[0][0]}",
        source=f"{path}:{lines[0][0]}",
    )


def _no_space(token: Any) -> bool:
    misc = token.get("misc") or {}
    return isinstance(misc, dict) and misc.get("SpaceAfter") == "No"


def _spaces_after(tokens: Any) -> tuple[bool, ...]:
    """Per syntactic word: is there a space after it in the running text? Words inside a multiword
    token have none; its last word takes the range line's ``SpaceAfter``."""
    out: list[bool] = []
    range_end, range_space = -1, True
    for t in tokens:
        tid = t["id"]
        if isinstance(tid, tuple) and len(tid) == 3 and tid[1] == "-":
            range_end, range_space = int(tid[2]), not _no_space(t)
        elif isinstance(tid, int):
            if tid < range_end:
                out.append(False)
            elif tid == range_end:
                out.append(range_space)
            else:
                out.append(not _no_space(t))
    return tuple(out)


def parse_conllu(data: bytes | str, path: str = "<string>", *, keep_subtypes: bool = False, on_error: str = "fail",
                 limit: int | None = None, name: str | None = None) -> Corpus:
    """Parse CoNLL-U bytes into a Corpus of syntactic words with gold trees.

    Multiword-token ranges and empty nodes are skipped; relation subtypes are folded unless
    ``keep_subtypes``. ``on_error='fail'`` raises DataError at the first bad sentence;
    ``'skip'`` drops bad sentences and counts them.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if isinstance(data, str):
        data = data.encode("utf-8")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    checksum = hashlib.sha256(data).hexdigest()
    data = data.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark is not part of the first line
    if not data.strip():
        raise DataError("file is empty; expected CoNLL-U sentences (10 tab-separated columns, blank line between "
                        "sentences)", path=path, line=1)
    sentences: list[Sentence] = []
    reasons: list[str] = []
    for start, lines, decode_error in _blocks(data, path):
        if limit is not None and len(sentences) >= limit:
            break
        sent_id = _sent_id(lines)
        try:
            if decode_error is not None:
                raise DataError(decode_error[1], path=path, line=decode_error[0], sent_id=sent_id)
            if all(t.startswith("#") for _, t in lines):
                continue  # a comment-only block (e.g. a file header)
            sentences.append(parse_block(lines, path, sent_id=sent_id, keep_subtypes=keep_subtypes)[0])
        except DataError as err:
            if on_error == "fail":
                raise
            reasons.append(str(err))
            log.warning("skipped %s", err)
    if not sentences:
        raise DataError(f"no valid sentence found ({len(reasons)} skipped)" +
                        (f"; first problem: {reasons[0]}" if reasons else ""), path=path, line=1)
    return Corpus(name=name or Path(path).stem, sentences=tuple(sentences),
                  checksum=checksum, path=str(path), skipped=len(reasons),
                  skipped_reasons=tuple(reasons))


def load_conllu(path: str | Path, *, keep_subtypes: bool = False, on_error: str = "fail",
                limit: int | None = None) -> Corpus:
    """Load a CoNLL-U file (see ``parse_conllu``)."""
    data = read_file(Path(path), "a .conllu file")
    return parse_conllu(data, str(path), keep_subtypes=keep_subtypes, on_error=on_error, limit=limit)
