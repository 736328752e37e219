"""Byte-level input shared by every loader: reading, encodings and BOMs, lines, safe numbers and JSON, on_error."""

from __future__ import annotations

import json
import logging
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import DataError

log = logging.getLogger(__name__)

ON_ERROR = ("fail", "skip")
BOM = b"\xef\xbb\xbf"
# Byte-order marks of encodings that are not UTF-8 (longest first: UTF-32 LE starts like UTF-16 LE).
OTHER_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"),
              (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16"))
# Integers in data files are ids, offsets and counts: 18 digits is far beyond any real file, and
# refusing longer ones keeps Python's int() from its 4,300-digit error (and its quadratic cost).
MAX_DIGITS = 18


def check_options(on_error: str, limit: int | None) -> None:
    """Reject an unknown ``on_error`` or a ``limit`` below 1 (programming errors: ValueError)."""
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")


_SPECIAL = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
            (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def check_regular(path: Path, what: str) -> None:
    """Refuse, before opening it, anything at ``path`` that is not a regular file (after links): a FIFO blocks
    until something writes to it and a device such as /dev/zero never ends, whatever the file is named."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise DataError("file not found; check the path", path=str(path)) from None
    except OSError as exc:
        raise DataError(f"cannot read: {exc.strerror}", path=str(path)) from None
    if stat.S_ISDIR(mode):
        raise DataError(f"is a directory; give {what}", path=str(path))
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _SPECIAL if test(mode)), "not a regular file")
        raise DataError(f"is {kind}, not a regular file; give {what} (copy the data into a file first)",
                        path=str(path))


def read_file(path: Path, what: str) -> bytes:
    """The bytes of ``path``; a missing file, a directory, a FIFO or device, or an unreadable file is a DataError.

    ``what`` names the expected file in the directory message (e.g. ``"a .conll file"``).
    """
    check_regular(path, what)
    try:
        # opened without blocking (a FIFO put in its place since the check), and checked again once open
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise DataError(f"cannot read: {exc.strerror}", path=str(path)) from None
    with open(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise DataError(f"is not a regular file; give {what}", path=str(path))
        try:
            return f.read()
        except OSError as exc:
            raise DataError(f"cannot read: {exc.strerror}", path=str(path)) from None


def text_bytes(raw: bytes, path: str, expected: str) -> bytes:
    """``raw`` without its UTF-8 byte-order mark, ready for ``decode_lines``.

    A UTF-16/32 byte-order mark or a file of only whitespace is a DataError at line 1; ``expected``
    says what the file should have held.
    """
    for mark, name in OTHER_BOMS:
        if raw.startswith(mark):
            raise DataError(f"file is {name} (it starts with the byte-order mark {mark.hex(' ').upper()})",
                            path=path, line=1, hint="re-save it as UTF-8")
    data = raw.removeprefix(BOM)
    if not data.strip():
        raise DataError(f"file is empty; expected {expected}", path=path, line=1)
    return data


def split_lines(data: bytes) -> list[bytes]:
    """Lines as an editor shows them: ``\\n`` or ``\\r\\n`` ends a line; in a file with no ``\\n`` at all,
    ``\\r`` does (old Mac line ends). A ``\\r`` elsewhere stays inside its line (``decode_lines`` refuses it)."""
    if b"\n" not in data and b"\r" in data:
        return data.split(b"\r")
    return [raw[:-1] if raw.endswith(b"\r") else raw for raw in data.split(b"\n")]


def decode_lines(data: bytes) -> Iterator[tuple[int, str | None, str | None]]:
    """(1-based line number, text or None, error or None) for each line of BOM-free bytes.

    A line that is not valid UTF-8, or that holds a NUL byte or a carriage return, yields its error
    message instead of text, so callers can report (or skip) it at that line.
    """
    for number, raw in enumerate(split_lines(data), start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield number, None, (f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); "
                                 f"re-save the file as UTF-8")
            continue
        if "\x00" in text:
            yield number, None, (f"NUL byte at column {text.index(chr(0)) + 1}; is the file UTF-16 or binary? "
                                 f"re-save it as UTF-8 text")
        elif "\r" in text:
            yield number, None, (f"carriage return (CR) at column {text.index(chr(13)) + 1} inside the line; "
                                 f"lines end with LF or CR LF, and fields hold no line breaks")
        else:
            yield number, text, None


def read_document(path: str | Path, what: str = "a UTF-8 text file") -> str:
    """A whole text file as one string (lines joined with ``\\n``); the first undecodable line is a DataError
    at its ``path:line``."""
    path = Path(path)
    data = text_bytes(read_file(path, what), str(path), what)
    lines = []
    for number, text, error in decode_lines(data):
        if error is not None:
            raise DataError(error, path=str(path), line=number)
        lines.append(text)
    return "\n".join(lines)


INTEGER = re.compile(r"-?[0-9]+")


def parse_int(text: str, what: str, *, path: str, line: int | None, sent_id: str | None = None,
              minimum: int | None = None) -> int:
    """``text`` as a decimal integer of at most ``MAX_DIGITS`` digits, else a DataError naming ``what``."""
    if not INTEGER.fullmatch(text):
        raise DataError(f"{what} '{text}' is not an integer", path=path, line=line, sent_id=sent_id)
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise DataError(f"{what} has {len(text.lstrip('-'))} digits; no real file has such a number",
                        path=path, line=line, sent_id=sent_id, hint="the field is corrupt")
    value = int(text)
    if minimum is not None and value < minimum:
        raise DataError(f"{what} {value} is below {minimum}", path=path, line=line, sent_id=sent_id)
    return value


def _json_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise _HugeNumber(len(text.lstrip("-")))
    return int(text)


class _HugeNumber(ValueError):
    def __init__(self, digits: int) -> None:
        super().__init__(digits)
        self.digits = digits


def parse_json(line: str, *, path: str, number: int) -> Any:
    """One line of JSON; malformed, too deep, or with an integer of more than ``MAX_DIGITS`` digits is a DataError."""
    try:
        return json.loads(line, parse_int=_json_int)
    except json.JSONDecodeError as exc:
        raise DataError(f"not valid JSON ({exc.msg} at column {exc.colno})", path=path, line=number) from None
    except _HugeNumber as exc:
        raise DataError(f"JSON number with {exc.digits} digits; no real file has such a number", path=path,
                        line=number, hint="the line is corrupt") from None
    except RecursionError:
        raise DataError("JSON nested too deeply", path=path, line=number) from None


@dataclass
class Skips:
    """What ``on_error`` does with a bad record: ``fail`` raises it, ``skip`` logs and counts it."""

    on_error: str
    reasons: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_options(self.on_error, None)

    def __call__(self, err: DataError) -> None:
        if self.on_error == "fail":
            raise err
        self.reasons.append(str(err))
        log.warning("skipped %s", err)

    def nothing_left(self, what: str, path: str) -> DataError:
        """The error for a file in which no record survived."""
        return DataError(f"no valid {what} found ({len(self.reasons)} skipped)" +
                         (f"; first problem: {self.reasons[0]}" if self.reasons else ""), path=path, line=1)


def jsonl_records(data: bytes, path: str, record: Callable[[Any, str, int], Any], *, what: str, expected: str,
                  on_error: str = "fail", limit: int | None = None) -> tuple[list, Skips]:
    """The records of a jsonl file, one JSON object per line made into a record by ``record(obj, path, line)``
    (which raises DataError for a bad one), each with a ``pair_id`` used once; blank lines are passed over.
    ``what`` names a record in the error for a file with none; ``expected`` says what a line holds."""
    check_options(on_error, limit)
    data = text_bytes(data, path, expected)
    records: list = []
    skips = Skips(on_error)
    seen: dict[str, int] = {}
    for number, line, err in decode_lines(data):
        if limit is not None and len(records) >= limit:
            break
        try:
            if err is not None:
                raise DataError(err, path=path, line=number)
            assert line is not None
            if not line.strip():
                continue
            got = record(parse_json(line, path=path, number=number), path, number)
            if got.pair_id in seen:
                raise DataError(f"pair id {got.pair_id!r} is used twice (first at line {seen[got.pair_id]})",
                                path=path, line=number, hint="give each pair its own id")
            seen[got.pair_id] = number
            records.append(got)
        except DataError as exc:
            skips(exc)
    if not records:
        raise skips.nothing_left(what, path)
    return records, skips
