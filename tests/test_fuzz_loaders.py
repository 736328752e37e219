"""Seeded fuzzing of every loader: each mutant of a valid file either loads or raises headscope's own
DataError naming ``path:line``, in fail and in skip mode. Never another exception, never a traceback.

A failure prints the format, the seed and the mutation, so ``mutants(fmt, seed)`` rebuilds it.
"""

from __future__ import annotations

import json
import random

import pytest

from headscope.datasets import load_data
from headscope.errors import DataError

HUGE = "7" * 5000

CONLLU = """\
# newdoc id = d1
# sent_id = s1
# text = Don't stop.
1-2\tDon't\t_\t_\t_\t_\t_\t_\t_\t_
1\tDo\tdo\tAUX\tVBP\t_\t3\taux\t_\t_
2\tn't\tnot\tPART\tRB\t_\t3\tadvmod\t_\t_
3\tstop\tstop\tVERB\tVB\tMood=Imp\t0\troot\t_\tSpaceAfter=No
3.1\tgo\tgo\tVERB\tVB\t_\t_\t_\t0:root\t_
4\t.\t.\tPUNCT\t.\t_\t3\tpunct\t_\t_

# sent_id = s2
1\tThe\tthe\tDET\tDT\t_\t2\tdet\t_\t_
2\tcat\tcat\tNOUN\tNN\t_\t3\tnsubj\t_\t_
3\tsat\tsit\tVERB\tVBD\t_\t0\troot\t_\t_
"""

COREFUD = """\
# global.Entity = eid-etype-head-other
# newdoc id = GUM_a
# sent_id = a-1
1\tMary\tMary\tPROPN\tNNP\t_\t2\tnsubj\t_\tEntity=(e1-person-1)
2\tsaw\tsee\tVERB\tVBD\t_\t0\troot\t_\t_
3\tthe\tthe\tDET\tDT\t_\t4\tdet\t_\tEntity=(e2-animal-2
4\tcat\tcat\tNOUN\tNN\t_\t2\tobj\t_\tEntity=e2)

# sent_id = a-2
1\tShe\tshe\tPRON\tPRP\t_\t2\tnsubj\t_\tEntity=(e1-person-1)
2\tfed\tfeed\tVERB\tVBD\t_\t0\troot\t_\t_
3\tit\tit\tPRON\tPRP\t_\t2\tobj\t_\tEntity=(e2-animal-1)
"""

CONLL2012 = """\
#begin document (doc); part 0
doc\t0\t0\tMary\tNNP\t(1)
doc\t0\t1\tsaw\tVBD\t-
doc\t0\t2\tthe\tDT\t(2
doc\t0\t3\tcat\tNN\t2)

doc\t0\t0\tShe\tPRP\t(1)
doc\t0\t1\tsmiled\tVBD\t-
#end document
"""

JSONLINES = "\n".join(json.dumps(d) for d in [
    {"doc_key": "a", "sentences": [["Mary", "saw", "the", "cat"], ["She", "smiled"]],
     "clusters": [[[0, 0], [4, 4]], [[2, 3]]]},
    {"doc_key": "b", "sentences": [["It", "rained"]], "clusters": []},
]) + "\n"

GAP = "\n".join("\t".join(r) for r in [
    ("ID", "Text", "Pronoun", "Pronoun-offset", "A", "A-offset", "A-coref", "B", "B-offset", "B-coref", "URL"),
    ("r1", "Ann met Bea and she smiled.", "she", "16", "Ann", "0", "TRUE", "Bea", "8", "FALSE", "http://x"),
    ("r2", "Tom saw Jim before he left.", "he", "19", "Tom", "0", "FALSE", "Jim", "8", "TRUE", "http://y"),
]) + "\n"

PAIRS = "\n".join(json.dumps(d) for d in [
    {"id": "p1", "a": "The cup fell off the table because it was round .",
     "b": "The cup fell off the table because it was flat .", "pronoun": 7, "candidates": [1, 5], "answers": [0, 1]},
    {"id": "p2", "a": "The man lifted the boy because he was strong .",
     "b": "The man lifted the boy because he was light .", "pronoun": 6, "candidates": [1, 4], "answers": [0, 1]},
]) + "\n"

TEXT = "The cat sat on the mat .\nA dog barked .\nBirds sing in the morning .\n"
JSONL = "\n".join(json.dumps(d) for d in [{"id": "a", "words": ["The", "cat"]}, {"text": "A dog barked ."}]) + "\n"

# format -> (file name, valid content)
BASES = {
    "conllu": ("t.conllu", CONLLU), "corefud": ("gum.conllu", COREFUD), "conll2012": ("t.v4_gold_conll", CONLL2012),
    "jsonlines": ("t.jsonlines", JSONLINES), "gap": ("t.tsv", GAP), "pairs": ("p.jsonl", PAIRS),
    "text": ("t.txt", TEXT), "jsonl": ("s.jsonl", JSONL),
}
FIELDS = ["", " ", "-1", "-", "_", "0", "00", HUGE, "-" + HUGE, "1-1", "2-1", "1.1", "0.0", "\u202eevil", "日本語",
          "\x00", "\x1b[2J", "é", "(", ")", "(1", "1)", "((1)", "|", "Entity=(", "Entity=e9)", "ROOT", " punct",
          "Punct", "TRUE", "maybe", "9" * 19, "1e9", "NaN", "[]", "{}", "\t", '"', "'", "\\", "#", "#begin document (x)",
          "#end document", "٣"]
JSON_VALUES = [None, True, -1, 0, 10**6, 1.5, "", " ", "x", [], {}, [[0, 1]], [["a"]], [[[0, 99]]], [1, "a"],
               "\u202e", "\x00", [[0, 0], [0, 0]], "日本"]
N_MUTANTS = 400


def _mutate_fields(lines: list[str], rng: random.Random) -> tuple[list[str], str]:
    i = rng.randrange(len(lines))
    sep = "\t" if "\t" in lines[i] else " "
    cols = lines[i].split(sep)
    j = rng.randrange(len(cols))
    value = rng.choice(FIELDS)
    cols[j] = value
    lines = lines[:i] + [sep.join(cols)] + lines[i + 1:]
    return lines, f"line {i + 1} field {j} := {value[:20]!r}"


def _mutate_json(lines: list[str], rng: random.Random) -> tuple[list[str], str]:
    i = rng.randrange(len(lines))
    try:
        obj = json.loads(lines[i])
    except ValueError:
        return lines, "no-op"
    if not isinstance(obj, dict) or not obj:
        return lines, "no-op"
    key = rng.choice(sorted(obj))
    value = rng.choice(JSON_VALUES + ["HUGE"])
    obj[key] = 0 if value == "HUGE" else value
    text = json.dumps(obj)
    if value == "HUGE":
        text = text.replace(f'"{key}": 0', f'"{key}": {HUGE}', 1)
    return lines[:i] + [text] + lines[i + 1:], f"line {i + 1} {key} := {str(value)[:20]!r}"


def mutants(fmt: str, seed: int) -> tuple[bytes, str]:
    """One seeded mutant of the base file of ``fmt``: (bytes, what was done)."""
    rng = random.Random(f"{fmt}-{seed}")
    lines = BASES[fmt][1].rstrip("\n").split("\n")
    done = []
    for _ in range(rng.choice((1, 1, 2, 3))):
        kind = rng.choice(["delete", "duplicate", "cut", "field", "field", "json", "swap", "blank"])
        i = rng.randrange(len(lines))
        if kind == "delete" and len(lines) > 1:
            lines = lines[:i] + lines[i + 1:]
        elif kind == "duplicate":
            lines = lines[:i] + [lines[i]] + lines[i:]
        elif kind == "cut":
            lines[i] = lines[i][:rng.randrange(len(lines[i]) + 1)]
        elif kind == "swap":
            k = rng.randrange(len(lines))
            lines[i], lines[k] = lines[k], lines[i]
        elif kind == "blank":
            lines = lines[:i] + [rng.choice(["", " ", "\t"])] + lines[i:]
        elif kind == "json":
            lines, what = _mutate_json(lines, rng)
            kind = f"json {what}"
        else:
            lines, what = _mutate_fields(lines, rng)
            kind = f"field {what}"
        done.append(kind if not kind.startswith(("delete", "duplicate", "cut", "swap", "blank")) else f"{kind} {i + 1}")
    text = "\n".join(lines) + rng.choice(["\n", "\n", "", "\n\n"])
    data = text.encode("utf-8")
    encoding = rng.choice(["utf-8"] * 6 + ["latin-1", "utf-16", "bom", "nul", "cr", "crlf", "bare-cr", "truncate"])
    if encoding == "latin-1":
        data = text.replace("Mary", "Märy").encode("latin-1", errors="replace")
    elif encoding == "utf-16":
        data = text.encode("utf-16")
    elif encoding == "bom":
        data = b"\xef\xbb\xbf" + data
    elif encoding == "nul":
        k = rng.randrange(len(data) + 1)
        data = data[:k] + b"\x00" + data[k:]
    elif encoding == "cr":
        data = data.replace(b"\n", b"\r")
    elif encoding == "crlf":
        data = data.replace(b"\n", b"\r\n")
    elif encoding == "bare-cr":
        k = rng.randrange(len(data) + 1)
        data = data[:k] + b"\r" + data[k:]
    elif encoding == "truncate":
        data = data[:rng.randrange(len(data) + 1)]
    done.append(encoding)
    return data, "; ".join(done)


@pytest.mark.parametrize("fmt", sorted(BASES))
def test_every_mutant_loads_or_names_its_line(tmp_path, fmt):
    name, base = BASES[fmt]
    path = tmp_path / name
    path.write_text(base, encoding="utf-8")
    load_data(path)  # the base itself is valid
    outcomes = {"loaded": 0, "refused": 0}
    for seed in range(N_MUTANTS):
        data, what = mutants(fmt, seed)
        path.write_bytes(data)
        for on_error in ("fail", "skip"):
            try:
                load_data(path, on_error=on_error)
                outcomes["loaded"] += 1
            except DataError as err:
                msg = str(err)
                assert err.line is not None and msg.startswith(f"{path}:{err.line}"), (fmt, seed, what, msg)
                assert "\n" not in msg and "\r" not in msg and "\x00" not in msg, (fmt, seed, what, msg)
                outcomes["refused"] += 1
            except Exception as exc:  # noqa: BLE001 - this is what the test is for
                pytest.fail(f"{fmt} seed {seed} ({what}), on_error={on_error}: {type(exc).__name__}: {exc!s:.300}")
    assert outcomes["loaded"] and outcomes["refused"], outcomes  # the mutants exercise both outcomes
