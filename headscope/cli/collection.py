"""How a command-line process uses Python's cyclic garbage collector: not while a run starts, and not at exit.

A run's start creates objects that live until the process ends: the imported modules (torch, transformers,
pandas), the model and the data. Every full collection walks all of them again, and there are several while
they are being made; at exit the interpreter walks and frees them once more. On the default run (minilm, EWT
dev) that was about 0.9 s of collections before the first batch, and about 1 s of exit. So a run starts with
collection off; once its long-lived objects exist, they are frozen (``gc.freeze``: never walked again) and
collection resumes for what the run makes from then on. The library leaves the collector alone: these
settings belong to the process, and only the command line owns its process. Ranks under a launcher keep
the collector as it is: gloo's teardown at a rank's exit aborted in 2 of 8 test runs when they
did not.
"""

from __future__ import annotations

import contextlib
import gc
from typing import Callable, Iterator


@contextlib.contextmanager
def starting(enabled: bool = True) -> Iterator[Callable[[], None]]:
    """Collection off while the block starts; the callable it yields (``settled()``) says that the long-lived
    objects exist: they are frozen and collection resumes. It resumes at the block's end in any case, and
    stays off only where it was off before. ``enabled=False``: the collector is left alone."""
    was_on = gc.isenabled() and enabled
    if was_on:
        gc.disable()
    done = False

    def settled() -> None:
        nonlocal done
        if not done:
            done = True
            if was_on:
                gc.freeze()
                gc.enable()

    try:
        yield settled
    finally:
        settled()


def exiting(enabled: bool = True) -> None:
    """The process is about to end: freeze everything, so that the interpreter's last collections walk
    nothing. Files and pools are closed by their owners before this; objects kept alive by a cycle are left
    to the operating system, as at any exit. ``enabled=False``: the collector is left alone."""
    if enabled:
        gc.freeze()
