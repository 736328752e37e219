"""``headscope run`` and ``headscope merge``: score every head and write the report; merge the shards of a run."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from ..config import DEFAULTS, RunConfig
from .common import (FORCE_HELP, TASKS_HELP, TRUST_HELP, Control, Format, OnError, Part, check_out,
                     command_line, fail, holding, launched, setup_logging)

# run's options, declared once each (the command's signature then reads as a list of settings)
ModelOption = Annotated[str, typer.Option("--model", "-m", help="Alias (see `headscope models`), Hugging Face id, "
                                                              "or local model folder.")]
DataOption = Annotated[Optional[list[Path]], typer.Option("--data", "-d", help="Data file or coreference folder "
                    "(.conllu, .txt, .jsonl, .conll, .jsonlines, GAP .tsv, pairs .jsonl); repeat for several. "
                    "Default: the bundled English sample treebank and minimal pairs.")]
TasksOption = Annotated[Optional[str], typer.Option("--tasks", "-t", help=TASKS_HELP)]
OutOption = Annotated[Path, typer.Option("--out", "-o", help="Output folder for scores.csv, report.md, run.json, "
                                                           "figures/.")]
BatchSizeOption = Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Sentences per forward pass.")]
DeviceOption = Annotated[Optional[str], typer.Option("--device", help="torch device, e.g. cpu, cuda, cuda:1, mps.")]
MaxSentencesOption = Annotated[Optional[int], typer.Option("--max-sentences", "-n", min=1,
                               help="Score at most N sentences per data file (GAP: rows, pairs: pairs; "
                                    "coreference: the documents of the first N sentences).")]
OnErrorOption = Annotated[OnError, typer.Option("--on-error", help="Malformed sentences: fail at the first, or skip "
                                                                   "and count them.")]
FmtOption = Annotated[Optional[Format], typer.Option("--format", help="Data format when the suffix does not say "
                                                                    "(applies to every --data).")]
KeepSubtypesOption = Annotated[bool, typer.Option("--keep-subtypes", help="Keep relation subtypes (nsubj:pass) "
                                                                        "instead of folding them.")]
WindowOption = Annotated[int, typer.Option("--window", min=0, help="Local-window half width for positional mass.")]
InductionCountOption = Annotated[int, typer.Option("--induction-count", min=1, help="Induction task: number of "
                                                                                 "generated sequences.")]
InductionLengthOption = Annotated[int, typer.Option("--induction-length", min=2, help="Induction task: random tokens "
                                                                                    "per copy.")]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed for generated data (recorded in run.json).")]
BootstrapOption = Annotated[int, typer.Option("--bootstrap", min=0, help="Bootstrap replicates for 95% intervals over "
                                                                       "sentences (0: none).")]
PrependBosOption = Annotated[Optional[bool], typer.Option("--prepend-bos/--no-prepend-bos", help="Start every input "
                           "with the tokenizer's BOS token when it does not add one itself. Default: yes for "
                           "decoders (their attention sink), no for encoders.")]
ControlOption = Annotated[Optional[Control], typer.Option("--control", help="Also score the same architecture with "
                       "re-initialised weights (seeded by --seed); the report sets its scores beside the model's "
                       "and roles must beat it.")]
SelectOnOption = Annotated[Optional[Path], typer.Option("--select-on", help="Data on which to choose each "
                         "measure's best head (held-out selection); the report gives that head's score on --data. "
                         "Same formats as --data.")]
NoFiguresOption = Annotated[bool, typer.Option("--no-figures", help="Skip the PNG heatmaps.")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
ForceOption = Annotated[bool, typer.Option("--force", help=FORCE_HELP)]
TrustRemoteCodeOption = Annotated[bool, typer.Option("--trust-remote-code", help=TRUST_HELP)]
AttentionMemoryOption = Annotated[float, typer.Option("--attention-memory", min=1, help="MiB one layer's attention "
                                "may take; larger maps are computed and scored in blocks of query rows when every "
                                "task reads blocks (positional, syntax, coref, induction).")]
DocumentsOption = Annotated[Optional[int], typer.Option("--documents", min=1, help="Join consecutive sentences into "
                         "documents of at most this many words (long-range measures; boundaries kept).")]
PartOption = Annotated[Optional[Part], typer.Option("--part", help="An encoder-decoder's part to analyse: its encoder "
                    "(the default) or its decoder's self-attention, teacher-forced on the input.")]
CheckpointEveryOption = Annotated[int, typer.Option("--checkpoint-every", min=0, help="Save the scorer states every "
                                "K batches (and when each dataset ends) beside --out; after a kill, `headscope run "
                                "--resume OUT` goes on from there.")]
ResumeOption = Annotated[Optional[Path], typer.Option("--resume", help="Go on with the run that was writing into this "
                      "folder when it was killed, from its last checkpoint (its settings come from there).")]
DtypeOption = Annotated[Optional[str], typer.Option("--dtype", help="The weights' dtype: float32, bfloat16 or "
                                                 "float16 (attention statistics stay float32).")]
DeviceMapOption = Annotated[Optional[str], typer.Option("--device-map", help="auto (or balanced, sequential): "
                          "accelerate places a model larger than one device across the devices.")]
ShardOption = Annotated[Optional[str], typer.Option("--shard", help="I/N: read only every N-th input from the I-th "
                     "(0-based) and write the scorer states into OUT, for `headscope merge`.")]
WeightingOption = Annotated[str, typer.Option("--weighting", help="weight (attention weights), or weight,norm: also "
                          "every measure on value-weighted attention ‖α_ij · v_j W_O^h‖, what each head writes from "
                          "each token (scores.csv's weighting column).")]
AblateOption = Annotated[Optional[str], typer.Option("--ablate", help="Also ablate every head alone by this method "
                      "(zero, mean, uniform, sink, window:W) on up to 256 sentences of the first .conllu or .txt "
                      "--data, and set each role's causal effect beside it (ablation.csv).")]

PatchOption = Annotated[Optional[str], typer.Option("--patch", help="Also patch every head on these contrast pairs "
                     "(a .jsonl file, or induction, ioi, coref) and set each role's patching effect beside it; the "
                     "report names heads that move the answer without an attention role (patching.csv).")]


@dataclasses.dataclass
class Request:
    """What a run is asked beyond its settings (``RunConfig``): the model, the data, where the report goes, and how
    this process takes part (a shard, a launcher's rank, a run that also ablates or patches)."""

    model: Any
    data: Any
    out: Path
    select_on: Any
    command: str
    force: bool = False
    ablate: str | None = None
    no_figures: bool = False
    patch: str | None = None
    quiet: bool = False
    shard: tuple[int, int] | None = None
    ranks: tuple[int, int] | None = None


def run(
    ctx: typer.Context,
    model: ModelOption = "minilm",
    data: DataOption = None,
    tasks: TasksOption = None,
    out: OutOption = Path("headscope-out"),
    batch_size: BatchSizeOption = DEFAULTS.batch_size,
    device: DeviceOption = None,
    max_sentences: MaxSentencesOption = None,
    on_error: OnErrorOption = OnError.fail,
    fmt: FmtOption = None,
    keep_subtypes: KeepSubtypesOption = False,
    window: WindowOption = DEFAULTS.window,
    induction_count: InductionCountOption = DEFAULTS.induction_count,
    induction_length: InductionLengthOption = DEFAULTS.induction_length,
    seed: SeedOption = DEFAULTS.seed,
    bootstrap: BootstrapOption = DEFAULTS.bootstrap,
    prepend_bos: PrependBosOption = None,
    control: ControlOption = None,
    select_on: SelectOnOption = None,
    no_figures: NoFiguresOption = False,
    quiet: QuietOption = False,
    force: ForceOption = False,
    trust_remote_code: TrustRemoteCodeOption = False,
    attention_memory: AttentionMemoryOption = DEFAULTS.attention_memory,
    documents: DocumentsOption = None,
    part: PartOption = None,
    checkpoint_every: CheckpointEveryOption = 0,
    resume: ResumeOption = None,
    dtype: DtypeOption = None,
    device_map: DeviceMapOption = None,
    shard: ShardOption = None,
    ablate: AblateOption = None,
    weighting: WeightingOption = ",".join(DEFAULTS.weighting),
    patch: PatchOption = None,
) -> None:
    """Score every head of MODEL on DATA and write a report into OUT."""
    from ..errors import HeadscopeError
    from ..reports.figures import workers_ahead
    from .collection import starting
    from .interrupts import begin

    setup_logging("loading the model and the data")     # until the first batch is scored
    request = Request(model, data, out, select_on, command_line(ctx), force, ablate, no_figures, patch=patch,
                      quiet=quiet, shard=_shard(shard, ablate, patch), ranks=launched())
    if (checkpoint_every or resume is not None) and request.shard is not None:
        fail("--checkpoint-every and --resume are for a whole run (one process, or ranks under a launcher); a "
             "shard is restarted whole")
    try:
        config = RunConfig(
            tasks=tasks, batch_size=batch_size, device=device, max_sentences=max_sentences, keep_subtypes=keep_subtypes,
            on_error=on_error.value, fmt=fmt.value if fmt else None, window=window, seed=seed,
            induction_count=induction_count, induction_length=induction_length, prepend_bos=prepend_bos,
            bootstrap=bootstrap, control=control.value if control else None, trust_remote_code=trust_remote_code,
            attention_memory=attention_memory, documents=documents, part=part.value if part else None, dtype=dtype,
            device_map=device_map, weighting=weighting) if resume is None else DEFAULTS
        request, config, checkpoint = _checkpoint(request, config, checkpoint_every, resume)
    except HeadscopeError as exc:
        fail(str(exc))
    check_out(request.out, "shard" if request.shard else "run", request.force)
    _check_method(request.ablate)
    _check_pairs(request.patch)
    # Collection is off until the first batch (collection.py), except for a launcher's ranks; the figure
    # workers, forked now while this process is small, turn it on for themselves.
    with holding(request.out, request.ranks), starting(enabled=request.ranks is None) as settled, \
            workers_ahead(not request.no_figures):
        _run(request, config, checkpoint, lambda: (settled(), begin(None)))


def _shard(text: str | None, ablate: str | None, patch: str | None = None) -> tuple[int, int] | None:
    """``--shard I/N`` as ``(i, n)``; a shard, or --ablate or --patch, under a launcher is refused, and so is
    --ablate or --patch on a shard."""
    from ..errors import HeadscopeError
    from ..run.shards import parse_shard

    parts = None
    if text is not None:
        try:
            parts = parse_shard(text)
        except HeadscopeError as exc:
            fail(str(exc))
        for flag, given in (("--ablate", ablate), ("--patch", patch)):
            if given is not None:
                fail(f"{flag} does not run on a shard; run it after `headscope merge`, or on the whole run")
    if launched() is not None and (parts is not None or ablate is not None or patch is not None):
        fail("under a launcher (torchrun, accelerate launch) each rank is a shard already: drop --shard, "
             "--ablate and --patch")
    return parts


def _checkpoint(request: Request, config: RunConfig, every: int, resume: Path | None
                ) -> tuple[Request, RunConfig, Any]:
    """The run's checkpoint: a new one (``--checkpoint-every``), or the killed run's (``--resume``), whose model,
    data, settings and output folder the run takes over."""
    from ..run.checkpoints import resume_checkpoint, start_checkpoint

    if resume is not None:
        checkpoint = resume_checkpoint(resume, request.ranks)
        header = checkpoint.header
        request = dataclasses.replace(
            request, out=resume, model=header["model"],
            data=[Path(p) for p in header["data"]] if header["data"] else None,
            select_on=Path(header["select_on"]) if header["select_on"] else None,
            command=f"{header['command']} (resumed: {request.command})", force=header.get("force", False),
            ablate=header.get("ablate"))
        return request, RunConfig(**header["settings"]), checkpoint
    if not every:
        return request, config, None
    settings = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}
    return request, config, start_checkpoint(
        request.out, every, model=request.model, data=request.data, select_on=request.select_on, settings=settings,
        command=request.command, ablate=request.ablate, force=request.force, ranks=request.ranks)


def _check_method(ablate: str | None) -> None:
    """An unknown --ablate method fails now, not after the analysis."""
    if ablate is None:
        return
    from ..errors import HeadscopeError
    from ..interventions.methods import Method

    try:
        Method.parse(ablate)
    except HeadscopeError as exc:
        fail(f"--ablate: {exc}")


def _check_pairs(pairs: str | None) -> None:
    """A bad --patch pairs file fails now, in one line, not after the analysis."""
    if pairs is None:
        return
    from ..datasets.contrast import GENERATED, load_contrast
    from ..errors import HeadscopeError

    if pairs in GENERATED:
        return
    try:
        load_contrast(pairs)
    except HeadscopeError as exc:
        fail(f"--patch: {exc}")


def _progress(quiet: bool, settled: Callable[[], None]) -> tuple[Any, Callable[[int, int], None]]:
    """The progress bar (stderr, gone when done, so that stdout holds only the summary line) and its update;
    ``settled()`` is called at each update (the model and the data are loaded by the first)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   disable=quiet or not sys.stderr.isatty(), transient=True, console=Console(stderr=True))
    task_id = bar.add_task("scoring", total=None)

    def on_progress(done: int, total: int) -> None:
        settled()
        bar.update(task_id, completed=done, total=total)

    return bar, on_progress


def _analyse(request: Request, config: RunConfig, checkpoint: Any, settled: Callable[[], None]) -> Any:
    """The analysis (this rank's part of it under a launcher: None on ranks other than 0), and with --ablate or
    --patch the causal evidence; the evidence's failure is returned as a message, the analysis kept."""
    from ..run.analyze import run_analysis
    from ..run.distributed import run_rank
    from ..run.evidence import add_evidence, add_patching
    from ..run.state import RunState

    bar, on_progress = _progress(request.quiet, settled)
    model = request.model
    if request.ranks is not None:
        return run_rank(model, request.data, config, request.ranks, command=request.command,
                        select_on=request.select_on, progress=on_progress, bar=bar, checkpoint=checkpoint), None
    if request.ablate is not None or request.patch is not None:   # loaded once, for the analysis and the evidence
        from ..models.loading import load_model

        model = load_model(model, device=config.device, trust_remote_code=config.trust_remote_code,
                           part=config.part, dtype=config.dtype, device_map=config.device_map)
    state = RunState(shard=request.shard, checkpoint=checkpoint, partial_on_interrupt=request.shard is None,
                     progress=on_progress)
    with bar:
        result = run_analysis(model, request.data or None, config, state, select_on=request.select_on)
    failed = []
    if request.ablate is not None and result.meta.complete:
        failed.append(add_evidence(result, model, request.data, request.ablate, config))
    if request.patch is not None and result.meta.complete:
        failed.append(add_patching(result, model, request.patch, config))
    return result, "; ".join(f for f in failed if f) or None


def _run(request: Request, config: RunConfig, checkpoint: Any, settled: Callable[[], None]) -> None:
    """The run command's analysis and report, once its arguments are checked."""
    from ..errors import HeadscopeError
    from ..run.distributed import RankFailed
    from .interrupts import begin, interrupted

    try:
        result, failed = _analyse(request, config, checkpoint, settled)
        if result is None:
            return                                  # not rank 0: rank 0 writes the run
        if request.shard is not None:
            _write_shard(result, request, config)
            return
    except RankFailed:
        raise typer.Exit(2)
    except HeadscopeError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail(interrupted() or "interrupted before any input was scored; nothing was written", code=130)
    begin(None)                                     # scored (or stopped with partial results): Ctrl-C is handled
    _write(result, request)
    if checkpoint is not None and result.meta.complete:
        from ..run.checkpoints import remove_checkpoints

        remove_checkpoints(request.out, request.ranks)
    _summary(result, request.out)
    if failed:
        fail(failed)
    if not result.meta.complete:
        where = result.meta.interrupted or "while scoring"
        typer.echo(f"run was interrupted {where}; the files hold partial results", err=True)
        raise typer.Exit(130)


def _write_shard(result: Any, request: Request, config: RunConfig) -> None:
    from ..run.shards import write_shard

    shard = request.shard
    write_shard(result, request.out, model=request.model, data=request.data, select_on=request.select_on,
                config=config, command=request.command, force=request.force)
    typer.echo(f"{result.model.name}: shard {shard[0]}/{shard[1]} scored "
               f"{result.meta.scored} inputs; wrote {request.out}/shard.json, "
               f"states.npz (merge the shards with `headscope merge`)")


def _write(result: Any, request: Request) -> None:
    """The report; a Ctrl-C between the analysis and the report's own shield writes it without figures."""
    from ..errors import HeadscopeError
    from ..reports import write_report

    out, command, force = request.out, request.command, request.force
    try:
        try:
            write_report(result, out, figures=not request.no_figures, command=command, force=force)
        except KeyboardInterrupt:
            result.meta.stopped("before the report was written: no figures")
            write_report(result, out, figures=False, command=command, force=force)
    except HeadscopeError as exc:
        fail(str(exc))


def _summary(result: Any, out: Path) -> None:
    """One line on stdout: what was scored (in each dataset's unit: sentences, rows, document windows), what was
    skipped or not counted, and what was written."""
    from ..run.kinds import unit_of

    datasets = result.meta.datasets
    skipped = sum(d["skipped_bad_data"] + d["skipped_too_long"] for d in datasets)
    scored = sum(d["scored"] for d in datasets)
    units = {unit_of(d.get("kind")) for d in datasets}
    unit = (units.pop() if len(units) == 1 else
            "sentences" if all(u.endswith("sentences") for u in units) else "inputs")
    per_dataset = ", ".join(f"{d['name']} {d['scored']} {unit_of(d.get('kind'))}" for d in datasets)
    parts = f" ({per_dataset})" if len(datasets) > 1 else ""
    unusable = [f"{d['unusable_rows']} of {d['name']}'s rows are not counted in its accuracy ("
                + ", ".join(f"{reason}: {n}" for reason, n in d.get("unusable_reasons", {}).items()) + ")"
                for d in datasets if d.get("unusable_rows")]
    typer.echo(f"{result.model.name}: scored {scored} {unit}{parts}"
               + (f", skipped {skipped} (see run.json)" if skipped else "")
               + "".join(f"; {u}" for u in unusable)
               + f"; wrote {out}/report.html, report.md, report.json, scores.csv, roles.csv, run.json")


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
    with holding(out), workers_ahead(not no_figures):
        try:
            result = merge_shards(shards, model=model)
            write_report(result, out, figures=not no_figures, command=command, force=force)
        except HeadscopeError as exc:
            fail(str(exc))
    scored = result.meta.scored
    typer.echo(f"{result.model.name}: merged {len(shards)} shards ({scored} inputs); wrote {out}/report.html, "
               f"report.md, report.json, scores.csv, roles.csv, run.json")

