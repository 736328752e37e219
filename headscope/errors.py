"""Error types that reach users: each renders as one line saying what, where and how to fix."""

from __future__ import annotations


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
        return text


class ModelError(HeadscopeError):
    """A model cannot be loaded or does not behave as the analysis requires."""


class CaptureError(HeadscopeError):
    """Attention could not be captured, or the captured maps failed a sanity check."""
