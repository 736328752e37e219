"""Error types that reach users: each renders as one line saying what, where and how to fix."""

from __future__ import annotations

import re

# Characters that a terminal acts on instead of showing: C0/C1 controls and DEL (a CR moves the cursor
# back over the error line), line and paragraph separators, and the bidirectional overrides that
# reorder what is shown. Messages quote data, so these are written as escapes.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_controls(text: str) -> str:
    """``text`` with every control character written as an escape (``\\r``, ``\\x00``, ``\\u202e``)."""
    def one(match: re.Match) -> str:
        ch = match.group()
        return _NAMED.get(ch) or (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
    return _CONTROLS.sub(one, text)


# What an error message quotes from the data is cut to this many characters (a corrupt field can be megabytes),
# and a whole message to MAX_MESSAGE; each cut says how long the text was.
MAX_QUOTED = 200
MAX_MESSAGE = 1000
_QUOTED = re.compile("'([^'\n]{%d,})'|\"([^\"\n]{%d,})\"" % (MAX_QUOTED + 1, MAX_QUOTED + 1))


def clip(text: str, limit: int = MAX_QUOTED) -> str:
    """``text`` when it has at most ``limit`` characters, else its start, an ellipsis and its full length."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text):,} characters)"


def shorten(message: str) -> str:
    """``message`` with every quoted field longer than ``MAX_QUOTED`` cut (``'abc…' (4,194,304 characters)``),
    and the whole cut in the middle when it is still longer than ``MAX_MESSAGE`` (its end says how to fix)."""
    def one(match: re.Match) -> str:
        field = match.group(1) if match.group(1) is not None else match.group(2)
        quote = match.group()[0]
        return f"{quote}{field[:MAX_QUOTED]}…{quote} ({len(field):,} characters)"
    if len(message) <= MAX_QUOTED:
        return message
    message = _QUOTED.sub(one, message)
    if len(message) > MAX_MESSAGE:
        head, tail = MAX_MESSAGE * 2 // 3, MAX_MESSAGE // 3
        message = f"{message[:head]} … ({len(message) - head - tail:,} characters cut) … {message[-tail:]}"
    return message


class HeadscopeError(Exception):
    """Base class for errors headscope reports to users as a single line (see ``shorten``)."""

    def __str__(self) -> str:
        return shorten(super().__str__())


class DataError(HeadscopeError):
    """Malformed input data, located by ``path:line`` and, when known, the sentence id."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 sent_id: str | None = None, hint: str | None = None):
        self.message = message
        self.path = path
        self.line = line
        self.sent_id = sent_id
        self.hint = hint
        super().__init__(str(self))

    def location(self) -> str:
        """``path:line (sent_id)``: where the bad input is, as much of it as is known."""
        where = str(self.path) if self.path else "<input>"
        if self.line is not None:
            where += f":{self.line}"
        if self.sent_id:
            where += f" ({self.sent_id})"
        return where

    def __str__(self) -> str:
        text = f"{shorten(self.location())}: {shorten(self.message)}"
        if self.hint:
            text += f"; {shorten(self.hint)}"
        return escape_controls(text)


class ModelError(HeadscopeError):
    """A model cannot be loaded or does not behave as the analysis requires."""


class CaptureError(HeadscopeError):
    """Attention could not be captured, or the captured maps failed a sanity check."""


# Messages name a setting as a Python caller passes it (``run=``, ``target='animal'``, ``force=True``); the command
# line prints them with its flags (``as_flags``). The settings that messages name, and each one's flag:
FLAGS = {"run": "--run", "word": "--word", "target": "--target", "out_dir": "--out", "force": "--force",
         "model": "--model", "data": "--data", "tasks": "--tasks", "documents": "--documents",
         "select_on": "--select-on", "fmt": "--format", "weighting": "--weighting"}
_SETTING = re.compile(r"(?<![\w.-])(%s)=('[^'\n]*'|\"[^\"\n]*\"|True\b)?" % "|".join(sorted(FLAGS, key=len,
                                                                                            reverse=True)))


def as_flags(message: str) -> str:
    """``message`` as the command line says it: each setting named as in Python (``run=``, ``target='animal'``,
    ``force=True``) becomes its flag (``--run``, ``--target animal``, ``--force``)."""
    def one(match: re.Match) -> str:
        value = match.group(2)
        return FLAGS[match.group(1)] + ("" if value in (None, "True") else " " + value[1:-1])
    return _SETTING.sub(one, message)
