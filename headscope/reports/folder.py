"""Output folders written whole: staged in a temporary sibling, moved into place at the end; foreign folders refused."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
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


def check_output(out: Path, kind: str, *, force: bool = False) -> None:
    """Fail now, in one line, unless ``out`` can become a ``kind`` output folder; creates nothing.

    ``out`` may be missing, empty, or an earlier headscope output of the same kind (replaced whole).
    Any other folder is refused unless ``force``: then the new files are put into it beside what is
    there (same-named files are replaced; nothing else is touched).
    """
    target = out.resolve()
    if target.exists() and not target.is_dir():
        raise HeadscopeError(f"cannot use {out} as the output folder: it is a file; choose another with --out")
    probe = target
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise HeadscopeError(f"cannot create output folder {out}: {probe} is a file; choose another with --out")
    parent = target.parent if target.exists() else probe
    if not os.access(parent, os.W_OK | os.X_OK):
        raise HeadscopeError(f"output folder {out} cannot be written ({parent} is not writable); choose another "
                             f"with --out")
    if target.exists() and not force:
        found = folder_kind(target)
        if found is None:
            raise HeadscopeError(f"output folder {out} already holds files that headscope did not write; choose "
                                 f"an empty or new folder with --out, or pass --force to add the {kind}'s files "
                                 f"to it")
        if found and found != kind:
            raise HeadscopeError(f"output folder {out} holds a headscope {found}, not a {kind}; choose another "
                                 f"with --out, or pass --force to replace it")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clear_stale(out: Path) -> None:
    """Remove staging folders of ``out`` left by killed runs (their process is gone)."""
    try:
        siblings = list(out.parent.iterdir())
    except OSError:
        return
    for entry in siblings:
        match = _STAGING.fullmatch(entry.name)
        if match and match["name"] == out.name and entry.is_dir() and not _alive(int(match["pid"])):
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


def _merge_into(src: Path, dst: Path) -> None:
    """Move ``src``'s entries into the existing folder ``dst``, replacing same-named files, merging folders."""
    for entry in src.iterdir():
        target = dst / entry.name
        if entry.is_dir() and target.is_dir():
            _merge_into(entry, target)
        else:
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(entry, target)


def _publish(tmp: Path, out: Path, kind: str) -> None:
    found = folder_kind(out) if out.exists() else ""
    if not out.exists():
        os.rename(tmp, out)
    elif found == "":
        os.rmdir(out)
        os.rename(tmp, out)
    elif found is not None:  # an earlier headscope output: replaced whole, in one step where possible
        if _exchange(tmp, out):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            old = out.with_name(f".{out.name}.headscope-old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
    else:  # --force into a folder of other files: add ours beside them, and leave it unmarked
        (tmp / MARKER).unlink(missing_ok=True)
        _merge_into(tmp, out)
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def staged_output(out: Path, kind: str, *, force: bool = False) -> Iterator[Path]:
    """A temporary sibling of ``out`` to write a ``kind`` output into, moved into place when the block ends.

    Readers of ``out`` see the earlier output or the new one, never a mix; an error inside the block
    leaves ``out`` as it was. See ``check_output`` for which folders may be replaced.
    """
    check_output(out, kind, force=force)
    out = Path(os.path.abspath(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    _clear_stale(out)
    tmp = out.with_name(f".{out.name}.headscope-tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        tmp.mkdir()
        (tmp / MARKER).write_text(json.dumps({"kind": kind}) + "\n", encoding="utf-8")
    except OSError as exc:
        raise HeadscopeError(f"cannot create output folder {out}: {exc.strerror}; choose another with --out") from None
    try:
        yield tmp
        _publish(tmp, out, kind)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
