"""Publishing a finished run never loses it, and one --out has one writer at a time (issue 32).

Where the finished output cannot be moved into place (an immutable folder, a file where a folder goes), it is
kept whole beside --out and the one-line error says where; a second run into the same --out while the first is
running is refused in one line, and a lock left by a killed run does not block.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import invoke, run_args  # noqa: E402


def error_line(result) -> str:
    """The run's one error line (exit code 2, no traceback)."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("headscope: error:")]
    assert result.exit_code == 2 and len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def kept_folder(line: str, out: Path) -> Path:
    """The folder the error line names as holding the finished run."""
    kept = [p for p in out.parent.iterdir() if p.name.startswith(f"{out.name}.unpublished-")]
    assert len(kept) == 1, sorted(p.name for p in out.parent.iterdir())
    assert f"kept whole in {kept[0]}" in line, line
    return kept[0]


def test_a_file_where_the_run_puts_a_folder_keeps_the_finished_run(tiny_bert_dir, text_file, tmp_path):
    """--force into a folder of other files, one of them a file named ``figures``: the run's figures/ cannot go
    there. The user's files are untouched and the whole run (figures included) is kept, named in one line."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "figures").write_text("my figures list\n")
    (out / "notes.txt").write_text("my notes\n")
    line = error_line(invoke(*run_args(tiny_bert_dir, text_file, out, "--force")))
    assert "figures is a file where the output has a folder" in line
    kept = kept_folder(line, out)
    assert (out / "figures").read_text() == "my figures list\n" and (out / "notes.txt").read_text() == "my notes\n"
    assert sorted(p.name for p in out.iterdir()) == ["figures", "notes.txt"]    # nothing half-copied
    run = json.loads((kept / "run.json").read_text())
    assert run["complete"] is True
    for name in run["files"]:
        assert (kept / name).is_file(), name
    assert any(f.startswith("figures/") for f in run["files"])
    # the next run (into another folder beside it) does not clear the kept run away
    assert invoke(*run_args(tiny_bert_dir, text_file, tmp_path / "mine2", "--no-figures")).exit_code == 0
    assert (kept / "run.json").is_file()


def _immutable(path: Path, on: bool) -> bool:
    if shutil.which("chattr") is None:
        return False
    return subprocess.run(["chattr", "+i" if on else "-i", str(path)], capture_output=True).returncode == 0


def test_an_immutable_out_folder_keeps_the_finished_run(tiny_bert_dir, text_file, tmp_path):
    """An earlier run in an immutable folder (chattr +i: it cannot be renamed or replaced, even by root)."""
    out = tmp_path / "out"
    assert invoke(*run_args(tiny_bert_dir, text_file, out, "--no-figures")).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    if not _immutable(out, True):
        pytest.skip("chattr +i is not available here (needs CAP_LINUX_IMMUTABLE and a file system with it)")
    try:
        line = error_line(invoke(*run_args(tiny_bert_dir, text_file, out, "--no-figures", "--seed", "7")))
    finally:
        _immutable(out, False)
    assert f"cannot move the finished run into {out}" in line
    kept = kept_folder(line, out)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert json.loads((kept / "run.json").read_text())["config"]["seed"] == 7
    assert not [p for p in tmp_path.iterdir() if ".headscope-tmp-" in p.name]
    # with the folder writable again, the kept run can be moved into place by hand, and it is a headscope run
    from headscope.reports.folder import folder_kind

    assert folder_kind(kept) == "run"


def test_library_write_into_an_out_that_became_a_file_keeps_the_run(tmp_path):
    from headscope.errors import HeadscopeError
    from headscope.reports.folder import staged_output

    out = tmp_path / "out"
    with pytest.raises(HeadscopeError, match=r"out is now a file\); it is kept whole in .*out\.unpublished-") as exc:
        with staged_output(out, "explain") as tmp:
            (tmp / "explain.md").write_text("finished\n")
            out.write_text("someone else's file\n")
    assert "\n" not in str(exc.value)
    kept = kept_folder(str(exc.value), out)
    assert (kept / "explain.md").read_text() == "finished\n" and out.read_text() == "someone else's file\n"


# --------------------------------------------------------------------------- one writer per --out


def test_a_second_run_into_the_same_out_is_refused(tiny_bert_dir, tmp_path):
    """Two real runs at once into one folder: the second is refused in one line, the first finishes whole; a lock
    left by a killed run does not block the next."""
    from headscope.reports.folder import lock_path

    data = tmp_path / "many.txt"
    data.write_text("the cat sat on the mat and the dog barked at it\n" * 400, encoding="utf-8")
    out = tmp_path / "out"
    first = subprocess.Popen([sys.executable, "-m", "headscope", *run_args(tiny_bert_dir, data, out, "--no-figures")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    lock = lock_path(out)
    deadline = time.monotonic() + 120
    while not lock.exists() and first.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert first.poll() is None, first.communicate()
    second = invoke(*run_args(tiny_bert_dir, data, out, "--no-figures", "--seed", "7"))
    line = error_line(second)
    assert f"output folder {out} is being written by another headscope process (pid {first.pid})" in line
    assert "--out" in line
    stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    assert json.loads((out / "run.json").read_text())["config"]["seed"] != 7      # the first run's, whole
    assert not lock.exists()                                                    # released with the run

    # a run killed while it holds the lock: its lock file stays, and does not block
    script = ("import os, signal, sys\n"
              "from headscope.reports.folder import output_lock\n"
              "with output_lock(sys.argv[1]):\n"
              "    print('locked', flush=True)\n"
              "    os.kill(os.getpid(), signal.SIGKILL)\n")
    killed = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL and killed.stdout == "locked\n", killed.stderr
    assert lock.exists()
    again = invoke(*run_args(tiny_bert_dir, data, out, "--no-figures", "-n", "5", "--seed", "7"))
    assert again.exit_code == 0, again.output
    assert json.loads((out / "run.json").read_text())["config"]["seed"] == 7


def test_the_lock_is_one_per_process_and_per_folder(tmp_path):
    from headscope.reports.folder import lock_path, output_lock, staged_output

    out = tmp_path / "out"
    with output_lock(out):
        with staged_output(out, "explain") as tmp:         # the same process again: one lock
            (tmp / "explain.md").write_text("x")
        with output_lock(tmp_path / "other"):              # another folder: its own lock
            pass
        holder = subprocess.run([sys.executable, "-c", "import sys\nfrom headscope.reports.folder import "
                                 "output_lock\nwith output_lock(sys.argv[1]):\n    pass\n", str(out)],
                                capture_output=True, text=True, timeout=120)
        assert holder.returncode == 1 and f"being written by another headscope process (pid {os.getpid()})" \
            in holder.stderr
        assert lock_path(out).exists()
    assert not lock_path(out).exists() and (out / "explain.md").read_text() == "x"
