"""``headscope explain``: which heads link one word to which others, with the viewer."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..config import ExplainConfig
from .common import FORCE_HELP, TRUST_HELP, check_out, fail, setup_logging

EXPLAIN = ExplainConfig()


def explain(
    sentence: Annotated[Optional[str], typer.Argument(help="The sentence, as running text (or give --file).")]
    = None,
    word: Annotated[Optional[str], typer.Option("--word", "-w", help="The word to explain (first match) or its "
                                                                    "0-based index. Default: the first pronoun.")]
    = None,
    model: Annotated[str, typer.Option("--model", "-m", help="Alias, Hugging Face id, local folder or .gguf.")]
    = "minilm",
    run_dir: Annotated[Optional[Path], typer.Option("--run", help="A previous run's output folder: its roles.csv "
                                                                  "labels each head.")] = None,
    target: Annotated[Optional[str], typer.Option("--target", "-t", help="Rank the heads by their attention from "
                      "the word to this word (and what they write from it); several, comma-separated "
                      "(--target animal,street), rank by the contrast of the first with the others.")] = None,
    top: Annotated[int, typer.Option("--top", min=1, help="Heads to print.")] = 10,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Also write explain.csv, explain.md, "
                                                                     "explain.html (the attention viewer) and "
                                                                     "figures here.")] = None,
    prepend_bos: Annotated[Optional[bool], typer.Option("--prepend-bos/--no-prepend-bos", help="As for run.")]
    = None,
    device: Annotated[Optional[str], typer.Option("--device", help="torch device, e.g. cpu, cuda.")] = None,
    force: Annotated[bool, typer.Option("--force", help=FORCE_HELP)] = False,
    trust_remote_code: Annotated[bool, typer.Option("--trust-remote-code", help=TRUST_HELP)] = False,
    file: Annotated[Optional[Path], typer.Option("--file", "-f", help="Read the input from this UTF-8 text file "
                                                                      "(a document up to the model's length) "
                                                                      "instead of SENTENCE.")] = None,
    links: Annotated[int, typer.Option("--links", min=1, max=64, help="Strongest links per word that "
                                                                       "explain.html carries.")] = EXPLAIN.links,
    attention_memory: Annotated[float, typer.Option("--attention-memory", min=1.0, help="MiB one layer's "
                                                    "attention may take; longer inputs are read in row blocks.")]
    = EXPLAIN.attention_memory,
) -> None:
    """Which heads link a word of one sentence (or document) to which other words, with roles from a previous
    run; --out also writes explain.html, an attention viewer."""
    from ..datasets.reading import read_document
    from ..errors import HeadscopeError
    from ..run.explain import explain as run_explain

    setup_logging()
    if (sentence is None) == (file is None):
        fail("give the sentence as an argument or --file PATH, not both and not neither")
    if out is not None:
        check_out(out, "explain", force)
    try:
        text = read_document(file) if file is not None else sentence
        config = ExplainConfig(links=links, attention_memory=attention_memory, prepend_bos=prepend_bos, device=device,
                               trust_remote_code=trust_remote_code)
        result = run_explain(text, word, model=model, run=run_dir, target=target, config=config)
        result.meta["command_line"] = True            # what the viewer says names flags, not Python keywords
        if out is not None:
            result.save(out, force=force)
    except HeadscopeError as exc:
        fail(str(exc))
    if target is not None:
        _print_links(result, top)
    else:
        _print_strongest(result, top)
    if out is not None:
        typer.echo(f"wrote {out}/explain.md, explain.csv, explain.html (open it in a browser), explain.png, "
                   f"explain_distance.png")


def _head_names(rows) -> tuple[list[str], int]:
    """``L<layer>.H<head>`` of each row, and the width that fits every one (and the column's title)."""
    names = [f"L{r.layer}.H{r.head}" for r in rows.itertuples()]
    return names, max([len("head")] + [len(n) for n in names])


def _print_strongest(result, top: int) -> None:
    from ..run.explain import weight_text

    rows = result.top(top)
    names, w = _head_names(rows)
    typer.echo(f"{result.model}: heads linking {result.word!r} (word {result.word_index}) to other words")
    typer.echo(f"{'head':<{w}}  {'links to':<14} {'weight':>6}  {'2nd':<14} {'weight':>6}  {'specials':>8}  role")
    for name, r in zip(names, rows.itertuples()):
        typer.echo(f"{name:<{w}}  {r.target[:14]:<14} {weight_text(r.weight):>6}  {r.second[:14]:<14} "
                   f"{weight_text(r.second_weight):>6}  {r.specials:8.3f}  {r.role}")


def _print_links(result, top: int) -> None:
    from ..run.explain import weight_text

    table = result.table
    to = table["link_to"].iloc[0]
    contrast = "link_contrast" in table.columns
    rows = result.top(top)
    names, w = _head_names(rows)
    typer.echo(f"{result.model}: heads ranked by attention from {result.word!r} to {to!r}"
               + (f" less their largest to {table['link_others'].iloc[0]}" if contrast else ""))
    typer.echo(f"{'head':<{w}}  {'weight':>6} {'norm':>6}" + (f" {'contrast':>8}" if contrast else "")
               + f"  {'strongest link':<18} role")
    for name, r in zip(names, rows.itertuples()):
        typer.echo(f"{name:<{w}}  {r.link_weight:6.3f} {weight_text(r.link_norm):>6}"
                   + (f" {r.link_contrast:+8.3f}" if contrast else "")
                   + f"  {r.target[:18]:<18} {r.role}")
