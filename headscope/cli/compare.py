"""``headscope compare``: per-head score differences between two runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import FORCE_HELP, check_out, fail, setup_logging


def compare(
    run_a: Annotated[Path, typer.Argument(help="A run's output folder (or its scores.csv).")],
    run_b: Annotated[Optional[Path], typer.Argument(help="Another run's folder. Omit it to compare RUN_A's model "
                                                         "with the random-init control it was run with.")] = None,
    model_a: Annotated[Optional[str], typer.Option("--model-a", help="Model inside RUN_A (default: its main "
                                                                     "model).")] = None,
    model_b: Annotated[Optional[str], typer.Option("--model-b", help="Model inside RUN_B.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder for compare.csv, compare_summary.csv, "
                                                           "compare.md, figures/.")] = Path("headscope-compare"),
    no_figures: Annotated[bool, typer.Option("--no-figures", help="Skip the difference heatmaps.")] = False,
    top: Annotated[int, typer.Option("--top", min=1, help="Rows of largest per-head changes to print.")] = 10,
    force: Annotated[bool, typer.Option("--force", help=FORCE_HELP)] = False,
) -> None:
    """Per-head score differences RUN_A − RUN_B (another model, a fine-tuned one, or the control), with intervals."""
    from ..run.compare import compare as run_compare
    from ..errors import HeadscopeError

    setup_logging()
    check_out(out, "compare", force)
    try:
        result = run_compare(run_a, run_b, model_a=model_a, model_b=model_b)
        result.save(out, figures=not no_figures, force=force)
    except HeadscopeError as exc:
        fail(str(exc))
    typer.echo(f"A = {result.label_a}, B = {result.label_b}: {len(result.table)} head x measure pairs; "
               f"largest changes (A − B, 95% interval):")
    for r in result.top(top).itertuples():
        measure = f"{r.relation}{' ' + r.direction if isinstance(r.direction, str) else ''}"
        ci = "" if r.ci_low != r.ci_low else f" [{r.ci_low:+.3f}, {r.ci_high:+.3f}]"
        typer.echo(f"  {r.dataset} {r.task:<10} {measure:<26} L{int(r.layer)}.H{int(r.head):<3} "
                   f"{r.score_a:.3f} vs {r.score_b:.3f}: {r.diff:+.3f}{ci}")
    typer.echo(f"wrote {out}/compare.md, compare.csv, compare_summary.csv")

