"""The command line's use of the garbage collector (cli/collection.py): off while a run starts, frozen and on
from the first batch, on in the figure workers; the library leaves it alone."""

from __future__ import annotations

import gc
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from headscope.cli.collection import starting


@pytest.fixture
def restore_gc():
    was = gc.isenabled()
    yield
    gc.unfreeze()
    (gc.enable if was else gc.disable)()


def test_starting_turns_collection_off_until_settled(restore_gc):
    gc.enable()
    with starting() as settled:
        assert not gc.isenabled()
        frozen = gc.get_freeze_count()
        settled()
        assert gc.isenabled() and gc.get_freeze_count() > frozen
        settled()                                   # once only
        assert gc.isenabled()


def test_starting_resumes_at_the_end_and_on_error(restore_gc):
    gc.enable()
    with pytest.raises(RuntimeError):
        with starting():
            assert not gc.isenabled()
            raise RuntimeError("bad input")
    assert gc.isenabled()


def test_starting_keeps_collection_off_where_it_was_off(restore_gc):
    gc.disable()
    with starting() as settled:
        settled()
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_a_figure_worker_collects_its_own_garbage(restore_gc):
    from headscope.reports.figures import _worker_start

    previous = signal.getsignal(signal.SIGINT)
    gc.disable()
    try:
        _worker_start()
        assert gc.isenabled()
    finally:
        signal.signal(signal.SIGINT, previous)


PROBE = """
import gc, json, sys
import headscope.run.analyze as pipeline
seen = {}
score_jobs = pipeline._score_jobs
def probe(*args, **kwargs):
    seen["at_start"] = gc.isenabled()
    out = score_jobs(*args, **kwargs)
    seen["after_scoring"] = gc.isenabled()
    seen["frozen"] = gc.get_freeze_count()
    return out
pipeline._score_jobs = probe
sys.argv = ["headscope"] + sys.argv[1:]
from headscope.cli.app import main
try:
    main()
finally:
    json.dump(seen, open(sys.argv[-1] + ".gc.json", "w"))
"""


def test_a_run_starts_with_collection_off_and_scores_with_it_on(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", PROBE, "run", "-n", "40", "--tasks", "syntax,positional", "--out",
                           str(out)], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(Path(str(out) + ".gc.json").read_text())
    assert seen["at_start"] is False                 # imports, model and data: no collection walks them
    assert seen["after_scoring"] is True             # on again from the first batch
    assert seen["frozen"] > 10_000                   # the startup's objects, frozen
    assert (out / "figures" / "role_map.png").is_file()   # the workers, forked with collection off, drew


def test_the_library_leaves_the_collector_alone(restore_gc):
    import headscope

    gc.enable()
    frozen = gc.get_freeze_count()
    headscope.analyze("minilm", ["The cat sat on the mat ."], tasks=["positional"], bootstrap=0)
    assert gc.isenabled() and gc.get_freeze_count() == frozen


def test_starting_and_exiting_can_leave_the_collector_alone(restore_gc):
    from headscope.cli.collection import exiting

    gc.enable()
    frozen = gc.get_freeze_count()
    with starting(enabled=False) as settled:
        assert gc.isenabled()
        settled()
    exiting(enabled=False)
    assert gc.isenabled() and gc.get_freeze_count() == frozen
