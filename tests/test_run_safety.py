"""Runs that never lose or mix results, and models that run no code the user did not allow (issue 11).

Output folders are written whole (a temporary sibling moved into place), foreign folders are refused,
Ctrl-C at any moment after scoring still writes the run, and partial runs are not the shortest inputs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from headscope.errors import HeadscopeError, ModelError

sys.path.insert(0, str(Path(__file__).parent))
from conftest import invoke, run_args  # noqa: E402


def one_line_error(result, *fragments) -> str:
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("headscope: error:")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]


# --------------------------------------------------------------------------- output folders


def test_foreign_folder_is_refused_unless_forced(tiny_bert_dir, text_file, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes\n")
    (out / "scores.csv").write_text("precious\n")
    result = invoke(*run_args(tiny_bert_dir, text_file, out, "--no-figures"))
    one_line_error(result, "already holds files that headscope did not write", "--force")
    assert (out / "scores.csv").read_text() == "precious\n"          # refused before the analysis
    forced = invoke(*run_args(tiny_bert_dir, text_file, out, "--no-figures", "--force"))
    assert forced.exit_code == 0, forced.output
    assert (out / "notes.txt").read_text() == "my notes\n"           # other files left as they are
    assert (out / "scores.csv").read_text().startswith("model,")     # ours replaced
    from headscope.reports.folder import MARKER, folder_kind

    assert not (out / MARKER).exists()                               # still not a headscope folder
    assert folder_kind(out) is None


def test_earlier_run_is_replaced_whole(tiny_bert_dir, text_file, tmp_path):
    out = tmp_path / "out"
    first = invoke(*run_args(tiny_bert_dir, text_file, out))
    assert first.exit_code == 0, first.output
    figures_before = {p.name for p in (out / "figures").iterdir()}
    assert figures_before
    second = invoke(*run_args(tiny_bert_dir, text_file, out, "--no-figures"))
    assert second.exit_code == 0, second.output
    assert not (out / "figures").exists()                            # no stale figures of the earlier run
    run = json.loads((out / "run.json").read_text())
    assert not [f for f in run["files"] if f.startswith("figures/")]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.headscope-")]


def test_other_kind_of_headscope_output_needs_force(tiny_bert_dir, text_file, tmp_path):
    out = tmp_path / "out"
    assert invoke(*run_args(tiny_bert_dir, text_file, out, "--no-figures")).exit_code == 0
    from headscope.reports.folder import check_output, folder_kind

    assert folder_kind(out) == "run"
    with pytest.raises(HeadscopeError, match="holds a headscope run output, not a compare output"):
        check_output(out, "compare")
    for kind in ("explain", "ablation"):                 # "an explain", never "a explain"
        with pytest.raises(HeadscopeError, match=f"holds a headscope run output, not an {kind} output;"):
            check_output(out, kind)
    check_output(out, "compare", force=True)
    check_output(out, "run")


def test_failed_write_leaves_the_earlier_run_untouched(tiny_bert_dir, text_file, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert invoke(*run_args(tiny_bert_dir, text_file, out, "--no-figures")).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    import headscope.reports.html as html

    def broken(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(html, "render_html", broken)
    with pytest.raises(OSError):
        from headscope import analyze
        from headscope.reports import write_report

        write_report(analyze(str(tiny_bert_dir), text_file, tasks="positional", bootstrap=0), out, figures=False)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert not [p for p in tmp_path.iterdir() if ".headscope-tmp-" in p.name]


def test_a_killed_write_is_invisible_and_cleaned_up(tiny_bert_dir, text_file, tmp_path):
    """SIGKILL while the report is written: the folder is the earlier run, whole; the next run removes the debris."""
    out = tmp_path / "out"
    assert invoke(*run_args(tiny_bert_dir, text_file, out, "--no-figures")).exit_code == 0
    before = (out / "run.json").read_text()
    script = textwrap.dedent(f"""
        import os, signal
        import headscope.reports.writer as writer
        real = writer.write_csv
        def write_then_die(table, path):
            real(table, path)
            if path.name == "roles.csv":
                os.kill(os.getpid(), signal.SIGKILL)   # after scores.csv, before run.json
        writer.write_csv = write_then_die
        from headscope.cli.app import app
        app(["run", "--model", {str(tiny_bert_dir)!r}, "--data", {str(text_file)!r}, "--tasks", "positional",
             "--bootstrap", "0", "-q", "--no-figures", "--out", {str(out)!r}])
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert (out / "run.json").read_text() == before                 # the old run, not a mix
    debris = [p for p in tmp_path.iterdir() if p.name.startswith(".out.headscope-tmp-")]
    assert len(debris) == 1 and (debris[0] / "scores.csv").is_file()
    assert invoke(*run_args(tiny_bert_dir, text_file, out, "--no-figures")).exit_code == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.headscope-")]


def test_staged_output_into_empty_and_new_folders(tmp_path):
    from headscope.reports.folder import folder_kind, staged_output

    empty = tmp_path / "empty"
    empty.mkdir()
    for target in (empty, tmp_path / "new" / "deep"):
        with staged_output(target, "explain") as tmp:
            assert tmp.parent == target.parent and not target.exists() or target == empty
            (tmp / "explain.md").write_text("x")
        assert (target / "explain.md").read_text() == "x" and folder_kind(target) == "explain"


# --------------------------------------------------------------------------- Ctrl-C at every moment


def _interrupt_in(monkeypatch, module, name):
    import importlib

    mod = importlib.import_module(module)
    monkeypatch.setattr(mod, name, lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))


def test_ctrl_c_while_drawing_figures_still_writes_the_run(tiny_bert_dir, text_file, tmp_path, monkeypatch):
    import headscope.reports.figures as figures

    real = figures.role_map
    monkeypatch.setattr(figures, "role_map", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    out = tmp_path / "out"
    result = invoke(*run_args(tiny_bert_dir, text_file, out))
    assert result.exit_code == 130 and "Traceback" not in result.output, result.output
    assert "run was interrupted while drawing figures" in result.stderr
    run = json.loads((out / "run.json").read_text())
    assert run["complete"] is False and "drawing figures" in run["interrupted"]
    for name in ("scores.csv", "roles.csv", "report.md", "report.html", "report.json"):
        assert (out / name).is_file(), name
    listed = {f.split("/", 1)[1] for f in run["files"] if f.startswith("figures/")}
    assert listed and listed == {p.name for p in (out / "figures").iterdir()}   # heatmaps drawn before the stop
    assert "Run interrupted" in (out / "report.md").read_text()
    assert real is not None


def test_ctrl_c_while_computing_intervals_still_writes_the_run(tiny_bert_dir, text_file, tmp_path, monkeypatch):
    from headscope.analysis import positional

    monkeypatch.setattr(positional.PositionalScorer, "intervals",
                        lambda self, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    out = tmp_path / "out"
    result = invoke("run", "--model", tiny_bert_dir, "--data", text_file, "--tasks", "positional", "-q",
                    "--no-figures", "--out", out)
    assert result.exit_code == 130, result.output
    run = json.loads((out / "run.json").read_text())
    assert run["complete"] is False and "interval" in run["interrupted"]
    assert run["datasets"][0]["scored"] == 3
    import pandas as pd

    scores = pd.read_csv(out / "scores.csv")
    assert len(scores) and scores["ci_low"].isna().all()


def test_sigint_while_writing_tables_is_deferred(tiny_bert_dir, text_file, tmp_path, monkeypatch):
    import headscope.reports.writer as writer

    real = writer.write_csv

    def write_and_signal(table, path):
        if path.name == "scores.csv":
            os.kill(os.getpid(), signal.SIGINT)   # a real Ctrl-C, delivered in the middle of the writing
        real(table, path)

    monkeypatch.setattr(writer, "write_csv", write_and_signal)
    out = tmp_path / "out"
    result = invoke(*run_args(tiny_bert_dir, text_file, out))
    assert result.exit_code == 130, result.output
    run = json.loads((out / "run.json").read_text())
    assert run["complete"] is False and "writing the tables" in run["interrupted"]
    assert (out / "scores.csv").is_file() and (out / "report.html").is_file() and not (out / "figures").exists()


def test_ctrl_c_before_any_scoring_says_nothing_was_written(tiny_bert_dir, text_file, tmp_path, monkeypatch):
    _interrupt_in(monkeypatch, "headscope.models.loading", "load_model")
    out = tmp_path / "out"
    result = invoke(*run_args(tiny_bert_dir, text_file, out))
    assert result.exit_code == 130 and "nothing was written" in result.stderr
    assert not out.exists()


def test_batches_run_in_a_seeded_random_order():
    from headscope.capture.alignment import EncodedSentence
    from headscope.capture.session import iter_batches

    encoded = [EncodedSentence(i, (0,) * (1 + i % 40), (0,) * (1 + i % 40), (False,) * (1 + i % 40), 1)
               for i in range(400)]
    batches = list(iter_batches(encoded, 8))
    assert sorted(e.index for b in batches for e in b) == list(range(400))          # each input once
    assert all(len({len(e) for e in b}) <= 2 for b in batches)                      # still length-sorted inside
    firsts = [max(len(e) for e in b) for b in batches[:10]]
    assert firsts != sorted(firsts) and max(firsts) > 20                            # a prefix is not the shortest
    assert [[e.index for e in b] for b in iter_batches(encoded, 8)] == [[e.index for e in b] for b in batches]


# --------------------------------------------------------------------------- models


def _model_folder(tmp_path: Path, name: str) -> Path:
    from transformers import BertConfig, BertModel

    from headscope.models.loading import resolve_alias

    folder = tmp_path / name
    model = BertModel(BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=32))
    model.save_pretrained(folder)
    src = resolve_alias("minilm")
    for f in src.iterdir():
        if f.name.startswith("tokenizer") or f.name in ("vocab.txt", "special_tokens_map.json"):
            (folder / f.name).write_bytes(f.read_bytes())
    return folder


def test_model_code_runs_only_when_trusted(tmp_path, capfd):
    from headscope.models.loading import load_model

    folder = _model_folder(tmp_path, "remote")
    flag = tmp_path / "code-ran"
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="custombert", auto_map={"AutoConfig": "custom.CustomConfig",
                                                       "AutoModel": "custom.CustomModel"})
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "custom.py").write_text(textwrap.dedent(f"""
        open({str(flag)!r}, "w").write("ran")
        from transformers import BertConfig, BertModel
        class CustomConfig(BertConfig):
            model_type = "custombert"
        class CustomModel(BertModel):
            config_class = CustomConfig
    """))
    with pytest.raises(ModelError, match="--trust-remote-code") as exc:
        load_model(folder)
    assert "\n" not in str(exc.value) and not flag.exists()
    assert "[y/N]" not in capfd.readouterr().out                       # no interactive prompt on stdout
    result = invoke("run", "--model", folder, "-q", "--out", tmp_path / "out")
    one_line_error(result, "brings its own Python code", "--trust-remote-code")
    assert not flag.exists()
    loaded = load_model(folder, trust_remote_code=True)
    assert flag.exists() and loaded.info.num_layers == 1


def test_pickled_weights_that_torch_refuses_are_one_line(tmp_path):
    import torch

    from headscope.models.loading import load_model

    folder = _model_folder(tmp_path, "pickled")
    from safetensors.torch import load_file

    state = dict(load_file(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    flag = tmp_path / "unpickled"
    state["payload"] = _Payload(str(flag))
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(ModelError) as exc:
        load_model(folder)
    msg = str(exc.value)
    assert "\n" not in msg and "pickle" in msg and "weights_only" in msg and "safetensors" in msg
    assert not flag.exists()
    one_line_error(invoke("run", "--model", folder, "-q", "--out", tmp_path / "out"), "pickle")


class _Payload:
    """Unpickling this writes a file: what a malicious checkpoint would do."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.write_text, (Path(self.path), "ran"))
