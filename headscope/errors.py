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


class HeadscopeError(Exception):
    """Base class for errors headscope reports to users as a single line."""


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
        text = f"{self.location()}: {self.message}"
        if self.hint:
            text += f"; {self.hint}"
        return escape_controls(text)


class ModelError(HeadscopeError):
    """A model cannot be loaded or does not behave as the analysis requires."""


class CaptureError(HeadscopeError):
    """Attention could not be captured, or the captured maps failed a sanity check."""
