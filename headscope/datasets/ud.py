"""CoNLL-U treebank loader on the ``conllu`` package, with ``path:line (sent_id)`` errors."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import conllu
from conllu.exceptions import ParseException

from ..errors import DataError
from .reading import Skips, check_options, decode_lines, parse_int, read_file, text_bytes
from ..types import Corpus, Sentence

log = logging.getLogger(__name__)

N_COLUMNS = 10
WORD_ID = re.compile(r"[1-9][0-9]*")
RANGE_ID = re.compile(r"([1-9][0-9]*)-([1-9][0-9]*)")
EMPTY_ID = re.compile(r"(0|[1-9][0-9]*)\.[1-9][0-9]*")
# conllu also splits columns on runs of two spaces; such spaces inside a field are hidden from it.
_SPACE = "\ue000"
HEAD = re.compile(r"-?(0|[1-9][0-9]*)")
# The 37 universal dependency relations of UD v2; a treebank's subtypes (nsubj:pass) extend them.
UD_RELATIONS = frozenset(
    "acl advcl advmod amod appos aux case cc ccomp clf compound conj cop csubj dep det discourse dislocated expl "
    "fixed flat goeswith iobj list mark nmod nsubj nummod obj obl orphan parataxis punct reparandum root "
    "vocative xcomp".split())


def normalize_relation(rel: str) -> str:
    """A DEPREL as UD writes it: surrounding whitespace removed, lower case (UD labels are lower case, so
    ``Punct`` and `` punct`` are ``punct``, not relations of their own)."""
    return rel.strip().lower()


def fold_relation(rel: str, keep_subtypes: bool = False) -> str:
    """``nsubj:pass`` -> ``nsubj`` unless subtypes are kept (after ``normalize_relation``)."""
    rel = normalize_relation(rel)
    return rel if keep_subtypes else rel.split(":", 1)[0]


@dataclass
class RelationNotes:
    """Relation labels of one file that were rewritten or are not UD relations, for one warning each."""

    rewritten: list[tuple[int, str, str]] = field(default_factory=list)   # (line, as written, as read)
    unknown: dict[str, int] = field(default_factory=dict)                  # label -> first line

    def note(self, raw: str, line: int) -> None:
        rel = normalize_relation(raw)
        if rel != raw:
            self.rewritten.append((line, raw, rel))
        if rel.split(":", 1)[0] not in UD_RELATIONS and rel not in self.unknown:
            self.unknown[rel] = line

    def warn(self, path: str) -> None:
        from ..errors import clip, escape_controls, shorten

        if self.rewritten:
            line, raw, rel = self.rewritten[0]
            log.warning("%s", escape_controls(shorten(
                f"{path}:{line}: relation {raw!r} read as {rel!r} (UD labels are lower case without spaces; "
                f"{len(self.rewritten)} label(s) in this file rewritten so)")))
        if self.unknown:
            (rel, line), others = next(iter(self.unknown.items())), len(self.unknown) - 1
            log.warning("%s", escape_controls(shorten(
                f"{path}:{line}: relation {rel!r} is not a UD relation" +
                (f" (nor are {others} other label(s) of this file: "
                 f"{', '.join(clip(r, 40) for r in list(self.unknown)[1:6])}"
                 f"{', ...' if others > 5 else ''})" if others else "") +
                "; it is scored as a relation of its own")))


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


def _check_block(lines: list[tuple[int, str]], path: str, sent_id: str | None) -> list[tuple[int, int, str]]:
    """Validate columns, ids and heads line by line so that errors point at the offending line.

    Returns (line, head, DEPREL as written) per syntactic word; heads are 1-based, 0 for the root.
    """
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
            a, b = (parse_int(x, "multiword-token range bound", **where) for x in RANGE_ID.fullmatch(tid).groups())
            if a >= b:
                raise DataError(f"multiword-token range '{tid}' must run forwards (like 3-4)", **where)
            continue  # multiword-token ranges are not syntactic words
        if EMPTY_ID.fullmatch(tid):
            parse_int(tid.split(".")[0], "empty node ID", **where)
            continue  # enhanced empty nodes are not syntactic words
        if "-" in tid or "." in tid:
            raise DataError(f"ID '{tid}' is not a word id, a range like 3-4 or an empty node like 5.1", **where)
        if not WORD_ID.fullmatch(tid):
            raise DataError(f"ID '{tid}' is not a positive integer", **where)
        if parse_int(tid, "ID", **where) != len(words) + 1:
            raise DataError(f"ID {tid} out of sequence; expected {len(words) + 1}", **where)
        head = cols[6]
        if not HEAD.fullmatch(head):
            raise DataError(f"HEAD '{head}' of word {tid} is not an integer",
                            hint="use 0 for the root and the ID of the head word otherwise", **where)
        if not normalize_relation(cols[7]) or cols[7].strip() == "_":
            raise DataError(f"word {tid} has no DEPREL", **where)
        if not cols[1]:
            raise DataError(f"word {tid} has an empty FORM", **where)
        words.append((number, parse_int(head, f"HEAD of word {tid}", **where), cols[7]))
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
    _check_root_relation(words, path, sent_id)
    # Walk up from each word, marking words whose path to the root is known: linear in the words.
    UNSEEN, ON_PATH, DONE = 0, 1, 2
    state = [UNSEEN] * (n + 1)
    for i in range(1, n + 1):
        path_, j = [], i
        while j != 0 and state[j] == UNSEEN:
            state[j] = ON_PATH
            path_.append(j)
            j = words[j - 1][1]
        if j != 0 and state[j] == ON_PATH:
            cycle = path_[path_.index(j):] + [j]
            shown = " -> ".join(map(str, cycle)) if len(cycle) <= 12 else (
                " -> ".join(map(str, cycle[:10])) + f" -> ... -> {j} ({len(cycle) - 1} words)")
            raise DataError(f"HEAD of word {j} makes a cycle {shown}",
                            path=path, line=words[j - 1][0], sent_id=sent_id)
        for k in path_:
            state[k] = DONE
    return words


def _check_root_relation(words: list[tuple[int, int, str]], path: str, sent_id: str | None) -> None:
    """The word with HEAD 0 has DEPREL ``root`` (or a subtype of it), and no other word has."""
    for i, (number, head, rel) in enumerate(words, start=1):
        is_root = fold_relation(rel) == "root"
        if head == 0 and not is_root:
            raise DataError(f"word {i} has HEAD 0 but DEPREL '{rel}'; the word with HEAD 0 is the root, whose "
                            f"DEPREL is root", path=path, line=number, sent_id=sent_id,
                            hint="give it DEPREL root, or the HEAD it depends on")
        if head != 0 and is_root:
            raise DataError(f"word {i} has DEPREL '{rel}' but HEAD {head}; only the word with HEAD 0 is the root",
                            path=path, line=number, sent_id=sent_id,
                            hint="give it HEAD 0, or the relation it has to word " + str(head))


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
                keep_subtypes: bool = False, notes: RelationNotes | None = None
                ) -> tuple[Sentence, tuple[TokenMisc, ...]]:
    """Validate and parse one sentence block (as from ``iter_blocks``) into a Sentence with its tree,
    plus the MISC column of each word and empty node in file order. Raises DataError at the bad line.
    ``notes`` collects relation labels that were rewritten or are not UD (see ``RelationNotes``).
    """
    words = _check_block(lines, path, sent_id)
    sentence = _to_sentence(lines, path, sent_id, tuple(fold_relation(rel, keep_subtypes) for _, _, rel in words))
    if notes is not None:
        for line, _, rel in words:
            notes.note(rel, line)
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


def _to_sentence(lines: list[tuple[int, str]], path: str, sent_id: str | None, relations: tuple[str, ...]) -> Sentence:
    text = "\n".join(_hide_double_spaces(t) for _, t in lines) + "\n\n"
    try:
        parsed = conllu.parse(text)
    except ParseException as exc:
        raise DataError(f"{exc}", path=path, line=lines[0][0], sent_id=sent_id) from None
    tokens = [t for t in parsed[0] if isinstance(t["id"], int)]
    lemmas = tuple((t["lemma"] or "_").replace(_SPACE, " ") for t in tokens)
    return Sentence(
        space_after=_spaces_after(parsed[0]),
        words=tuple(t["form"].replace(_SPACE, " ") for t in tokens),
        heads=tuple(int(t["head"]) - 1 for t in tokens),
        relations=relations,
        upos=tuple(t["upos"] or "_" for t in tokens),
        lemmas=lemmas if any(x != "_" for x in lemmas) else None,
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
    check_options(on_error, limit)
    if isinstance(data, str):
        data = data.encode("utf-8")
    checksum = hashlib.sha256(data).hexdigest()
    data = text_bytes(data, path, "CoNLL-U sentences (10 tab-separated columns, blank line between sentences)")
    sentences: list[Sentence] = []
    skips = Skips(on_error)
    notes = RelationNotes()
    for start, lines, decode_error in _blocks(data, path):
        if limit is not None and len(sentences) >= limit:
            break
        sent_id = _sent_id(lines)
        try:
            if decode_error is not None:
                raise DataError(decode_error[1], path=path, line=decode_error[0], sent_id=sent_id)
            if all(t.startswith("#") for _, t in lines):
                continue  # a comment-only block (e.g. a file header)
            sentences.append(parse_block(lines, path, sent_id=sent_id, keep_subtypes=keep_subtypes, notes=notes)[0])
        except DataError as err:
            skips(err)
    notes.warn(path)
    if not sentences:
        raise skips.nothing_left("sentence", path)
    reasons = skips.reasons
    return Corpus(name=name or Path(path).stem, sentences=tuple(sentences),
                  checksum=checksum, path=str(path), skipped=len(reasons),
                  skipped_reasons=tuple(reasons))


def load_conllu(path: str | Path, *, keep_subtypes: bool = False, on_error: str = "fail",
                limit: int | None = None) -> Corpus:
    """Load a CoNLL-U file (see ``parse_conllu``)."""
    data = read_file(Path(path), "a .conllu file")
    return parse_conllu(data, str(path), keep_subtypes=keep_subtypes, on_error=on_error, limit=limit)
