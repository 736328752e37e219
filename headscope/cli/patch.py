"""``headscope patch``: activation and attribution patching of every head on contrast pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..config import PatchConfig
from .common import FORCE_HELP, check_out, command_line, fail, setup_logging

DEFAULT = PatchConfig()     # every default of `headscope patch` but the model, the pairs and the output


def patch(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", "-m", help="Alias, Hugging Face id or local folder (a causal "
                                                             "or masked language model).")] = "smollm2",
    pairs: Annotated[str, typer.Option("--pairs", "-p", help="Contrast pairs: a .jsonl file (clean, corrupt, "
                                                             "answer, foil per line) or induction, ioi, coref.")]
    = "induction",
    methods: Annotated[str, typer.Option("--method", help="exact, attribution (comma-separated).")]
    = ",".join(DEFAULT.methods),
    directions: Annotated[str, typer.Option("--direction", help="noising, denoising (comma-separated).")]
    = ",".join(DEFAULT.directions),
    heads: Annotated[Optional[list[str]], typer.Option("--heads", help="A group patched together, e.g. "
                                                                       "L18.H6,L17.H3; repeat for more.")] = None,
    kv: Annotated[bool, typer.Option("--kv", help="Patch KV groups (the query heads sharing a key and value "
                                                   "head) instead of single query heads.")] = False,
    positions: Annotated[bool, typer.Option("--positions", help="Also patch the heads with the largest effect at "
                                                               "one position at a time (positions.html).")] = False,
    position_heads: Annotated[int, typer.Option("--position-heads", min=1, help="Heads patched per position with "
                                                                                "--positions.")]
    = DEFAULT.position_heads,
    max_pairs: Annotated[Optional[int], typer.Option("--max-pairs", "-n", min=1, help="Read (or make) at most N "
                                                                                      "pairs.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = DEFAULT.batch_size,
    bootstrap: Annotated[int, typer.Option("--bootstrap", min=0, help="Replicates of the 95% intervals.")]
    = DEFAULT.bootstrap,
    seed: Annotated[int, typer.Option("--seed")] = DEFAULT.seed,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: patching.csv, heatmaps, report.md, "
                                                          "report.html, run.json (with --positions: "
                                                          "positions.html).")] = Path("headscope-patch"),
    force: Annotated[bool, typer.Option("--force", help=FORCE_HELP)] = False,
) -> None:
    """Patch each head's output between clean and corrupt inputs and measure how much of the answer moves."""
    from ..errors import HeadscopeError
    from ..interventions.patching import patch as run_patch
    from ..reports.patching import agreement

    setup_logging()
    check_out(out, "patching", force)
    try:
        config = PatchConfig(methods=methods, directions=directions, groups=tuple(heads or ()), max_pairs=max_pairs,
                             batch_size=batch_size, bootstrap=bootstrap, seed=seed, kv=kv, positions=positions,
                             position_heads=position_heads)
        result = run_patch(model, pairs, config=config)
        result.meta["command"] = command_line(ctx)
        result.save(out, force=force)
    except HeadscopeError as exc:
        fail(str(exc))
    meta, table = result.meta, result.table
    typer.echo(f"{meta['model']} on {meta['dataset']}: {meta['pairs']} pairs, logit difference "
               f"{meta['ld_clean']:.3f} clean, {meta['ld_corrupt']:.3f} corrupt")
    for (method, direction), t in table.groupby(["method", "direction"], sort=False):
        best = t.reindex(t["effect"].abs().sort_values(ascending=False).index).head(5)
        typer.echo(f"  {method} {direction}: " + ", ".join(f"{r.heads} {r.effect:+.2f}" for r in best.itertuples()))
    got = agreement(result, meta["directions"][0])
    if got is not None:
        typer.echo(f"  attribution against exact: Spearman {got['spearman']:.2f}, {got['top5_in_top10']} of the "
                   f"top 5 in its top 10")
    extra = ", patching_positions.csv, positions.html" if result.positions is not None else ""
    typer.echo(f"wrote {out}/patching.csv{extra}, report.md, run.json")
