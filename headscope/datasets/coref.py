"""Coreference loaders: CoNLL-2012 brackets, CorefUD (CoNLL-U with ``Entity=``) and e2e-coref jsonlines.

Every loader returns a :class:`~headscope.types.DocumentCorpus`. Conventions shared by all formats:

* ``Document.sentences`` are the document's sentences in order; ``Mention.start``/``end`` are
  inclusive 0-based offsets into the concatenation of those sentences' words (``Document.words``);
  ``Document.mentions`` are sorted by (start, end); cluster ids are strings (as written in the file,
  or the cluster's position in the ``clusters`` list for jsonlines).
* ``Mention.source``, ``Sentence.source`` and ``Document.source`` are ``path:line`` (the line
  where the mention opens, the sentence's first token line, the document's first line).
* ``on_error="fail"`` raises :class:`~headscope.errors.DataError` (one line, ``path:line``) at the
  first problem; ``"skip"`` drops each bad *document* whole and counts it in ``skipped`` with its
  message in ``skipped_reasons`` (text outside any document counts as one skipped item per run of
  such lines). ``limit`` caps the number of documents loaded.
* ``checksum`` is the sha256 of the file bytes (of the sorted files' bytes, one after another, for
  a folder); a leading UTF-8 byte-order mark is ignored, a line that is not UTF-8 is an error at
  that line, and an empty file is an error at line 1.

Empty nodes (CorefUD): enhanced empty nodes such as ``8.1`` are not syntactic words, so they are not
in ``Sentence.words``. See ``EMPTY_NODE_NOTE`` for what happens to ``Entity`` brackets written on them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..types import Document, DocumentCorpus, Mention, Sentence
from .formats import COREF_FORMATS, FORMATS, candidates, detect_format
from .reading import check_options, decode_lines, parse_int, parse_json, read_file, text_bytes
from .ud import Block, RelationNotes, TokenMisc, block_sent_id, iter_blocks, parse_block

log = logging.getLogger(__name__)

# what an empty file of each format should have held (for the error message)
_EXPECTED = {
    "conll2012": "'#begin document (<id>); part 0', token lines and '#end document'",
    "corefud": "CoNLL-U sentences with Entity= annotations in MISC",
    "jsonlines": "one JSON object per line with doc_key, sentences and clusters",
}

EMPTY_NODE_NOTE = (
    "Entity brackets on CorefUD empty nodes (ids like 8.1) are not kept as words: an opening bracket "
    "there starts the mention at the next word, a closing bracket ends it at the previous word, and a "
    "mention left with no word (e.g. a zero pronoun annotated only on the empty node) is dropped; the "
    "number dropped is logged at INFO level for each file."
)

NO_COREF = ("", "-", "_")
# CoNLL-2012 coreference parts: "(12)" single word, "(12" opening, "12)" closing.
_CLUSTER = r"[^\s()|]+"
CONLL_SINGLE = re.compile(rf"\(({_CLUSTER})\)")
CONLL_OPEN = re.compile(rf"\(({_CLUSTER})")
CONLL_CLOSE = re.compile(rf"({_CLUSTER})\)")
BEGIN = re.compile(r"#begin document\s*\((?P<id>.+)\)\s*(?:;\s*part\s+(?P<part>[0-9]+))?\s*")
BEGIN_HINT = "write it as '#begin document (<id>); part <N>'"
# CorefUD Entity= values: chunks "(e1-person-1" opening, "e1)" closing, "(e2-thing-1)" single word.
ENTITY_VALUE = re.compile(r"(?:\([^()]+\)?|[^()]+\))+")
ENTITY_CHUNK = re.compile(r"\(([^()]+)(\))?|([^()]+)\)")
ENTITY_ID = re.compile(r"[^\s=|()\-\[\]]+(\[[1-9][0-9]*/[1-9][0-9]*\])?")
NEWDOC = re.compile(r"#\s*newdoc(?:\s+id\s*=\s*(?P<id>.*?))?\s*")


@dataclass
class _Loaded:
    """What parsing one file produced: documents, skip messages, dropped empty-node mentions."""

    documents: list[Document] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    empty_node_mentions: int = 0
    notes: RelationNotes = field(default_factory=RelationNotes)


def _skip_or_raise(err: DataError, on_error: str, out: _Loaded) -> None:
    if on_error == "fail":
        raise err
    out.reasons.append(str(err))
    log.warning("skipped %s", err)


def _finish(out: _Loaded, *, name: str, checksum: str, path: str, fmt: str) -> DocumentCorpus:
    if not out.documents:
        raise DataError(f"no valid document found ({len(out.reasons)} skipped)" +
                        (f"; first problem: {out.reasons[0]}" if out.reasons else ""), path=path, line=1)
    return DocumentCorpus(name=name, documents=tuple(out.documents), checksum=checksum, path=path, format=fmt,
                          skipped=len(out.reasons), skipped_reasons=tuple(out.reasons))


def _prepare(data: bytes, path: str, expected: str) -> bytes:
    """Strip the BOM; an empty file or another encoding's BOM is a DataError at line 1."""
    return text_bytes(data, path, expected)


def _document(doc_id: str, sentences: list[Sentence], mentions: list[Mention], source: str) -> Document:
    return Document(doc_id=doc_id, sentences=tuple(sentences),
                    mentions=tuple(sorted(mentions, key=lambda m: (m.start, m.end))), source=source)


def _quote(words: list[str] | tuple[str, ...], start: int, end: int, limit: int = 40) -> str:
    text = " ".join(words[start:end + 1])
    return text if len(text) <= limit else text[:limit - 3] + "..."


# --------------------------------------------------------------------------- CoNLL-2012


@dataclass
class _Chunk:
    """One ``#begin document`` .. ``#end document`` block, or a run of lines outside any document.

    ``lines`` are the decoded lines between the begin and end lines; ``error`` is a structural
    problem (missing end, stray text) found while splitting the file.
    """

    begin: int
    doc: tuple[str, int] | None = None
    lines: list[tuple[int, str | None, str | None]] = field(default_factory=list)
    error: DataError | None = None


def _conll_chunks(data: bytes, path: str) -> list[_Chunk]:
    """Split a CoNLL-2012 file into documents and stray runs, noting structural errors."""
    chunks: list[_Chunk] = []
    current: _Chunk | None = None  # an open document or stray run
    for number, text, err in decode_lines(data):
        stripped = (text or "").strip()
        if err is None and stripped.startswith("#begin document"):
            if current is not None:
                if current.doc is not None and current.error is None:
                    current.error = DataError("document has no '#end document' line", path=path, line=current.begin,
                                              hint="end each document before the next '#begin document'")
                chunks.append(current)
            current = _Chunk(begin=number)
            match = BEGIN.fullmatch(stripped)
            if match is None:
                current.doc = ("", 0)
                current.error = DataError(f"malformed document header '{stripped}'", path=path, line=number,
                                          hint=BEGIN_HINT)
            else:
                try:
                    current.doc = (match["id"], parse_int(match["part"] or "0", "document part", path=path,
                                                          line=number))
                except DataError as err:
                    current.doc, current.error = ("", 0), err
            continue
        if current is not None and current.doc is not None:  # inside a document
            if err is None and stripped.startswith("#end document"):
                chunks.append(current)
                current = None
            else:
                current.lines.append((number, text, err))
            continue
        if current is not None:  # inside a stray run: absorb everything up to the next #begin
            continue
        if err is not None:
            current = _Chunk(begin=number, error=DataError(err, path=path, line=number))
        elif not stripped:
            continue
        elif stripped.startswith("#end document"):
            chunks.append(_Chunk(begin=number, error=DataError(
                "'#end document' without '#begin document'", path=path, line=number,
                hint="start each document with '#begin document (<id>); part <N>'")))
        else:
            current = _Chunk(begin=number, error=DataError(
                "text outside any document", path=path, line=number,
                hint="token lines belong between '#begin document (<id>); part <N>' and '#end document'"))
    if current is not None:
        if current.doc is not None and current.error is None:
            current.error = DataError("document has no '#end document' line", path=path, line=current.begin,
                                      hint="end the file's last document with '#end document'")
        chunks.append(current)
    return chunks


def _conll_brackets(value: str, path: str, line: int) -> list[tuple[str, str]]:
    """Parts of a coreference field in order: ("single"|"open"|"close", cluster)."""
    if value in NO_COREF:
        return []
    out: list[tuple[str, str]] = []
    for part in value.split("|"):
        for kind, pattern in (("single", CONLL_SINGLE), ("open", CONLL_OPEN), ("close", CONLL_CLOSE)):
            match = pattern.fullmatch(part)
            if match:
                out.append((kind, match[1]))
                break
        else:
            raise DataError(f"malformed coreference field '{value}': '{part}' is not '(N', 'N)' or '(N)'",
                            path=path, line=line, hint="join several brackets with '|' and write '-' for none")
    return out


def _conll_sentence(rows: list[tuple[int, list[str]]], path: str, sent_id: str,
                    offset: int) -> tuple[Sentence, list[Mention]]:
    """One sentence's token rows -> Sentence and its mentions (document offsets from ``offset``)."""
    first_line, first_cols = rows[0]
    words: list[str] = []
    pos: list[str] = []
    mentions: list[Mention] = []
    open_: dict[str, list[tuple[int, int]]] = {}  # cluster -> stack of (document offset, line)
    for number, cols in rows:
        if len(cols) < 5:
            raise DataError(f"expected at least 5 columns (document id, part, word number, word, ..., "
                            f"coreference), got {len(cols)}", path=path, line=number,
                            hint="separate columns with tabs or spaces; the last column holds the brackets or '-'")
        if len(cols) != len(first_cols):
            raise DataError(f"{len(cols)} columns, but the sentence's first token line ({first_line}) has "
                            f"{len(first_cols)}", path=path, line=number,
                            hint="every token line of a sentence needs the same columns")
        if not cols[3]:
            raise DataError("empty word in column 4", path=path, line=number)
        here = offset + len(words)
        words.append(cols[3])
        pos.append(cols[4] if len(cols) >= 6 and cols[4] not in ("-", "_") else "_")
        for kind, cluster in _conll_brackets(cols[-1], path, number):
            if kind == "single":
                mentions.append(Mention(here, here, cluster, f"{path}:{number}"))
            elif kind == "open":
                open_.setdefault(cluster, []).append((here, number))
            elif open_.get(cluster):
                start, start_line = open_[cluster].pop()
                mentions.append(Mention(start, here, cluster, f"{path}:{start_line}"))
            else:
                raise DataError(f"closing bracket '{cluster})' has no open '({cluster}' before it in this sentence",
                                path=path, line=number,
                                hint="mentions start and end in the same sentence; check the opening bracket")
    still_open = sorted((line, cluster) for cluster, stack in open_.items() for _, line in stack)
    if still_open:
        line, cluster = still_open[0]
        raise DataError(f"mention '({cluster}' opened here is still open at the end of its sentence "
                        f"(line {rows[-1][0]})", path=path, line=line, hint="close it before the blank line")
    upos = tuple(pos) if any(p != "_" for p in pos) else None
    return Sentence(words=tuple(words), upos=upos, sent_id=sent_id, source=f"{path}:{first_line}"), mentions


def _check_duplicates(mentions: list[Mention], sentence: Sentence, offset: int, path: str,
                      sent_id: str | None = None) -> None:
    """A span may be a mention of a cluster only once (mentions of one sentence, document offsets)."""
    seen: set[tuple[int, int, str]] = set()
    for m in mentions:
        key = (m.start, m.end, m.cluster)
        if key in seen:
            line = m.source.rsplit(":", 1)[-1]
            raise DataError(f"duplicate mention: '{_quote(sentence.words, m.start - offset, m.end - offset)}' "
                            f"(words {m.start}-{m.end}) is already a mention of cluster {m.cluster}", path=path,
                            line=int(line) if line.isdigit() else None, sent_id=sent_id,
                            hint="list each span once per cluster")
        seen.add(key)


def _conll_document(chunk: _Chunk, doc_id: str, path: str) -> Document:
    sentences: list[Sentence] = []
    mentions: list[Mention] = []
    rows: list[tuple[int, list[str]]] = []
    offset = 0

    def flush() -> None:
        nonlocal offset, rows
        if rows:
            sentence, found = _conll_sentence(rows, path, f"{doc_id}#{len(sentences)}", offset)
            _check_duplicates(found, sentence, offset, path)
            sentences.append(sentence)
            mentions.extend(found)
            offset += len(sentence)
            rows = []

    for number, text, err in chunk.lines:
        if err is not None:
            raise DataError(err, path=path, line=number)
        assert text is not None
        if not text.strip():
            flush()
        elif text.lstrip().startswith("#"):
            continue  # a comment inside the document
        else:
            rows.append((number, text.split("\t") if "\t" in text else text.split()))
    flush()
    if not sentences:
        raise DataError("document has no token lines", path=path, line=chunk.begin)
    return _document(doc_id, sentences, mentions, f"{path}:{chunk.begin}")


def _parse_conll2012(data: bytes, path: str, *, on_error: str, limit: int | None) -> _Loaded:
    out = _Loaded()
    chunks = _conll_chunks(data, path)
    parts: dict[str, set[int]] = {}
    for chunk in chunks:
        if chunk.doc is not None and chunk.error is None:
            parts.setdefault(chunk.doc[0], set()).add(chunk.doc[1])
    begun: dict[tuple[str, int], int] = {}
    for chunk in chunks:
        if limit is not None and len(out.documents) >= limit:
            break
        try:
            if chunk.error is not None:
                raise chunk.error
            assert chunk.doc is not None
            name, part = chunk.doc
            if chunk.doc in begun:
                raise DataError(f"duplicate document ({name}); part {part}, first begun at line {begun[chunk.doc]}",
                                path=path, line=chunk.begin, hint="give each document and part once")
            begun[chunk.doc] = chunk.begin
            doc_id = f"{name} part {part}" if part != 0 or len(parts[name]) > 1 else name
            out.documents.append(_conll_document(chunk, doc_id, path))
        except DataError as err:
            _skip_or_raise(err, on_error, out)
    return out


def load_conll2012(path: str | Path, *, on_error: str = "fail", limit: int | None = None) -> DocumentCorpus:
    """Load a CoNLL-2012 coreference file (``#begin document (<id>); part N`` .. ``#end document``).

    Token lines have whitespace- or tab-separated columns: document id, part, word number, word,
    [POS, ...], and last the coreference brackets (``(12``, ``12)``, ``(12)``, joined with ``|``; ``-``,
    ``_`` or an empty field for none). Blank lines end sentences, and mentions never cross them.
    A document is named ``<id>``, or ``<id> part N`` when N is not 0 or the file holds several parts
    of ``<id>``; sentence ids are ``<doc_id>#<k>`` (k from 0). Column 5, when present and not ``-``/``_``,
    becomes ``Sentence.upos`` (as written, e.g. PTB tags). Lines starting with ``#`` inside a document
    are comments.
    """
    check_options(on_error, limit)
    p = Path(path)
    raw = read_file(p, "a .conll file (or use load_coref for a folder)")
    data = _prepare(raw, str(p), _EXPECTED["conll2012"])
    out = _parse_conll2012(data, str(p), on_error=on_error, limit=limit)
    return _finish(out, name=p.stem, checksum=hashlib.sha256(raw).hexdigest(), path=str(p), fmt="conll2012")


# --------------------------------------------------------------------------- CorefUD


def _entity_value(misc: str, path: str, line: int, sent_id: str | None) -> str | None:
    """The ``Entity=`` value of a MISC column, or None."""
    if misc in ("", "_"):
        return None
    values = [item[len("Entity="):] for item in misc.split("|") if item.startswith("Entity=")]
    if len(values) > 1:
        raise DataError("MISC has more than one Entity= attribute", path=path, line=line, sent_id=sent_id,
                        hint="write all brackets of a word in one Entity= value, e.g. Entity=(e1-person-1(e2-place-2)")
    if not values:
        return None
    if not ENTITY_VALUE.fullmatch(values[0]):
        raise DataError(f"malformed Entity value '{values[0]}'", path=path, line=line, sent_id=sent_id,
                        hint="expected brackets like (e1-person-1 to open, e1) to close, (e2-thing-1) for one word")
    return values[0]


def _entity_chunks(value: str, path: str, line: int, sent_id: str | None) -> list[tuple[bool, bool, str]]:
    """(opens, closes, entity id with any [i/n] part) for each bracket of an Entity value, in order."""
    out: list[tuple[bool, bool, str]] = []
    for match in ENTITY_CHUNK.finditer(value):
        opening, closed, closing = match[1], match[2], match[3]
        body = opening if opening is not None else closing
        eid = body.split("-", 1)[0]
        if not ENTITY_ID.fullmatch(eid):
            raise DataError(f"malformed Entity value '{value}': '{body}' does not start with an entity id",
                            path=path, line=line, sent_id=sent_id,
                            hint="an opening bracket is (<id>-<type>-<head>..., a closing one <id>)")
        out.append((opening is not None, opening is None or closed is not None, eid))
    return out


def _corefud_document(doc_id: str, blocks: list[Block], path: str, keep_subtypes: bool,
                      out: _Loaded) -> Document | None:
    """One CorefUD document from its CoNLL-U blocks; None when it has no sentence."""
    sentences: list[Sentence] = []
    mentions: list[Mention] = []
    dropped = 0
    offset = 0
    first_line = blocks[0][0] if blocks else 1
    for start, lines, decode_error in blocks:
        sent_id = block_sent_id(lines)
        if decode_error is not None:
            raise DataError(decode_error[1], path=path, line=decode_error[0], sent_id=sent_id)
        if all(text.startswith("#") for _, text in lines):
            continue
        sentence, miscs = parse_block(lines, path, sent_id=sent_id, keep_subtypes=keep_subtypes, notes=out.notes)
        found, lost = _sentence_entities(miscs, offset, path, sent_id, lines[-1][0])
        _check_duplicates(found, sentence, offset, path, sent_id)
        sentences.append(sentence)
        mentions.extend(found)
        dropped += lost
        offset += len(sentence)
    if not sentences:
        return None
    out.empty_node_mentions += dropped
    return _document(doc_id, sentences, mentions, f"{path}:{first_line}")


def _sentence_entities(miscs: tuple[TokenMisc, ...], offset: int, path: str, sent_id: str | None,
                       last_line: int) -> tuple[list[Mention], int]:
    """Mentions of one sentence from its words' and empty nodes' Entity brackets (document offsets)."""
    mentions: list[Mention] = []
    dropped = 0
    open_: dict[str, list[tuple[int, int]]] = {}  # entity id (with [i/n]) -> stack of (document offset, line)
    for tm in miscs:
        value = _entity_value(tm.misc, path, tm.line, sent_id)
        if value is None:
            continue
        # an empty node N.k sits before word N (0-based): mentions opened there start at that word,
        # mentions closed there end at the word before it.
        start_here = offset + tm.word
        end_here = offset + tm.word - 1 if tm.empty else start_here
        for opens, closes, eid in _entity_chunks(value, path, tm.line, sent_id):
            cluster = eid.split("[", 1)[0]
            if opens and closes:
                if tm.empty:
                    dropped += 1
                else:
                    mentions.append(Mention(start_here, start_here, cluster, f"{path}:{tm.line}"))
            elif opens:
                open_.setdefault(eid, []).append((start_here, tm.line))
            elif open_.get(eid):
                start, line = open_[eid].pop()
                if start > end_here:
                    dropped += 1
                else:
                    mentions.append(Mention(start, end_here, cluster, f"{path}:{line}"))
            else:
                raise DataError(f"unbalanced Entity brackets: '{eid})' closes a mention that is not open in this "
                                f"sentence", path=path, line=tm.line, sent_id=sent_id,
                                hint=f"open it with ({eid}-<type>-<head> on its first word")
    still_open = sorted((line, eid) for eid, stack in open_.items() for _, line in stack)
    if still_open:
        line, eid = still_open[0]
        raise DataError(f"unbalanced Entity brackets: '({eid}' opened here is still open at the end of its "
                        f"sentence (line {last_line})", path=path, line=line, sent_id=sent_id,
                        hint=f"close it with {eid}) on the mention's last word")
    return mentions, dropped


def _parse_corefud(data: bytes, path: str, *, on_error: str, limit: int | None, keep_subtypes: bool) -> _Loaded:
    out = _Loaded()
    stem = Path(path).stem
    groups: list[tuple[str, list[Block]]] = []  # (doc id, blocks)
    for block in iter_blocks(data, path):
        newdoc = next((m for m in (NEWDOC.fullmatch(text.strip()) for _, text in block[1] if text.startswith("#"))
                       if m is not None), None)
        if newdoc is not None or not groups:
            number = len(groups) + 1
            doc_id = (newdoc["id"] or f"{stem}-{number}") if newdoc is not None else stem
            groups.append((doc_id, []))
        groups[-1][1].append(block)
    first_line: dict[str, int] = {}
    for doc_id, blocks in groups:
        if limit is not None and len(out.documents) >= limit:
            break
        try:
            if doc_id in first_line:
                raise DataError(f"duplicate document id '{doc_id}' (first at line {first_line[doc_id]})",
                                path=path, line=blocks[0][0], hint="give each # newdoc id once")
            first_line[doc_id] = blocks[0][0]
            document = _corefud_document(doc_id, blocks, path, keep_subtypes, out)
        except DataError as err:
            _skip_or_raise(err, on_error, out)
            continue
        if document is not None:
            out.documents.append(document)
    out.notes.warn(path)
    return out


def load_corefud(path: str | Path, *, on_error: str = "fail", limit: int | None = None,
                 keep_subtypes: bool = False) -> DocumentCorpus:
    """Load a CorefUD 1.x file: CoNLL-U whose MISC ``Entity=`` values hold the mentions.

    ``Entity=(e1-person-1`` opens a mention of entity ``e1`` (the id is everything before the first
    ``-``), ``Entity=e1)`` closes the latest open one, ``Entity=(e2-thing-1)`` is a one-word mention;
    several brackets are concatenated (``(e1-person-1(e2-place-2)``) and read left to right. Parts of
    a discontinuous mention (``e3[1/2]``) become separate mentions of ``e3``. Mentions must end in
    the sentence where they open. Documents start at ``# newdoc`` (``id = ...`` names them; without an
    id, ``<file stem>-<k>``); a file without ``# newdoc`` is one document named after the file.
    Sentences keep their trees (heads, relations folded unless ``keep_subtypes``, upos) and their
    ``# sent_id``. Multiword-token lines are not words; for empty nodes see ``EMPTY_NODE_NOTE``.
    """
    check_options(on_error, limit)
    p = Path(path)
    raw = read_file(p, "a .conllu file (or use load_coref for a folder)")
    data = _prepare(raw, str(p), _EXPECTED["corefud"])
    out = _parse_corefud(data, str(p), on_error=on_error, limit=limit, keep_subtypes=keep_subtypes)
    _log_empty_nodes(out, str(p))
    return _finish(out, name=p.stem, checksum=hashlib.sha256(raw).hexdigest(), path=str(p), fmt="corefud")


def _log_empty_nodes(out: _Loaded, path: str) -> None:
    if out.empty_node_mentions:
        log.info("%s: dropped %d Entity mention(s) that cover only empty nodes (see "
                 "headscope.datasets.coref.EMPTY_NODE_NOTE)", path, out.empty_node_mentions)


# --------------------------------------------------------------------------- jsonlines


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _jsonlines_document(line: str, path: str, number: int) -> Document:
    where: dict[str, Any] = {"path": path, "line": number}
    obj = parse_json(line, path=path, number=number)
    if not isinstance(obj, dict):
        raise DataError(f"expected a JSON object with doc_key, sentences and clusters, got {type(obj).__name__}",
                        **where)
    missing = [k for k in ("doc_key", "sentences", "clusters") if k not in obj]
    if missing:
        raise DataError(f"missing key{'s' if len(missing) > 1 else ''} {', '.join(missing)}", **where,
                        hint="each line needs doc_key (string), sentences (lists of words), clusters")
    doc_key, raw_sentences, clusters = obj["doc_key"], obj["sentences"], obj["clusters"]
    if not isinstance(doc_key, str) or not doc_key:
        raise DataError("'doc_key' must be a non-empty string", **where)
    if not isinstance(raw_sentences, list) or not raw_sentences:
        raise DataError("'sentences' must be a non-empty list of sentences (lists of words)", **where)
    sentences: list[Sentence] = []
    for k, words in enumerate(raw_sentences):
        if (not isinstance(words, list) or not words
                or not all(isinstance(w, str) and w for w in words)):
            raise DataError(f"sentence {k} must be a non-empty list of non-empty strings", **where)
        sentences.append(Sentence(words=tuple(words), sent_id=f"{doc_key}#{k}", source=f"{path}:{number}"))
    n = sum(len(s) for s in sentences)
    if not isinstance(clusters, list):
        raise DataError("'clusters' must be a list of clusters, each a list of [start, end] spans", **where)
    mentions: list[Mention] = []
    first: dict[tuple[int, int], int] = {}  # span -> cluster that listed it first
    for c, cluster in enumerate(clusters):
        if not isinstance(cluster, list) or not cluster:
            raise DataError(f"cluster {c} must be a non-empty list of [start, end] spans", **where)
        for span in cluster:
            if not (isinstance(span, list) and len(span) == 2 and all(_is_int(x) for x in span)):
                raise DataError(f"cluster {c}: {json.dumps(span)} is not a [start, end] pair of integers", **where)
            start, end = span
            if start > end:
                raise DataError(f"cluster {c}: span [{start}, {end}] starts after it ends", **where,
                                hint="spans are [start, end] with an inclusive end")
            if start < 0 or end >= n:
                raise DataError(f"cluster {c}: span [{start}, {end}] is out of range 0..{n - 1} (the document has "
                                f"{n} words)", **where)
            if (start, end) in first:
                other = first[(start, end)]
                what = "twice in cluster" if other == c else f"in clusters {other} and"
                raise DataError(f"span [{start}, {end}] is listed {what} {c}; overlapping spans that the format "
                                f"forbids", **where, hint="give each span once, in one cluster")
            first[(start, end)] = c
            mentions.append(Mention(start, end, str(c), f"{path}:{number}"))
    return _document(doc_key, sentences, mentions, f"{path}:{number}")


def _parse_jsonlines(data: bytes, path: str, *, on_error: str, limit: int | None) -> _Loaded:
    out = _Loaded()
    seen: dict[str, int] = {}
    for number, text, err in decode_lines(data):
        if limit is not None and len(out.documents) >= limit:
            break
        try:
            if err is not None:
                raise DataError(err, path=path, line=number)
            assert text is not None
            if not text.strip():
                continue
            document = _jsonlines_document(text, path, number)
            if document.doc_id in seen:
                raise DataError(f"duplicate doc_key '{document.doc_id}' (first at line {seen[document.doc_id]})",
                                path=path, line=number)
            seen[document.doc_id] = number
            out.documents.append(document)
        except DataError as exc:
            _skip_or_raise(exc, on_error, out)
    return out


def load_jsonlines(path: str | Path, *, on_error: str = "fail", limit: int | None = None) -> DocumentCorpus:
    """Load e2e-coref jsonlines: one document per line.

    Each line is ``{"doc_key": str, "sentences": [[word, ...], ...], "clusters": [[[start, end], ...], ...]}``
    with inclusive document-level word offsets; other keys (``speakers``, ...) are ignored. Cluster ids
    are the clusters' positions (``"0"``, ``"1"``, ...). A span may not appear twice (in one cluster or
    in two); nested different spans are fine. Sentence ids are ``<doc_key>#<k>``.
    """
    check_options(on_error, limit)
    p = Path(path)
    raw = read_file(p, "a .jsonlines file (or use load_coref for a folder)")
    data = _prepare(raw, str(p), _EXPECTED["jsonlines"])
    out = _parse_jsonlines(data, str(p), on_error=on_error, limit=limit)
    return _finish(out, name=p.stem, checksum=hashlib.sha256(raw).hexdigest(), path=str(p), fmt="jsonlines")


# --------------------------------------------------------------------------- dispatch



def coref_format(path: Path) -> str | None:
    """The coreference format of a file (by name, looking inside where a name is shared), or None."""
    try:
        fmt = detect_format(path)
    except DataError:
        return None
    return fmt if fmt in COREF_FORMATS else None


def _format_error(path: Path, what: str) -> DataError:
    endings = ", ".join(dict.fromkeys(e for f in COREF_FORMATS for e in FORMATS[f].endings))
    return DataError(what, path=str(path), hint=f"use a name ending in {endings} or pass fmt= "
                                                f"({', '.join(COREF_FORMATS)})")


def _parse(fmt: str, data: bytes, path: str, on_error: str, limit: int | None, keep_subtypes: bool) -> _Loaded:
    """Parse one file's bytes in ``fmt`` (no corpus yet: the caller may merge several files)."""
    data = _prepare(data, path, _EXPECTED[fmt])
    if fmt == "conll2012":
        return _parse_conll2012(data, path, on_error=on_error, limit=limit)
    if fmt == "jsonlines":
        return _parse_jsonlines(data, path, on_error=on_error, limit=limit)
    out = _parse_corefud(data, path, on_error=on_error, limit=limit, keep_subtypes=keep_subtypes)
    _log_empty_nodes(out, path)
    return out


def load_coref(path: str | Path, *, fmt: str | None = None, on_error: str = "fail",
               limit: int | None = None, keep_subtypes: bool = False) -> DocumentCorpus:
    """Load coreference data from a file or a folder, by ``fmt`` or by its name (see ``formats.FORMATS``).

    A folder loads every file directly inside it that holds coreference (only ``fmt`` files when
    given; a ``.jsonl`` of sentences or a ``.conllu`` without ``Entity`` is not coreference), in sorted
    name order, into one DocumentCorpus named after the folder; its checksum is the sha256 of those
    files' bytes one after another, ``limit`` counts documents over all files, and a document id seen
    in an earlier file is an error (skipped in skip mode). ``keep_subtypes`` applies to CorefUD trees.
    """
    check_options(on_error, limit)
    p = Path(path)
    if fmt is not None and fmt not in COREF_FORMATS:
        raise DataError(f"unknown coreference format '{fmt}'", path=str(p),
                        hint=f"pass fmt= with one of {', '.join(COREF_FORMATS)}")
    if not p.exists():
        raise DataError("file not found; check the path", path=str(p))
    if not p.is_dir():
        # asked for coreference by name: a .conllu is CorefUD, a .jsonl e2e jsonlines, even without mentions
        chosen = fmt or coref_format(p) or next((c for c in candidates(p) if c in COREF_FORMATS), None)
        if chosen is None:
            raise _format_error(p, f"cannot tell the coreference format of '{p.name}'")
        raw = read_file(p, "a coreference file")
        out = _parse(chosen, raw, str(p), on_error, limit, keep_subtypes)
        return _finish(out, name=p.stem, checksum=hashlib.sha256(raw).hexdigest(), path=str(p), fmt=chosen)

    found = {f: coref_format(f) for f in sorted(p.iterdir(), key=lambda f: f.name) if f.is_file()}
    files = [f for f, found_fmt in found.items() if found_fmt is not None and (fmt is None or found_fmt == fmt)]
    if not files:
        raise _format_error(p, "is a directory with no coreference file; give a data file or a folder of "
                               "coreference files")
    hasher = hashlib.sha256()
    total = _Loaded()
    first_seen: dict[str, str] = {}
    formats: set[str] = set()
    for f in files:
        raw = read_file(f, "a coreference file")
        hasher.update(raw)  # the checksum covers every file, even past ``limit``
        if limit is not None and len(total.documents) >= limit:
            continue
        chosen = found[f]
        assert chosen is not None
        formats.add(chosen)
        try:
            out = _parse(chosen, raw, str(f), on_error, None if limit is None else limit - len(total.documents),
                         keep_subtypes)
        except DataError as err:  # a whole-file problem (empty file), or any error in fail mode
            _skip_or_raise(err, on_error, total)
            continue
        total.reasons.extend(out.reasons)
        total.empty_node_mentions += out.empty_node_mentions
        for document in out.documents:
            try:
                if document.doc_id in first_seen:
                    line = document.source.rsplit(":", 1)[-1]
                    raise DataError(f"document '{document.doc_id}' was already loaded from "
                                    f"{first_seen[document.doc_id]}", path=str(f),
                                    line=int(line) if line.isdigit() else None,
                                    hint="give each document once in the folder")
                first_seen[document.doc_id] = document.source
                total.documents.append(document)
            except DataError as err:
                _skip_or_raise(err, on_error, total)
    return _finish(total, name=p.name, checksum=hasher.hexdigest(), path=str(p),
                   fmt=formats.pop() if len(formats) == 1 else "mixed")
