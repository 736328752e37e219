"""``headscope ablate`` and ``headscope context``: what removing heads costs, and which heads need the whole context."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..config import AblationConfig, ContextConfig, ImportanceConfig
from ..interventions.measures import MEASURES
from ..interventions.methods import method_names
from .common import FORCE_HELP, check_out, command_line, fail, setup_logging

DEFAULT_ABLATION = AblationConfig()     # every default of `headscope ablate` but the model and the output
DEFAULT_CONTEXT = ContextConfig()       # every default of `headscope context` but the model and the output


def ablate(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", "-m", help="Alias, Hugging Face id or local folder.")] = "minilm",
    data: Annotated[Optional[Path], typer.Option("--data", "-d", help="Sentences (.conllu or .txt); default: the "
                                                                      "bundled sample.")] = None,
    heads: Annotated[str, typer.Option("--heads", help="L17.H3,L18.H6 (one group), each or all (every head "
                                                       "alone), layer:N (layer N's heads together), top:TASK:K "
                                                       "(the K best heads of a scoring pass, e.g. top:induction:3) "
                                                       "or role:ROLE (the heads a scoring pass gives that role, "
                                                       "e.g. role:induction).")] = DEFAULT_ABLATION.heads,
    method: Annotated[str, typer.Option("--method", help=f"{method_names(' or ')}.")] = DEFAULT_ABLATION.method,
    measures: Annotated[Optional[str], typer.Option("--measure", help=f"{', '.join(MEASURES)} (comma-separated). "
                        "Default: loss with an LM head (an encoder's: masked-token loss), else "
                        "hidden,embedding.")] = DEFAULT_ABLATION.measures,
    random_draws: Annotated[int, typer.Option("--random-draws", min=1, help="Random head groups of the same size "
                                                                            "to compare with.")]
    = DEFAULT_ABLATION.random_draws,
    kv_group: Annotated[bool, typer.Option("--kv-group", help="Under GQA, ablate every query head of each "
                                                              "head's key/value group.")] = DEFAULT_ABLATION.kv_group,
    with_importance: Annotated[bool, typer.Option("--importance", help="Also every head's importance and the "
                               "pruning curve: importance.csv, pruning.csv, pruning.png.")] = False,
    max_sentences: Annotated[Optional[int], typer.Option("--max-sentences", "-n", min=1,
                                                         help="Read at most N sentences.")]
    = DEFAULT_ABLATION.max_sentences,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = DEFAULT_ABLATION.batch_size,
    bootstrap: Annotated[int, typer.Option("--bootstrap", min=0, help="Replicates of the 95% intervals.")]
    = DEFAULT_ABLATION.bootstrap,
    seed: Annotated[int, typer.Option("--seed")] = DEFAULT_ABLATION.seed,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: ablation.csv, run.json.")]
    = Path("headscope-ablate"),
    force: Annotated[bool, typer.Option("--force", help=FORCE_HELP)] = False,
) -> None:
    """Ablate heads and measure what the model loses, against ablating as many random heads."""
    from ..errors import HeadscopeError

    setup_logging()
    check_out(out, "ablation", force)
    try:
        config = AblationConfig(heads=heads, method=method, measures=measures, random_draws=random_draws,
                                kv_group=kv_group, max_sentences=max_sentences, batch_size=batch_size,
                                bootstrap=bootstrap, seed=seed)
        result = _run_ablation(model, data, config, with_importance, command_line(ctx))
        result.save(out, force=force)
    except HeadscopeError as exc:
        fail(str(exc))
    _echo_ablation(result, out)


def _run_ablation(model: str, data: Any, config: AblationConfig, with_importance: bool, command: str) -> Any:
    """The ablation and, when asked for, the importance ranking and pruning curve (same batches and seed)."""
    from ..interventions.ablate import ablate as run_ablate
    from ..interventions.importance import importance

    result = run_ablate(model, data, config=config)
    result.meta["command"] = command
    if with_importance:
        result.importance = importance(model, data, config=ImportanceConfig(
            batch_size=config.batch_size, max_sentences=config.max_sentences, seed=config.seed))
        imp = result.importance
        result.meta["importance"] = {"measure": imp.measure, "how": imp.table["how"][0],
                                     "prunable_heads": imp.prunable, "tolerance": imp.tolerance}
    return result


def _echo_ablation(result: Any, out: Path) -> None:
    table = result.table.sort_values("effect", ascending=False)
    typer.echo(f"{result.meta['model']['name']}: {len(table)} ablations ({result.meta['method']}); strongest:")
    for r in table.head(5).itertuples():
        typer.echo(f"  {r.heads:<24} {r.measure:<15} effect {r.effect:+.4f} [{r.ci_low:+.4f}, {r.ci_high:+.4f}]  "
                   f"x{r.ratio_to_random:.1f} a random group")
    if result.importance is not None:
        imp = result.importance
        total = len(imp.table)
        typer.echo(f"importance ({imp.measure}): {imp.prunable} of {total} heads can go at a cost under "
                   f"{imp.tolerance:g} (pruning.csv)")
        typer.echo(f"wrote {out}/ablation.csv, importance.csv, pruning.csv, pruning.png, report.md, run.json")
    else:
        typer.echo(f"wrote {out}/ablation.csv, report.md, run.json")


def context(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", "-m", help="Alias, Hugging Face id or local folder.")] = "smollm2",
    data: Annotated[Optional[Path], typer.Option("--data", "-d", help="Running text for the long documents and the "
                                                                      "haystacks (.conllu or .txt); default: the "
                                                                      "bundled sample.")] = None,
    heads: Annotated[str, typer.Option("--heads", help="each (every head alone) or L17.H3,L18.H6.")]
    = DEFAULT_CONTEXT.heads,
    windows: Annotated[str, typer.Option("--windows", help="Windows to try, in keys, smallest first.")]
    = ",".join(map(str, DEFAULT_CONTEXT.windows)),
    tolerance: Annotated[float, typer.Option("--tolerance", help="The change a window may cause: the loss's "
                                                                 "relative rise, or 1 - cosine.")]
    = DEFAULT_CONTEXT.tolerance,
    tokens: Annotated[int, typer.Option("--tokens", min=8, help="Tokens per document and per haystack.")]
    = DEFAULT_CONTEXT.tokens,
    documents: Annotated[int, typer.Option("--documents", min=1, help="Long documents to measure on.")]
    = DEFAULT_CONTEXT.documents,
    needles: Annotated[int, typer.Option("--needles", min=1, help="Needle-in-a-haystack inputs.")]
    = DEFAULT_CONTEXT.needles,
    needle_length: Annotated[int, typer.Option("--needle-length", min=2, help="Tokens per needle.")]
    = DEFAULT_CONTEXT.needle_length,
    window_needles: Annotated[int, typer.Option("--window-needles", min=0, help="Needle inputs on which a window "
                                                "must also keep the copy's loss (0: the text only).")]
    = DEFAULT_CONTEXT.window_needles,
    measure: Annotated[Optional[str], typer.Option("--measure", help="loss or hidden. Default: loss with an LM "
                                                                     "head, else hidden.")] = DEFAULT_CONTEXT.measure,
    seed: Annotated[int, typer.Option("--seed")] = DEFAULT_CONTEXT.seed,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: windows.csv, heads.csv, report.md, "
                                                          "run.json.")] = Path("headscope-context"),
    force: Annotated[bool, typer.Option("--force", help=FORCE_HELP)] = False,
) -> None:
    """Which heads need the whole context: the smallest window each head can keep, retrieval scores, and the KV
    cache that windowed heads would save."""
    from ..errors import HeadscopeError

    setup_logging()
    check_out(out, "context", force)
    try:
        config = ContextConfig(heads=heads, windows=windows, tolerance=tolerance, tokens=tokens, documents=documents,
                               needles=needles, needle_length=needle_length, window_needles=window_needles,
                               measure=measure, seed=seed)
        result = _run_context(model, data, config)
        result.meta["command"] = command_line(ctx)
        result.save(out, force=force)
    except HeadscopeError as exc:
        fail(str(exc))
    _echo_context(result, out)


def _run_context(model: str, data: Any, config: ContextConfig) -> Any:
    """The window search, with a progress bar on a terminal."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..interventions.context import context_needs

    bar = Progress(TextColumn("windows"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   disable=not sys.stderr.isatty(), transient=True, console=Console(stderr=True))
    task_id = bar.add_task("windows", total=None)
    with bar:
        return context_needs(model, data, config=config,
                             progress=lambda done, total: bar.update(task_id, completed=done, total=total))


def _echo_context(result: Any, out: Path) -> None:
    tested = result.heads[result.heads["tested"]]
    windowed = int(tested["smallest_window"].notna().sum())
    typer.echo(f"{result.meta['model']['name']}: {windowed} of {len(tested)} heads can be windowed with at most "
               f"{max(result.meta['windows'])} keys")
    for k in result.kv:
        typer.echo(f"  KV cache at {k['context']:,} tokens: {100 * k['saved_share']:.1f}% saved"
                   + (" (of the model's own, whose local layers already window)" if k.get("kv_heads_local") else ""))
    if result.heads["retrieval"].notna().any():
        best = result.heads.sort_values("retrieval", ascending=False).head(3)
        typer.echo("  strongest retrieval heads: " + ", ".join(f"L{r.layer}.H{r.head} ({r.retrieval:.2f})"
                                                             for r in best.itertuples()))
    typer.echo(f"wrote {out}/windows.csv, heads.csv, report.md, run.json")
