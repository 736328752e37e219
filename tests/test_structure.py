"""The package's shape: its import graph (no cycles, no private names across modules) and the task registry
(every declared measure is one that its scorer produces; the CLI and the library name every task)."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import SHARED_DATA  # noqa: E402

import headscope  # noqa: E402
from headscope.tasks import TASKS, measures  # noqa: E402

PACKAGE = Path(headscope.__file__).parent


def import_graph() -> tuple[dict[str, set[str]], list[tuple[str, str, str]]]:
    """``module -> modules it imports`` over every import in the package (inside functions too), and the
    ``(module, from module, name)`` of each imported name that starts with one underscore."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("headscope",) + path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph: dict[str, set[str]] = {m: set() for m in modules}
    private = []
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                if not source.startswith("headscope"):
                    continue
                for alias in node.names:
                    target = f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source
                    if target in modules and target != name:
                        graph[name].add(target)
                    if target == source and alias.name.startswith("_") and not alias.name.startswith("__"):
                        private.append((name, source, alias.name))
            elif isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names if a.name in modules and a.name != name}
    return graph, private


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_has_no_cycles_and_no_private_names_across_modules():
    graph, private = import_graph()
    assert len(graph) > 40 and graph["headscope.run.analyze"]   # the walk found the package and its imports
    assert cycles(graph) == []
    assert private == []


def test_the_cycle_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_every_module_says_what_it_owns_in_its_first_line():
    for path in PACKAGE.rglob("*.py"):
        doc = ast.get_docstring(ast.parse(path.read_text()))
        assert doc and doc.strip().splitlines()[0], f"{path} has no docstring"


def rendered_run_help() -> str:
    """``headscope run --help`` as a terminal 300 columns wide shows it, the table's borders and line breaks
    turned into single spaces."""
    from typer.testing import CliRunner

    from headscope.cli.app import app

    done = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "300", "TERMINAL_WIDTH": "300"})
    assert done.exit_code == 0, done.output
    return " ".join(done.output.replace("│", " ").split())


def named_tasks(text: str) -> tuple[list[str], list[str], list[str]]:
    """The task names that the --tasks help lists: every task, the defaults, the automatic ones."""
    found = re.search(r"Comma-separated: (.*?) \(see `headscope tasks`\)\. Default: without --data, (.*?) on the "
                      r"bundled samples; with --data, those of (.*?) that the data supports", text)
    assert found, text
    return tuple(part.split(", ") for part in found.groups())


def test_the_cli_help_and_the_analyze_docstring_name_every_task():
    """What the user reads (the rendered ``run --help``, ``analyze``'s docstring) lists the registry's tasks."""
    from headscope.run.analyze import analyze

    every, default, auto = named_tasks(rendered_run_help())
    assert every == list(TASKS)
    assert default == [t.name for t in TASKS.values() if t.default] == ["syntax", "positional", "pairs"]
    assert auto == [t.name for t in TASKS.values() if t.auto]
    doc = " ".join(analyze.__doc__.split())
    listed = re.search(r"any of (.*?) \(``headscope\.tasks\.TASKS``\)", doc)
    assert listed and re.findall(r"``(\w+)``", listed.group(1)) == list(TASKS)


def test_a_task_added_to_the_registry_is_named_by_the_cli_and_the_library(monkeypatch):
    """A new entry in ``TASKS`` is all it takes: ``headscope tasks`` lists it at once, and the help texts, which
    are made when the CLI and ``analyze`` are imported, list it when it is registered before that."""
    import subprocess

    from typer.testing import CliRunner

    from headscope.cli.app import app
    from headscope.tasks import Task

    added = Task("zz_added", "sentences", "a task added at test time", lambda b: None, auto=True)
    monkeypatch.setitem(TASKS, added.name, added)
    listed = CliRunner().invoke(app, ["tasks"])
    assert listed.exit_code == 0 and "zz_added    a task added at test time" in listed.output
    code = (
        "import re, sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from headscope.tasks import TASKS, Task\n"
        "TASKS['zz_added'] = Task('zz_added', 'sentences', 'a task added at test time', lambda b: None, auto=True)\n"
        "from test_structure import named_tasks, rendered_run_help\n"
        "from headscope.run.analyze import analyze\n"
        "every, default, auto = named_tasks(rendered_run_help())\n"
        "assert every[-1] == auto[-1] == 'zz_added' and 'zz_added' not in default, (every, default, auto)\n"
        "assert '``zz_added``' in analyze.__doc__\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_figure_stems_are_unique_and_measures_name_their_own_task():
    stems = [m.stem for m in measures(where="heatmap")]
    assert len(stems) == len(set(stems)) and all(stems)
    for task in TASKS.values():
        assert all(m.task == task.name for m in task.measures)
    with pytest.raises(ValueError, match="unknown data kind"):
        from headscope.tasks import Task

        Task("x", "nowhere", "", lambda b: None)


def _declared(scores, task: str) -> list:
    """Registered measures of ``task`` (with a named relation) that the score table lacks."""
    heads = scores[scores["baseline"].isna() & (scores["task"] == task)]
    missing = []
    for m in measures(task=task):
        rows = heads[heads["metric"] == m.metric]
        if m.relation is not None:
            rows = rows[rows["relation"] == m.relation]
        if m.direction is not None:
            rows = rows[rows["direction"] == m.direction]
        if rows.empty:
            missing.append(m)
    return missing


def test_every_declared_measure_is_produced_by_its_scorer(tiny_bert_loaded):
    result = headscope.analyze(tiny_bert_loaded, None, tasks="syntax,tree,positional,pairs,induction",
                               max_sentences=12, bootstrap=0, n_examples=0, induction_count=4, induction_length=8)
    for task in ("syntax", "tree", "positional", "pairs", "induction"):
        assert _declared(result.scores, task) == [], task


@pytest.mark.skipif(not (SHARED_DATA / "litbank_coref_sample").is_dir()
                    or not (SHARED_DATA / "gap_coreference" / "gap-development.tsv").is_file(),
                    reason="needs ../shared/data (LitBank and GAP)")
def test_coreference_measures_are_produced_by_their_scorers(tiny_bert_loaded):
    data = [SHARED_DATA / "litbank_coref_sample", SHARED_DATA / "gap_coreference" / "gap-development.tsv"]
    result = headscope.analyze(tiny_bert_loaded, data, tasks="coref,gap", max_sentences=2, bootstrap=0,
                               n_examples=0)
    assert _declared(result.scores, "coref") == [] and _declared(result.scores, "gap") == []


def test_every_format_declares_a_loader_that_takes_its_options():
    import importlib
    import inspect

    from headscope.datasets.formats import FORMATS

    for f in FORMATS.values():
        module, _, function = f.loader.partition(":")
        load = getattr(importlib.import_module(f"headscope.datasets.{module}"), function)
        params = inspect.signature(load).parameters
        assert {"on_error", "limit", *f.options} <= set(params), f.name
        assert f.kinds and f.endings, f.name


def test_shared_endings_are_told_apart_by_sniffing(tmp_path):
    from headscope.datasets.formats import detect_format

    cases = {"a.jsonl": ('{"doc_key": "d", "sentences": [["A"]], "clusters": []}', "jsonlines"),
             "b.jsonl": ('{"id": 1, "pronoun": "it", "candidates": ["x", "y"]}', "pairs"),
             "c.jsonl": ('{"words": ["A", "b"]}', "jsonl"),
             "d.conllu": ("1\tA\ta\tX\t_\t_\t0\troot\t_\tEntity=(e1)\n", "corefud"),
             "e.conllu": ("1\tA\ta\tX\t_\t_\t0\troot\t_\tNamedEntity=(e1)\n", "conllu")}
    for name, (text, want) in cases.items():
        (tmp_path / name).write_text(text)
        assert detect_format(tmp_path / name) == want, name


def test_every_task_section_names_a_builder_of_its_own_task():
    """A task's report section is a function named in the registry; it builds nothing from another task's rows."""
    from headscope.reports import sections
    from headscope.schema import frame

    empty = sections.Context(frame([]))
    named = [name for name, task in TASKS.items() if task.section]
    assert set(named) >= {"syntax", "tree", "positional", "coref", "gap", "pairs", "induction"}
    for name in named:
        make = sections.builder(name)
        assert callable(make), name
        assert make(empty, "any") is None                         # no rows of its task: no section
    assert sections.builder("final") is None                      # a task may have no section of its own
