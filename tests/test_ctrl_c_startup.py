"""Ctrl-C before a run has anything to write (issue 32): during Python's imports and while the model loads, a real
``headscope run`` prints one line, no traceback, and exits 130; nothing is written.

The interrupt is timed, not injected: the process runs with ``-X importtime`` (PYTHONPROFILEIMPORTTIME, a
diagnostic that changes nothing else), and the SIGINT goes to its process group, as a terminal's Ctrl-C does, as
soon as the import log shows the phase under test (typer imported: the command line is still importing; torch
imported: the model is loading).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and process groups")

ENTRY = {"script": [str(Path(sys.executable).with_name("headscope"))], "module": [sys.executable, "-m", "headscope"]}
# the import log's line for a finished import of the package named, at any depth
PHASES = {"imports": (re.compile(r"^import time:.*\|\s+typer$", re.M), "starting headscope"),
          "loading": (re.compile(r"^import time:.*\|\s+torch$", re.M), "loading the model and the data")}


def interrupted_run(command: list[str], marker: re.Pattern, tmp_path: Path) -> tuple[int, str, Path]:
    """Run ``command`` (its stderr into a file), send Ctrl-C once ``marker`` is in the import log; (code, stderr
    without the import log, the --out folder)."""
    text = tmp_path / "s.txt"
    text.write_text("the cat sat on the mat\na dog barked\n" * 50, encoding="utf-8")
    out = tmp_path / "out"
    log = tmp_path / "stderr.txt"
    with log.open("wb") as err:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, cwd=tmp_path, start_new_session=True,
                                env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"})   # = python -X importtime
        deadline = time.monotonic() + 120
        while not marker.search(log.read_text(errors="replace")) and proc.poll() is None:
            assert time.monotonic() < deadline, "the run did not get there in 2 minutes"
            time.sleep(0.005)
        assert proc.poll() is None, f"the run ended before {marker.pattern!r}: {log.read_text()[-2000:]}"
        os.killpg(proc.pid, signal.SIGINT)
        proc.communicate(timeout=120)
    stderr = "".join(line for line in log.read_text().splitlines(keepends=True)
                     if not line.startswith("import time:"))
    return proc.returncode, stderr, out


@pytest.mark.parametrize("entry", sorted(ENTRY))
@pytest.mark.parametrize("phase", sorted(PHASES))
def test_ctrl_c_before_anything_is_written_is_one_line_and_130(entry, phase, tiny_bert_dir, tmp_path):
    marker, doing = PHASES[phase]
    command = [*ENTRY[entry], "run", "--model", str(tiny_bert_dir), "--data", "s.txt", "--tasks", "positional",
               "--bootstrap", "0", "-q", "--out", "out"]
    code, stderr, out = interrupted_run(command, marker, tmp_path)
    assert "Traceback" not in stderr, stderr
    assert stderr.strip().splitlines() == [f"headscope: error: interrupted while {doing}; nothing was written"], stderr
    assert code == 130
    assert not out.exists()
