"""Byte-level input shared by every loader: reading, BOM, per-line UTF-8, option checks."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from ..errors import DataError

ON_ERROR = ("fail", "skip")
BOM = b"\xef\xbb\xbf"


def check_options(on_error: str, limit: int | None) -> None:
    """Reject an unknown ``on_error`` or a ``limit`` below 1 (programming errors: ValueError)."""
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")


def read_file(path: Path, what: str) -> bytes:
    """The bytes of ``path``; a missing file, a directory or an unreadable file is a DataError.

    ``what`` names the expected file in the directory message (e.g. ``"a .conll file"``).
    """
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError("file not found; check the path", path=str(path)) from None
    except IsADirectoryError:
        raise DataError(f"is a directory; give {what}", path=str(path)) from None
    except OSError as exc:
        raise DataError(f"cannot read: {exc.strerror}", path=str(path)) from None


def decode_lines(data: bytes) -> Iterator[tuple[int, str | None, str | None]]:
    """(1-based line number, text or None, error or None) for each line of BOM-free bytes.

    Lines are split on ``\\n`` with a trailing ``\\r`` removed; a line that is not valid UTF-8
    yields its error message instead of text, so callers can report it at that line.
    """
    for number, raw in enumerate(data.split(b"\n"), start=1):
        raw = raw.rstrip(b"\r")
        try:
            yield number, raw.decode("utf-8"), None
        except UnicodeDecodeError as exc:
            yield number, None, (f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); "
                                 f"re-save the file as UTF-8")
