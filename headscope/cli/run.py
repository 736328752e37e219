"""``headscope run`` and ``headscope merge``: score every head and write the report; merge the shards of a run."""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from ..config import DEFAULTS
from .common import (FORCE_HELP, TASKS_HELP, TRUST_HELP, UNITS, Control, Format, OnError, Part, check_out,
                     command_line, fail, launched, setup_logging)


def run(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", "-m", help="Alias (see `headscope models`), Hugging Face id, "
                                                              "or local model folder.")] = "minilm",
    data: Annotated[Optional[list[Path]], typer.Option("--data", "-d", help="Data file or coreference folder "
                    "(.conllu, .txt, .jsonl, .conll, .jsonlines, GAP .tsv, pairs .jsonl); repeat for several. "
                    "Default: the bundled English sample treebank and minimal pairs.")] = None,
    tasks: Annotated[Optional[str], typer.Option("--tasks", "-t", help=TASKS_HELP)] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder for scores.csv, report.md, run.json, "
                                                           "figures/.")] = Path("headscope-out"),
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Sentences per forward pass.")] = DEFAULTS.batch_size,
    device: Annotated[Optional[str], typer.Option("--device", help="torch device, e.g. cpu, cuda, cuda:1, mps.")]
    = None,
    max_sentences: Annotated[Optional[int], typer.Option("--max-sentences", "-n", min=1,
                                                         help="Score at most N sentences per data file.")] = None,
    on_error: Annotated[OnError, typer.Option("--on-error", help="Malformed sentences: fail at the first, or skip "
                                                                   "and count them.")] = OnError.fail,
    fmt: Annotated[Optional[Format], typer.Option("--format", help="Data format when the suffix does not say "
                                                                    "(applies to every --data).")]
    = None,
    keep_subtypes: Annotated[bool, typer.Option("--keep-subtypes", help="Keep relation subtypes (nsubj:pass) "
                                                                        "instead of folding them.")] = False,
    window: Annotated[int, typer.Option("--window", min=0, help="Local-window half width for positional mass.")] = DEFAULTS.window,
    induction_count: Annotated[int, typer.Option("--induction-count", min=1, help="Induction task: number of "
                                                                                 "generated sequences.")] = DEFAULTS.induction_count,
    induction_length: Annotated[int, typer.Option("--induction-length", min=2, help="Induction task: random tokens "
                                                                                    "per copy.")] = DEFAULTS.induction_length,
    seed: Annotated[int, typer.Option("--seed", help="Seed for generated data (recorded in run.json).")] = DEFAULTS.seed,
    bootstrap: Annotated[int, typer.Option("--bootstrap", min=0, help="Bootstrap replicates for 95% intervals over "
                                                                       "sentences (0: none).")] = DEFAULTS.bootstrap,
    prepend_bos: Annotated[Optional[bool], typer.Option("--prepend-bos/--no-prepend-bos", help="Start every input "
                           "with the tokenizer's BOS token when it does not add one itself. Default: yes for "
                           "decoders (their attention sink), no for encoders.")] = None,
    control: Annotated[Optional[Control], typer.Option("--control", help="Also score the same architecture with "
                       "re-initialised weights (seeded by --seed); the report sets its scores beside the model's "
                       "and roles must beat it.")] = None,
    select_on: Annotated[Optional[Path], typer.Option("--select-on", help="Data on which to choose each "
                         "measure's best head (held-out selection); the report gives that head's score on --data. "
                         "Same formats as --data.")] = None,
    no_figures: Annotated[bool, typer.Option("--no-figures", help="Skip the PNG heatmaps.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    force: Annotated[bool, typer.Option("--force", help=FORCE_HELP)] = False,
    trust_remote_code: Annotated[bool, typer.Option("--trust-remote-code", help=TRUST_HELP)] = False,
    attention_memory: Annotated[float, typer.Option("--attention-memory", min=1, help="MiB one layer's attention "
                                "may take; larger maps are computed and scored in blocks of query rows when every "
                                "task reads blocks (positional, syntax, coref, induction).")] = DEFAULTS.attention_memory,
    documents: Annotated[Optional[int], typer.Option("--documents", min=1, help="Join consecutive sentences into "
                         "documents of at most this many words (long-range measures; boundaries kept).")] = None,
    part: Annotated[Optional[Part], typer.Option("--part", help="An encoder-decoder's part to analyse: its encoder "
                    "(the default) or its decoder's self-attention, teacher-forced on the input.")] = None,
    checkpoint_every: Annotated[int, typer.Option("--checkpoint-every", min=0, help="Save the scorer states every "
                                "K batches (and when each dataset ends) beside --out; after a kill, `headscope run "
                                "--resume OUT` goes on from there.")] = 0,
    resume: Annotated[Optional[Path], typer.Option("--resume", help="Go on with the run that was writing into this "
                      "folder when it was killed, from its last checkpoint (its settings come from there).")] = None,
    dtype: Annotated[Optional[str], typer.Option("--dtype", help="The weights' dtype: float32, bfloat16 or "
                                                 "float16 (attention statistics stay float32).")] = None,
    device_map: Annotated[Optional[str], typer.Option("--device-map", help="auto (or balanced, sequential): "
                          "accelerate places a model larger than one device across the devices.")] = None,
    shard: Annotated[Optional[str], typer.Option("--shard", help="I/N: read only every N-th input from the I-th "
                     "(0-based) and write the scorer states into OUT, for `headscope merge`.")] = None,
    ablate: Annotated[Optional[str], typer.Option("--ablate", help="Also ablate every head alone by this method "
                      "(zero, mean, uniform, sink, window:W) on up to 256 sentences of the first .conllu or .txt "
                      "--data, and set each role's causal effect beside it (ablation.csv).")] = None,
) -> None:
    """Score every head of MODEL on DATA and write a report into OUT."""
    from ..reports.figures import workers_ahead
    from .collection import starting

    setup_logging()
    command = command_line(ctx)
    parts = None
    if shard is not None:
        from ..errors import HeadscopeError
        from ..run.shards import parse_shard

        try:
            parts = parse_shard(shard)
        except HeadscopeError as exc:
            fail(str(exc))
        if ablate is not None:
            fail("--ablate does not run on a shard; ablate after `headscope merge`, or on the whole run")
    if launched() is not None and (parts is not None or ablate is not None):
        fail("under a launcher (torchrun, accelerate launch) each rank is a shard already: drop --shard and "
              "--ablate")
    if (checkpoint_every or resume is not None) and parts is not None:
        fail("--checkpoint-every and --resume are for a whole run (one process, or ranks under a launcher); a "
              "shard is restarted whole")
    ranks = launched()
    settings = dict(tasks=tasks, batch_size=batch_size, device=device, max_sentences=max_sentences,
                    keep_subtypes=keep_subtypes, on_error=on_error.value, fmt=fmt.value if fmt else None,
                    window=window, seed=seed, induction_count=induction_count,
                    induction_length=induction_length, prepend_bos=prepend_bos, bootstrap=bootstrap,
                    control=control.value if control else None, trust_remote_code=trust_remote_code,
                    attention_memory=attention_memory, documents=documents, part=part.value if part else None,
                    dtype=dtype, device_map=device_map)
    checkpoint = None
    if resume is not None or checkpoint_every:
        from ..errors import HeadscopeError
        from ..run.shards import Checkpoint, checkpoint_path

        if resume is not None:
            path = checkpoint_path(resume, ranks)
            if not path.is_file():
                fail(f"{resume}: no checkpoint to resume from ({path.name} is not there): the run ended, or it was "
                      f"started without --checkpoint-every")
            try:
                header, prior = Checkpoint.load(path)
            except HeadscopeError as exc:
                fail(str(exc))
            out, model, settings = resume, header["model"], header["settings"]
            data = [Path(p) for p in header["data"]] if header["data"] else None
            select_on = Path(header["select_on"]) if header["select_on"] else None
            command = f"{header['command']} (resumed: {command})"
            force, ablate = header.get("force", False), header.get("ablate")
            if header.get("world") != (ranks[1] if ranks else None):
                fail(f"{path.name}: the run was checkpointed with {header.get('world') or 1} process(es), and this "
                      f"is {ranks[1] if ranks else 1}; resume it as it was started")
            checkpoint = Checkpoint(path, header["every"], header, prior)
        else:
            known = Path(model)
            header = {"model": str(known.resolve()) if known.exists() else model, "settings": settings,
                      "data": [str(Path(p).resolve()) for p in data] if data else None,
                      "select_on": str(Path(select_on).resolve()) if select_on else None, "command": command,
                      "every": checkpoint_every, "ablate": ablate, "force": force,
                      "world": ranks[1] if ranks else None}
            checkpoint = Checkpoint(checkpoint_path(out, ranks), checkpoint_every, header)
    check_out(out, "shard" if parts else "run", force)
    if ablate is not None:
        from ..interventions.ablation import Method
        from ..errors import HeadscopeError

        try:
            Method.parse(ablate)
        except HeadscopeError as exc:
            fail(f"--ablate: {exc}")
    # Collection is off until the first batch (collection.py), except for a launcher's ranks; the figure
    # workers, forked now while this process is small, turn it on for themselves.
    with starting(enabled=ranks is None) as settled, workers_ahead(not no_figures):
        _run(model, data, out, command, quiet=quiet, no_figures=no_figures or parts is not None, force=force,
             select_on=select_on, ablate=ablate, shard=parts, checkpoint=checkpoint, config=settings,
             settled=settled)


EVIDENCE_SENTENCES = 256   # sentences that --ablate reads: every head is ablated alone on each


def _evidence(result: Any, loaded: Any, data: Any, method: str, config: dict) -> str | None:
    """Ablate every head alone and join the effects to the roles; the error, in one line, if that failed (the
    analysis is kept and written either way)."""
    from ..interventions.ablation import ablate, has_lm_head
    from ..errors import HeadscopeError

    sentences = next((p for p in data or [] if Path(p).suffix.lower() in (".conllu", ".txt")), None)
    has_lm = has_lm_head(loaded)
    measures = (["loss"] if has_lm else ["hidden"]) + (
        ["induction-loss"] if has_lm and "induction" in result.meta.get("tasks", []) else [])
    try:
        evidence = ablate(loaded, sentences, heads="each", method=method, measures=measures,
                          max_sentences=min(config.get("max_sentences") or EVIDENCE_SENTENCES, EVIDENCE_SENTENCES),
                          bootstrap=config.get("bootstrap", 1000), seed=config.get("seed", 0),
                          induction_count=config.get("induction_count", 16),
                          induction_length=config.get("induction_length", 32))
        result.add_ablation(evidence)
    except HeadscopeError as exc:
        result.meta["ablation"] = {"skipped": str(exc)}
        return f"--ablate: {exc}; the report was written without causal evidence"
    except KeyboardInterrupt:
        result.meta["ablation"] = {"skipped": "interrupted"}
        return "--ablate was interrupted; the report was written without causal evidence"
    return None



def _run_rank(model: Any, data: Any, command: str, select_on: Any, config: dict, ranks: tuple[int, int],
              progress: Any, on_progress: Any, checkpoint: Any = None) -> Any:
    """One rank of a launched run: its shard of the inputs, on its own device; every rank's scorer states go to
    every rank, and rank 0 merges them into the run's result (the other ranks return None). A rank's bad input
    stops every rank: rank 0 with the one-line error, the others with its exit code."""
    from ..config import RunConfig
    from ..run.distributed import everyone, start, stop
    from ..errors import HeadscopeError
    from ..models.loading import load_model
    from ..run.analyze import analyze
    from ..run.shards import merge_parts, shard_parts

    rank, size = ranks
    device, backend = start(config.get("device"))
    try:
        run_config = RunConfig(**{**config, "device": device})
        loaded = load_model(model, device=device, trust_remote_code=run_config.trust_remote_code,
                            part=run_config.part, dtype=run_config.dtype)
        with progress if rank == 0 else contextlib.nullcontext():
            result = analyze(loaded, data or None, config=run_config, select_on=select_on,
                             progress=on_progress if rank == 0 else None, shard=(rank, size), checkpoint=checkpoint)
        part: tuple = ("ok", shard_parts(result, model=model, data=data, select_on=select_on, config=run_config,
                                         command=command), str(loaded.device), result.meta["seconds"])
    except HeadscopeError as exc:
        part = ("error", f"rank {rank}: {exc}")
    started = time.perf_counter()
    parts = everyone(part)
    gathered = time.perf_counter() - started
    failed = next((p[1] for p in parts if p[0] == "error"), None)
    if failed is not None:
        stop()
        if rank == 0:
            fail(failed)
        raise typer.Exit(2)
    if rank != 0:
        stop()
        return None
    stop()
    started = time.perf_counter()
    merged = merge_parts([p[1] for p in parts], [f"rank {i}" for i in range(size)], model=loaded)
    merged.meta["distributed"] = {"world_size": size, "backend": backend, "devices": [p[2] for p in parts],
                                  "rank_seconds": [p[3] for p in parts], "gather_seconds": round(gathered, 3),
                                  "merge_seconds": round(time.perf_counter() - started, 3)}
    return merged


def _run(model: str, data: Any, out: Path, command: str, *, quiet: bool, no_figures: bool, force: bool,
         select_on: Any, config: dict, ablate: str | None = None, shard: tuple[int, int] | None = None,
         checkpoint: Any = None, settled: Callable[[], None] = lambda: None) -> None:
    """The run command's analysis and report, once its arguments are checked; ``settled()`` is called when the
    first batch is scored (the model and the data are loaded)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..config import RunConfig
    from ..errors import HeadscopeError
    from ..run.analyze import analyze
    from ..reports import write_report

    # The bar goes to stderr and disappears when done, so stdout holds only the summary line.
    progress = Progress(TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        disable=quiet or not sys.stderr.isatty(), transient=True, console=Console(stderr=True))
    task_id = progress.add_task("scoring", total=None)

    def on_progress(done: int, total: int) -> None:
        settled()
        progress.update(task_id, completed=done, total=total)

    failed = None
    ranks = launched()
    try:
        if ranks is not None:
            result = _run_rank(model, data, command, select_on, config, ranks, progress, on_progress, checkpoint)
            if result is None:
                return                                  # not rank 0: rank 0 writes the run
        run_config = RunConfig(**config)
        if ranks is None and ablate is not None:     # loaded once, for the analysis and the ablation
            from ..models.loading import load_model

            model = load_model(model, device=run_config.device, trust_remote_code=run_config.trust_remote_code,
                               part=run_config.part, dtype=run_config.dtype, device_map=run_config.device_map)
        if ranks is None:
            with progress:
                result = analyze(model, data or None, config=run_config, select_on=select_on,
                                 progress=on_progress, partial_on_interrupt=shard is None, shard=shard,
                                 checkpoint=checkpoint)
        if shard is not None:
            from ..run.shards import write_shard

            write_shard(result, out, model=model, data=data, select_on=select_on, config=run_config,
                        command=command, force=force)
            typer.echo(f"{result.model.name}: shard {shard[0]}/{shard[1]} scored "
                       f"{sum(d['scored'] for d in result.meta['datasets'])} inputs; wrote {out}/shard.json, "
                       f"states.npz (merge the shards with `headscope merge`)")
            return
        if ablate is not None and result.meta.get("complete", True):
            failed = _evidence(result, model, data, ablate, config)
    except HeadscopeError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted before any input was scored; nothing was written", code=130)
    try:
        try:
            write_report(result, out, figures=not no_figures, command=command, force=force)
        except KeyboardInterrupt:  # between the analysis and the report's own shield: write it without figures
            result.meta.update(complete=False, interrupted="before the report was written: no figures")
            write_report(result, out, figures=False, command=command, force=force)
    except HeadscopeError as exc:
        fail(str(exc))
    if checkpoint is not None and result.meta.get("complete", True):
        from ..run.shards import checkpoint_path

        for r in range(ranks[1] if ranks else 1):     # the run is written: nothing is left to resume
            checkpoint_path(out, (r, ranks[1]) if ranks else None).unlink(missing_ok=True)
    datasets = result.meta["datasets"]
    skipped = sum(d["skipped_bad_data"] + d["skipped_too_long"] for d in datasets)
    scored = sum(d["scored"] for d in datasets)
    per_dataset = ", ".join(f"{d['name']} {d['scored']} {UNITS.get(d.get('kind'), 'sentences')}" for d in datasets)
    parts = f" ({per_dataset})" if len(datasets) > 1 else ""
    typer.echo(f"{result.model.name}: scored {scored} sentences{parts}"
               + (f", skipped {skipped} (see run.json)" if skipped else "")
               + f"; wrote {out}/report.html, report.md, report.json, scores.csv, roles.csv, run.json")
    if failed:
        fail(failed)
    if not result.meta.get("complete", True):
        where = result.meta.get("interrupted") or "while scoring"
        typer.echo(f"run was interrupted {where}; the files hold partial results", err=True)
        raise typer.Exit(130)



def merge(
    ctx: typer.Context,
    shards: Annotated[list[Path], typer.Argument(help="The shards' folders (`headscope run --shard I/N --out ...`), "
                                                      "all N of them.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder of the merged run.")] = Path("headscope-out"),
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="The model, when the shards were written "
                                                                       "from a model object.")] = None,
    no_figures: Annotated[bool, typer.Option("--no-figures", help="Skip the PNG heatmaps.")] = False,
    force: Annotated[bool, typer.Option("--force", help=FORCE_HELP)] = False,
) -> None:
    """Merge the shards of one run into the run one process would have written."""
    from ..errors import HeadscopeError
    from ..reports import write_report
    from ..reports.figures import workers_ahead
    from ..run.shards import merge_shards

    setup_logging()
    command = command_line(ctx)
    check_out(out, "run", force)
    with workers_ahead(not no_figures):
        try:
            result = merge_shards(shards, model=model)
            write_report(result, out, figures=not no_figures, command=command, force=force)
        except HeadscopeError as exc:
            fail(str(exc))
    scored = sum(d["scored"] for d in result.meta["datasets"])
    typer.echo(f"{result.model.name}: merged {len(shards)} shards ({scored} inputs); wrote {out}/report.html, "
               f"report.md, report.json, scores.csv, roles.csv, run.json")

