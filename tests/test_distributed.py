"""Data parallel on torch.distributed: `torchrun --nproc_per_node 2 -m headscope run` (and the same through
`accelerate launch --multi_gpu`) with gloo on CPU gives the scores of one process (counts exactly, sums and intervals to 1e-6), and bad input stops every rank in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import SHARED_DATA

EWT_DEV = SHARED_DATA / "ud_english_ewt" / "en_ewt-ud-dev.conllu"


LAUNCHERS = {
    "torchrun": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"],
    # accelerate's own launcher, as a user starts it on GPUs: --multi_gpu hands the processes to
    # torch.distributed.run with its environment, and without CUDA each rank joins with gloo
    "accelerate": [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                   "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"],
}


def _torchrun(*args, cwd, launcher="torchrun"):
    env = {**os.environ, "HF_HOME": str(cwd / "hf-home")}     # no accelerate config of the user's is read
    return subprocess.run([*LAUNCHERS[launcher], "-m", "headscope", "run", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_two_ranks_with_gloo_give_the_scores_of_one_process(tiny_bert_dir, tmp_path, launcher):
    data = ["--data", EWT_DEV, "--max-sentences", 120] if EWT_DEV.is_file() else []   # else the bundled samples
    common = ["--model", tiny_bert_dir, *data, "--bootstrap", 200, "--no-figures", "--quiet"]
    ranks = _torchrun(*common, "--tasks", "syntax,positional,induction", "--induction-count", 8,
                      "--out", tmp_path / "ranks", cwd=tmp_path, launcher=launcher)
    assert ranks.returncode == 0, ranks.stderr[-3000:]
    one = subprocess.run([sys.executable, "-m", "headscope", "run", *map(str, common), "--tasks",
                          "syntax,positional,induction", "--induction-count", "8", "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = pd.read_csv(tmp_path / "one" / "scores.csv"), pd.read_csv(tmp_path / "ranks" / "scores.csv")
    assert len(a) == len(b) > 0 and a["n"].equals(b["n"])
    for col in ("score", "ci_low", "ci_high", "q_value"):
        assert np.allclose(a[col], b[col], rtol=1e-6, atol=1e-6, equal_nan=True), col
    run = json.loads((tmp_path / "ranks" / "run.json").read_text())
    assert run["distributed"]["world_size"] == 2 and run["distributed"]["backend"] == "gloo"
    assert run["merged"]["shards"] == 2
    assert ranks.stdout.count("scored") == 1                          # rank 0 alone reports


def test_bad_input_on_the_ranks_stops_them_all_with_one_line(tiny_bert_dir, tmp_path):
    bad = tmp_path / "bad.conllu"
    bad.write_text("1\tThe\tthe\tDET\t_\t_\t2\tdet\t_\t_\n2\tcat\tcat\tNOUN\t_\t_\tx\troot\t_\t_\n\n")
    done = _torchrun("--model", tiny_bert_dir, "--data", bad, "--out", tmp_path / "out", cwd=tmp_path)
    assert done.returncode != 0
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("headscope: error:")]
    assert len(lines) == 1 and "bad.conllu:2" in lines[0], done.stderr[-3000:]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag", [["--shard", "0/2"], ["--ablate", "zero"]])
def test_a_launched_run_refuses_shard_and_ablate(tiny_bert_dir, tmp_path, flag):
    done = _torchrun("--model", tiny_bert_dir, *flag, "--out", tmp_path / "out", cwd=tmp_path)
    assert done.returncode != 0 and "each rank is a shard already" in done.stderr


def _kill_all(marker: str) -> None:
    """SIGKILL every process whose command line names ``marker``."""
    import os
    import signal
    from pathlib import Path

    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            pass


def test_ranks_killed_part_way_resume_to_the_scores_of_one_process(tmp_path):
    """Every rank checkpoints its own shard; after the launcher and its ranks are killed part way, the same launch
    with --resume goes on from there and rank 0 writes the scores one process gives."""
    import time

    from headscope.run.checkpoints import Checkpoint, checkpoint_path

    data = ["--data", EWT_DEV, "--max-sentences", 300] if EWT_DEV.is_file() else []     # else the bundled samples
    common = ["--model", "minilm", *data, "--tasks", "syntax,positional,induction", "--batch-size", 2,
              "--induction-count", 48, "--bootstrap", 100, "--no-figures", "--quiet"]
    out = tmp_path / "run"
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
              "headscope", "run"]
    proc = subprocess.Popen(launch + list(map(str, common)) + ["--checkpoint-every", "1", "--out", str(out)],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    paths = [checkpoint_path(out, (r, 2)) for r in range(2)]
    seen = False
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not seen:
        states = []
        for p in paths:
            try:
                states.append(Checkpoint.load(p)[1] if p.is_file() else {})
            except Exception:  # noqa: BLE001 - being replaced right now
                states.append({})
        # every rank has saved some progress, and some rank is part way through a dataset
        seen = all(states) and any(not j["complete"] for st in states for j in st.values())
        time.sleep(0.02)
    assert seen, "the ranks ended before they were seen part way"
    _kill_all(str(out))                  # the launcher and every rank (the ranks run in sessions of their own)
    proc.wait()
    assert not out.exists()
    done = subprocess.run(launch + ["--resume", str(out)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, [ln for ln in done.stderr.splitlines() if "headscope" in ln]
    assert not any(p.exists() for p in paths)
    one = subprocess.run([sys.executable, "-m", "headscope", "run", *map(str, common), "--out",
                          str(tmp_path / "one")], capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = pd.read_csv(tmp_path / "one" / "scores.csv"), pd.read_csv(out / "scores.csv")
    assert len(a) == len(b) and a["n"].equals(b["n"])
    # A head's own positional prediction counts the offsets of its argmax over every word, also where a head
    # that looks only at [CLS] leaves its words' weights equal to within float rounding, which other batches
    # (other padding) round otherwise: such rows agree to a few in ten thousand, the rest exactly.
    own = (a["baseline"] == "own-position").to_numpy()
    for col in ("score", "ci_low", "ci_high"):
        assert np.allclose(a.loc[~own, col], b.loc[~own, col], rtol=1e-6, atol=1e-6, equal_nan=True), col
        assert np.allclose(a.loc[own, col], b.loc[own, col], rtol=0, atol=2e-3, equal_nan=True), col
    wrong = subprocess.run([sys.executable, "-m", "headscope", "run", "--resume", str(out)], capture_output=True,
                           text=True)
    assert wrong.returncode == 2 and "no checkpoint to resume from" in wrong.stderr
