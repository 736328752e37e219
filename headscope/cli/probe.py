"""``headscope probe``: attention probes with control tasks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..config import ProbeConfig
from .common import FORCE_HELP, TRUST_HELP, Control, OnError, check_out, command_line, fail, setup_logging


def probe(
    ctx: typer.Context,
    train: Annotated[Path, typer.Option("--train", help="Training treebank (.conllu).")],
    test: Annotated[Path, typer.Option("--test", help="Test treebank (.conllu); sentences never cross the split.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Alias, Hugging Face id, local folder or .gguf.")]
    = "minilm",
    probe_: Annotated[str, typer.Option("--probe", help="parent, relation, or both (comma-separated).")]
    = "parent,relation",
    features: Annotated[str, typer.Option("--features", help="Feature sets, comma-separated; each joins "
                        "attention, words and distance with '+'.")] = "attention,attention+words,distance",
    max_train_sentences: Annotated[Optional[int], typer.Option("--max-train-sentences", min=1,
                                                               help="Use the first N training sentences.")] = None,
    max_test_sentences: Annotated[Optional[int], typer.Option("--max-test-sentences", min=1,
                                                              help="Use the first N test sentences.")] = None,
    control: Annotated[Optional[Control], typer.Option("--control", help="Also probe the same architecture with "
                                                                        "re-initialised weights.")] = None,
    drop_heads: Annotated[bool, typer.Option("--drop-heads", help="Refit the attention-only parent probe without "
                                                                   "each head in turn (slow: one fit per head).")]
    = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed for control targets, PCA and the random-init model.")]
    = 0,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Sentences per forward pass.")]
    = ProbeConfig().batch_size,
    device: Annotated[Optional[str], typer.Option("--device", help="torch device, e.g. cpu, cuda.")] = None,
    on_error: Annotated[OnError, typer.Option("--on-error", help="Malformed sentences: fail, or skip and count.")]
    = OnError.fail,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder for probes.csv, probe_heads.csv, "
                                                           "report.md, run.json.")] = Path("headscope-probe-out"),
    no_figures: Annotated[bool, typer.Option("--no-figures", help="Skip the head-weight heatmap.")] = False,
    force: Annotated[bool, typer.Option("--force", help=FORCE_HELP)] = False,
    trust_remote_code: Annotated[bool, typer.Option("--trust-remote-code", help=TRUST_HELP)] = False,
) -> None:
    """Train attention probes (parent, relation) with control tasks; print and write the results."""
    from ..config import ProbeConfig
    from ..errors import HeadscopeError
    from ..run.interrupts import shielded
    from ..probes.experiment import probe as run_probe

    setup_logging()
    command = command_line(ctx)
    check_out(out, "probe", force)
    try:
        config = ProbeConfig(probes=probe_, features=features, max_train_sentences=max_train_sentences,
                             max_test_sentences=max_test_sentences, control=control.value if control else None,
                             seed=seed, batch_size=batch_size, drop_heads=drop_heads, on_error=on_error.value,
                             device=device, trust_remote_code=trust_remote_code)
        result = run_probe(model, train, test, config=config, partial_on_interrupt=True)
    except HeadscopeError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted before any probe was finished; nothing was written", code=130)
    try:
        with shielded():
            result.save(out, figures=not no_figures, command=command, force=force)
    except HeadscopeError as exc:
        fail(str(exc))
    wide = result.summary()
    typer.echo(f"{'model':<24} {'probe':<9} {'features':<18} {'metric':<9} {'task':>6} {'control':>8} "
               f"{'select.':>8}")
    for _, r in wide.iterrows():
        typer.echo(f"{r['model']:<24} {r['probe']:<9} {r['features']:<18} {r['metric']:<9} "
                   f"{100 * r['task']:6.1f} {100 * r['control']:8.1f} {100 * r['selectivity']:+8.1f}")
    typer.echo(f"took {result.meta['seconds']} s; wrote {out}/probes.csv, probe_heads.csv, report.md, run.json")
    if not result.meta.get("complete", True):
        typer.echo("interrupted: the files hold the models finished before the stop", err=True)
        raise typer.Exit(130)

