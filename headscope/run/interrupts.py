"""Ctrl-C during a run: sections that note it instead of stopping, so that finished work is always written."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator


@dataclass
class Noted:
    """Whether a Ctrl-C (SIGINT) arrived inside a ``shielded`` block."""

    hit: bool = False


@contextmanager
def shielded() -> Iterator[Noted]:
    """Run the block to its end even if Ctrl-C is pressed; ``.hit`` says whether it was.

    Used for the short, final steps of a run (writing its files, moving the folder into place), so
    that an interruption there never leaves half a run. Outside the main thread (where Python
    delivers no signal) the block simply runs.
    """
    noted = Noted()
    if threading.current_thread() is not threading.main_thread():
        yield noted
        return

    def note(signum, frame) -> None:
        noted.hit = True

    previous = signal.signal(signal.SIGINT, note)
    try:
        yield noted
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def interruptible() -> Iterator[None]:
    """Inside a ``shielded`` block, a section that Ctrl-C does stop (with KeyboardInterrupt), such as
    drawing figures: the caller catches it and goes on to write what is finished."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
