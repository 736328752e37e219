"""Checkpoint and resume: a run killed with SIGKILL part way, then `headscope run --resume OUT`, ends with the
scores of an uninterrupted run (syntax, coreference and induction), and a missing or broken checkpoint fails in
one line."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd

from headscope.datasets import load_sample


def _coref_file(path):
    """Documents of four sample sentences each, with one cluster per document (its first word and a word of its
    third sentence)."""
    sents = load_sample().sentences
    with open(path, "w") as f:
        for d in range(0, 48, 4):
            words = [list(s.words) for s in sents[d:d + 4]]
            later = len(words[0]) + len(words[1])
            f.write(json.dumps({"doc_key": f"doc{d}", "sentences": words, "clusters": [[[0, 0], [later, later]]]})
                    + "\n")
    return path


def _run(*args):
    return [sys.executable, "-m", "headscope", "run", *map(str, args)]


def test_a_run_killed_part_way_resumes_to_the_scores_of_one_uninterrupted_run(tmp_path):
    from headscope.run.checkpoints import Checkpoint, checkpoint_path

    coref = _coref_file(tmp_path / "docs.jsonlines")
    common = ["--model", "minilm", "--data", coref, "--tasks", "syntax,coref,induction", "--batch-size", 2,
              "--bootstrap", 100, "--no-figures", "--quiet", "--induction-count", 24]
    # The bundled treebank for syntax: a second --data.
    from headscope.datasets.loading import sample_path

    common += ["--data", sample_path()]
    out = tmp_path / "run"
    proc = subprocess.Popen(_run(*common, "--checkpoint-every", 1, "--out", out), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    path, seen = checkpoint_path(out), None
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if path.is_file():
            try:
                _, jobs = Checkpoint.load(path)
            except Exception:  # noqa: BLE001 - being replaced right now; read it again
                jobs = {}
            if any(j["complete"] for j in jobs.values()) and any(not j["complete"] for j in jobs.values()):
                seen = jobs              # one dataset finished, another part way: kill it there
                break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert seen is not None, "the run ended before a checkpoint part way through was seen"
    assert not out.exists() and path.is_file()                       # killed before the report: only the checkpoint
    done = subprocess.run(_run("--resume", out), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not path.exists()                                         # the run is written: the checkpoint is gone
    one = subprocess.run(_run(*common, "--out", tmp_path / "one"), capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = pd.read_csv(tmp_path / "one" / "scores.csv"), pd.read_csv(out / "scores.csv")
    assert set(a["task"]) >= {"syntax", "coref", "induction"}
    assert len(a) == len(b) and a["n"].equals(b["n"])
    for col in ("score", "ci_low", "ci_high", "q_value"):
        assert np.allclose(a[col], b[col], rtol=1e-6, atol=1e-6, equal_nan=True), col
    run = json.loads((out / "run.json").read_text())
    assert "(resumed" in run["command"]


def test_resume_without_a_checkpoint_or_with_a_broken_one_fails_in_one_line(tmp_path):
    from test_cli import invoke
    from test_run_safety import one_line_error

    from headscope.run.checkpoints import checkpoint_path

    one_line_error(invoke("run", "--resume", tmp_path / "nothing"), "no checkpoint to resume from")
    checkpoint_path(tmp_path / "broken").write_bytes(b"not a zip")
    one_line_error(invoke("run", "--resume", tmp_path / "broken"), "not a readable checkpoint")
    one_line_error(invoke("run", "--shard", "0/2", "--checkpoint-every", 2, "--out", tmp_path / "x"),
                   "--checkpoint-every and --resume are for a whole run", "a shard is restarted whole")
