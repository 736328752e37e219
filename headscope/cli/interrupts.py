"""Ctrl-C before a command has anything to write (Python's imports, typer's parsing, loading the model and the
data): one line, ``interrupted while ...; nothing was written``, and exit code 130, wherever the interrupt lands."""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator


class Startup:
    """What a Ctrl-C would interrupt while nothing is written yet (None once the command handles Ctrl-C itself),
    what it did interrupt, and whether the command already said so. (A plain class: this module is imported
    first, and dataclasses' imports are a window for a traceback.)"""

    def __init__(self) -> None:
        self.doing: str | None = "starting headscope"
        self.hit: str | None = None
        self.said = False


# One per process: the SIGINT handler has no other way to reach it.
STARTUP = Startup()


def _on_sigint(signum, frame) -> None:
    if STARTUP.doing is not None and STARTUP.hit is None:
        STARTUP.hit = STARTUP.doing
    raise KeyboardInterrupt


def begin(doing: str | None) -> None:
    """The command is now ``doing`` this (None: it has begun work whose Ctrl-C it handles itself)."""
    STARTUP.doing = doing
    if doing is None:
        STARTUP.hit = None  # a Ctrl-C that library code swallowed while loading: the command goes on


def interrupted() -> str | None:
    """The one-line message for a Ctrl-C that came before anything was written, or None when none came."""
    return None if STARTUP.hit is None else f"interrupted while {STARTUP.hit}; nothing was written"


def said() -> None:
    """The command has printed its error line (which an interrupt's line must not follow)."""
    STARTUP.said = True


def _exit_interrupted() -> None:
    message = interrupted() or (f"interrupted while {STARTUP.doing}; nothing was written" if STARTUP.doing
                                else "interrupted")
    print(f"headscope: error: {message}", file=sys.stderr)
    raise SystemExit(130)


def _keep_exit_code() -> None:
    """An interrupt raised inside code run by exec() of a string (dataclasses, namedtuple) sets CPython's
    "uncaught KeyboardInterrupt" flag even when it is caught, and `python -m headscope` then ends by SIGINT
    instead of the exit code chosen; every exec() of a string clears the flag first."""
    exec("")  # noqa: S102 - an empty program, run for that side effect only


@contextmanager
def guarded() -> Iterator[None]:
    """Run the command line: a Ctrl-C that stops it before it has anything to write (including one that typer
    turns into a silent exit, or that a library turns into another error) ends it with one line and code 130."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_sigint)
    try:
        try:
            yield
        except KeyboardInterrupt:
            _exit_interrupted()
        except SystemExit:
            if STARTUP.hit is not None and not STARTUP.said:
                _exit_interrupted()
            raise
    finally:
        _keep_exit_code()
