"""Output folders written whole: staged in a temporary sibling, moved into place at the end (kept where that fails),
one writer at a time; foreign folders refused."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import HeadscopeError

log = logging.getLogger(__name__)

# Every folder headscope writes holds this file: {"kind": "run" | "probe" | "compare" | "explain" | "ablation" |
# "context" | "shard"}.
MARKER = ".headscope"
_STAGING = re.compile(r"\.(?P<name>.+)\.headscope-(?:tmp|old)-(?P<pid>[0-9]+)-[0-9a-f]+")


def folder_kind(folder: Path) -> str | None:
    """What ``folder`` holds: ``""`` when it is empty, a headscope output's kind, or None (anything else)."""
    try:
        entries = list(folder.iterdir())
    except OSError:
        return None
    if not entries:
        return ""
    marker = folder / MARKER
    if marker.is_file():
        try:
            kind = json.loads(marker.read_text(encoding="utf-8")).get("kind")
            return str(kind) if kind else None
        except (OSError, ValueError, AttributeError):
            return None
    return _unmarked_kind(folder)


def _unmarked_kind(folder: Path) -> str | None:
    """A run or probe folder written before the marker existed: its run.json lists every file in it."""
    try:
        meta = json.loads((folder / "run.json").read_text(encoding="utf-8"))
        listed = set(meta.get("files") or []) | {"run.json"}
        if "headscope" not in (meta.get("versions") or {}):
            return None
    except (OSError, ValueError, AttributeError, TypeError):
        return None
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    if not present <= listed:
        return None  # other files beside a run (written there with --force): not ours to replace
    return "probe" if "probes.csv" in listed else "run"


def article(word: str) -> str:
    """"a" or "an" before ``word`` (by its first letter: an explain, an ablation, a run)."""
    return "an" if word[:1].lower() in ("a", "e", "i", "o", "u") else "a"


def check_output(out: Path, kind: str, *, force: bool = False) -> None:
    """Fail now, in one line, unless ``out`` can become a ``kind`` output folder; creates nothing.

    ``out`` may be missing, empty, or an earlier headscope output of the same kind (replaced whole).
    Any other folder is refused unless ``force``: then the new files are put into it beside what is
    there (same-named files are replaced; nothing else is touched).
    """
    target = out.resolve()
    if target.exists() and not target.is_dir():
        raise HeadscopeError(f"cannot use {out} as the output folder: it is a file; choose another with out_dir=")
    probe = target
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise HeadscopeError(f"cannot create output folder {out}: {probe} is a file; choose another with out_dir=")
    parent = target.parent if target.exists() else probe
    if not os.access(parent, os.W_OK | os.X_OK):
        raise HeadscopeError(f"output folder {out} cannot be written ({parent} is not writable); choose another "
                             f"with out_dir=")
    if target.exists() and not force:
        found = folder_kind(target)
        if found is None:
            raise HeadscopeError(f"output folder {out} already holds files that headscope did not write; choose "
                                 f"an empty or new folder with out_dir=, or pass force=True to add the {kind}'s "
                                 f"files to it")
        if found and found != kind:
            raise HeadscopeError(f"output folder {out} holds a headscope {found} output, not {article(kind)} {kind} "
                                 f"output; choose another with out_dir=, or pass force=True to replace it")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kept(entry: Path) -> bool:
    """Whether a staging folder holds a finished output that could not be moved into place (never removed)."""
    try:
        return bool(json.loads((entry / MARKER).read_text(encoding="utf-8")).get("kept"))
    except (OSError, ValueError, AttributeError):
        return False


def _clear_stale(out: Path) -> None:
    """Remove staging folders of ``out`` left by killed runs (their process is gone)."""
    try:
        siblings = list(out.parent.iterdir())
    except OSError:
        return
    for entry in siblings:
        match = _STAGING.fullmatch(entry.name)
        if (match and match["name"] == out.name and entry.is_dir() and not _alive(int(match["pid"]))
                and not _kept(entry)):
            shutil.rmtree(entry, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where the system cannot."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), rename_exchange) == 0


class _Blocked(Exception):
    """``out`` changed while the output was written, into something it may not replace."""


def _conflicts(src: Path, dst: Path) -> None:
    """Refuse, before anything is copied, a folder of ``src`` whose place in ``dst`` is taken by a file."""
    for entry in src.iterdir():
        target = dst / entry.name
        if not entry.is_dir():
            continue
        if target.is_dir():
            _conflicts(entry, target)
        elif os.path.lexists(target):
            raise _Blocked(f"{target} is a file where the output has a folder")


def _copy_into(src: Path, dst: Path, top: bool = True) -> None:
    """Copy ``src``'s files (not its marker: ``dst`` stays unmarked) into the existing folder ``dst``, same-named
    files replaced, folders merged, each file written under a temporary name first. ``src`` stays whole, so a
    failure part way loses nothing."""
    for entry in src.iterdir():
        target = dst / entry.name
        if entry.is_dir():
            target.mkdir(exist_ok=True)
            _copy_into(entry, target, top=False)
        elif not (top and entry.name == MARKER):
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            part = target.with_name(target.name + ".headscope-part")
            shutil.copy2(entry, part)
            os.replace(part, target)


def _replace(tmp: Path, out: Path) -> None:
    """Put ``tmp`` in the place of the earlier output ``out``: in one step where the system can, else by two
    renames (``out`` put back where the second fails)."""
    if _exchange(tmp, out):
        shutil.rmtree(tmp, ignore_errors=True)     # now the earlier output
        return
    old = out.with_name(f".{out.name}.headscope-old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except OSError:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _publish(tmp: Path, out: Path, kind: str, force: bool) -> None:
    """Move the finished ``tmp`` into place as ``out``; raises OSError or _Blocked with ``tmp`` still whole."""
    if os.path.lexists(out) and not out.is_dir():
        raise _Blocked(f"{out} is now a file")
    found = folder_kind(out) if out.exists() else ""
    if not out.exists():
        os.rename(tmp, out)
    elif found == "":
        os.rmdir(out)
        os.rename(tmp, out)
    elif found == kind or (found is not None and force):   # an earlier headscope output: replaced whole
        _replace(tmp, out)
    elif found is None and force:      # --force into a folder of other files: ours beside them, left unmarked
        _conflicts(tmp, out)
        _copy_into(tmp, out)
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        raise _Blocked(f"{out} now holds " + ("files headscope did not write" if found is None
                                             else f"a headscope {found}"))


def _keep(tmp: Path, out: Path, kind: str) -> Path:
    """The finished output that could not be published, renamed to ``<out>.unpublished-<time>`` beside ``out``
    (where that fails too it stays where it is, marked so that no later run clears it); where it now is."""
    try:
        (tmp / MARKER).write_text(json.dumps({"kind": kind, "kept": True}) + "\n", encoding="utf-8")
    except OSError:
        pass
    kept = out.with_name(f"{out.name}.unpublished-{time.strftime('%Y%m%d-%H%M%S')}")
    if os.path.lexists(kept):
        kept = kept.with_name(f"{kept.name}-{os.getpid()}")
    try:
        os.rename(tmp, kept)
    except OSError:
        return tmp
    return kept


# The output folders whose lock this process holds: lock file -> [descriptor, holders]. The system releases a
# lock when its process ends, so a killed run never leaves one that blocks.
_HELD: dict[str, list[int]] = {}


def lock_path(out: Path) -> Path:
    """The lock file of the output folder ``out``: beside it, hidden, there only while a process writes ``out``."""
    out = Path(os.path.abspath(out))
    return out.with_name(f".{out.name}.headscope-lock")


def _holder(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""


def _lock(path: Path, out: Path) -> int | None:
    """A descriptor holding the lock on ``path`` (None where the system has no such locks); a lock that another
    process holds is a HeadscopeError."""
    import fcntl

    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return None                   # a folder that cannot be written: staging says so in one line
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise HeadscopeError(f"output folder {out} is being written by another headscope process{holder}; "
                                 f"wait for it to end, or choose another with out_dir=") from None
        except OSError:
            os.close(fd)
            return None                   # a file system without flock
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except OSError:
            same = False
        if same:                          # else the holder removed it as we opened it: take the new one
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
            return fd
        os.close(fd)


@contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """Hold the lock of the output folder ``out`` for the block: another process that writes into ``out``
    meanwhile is refused in one line. Held again by the same process, it is one lock; where the system has no
    file locks (no ``fcntl``), the block runs unlocked."""
    import importlib.util

    if importlib.util.find_spec("fcntl") is None:
        yield
        return
    path = lock_path(out)
    key = str(path)
    if key in _HELD:
        _HELD[key][1] += 1
    else:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError:
            pass                              # _lock finds no folder: the block runs and reports it
        fd = _lock(path, Path(out))
        if fd is None:
            yield
            return
        _HELD[key] = [fd, 1]
    try:
        yield
    finally:
        held = _HELD[key]
        held[1] -= 1
        if not held[1]:
            del _HELD[key]
            path.unlink(missing_ok=True)    # while still locked: the next writer makes a fresh one
            os.close(held[0])


def _publish_or_keep(tmp: Path, out: Path, kind: str, force: bool) -> None:
    """Publish ``tmp`` as ``out``; where that fails the finished output is kept and the error says where."""
    try:
        _publish(tmp, out, kind, force)
    except (OSError, _Blocked) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        kept = _keep(tmp, out, kind)
        raise HeadscopeError(f"cannot move the finished {kind} into {out} ({reason}); it is kept whole in {kept}: "
                             f"move it there yourself once {out} can be replaced, or use it where it is") from None
    except BaseException:              # Ctrl-C in the middle: nothing finished is lost either
        kept = _keep(tmp, out, kind)
        log.warning("the finished %s was not moved into %s; it is kept whole in %s", kind, out, kept)
        raise


@contextmanager
def staged_output(out: Path, kind: str, *, force: bool = False) -> Iterator[Path]:
    """A temporary sibling of ``out`` to write a ``kind`` output into, moved into place when the block ends.

    Readers of ``out`` see the earlier output or the new one, never a mix; an error inside the block
    leaves ``out`` as it was. See ``check_output`` for which folders may be replaced. Another process writing
    into ``out`` meanwhile is refused (``output_lock``). Where the finished output cannot be moved into place
    (``out`` cannot be renamed or replaced), it is kept whole beside ``out`` and the HeadscopeError says where.
    """
    check_output(out, kind, force=force)
    out = Path(os.path.abspath(out))
    with output_lock(out):
        yield from _staged(out, kind, force)


def _staged(out: Path, kind: str, force: bool) -> Iterator[Path]:
    """``staged_output`` once ``out`` is checked and locked."""
    out.parent.mkdir(parents=True, exist_ok=True)
    _clear_stale(out)
    tmp = out.with_name(f".{out.name}.headscope-tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        tmp.mkdir()
        (tmp / MARKER).write_text(json.dumps({"kind": kind}) + "\n", encoding="utf-8")
    except OSError as exc:
        raise HeadscopeError(f"cannot create output folder {out}: {exc.strerror}; choose another with "
                             f"out_dir=") from None
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _publish_or_keep(tmp, out, kind, force)
