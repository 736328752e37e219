"""Input that must never hang, flood or slip through (issue 32): error messages quote at most a few hundred
characters of a field, FIFOs and devices are refused before they are opened, and a root relation that does not
match HEAD 0 is a bad sentence like any other (an error at ``path:line``, or skipped and counted).
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from conftest import invoke, write  # noqa: E402
from headscope.datasets import load_conllu, load_data  # noqa: E402
from headscope.errors import DataError, HeadscopeError  # noqa: E402


def tok(i, form, head, rel) -> str:
    return "\t".join([str(i), form, "_", "X", "_", "_", str(head), rel, "_", "_"])


GOOD = ["# sent_id = good", tok(1, "Dogs", 2, "nsubj"), tok(2, "bark", 0, "root"), ""]
BIG = 4 * 1024 * 1024      # the size of the field in the report: 4 MB


def run_args(model, data, out, *extra):
    return ("run", "--model", model, "--data", data, "--tasks", "syntax", "--bootstrap", "0", "--no-figures", "-q",
            "--out", out, *extra)


def error_line(result) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("headscope: error:")]
    assert result.exit_code == 2 and len(lines) == 1 and "Traceback" not in result.output, result.output[-2000:]
    return lines[0]


# --------------------------------------------------------------------------- quoted fields are cut


# format -> (file name, its text with a 4 MB field, the location the error names)
HUGE_FIELDS = {
    "conllu-head": ("t.conllu", "\n".join(GOOD + ["# sent_id = bad", tok(1, "a", "1" * 10 + "x" * BIG, "root")]),
                    ":6"),
    "conllu-id": ("t.conllu", "\n".join(GOOD + ["# sent_id = bad", tok("x" * BIG, "a", 0, "root")]), ":6"),
    "gap-pronoun": ("t.tsv", "\t".join(["ID", "Text", "Pronoun", "Pronoun-offset", "A", "A-offset", "A-coref", "B",
                                        "B-offset", "B-coref", "URL"]) + "\n" +
                    "\t".join(["x-1", "Ann met Bo . She left .", "y" * BIG, "13", "Ann", "0", "TRUE", "Bo", "8",
                               "FALSE", "u"]), ":2"),
    "conll2012-coref": ("t.conll", "#begin document (d); part 0\nd\t0\t0\tHe\t" + "_\t" * 7 + "(" + "1" * BIG +
                        "z\n\n#end document\n", ":2"),
}


@pytest.mark.parametrize("name", sorted(HUGE_FIELDS))
def test_an_error_quotes_a_huge_field_cut_short_with_its_length(tmp_path, name):
    file, text, where = HUGE_FIELDS[name]
    path = tmp_path / file
    path.write_text(text + "\n", encoding="utf-8")
    with pytest.raises(DataError) as exc:
        load_data(path)
    msg = str(exc.value)
    assert len(msg) < 700, (len(msg), msg[:300])
    assert msg.startswith(f"{path}{where}") and "\n" not in msg, msg
    assert "…" in msg and "characters)" in msg, msg
    assert "of word 1 is not an integer" in msg if name == "conllu-head" else True


def test_the_cli_and_run_json_quote_a_huge_field_cut_short(tmp_path, tiny_bert_dir):
    path = write(tmp_path, GOOD + ["# sent_id = bad", tok(1, "a", "x" * BIG, "root")])
    line = error_line(invoke(*run_args(tiny_bert_dir, path, tmp_path / "out")))
    assert len(line) < 700 and f"({BIG:,} characters)" in line and f"{path}:6 (bad)" in line, line[:300]
    skipped = invoke(*run_args(tiny_bert_dir, path, tmp_path / "skip", "--on-error", "skip"))
    assert skipped.exit_code == 0 and len(skipped.output) < 2000, skipped.output[:300]
    run = json.loads((tmp_path / "skip" / "run.json").read_text())
    assert len(json.dumps(run)) < 100_000
    reasons = run["datasets"][0]["skipped_examples"]
    assert len(reasons) == 1 and len(reasons[0]) < 700 and f"({BIG:,} characters)" in reasons[0]


def test_a_huge_relation_label_is_warned_about_cut_short(tmp_path, caplog):
    path = write(tmp_path, ["# sent_id = s", tok(1, "Dogs", 2, "X" * BIG), tok(2, "bark", 0, "root")])
    with caplog.at_level("WARNING", logger="headscope"):
        load_conllu(path)
    assert caplog.records and all(len(r.getMessage()) < 1200 for r in caplog.records)


def test_any_headscope_error_is_cut_to_a_bounded_line():
    from headscope.errors import MAX_MESSAGE

    msg = str(HeadscopeError("unknown setting '" + "s" * BIG + "'; the settings are a, b"))
    assert len(msg) < 400 and msg.endswith(f"…' ({BIG:,} characters); the settings are a, b"), msg[-200:]
    unquoted = str(HeadscopeError("bad value " + "v" * BIG + "; give 1 or 2"))        # no quotes: the line is cut
    assert len(unquoted) < MAX_MESSAGE + 100 and unquoted.endswith("; give 1 or 2") and "characters cut" in unquoted
    short = "unknown setting 'x'; the settings are a, b"
    assert str(HeadscopeError(short)) == short


# --------------------------------------------------------------------------- FIFOs and devices


def _fifo(tmp_path: Path, name: str) -> Path:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this system")
    path = tmp_path / name
    os.mkfifo(path)
    return path


def _device(tmp_path: Path, name: str) -> Path:
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero on this system")
    path = tmp_path / name
    path.symlink_to("/dev/zero")
    return path


def _within(call, seconds: float = 60):
    """What ``call()`` returns or raises, run in a thread so that a read that blocks fails the test."""
    got: list = []

    def target():
        try:
            got.append(call())
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            got.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert got, f"still reading after {seconds} s: a FIFO or device was opened"
    return got[0]


# Loading each path in a child process whose memory is capped: a loader that reads a device without end fails
# there (MemoryError, or the timeout) instead of filling this machine's memory.
CHILD = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
from headscope.datasets import load_conllu, load_data, load_text
from headscope.datasets.coref import load_coref
from headscope.datasets.gap import load_gap
from headscope.datasets.pairs import load_pairs
out = []
for name in sys.argv[2:]:
    try:
        locals()[name](sys.argv[1])
        out.append("loaded")
    except Exception as exc:
        out.append(type(exc).__name__ + ": " + str(exc)[:300])
print(json.dumps(out))
"""


def _load_in_child(path: Path, *loaders: str) -> list[str]:
    import subprocess

    if sys.platform == "win32":
        pytest.skip("POSIX resource limits")
    done = subprocess.run([sys.executable, "-c", CHILD, str(path), *loaders], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


@pytest.mark.parametrize("name", ["x.conllu", "x.txt", "x.jsonl", "x.conll"])
def test_fifos_are_refused_before_they_are_opened(tmp_path, name):
    path = _fifo(tmp_path, name)
    err = _within(lambda: load_data(path))
    assert isinstance(err, DataError), repr(err)
    msg = str(err)
    assert msg == f"{path}: is a FIFO (named pipe), not a regular file; give a data file (copy the data into a " \
                  f"file first)", msg


@pytest.mark.parametrize("name", ["x.txt", "x.conllu", "x.tsv"])
def test_devices_are_refused_before_they_are_read(tmp_path, name):
    path = _device(tmp_path, name)
    [got] = _load_in_child(path, "load_data")
    assert got.startswith(f"DataError: {path}: is a character device, not a regular file"), got


def test_the_cli_refuses_a_fifo_in_one_line(tmp_path, tiny_bert_dir):
    path = _fifo(tmp_path, "x.conllu")
    line = error_line(_within(lambda: invoke(*run_args(tiny_bert_dir, path, tmp_path / "out"))))
    assert f"{path}: is a FIFO (named pipe), not a regular file" in line
    assert not (tmp_path / "out").exists()


def test_every_loader_refuses_a_device(tmp_path):
    loaders = ("load_conllu", "load_text", "load_gap", "load_pairs", "load_coref")
    for load, got in zip(loaders, _load_in_child(_device(tmp_path, "x.conllu"), *loaders)):
        assert got.startswith("DataError: ") and "is a character device" in got, (load, got)


# --------------------------------------------------------------------------- root relations


ROOT_MISMATCH = {
    "root-on-a-dependent": ([tok(1, "Dogs", 2, "root"), tok(2, "bark", 0, "root")], 1,
                            "word 1 has DEPREL 'root' but HEAD 2; only the word with HEAD 0 is the root"),
    "head-0-not-root": ([tok(1, "Dogs", 2, "nsubj"), tok(2, "bark", 0, "nsubj")], 2,
                        "word 2 has HEAD 0 but DEPREL 'nsubj'"),
}


@pytest.mark.parametrize("name", sorted(ROOT_MISMATCH))
def test_a_root_relation_that_does_not_match_head_0_is_a_bad_sentence(tmp_path, name):
    words, bad, fragment = ROOT_MISMATCH[name]
    path = write(tmp_path, GOOD + ["# sent_id = bad"] + words + [""] + GOOD)
    line = len(GOOD) + 1 + bad
    with pytest.raises(DataError) as exc:
        load_conllu(path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}:{line} (bad): {fragment}"), msg
    assert exc.value.line == line and "\n" not in msg
    skipped = load_conllu(path, on_error="skip")
    assert len(skipped) == 2 and skipped.skipped == 1 and fragment in skipped.skipped_reasons[0]


def test_root_subtypes_are_roots(tmp_path):
    path = write(tmp_path, ["# sent_id = s", tok(1, "Dogs", 2, "nsubj"), tok(2, "bark", 0, "root:emb")])
    assert len(load_conllu(path, keep_subtypes=True)) == 1


def test_the_cli_names_the_root_mismatch_in_one_line(tmp_path, tiny_bert_dir):
    words, bad, fragment = ROOT_MISMATCH["root-on-a-dependent"]
    path = write(tmp_path, GOOD + ["# sent_id = bad"] + words)
    line = error_line(invoke(*run_args(tiny_bert_dir, path, tmp_path / "out")))
    assert line.startswith(f"headscope: error: {path}:{len(GOOD) + 1 + bad} (bad): {fragment}"), line
