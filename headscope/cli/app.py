"""The ``headscope`` command: ``run``, ``merge``, ``probe``, ``compare``, ``explain``, ``ablate``, ``context``,
``models``, ``tasks``; one-line errors."""

from __future__ import annotations

import contextlib
import enum
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from ..config import DEFAULTS
from ..tasks import TASKS, default_tasks

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Find out what every attention head of a transformer does.")


class OnError(str, enum.Enum):
    fail = "fail"
    skip = "skip"


def _formats() -> list[str]:
    from ..datasets.formats import FORMATS

    return list(FORMATS)


# --format choices come from the format registry
Format = enum.Enum("Format", [(name, name) for name in _formats()], type=str)


class Control(str, enum.Enum):
    random_init = "random-init"


def _tasks_help() -> str:
    names = ", ".join(TASKS)
    default = ", ".join(default_tasks())
    auto = ", ".join(t.name for t in TASKS.values() if t.auto)
    return (f"Comma-separated: {names} (see `headscope tasks`). Default: without --data, {default} on the bundled "
            f"samples; with --data, those of {auto} that the data supports.")


TASKS_HELP = _tasks_help()


class Part(str, enum.Enum):
    encoder = "encoder"
    decoder = "decoder"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (test runners swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


FORCE_HELP = ("Write into --out even when it holds files headscope did not write (they are left as they are; "
              "same-named files are replaced) or another kind of headscope output (replaced whole).")
TRUST_HELP = ("Let a model folder run its own Python code (auto_map in its config). Off by default: read the code "
              "first.")
# what a dataset's 'scored' counts, by its kind (run.json)
UNITS = {"documents": "document windows", "gap": "rows", "pairs": "pair sentences", "generated": "sequences"}


def _setup_logging() -> None:
    logger = logging.getLogger("headscope")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("headscope: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING)
        logger.propagate = False


def _command_line(ctx: typer.Context) -> str:
    """The command as a re-runnable line: the options given on the command line, in declaration order."""
    parts = [ctx.command_path if ctx.command_path.startswith("headscope") else f"headscope {ctx.info_name}"]
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name)
        if source is None or source.name != "COMMANDLINE":
            continue
        flag = max(param.opts, key=len)
        value = ctx.params[param.name]
        if getattr(param, "is_flag", False):
            negative = getattr(param, "secondary_opts", None)
            parts.append(max(negative, key=len) if value is False and negative else flag)
            continue
        for v in value if isinstance(value, (list, tuple)) else [value]:
            parts += [flag, shlex.quote(str(v.value if isinstance(v, enum.Enum) else v))]
    return " ".join(parts)


def _check_out(out: Path, kind: str, force: bool) -> None:
    """An unusable --out fails now, in one line, not after the analysis."""
    from ..errors import HeadscopeError
    from ..reports.folder import check_output

    try:
        check_output(out, kind, force=force)
    except HeadscopeError as exc:
        _fail(str(exc))


def _fail(message: str, code: int = 2) -> None:
    from ..errors import escape_controls

    typer.echo(f"headscope: error: {escape_controls(message)}", err=True)
    raise typer.Exit(code)


@app.command()
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

    _setup_logging()
    command = _command_line(ctx)
    parts = None
    if shard is not None:
        from ..errors import HeadscopeError
        from ..shards import parse_shard

        try:
            parts = parse_shard(shard)
        except HeadscopeError as exc:
            _fail(str(exc))
        if ablate is not None:
            _fail("--ablate does not run on a shard; ablate after `headscope merge`, or on the whole run")
    if _launched() is not None and (parts is not None or ablate is not None):
        _fail("under a launcher (torchrun, accelerate launch) each rank is a shard already: drop --shard and "
              "--ablate")
    if (checkpoint_every or resume is not None) and parts is not None:
        _fail("--checkpoint-every and --resume are for a whole run (one process, or ranks under a launcher); a "
              "shard is restarted whole")
    ranks = _launched()
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
        from ..shards import Checkpoint, checkpoint_path

        if resume is not None:
            path = checkpoint_path(resume, ranks)
            if not path.is_file():
                _fail(f"{resume}: no checkpoint to resume from ({path.name} is not there): the run ended, or it was "
                      f"started without --checkpoint-every")
            try:
                header, prior = Checkpoint.load(path)
            except HeadscopeError as exc:
                _fail(str(exc))
            out, model, settings = resume, header["model"], header["settings"]
            data = [Path(p) for p in header["data"]] if header["data"] else None
            select_on = Path(header["select_on"]) if header["select_on"] else None
            command = f"{header['command']} (resumed: {command})"
            force, ablate = header.get("force", False), header.get("ablate")
            if header.get("world") != (ranks[1] if ranks else None):
                _fail(f"{path.name}: the run was checkpointed with {header.get('world') or 1} process(es), and this "
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
    _check_out(out, "shard" if parts else "run", force)
    if ablate is not None:
        from ..ablation import Method
        from ..errors import HeadscopeError

        try:
            Method.parse(ablate)
        except HeadscopeError as exc:
            _fail(f"--ablate: {exc}")
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
    from ..ablation import ablate, has_lm_head
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


def _launched() -> tuple[int, int] | None:
    from ..distributed import world

    return world()


def _run_rank(model: Any, data: Any, command: str, select_on: Any, config: dict, ranks: tuple[int, int],
              progress: Any, on_progress: Any, checkpoint: Any = None) -> Any:
    """One rank of a launched run: its shard of the inputs, on its own device; every rank's scorer states go to
    every rank, and rank 0 merges them into the run's result (the other ranks return None). A rank's bad input
    stops every rank: rank 0 with the one-line error, the others with its exit code."""
    from ..config import RunConfig
    from ..distributed import everyone, start, stop
    from ..errors import HeadscopeError
    from ..models import load_model
    from ..pipeline import analyze
    from ..shards import merge_parts, shard_parts

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
            _fail(failed)
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
    from ..pipeline import analyze
    from ..reports import write_report

    # The bar goes to stderr and disappears when done, so stdout holds only the summary line.
    progress = Progress(TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        disable=quiet or not sys.stderr.isatty(), transient=True, console=Console(stderr=True))
    task_id = progress.add_task("scoring", total=None)

    def on_progress(done: int, total: int) -> None:
        settled()
        progress.update(task_id, completed=done, total=total)

    failed = None
    ranks = _launched()
    try:
        if ranks is not None:
            result = _run_rank(model, data, command, select_on, config, ranks, progress, on_progress, checkpoint)
            if result is None:
                return                                  # not rank 0: rank 0 writes the run
        run_config = RunConfig(**config)
        if ranks is None and ablate is not None:     # loaded once, for the analysis and the ablation
            from ..models import load_model

            model = load_model(model, device=run_config.device, trust_remote_code=run_config.trust_remote_code,
                               part=run_config.part, dtype=run_config.dtype, device_map=run_config.device_map)
        if ranks is None:
            with progress:
                result = analyze(model, data or None, config=run_config, select_on=select_on,
                                 progress=on_progress, partial_on_interrupt=shard is None, shard=shard,
                                 checkpoint=checkpoint)
        if shard is not None:
            from ..shards import write_shard

            write_shard(result, out, model=model, data=data, select_on=select_on, config=run_config,
                        command=command, force=force)
            typer.echo(f"{result.model.name}: shard {shard[0]}/{shard[1]} scored "
                       f"{sum(d['scored'] for d in result.meta['datasets'])} inputs; wrote {out}/shard.json, "
                       f"states.npz (merge the shards with `headscope merge`)")
            return
        if ablate is not None and result.meta.get("complete", True):
            failed = _evidence(result, model, data, ablate, config)
    except HeadscopeError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        _fail("interrupted before any input was scored; nothing was written", code=130)
    try:
        try:
            write_report(result, out, figures=not no_figures, command=command, force=force)
        except KeyboardInterrupt:  # between the analysis and the report's own shield: write it without figures
            result.meta.update(complete=False, interrupted="before the report was written: no figures")
            write_report(result, out, figures=False, command=command, force=force)
    except HeadscopeError as exc:
        _fail(str(exc))
    if checkpoint is not None and result.meta.get("complete", True):
        from ..shards import checkpoint_path

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
        _fail(failed)
    if not result.meta.get("complete", True):
        where = result.meta.get("interrupted") or "while scoring"
        typer.echo(f"run was interrupted {where}; the files hold partial results", err=True)
        raise typer.Exit(130)


@app.command()
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
    from ..shards import merge_shards

    _setup_logging()
    command = _command_line(ctx)
    _check_out(out, "run", force)
    with workers_ahead(not no_figures):
        try:
            result = merge_shards(shards, model=model)
            write_report(result, out, figures=not no_figures, command=command, force=force)
        except HeadscopeError as exc:
            _fail(str(exc))
    scored = sum(d["scored"] for d in result.meta["datasets"])
    typer.echo(f"{result.model.name}: merged {len(shards)} shards ({scored} inputs); wrote {out}/report.html, "
               f"report.md, report.json, scores.csv, roles.csv, run.json")


@app.command()
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
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Sentences per forward pass.")] = 32,
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
    from ..interrupts import shielded
    from ..probes.experiment import probe as run_probe

    _setup_logging()
    command = _command_line(ctx)
    _check_out(out, "probe", force)
    try:
        config = ProbeConfig(probes=probe_, features=features, max_train_sentences=max_train_sentences,
                             max_test_sentences=max_test_sentences, control=control.value if control else None,
                             seed=seed, batch_size=batch_size, drop_heads=drop_heads, on_error=on_error.value,
                             device=device, trust_remote_code=trust_remote_code)
        result = run_probe(model, train, test, config=config, partial_on_interrupt=True)
    except HeadscopeError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        _fail("interrupted before any probe was finished; nothing was written", code=130)
    try:
        with shielded():
            result.save(out, figures=not no_figures, command=command, force=force)
    except HeadscopeError as exc:
        _fail(str(exc))
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


@app.command()
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
    from ..comparison import compare as run_compare
    from ..errors import HeadscopeError

    _setup_logging()
    _check_out(out, "compare", force)
    try:
        result = run_compare(run_a, run_b, model_a=model_a, model_b=model_b)
        result.save(out, figures=not no_figures, force=force)
    except HeadscopeError as exc:
        _fail(str(exc))
    typer.echo(f"A = {result.label_a}, B = {result.label_b}: {len(result.table)} head x measure pairs; "
               f"largest changes (A − B, 95% interval):")
    for r in result.top(top).itertuples():
        measure = f"{r.relation}{' ' + r.direction if isinstance(r.direction, str) else ''}"
        ci = "" if r.ci_low != r.ci_low else f" [{r.ci_low:+.3f}, {r.ci_high:+.3f}]"
        typer.echo(f"  {r.dataset} {r.task:<10} {measure:<26} L{int(r.layer)}.H{int(r.head):<3} "
                   f"{r.score_a:.3f} vs {r.score_b:.3f}: {r.diff:+.3f}{ci}")
    typer.echo(f"wrote {out}/compare.md, compare.csv, compare_summary.csv")


@app.command()
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
                                                                       "explain.html carries.")] = 5,
    attention_memory: Annotated[float, typer.Option("--attention-memory", min=1.0, help="MiB one layer's "
                                                    "attention may take; longer inputs are read in row blocks.")]
    = 512,
) -> None:
    """Which heads link a word of one sentence (or document) to which other words, with roles from a previous
    run; --out also writes explain.html, an attention viewer."""
    from ..datasets.reading import read_document
    from ..errors import HeadscopeError
    from ..explainer import explain as run_explain
    from ..explainer import weight_text

    _setup_logging()
    if (sentence is None) == (file is None):
        _fail("give the sentence as an argument or --file PATH, not both and not neither")
    if out is not None:
        _check_out(out, "explain", force)
    try:
        text = read_document(file) if file is not None else sentence
        result = run_explain(text, word, model=model, run=run_dir, prepend_bos=prepend_bos, device=device,
                             trust_remote_code=trust_remote_code, links=links, attention_memory=attention_memory)
        if out is not None:
            result.save(out, force=force)
    except HeadscopeError as exc:
        _fail(str(exc))
    typer.echo(f"{result.model}: heads linking {result.word!r} (word {result.word_index}) to other words")
    typer.echo(f"{'head':<8} {'links to':<14} {'weight':>6}  {'2nd':<14} {'weight':>6}  {'specials':>8}  role")
    for r in result.top(top).itertuples():
        typer.echo(f"L{r.layer}.H{r.head:<5} {r.target[:14]:<14} {weight_text(r.weight):>6}  {r.second[:14]:<14} "
                   f"{weight_text(r.second_weight):>6}  {r.specials:8.3f}  {r.role}")
    if out is not None:
        typer.echo(f"wrote {out}/explain.md, explain.csv, explain.html (open it in a browser), explain.png, "
                   f"explain_distance.png")


@app.command()
def ablate(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", "-m", help="Alias, Hugging Face id or local folder.")] = "minilm",
    data: Annotated[Optional[Path], typer.Option("--data", "-d", help="Sentences (.conllu or .txt); default: the "
                                                                      "bundled sample.")] = None,
    heads: Annotated[str, typer.Option("--heads", help="L17.H3,L18.H6 (one group), each or all (every head "
                                                       "alone), layer:N (layer N's heads together), top:TASK:K "
                                                       "(the K best heads of a scoring pass, e.g. top:induction:3) "
                                                       "or role:ROLE (the heads a scoring pass gives that role, "
                                                       "e.g. role:induction).")] = "each",
    method: Annotated[str, typer.Option("--method", help="zero, mean, uniform, sink or window:W.")] = "zero",
    measure: Annotated[Optional[str], typer.Option("--measure", help="loss, hidden, embedding, induction-loss, "
                       "pronoun-loss, syntax-loss (comma-separated). Default: loss with an LM head (an encoder's: "
                       "masked-token loss), else hidden,embedding.")] = None,
    random_draws: Annotated[int, typer.Option("--random-draws", min=1, help="Random head groups of the same size "
                                                                            "to compare with.")] = 5,
    kv_group: Annotated[bool, typer.Option("--kv-group", help="Under GQA, ablate every query head of each "
                                                              "head's key/value group.")] = False,
    with_importance: Annotated[bool, typer.Option("--importance", help="Also every head's importance and the "
                               "pruning curve: importance.csv, pruning.csv, pruning.png.")] = False,
    max_sentences: Annotated[Optional[int], typer.Option("--max-sentences", "-n", min=1, help="Read at most N sentences.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 16,
    bootstrap: Annotated[int, typer.Option("--bootstrap", min=0, help="Replicates of the 95% intervals.")] = 1000,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: ablation.csv, run.json.")]
    = Path("headscope-ablate"),
    force: Annotated[bool, typer.Option("--force", help=FORCE_HELP)] = False,
) -> None:
    """Ablate heads and measure what the model loses, against ablating as many random heads."""
    from ..ablation import ablate as run_ablate
    from ..ablation import importance
    from ..errors import HeadscopeError

    _setup_logging()
    _check_out(out, "ablation", force)
    try:
        result = run_ablate(model, data, heads=heads, method=method,
                            measures=[m.strip() for m in measure.split(",") if m.strip()] if measure else None,
                            random_draws=random_draws, kv_group=kv_group, max_sentences=max_sentences,
                            batch_size=batch_size, bootstrap=bootstrap, seed=seed)
        result.meta["command"] = _command_line(ctx)
        if with_importance:
            result.importance = importance(model, data, batch_size=batch_size, max_sentences=max_sentences,
                                           seed=seed)
            imp = result.importance
            result.meta["importance"] = {"measure": imp.measure, "how": imp.table["how"][0],
                                         "prunable_heads": imp.prunable, "tolerance": imp.tolerance}
        result.save(out, force=force)
    except HeadscopeError as exc:
        _fail(str(exc))
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


@app.command()
def context(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", "-m", help="Alias, Hugging Face id or local folder.")] = "smollm2",
    data: Annotated[Optional[Path], typer.Option("--data", "-d", help="Running text for the long documents and the "
                                                                      "haystacks (.conllu or .txt); default: the "
                                                                      "bundled sample.")] = None,
    heads: Annotated[str, typer.Option("--heads", help="each (every head alone) or L17.H3,L18.H6.")] = "each",
    windows: Annotated[str, typer.Option("--windows", help="Windows to try, in keys, smallest first.")] = "16,64,256",
    tolerance: Annotated[float, typer.Option("--tolerance", help="The change a window may cause: the loss's "
                                                                 "relative rise, or 1 - cosine.")] = 0.01,
    tokens: Annotated[int, typer.Option("--tokens", min=8, help="Tokens per document and per haystack.")] = 512,
    documents: Annotated[int, typer.Option("--documents", min=1, help="Long documents to measure on.")] = 1,
    needles: Annotated[int, typer.Option("--needles", min=1, help="Needle-in-a-haystack inputs.")] = 8,
    needle_length: Annotated[int, typer.Option("--needle-length", min=2, help="Tokens per needle.")] = 16,
    window_needles: Annotated[int, typer.Option("--window-needles", min=0, help="Needle inputs on which a window "
                                                "must also keep the copy's loss (0: the text only).")] = 2,
    measure: Annotated[Optional[str], typer.Option("--measure", help="loss or hidden. Default: loss with an LM "
                                                                     "head, else hidden.")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: windows.csv, heads.csv, report.md, "
                                                          "run.json.")] = Path("headscope-context"),
    force: Annotated[bool, typer.Option("--force", help=FORCE_HELP)] = False,
) -> None:
    """Which heads need the whole context: the smallest window each head can keep, retrieval scores, and the KV
    cache that windowed heads would save."""
    from ..context import context_needs
    from ..errors import HeadscopeError

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    _setup_logging()
    _check_out(out, "context", force)
    bar = Progress(TextColumn("windows"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   disable=not sys.stderr.isatty(), transient=True, console=Console(stderr=True))
    task_id = bar.add_task("windows", total=None)
    try:
        with bar:
            result = context_needs(model, data, heads=heads, windows=windows, tolerance=tolerance, tokens=tokens,
                                   documents=documents, needles=needles, needle_length=needle_length,
                                   window_needles=window_needles, measure=measure, seed=seed,
                                   progress=lambda done, total: bar.update(task_id, completed=done, total=total))
        result.meta["command"] = _command_line(ctx)
        result.save(out, force=force)
    except HeadscopeError as exc:
        _fail(str(exc))
    tested = result.heads[result.heads["tested"]]
    windowed = int(tested["smallest_window"].notna().sum())
    typer.echo(f"{result.meta['model']['name']}: {windowed} of {len(tested)} heads can be windowed with at most "
               f"{max(result.meta['windows'])} keys")
    for k in result.kv:
        typer.echo(f"  KV cache at {k['context']:,} tokens: {100 * k['saved_share']:.1f}% saved")
    if result.heads["retrieval"].notna().any():
        best = result.heads.sort_values("retrieval", ascending=False).head(3)
        typer.echo("  strongest retrieval heads: " + ", ".join(f"L{r.layer}.H{r.head} ({r.retrieval:.2f})"
                                                             for r in best.itertuples()))
    typer.echo(f"wrote {out}/windows.csv, heads.csv, report.md, run.json")


@app.command()
def models() -> None:
    """List the model aliases that load offline."""
    from ..models import list_aliases

    for name, desc in list_aliases().items():
        typer.echo(f"{name:10s} {desc}")
    typer.echo("Any Hugging Face id or local model folder also works with --model.")


@app.command()
def tasks() -> None:
    """List the analysis tasks."""
    for task in TASKS.values():
        typer.echo(f"{task.name:11s} {task.description}" + ("  [needs trees]" if task.data == "treebank" else ""))


def main() -> None:
    from .collection import exiting

    try:
        app()
    finally:
        exiting(enabled=_launched() is None)


if __name__ == "__main__":
    main()
