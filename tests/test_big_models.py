"""Big-model settings: --dtype (bfloat16 weights, float32 statistics) and --device-map (accelerate) as users run
them, recorded in run.json, and their bad values refused in one line."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from test_cli import invoke
from test_run_safety import one_line_error


def _run(tmp_path, name, model, *extra):
    out = tmp_path / name
    done = invoke("run", "--model", model, "--tasks", "positional,syntax", "--max-sentences", 16, "--bootstrap", 0,
                  "--no-figures", "--quiet", *extra, "--out", out)
    assert done.exit_code == 0, done.output
    return pd.read_csv(out / "scores.csv"), json.loads((out / "run.json").read_text())


def test_bfloat16_weights_and_a_device_map_run_and_are_recorded(tiny_bert_dir, tmp_path):
    base, base_run = _run(tmp_path, "f32", tiny_bert_dir)
    assert base_run["config"]["weights_dtype"] == "float32"
    half, run = _run(tmp_path, "bf16", tiny_bert_dir, "--dtype", "bfloat16")
    assert run["config"]["dtype"] == "bfloat16" and run["config"]["weights_dtype"] == "bfloat16"
    assert len(half) == len(base) and half["n"].equals(base["n"])
    ratio = base["metric"].isin(["accuracy", "mass"])                 # bounded measures: the weights' rounding only
    gap = (half.loc[ratio, "score"] - base.loc[ratio, "score"]).abs()
    assert gap.median() < 0.02 and gap.max() > 0                     # close, and really computed in bfloat16
    mapped, run = _run(tmp_path, "map", tiny_bert_dir, "--device-map", "auto")
    assert run["config"]["device_map"] == "auto" and run["config"]["devices"] == ["cpu"]
    assert np.allclose(mapped["score"], base["score"], rtol=1e-5, atol=1e-6, equal_nan=True)


def test_bad_dtype_and_device_map_fail_in_one_line(tiny_bert_dir, tmp_path):
    one_line_error(invoke("run", "--model", tiny_bert_dir, "--dtype", "float8", "--out", tmp_path / "x"), "dtype")
    one_line_error(invoke("run", "--model", tiny_bert_dir, "--device-map", "everywhere", "--out", tmp_path / "x"),
                   "device map")
    one_line_error(invoke("run", "--model", tiny_bert_dir, "--device", "cpu", "--device-map", "auto", "--out",
                          tmp_path / "x"), "not both")
    assert not (tmp_path / "x").exists()
