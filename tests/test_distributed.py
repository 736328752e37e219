"""Data parallel on torch.distributed: `torchrun --nproc_per_node 2 -m headscope run` with gloo on CPU gives the
scores of one process (counts exactly, sums and intervals to 1e-6), and bad input stops every rank in one line."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import SHARED_DATA

EWT_DEV = SHARED_DATA / "ud_english_ewt" / "en_ewt-ud-dev.conllu"


def _torchrun(*args, cwd):
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "headscope", "run", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def test_two_ranks_with_gloo_give_the_scores_of_one_process(tiny_bert_dir, tmp_path):
    data = ["--data", EWT_DEV, "--max-sentences", 120] if EWT_DEV.is_file() else []   # else the bundled samples
    common = ["--model", tiny_bert_dir, *data, "--bootstrap", 200, "--no-figures", "--quiet"]
    ranks = _torchrun(*common, "--tasks", "syntax,positional,induction", "--induction-count", 8,
                      "--out", tmp_path / "ranks", cwd=tmp_path)
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
